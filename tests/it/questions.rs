//! Tasks that ask their submitter a question, through the built-in
//! `approval` task (`docs/protocol.md` §7).

use serde_json::{Value, json};

use crate::support::{ADMIN, ALICE, BOB, TestServer};

async fn answer_rest(
    server: &TestServer,
    key: &str,
    id: &str,
    question: &str,
    value: Value,
) -> (u16, Value) {
    let response = TestServer::http()
        .post(server.url(&format!("/v1/tasks/{id}/questions/{question}/answer")))
        .bearer_auth(key)
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_question_is_answered_over_the_websocket() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws
        .submit_ok(
            "approval",
            json!({"prompt": "Page 12 is not A4. Continue?", "choices": ["continue", "abort"]}),
        )
        .await;
    let question = ws.until(|v| v["type"] == "question").await;
    assert_eq!(question["task_id"], id.as_str());
    assert_eq!(question["prompt"], "Page 12 is not A4. Continue?");
    assert_eq!(question["choices"][1]["value"], "abort");
    assert!(question["expires_at"].is_string());
    let (_, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(snapshot["state"], "waiting");
    assert_eq!(snapshot["question"]["question_id"], "approval");
    // A value that is not a choice: invalid_input with a path; still open.
    ws.send(json!({"type": "answer", "ref": "bad", "task_id": id, "question_id": "approval", "value": "maybe"}))
        .await;
    let bad = ws.until(|v| v["ref"] == "bad").await;
    assert_eq!(bad["error"]["code"], "invalid_input");
    assert_eq!(bad["error"]["details"]["path"], "$.value");
    ws.send(json!({"type": "answer", "ref": "ok", "task_id": id, "question_id": "approval", "value": "continue"}))
        .await;
    let answered = ws.until(|v| v["ref"] == "ok").await;
    assert_eq!(answered["type"], "answered");
    assert_eq!(answered["outcome"], "answered");
    assert_eq!(answered["value"], "continue");
    let done = ws.terminal(&id).await;
    assert_eq!(
        done["result"],
        json!({"outcome": "answered", "answer": "continue"})
    );
    // Too late now, and another id names no question.
    ws.send(json!({"type": "answer", "ref": "late", "task_id": id, "question_id": "approval", "value": "abort"}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "late").await["error"]["code"],
        "already_answered"
    );
    ws.send(json!({"type": "answer", "ref": "other", "task_id": id, "question_id": "q9", "value": "abort"}))
        .await;
    assert_eq!(
        ws.until(|v| v["ref"] == "other").await["error"]["code"],
        "not_found"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_question_is_answered_over_rest_once_by_its_owner() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws
        .submit_ok(
            "approval",
            json!({"schema": {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 2}}}}),
        )
        .await;
    ws.until(|v| v["type"] == "question").await;
    assert_eq!(
        answer_rest(&server, BOB, &id, "approval", json!({"name": "Bob"}))
            .await
            .0,
        404
    );
    let (status, body) = answer_rest(&server, ALICE, &id, "approval", json!({"name": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_input");
    assert_eq!(body["error"]["details"]["path"], "$.value.name");
    assert_eq!(
        answer_rest(&server, ALICE, &id, "nope", json!({})).await.0,
        404
    );
    let (status, body) = answer_rest(&server, ALICE, &id, "approval", json!({"name": "Ada"})).await;
    assert_eq!(status, 200, "{body}");
    // The first valid answer won; an admin's second answer is a conflict.
    let (status, body) = answer_rest(&server, ADMIN, &id, "approval", json!({"name": "Eve"})).await;
    assert!(status == 409 || status == 404, "{status} {body}");
    let done = ws.terminal(&id).await;
    assert_eq!(done["result"]["answer"], json!({"name": "Ada"}));
    server.stop().await;
}

#[tokio::test]
async fn a_second_answer_while_the_first_is_applied_gets_already_answered() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    // Two questions in a row are not possible with `approval`; instead, two
    // answers in one batch to the same open question.
    let id = ws.submit_ok("approval", json!({})).await;
    ws.until(|v| v["type"] == "question").await;
    {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        for (r, v) in [("a1", "approve"), ("a2", "reject")] {
            let text = json!({"type": "answer", "ref": r, "task_id": id, "question_id": "approval", "value": v});
            ws.stream
                .feed(Message::Text(text.to_string().into()))
                .await
                .unwrap();
        }
        ws.stream.flush().await.unwrap();
    }
    let first = ws.until(|v| v["ref"] == "a1").await;
    assert_eq!(first["type"], "answered");
    let second = ws.until(|v| v["ref"] == "a2").await;
    assert_eq!(second["error"]["code"], "already_answered");
    assert_eq!(ws.terminal(&id).await["result"]["answer"], "approve");
    server.stop().await;
}

#[tokio::test]
async fn an_unanswered_question_takes_its_default_or_fails_the_task() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws
        .submit_ok("approval", json!({"default": "reject", "timeout_s": 1}))
        .await;
    let answered = ws.until(|v| v["type"] == "answered").await;
    assert_eq!(answered["outcome"], "timed_out");
    assert_eq!(answered["value"], "reject");
    assert_eq!(ws.terminal(&id).await["result"]["outcome"], "timed_out");
    let id = ws.submit_ok("approval", json!({"timeout_s": 1})).await;
    let done = ws.terminal(&id).await;
    assert_eq!(done["type"], "failed");
    assert_eq!(done["error"]["code"], "task_error");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody answered")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_question_is_replayed_to_a_client_that_comes_back() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("approval", json!({})).await;
    let question = ws.until(|v| v["type"] == "question").await;
    drop(ws);
    let mut again = server.ws(ALICE).await;
    again
        .send(json!({"type": "subscribe", "task_id": id, "after_seq": 0}))
        .await;
    let replayed = again.until(|v| v["type"] == "question").await;
    assert_eq!(replayed["seq"], question["seq"]);
    // SSE replays it too.
    let response = TestServer::http()
        .get(server.url(&format!("/v1/tasks/{id}/events")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: question") {
        use futures::StreamExt;
        let chunk = tokio::time::timeout(crate::support::DEADLINE, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    server.stop().await;
}

#[tokio::test]
async fn cancelling_a_waiting_task_closes_its_question() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("approval", json!({})).await;
    ws.until(|v| v["type"] == "question").await;
    ws.send(json!({"type": "cancel", "ref": "stop", "task_id": id}))
        .await;
    let answered = ws.until(|v| v["type"] == "answered").await;
    assert_eq!(answered["outcome"], "cancelled");
    let cancelled = ws.until(|v| v["ref"] == "stop").await;
    assert_eq!(cancelled["type"], "cancelled");
    server.stop().await;
}

#[tokio::test]
async fn a_task_submitted_not_interactive_never_asks() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let reply = ws
        .submit(
            "approval",
            json!({"default": "approve"}),
            json!({"interactive": false}),
        )
        .await;
    let id = reply["task_id"].as_str().unwrap().to_owned();
    let events = ws.events_until_end(&id).await;
    assert!(events.iter().all(|e| e["type"] != "question"), "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(
        done["result"],
        json!({"outcome": "not_interactive", "answer": "approve"})
    );
    server.stop().await;
}
