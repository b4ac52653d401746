//! External workers end to end: managed processes (the Node example and a
//! test worker, `behave.mjs`) and remote WebSocket workers written here.
//!
//! Managed workers need `node`. Under plain `cargo test` a machine without
//! it skips these tests with a line saying so; `scripts/test.sh` sets
//! `TASKWIRE_TEST_ALL=1`, which turns a missing `node` into a failure.
#![allow(dead_code, unreachable_pub)]

mod managed;
mod remote;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{DEADLINE, eventually};

pub const KEY: &str = "tw_workers_test_key_0123456789abcdef012";

/// `node`, or `None` (after saying why) when the tests may skip.
pub fn node() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("node"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("TASKWIRE_TEST_ALL").is_none(),
            "node is required (TASKWIRE_TEST_ALL is set)"
        );
        eprintln!("skipped: node not found (managed-worker tests need Node.js)");
    }
    found
}

/// A file of this directory (the test workers).
pub fn here(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/workers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A TOML string literal.
pub fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The pids a test worker wrote to its pid file so far.
pub fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `taskwire serve` as a child process, its log collected as it comes.
pub struct Serve {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Serve {
    /// Starts the binary with this config file text (and one built-in slot).
    pub fn start(config: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taskwire.toml");
        std::fs::write(&path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "1",
            ])
            .arg("--config")
            .arg(&path)
            .args(["--shutdown-grace-s", "1"])
            .env("TASKWIRE_API_KEY", KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Serve {
            child,
            port,
            log,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing every one of `parts`.
    pub async fn logged(&self, parts: &[&str]) -> String {
        let mut found = String::new();
        eventually(&format!("a log line with {parts:?}"), || {
            let line = self
                .log()
                .lines()
                .find(|line| parts.iter().all(|p| line.contains(p)))
                .map(str::to_owned);
            if let Some(line) = &line {
                found.clone_from(line);
            }
            let done = line.is_some();
            async move { done }
        })
        .await;
        found
    }

    pub async fn readyz(&self) -> (u16, String) {
        match reqwest::get(self.url("/readyz")).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns its code.
    pub async fn exited(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "serve did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pid` is gone (exited and reaped, or a zombie of init).
pub async fn gone(pid: u32, what: &str) {
    eventually(what, || async move { !alive(pid) }).await;
}

pub const _DEADLINE: Duration = DEADLINE;
