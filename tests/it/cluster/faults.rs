//! Faults: a node killed with SIGKILL, NATS stopped and restarted under a
//! node, one server of a three-server NATS cluster killed under load.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Nats, Node, assert_one_terminal, ends_within, history};
use crate::support::eventually;

#[tokio::test]
async fn kill_9_of_a_node_loses_no_accepted_task() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--cluster-pool-tasks", "none"]);
    let mut b = Node::start("b", &url, &["--workers", "2"]);
    a.ready().await;
    b.ready().await;
    a.sees_workers("b").await;
    let mut ws = a.ws().await;
    // B's two slots: a retry-safe sleep and an approval (not retry-safe),
    // both running when B dies; more sleeps wait in the queue.
    let safe = ws.submit_ok("sleep", json!({"ms": 1500})).await;
    ws.until(|v| v["task_id"] == safe.as_str() && v["type"] == "started")
        .await;
    let unsafe_task = ws.submit_ok("approval", json!({"prompt": "go?"})).await;
    ws.until(|v| v["task_id"] == unsafe_task.as_str() && v["type"] == "question")
        .await;
    let mut queued = Vec::new();
    for n in 0..4 {
        queued.push(ws.submit_ok("sleep", json!({"ms": 10 + n})).await);
    }
    b.kill9();
    // Another node comes to run them.
    let c = Node::start("c", &url, &["--workers", "2"]);
    c.ready().await;
    for id in &queued {
        let events = history(&a, id).await;
        assert_one_terminal(&events);
        assert_eq!(events.last().unwrap()["type"], "completed", "{events:?}");
    }
    let events = history(&a, &safe).await;
    assert_one_terminal(&events);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"requeued"), "{kinds:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "completed", "{events:?}");
    let second = events.iter().rfind(|e| e["type"] == "started").unwrap();
    assert_eq!(second["attempt"], 2);
    assert!(second["worker"].as_str().unwrap().starts_with("c/"));
    let events = history(&a, &unsafe_task).await;
    assert_one_terminal(&events);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "failed", "{events:?}");
    assert_eq!(last["error"]["code"], "worker_lost");
    // The survivors agree, seen from the newcomer too.
    let seen_by_c = history(&c, &unsafe_task).await;
    assert_eq!(seen_by_c.len(), events.len());
}

#[tokio::test]
async fn nats_stopped_and_restarted_under_a_node() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    // A lease longer than the outage: the running task is not given up.
    let a = Node::start(
        "a",
        &nats.url(),
        &["--workers", "2", "--cluster-lease-s", "30"],
    );
    a.ready().await;
    let mut ws = a.ws().await;
    let before = ws.submit_ok("sleep", json!({"ms": 1000})).await;
    ws.until(|v| v["task_id"] == before.as_str() && v["type"] == "started")
        .await;
    nats.kill();
    eventually("readyz says NATS is unreachable", || async {
        let (status, body) = a.readyz().await;
        status == 503 && body.contains("NATS")
    })
    .await;
    let (status, body) = a
        .post("/v1/tasks", json!({"task": "echo", "input": {}}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["retry_after_ms"].as_u64().is_some(), "{body}");
    let refused = ws.submit("echo", json!({}), json!({})).await;
    assert_eq!(refused["type"], "rejected");
    assert_eq!(refused["error"]["code"], "unavailable");
    nats.restart();
    a.ready().await;
    // The task accepted before the outage ends; new ones run.
    let end = ws.terminal(&before).await;
    assert_eq!(end["type"], "completed", "{end}\n{}", a.log());
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        ws.submit("echo", json!({"after": true}), json!({})),
    )
    .await
    .unwrap_or_else(|_| panic!("no reply to a submit after NATS came back\n{}", a.log()));
    assert_eq!(reply["type"], "accepted", "{reply}\n{}", a.log());
    let after = reply["task_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(ws.terminal(&after).await["type"], "completed");
}

#[tokio::test]
async fn a_nats_server_killed_under_load_loses_no_accepted_task() {
    let Some(mut servers) = Nats::cluster3() else {
        return;
    };
    // Nodes start once JetStream has elected its leaders (slow on a busy
    // machine).
    for server in &servers {
        server.healthy_within(60).await;
    }
    let urls = servers.iter().map(Nats::url).collect::<Vec<_>>().join(",");
    let a = Node::start("a", &urls, &["--workers", "4", "--cluster-replicas", "3"]);
    let b = Node::start("b", &urls, &["--workers", "4", "--cluster-replicas", "3"]);
    // Replicated streams are created through Raft: slow on a busy machine.
    a.ready_within(120).await;
    b.ready_within(120).await;
    let mut accepted: Vec<String> = Vec::new();
    let mut refused = 0;
    for n in 0..150 {
        if n == 50 {
            servers[0].kill();
        }
        let node = if n % 2 == 0 { &a } else { &b };
        let (status, body): (u16, Value) = node
            .post("/v1/tasks", json!({"task": "echo", "input": {"n": n}}))
            .await;
        match status {
            202 => accepted.push(body["task_id"].as_str().unwrap().to_owned()),
            503 | 429 => refused += 1,
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        accepted.len() >= 100,
        "{} accepted, {refused} refused",
        accepted.len()
    );
    for id in &accepted {
        // A JetStream cluster that lost a member may take a while to elect
        // new leaders on a busy machine: poll the snapshot, then replay.
        ends_within(&a, id, 60, &[&b]).await;
        let events = history(&a, id).await;
        assert_one_terminal(&events);
        assert_eq!(events.last().unwrap()["type"], "completed", "{events:?}");
    }
    eprintln!(
        "{} accepted, {refused} refused while a server was lost",
        accepted.len()
    );
}

/// JetStream de-duplicates by message id before it checks the expected last
/// sequence: an event whose message id another writer already used must not
/// be taken as written. Here a rival message takes the id a node's
/// `answered` would have had (`<task id>-<seq>`, the scheme before the fix),
/// on another task's subject of the same stream; the node must still write
/// its `answered` and `completed`, and another node must see the same
/// history.
#[tokio::test]
async fn a_message_id_used_by_another_writer_is_no_commit() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--workers", "1"]);
    let b = Node::start("b", &url, &["--cluster-pool-tasks", "none"]);
    a.ready().await;
    b.ready().await;
    let mut ws = a.ws().await;
    let id = ws.submit_ok("approval", json!({"prompt": "go?"})).await;
    let question = ws
        .until(|v| v["task_id"] == id.as_str() && v["type"] == "question")
        .await;
    let next = question["seq"].as_u64().unwrap() + 1;
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let rival = async_nats::jetstream::message::PublishMessage::build()
        .payload("not an event".into())
        .message_id(format!("{id}-{next}"));
    let other = "0123456789abcdef0123456789abcdef";
    js.send_publish(format!("tw.ev.{other}"), rival)
        .await
        .unwrap()
        .await
        .unwrap();
    ws.send(json!({"type": "answer", "ref": "ok", "task_id": id, "question_id": "approval", "value": "approve"}))
        .await;
    let answered = ws.until(|v| v["ref"] == "ok").await;
    assert_eq!(answered["type"], "answered", "{answered}");
    let end = ws.terminal(&id).await;
    assert_eq!(end["type"], "completed", "{end}");
    let seen_by_a = history(&a, &id).await;
    assert_one_terminal(&seen_by_a);
    let snapshot = ends_within(&b, &id, 20, &[&a]).await;
    assert_eq!(snapshot["state"], "completed", "{snapshot}");
    let seen_by_b = history(&b, &id).await;
    let kinds = |events: &[Value]| {
        events
            .iter()
            .map(|e| (e["seq"].clone(), e["type"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&seen_by_b), kinds(&seen_by_a));
}
