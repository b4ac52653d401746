//! Remote workers: `GET /v1/worker` with a WebSocket worker written here.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{ADMIN, ALICE, TestServer, WORKER, Ws};

/// A worker connection (`welcome` not read yet).
pub async fn connect(server: &TestServer, key: &str) -> Ws {
    connect_with(server, Some(key), None, true).await.unwrap()
}

/// The upgrade with or without key, Origin and subprotocol.
pub async fn connect_with(
    server: &TestServer,
    key: Option<&str>,
    origin: Option<&str>,
    subprotocol: bool,
) -> Result<Ws, u16> {
    let mut request = format!("ws://{}/v1/worker", server.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    if let Some(key) = key {
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
    }
    if let Some(origin) = origin {
        headers.insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    if subprotocol {
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("taskwire.worker.v1"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((stream, response)) => Ok(Ws {
            stream,
            protocol: response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// A `hello` declaring `tasks` (names, retry-safe when listed in `safe`).
pub fn hello(name: &str, slots: u32, tasks: &[&str], safe: &[&str]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| json!({"name": t, "retry_safe": safe.contains(t), "input_schema": {"type": "object"}}))
        .collect();
    json!({"type": "hello", "protocol": 1, "worker": {"name": name, "version": "test"},
           "slots": slots, "tasks": tasks})
}

#[tokio::test]
async fn upgrade_checks() {
    let server = TestServer::start().await;
    assert_eq!(
        connect_with(&server, None, None, true).await.err(),
        Some(401)
    );
    assert_eq!(
        connect_with(&server, Some("tw_nobody_0123456789"), None, true)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        connect_with(&server, Some(ALICE), None, true).await.err(),
        Some(403)
    );
    assert_eq!(
        connect_with(&server, Some(ADMIN), None, true).await.err(),
        Some(403)
    );
    let origin = format!("http://{}", server.addr);
    assert_eq!(
        connect_with(&server, Some(WORKER), Some(&origin), true)
            .await
            .err(),
        Some(403),
        "even the server's own origin: no browser is a worker"
    );
    assert_eq!(
        connect_with(&server, Some(WORKER), None, false).await.err(),
        Some(400)
    );
    let ws = connect(&server, WORKER).await;
    assert_eq!(ws.protocol.as_deref(), Some("taskwire.worker.v1"));
    server.stop().await;
}

#[tokio::test]
async fn a_worker_key_is_no_client() {
    let server = TestServer::start().await;
    let response = server
        .post_task(WORKER, json!({"task": "echo", "input": 1}))
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = server.get_json(WORKER, "/v1/admin/tasks").await;
    assert_eq!(status, 403);
    assert!(
        server.ws_raw(Some(WORKER), None).await.is_err(),
        "header auth on /v1/ws is refused"
    );
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.send(json!({"type": "auth", "key": WORKER})).await;
    assert_eq!(ws.closed().await, Some(4401));
    server.stop().await;
}

#[tokio::test]
async fn before_hello_only_hello_counts_and_a_bad_hello_closes() {
    let server =
        TestServer::with(|c| c.security.auth_timeout = std::time::Duration::from_secs(1)).await;
    let mut ws = connect(&server, WORKER).await;
    ws.send_text("not json").await;
    let error = ws.next().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["code"], "bad_message");
    ws.send(json!({"type": "heartbeat"})).await;
    assert_eq!(
        ws.next().await["error"]["message"],
        "the first message must be hello"
    );
    assert_eq!(
        ws.closed().await,
        Some(4408),
        "no hello within auth_timeout_s"
    );

    let mut ws = connect(&server, WORKER).await;
    ws.send(
        json!({"type": "hello", "protocol": 1, "worker": {"name": "w"},
                   "tasks": [{"name": "t", "input_schema": {"type": "no-such-type"}}]}),
    )
    .await;
    let error = ws.next().await;
    assert_eq!(error["error"]["code"], "bad_message");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input_schema"),
        "{error}"
    );
    assert_eq!(ws.closed().await, Some(4400));
    server.stop().await;
}

#[tokio::test]
async fn uploads_need_a_current_attempt_of_the_same_key() {
    let server = TestServer::start().await;
    let url = server.url(&format!("/v1/worker/uploads/{}/1/a.txt", "0".repeat(32)));
    let client = TestServer::http();
    let put = |key: Option<&'static str>| {
        let mut request = client.put(url.clone()).body("bytes");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(put(None).await.unwrap().status(), 401);
    assert_eq!(put(Some(ALICE)).await.unwrap().status(), 403);
    let response = put(Some(WORKER)).await.unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "stale_attempt");
    server.stop().await;
}

#[tokio::test]
async fn admin_workers_lists_the_builtin_pool_and_connected_workers() {
    let server = TestServer::start().await;
    let (status, _) = server.get_json(ALICE, "/v1/admin/workers").await;
    assert_eq!(status, 403);
    let mut ws = connect(&server, WORKER).await;
    ws.send(hello("edge-1", 3, &["w_sync"], &[])).await;
    assert_eq!(ws.next().await["type"], "welcome");
    let (status, listed) = server.get_json(ADMIN, "/v1/admin/workers").await;
    assert_eq!(status, 200);
    let workers = listed["workers"].as_array().unwrap();
    let builtin: u64 = workers
        .iter()
        .filter(|w| w["kind"] == "builtin")
        .map(|w| w["slots"].as_u64().unwrap())
        .sum();
    assert_eq!(builtin, 2, "the built-in slots are listed");
    let remote = workers.iter().find(|w| w["kind"] == "remote").unwrap();
    assert_eq!(remote["name"], "pool/edge-1");
    assert_eq!(remote["tasks"], json!(["w_sync"]));
    assert_eq!(remote["slots"], 3);
    assert_eq!(remote["state"], "ready");
    assert!(remote["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(remote["last_heartbeat_at"].as_str().is_some(), "{remote}");
    server.stop().await;
}

/// Reads worker frames until one of type `kind`.
pub async fn until_type(ws: &mut Ws, kind: &str) -> Value {
    ws.until(|m| m["type"] == kind).await
}

#[tokio::test]
async fn a_remote_task_runs_end_to_end_with_progress_and_a_file() {
    let server = TestServer::start().await;
    let mut worker = connect(&server, WORKER).await;
    worker.send(hello("edge", 1, &["w_report"], &[])).await;
    let welcome = worker.next().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["protocol"], 1);

    let mut client = server.ws(ALICE).await;
    let task_id = client.submit_ok("w_report", json!({"lines": 3})).await;
    let assign = until_type(&mut worker, "assign").await;
    assert_eq!(assign["task_id"], task_id.as_str());
    assert_eq!(assign["attempt"], 1);
    assert_eq!(assign["task"], "w_report");
    assert_eq!(assign["input"], json!({"lines": 3}));
    assert!(assign.get("output_dir").is_none());
    let upload_url = assign["upload_url"].as_str().unwrap().to_owned();
    worker
        .send(json!({"type": "progress", "task_id": task_id, "attempt": 1, "progress": 0.5, "message": "half"}))
        .await;
    let body = "one\ntwo\nthree\n";
    let uploaded = TestServer::http()
        .put(server.url(&format!("{upload_url}/report.txt")))
        .bearer_auth(WORKER)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let uploaded: Value = uploaded.json().await.unwrap();
    assert_eq!(uploaded["size"], body.len());
    worker
        .send(
            json!({"type": "complete", "ref": "c1", "task_id": task_id, "attempt": 1,
                     "result": {"lines": 3}, "files": [{"name": "report.txt"}]}),
        )
        .await;
    assert_eq!(until_type(&mut worker, "ok").await["ref"], "c1");

    let events = client.events_until_end(&task_id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["started", "progress", "completed"], "{events:?}");
    assert_eq!(events[0]["worker"], "pool/edge");
    assert_eq!(events[0]["attempt"], 1);
    assert_eq!(events[1]["message"], "half");
    let completed = &events[2];
    assert_eq!(completed["result"], json!({"lines": 3}));
    let file = &completed["files"][0];
    assert_eq!(file["name"], "report.txt");
    assert_eq!(file["content_type"], "text/plain");
    assert_eq!(file["sha256"], uploaded["sha256"]);
    let download = reqwest::get(server.url(file["url"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(download.text().await.unwrap(), body);
    server.stop().await;
}
