//! REST, SSE, health, metrics, browser tokens.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{ALICE, BOB, TestServer, eventually};

#[tokio::test]
async fn submit_snapshot_and_cancel() {
    let server = TestServer::start().await;
    let response = server
        .post_task(ALICE, json!({"task": "sleep", "input": {"ms": 60000}}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["task_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status_url"], format!("/v1/tasks/{id}"));
    assert_eq!(body["events_url"], format!("/v1/tasks/{id}/events"));
    eventually("it runs", || async {
        server.get_json(ALICE, &format!("/v1/tasks/{id}")).await.1["state"] == "running"
    })
    .await;
    let (_, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(snapshot["task"], "sleep");
    assert!(snapshot["created_at"].is_string() && snapshot["started_at"].is_string());
    assert_eq!(snapshot["last_seq"], 2);
    let client = TestServer::http();
    let other = client
        .delete(server.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let cancel = client
        .delete(server.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let (_, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(snapshot["state"], "cancelled");
    assert!(snapshot["finished_at"].is_string());
    let again = client
        .delete(server.url(&format!("/v1/tasks/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_finished");
    server.stop().await;
}

#[tokio::test]
async fn completed_snapshot_has_result() {
    let server = TestServer::start().await;
    let body: Value = server
        .post_task(ALICE, json!({"task": "echo", "input": {"a": 1}}))
        .await
        .json()
        .await
        .unwrap();
    let id = body["task_id"].as_str().unwrap().to_owned();
    eventually("it completes", || async {
        server.get_json(ALICE, &format!("/v1/tasks/{id}")).await.1["state"] == "completed"
    })
    .await;
    let (_, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(snapshot["result"], json!({"a": 1}));
    assert_eq!(snapshot["files"], json!([]));
    assert_eq!(snapshot["last_seq"], 3);
    server.stop().await;
}

#[tokio::test]
async fn auth_errors_have_a_body() {
    let server = TestServer::start().await;
    let client = TestServer::http();
    let none = client
        .post(server.url("/v1/tasks"))
        .json(&json!({"task": "echo", "input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = server
        .post_task("tw_wrong", json!({"task": "echo", "input": 1}))
        .await;
    assert_eq!(wrong.status(), 401);
    let (status, body) = server
        .get_json("tw_wrong", &format!("/v1/tasks/{}", "0".repeat(32)))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, body) = server
        .get_json(ALICE, &format!("/v1/tasks/{}", "0".repeat(32)))
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let bad = client
        .post(server.url("/v1/tasks"))
        .bearer_auth(ALICE)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_message");
    let invalid = server
        .post_task(ALICE, json!({"task": "sleep", "input": {"ms": true}}))
        .await;
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_input");
    assert_eq!(body["error"]["details"]["path"], "$.ms");
    server.stop().await;
}

#[tokio::test]
async fn body_limit_is_max_message_bytes() {
    let server = TestServer::with(|c| c.limits.max_message_bytes = 5 * 1024 * 1024).await;
    // Past axum's 2 MB default, within ours.
    let three_mb = "x".repeat(3 * 1024 * 1024);
    let ok = server
        .post_task(ALICE, json!({"task": "echo", "input": three_mb}))
        .await;
    assert_eq!(ok.status(), 202);
    let six_mb = "x".repeat(6 * 1024 * 1024);
    let too_big = server
        .post_task(ALICE, json!({"task": "echo", "input": six_mb}))
        .await;
    assert_eq!(too_big.status(), 413);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_message");
    server.stop().await;
}

/// Reads an SSE body into (event, id, data) triples until it ends.
async fn sse(
    server: &TestServer,
    id: &str,
    last_event_id: Option<u64>,
) -> Vec<(String, u64, Value)> {
    let mut request = TestServer::http()
        .get(server.url(&format!("/v1/tasks/{id}/events")))
        .bearer_auth(ALICE);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut text = String::new();
    let mut body = response.bytes_stream();
    tokio::time::timeout(crate::support::DEADLINE, async {
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    })
    .await
    .expect("the SSE stream did not end after the terminal event");
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            (
                field("event:"),
                field("id:").parse().unwrap(),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sse_streams_events_and_honours_last_event_id() {
    let server = TestServer::start().await;
    let body: Value = server
        .post_task(
            ALICE,
            json!({"task": "sleep", "input": {"ms": 100, "steps": 2}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = body["task_id"].as_str().unwrap().to_owned();
    let events = sse(&server, &id, None).await;
    let kinds: Vec<&str> = events.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(
        kinds,
        ["accepted", "started", "progress", "progress", "completed"]
    );
    for (i, (kind, seq, data)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(data["type"], kind.as_str());
        assert_eq!(data["seq"], *seq);
    }
    let resumed = sse(&server, &id, Some(3)).await;
    let seqs: Vec<u64> = resumed.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(seqs, [4, 5]);
    let nothing_left = sse(&server, &id, Some(5)).await;
    assert!(nothing_left.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let server = TestServer::start().await;
    let client = TestServer::http();
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("echo", json!(1)).await;
    ws.terminal(&id).await;
    let metrics = server.metrics().await;
    for needle in [
        "taskwire_tasks_total{task=\"echo\",outcome=\"completed\"} 1",
        "taskwire_queue_depth",
        "taskwire_tasks_running",
        "taskwire_connections{kind=\"ws\"} 1",
        "taskwire_rejections_total{code=\"queue_full\"} 0",
        "taskwire_task_duration_seconds_bucket",
        "taskwire_received_bytes_total",
        "taskwire_sent_bytes_total",
        "taskwire_workers 2",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    server.stop().await;
}

#[tokio::test]
async fn browser_tokens() {
    let server = TestServer::start().await;
    let client = TestServer::http();
    let minted: Value = client
        .post(server.url("/v1/tokens"))
        .bearer_auth(ALICE)
        .json(&json!({"ttl_s": 60, "tasks": ["echo"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("twt_") && token.len() >= 4 + 32);
    assert!(minted["expires_at"].is_string());
    // The token works on the WebSocket auth message; tasks belong to alice.
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.send(json!({"type": "auth", "key": token})).await;
    assert_eq!(ws.next().await["type"], "welcome");
    let id = ws.submit_ok("echo", json!("from a browser")).await;
    ws.terminal(&id).await;
    assert_eq!(
        server.get_json(ALICE, &format!("/v1/tasks/{id}")).await.0,
        200
    );
    // Limited to its tasks.
    let reply = ws.submit("sleep", json!({"ms": 1}), json!({})).await;
    assert_eq!(reply["error"]["code"], "unauthorized");
    // Tokens cannot mint tokens.
    let nested = client
        .post(server.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(nested.status(), 401);
    // Revoked: refused.
    let revoke = client
        .delete(server.url(&format!("/v1/tokens/{token}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.send(json!({"type": "auth", "key": token})).await;
    assert_eq!(ws.closed().await, Some(4401));
    let rest = server
        .post_task(&token, json!({"task": "echo", "input": 1}))
        .await;
    assert_eq!(rest.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn expired_and_origin_bound_tokens_are_refused() {
    let server = TestServer::start().await;
    let client = TestServer::http();
    let mint = |body: Value| {
        let client = client.clone();
        let url = server.url("/v1/tokens");
        async move {
            let v: Value = client
                .post(url)
                .bearer_auth(ALICE)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let short = mint(json!({"ttl_s": 1})).await;
    let started = std::time::Instant::now();
    eventually("the token expires", || async {
        server
            .post_task(&short, json!({"task": "echo", "input": 1}))
            .await
            .status()
            == 401
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    let bound = mint(json!({"origin": "https://indico.example.org"})).await;
    assert_eq!(
        server
            .post_task(&bound, json!({"task": "echo", "input": 1}))
            .await
            .status(),
        401
    );
    server.stop().await;
}
