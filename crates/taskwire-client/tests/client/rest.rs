//! REST: submit, status, cancel, SSE (resuming), admin list, downloads.

use serde_json::json;
use taskwire_client::{ErrorCode, EventKind, Submit};

use crate::support::{ADMIN, ALICE, DEADLINE, Server};

#[tokio::test]
async fn submit_status_events_cancel() {
    let server = Server::start(1).await;
    let client = server.client(ALICE);
    let submitted = client
        .submit(&Submit::new("sleep", &json!({"ms": 200, "steps": 4})).unwrap())
        .await
        .unwrap();
    assert!(submitted.events_url.ends_with("/events"));
    let mut events = client.events(&submitted.task_id, 0);
    let mut seqs = Vec::new();
    while let Some(event) = tokio::time::timeout(DEADLINE, events.next()).await.unwrap() {
        seqs.push(event.unwrap().seq);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7]);
    // Resuming after seq 5 gives the rest only.
    let mut events = client.events(&submitted.task_id, 5);
    let sixth = events.next().await.unwrap().unwrap();
    assert_eq!(sixth.seq, 6);
    let last = events.next().await.unwrap().unwrap();
    assert!(matches!(last.kind, EventKind::Completed { .. }));
    assert!(events.next().await.is_none());

    let snapshot = client.status(&submitted.task_id).await.unwrap();
    assert_eq!(snapshot.state, "completed");
    assert_eq!(snapshot.last_seq, 7);
    assert_eq!(snapshot.result.unwrap().get(), r#"{"slept_ms":200}"#);

    let long = client
        .submit(&Submit::new("sleep", &json!({"ms": 60_000})).unwrap())
        .await
        .unwrap();
    client.cancel(&long.task_id).await.unwrap();
    assert_eq!(
        client.status(&long.task_id).await.unwrap().state,
        "cancelled"
    );
    let e = client.cancel(&long.task_id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyFinished));
    assert_eq!(e.status(), Some(409));

    let e = client.status(&"00".into()).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some(ErrorCode::NotFound), Some(404))
    );
    let e = server
        .client("tw_nope")
        .status(&long.task_id)
        .await
        .unwrap_err();
    assert!(e.is_auth() && e.status() == Some(401), "{e}");

    let e = client.admin_tasks().await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    let list = server.client(ADMIN).admin_tasks().await.unwrap();
    assert!(
        list.tasks
            .iter()
            .any(|t| t.task_id == long.task_id && t.state == "cancelled")
    );
    server.stop().await;
}

#[tokio::test]
async fn downloads_are_checked_and_never_left_half_written() {
    let server = Server::start(1).await;
    let client = server.client(ALICE);
    let session = client.connect().await.unwrap();
    let task = session
        .submit(Submit::new("blob", &json!({"size": 300_000, "name": "data.bin"})).unwrap())
        .await
        .unwrap();
    let taskwire_client::Outcome::Completed { files, .. } = task.wait().await.unwrap() else {
        panic!("the blob task did not complete")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = client.download(&files[0], dir.path()).await.unwrap();
    assert_eq!(path, dir.path().join("data.bin"));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 300_000);

    let mut forged = files[0].clone();
    forged.sha256 = "00".repeat(32);
    forged.name = "forged.bin".to_owned();
    let e = client.download(&forged, dir.path()).await.unwrap_err();
    assert!(e.is_checksum(), "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("data.bin")],
        "no partial file stays"
    );

    let mut missing = files[0].clone();
    missing.url = "/files/nope/data.bin".to_owned();
    let e = client.download(&missing, dir.path()).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let mut evil = files[0].clone();
    evil.name = "../escape".to_owned();
    assert!(
        client
            .download(&evil, dir.path())
            .await
            .unwrap_err()
            .is_usage()
    );
    session.close().await;
    server.stop().await;
}
