//! External workers end to end: managed processes (the Node example and a
//! test worker, `behave.mjs`) and remote WebSocket workers written here.
//!
//! Managed workers need `node`. Under plain `cargo test` a machine without
//! it skips these tests with a line saying so; `scripts/test.sh` sets
//! `TASKWIRE_TEST_ALL=1`, which turns a missing `node` into a failure.
#![allow(dead_code, unreachable_pub)]

mod e2e;
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

/// A `[[workers]]` group of `behave.mjs` (in-process servers).
pub fn behave(
    node: &Path,
    name: &str,
    env: &[(&str, &str)],
) -> taskwire::workers::config::GroupConfig {
    taskwire::workers::config::GroupConfig {
        name: std::sync::Arc::from(name),
        command: vec![node.to_string_lossy().into_owned(), here("behave.mjs")],
        args: Vec::new(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        cwd: None,
        instances: 1,
        startup_timeout: Duration::from_secs(30),
        max_tasks: None,
        tasks: None,
    }
}

/// An in-process server running these managed groups (started through
/// `taskwire worker-exec`, like `serve` does), ready.
pub async fn managed_server(
    groups: Vec<taskwire::workers::config::GroupConfig>,
    change: impl FnOnce(&mut taskwire::config::Config),
) -> crate::support::TestServer {
    let server = crate::support::TestServer::with(|c| {
        c.workers.groups = groups;
        c.workers.launcher = Some(PathBuf::from(env!("CARGO_BIN_EXE_taskwire")));
        change(c);
    })
    .await;
    let url = server.url("/readyz");
    eventually("every managed group is ready", || {
        let url = url.clone();
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    server
}

/// Submits each `(task, input, options)` without waiting in between; returns
/// the task ids and every message that came meanwhile (nothing is lost).
pub async fn submit_all(
    ws: &mut crate::support::Ws,
    submits: &[(&str, serde_json::Value, serde_json::Value)],
) -> (Vec<String>, Vec<serde_json::Value>) {
    for (i, (task, input, options)) in submits.iter().enumerate() {
        ws.send(
            serde_json::json!({"type": "submit", "ref": format!("s{i}"), "task": task,
                                   "input": input, "options": options}),
        )
        .await;
    }
    let mut ids = vec![String::new(); submits.len()];
    let mut seen = Vec::new();
    while ids.iter().any(String::is_empty) {
        let message = ws.next().await;
        if let Some(i) = message["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix('s')?.parse::<usize>().ok())
        {
            assert_eq!(message["type"], "accepted", "{message}");
            ids[i] = message["task_id"].as_str().unwrap_or_default().to_owned();
        }
        seen.push(message);
    }
    (ids, seen)
}

/// Every event of `ids` (after those in `seen`) until each has its
/// terminal one, in arrival order; `accepted` left out.
pub async fn events_until_all_end(
    ws: &mut crate::support::Ws,
    ids: &[String],
    seen: Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let mut open: Vec<&String> = ids.iter().collect();
    let mut seen = seen.into_iter();
    while !open.is_empty() {
        let event = match seen.next() {
            Some(event) => event,
            None => ws.next().await,
        };
        let Some(id) = event["task_id"].as_str() else {
            continue;
        };
        if !ids.iter().any(|i| i == id) || event["type"] == "accepted" {
            continue;
        }
        if matches!(
            event["type"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            open.retain(|i| *i != id);
        }
        events.push(event);
    }
    events
}
