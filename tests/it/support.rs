//! Test harness: a real server on port 0, real WebSocket and HTTP clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use taskwire::auth::digest;
use taskwire::config::{Config, KeyConfig, KeyRole, KeySource};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected thing may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub const ALICE: &str = "tw_alice_0123456789abcdef0123456789abcdef";
pub const BOB: &str = "tw_bob_0123456789abcdef0123456789abcdef";
pub const ADMIN: &str = "tw_admin_0123456789abcdef0123456789abcdef";
/// A worker key (`role = "worker"`, name `pool`).
pub const WORKER: &str = "tw_worker_0123456789abcdef0123456789abcdef";

pub fn key(name: &str, secret: &str, admin: bool) -> KeyConfig {
    KeyConfig {
        name: name.to_owned(),
        digest: digest(secret),
        role: if admin {
            KeyRole::Admin
        } else {
            KeyRole::Client
        },
        source: KeySource::File,
    }
}

pub fn worker_key(name: &str, secret: &str) -> KeyConfig {
    KeyConfig {
        role: KeyRole::Worker,
        ..key(name, secret, false)
    }
}

pub fn test_config() -> Config {
    let mut config = Config::with_keys(vec![
        key("alice", ALICE, false),
        key("bob", BOB, false),
        key("ops", ADMIN, true),
        worker_key("pool", WORKER),
    ]);
    config.limits.workers = 2;
    config.limits.shutdown_grace = Duration::from_millis(200);
    config
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    pub temp: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    pub async fn with(change: impl FnOnce(&mut Config)) -> TestServer {
        let temp = tempfile::tempdir().unwrap();
        let mut config = test_config();
        config.files.temp_dir = Some(temp.path().join("area"));
        change(&mut config);
        let mut catalog = taskwire::catalog::Catalog::builtin(config.files.max_temp_bytes);
        catalog.register(std::sync::Arc::new(Panics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            taskwire::serve_with(listener, config, catalog, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            stop: Some(stop),
            handle: Some(handle),
            temp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Connected with header auth, `welcome` already read.
    pub async fn ws(&self, key: &str) -> Ws {
        let mut ws = self.ws_raw(Some(key), None).await.unwrap();
        let welcome = ws.next().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        ws
    }

    /// Connected without reading anything; optional header key and Origin.
    pub async fn ws_raw(
        &self,
        key: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = self.ws_url().into_client_request().unwrap();
        if let Some(key) = key {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
            );
        }
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(origin).unwrap());
        }
        let (stream, response) = tokio_tungstenite::connect_async(request).await?;
        Ok(Ws {
            stream,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        })
    }

    pub fn http() -> reqwest::Client {
        reqwest::Client::builder().build().unwrap()
    }

    pub async fn post_task(&self, key: &str, body: Value) -> reqwest::Response {
        TestServer::http()
            .post(self.url("/v1/tasks"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, key: &str, path: &str) -> (u16, Value) {
        let response = TestServer::http()
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn metrics(&self) -> String {
        TestServer::http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Shuts the server down and waits until `serve` returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Begins the shutdown without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().unwrap()
    }
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Option<String>,
}

/// What reading a socket gave.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    Binary(Vec<u8>),
    Closed(Option<u16>),
}

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next text or binary frame, or the close.
    pub async fn frame(&mut self) -> Frame {
        loop {
            let next = tokio::time::timeout(DEADLINE, self.stream.next())
                .await
                .expect("no frame before the deadline");
            match next {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Json(serde_json::from_str(&t).unwrap());
                }
                Some(Ok(Message::Binary(b))) => return Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// The next JSON message (panics on anything else).
    pub async fn next(&mut self) -> Value {
        match self.frame().await {
            Frame::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Reads until a message matches; returns it.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Waits for the close frame; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Frame::Closed(code) = self.frame().await {
                return code;
            }
        }
    }

    /// Submits and returns the `accepted` reply (or `rejected`).
    pub async fn submit(&mut self, task: &str, input: Value, options: Value) -> Value {
        let reference = format!("r{}", rand_u32());
        self.send(json!({"type": "submit", "ref": reference, "task": task, "input": input, "options": options}))
            .await;
        self.until(|v| v["ref"] == reference.as_str()).await
    }

    /// Submits; returns the task id (panics if rejected).
    pub async fn submit_ok(&mut self, task: &str, input: Value) -> String {
        let reply = self.submit(task, input, json!({})).await;
        assert_eq!(reply["type"], "accepted", "{reply}");
        reply["task_id"].as_str().unwrap().to_owned()
    }

    /// Every event of `task_id` up to and including its terminal one.
    pub async fn events_until_end(&mut self, task_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let v = self.next().await;
            if v["task_id"] != task_id || v["type"] == "stream_begin" || v["type"] == "stream_end" {
                continue;
            }
            let end = matches!(
                v["type"].as_str(),
                Some("completed" | "failed" | "cancelled")
            );
            events.push(v);
            if end {
                return events;
            }
        }
    }

    pub async fn terminal(&mut self, task_id: &str) -> Value {
        self.events_until_end(task_id).await.pop().unwrap()
    }
}

pub fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Polls `check` until it is true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

/// A task that panics where its input says: `{"at": "run" | "future" | "blocking"}`.
pub struct Panics;

impl taskwire::catalog::TaskHandler for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn description(&self) -> &'static str {
        "test task that panics"
    }
    fn input_schema(&self) -> Value {
        json!({})
    }
    fn validate(
        &self,
        _input: &serde_json::value::RawValue,
    ) -> Result<(), taskwire::catalog::InvalidInput> {
        Ok(())
    }
    fn run(
        &self,
        input: Box<serde_json::value::RawValue>,
        ctx: taskwire::catalog::TaskCtx,
    ) -> futures::future::BoxFuture<
        'static,
        Result<taskwire::catalog::TaskOutput, taskwire::catalog::TaskError>,
    > {
        let at: Value = serde_json::from_str(input.get()).unwrap_or(Value::Null);
        if at["at"] == "run" {
            panic!("boom in run");
        }
        Box::pin(async move {
            if at["at"] == "blocking" {
                ctx.spawn_blocking(|| panic!("boom in blocking")).await?;
            }
            panic!("boom in future");
        })
    }
}
