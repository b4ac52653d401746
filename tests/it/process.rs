//! The real binary as a child process: SIGTERM drain, logs, CLI.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{DEADLINE, Ws, eventually};

const KEY: &str = "tw_process_test_key_0123456789abcdef0123";
const SECRET_INPUT: &str = "input-body-that-must-not-be-logged-7f3a";

fn taskwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskwire"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// The binary at `RUST_LOG=trace`: whatever it logs, no secret may be in it.
    fn start(extra: &[&str]) -> Server {
        let port = free_port();
        let child = taskwire()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "1",
            ])
            .args(extra)
            .env("TASKWIRE_API_KEY", KEY)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn ready(&self) {
        let url = self.url("/readyz");
        eventually("the server is ready", || {
            let url = url.clone();
            async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    async fn ws(&self) -> Ws {
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

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code and everything logged.
    async fn wait(mut self) -> (Option<i32>, String) {
        let mut stderr = self.child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit");
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
        };
        (status.code(), reader.join().unwrap())
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_without_logging_secrets() {
    let server = Server::start(&["--shutdown-grace-s", "1"]);
    server.ready().await;
    let mut ws = server.ws().await;
    let running = ws
        .submit_ok("sleep", json!({"ms": 60000, "note": SECRET_INPUT}))
        .await;
    ws.until(|v| v["type"] == "started").await;
    let queued = ws.submit_ok("echo", json!(SECRET_INPUT)).await;
    // The key inside a frame too (the auth message), where a frame log would show it.
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", server.port))
            .await
            .unwrap();
    let mut framed = Ws {
        stream,
        protocol: None,
    };
    framed.send(json!({"type": "auth", "key": KEY})).await;
    assert_eq!(framed.next().await["type"], "welcome");
    // A wrong key attempt, to be logged without the key.
    let wrong = reqwest::Client::new()
        .get(server.url("/v1/tasks/0"))
        .bearer_auth("tw_wrong_key_that_must_not_be_logged")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    server.terminate();
    // Queued tasks are cancelled at once; the running one after the grace.
    let cancelled = ws
        .until(|v| v["task_id"] == queued.as_str() && v["type"] == "cancelled")
        .await;
    assert_eq!(cancelled["reason"], "shutdown");
    let url = server.url("/readyz");
    eventually("readyz turns 503", || {
        let url = url.clone();
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 503) }
    })
    .await;
    let reply = ws.submit("echo", json!(1), json!({})).await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["error"]["code"], "shutting_down");
    let cancelled = ws.until(|v| v["task_id"] == running.as_str()).await;
    assert_eq!(cancelled["type"], "cancelled");
    assert_eq!(cancelled["reason"], "shutdown");
    assert_eq!(ws.closed().await, Some(1001));
    let (code, logs) = server.wait().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("authentication failed"), "{logs}");
    for secret in [KEY, "tw_wrong_key_that_must_not_be_logged", SECRET_INPUT] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

#[tokio::test]
async fn json_logs_and_download_tokens_stay_out() {
    let server = Server::start(&["--log-format", "json"]);
    server.ready().await;
    let mut ws = server.ws().await;
    let id = ws
        .submit_ok("blob", json!({"size": 10, "name": "secret-name.bin"}))
        .await;
    let done = ws.terminal(&id).await;
    let url = done["files"][0]["url"].as_str().unwrap().to_owned();
    let token = url.split('/').nth(2).unwrap().to_owned();
    assert_eq!(reqwest::get(server.url(&url)).await.unwrap().status(), 200);
    // A browser token too.
    let minted: serde_json::Value = reqwest::Client::new()
        .post(server.url("/v1/tokens"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let browser_token = minted["token"].as_str().unwrap().to_owned();
    server.terminate();
    let (code, logs) = server.wait().await;
    assert_eq!(code, Some(0));
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.starts_with('{')),
        "{logs}"
    );
    for secret in [KEY, &token, "secret-name.bin", &browser_token] {
        assert!(!logs.contains(secret), "reached the logs: {secret}\n{logs}");
    }
}

#[test]
fn keygen_prints_a_key_and_its_block() {
    let output = taskwire()
        .args(["keygen", "--name", "indico-prod", "--admin"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("# tw_"))
        .map(|k| format!("tw_{k}"))
        .unwrap();
    assert!(key.len() >= 3 + 32, "at least 128 bits: {key}");
    let digest = taskwire::auth::hex(&taskwire::auth::digest(&key));
    assert!(text.contains(&format!("sha256 = \"{digest}\"")), "{text}");
    assert!(text.contains("name = \"indico-prod\"") && text.contains("admin = true"));
    // The block is a valid config.
    let block = &text[text.find("[[api_keys]]").unwrap()..];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwire.toml");
    std::fs::write(&path, block).unwrap();
    let shown = taskwire()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("indico-prod"));
    assert!(!shown.contains(&digest), "config must not print digests");
}

#[test]
fn config_precedence_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwire.toml");
    std::fs::write(&path, "workers = 3\nqueue_capacity = 10\n").unwrap();
    let output = taskwire()
        .args(["config", "--workers", "5", "--config"])
        .arg(&path)
        .env("TASKWIRE_QUEUE_CAPACITY", "20")
        .env("TASKWIRE_WORKERS", "4")
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("workers = 5"), "{text}");
    assert!(text.contains("queue_capacity = 20"), "{text}");
    std::fs::write(&path, "wrokers = 3\n").unwrap();
    let output = taskwire()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrokers"));
    std::fs::write(&path, "queue_capacity = -1\n").unwrap();
    let output = taskwire()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("queue_capacity"));
}

#[tokio::test]
async fn demo_key_is_printed_once_as_a_fragment_url() {
    let port = free_port();
    let mut child = taskwire()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("TASKWIRE_API_KEY")
        .env_remove("TASKWIRE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stderr.read(&mut buffer) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
            let _ = tx.send(text.clone());
        }
    });
    let deadline = std::time::Instant::now() + DEADLINE;
    let key = loop {
        let text = rx.recv_timeout(DEADLINE).unwrap();
        if let Some(at) = text.find("/#key=") {
            let key: String = text[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Once for the demo page, once for /monitor.
            if key.len() > 3 + 32 && text.matches(&key).count() == 2 {
                break key;
            }
        }
        assert!(std::time::Instant::now() < deadline);
    };
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/tasks"))
        .bearer_auth(&key)
        .json(&json!({"task": "echo", "input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
