//! What carrying several tasks in one JetStream message would save NATS:
//! the operations a cluster node makes per task, with 1, 8 and 64 tasks'
//! worth of payload per message, and nats-server's own CPU per task.
//!
//! `cargo run --release --example nats_batching -- NATS_URL NATS_PID [TASKS]`
//! against a nats-server started with JetStream (`-js`) and nothing else
//! on it. For each batch size B it makes, for TASKS tasks (default 12,800):
//!
//! - `events`: three fenced appends per task's worth of events (accepted,
//!   started, completed), each message B events of 200 bytes on its own
//!   subject, the first with `Nats-Expected-Last-Subject-Sequence: 0`, up to
//!   256 publishes awaiting their acknowledgement at once;
//! - `queue`: one publish per B tasks to a work-queue stream, then a pull
//!   consumer fetching them 64 at a time and acknowledging each;
//! - `atomic`: today's layout (one message per event, on the task's own
//!   subject, the first fenced on `Nats-Expected-Last-Subject-Sequence: 0`)
//!   sent as JetStream atomic batches (`Nats-Batch-Id`, ADR-50; nats-server
//!   2.12+) of B messages: B events of B different tasks, one request to
//!   open the batch, plain publishes, and one acknowledgement at the commit,
//!   at most 32 batches open at once (a stream allows 50).
//!
//! and prints NATS's user + system CPU (`/proc/NATS_PID/stat`) and the wall
//! time, both divided by TASKS. It measures NATS alone: what a node's code
//! would cost in such a layout is not in it.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool: it prints, and any failure is fatal"
)]

use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

const EVENT_BYTES: usize = 200;
const IN_FLIGHT: usize = 256;

/// User + system CPU seconds of a process.
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("NATS_PID is running");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Publishes `n` messages made by `message(i)`, at most `IN_FLIGHT`
/// awaiting their acknowledgement at once, and waits for every one.
async fn publish_all(
    js: &jetstream::Context,
    n: usize,
    message: impl Fn(usize) -> (String, async_nats::HeaderMap, Bytes),
) {
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let (subject, headers, payload) = message(i);
        let ack = js
            .publish_with_headers(subject, headers, payload)
            .await
            .unwrap();
        acks.push(ack.into_future());
        if acks.len() >= IN_FLIGHT {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
}

/// A task's `step`th event on `subject`: the first (`accepted`) fenced on
/// the subject being empty.
fn event(subject: &str, step: usize, payload: &Bytes) -> (String, async_nats::HeaderMap, Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    if step == 0 {
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
    }
    (subject.to_owned(), headers, payload.clone())
}

/// Batches open at once at most in the `atomic` phase.
const BATCHES_IN_FLIGHT: usize = 32;

/// Publishes `n` messages made by `message(i)` as atomic batches of `size`:
/// the first of each a request (answered with an empty message or an
/// error), the middle ones plain publishes, the last the commit, whose
/// acknowledgement covers the batch.
async fn atomic_batches(
    js: &jetstream::Context,
    n: usize,
    size: usize,
    message: impl Fn(usize) -> (String, async_nats::HeaderMap, Bytes),
) {
    let client = js.client();
    // One subscription answers every batch's opening request.
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();
    let mut commits = FuturesUnordered::new();
    let mut batches = 0;
    for start in (0..n).step_by(size) {
        batches += 1;
        let id = format!("nb-{batches}-{start}");
        let end = (start + size).min(n);
        for i in start..end {
            let (subject, mut headers, payload) = message(i);
            headers.insert("Nats-Batch-Id", id.as_str());
            headers.insert("Nats-Batch-Sequence", (i - start + 1).to_string().as_str());
            if i + 1 == end {
                headers.insert("Nats-Batch-Commit", "1");
                let ack = js
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .unwrap();
                commits.push(ack.into_future());
            } else if i == start {
                client
                    .publish_with_reply_and_headers(
                        subject,
                        format!("{inbox}.{batches}"),
                        headers,
                        payload,
                    )
                    .await
                    .unwrap();
            } else {
                client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .unwrap();
            }
        }
        if commits.len() >= BATCHES_IN_FLIGHT {
            commits.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = commits.next().await {
        ack.unwrap();
    }
    // Every batch of more than one message was opened by a request.
    let opened = if size > 1 { batches } else { 0 };
    for _ in 0..opened {
        let reply = replies.next().await.unwrap();
        assert!(
            reply.payload.is_empty(),
            "a batch opened: {:?}",
            reply.payload
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(pid)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: nats_batching NATS_URL NATS_PID [TASKS]");
        std::process::exit(2);
    };
    let tasks: usize = args.get(3).map_or(12_800, |n| n.parse().expect("TASKS"));
    let js = jetstream::new(async_nats::connect(url).await.expect("NATS_URL"));
    for name in ["NB_EVENTS", "NB_QUEUE", "NB_ATOMIC"] {
        let _ = js.delete_stream(name).await;
    }
    js.create_stream(stream::Config {
        name: "NB_ATOMIC".into(),
        subjects: vec!["nb.at.>".into()],
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(stream::Config {
        name: "NB_EVENTS".into(),
        subjects: vec!["nb.ev.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = js
        .create_stream(stream::Config {
            name: "NB_QUEUE".into(),
            subjects: vec!["nb.q.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    // One JSON line per phase: NATS's CPU and the wall time per task.
    let report = |phase: &str, batch: usize, messages: usize, cpu0: f64, t0: Instant| {
        let cpu = (cpu_s(pid) - cpu0) * 1e6 / tasks as f64;
        let wall = t0.elapsed().as_secs_f64() * 1e6 / tasks as f64;
        println!(
            r#"{{"phase": "{phase}", "batch": {batch}, "messages": {messages}, "nats_cpu_us_per_task": {cpu:.1}, "wall_us_per_task": {wall:.1}}}"#
        );
    };
    for batch in [1usize, 8, 64] {
        let messages = tasks / batch;
        let payload = Bytes::from(vec![b'x'; EVENT_BYTES * batch]);

        let (cpu0, t0) = (cpu_s(pid), Instant::now());
        for step in 0..3 {
            publish_all(&js, messages, |i| {
                event(&format!("nb.ev.{batch}.{i}"), step, &payload)
            })
            .await;
        }
        report("events", batch, messages * 3, cpu0, t0);

        let (cpu0, t0) = (cpu_s(pid), Instant::now());
        publish_all(&js, messages, |i| {
            let headers = async_nats::HeaderMap::new();
            (format!("nb.q.{batch}.{i}"), headers, payload.clone())
        })
        .await;
        let lane = queue
            .create_consumer(consumer::pull::Config {
                durable_name: Some(format!("nb{batch}")),
                filter_subject: format!("nb.q.{batch}.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut taken = 0;
        while taken < messages {
            let mut fetched = lane.fetch().max_messages(64).messages().await.unwrap();
            while let Some(message) = fetched.next().await {
                message.unwrap().ack().await.unwrap();
                taken += 1;
            }
        }
        report("queue", batch, messages, cpu0, t0);

        let (cpu0, t0) = (cpu_s(pid), Instant::now());
        let one = Bytes::from(vec![b'x'; EVENT_BYTES]);
        for step in 0..3 {
            atomic_batches(&js, tasks, batch, |i| {
                event(&format!("nb.at.{batch}.{i}"), step, &one)
            })
            .await;
        }
        report("atomic", batch, tasks * 3, cpu0, t0);
    }
    for name in ["NB_EVENTS", "NB_QUEUE", "NB_ATOMIC"] {
        let _ = js.delete_stream(name).await;
    }
}
