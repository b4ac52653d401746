//! Task lifecycle over the WebSocket: events, options, bounds, failures.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ALICE, BOB, TestServer, eventually};

fn assert_gap_free(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1, "seq gap in {events:?}");
        let at = event["at"].as_str().unwrap();
        assert!(
            at.ends_with('Z') && at.contains('T'),
            "not RFC 3339 UTC: {at}"
        );
    }
}

#[tokio::test]
async fn echo_lifecycle() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let input = json!({"hello": ["wörld", 1, 2.5, null, {"deep": true}]});
    let accepted = ws.submit("echo", input.clone(), json!({})).await;
    assert_eq!(accepted["type"], "accepted");
    assert_eq!(accepted["seq"], 1);
    assert_eq!(accepted["position"], 0);
    let id = accepted["task_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let mut events = vec![accepted];
    events.extend(ws.events_until_end(&id).await);
    assert_gap_free(&events);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["accepted", "started", "completed"]);
    assert!(events[1]["worker"].as_str().unwrap().starts_with("local-"));
    assert!(events[1].get("ref").is_none(), "only the reply carries ref");
    assert_eq!(events[2]["result"], input);
    assert_eq!(events[2]["files"], json!([]));
    assert!(events[2]["duration_ms"].is_u64());
    server.stop().await;
}

#[tokio::test]
async fn sleep_reports_progress_steps() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 40, "steps": 4})).await;
    let events = ws.events_until_end(&id).await;
    let progress: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| e["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, [0.25, 0.5, 0.75, 1.0]);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed");
    assert_eq!(done["result"], json!({"slept_ms": 40}));
    server.stop().await;
}

#[tokio::test]
async fn failing_and_panicking_tasks_fail_alone() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 0, "fail": true})).await;
    let failed = ws.terminal(&id).await;
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["error"]["code"], "task_error");
    for at in ["run", "future", "blocking"] {
        let id = ws.submit_ok("panics", json!({"at": at})).await;
        let failed = ws.terminal(&id).await;
        assert_eq!(failed["type"], "failed", "{at}");
        assert_eq!(failed["error"]["code"], "task_error", "{at}");
        assert!(
            failed["error"]["message"]
                .as_str()
                .unwrap()
                .contains("boom"),
            "{failed}"
        );
    }
    // Every worker slot came back and the server still runs tasks.
    for _ in 0..4 {
        let id = ws.submit_ok("echo", json!(1)).await;
        assert_eq!(ws.terminal(&id).await["type"], "completed");
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_queued_never_starts_and_cancel_running_stops_it() {
    let server = TestServer::with(|c| c.limits.workers = 1).await;
    let mut ws = server.ws(ALICE).await;
    let running = ws.submit_ok("sleep", json!({"ms": 60000})).await;
    ws.until(|v| v["type"] == "started" && v["task_id"] == running.as_str())
        .await;
    let queued = ws.submit("sleep", json!({"ms": 1}), json!({})).await;
    assert_eq!(queued["position"], 0);
    let queued = queued["task_id"].as_str().unwrap().to_owned();
    ws.send(json!({"type": "cancel", "task_id": queued, "ref": "c1"}))
        .await;
    let cancelled = ws.until(|v| v["task_id"] == queued.as_str()).await;
    assert_eq!(
        cancelled["type"], "cancelled",
        "a cancelled queued task never starts: {cancelled}"
    );
    assert_eq!(cancelled["reason"], "client");
    assert_eq!(cancelled["ref"], "c1");
    assert_eq!(cancelled["seq"], 2);
    let asked = std::time::Instant::now();
    ws.send(json!({"type": "cancel", "task_id": running, "ref": "c2"}))
        .await;
    let cancelled = ws.until(|v| v["task_id"] == running.as_str()).await;
    let took = asked.elapsed();
    assert_eq!(cancelled["type"], "cancelled");
    assert_eq!(cancelled["ref"], "c2");
    eprintln!("running sleep cancelled in {took:?}");
    // Finished and unknown tasks.
    ws.send(json!({"type": "cancel", "task_id": running, "ref": "c3"}))
        .await;
    let reply = ws.until(|v| v["ref"] == "c3").await;
    assert_eq!(reply["error"]["code"], "already_finished");
    ws.send(json!({"type": "cancel", "task_id": "0".repeat(32), "ref": "c4"}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "c4").await["error"]["code"],
        "not_found"
    );
    ws.send(json!({"type": "cancel", "task_id": "not-an-id", "ref": "c5"}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "c5").await["error"]["code"],
        "not_found"
    );
    server.stop().await;
}

#[tokio::test]
async fn tasks_outlive_their_connection_and_replay_on_subscribe() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 200, "steps": 3})).await;
    drop(ws);
    let mut ws = server.ws(ALICE).await;
    ws.send(json!({"type": "subscribe", "task_id": id, "after_seq": 1}))
        .await;
    let events = ws.events_until_end(&id).await;
    assert_eq!(events[0]["seq"], 2, "replay starts after after_seq");
    for pair in events.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1
        );
    }
    assert_eq!(events.last().unwrap()["type"], "completed");
    // Subscribing to a finished task replays its whole history.
    ws.send(json!({"type": "subscribe", "task_id": id})).await;
    let again = ws.events_until_end(&id).await;
    assert_eq!(again.len(), events.len() + 1);
    server.stop().await;
}

#[tokio::test]
async fn cancel_on_disconnect() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let reply = ws
        .submit(
            "sleep",
            json!({"ms": 60000}),
            json!({"cancel_on_disconnect": true}),
        )
        .await;
    let id = reply["task_id"].as_str().unwrap().to_owned();
    ws.until(|v| v["type"] == "started").await;
    drop(ws);
    let mut ws = server.ws(ALICE).await;
    let cancelled = eventually_terminal(&server, &mut ws, &id).await;
    assert_eq!(cancelled["type"], "cancelled");
    assert_eq!(cancelled["reason"], "disconnect");
    server.stop().await;
}

async fn eventually_terminal(server: &TestServer, ws: &mut crate::support::Ws, id: &str) -> Value {
    eventually("the task ends", || async {
        let (_, body) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
        body["state"] == "cancelled" || body["state"] == "completed" || body["state"] == "failed"
    })
    .await;
    ws.send(json!({"type": "subscribe", "task_id": id})).await;
    ws.terminal(id).await
}

#[tokio::test]
async fn unsubscribe_stops_events() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 300, "steps": 30})).await;
    ws.send(json!({"type": "unsubscribe", "task_id": id, "ref": "u"}))
        .await;
    let reply = ws.until(|v| v["ref"] == "u").await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "ref": "u", "task_id": id})
    );
    // Nothing of that task arrives after the reply, even once it has ended.
    let other = ws.submit_ok("sleep", json!({"ms": 500})).await;
    loop {
        let v = ws.next().await;
        assert_ne!(v["task_id"], id.as_str(), "event after unsubscribe: {v}");
        if v["task_id"] == other.as_str() && v["type"] == "completed" {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_task_is_visible_only_to_its_key() {
    let server = TestServer::start().await;
    let mut alice = server.ws(ALICE).await;
    let id = alice.submit_ok("sleep", json!({"ms": 60000})).await;
    let mut bob = server.ws(BOB).await;
    bob.send(json!({"type": "subscribe", "task_id": id, "ref": "s"}))
        .await;
    assert_eq!(bob.next().await["error"]["code"], "not_found");
    bob.send(json!({"type": "cancel", "task_id": id, "ref": "c"}))
        .await;
    assert_eq!(bob.next().await["error"]["code"], "not_found");
    let (status, body) = server.get_json(BOB, &format!("/v1/tasks/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn idempotency_key_runs_once() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let options = json!({"idempotency_key": "order-42"});
    let first = ws
        .submit("sleep", json!({"ms": 100}), options.clone())
        .await;
    let id = first["task_id"].as_str().unwrap().to_owned();
    let second = ws
        .submit("sleep", json!({"ms": 100}), options.clone())
        .await;
    assert_eq!(second["type"], "accepted");
    assert_eq!(second["task_id"], id.as_str());
    assert_eq!(second["duplicate"], true);
    assert!(first.get("duplicate").is_none());
    // Another key's same idempotency key is its own task.
    let mut bob = server.ws(BOB).await;
    let bobs = bob.submit("sleep", json!({"ms": 1}), options.clone()).await;
    assert_ne!(bobs["task_id"], id.as_str());
    // Another task name too.
    let echo = ws.submit("echo", json!(1), options.clone()).await;
    assert_ne!(echo["task_id"], id.as_str());
    ws.terminal(&id).await;
    // After it finished, a repeat still returns it (and its replay).
    let third = ws.submit("sleep", json!({"ms": 100}), options).await;
    assert_eq!(third["task_id"], id.as_str());
    assert_eq!(third["duplicate"], true);
    assert_eq!(ws.terminal(&id).await["type"], "completed");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("taskwire_tasks_submitted_total{task=\"sleep\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrency_key_serialises_without_blocking_others() {
    let server = TestServer::with(|c| c.limits.workers = 2).await;
    let mut ws = server.ws(ALICE).await;
    let keyed = json!({"concurrency_key": "event-7"});
    for (r, ms, options) in [
        ("a", 150, keyed.clone()),
        ("b", 150, keyed.clone()),
        ("free", 10, json!({})),
    ] {
        ws.send(json!({"type": "submit", "ref": r, "task": "sleep", "input": {"ms": ms}, "options": options})).await;
    }
    let (mut a, mut b, mut free) = (String::new(), String::new(), String::new());
    let mut order = Vec::new();
    while order.len() < 6 {
        let v = ws.next().await;
        let id = v["task_id"].as_str().unwrap().to_owned();
        match (v["type"].as_str(), v["ref"].as_str()) {
            (Some("accepted"), Some("a")) => a = id,
            (Some("accepted"), Some("b")) => b = id,
            (Some("accepted"), Some("free")) => free = id,
            (Some(kind @ ("started" | "completed")), _) => order.push((kind.to_owned(), id)),
            _ => {}
        }
    }
    let at = |kind: &str, id: &str| {
        order
            .iter()
            .position(|(k, i)| k == kind && i == id)
            .unwrap()
    };
    assert!(
        at("completed", &a) < at("started", &b),
        "keyed tasks overlapped: {order:?}"
    );
    assert!(
        at("started", &free) < at("started", &b),
        "the keyed task blocked the queue: {order:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn priorities_are_strict_and_fifo_within() {
    let server = TestServer::with(|c| c.limits.workers = 1).await;
    let mut ws = server.ws(ALICE).await;
    let blocker = ws.submit_ok("sleep", json!({"ms": 300})).await;
    ws.until(|v| v["type"] == "started" && v["task_id"] == blocker.as_str())
        .await;
    let mut ids = Vec::new();
    for priority in ["low", "normal", "low", "high", "normal"] {
        let reply = ws
            .submit("echo", json!(priority), json!({"priority": priority}))
            .await;
        ids.push((priority, reply["task_id"].as_str().unwrap().to_owned()));
    }
    let mut started = Vec::new();
    while started.len() < 5 {
        let v = ws.next().await;
        if v["type"] == "started" {
            let id = v["task_id"].as_str().unwrap();
            started.push(ids.iter().position(|(_, i)| i == id).unwrap());
        }
    }
    assert_eq!(started, [3, 1, 4, 0, 2]);
    server.stop().await;
}

#[tokio::test]
async fn full_queue_rejects_with_retry_after() {
    let server = TestServer::with(|c| {
        c.limits.workers = 1;
        c.limits.queue_capacity = 2;
    })
    .await;
    let mut ws = server.ws(ALICE).await;
    let blocker = ws.submit_ok("sleep", json!({"ms": 60000})).await;
    ws.until(|v| v["type"] == "started" && v["task_id"] == blocker.as_str())
        .await;
    assert_eq!(ws.submit("echo", json!(1), json!({})).await["position"], 0);
    assert_eq!(ws.submit("echo", json!(2), json!({})).await["position"], 1);
    let rejected = ws.submit("echo", json!(3), json!({})).await;
    assert_eq!(rejected["type"], "rejected");
    assert_eq!(rejected["error"]["code"], "queue_full");
    assert!(rejected["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    let response = server
        .post_task(ALICE, json!({"task": "echo", "input": 4}))
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    server.stop().await;
}

#[tokio::test]
async fn timeout_fails_the_task() {
    let server = TestServer::with(|c| c.limits.max_timeout = Duration::from_secs(5)).await;
    let mut ws = server.ws(ALICE).await;
    let reply = ws
        .submit("sleep", json!({"ms": 60000}), json!({"timeout_s": 0.2}))
        .await;
    let id = reply["task_id"].as_str().unwrap().to_owned();
    let failed = ws.terminal(&id).await;
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["error"]["code"], "timeout");
    // A timeout above the maximum is capped, not refused.
    let reply = ws.submit("echo", json!(1), json!({"timeout_s": 1e9})).await;
    assert_eq!(reply["type"], "accepted");
    server.stop().await;
}

#[tokio::test]
async fn held_events_are_bounded() {
    let server = TestServer::with(|c| c.limits.max_task_events = 10).await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("sleep", json!({"ms": 20, "steps": 50})).await;
    let live = ws.events_until_end(&id).await;
    assert_eq!(
        live.len(),
        52,
        "live subscribers get every event after accepted"
    );
    ws.send(json!({"type": "subscribe", "task_id": id})).await;
    let held = ws.events_until_end(&id).await;
    assert!(held.len() <= 11, "held {} events", held.len());
    assert_eq!(held.last().unwrap()["type"], "completed");
    assert_eq!(held.last().unwrap()["seq"], 53);
    assert_eq!(held[0]["seq"], 1);
    server.stop().await;
}

#[tokio::test]
async fn finished_tasks_are_forgotten_after_result_ttl() {
    let server = TestServer::with(|c| c.limits.result_ttl = Duration::from_millis(300)).await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("echo", json!(1)).await;
    ws.terminal(&id).await;
    eventually("the task is forgotten", || async {
        server.get_json(ALICE, &format!("/v1/tasks/{id}")).await.0 == 404
    })
    .await;
    ws.send(json!({"type": "subscribe", "task_id": id, "ref": "s"}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "s").await["error"]["code"],
        "not_found"
    );
    server.stop().await;
}

#[tokio::test]
async fn slow_reader_is_closed_1013_and_loses_nothing() {
    let server = TestServer::with(|c| c.limits.send_queue = 8).await;
    let mut slow = server.ws(ALICE).await;
    let mut fast = server.ws(BOB).await;
    // A big file streamed down the socket fills the buffers while a chatty
    // task fills the mailbox; the client reads nothing meanwhile.
    slow.send(json!({"type": "submit", "ref": "big", "task": "blob",
        "input": {"size": 32_000_000, "name": "big.bin"}, "options": {"delivery": "stream"}}))
        .await;
    // Chatty until cancelled: it cannot end before the stream has begun.
    slow.send(json!({"type": "submit", "ref": "chatty", "task": "sleep", "input": {"ms": 600_000, "steps": 10_000}}))
        .await;
    // Meanwhile another client is served normally.
    let id = fast.submit_ok("echo", json!("fine")).await;
    assert_eq!(fast.terminal(&id).await["type"], "completed");
    eventually("the slow reader is noticed", || async {
        server
            .metrics()
            .await
            .contains("taskwire_slow_consumers_total 1")
    })
    .await;
    // The slow client finds the close after whatever was sent before it.
    let mut ids = Vec::new();
    loop {
        match slow.frame().await {
            crate::support::Frame::Json(v) => {
                if v["type"] == "accepted" {
                    ids.push(v["task_id"].as_str().unwrap().to_owned());
                }
            }
            crate::support::Frame::Closed(code) => {
                assert_eq!(code, Some(1013));
                break;
            }
            crate::support::Frame::Binary(_) => {}
        }
    }
    assert_eq!(ids.len(), 2);
    // It comes back and recovers every event of both tasks.
    let mut again = server.ws(ALICE).await;
    again
        .send(json!({"type": "cancel", "task_id": ids[1], "ref": "stop"}))
        .await;
    again.until(|v| v["ref"] == "stop").await;
    for id in &ids {
        again
            .send(json!({"type": "subscribe", "task_id": id, "after_seq": 1}))
            .await;
        let events = again.events_until_end(id).await;
        assert_eq!(events[0]["seq"], 2);
        assert!(matches!(
            events.last().unwrap()["type"].as_str(),
            Some("completed" | "cancelled")
        ));
    }
    server.stop().await;
}
