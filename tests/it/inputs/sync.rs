//! The sync flow of `docs/sync.md`, end to end over REST: upload the
//! device's zip, submit `sync` with `concurrency_key` = the device, poll the
//! status, download the instruction package; a second sync of the same
//! device waits for the first.

use std::io::Read;

use serde_json::{Value, json};

use super::archives::zip_of;
use super::{server, upload_ok};
use crate::support::{ALICE, DEADLINE, TestServer};

/// The device status of `docs/sync.md` for a task's REST status.
fn device_status(snapshot: &Value) -> u8 {
    match snapshot["state"].as_str() {
        Some("queued" | "running" | "waiting") => 1,
        Some("completed") => 2,
        // failed, cancelled, or forgotten: the device may sync again.
        _ => 0,
    }
}

fn device_zip(orders: usize) -> Vec<u8> {
    let mut xml = String::from("<orders>");
    for i in 0..orders {
        xml.push_str(&format!("<order id=\"{i}\"><line sku=\"A\"/></order>"));
    }
    xml.push_str("</orders>");
    zip_of(&[
        ("orders.xml", xml.as_bytes()),
        (
            "logs/app.csv",
            b"at,level,message\n1,info,started\n2,warn,low battery\n3,info,stopped\n",
        ),
        ("readme.txt", b"device export"),
    ])
}

async fn submit_sync(server: &TestServer, device: &str, upload: &str) -> String {
    let response = server
        .post_task(
            ALICE,
            json!({"task": "sync",
                   "input": {"device": device, "package": {"$upload": upload}, "work_ms": 400},
                   "options": {"concurrency_key": device}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["task_id"].as_str().unwrap().to_owned()
}

async fn status(server: &TestServer, task: &str) -> Value {
    let (code, body) = server.get_json(ALICE, &format!("/v1/tasks/{task}")).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn until_state(server: &TestServer, task: &str, states: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE * 2;
    loop {
        let now = status(server, task).await;
        if states.iter().any(|s| now["state"] == *s) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never in {states:?}: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll with a deadline
    }
}

#[tokio::test]
async fn sync_flow_end_to_end() {
    let server = server(|c| c.limits.workers = 2).await;
    sync_flow(&server).await;
    server.stop().await;
}

/// The flow served by `examples/workers/sync.py`: two managed Python
/// processes, so a second sync of device 17 waits although one is free.
#[tokio::test]
async fn sync_flow_served_by_a_python_worker() {
    let Some(python) = python3() else { return };
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workers/sync.py");
    let group = taskwire::workers::config::GroupConfig {
        name: std::sync::Arc::from("sync"),
        command: vec![
            python.to_string_lossy().into_owned(),
            example.to_string_lossy().into_owned(),
        ],
        args: Vec::new(),
        env: Default::default(),
        cwd: None,
        instances: 2,
        startup_timeout: std::time::Duration::from_secs(30),
        max_tasks: None,
        tasks: None,
    };
    let server = crate::workers::managed_server(vec![group], |_| {}).await;
    sync_flow(&server).await;
    server.stop().await;
}

/// `python3`, or `None` (after saying why) when the test may skip.
fn python3() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("python3"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("TASKWIRE_TEST_ALL").is_none(),
            "python3 is required (TASKWIRE_TEST_ALL is set)"
        );
        eprintln!("skipped: python3 not found (the sync worker example needs it)");
    }
    found
}

async fn sync_flow(server: &TestServer) {
    let first_zip = upload_ok(server, ALICE, "device-17.zip", device_zip(5)).await;
    let second_zip = upload_ok(server, ALICE, "device-17-again.zip", device_zip(2)).await;
    let other_zip = upload_ok(server, ALICE, "device-18.zip", device_zip(1)).await;

    let first = submit_sync(server, "17", &first_zip).await;
    let second = submit_sync(server, "17", &second_zip).await;
    let other = submit_sync(server, "18", &other_zip).await;

    // Device 17 syncs (status 1); its second sync waits although a worker
    // is free; device 18 syncs meanwhile.
    let running = until_state(server, &first, &["running"]).await;
    assert_eq!(device_status(&running), 1);
    let waiting = status(server, &second).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert_eq!(device_status(&waiting), 1);
    until_state(server, &other, &["running", "completed"]).await;

    // Done: status 2, the package is ready.
    let done = tokio::time::timeout(
        DEADLINE * 2,
        until_state(server, &first, &["completed", "failed"]),
    )
    .await
    .unwrap();
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(device_status(&done), 2);
    assert_eq!(
        done["result"],
        json!({"device": "17", "files": 3, "problems": 0, "actions": 3})
    );
    let file = &done["files"][0];
    assert_eq!(file["name"], "instructions-17.zip");
    assert_eq!(file["content_type"], "application/zip");
    let package = TestServer::http()
        .get(server.url(file["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(package.to_vec())).unwrap();
    let mut text = String::new();
    archive
        .by_name("instructions.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let instructions: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(instructions["device"], "17");
    let received = instructions["received"].as_array().unwrap();
    assert!(
        received.contains(
            &json!({"file": "orders.xml", "kind": "xml", "root": "orders", "elements": 11})
        )
    );
    assert!(received.contains(&json!({"file": "logs/app.csv", "kind": "csv", "records": 3})));
    assert!(received.contains(&json!({"file": "readme.txt", "kind": "other"})));

    // The second sync of device 17 ran only after the first had ended.
    let second_done = tokio::time::timeout(
        DEADLINE * 2,
        until_state(server, &second, &["completed", "failed"]),
    )
    .await
    .unwrap();
    assert_eq!(second_done["state"], "completed", "{second_done}");
    let first_end = done["finished_at"].as_str().unwrap();
    let second_start = second_done["started_at"].as_str().unwrap();
    assert!(second_start >= first_end, "{second_start} < {first_end}");
}
