//! The WebSocket session: submit, follow, cancel, ping, watch; resuming
//! after a cut connection without losing or doubling an event.

use serde_json::json;
use taskwire_client::{ErrorCode, Event, EventKind, Outcome, Submit, TaskEvents, WatchUpdate};

use crate::support::{ADMIN, ALICE, DEADLINE, Proxy, Server, eventually};

async fn next(events: &mut TaskEvents) -> Event {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("no error")
}

/// Reads to the terminal event; checks seq is 1, 2, 3 ... with no gap or repeat.
async fn rest_of(events: &mut TaskEvents, mut seen: Vec<Event>) -> Vec<Event> {
    while !seen.last().is_some_and(Event::is_terminal) {
        seen.push(next(events).await);
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    assert!(
        tokio::time::timeout(DEADLINE, events.next())
            .await
            .expect("ends")
            .is_none(),
        "nothing after the terminal event"
    );
    seen
}

#[tokio::test]
async fn submit_and_wait_for_the_result() {
    let server = Server::start(2).await;
    let session = server.client(ALICE).connect().await.unwrap();
    assert!(session.welcome().tasks.iter().any(|t| t.name == "echo"));
    let task = session
        .submit(Submit::new("echo", &json!({"a": [1, 2]})).unwrap())
        .await
        .unwrap();
    assert_eq!(task.id().as_str().len(), 32);
    match task.wait().await.unwrap() {
        Outcome::Completed { result, .. } => assert_eq!(result.get(), r#"{"a":[1,2]}"#),
        other => panic!("{other:?}"),
    }
    let failed = session
        .submit(Submit::new("sleep", &json!({"ms": 1, "fail": true})).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(failed.wait().await.unwrap(), Outcome::Failed { error } if error.code == ErrorCode::TaskError)
    );
    assert!(session.ping().await.is_ok());
    session.close().await;
    server.stop().await;
}

#[tokio::test]
async fn rejections_carry_protocol_codes() {
    let server = Server::start(1).await;
    let session = server.client(ALICE).connect().await.unwrap();
    let e = session
        .submit(Submit::new("no_such_task", &json!({})).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownTask), "{e}");
    let e = session
        .submit(Submit::new("sleep", &json!({"ms": "long"})).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidInput), "{e}");
    assert!(e.wire().and_then(|w| w.details.as_ref()).is_some());
    let e = session
        .cancel(&"0123456789abcdef0123456789abcdef".into())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    // A stream of a task this key cannot see ends with not_found.
    let mut events = session
        .follow(&"0123456789abcdef0123456789abcdef".into(), 0)
        .await
        .unwrap();
    let end = tokio::time::timeout(DEADLINE, events.next()).await.unwrap();
    assert_eq!(end.unwrap().unwrap_err().code(), Some(ErrorCode::NotFound));
    // A wrong key is refused at the upgrade.
    let e = server.client("tw_wrong").connect().await.unwrap_err();
    assert!(e.is_auth(), "{e}");
    assert_eq!(e.status(), Some(401));
    assert!(
        !format!("{e} {e:?}").contains("tw_wrong"),
        "the key is never shown"
    );
    session.close().await;
    server.stop().await;
}

#[tokio::test]
async fn cancel_reaches_the_task_and_its_stream() {
    let server = Server::start(1).await;
    let session = server.client(ALICE).connect().await.unwrap();
    let mut task = session
        .submit(Submit::new("sleep", &json!({"ms": 60_000})).unwrap())
        .await
        .unwrap();
    let accepted = next(task.events()).await;
    assert!(matches!(accepted.kind, EventKind::Accepted { .. }));
    let started = next(task.events()).await;
    assert!(matches!(started.kind, EventKind::Started { .. }));
    let cancelled = task.cancel().await.unwrap();
    assert!(matches!(&cancelled.kind, EventKind::Cancelled { reason } if reason == "client"));
    let seen = rest_of(task.events(), vec![accepted, started]).await;
    assert!(matches!(
        &seen.last().unwrap().kind,
        EventKind::Cancelled { .. }
    ));
    let e = task.cancel().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyFinished));
    session.close().await;
    server.stop().await;
}

/// The acceptance test of issue 18: a connection cut in the middle of a
/// task; the session reconnects and resumes with after_seq; every event
/// arrives once. Two tasks share the connection.
#[tokio::test]
async fn a_cut_connection_loses_and_doubles_nothing() {
    let server = Server::start(2).await;
    let proxy = Proxy::start(server.addr).await;
    let session = proxy.client(ALICE).connect().await.unwrap();
    let input = json!({"ms": 1500, "steps": 60});
    let mut one = session
        .submit(Submit::new("sleep", &input).unwrap())
        .await
        .unwrap();
    let mut two = session
        .submit(Submit::new("sleep", &input).unwrap())
        .await
        .unwrap();
    let mut seen_one = Vec::new();
    while seen_one.len() < 5 {
        seen_one.push(next(one.events()).await);
    }
    let mut seen_two = Vec::new();
    while seen_two.len() < 3 {
        seen_two.push(next(two.events()).await);
    }
    assert_eq!(proxy.cut(), 1, "one connection carried both tasks");
    // Reading goes on across the reconnect.
    let seen_one = rest_of(one.events(), seen_one).await;
    let seen_two = rest_of(two.events(), seen_two).await;
    for seen in [&seen_one, &seen_two] {
        assert!(matches!(
            seen.last().unwrap().kind,
            EventKind::Completed { .. }
        ));
        assert_eq!(seen.len(), 63, "accepted, started, 60 progress, completed");
    }
    assert!(proxy.open_connections() >= 1, "the session reconnected");
    session.close().await;
    server.stop().await;
}

/// A cut while nothing is read at all, twice: what happened meanwhile is
/// replayed on the fresh connection.
#[tokio::test]
async fn events_missed_while_disconnected_are_replayed() {
    let server = Server::start(1).await;
    let proxy = Proxy::start(server.addr).await;
    let client = proxy.client(ALICE);
    let session = client.connect().await.unwrap();
    let mut task = session
        .submit(Submit::new("sleep", &json!({"ms": 600, "steps": 20})).unwrap())
        .await
        .unwrap();
    let first = next(task.events()).await;
    proxy.cut();
    let second = next(task.events()).await;
    assert_eq!(second.seq, 2);
    eventually("a new connection", || async {
        proxy.open_connections() == 1
    })
    .await;
    proxy.cut();
    let status = server.client(ALICE);
    let id = task.id().clone();
    eventually("the task to finish", || {
        let (status, id) = (status.clone(), id.clone());
        async move {
            status
                .status(&id)
                .await
                .is_ok_and(|s| s.state == "completed")
        }
    })
    .await;
    rest_of(task.events(), vec![first, second]).await;
    session.close().await;
    server.stop().await;
}

/// A reader whose channel fills is caught up from the server's held
/// events: every event still arrives once.
#[tokio::test]
async fn a_slow_reader_catches_up() {
    let server = Server::start(1).await;
    let client = taskwire_client::Client::builder(&server.url(), ALICE)
        .event_buffer(2)
        .build()
        .unwrap();
    let session = client.connect().await.unwrap();
    let mut task = session
        .submit(Submit::new("sleep", &json!({"ms": 200, "steps": 40})).unwrap())
        .await
        .unwrap();
    let id = task.id().clone();
    let rest = server.client(ALICE);
    eventually("the task to finish", || {
        let (rest, id) = (rest.clone(), id.clone());
        async move { rest.status(&id).await.is_ok_and(|s| s.state == "completed") }
    })
    .await;
    let seen = rest_of(task.events(), Vec::new()).await;
    assert_eq!(seen.len(), 43);
    session.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_task_is_followed_from_another_session() {
    let server = Server::start(1).await;
    let client = server.client(ALICE);
    let first = client.connect().await.unwrap();
    let task = first
        .submit(Submit::new("sleep", &json!({"ms": 300, "steps": 3})).unwrap())
        .await
        .unwrap();
    let id = task.id().clone();
    drop(task);
    let second = client.connect().await.unwrap();
    let mut events = second.follow(&id, 1).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let event = next(&mut events).await;
        let end = event.is_terminal();
        seen.push(event.seq);
        if end {
            break;
        }
    }
    assert_eq!(seen, vec![2, 3, 4, 5, 6], "after_seq 1 skips accepted");
    first.close().await;
    second.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_admin_feed_shows_running_tasks_and_survives_a_cut() {
    let server = Server::start(1).await;
    let proxy = Proxy::start(server.addr).await;
    let admin = proxy.client(ADMIN).connect().await.unwrap();
    let mut feed = admin.watch().await.unwrap();
    let first = tokio::time::timeout(DEADLINE, feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchUpdate::Snapshot { .. }));
    let alice = server.client(ALICE).connect().await.unwrap();
    let task = alice
        .submit(Submit::new("sleep", &json!({"ms": 60_000})).unwrap())
        .await
        .unwrap();
    let running = |u: &WatchUpdate| match u {
        WatchUpdate::Task(s) => s.task_id == *task.id() && s.state == "running",
        WatchUpdate::Snapshot { tasks, .. } => tasks
            .iter()
            .any(|s| s.task_id == *task.id() && s.state == "running"),
        WatchUpdate::Stats(_) | WatchUpdate::Worker(_) => false,
    };
    loop {
        let update = tokio::time::timeout(DEADLINE, feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if running(&update) {
            break;
        }
    }
    proxy.cut();
    // After the reconnect a fresh snapshot shows the task again.
    loop {
        let update = tokio::time::timeout(DEADLINE, feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(update, WatchUpdate::Snapshot { .. }) {
            assert!(running(&update));
            break;
        }
    }
    task.cancel().await.unwrap();
    let e = alice.watch().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized));
    alice.close().await;
    admin.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_question_is_answered_over_the_session() {
    let server = Server::start(1).await;
    let session = server.client(ALICE).connect().await.unwrap();
    let mut task = session
        .submit(
            Submit::new(
                "approval",
                &json!({"prompt": "Ship it?", "choices": ["yes", "no"]}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let question = loop {
        let event = next(task.events()).await;
        if let EventKind::Question(q) = event.kind {
            break q;
        }
    };
    assert_eq!(question.prompt, "Ship it?");
    assert_eq!(question.choices.as_ref().map(Vec::len), Some(2));
    let e = task
        .answer(&question.question_id, &"maybe")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidInput), "{e}");
    let answered = task.answer(&question.question_id, &"yes").await.unwrap();
    assert!(matches!(&answered.kind, EventKind::Answered { outcome, .. } if outcome == "answered"));
    let e = task.answer(&question.question_id, &"no").await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Some(ErrorCode::AlreadyAnswered | ErrorCode::NotFound)
        ),
        "{e}"
    );
    match task.wait().await.unwrap() {
        Outcome::Completed { result, .. } => {
            let result: serde_json::Value = serde_json::from_str(result.get()).unwrap();
            assert_eq!(result["answer"], "yes");
        }
        other => panic!("{other:?}"),
    }
    // Not interactive: the question takes its default at once.
    let quiet = session
        .submit(
            Submit::new(
                "approval",
                &json!({"prompt": "Ship it?", "default": "approve"}),
            )
            .unwrap()
            .interactive(false),
        )
        .await
        .unwrap();
    assert!(matches!(
        quiet.wait().await.unwrap(),
        Outcome::Completed { .. }
    ));
    session.close().await;
    server.stop().await;
}
