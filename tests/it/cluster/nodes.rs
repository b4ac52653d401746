//! Three nodes on one NATS server: one service, whichever node is asked.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Nats, Node, assert_one_terminal, history};
use crate::support::eventually;

/// A runs nothing itself, B runs every built-in, C only watches.
async fn three() -> Option<(Nats, Node, Node, Node)> {
    let none: &[&str] = &["--cluster-pool-tasks", "none"];
    let (nats, a, b, c) = three_with([none, &["--workers", "2"], none]).await?;
    a.sees_workers("b").await;
    c.sees_workers("b").await;
    Some((nats, a, b, c))
}

/// Nodes `a`, `b` and `c` on one NATS server, each with its flags, ready.
async fn three_with(flags: [&[&str]; 3]) -> Option<(Nats, Node, Node, Node)> {
    let nats = Nats::start()?;
    nats.listening().await;
    let url = nats.url();
    let [a, b, c] = [("a", flags[0]), ("b", flags[1]), ("c", flags[2])]
        .map(|(name, flags)| Node::start(name, &url, flags));
    for node in [&a, &b, &c] {
        node.ready().await;
    }
    Some((nats, a, b, c))
}

#[tokio::test]
async fn submit_on_a_runs_on_b_watched_and_cancelled_from_c() {
    let Some((_nats, a, b, c)) = three().await else {
        return;
    };
    // Submit on A; it runs on B.
    let mut on_a = a.ws().await;
    let done = on_a.submit_ok("echo", json!({"n": 1})).await;
    let events = on_a.events_until_end(&done).await;
    let started = events.iter().find(|e| e["type"] == "started").unwrap();
    assert_eq!(
        started["worker"].as_str().unwrap().split('/').next(),
        Some("b")
    );
    assert_eq!(events.last().unwrap()["type"], "completed");
    assert_eq!(events.last().unwrap()["result"], json!({"n": 1}));
    // C replays it whole, and its snapshot agrees.
    let replay = history(&c, &done).await;
    assert_one_terminal(&replay);
    let (status, snapshot) = c.get(&format!("/v1/tasks/{done}")).await;
    assert_eq!(status, 200);
    assert_eq!(snapshot["state"], "completed");
    assert_eq!(snapshot["last_seq"], replay.len() as u64);

    // A long task: C follows it live and cancels it; A sees the cancel.
    let long = on_a
        .submit_ok("sleep", json!({"ms": 60_000, "steps": 60}))
        .await;
    let mut on_c = c.ws().await;
    on_c.send(json!({"type": "subscribe", "ref": "s", "task_id": long}))
        .await;
    on_c.until(|v| v["task_id"] == long.as_str() && v["type"] == "started")
        .await;
    on_c.send(json!({"type": "cancel", "ref": "x", "task_id": long}))
        .await;
    let cancelled = on_c
        .until(|v| v["type"] == "cancelled" && v["ref"] == "x")
        .await;
    assert_eq!(cancelled["reason"], "client");
    let seen_on_a = on_a.terminal(&long).await;
    assert_eq!(seen_on_a["type"], "cancelled");
    assert_eq!(seen_on_a["seq"], cancelled["seq"]);
    // A cancel of a finished task from anywhere: already_finished.
    let (status, body) = reqwest::Client::new()
        .delete(b.url(&format!("/v1/tasks/{long}")))
        .bearer_auth(super::KEY)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 409, "{:?}", body.text().await);
}

#[tokio::test]
async fn idempotent_submits_on_two_nodes_at_once_run_once() {
    let Some((_nats, a, b, _c)) = three().await else {
        return;
    };
    for round in 0..5 {
        let body = json!({"task": "echo", "input": {"round": round},
                          "options": {"idempotency_key": format!("same-{round}")}});
        let (on_a, on_b) =
            tokio::join!(a.post("/v1/tasks", body.clone()), b.post("/v1/tasks", body));
        assert_eq!(on_a.0, 202, "{on_a:?}");
        assert_eq!(on_b.0, 202, "{on_b:?}");
        assert_eq!(on_a.1["task_id"], on_b.1["task_id"], "round {round}");
        let duplicates = [&on_a.1, &on_b.1]
            .iter()
            .filter(|r| r["duplicate"] == true)
            .count();
        assert_eq!(duplicates, 1, "{on_a:?} {on_b:?}");
        let id = on_a.1["task_id"].as_str().unwrap().to_owned();
        let events = history(&a, &id).await;
        assert_one_terminal(&events);
        let starts = events.iter().filter(|e| e["type"] == "started").count();
        assert_eq!(starts, 1, "ran once: {events:?}");
    }
}

#[tokio::test]
async fn a_concurrency_key_never_overlaps_across_nodes() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--cluster-pool-tasks", "none"]);
    let b = Node::start("b", &url, &["--workers", "3"]);
    let d = Node::start("d", &url, &["--workers", "3"]);
    for node in [&a, &b, &d] {
        node.ready().await;
    }
    a.sees_workers("b").await;
    a.sees_workers("d").await;
    let mut ws = a.ws().await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let reply = ws
            .submit(
                "sleep",
                json!({"ms": 150}),
                json!({"concurrency_key": "warehouse-db"}),
            )
            .await;
        assert_eq!(reply["type"], "accepted", "{reply}");
        ids.push(reply["task_id"].as_str().unwrap().to_owned());
    }
    // Others of the same client without the key run beside them.
    let free = ws.submit_ok("sleep", json!({"ms": 10})).await;
    let mut spans: Vec<(String, String, String)> = Vec::new();
    let mut nodes = std::collections::BTreeSet::new();
    for id in &ids {
        let events = history(&a, id).await;
        assert_one_terminal(&events);
        let started = events.iter().find(|e| e["type"] == "started").unwrap();
        let worker = started["worker"].as_str().unwrap().to_owned();
        nodes.insert(worker.split('/').next().unwrap().to_owned());
        let end = events.last().unwrap();
        assert_eq!(end["type"], "completed", "{events:?}");
        spans.push((
            started["at"].as_str().unwrap().to_owned(),
            end["at"].as_str().unwrap().to_owned(),
            worker,
        ));
    }
    assert_eq!(
        history(&a, &free).await.last().unwrap()["type"],
        "completed"
    );
    spans.sort();
    for pair in spans.windows(2) {
        // RFC 3339 UTC with milliseconds sorts as time.
        assert!(pair[1].0 >= pair[0].1, "overlap: {pair:?}");
    }
    eprintln!("concurrency key ran on nodes {nodes:?}");
}

#[tokio::test]
async fn the_queue_bound_and_priorities_hold_across_nodes() {
    // Queue capacity 3 (running tasks count in cluster mode). B runs
    // `sleep` on one slot; C runs `echo` on one slot and is idle, so its
    // refused submits are the ones whose own fetch was still out.
    let cap: &[&str] = &["--queue-capacity", "3"];
    let Some((_nats, a, _b, c)) = three_with([
        &[cap, &["--cluster-pool-tasks", "none"]].concat(),
        &[cap, &["--workers", "1", "--cluster-pool-tasks", "sleep"]].concat(),
        &[cap, &["--workers", "1", "--cluster-pool-tasks", "echo"]].concat(),
    ])
    .await
    else {
        return;
    };
    for node in [&a, &c] {
        node.sees_workers("b").await;
    }
    a.sees_workers("c").await;
    let mut on_a = a.ws().await;
    let mut on_c = c.ws().await;
    let long = on_a
        .submit_ok("sleep", json!({"ms": 60_000, "steps": 60}))
        .await;
    on_a.until(|v| v["task_id"] == long.as_str() && v["type"] == "started")
        .await;
    // Queued behind it, on two nodes: low first, then high.
    let low = on_a
        .submit("sleep", json!({"ms": 1}), json!({"priority": "low"}))
        .await;
    assert_eq!(low["type"], "accepted", "{low}");
    let high = on_c
        .submit("sleep", json!({"ms": 1}), json!({"priority": "high"}))
        .await;
    assert_eq!(high["type"], "accepted", "{high}");
    let (low, high) = (low["task_id"].clone(), high["task_id"].clone());
    // Full, whichever node is asked, and whatever the task.
    for (on, task) in [("a", "sleep"), ("c", "echo"), ("c", "sleep")] {
        let ws = if on == "a" { &mut on_a } else { &mut on_c };
        let refused = ws.submit(task, json!({"ms": 1}), json!({})).await;
        assert_eq!(refused["type"], "rejected", "{refused}");
        assert_eq!(refused["error"]["code"], "queue_full", "{refused}");
        assert_eq!(refused["error"]["details"]["bound"], "queue_capacity");
        assert!(
            refused["error"]["retry_after_ms"].as_u64() >= Some(10),
            "{refused}"
        );
    }
    let (status, body) = a
        .post("/v1/tasks", json!({"task": "echo", "input": {}}))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "queue_full");
    // B's one slot frees: the high task starts before the low one,
    // though it was queued after it and on another node.
    on_a.send(json!({"type": "subscribe", "ref": "h", "task_id": high}))
        .await;
    on_a.send(json!({"type": "cancel", "ref": "x", "task_id": long}))
        .await;
    let first = on_a
        .until(|v| v["type"] == "started" && (v["task_id"] == high || v["task_id"] == low))
        .await;
    assert_eq!(first["task_id"], high, "{first}");
    for id in [&low, &high] {
        let events = history(&a, id.as_str().unwrap()).await;
        assert_one_terminal(&events);
        assert_eq!(events.last().unwrap()["type"], "completed", "{events:?}");
    }
    // With room again, C's idle executor still takes what it serves: the
    // slot promised to a refused submit's fetch was given back.
    let echo = on_c.submit_ok("echo", json!({"after": "full"})).await;
    let events = on_c.events_until_end(&echo).await;
    let started = events.iter().find(|e| e["type"] == "started").unwrap();
    assert!(
        started["worker"].as_str().unwrap().starts_with("c/"),
        "{started}"
    );
    assert_eq!(events.last().unwrap()["result"], json!({"after": "full"}));
}

#[tokio::test]
async fn the_monitor_shows_every_node_and_its_workers() {
    let Some((_nats, a, _b, c)) = three().await else {
        return;
    };
    // `taskwire nodes` (the CLI) on C: three nodes, C the one answering.
    let cli = |json: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskwire"));
        command
            .arg("nodes")
            .env("TASKWIRE_URL", c.url(""))
            .env("TASKWIRE_KEY", super::KEY)
            .env_remove("TASKWIRE_API_KEY")
            .kill_on_drop(true);
        if json {
            command.arg("--json");
        }
        async move {
            let output = command.output().await.unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
    };
    eventually("`taskwire nodes` lists three nodes up", || async {
        let lines = cli(true).await;
        let nodes: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        nodes.len() == 3 && nodes.iter().all(|n| n["state"] == "up")
    })
    .await;
    let lines = cli(true).await;
    let this: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|n| n["this"] == true)
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(this, ["c"], "{lines}");
    let table = cli(false).await;
    assert_eq!(table.lines().count(), 4, "a header and three rows: {table}");
    assert!(table.lines().any(|l| l.starts_with("c *")), "{table}");
    let (status, body) = c.get("/v1/admin/workers").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert!(
        names.contains(&"b/local-1") && names.contains(&"b/local-2"),
        "{names:?}"
    );
    crate::support::eventually("A lists the three nodes up", || async {
        let (_, nodes): (u16, Value) = a.get("/v1/admin/nodes").await;
        let states: Vec<(String, String)> = nodes["nodes"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or("").to_owned(),
                            n["state"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        ["a", "b", "c"]
            .iter()
            .all(|name| states.contains(&((*name).to_owned(), "up".to_owned())))
    })
    .await;
}

/// File inputs on a cluster: a `$url` input travels in the task's input and
/// is fetched by the node that runs the task; an upload made on the node
/// that receives the submit is copied into the cluster's store and read
/// back by the node that runs the task.
#[tokio::test]
async fn url_inputs_and_uploads_reach_the_node_that_runs_the_task() {
    let Some(nats) = Nats::start() else { return };
    nats.listening().await;
    let origin = crate::inputs::Origin::start().await;
    let url = nats.url();
    let allow = r#"fetch_allow = ["127.0.0.1/32"]"#;
    let a = Node::start_with_config("a", &url, &["--cluster-pool-tasks", "none"], allow);
    let b = Node::start_with_config("b", &url, &["--workers", "1"], allow);
    a.ready().await;
    b.ready().await;
    a.sees_workers("b").await;

    // An upload on A (where the submit goes).
    let upload = super::upload_pdf(&a, super::KEY).await;

    let input = json!({
        "page_size": "A4",
        "files": [{"$url": origin.url("/pdf/good.pdf")}, {"$upload": upload["upload_id"]}],
    });
    let mut ws = a.ws().await;
    let id = ws.submit_ok("pdf_check", input).await;
    let events = ws.events_until_end(&id).await;
    let started = events.iter().find(|e| e["type"] == "started").unwrap();
    assert!(
        started["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("b/")),
        "{started}"
    );
    for message in ["fetching input 1 of 2", "fetching input 2 of 2"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "progress" && e["message"] == message),
            "{message}: {events:?}"
        );
    }
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    let reports = done["result"]["files"].as_array().unwrap();
    assert_eq!(reports.len(), 2, "{done}");
    for report in reports {
        assert_eq!(report["status"], "ok", "{report}");
        assert_eq!(report["pages"], 3, "{report}");
    }
    assert!(
        reports.iter().any(|r| r["name"] == "paper.pdf"),
        "the upload keeps its name: {reports:?}"
    );
    assert_one_terminal(&history(&a, &id).await);
    // The stored copy goes with the task's end.
    super::stored_uploads_all_deleted(&url).await;
}

/// Two nodes with the same `[[schedules]]`: each fires every occurrence, and
/// the occurrence's idempotency key makes it one task, run once.
#[tokio::test]
async fn a_schedule_on_two_nodes_makes_one_task_per_occurrence() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let schedule = r#"
[[schedules]]
name = "every-second"
cron = "* * * * * *"
task = "echo"
input = { from = "schedule" }
key = "tester"
"#;
    let a = Node::start_with_config("a", &url, &["--workers", "2"], schedule);
    let b = Node::start_with_config("b", &url, &["--workers", "2"], schedule);
    a.ready().await;
    b.ready().await;
    // occurrence → task id, as each node recorded its runs.
    async fn runs(node: &Node) -> BTreeMap<String, String> {
        let (status, body) = node.get("/v1/schedules").await;
        assert_eq!(status, 200, "{body}");
        body["schedules"][0]["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["trigger"] == "timer")
            .filter_map(|r| {
                Some((
                    r["occurrence"].as_str()?.to_owned(),
                    r["task_id"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
    // (occurrence, task id on A, task id on B) for what both nodes fired.
    async fn fired_by_both(a: &Node, b: &Node) -> Vec<(String, String, String)> {
        let (on_a, on_b) = (runs(a).await, runs(b).await);
        on_a.into_iter()
            .filter_map(|(at, id)| {
                let other = on_b.get(&at)?.clone();
                Some((at, id, other))
            })
            .collect()
    }
    eventually("three occurrences fired by both nodes", || async {
        fired_by_both(&a, &b).await.len() >= 3
    })
    .await;
    let both = fired_by_both(&a, &b).await;
    for (at, on_a, on_b) in &both {
        assert_eq!(on_a, on_b, "occurrence {at} made two tasks");
    }
    let ids: BTreeSet<&String> = both.iter().map(|(_, id, _)| id).collect();
    assert_eq!(
        ids.len(),
        both.len(),
        "two occurrences share a task: {both:?}"
    );
    // Both nodes follow the run to its end, whichever node ran it.
    for node in [&a, &b] {
        eventually(
            &format!("{} shows the runs completed", node.name),
            || async {
                let (_, body) = node.get("/v1/schedules").await;
                let done: BTreeSet<String> = body["schedules"][0]["runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["state"] == "completed")
                    .filter_map(|r| Some(r["occurrence"].as_str()?.to_owned()))
                    .collect();
                both.iter().all(|(at, _, _)| done.contains(at))
            },
        )
        .await;
    }
    for id in ids {
        let events = history(&b, id).await;
        assert_one_terminal(&events);
        let started = events.iter().filter(|e| e["type"] == "started").count();
        assert_eq!(started, 1, "{events:?}");
        assert_eq!(
            events.last().map(|e| e["result"].clone()),
            Some(json!({"from": "schedule"})),
            "{events:?}"
        );
    }
}

/// A node with an idle slot that takes a task it was just given writes its
/// `accepted` and `started` in one message of the task's stream: two
/// messages for a no-op task instead of three, with the events the client
/// sees unchanged (`accepted`, then 2 and 3 in order). The submit's fetch
/// waits up to 100 ms for the task, so on a busy machine one submit may go
/// the longer way: of ten, at least one must take the short one.
#[tokio::test]
async fn a_task_its_idle_node_takes_writes_accepted_with_started() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--workers", "2"]);
    a.ready().await;
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    let events = js.get_stream("TW_EVENTS").await.unwrap();
    let mut ws = a.ws().await;
    let mut short = 0;
    for n in 0..10 {
        let id = ws.submit_ok("echo", json!({ "n": n })).await;
        let seen = ws.events_until_end(&id).await;
        let kinds: Vec<(u64, &str)> = seen
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["type"].as_str().unwrap()))
            .collect();
        // (`submit_ok` took the `accepted`.)
        assert_eq!(kinds, [(2, "started"), (3, "completed")], "{seen:?}");
        // The stream's messages of the task, in order: each one's events.
        let mut messages: Vec<Vec<u64>> = Vec::new();
        let mut from = 0;
        while let Ok(m) = events
            .direct_get_next_for_subject(format!("tw.ev.{id}"), Some(from + 1))
            .await
        {
            from = m.sequence;
            let body: Value = serde_json::from_slice(&m.payload).unwrap();
            let mut seqs = vec![body["seq"].as_u64().unwrap()];
            if let Some(then) = body["then"].as_array() {
                seqs.extend(then.iter().map(|e| e["seq"].as_u64().unwrap()));
                assert_eq!(body["v"], 2, "{body}");
            }
            messages.push(seqs);
        }
        match &messages[..] {
            [one, two] if *one == [1, 2] && *two == [3] => short += 1,
            [one, two, three] if *one == [1] && *two == [2] && *three == [3] => {}
            other => panic!("task {id}: messages {other:?}"),
        }
    }
    assert!(short >= 1, "no submit took the short way: {}", a.log());
}

/// Under load, a node often claims a task whose `accepted` it has not seen
/// yet and writes `accepted` with `started` itself, racing the submitter's
/// `accepted`; the loser reads the history again and runs the task at once.
/// No task may wait for its lease when no node died: every one starts once,
/// in attempt 1 (a lost race taken for the refusal of the next attempt at
/// it left tasks `started` by a node that had let them go, run again only
/// after the lease, as attempt 2).
#[tokio::test]
async fn under_load_no_task_waits_for_a_lease_when_no_node_died() {
    let serving: &[&str] = &["--workers", "64"];
    let Some((_nats, a, _b, _c)) = three_with([serving; 3]).await else {
        return;
    };
    for node in ["a", "b", "c"] {
        a.sees_workers(node).await;
    }
    // All on A, whose `accepted`s the others see only through their feeds.
    let (mut one, mut two, mut three) = (a.ws().await, a.ws().await, a.ws().await);
    let (first, second, third) = tokio::join!(
        load(&mut one, 1000),
        load(&mut two, 1000),
        load(&mut three, 1000)
    );
    let mut seen = 0;
    for events in [first, second, third] {
        for event in events {
            match event["type"].as_str() {
                Some("started") => assert_eq!(event["attempt"], 1, "{event}"),
                Some("requeued") => panic!("{event}"),
                Some("completed") => seen += 1,
                other => panic!("{other:?}: {event}"),
            }
        }
    }
    assert_eq!(seen, 3000);
}

/// `count` no-op tasks submitted on `ws`, 64 in flight: their `started`,
/// `requeued` and terminal events.
async fn load(ws: &mut crate::support::Ws, count: usize) -> Vec<Value> {
    let submit = |n: usize| json!({"type": "submit", "ref": n.to_string(), "task": "echo", "input": {"n": n}});
    let mut sent = 0;
    let mut ended = 0;
    let mut events = Vec::new();
    while sent < count.min(64) {
        ws.send(submit(sent)).await;
        sent += 1;
    }
    while ended < count {
        let event = ws.next().await;
        match event["type"].as_str() {
            Some("accepted" | "progress") => {}
            Some("started" | "requeued") => events.push(event),
            Some("completed" | "failed" | "cancelled") => {
                ended += 1;
                events.push(event);
                if sent < count {
                    ws.send(submit(sent)).await;
                    sent += 1;
                }
            }
            _ => panic!("{event}"),
        }
    }
    events
}
