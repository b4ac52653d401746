//! External workers in cluster mode: a task queued cluster-wide runs on the
//! node where a remote worker serves its name.

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{Nats, Node, WORKER_KEY, assert_one_terminal, history};
use crate::support::Ws;

/// A remote worker on `node`, `hello` sent and `welcome` read.
async fn remote_worker(node: &Node, name: &str, task: &str) -> Ws {
    let mut request = format!("ws://127.0.0.1:{}/v1/worker", node.port)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {WORKER_KEY}")).unwrap(),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("taskwire.worker.v1"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = Ws {
        stream,
        protocol: None,
    };
    ws.send(
        json!({"type": "hello", "protocol": 1, "worker": {"name": name, "version": "test"},
                   "slots": 1,
                   "tasks": [{"name": task, "retry_safe": true,
                              "input_schema": {"type": "object", "required": ["n"]}}]}),
    )
    .await;
    let welcome = ws.next().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

#[tokio::test]
async fn a_task_submitted_on_a_runs_on_a_remote_worker_of_b() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--cluster-pool-tasks", "none"]);
    let b = Node::start("b", &url, &["--cluster-pool-tasks", "none"]);
    a.ready().await;
    b.ready().await;
    let mut worker = remote_worker(&b, "edge", "w_sync").await;
    a.sees_workers("b").await;

    let mut client = a.ws().await;
    // A checks the input against the schema the worker declared on B.
    let refused = client
        .submit("w_sync", json!({"missing": "n"}), json!({}))
        .await;
    assert_eq!(refused["type"], "rejected", "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_input", "{refused}");
    let id = client.submit_ok("w_sync", json!({"n": 7})).await;
    let assign = worker.until(|m| m["type"] == "assign").await;
    assert_eq!(assign["task_id"], id.as_str());
    assert_eq!(assign["input"], json!({"n": 7}));
    worker
        .send(
            json!({"type": "complete", "ref": "c1", "task_id": id, "attempt": 1,
                     "result": {"synced": 7}}),
        )
        .await;
    assert_eq!(worker.until(|m| m["type"] == "ok").await["ref"], "c1");
    let events = client.events_until_end(&id).await;
    let started = events.iter().find(|e| e["type"] == "started").unwrap();
    assert_eq!(started["worker"], "b/pool/edge", "{events:?}");
    let end = events.last().unwrap();
    assert_eq!(end["type"], "completed", "{events:?}");
    assert_eq!(end["result"], json!({"synced": 7}));
    assert_one_terminal(&history(&b, &id).await);
}
