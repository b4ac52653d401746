//! The defects an attacker's pass found (issue 11): each test failed before
//! its fix.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN, ALICE, BOB, DEADLINE, Frame, TestServer, eventually};

/// Sends a raw request head and returns what the server answered within
/// the deadline (the connection may stay open).
async fn raw_exchange(server: &TestServer, head: &str) -> String {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // Read until the head of a final (non-100) response is in.
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        let finals = text.matches("HTTP/1.1 ").count() - text.matches("HTTP/1.1 100").count();
        if finals > 0 && text.contains("\r\n\r\n") {
            return text;
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) => return text,
            Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            Ok(Err(_)) => return text,
        }
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_before_the_body_and_gets_no_100_continue() {
    let server = TestServer::start().await;
    for path in ["/v1/tasks", "/v1/tokens"] {
        // A 4 MiB body is announced and never sent.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tw_wrong\r\n\
             Content-Type: application/json\r\nContent-Length: 4194304\r\n\
             Expect: 100-continue\r\n\r\n"
        );
        let answer = raw_exchange(&server, &head).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(!answer.contains("100 Continue"), "{path}: {answer}");
        assert!(answer.contains("\"unauthorized\""), "{path}: {answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let server = TestServer::with(|c| c.limits.body_timeout = Duration::from_millis(500)).await;
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"task\":"
    );
    let answer = raw_exchange(&server, &head).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn an_unauthenticated_socket_that_never_reads_is_closed_at_the_auth_timeout() {
    let server = TestServer::with(|c| c.security.auth_timeout = Duration::from_secs(1)).await;
    let ws = server.ws_raw(None, None).await.unwrap();
    let (mut sink, _stream) = futures::StreamExt::split(ws.stream);
    // Flood with messages that each earn an `unauthorized` reply, and read
    // none of them: the server's writes to this socket block.
    let flood = tokio::spawn(async move {
        use futures::SinkExt;
        let ping = tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "ping", "ref": "x".repeat(120)})
                .to_string()
                .into(),
        );
        for _ in 0..200_000 {
            if sink.feed(ping.clone()).await.is_err() {
                return;
            }
        }
        let _ = sink.flush().await;
    });
    eventually("the socket is gone", || async {
        server
            .metrics()
            .await
            .contains("taskwire_connections{kind=\"ws\"} 0")
    })
    .await;
    flood.abort();
    server.stop().await;
}

#[tokio::test]
async fn sse_streams_count_against_max_connections() {
    let server = TestServer::with(|c| c.limits.max_connections = 2).await;
    let reply = server
        .post_task(ALICE, json!({"task": "sleep", "input": {"ms": 30_000}}))
        .await;
    let id = reply.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = |id: &str| {
        TestServer::http()
            .get(server.url(&format!("/v1/tasks/{id}/events")))
            .bearer_auth(ALICE)
            .send()
    };
    let first = events(&id).await.unwrap();
    let second = events(&id).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = events(&id).await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(
        third.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // A WebSocket does not get in either.
    let mut ws = server.ws_raw(Some(ALICE), None).await.unwrap();
    assert_eq!(ws.closed().await, Some(4429));
    drop((first, second));
    eventually("the slots are back", || async {
        events(&id).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn task_ids_carry_128_random_bits() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(ws.submit_ok("echo", json!(1)).await);
    }
    // No shared prefix, no counter: neighbours differ in both halves.
    for pair in ids.windows(2) {
        assert_ne!(pair[0][..16], pair[1][..16]);
        assert_ne!(pair[0][16..], pair[1][16..]);
    }
    server.stop().await;
}

async fn mint(server: &TestServer, key: &str, body: Value) -> String {
    let response = TestServer::http()
        .post(server.url("/v1/tokens"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_token_sees_only_the_tasks_it_submitted_unless_minted_with_the_key_scope() {
    let server = TestServer::start().await;
    let editor_1 = mint(&server, ALICE, json!({})).await;
    let editor_2 = mint(&server, ALICE, json!({})).await;
    let wide = mint(&server, ALICE, json!({"scope": "key"})).await;
    let mut ws1 = server.ws(&editor_1).await;
    let id = ws1.submit_ok("sleep", json!({"ms": 30_000})).await;
    let path = format!("/v1/tasks/{id}");
    assert_eq!(server.get_json(&editor_1, &path).await.0, 200);
    assert_eq!(server.get_json(&editor_2, &path).await.0, 404);
    assert_eq!(server.get_json(ALICE, &path).await.0, 200);
    assert_eq!(server.get_json(&wide, &path).await.0, 200);
    assert_eq!(server.get_json(BOB, &path).await.0, 404);
    // The other editor can neither follow nor cancel it.
    let mut ws2 = server.ws(&editor_2).await;
    ws2.send(json!({"type": "subscribe", "ref": "s", "task_id": id}))
        .await;
    assert_eq!(
        ws2.until(|v| v["ref"] == "s").await["error"]["code"],
        "not_found"
    );
    ws2.send(json!({"type": "cancel", "ref": "c", "task_id": id}))
        .await;
    assert_eq!(
        ws2.until(|v| v["ref"] == "c").await["error"]["code"],
        "not_found"
    );
    let response = TestServer::http()
        .delete(server.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(&editor_2)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_token_closes_its_socket_and_an_expired_one_starts_nothing() {
    let server = TestServer::start().await;
    let token = mint(&server, ALICE, json!({})).await;
    let mut ws = server.ws(&token).await;
    let response = TestServer::http()
        .delete(server.url(&format!("/v1/tokens/{token}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(ws.closed().await, Some(4401));

    let short = mint(&server, ALICE, json!({"ttl_s": 1})).await;
    let mut ws = server.ws(&short).await;
    let id = ws.submit_ok("sleep", json!({"ms": 2500, "steps": 5})).await;
    eventually("the token expired", || async {
        server.get_json(&short, "/v1/tasks/nope").await.0 == 401
    })
    .await;
    let reply = ws.submit("echo", json!(1), json!({})).await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["error"]["code"], "unauthorized");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // What it already follows keeps coming.
    assert_eq!(ws.terminal(&id).await["type"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn two_cancels_in_one_batch_are_both_answered() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 30_000})).await;
    ws.until(|v| v["type"] == "started").await;
    // Both frames in one write.
    let text = format!("{}", json!({"type": "cancel", "ref": "one", "task_id": id}));
    let other = json!({"type": "cancel", "ref": "two", "task_id": id}).to_string();
    {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        ws.stream.feed(Message::Text(text.into())).await.unwrap();
        ws.stream.feed(Message::Text(other.into())).await.unwrap();
        ws.stream.flush().await.unwrap();
    }
    let mut refs = Vec::new();
    while refs.len() < 2 {
        let v = ws.next().await;
        if let Some(r) = v["ref"].as_str() {
            assert_eq!(v["type"], "cancelled", "{v}");
            refs.push(r.to_owned());
        }
    }
    refs.sort();
    assert_eq!(refs, ["one", "two"]);
    server.stop().await;
}

#[tokio::test]
async fn dropped_sse_streams_leave_no_subscription_behind() {
    let server = TestServer::start().await;
    let reply = server
        .post_task(ALICE, json!({"task": "sleep", "input": {"ms": 30_000}}))
        .await;
    let id = reply.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..50 {
        let response = TestServer::http()
            .get(server.url(&format!("/v1/tasks/{id}/events")))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
    }
    eventually("the subscriptions are gone", || async {
        let (_, list) = server.get_json(ADMIN, "/v1/admin/tasks").await;
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == id.as_str() && t["subscribers"] == 0)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn held_results_are_bounded_in_bytes_oldest_first() {
    let server = TestServer::with(|c| c.limits.max_held_result_bytes = 1 << 20).await;
    let mut ws = server.ws(ALICE).await;
    let big = json!("x".repeat(400_000));
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = ws.submit_ok("echo", big.clone()).await;
        assert_eq!(ws.terminal(&id).await["type"], "completed");
        ids.push(id);
    }
    assert_eq!(
        server
            .get_json(ALICE, &format!("/v1/tasks/{}", ids[0]))
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .get_json(ALICE, &format!("/v1/tasks/{}", ids[3]))
            .await
            .0,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn every_rest_error_has_the_error_body() {
    let server = TestServer::start().await;
    let http = TestServer::http();
    let cases = [
        (
            http.post(server.url("/v1/tokens"))
                .bearer_auth(ALICE)
                .body(vec![b' '; 200_000]),
            413,
        ),
        (
            http.get(server.url("/v1/tasks/%FF%FE")).bearer_auth(ALICE),
            404,
        ),
        (http.put(server.url("/v1/tasks")).bearer_auth(ALICE), 405),
        (http.patch(server.url("/v1/tokens")).bearer_auth(ALICE), 405),
        (
            http.get(server.url("/v1/nothing/here")).bearer_auth(ALICE),
            404,
        ),
        (
            http.get(server.url("/v1/admin/tasks")).bearer_auth(ALICE),
            403,
        ),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/json");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_new_websocket_during_the_drain_is_refused_with_503() {
    let mut server = TestServer::with(|c| c.limits.shutdown_grace = Duration::from_secs(5)).await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 60_000})).await;
    ws.until(|v| v["type"] == "started").await;
    let stopping = server.begin_stop();
    eventually("readyz says draining", || async {
        reqwest::get(server.url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    match server.ws_raw(Some(ALICE), None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        Ok(_) => panic!("a websocket was opened during the drain"),
        Err(other) => panic!("unexpected: {other}"),
    }
    assert_eq!(ws.terminal(&id).await["reason"], "shutdown");
    match ws.frame().await {
        Frame::Closed(code) => assert_eq!(code, Some(1001)),
        other => panic!("{other:?}"),
    }
    stopping.await.unwrap();
}
