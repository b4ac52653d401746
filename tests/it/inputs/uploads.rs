//! Uploads: REST and WebSocket, their bounds, ownership, and `$upload`.

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{left_behind, nothing_left, pattern, run, server, sha256_hex, upload, upload_ok};
use crate::support::{ALICE, BOB, TestServer};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn an_upload_at_the_bound_is_stored_and_a_task_reads_it() {
    let server = server(|c| c.inputs.max_upload_bytes = MIB as u64).await;
    let bytes = pattern(MIB);
    let response = upload(&server, ALICE, "data%20set.bin", bytes.clone()).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["size"], MIB);
    assert_eq!(body["name"], "data set.bin");
    assert_eq!(body["sha256"], sha256_hex(&bytes));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = body["upload_id"].as_str().unwrap();
    assert!(id.starts_with("up_") && id.len() == 35, "{id}");

    let (status, info) = server.get_json(ALICE, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["sha256"], body["sha256"]);

    let events = run(&server, "inputs_echo", json!({"data": {"$upload": id}})).await;
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    let seen = &done["result"]["inputs"][0];
    assert_eq!(seen["path"], "$.data");
    assert_eq!(seen["name"], "data set.bin");
    assert_eq!(seen["size"], MIB);
    assert_eq!(seen["read"], MIB);
    assert_eq!(seen["read_sha256"], body["sha256"]);
    server.stop().await;
}

#[tokio::test]
async fn uploads_over_the_bound_are_refused_and_leave_nothing() {
    let server = server(|c| c.inputs.max_upload_bytes = MIB as u64).await;
    // With a Content-Length: refused from the head.
    let response = upload(&server, ALICE, "big", pattern(MIB + 1)).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_message");
    assert_eq!(body["error"]["details"]["bound"], "max_upload_bytes");

    // Without one (chunked): refused when the bytes pass the bound.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = pattern(MIB + 1)
        .chunks(100_000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = TestServer::http()
        .post(server.url("/v1/uploads?name=big"))
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    nothing_left(&server).await;

    // Multipart is refused with a clear message.
    let response = TestServer::http()
        .post(server.url("/v1/uploads"))
        .bearer_auth(ALICE)
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("?name=")
    );
    server.stop().await;
}

#[tokio::test]
async fn an_upload_that_fills_the_disk_quota_is_storage_full() {
    let server = server(|c| c.files.max_temp_bytes = 256 * 1024).await;
    let response = upload(&server, ALICE, "big", pattern(512 * 1024)).await;
    assert_eq!(response.status(), 507);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_full");
    nothing_left(&server).await;
    assert_eq!(super::temp_bytes(&server).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn uploads_need_a_key_before_the_body() {
    let server = server(|_| {}).await;
    let response = upload(&server, "tw_wrong", "x", pattern(10)).await;
    assert_eq!(response.status(), 401);
    assert!(left_behind(&server).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn another_clients_upload_is_not_found() {
    let server = server(|_| {}).await;
    let id = upload_ok(&server, ALICE, "mine.txt", b"alice's".to_vec()).await;
    let (status, body) = server.get_json(BOB, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    let response = server
        .post_task(
            BOB,
            json!({"task": "inputs_echo", "input": {"f": {"$upload": id}}}),
        )
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["details"]["path"], "$.f");

    // Not a well-formed id: not_found too.
    let mut ws = server.ws(BOB).await;
    let reply = ws
        .submit(
            "inputs_echo",
            json!({"f": {"$upload": "up_nope"}}),
            json!({}),
        )
        .await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["error"]["code"], "not_found");

    // Bob cannot delete it; Alice can, and then it is gone.
    let client = TestServer::http();
    let delete = |key: &'static str| {
        client
            .delete(server.url(&format!("/v1/uploads/{id}")))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(delete(BOB).await.unwrap().status(), 404);
    assert_eq!(delete(ALICE).await.unwrap().status(), 204);
    let (status, _) = server.get_json(ALICE, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 404);
    nothing_left(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_browser_token_sees_only_its_own_uploads() {
    let server = server(|_| {}).await;
    let mint = || async {
        let response = TestServer::http()
            .post(server.url("/v1/tokens"))
            .bearer_auth(ALICE)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let (first, second) = (mint().await, mint().await);
    let id = upload_ok(&server, &first, "t.txt", b"token's".to_vec()).await;
    let (status, _) = server.get_json(&second, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = server.get_json(&first, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 200);
    // The minting key sees its tokens' uploads.
    let (status, _) = server.get_json(ALICE, &format!("/v1/uploads/{id}")).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_pinned_upload_outlives_its_expiry_until_the_task_ends() {
    let server = server(|c| {
        c.inputs.upload_ttl = std::time::Duration::from_secs(1);
        c.limits.workers = 1;
    })
    .await;
    let id = upload_ok(&server, ALICE, "keep.bin", pattern(1000)).await;
    let mut ws = server.ws(ALICE).await;
    // The only slot is busy: the task that pins the upload waits.
    let blocker = ws.submit_ok("sleep", json!({"ms": 60_000})).await;
    ws.until(|v| v["type"] == "started" && v["task_id"] == blocker.as_str())
        .await;
    let waiting = ws
        .submit_ok("inputs_echo", json!({"f": {"$upload": id}}))
        .await;
    // The upload's id expires ...
    crate::support::eventually("the upload id expired", || async {
        server.get_json(ALICE, &format!("/v1/uploads/{id}")).await.0 == 404
    })
    .await;
    let again = ws
        .submit("inputs_echo", json!({"f": {"$upload": id}}), json!({}))
        .await;
    assert_eq!(again["error"]["code"], "not_found");
    // ... but its bytes stay for the task that pinned it.
    assert_eq!(left_behind(&server).len(), 1);
    ws.send(json!({"type": "cancel", "task_id": blocker})).await;
    let done = ws.terminal(&waiting).await;
    assert_eq!(done["type"], "completed", "{done}");
    assert_eq!(done["result"]["inputs"][0]["read"], 1000);
    nothing_left(&server).await;
    server.stop().await;
}

fn frame(stream: u32, bytes: &[u8]) -> Message {
    let mut data = stream.to_be_bytes().to_vec();
    data.extend_from_slice(bytes);
    Message::Binary(data.into())
}

#[tokio::test]
async fn websocket_uploads_in_binary_frames() {
    let server = server(|c| c.inputs.max_upload_bytes = 300_000).await;
    let mut ws = server.ws(ALICE).await;
    let bytes = pattern(250_000);
    ws.send(
        json!({"type": "upload_begin", "ref": "u1", "stream": 7, "name": "logs.zip",
                   "size": bytes.len(), "content_type": "application/zip"}),
    )
    .await;
    // Frames may follow at once: the stream number is the client's.
    for chunk in bytes.chunks(64 * 1024) {
        ws.stream.send(frame(7, chunk)).await.unwrap();
    }
    ws.send(json!({"type": "upload_end", "ref": "u2", "stream": 7}))
        .await;
    let ready = ws.until(|v| v["ref"] == "u1").await;
    assert_eq!(ready["type"], "upload_ready", "{ready}");
    assert_eq!(ready["stream"], 7);
    let done = ws.until(|v| v["ref"] == "u2").await;
    assert_eq!(done["type"], "uploaded", "{done}");
    assert_eq!(done["size"], 250_000);
    assert_eq!(done["name"], "logs.zip");
    assert_eq!(done["content_type"], "application/zip");
    assert_eq!(done["sha256"], sha256_hex(&bytes));
    let id = done["upload_id"].as_str().unwrap().to_owned();
    let task = ws
        .submit_ok("inputs_echo", json!({"zip": {"$upload": id}}))
        .await;
    let end = ws.terminal(&task).await;
    assert_eq!(
        end["result"]["inputs"][0]["read_sha256"],
        sha256_hex(&bytes)
    );

    // Over the bound: one error, the later frames are dropped quietly.
    ws.send(json!({"type": "upload_begin", "ref": "b1", "stream": 8, "name": "big"}))
        .await;
    assert_eq!(ws.until(|v| v["ref"] == "b1").await["type"], "upload_ready");
    for chunk in pattern(400_000).chunks(100_000) {
        ws.stream.send(frame(8, chunk)).await.unwrap();
    }
    let error = ws.until(|v| v["type"] == "error").await;
    assert_eq!(
        error["error"]["details"]["bound"], "max_upload_bytes",
        "{error}"
    );
    assert_eq!(error["error"]["details"]["stream"], 8);
    ws.send(json!({"type": "upload_end", "ref": "b2", "stream": 8}))
        .await;
    let ended = ws.until(|v| v["ref"] == "b2").await;
    assert_eq!(ended["type"], "error", "{ended}");
    assert!(
        ended["error"]["message"]
            .as_str()
            .unwrap()
            .contains("had failed")
    );

    // A declared size over the bound is refused at once.
    ws.send(
        json!({"type": "upload_begin", "ref": "c1", "stream": 9, "name": "x", "size": 300_001}),
    )
    .await;
    let refused = ws.until(|v| v["ref"] == "c1").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"]["details"]["bound"], "max_upload_bytes");

    // A frame for no open stream, and a frame without a stream number.
    ws.stream.send(frame(99, b"x")).await.unwrap();
    let error = ws.until(|v| v["type"] == "error").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stream 99")
    );
    ws.stream
        .send(Message::Binary(vec![1u8, 2].into()))
        .await
        .unwrap();
    let error = ws.until(|v| v["type"] == "error").await;
    assert_eq!(error["error"]["code"], "bad_message");

    // Abort: answered, and nothing stays.
    ws.send(json!({"type": "upload_begin", "ref": "d1", "stream": 10, "name": "y"}))
        .await;
    ws.stream.send(frame(10, b"partial")).await.unwrap();
    ws.send(json!({"type": "upload_abort", "ref": "d2", "stream": 10}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "d2").await["type"],
        "upload_aborted"
    );

    // The connection carries on.
    ws.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(ws.until(|v| v["ref"] == "p").await["type"], "pong");
    // Only the finished upload remains; closing drops nothing else.
    drop(ws);
    crate::support::eventually("only the stored upload is left", || async {
        left_behind(&server).len() == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_upload_left_open_is_dropped_with_its_socket() {
    let server = server(|_| {}).await;
    let mut ws = server.ws(ALICE).await;
    ws.send(json!({"type": "upload_begin", "ref": "u", "stream": 1, "name": "half"}))
        .await;
    assert_eq!(ws.until(|v| v["ref"] == "u").await["type"], "upload_ready");
    ws.stream.send(frame(1, &pattern(10_000))).await.unwrap();
    ws.send(json!({"type": "ping", "ref": "p"})).await;
    ws.until(|v| v["ref"] == "p").await;
    assert_eq!(left_behind(&server).len(), 1);
    drop(ws);
    nothing_left(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_before_auth_are_refused() {
    let server = server(|_| {}).await;
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.stream.send(frame(1, b"x")).await.unwrap();
    let error = ws.next().await;
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_references_are_invalid_input() {
    let server = server(|_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let reply = ws
        .submit(
            "inputs_echo",
            json!({"f": {"$url": "file:///etc/passwd"}}),
            json!({}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");
    assert_eq!(reply["error"]["details"]["path"], "$.f[\"$url\"]");
    let reply = ws
        .submit(
            "inputs_echo",
            json!({"f": {"$url": "https://x.example/", "headers": {"Authorization": "Bearer sek\nrit"}}}),
            json!({}),
        )
        .await;
    assert_eq!(reply["error"]["code"], "invalid_input");
    assert!(!reply.to_string().contains("sek"), "{reply}");
    server.stop().await;
}
