//! Tasks served by external workers, end to end: the Node example and
//! `behave.mjs` as managed workers of an in-process server, remote
//! WebSocket workers written here.

use std::time::Duration;

use serde_json::{Value, json};

use super::remote::{connect, hello, until_type};
use super::{behave, events_until_all_end, here, managed_server, node, submit_all};
use crate::support::{ADMIN, ALICE, TestServer, WORKER, eventually};

fn kinds(events: &[Value], task: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["task_id"] == task)
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The pid of the managed worker running `task_id` (monitoring list).
async fn pid_running(server: &TestServer, task_id: &str) -> u32 {
    let mut pid = 0;
    for _ in 0..500 {
        let (_, body) = server.get_json(ADMIN, "/v1/admin/workers").await;
        if let Some(w) = body["workers"].as_array().and_then(|ws| {
            ws.iter().find(|w| {
                w["running"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|t| t == task_id))
            })
        }) {
            pid = w["pid"].as_u64().unwrap_or(0) as u32;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
    assert_ne!(pid, 0, "no worker lists {task_id}");
    pid
}

fn kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn the_node_example_serves_text_stats_with_progress_and_a_file() {
    let Some(node) = node() else { return };
    let mut group = behave(&node, "text", &[]);
    group.command = vec![
        node.to_string_lossy().into_owned(),
        format!(
            "{}/examples/workers/textstats.mjs",
            env!("CARGO_MANIFEST_DIR")
        ),
    ];
    let _ = here;
    let server = managed_server(vec![group], |_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let rejected = ws.submit("text_stats", json!({"txt": 1}), json!({})).await;
    assert_eq!(rejected["type"], "rejected");
    assert_eq!(
        rejected["error"]["code"], "invalid_input",
        "the worker's schema: {rejected}"
    );
    let task_id = ws
        .submit_ok("text_stats", json!({"text": "hello big\nworld"}))
        .await;
    let events = ws.events_until_end(&task_id).await;
    assert_eq!(
        kinds(&events, &task_id),
        ["started", "progress", "completed"],
        "{events:?}"
    );
    assert_eq!(events[0]["worker"], "text-1");
    assert_eq!(events[1]["progress"], 0.5);
    let completed = &events[2];
    assert_eq!(
        completed["result"],
        json!({"lines": 2, "words": 3, "chars": 15})
    );
    let file = &completed["files"][0];
    assert_eq!(file["name"], "stats.json");
    assert_eq!(file["content_type"], "application/json");
    let body = reqwest::get(server.url(file["url"].as_str().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        completed["result"]
    );
    server.stop().await;
}

#[tokio::test]
async fn one_slot_means_strictly_one_at_a_time() {
    let Some(node) = node() else { return };
    let server = managed_server(vec![behave(&node, "seq", &[("BEHAVE_SLOTS", "1")])], |_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let submits: Vec<_> = (0..6)
        .map(|_| ("w_sleep", json!({"ms": 30}), json!({})))
        .collect();
    let (ids, seen) = submit_all(&mut ws, &submits).await;
    let events = events_until_all_end(&mut ws, &ids, seen).await;
    let mut running = 0;
    for event in &events {
        match event["type"].as_str() {
            Some("started") => {
                running += 1;
                assert_eq!(
                    running, 1,
                    "two attempts at once on a 1-slot worker: {events:?}"
                );
            }
            Some("completed") => running -= 1,
            Some("progress") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn two_processes_share_a_task_name() {
    let Some(node) = node() else { return };
    let mut group = behave(&node, "pair", &[]);
    group.instances = 2;
    let server = managed_server(vec![group], |_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let submit = ("w_sleep", json!({"ms": 400}), json!({}));
    let (ids, seen) = submit_all(&mut ws, &[submit.clone(), submit]).await;
    let events = events_until_all_end(&mut ws, &ids, seen).await;
    let workers: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "started")
        .map(|e| e["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2);
    assert_ne!(workers[0], workers[1], "both processes served: {workers:?}");
    let first_end = events
        .iter()
        .position(|e| e["type"] == "completed")
        .unwrap();
    let starts = events
        .iter()
        .take(first_end)
        .filter(|e| e["type"] == "started")
        .count();
    assert_eq!(starts, 2, "both ran at the same time");
    server.stop().await;
}

#[tokio::test]
async fn a_busy_name_does_not_block_another() {
    let Some(node) = node() else { return };
    let server = managed_server(
        vec![
            behave(&node, "slow", &[("BEHAVE_PREFIX", "a_")]),
            behave(&node, "fast", &[("BEHAVE_PREFIX", "b_")]),
        ],
        |_| {},
    )
    .await;
    let mut ws = server.ws(ALICE).await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(
            ws.submit_ok("a_sleep", json!({"ms": 60000, "steps": 600}))
                .await,
        );
    }
    let fast = ws.submit_ok("b_echo", json!({"x": 1})).await;
    let done = ws.terminal(&fast).await;
    assert_eq!(done["type"], "completed");
    assert_eq!(done["result"], json!({"x": 1}));
    let (_, snapshot) = server
        .get_json(ALICE, &format!("/v1/tasks/{}", slow[2]))
        .await;
    assert_eq!(snapshot["state"], "queued", "the a_ backlog still waits");
    server.stop().await;
}

#[tokio::test]
async fn kill_9_mid_task_requeues_retry_safe_and_fails_the_rest() {
    let Some(node) = node() else { return };
    let group = behave(
        &node,
        "fragile",
        &[("BEHAVE_SLOTS", "2"), ("BEHAVE_RETRY_SAFE", "sleep")],
    );
    let server = managed_server(vec![group], |_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let (ids, seen) = submit_all(
        &mut ws,
        &[
            (
                "w_sleep",
                json!({"ms": 60000, "steps": 600, "retry_ms": 10}),
                json!({}),
            ),
            ("w_ignore_cancel", json!({}), json!({})),
        ],
    )
    .await;
    let (safe, unsafe_) = (ids[0].clone(), ids[1].clone());
    let pid = pid_running(&server, &safe).await;
    assert_eq!(pid, pid_running(&server, &unsafe_).await);
    kill(pid, "KILL");
    let events = events_until_all_end(&mut ws, &ids, seen).await;
    let safe_kinds: Vec<String> = kinds(&events, &safe)
        .into_iter()
        .filter(|k| k != "progress")
        .collect();
    assert_eq!(
        safe_kinds,
        ["started", "requeued", "started", "completed"],
        "{events:?}"
    );
    let all_safe: Vec<&Value> = events
        .iter()
        .filter(|e| e["task_id"] == safe.as_str())
        .collect();
    let seqs: Vec<u64> = all_safe
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (2..2 + seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free after accepted (seq 1)"
    );
    let safe_events: Vec<&Value> = all_safe
        .into_iter()
        .filter(|e| e["type"] != "progress")
        .collect();
    assert_eq!(safe_events[1]["attempt"], 1);
    assert_eq!(safe_events[1]["reason"], "worker_lost");
    assert_eq!(safe_events[2]["attempt"], 2);
    assert_eq!(safe_events[3]["result"]["attempt"], 2);
    assert_ne!(safe_events[3]["result"]["pid"], pid, "a new process ran it");
    let failed = events
        .iter()
        .find(|e| e["task_id"] == unsafe_.as_str() && e["type"] == "failed")
        .unwrap();
    assert_eq!(failed["error"]["code"], "worker_lost", "{failed}");
    assert_eq!(failed["error"]["details"]["cause"], "exit", "{failed}");
    assert_eq!(failed["error"]["details"]["signal"], 9, "{failed}");
    server.stop().await;
}

#[tokio::test]
async fn a_hung_worker_is_detected_and_replaced() {
    let Some(node) = node() else { return };
    let server = managed_server(vec![behave(&node, "hangs", &[])], |c| {
        c.workers.heartbeat_interval = Duration::from_secs(1);
        c.workers.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let mut ws = server.ws(ALICE).await;
    let task = ws.submit_ok("w_hang", json!({})).await;
    let failed = ws.terminal(&task).await;
    assert_eq!(failed["type"], "failed");
    assert_eq!(failed["error"]["code"], "worker_lost");
    assert_eq!(failed["error"]["details"]["cause"], "hung");
    // The group comes back and serves again.
    let task = ws.submit_ok("w_echo", json!(7)).await;
    assert_eq!(ws.terminal(&task).await["result"], 7);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("taskwire_worker_group_lost_total{group=\"hangs\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("taskwire_worker_group_restarts_total{group=\"hangs\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_and_timeout_reach_the_worker() {
    let Some(node) = node() else { return };
    let server = managed_server(
        vec![behave(&node, "stops", &[("BEHAVE_SLOTS", "2")])],
        |_| {},
    )
    .await;
    let mut ws = server.ws(ALICE).await;
    let task = ws
        .submit_ok("w_sleep", json!({"ms": 60000, "steps": 600}))
        .await;
    ws.until(|e| e["task_id"] == task.as_str() && e["type"] == "progress")
        .await;
    ws.send(json!({"type": "cancel", "ref": "x", "task_id": task}))
        .await;
    let cancelled = ws.terminal(&task).await;
    assert_eq!(cancelled["type"], "cancelled");
    assert_eq!(cancelled["reason"], "client");
    let timed = ws
        .submit(
            "w_sleep",
            json!({"ms": 60000, "steps": 600}),
            json!({"timeout_s": 0.5}),
        )
        .await;
    let timed = timed["task_id"].as_str().unwrap().to_owned();
    let failed = ws.terminal(&timed).await;
    assert_eq!(failed["error"]["code"], "timeout");
    // The worker stopped both and serves on: nothing was lost.
    let next = ws.submit_ok("w_echo", json!("still here")).await;
    assert_eq!(ws.terminal(&next).await["result"], "still here");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("taskwire_worker_group_lost_total{group=\"stops\"} 0"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn cancels_waiting_for_a_stubborn_task_are_bounded_and_each_answered() {
    let Some(node) = node() else { return };
    let server = managed_server(vec![behave(&node, "stubborn", &[])], |c| {
        c.limits.cancel_grace = Duration::from_secs(3);
    })
    .await;
    let mut ws = server.ws(ALICE).await;
    let task = ws.submit_ok("w_ignore_cancel", json!({})).await;
    ws.until(|e| e["task_id"] == task.as_str() && e["type"] == "started")
        .await;
    // The worker never answers a cancel: each one waits for the end the
    // grace brings, 64 at most.
    for n in 0..=64 {
        ws.send(json!({"type": "cancel", "ref": format!("c{n}"), "task_id": task}))
            .await;
    }
    let mut answered = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    while answered.len() < 64 {
        let message = ws.next().await;
        let Some(reference) = message["ref"].as_str() else {
            continue;
        };
        match message["type"].as_str() {
            Some("cancelled") => {
                answered.insert(reference.to_owned());
            }
            Some("error") => refused.push(message.clone()),
            _ => {}
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["ref"], "c64");
    assert_eq!(refused[0]["error"]["code"], "rate_limited");
    assert_eq!(refused[0]["error"]["details"]["bound"], "cancels_waiting");
    assert_eq!(refused[0]["error"]["details"]["max"], 64);
    assert!(!answered.contains("c64"));
    // The connection carries on.
    let next = ws.submit_ok("w_echo", json!("after")).await;
    assert_eq!(ws.terminal(&next).await["result"], "after");
    server.stop().await;
}

#[tokio::test]
async fn garbage_is_refused_and_too_much_of_it_loses_the_worker() {
    let Some(node) = node() else { return };
    let server = managed_server(vec![behave(&node, "noisy", &[])], |c| {
        c.workers.max_worker_violations = 5
    })
    .await;
    let mut ws = server.ws(ALICE).await;
    let few = ws.submit_ok("w_garbage", json!({"lines": 3})).await;
    assert_eq!(ws.terminal(&few).await["result"], "survived");
    let many = ws.submit_ok("w_garbage", json!({"lines": 10})).await;
    let failed = ws.terminal(&many).await;
    assert_eq!(failed["error"]["code"], "worker_lost", "{failed}");
    assert_eq!(failed["error"]["details"]["cause"], "violations");
    server.stop().await;
}

#[tokio::test]
async fn max_tasks_recycles_the_process() {
    let Some(node) = node() else { return };
    let mut group = behave(&node, "recycled", &[]);
    group.max_tasks = Some(2);
    let server = managed_server(vec![group], |_| {}).await;
    let mut ws = server.ws(ALICE).await;
    let mut pids = Vec::new();
    for _ in 0..3 {
        let task = ws.submit_ok("w_sleep", json!({"ms": 0})).await;
        let done = ws.terminal(&task).await;
        assert_eq!(done["type"], "completed", "{done}");
        pids.push(done["result"]["pid"].as_u64().unwrap());
    }
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2], "a fresh process after max_tasks");
    server.stop().await;
}

#[tokio::test]
async fn readyz_names_the_group_it_waits_for() {
    let Some(node) = node() else { return };
    let server = TestServer::with(|c| {
        let mut group = behave(&node, "late", &[("BEHAVE_HELLO", "never")]);
        group.startup_timeout = Duration::from_secs(600);
        c.workers.groups = vec![group];
    })
    .await;
    let response = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "waiting for worker group late"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_declared_task_waits_for_its_first_worker() {
    let server = TestServer::with(|c| {
        c.workers.tasks.push(taskwire::exec::TaskDecl {
            name: std::sync::Arc::from("later"),
            description: "served by a worker that is not there yet".to_owned(),
            input_schema: Some(json!({"type": "object", "required": ["n"]})),
            retry_safe: false,
            timeout: None,
        });
    })
    .await;
    let mut client = server.ws(ALICE).await;
    let rejected = client.submit("later", json!({}), json!({})).await;
    assert_eq!(
        rejected["error"]["code"], "invalid_input",
        "config's schema applies: {rejected}"
    );
    let task = client.submit_ok("later", json!({"n": 2})).await;
    let (_, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{task}")).await;
    assert_eq!(snapshot["state"], "queued");
    let mut worker = connect(&server, WORKER).await;
    worker.send(hello("edge", 1, &["later"], &[])).await;
    let assign = until_type(&mut worker, "assign").await;
    assert_eq!(assign["task_id"], task.as_str());
    worker
        .send(json!({"type": "complete", "task_id": task, "attempt": 1, "result": {"n": 2}}))
        .await;
    let done = client.terminal(&task).await;
    assert_eq!(done["type"], "completed");
    assert_eq!(done["result"], json!({"n": 2}));
    server.stop().await;
}

#[tokio::test]
async fn a_remote_worker_that_drops_loses_its_task_after_the_grace() {
    let server = TestServer::with(|c| c.workers.reconnect_grace = Duration::from_millis(500)).await;
    let mut worker = connect(&server, WORKER).await;
    worker.send(hello("edge", 1, &["w_job"], &[])).await;
    until_type(&mut worker, "welcome").await;
    let mut client = server.ws(ALICE).await;
    let task = client.submit_ok("w_job", json!({})).await;
    until_type(&mut worker, "assign").await;
    drop(worker);
    let failed = client.terminal(&task).await;
    assert_eq!(failed["error"]["code"], "worker_lost");
    assert_eq!(failed["error"]["details"]["cause"], "disconnected");
    server.stop().await;
}

#[tokio::test]
async fn a_remote_worker_that_comes_back_in_time_completes_exactly_once() {
    let server = TestServer::with(|c| c.workers.reconnect_grace = Duration::from_secs(30)).await;
    let mut worker = connect(&server, WORKER).await;
    worker.send(hello("edge", 2, &["w_job"], &[])).await;
    let welcome = until_type(&mut worker, "welcome").await;
    let mut client = server.ws(ALICE).await;
    let kept = client.submit_ok("w_job", json!({"k": 1})).await;
    let lost = client.submit_ok("w_job", json!({"k": 2})).await;
    until_type(&mut worker, "assign").await;
    until_type(&mut worker, "assign").await;
    // A complete whose `ok` the worker never sees: the connection drops.
    worker
        .send(json!({"type": "complete", "ref": "k1", "task_id": kept, "attempt": 1, "result": "first"}))
        .await;
    drop(worker);
    let mut worker = connect(&server, WORKER).await;
    let mut again = hello("edge", 2, &["w_job"], &[]);
    again["resume"] = json!([{"task_id": kept, "attempt": 1}]);
    worker.send(again).await;
    let back = until_type(&mut worker, "welcome").await;
    assert_eq!(
        back["worker_id"], welcome["worker_id"],
        "the same registration"
    );
    // The replay is acknowledged, not applied twice.
    worker
        .send(json!({"type": "complete", "ref": "k1", "task_id": kept, "attempt": 1, "result": "second"}))
        .await;
    assert_eq!(until_type(&mut worker, "ok").await["ref"], "k1");
    let events = events_until_all_end(&mut client, &[kept.clone(), lost.clone()], Vec::new()).await;
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["task_id"] == kept.as_str() && e["type"] == "completed")
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["result"], "first");
    let failed = events
        .iter()
        .find(|e| e["task_id"] == lost.as_str() && e["type"] == "failed")
        .unwrap();
    assert_eq!(
        failed["error"]["code"], "worker_lost",
        "not resumed: {failed}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_remote_worker_is_cancelled_and_fenced() {
    let server = TestServer::start().await;
    let mut worker = connect(&server, WORKER).await;
    worker.send(hello("edge", 1, &["w_job"], &[])).await;
    until_type(&mut worker, "welcome").await;
    let mut client = server.ws(ALICE).await;
    let task = client.submit_ok("w_job", json!({})).await;
    until_type(&mut worker, "assign").await;
    client
        .send(json!({"type": "cancel", "task_id": task}))
        .await;
    let cancel = until_type(&mut worker, "cancel").await;
    assert_eq!(cancel["reason"], "client");
    assert_eq!(cancel["attempt"], 1);
    worker
        .send(json!({"type": "cancelled", "task_id": task, "attempt": 1}))
        .await;
    assert_eq!(client.terminal(&task).await["type"], "cancelled");
    worker
        .send(json!({"type": "progress", "ref": "p", "task_id": task, "attempt": 1}))
        .await;
    let error = until_type(&mut worker, "error").await;
    assert_eq!(error["error"]["code"], "stale_attempt");
    worker
        .send(json!({"type": "complete", "ref": "z", "task_id": "0".repeat(32), "attempt": 1}))
        .await;
    let error = until_type(&mut worker, "error").await;
    assert_eq!(error["error"]["code"], "not_assigned");
    assert_eq!(error["ref"], "z");
    eventually("the worker is idle again", || async {
        let (_, body) = server.get_json(ADMIN, "/v1/admin/workers").await;
        body["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["kind"] == "remote" && w["busy"] == 0))
    })
    .await;
    server.stop().await;
}
