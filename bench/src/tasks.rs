//! `tasks`: C connections, each keeping W submits in flight until N tasks
//! have ended; throughput and submit-to-terminal latency.
//!
//! One task per connection owns its socket and `select!`s between the
//! socket and its back-off timer. Everything that became sendable while
//! handling a burst of incoming messages is fed, then flushed once, so the
//! client spends little CPU per task (it shares the machine with the
//! server).
//!
//! A slot is one of the W in-flight positions; a submit's `ref` is its slot
//! number. `accepted` (which echoes the `ref`) ties the slot to a task id;
//! the task's terminal event frees the slot, which submits the next task.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use taskwire_client::Frame;
use taskwire_client::protocol::ErrorCode;
use taskwire_client::protocol::incoming::{EventKind, Message};
use tokio::time::Instant;

use crate::proc::CpuSample;
use crate::ws::{self, Socket, ws_error};
use crate::{BenchError, percentiles};

/// Messages handled before writing what they made sendable.
const READ_BURST: usize = 1024;

#[derive(Debug, Clone)]
pub struct TasksArgs {
    pub url: String,
    pub key: String,
    pub connections: usize,
    pub in_flight: usize,
    pub count: u64,
    pub task: String,
    pub input: String,
    pub server_pid: Option<String>,
    pub timeout: Duration,
}

/// What one connection measured.
struct ConnStats {
    latency_us: Histogram<u64>,
    completed: u64,
    failed: u64,
    queue_full: u64,
    first_error: Option<String>,
}

pub async fn run(args: TasksArgs) -> Result<Value, BenchError> {
    if args.connections == 0 || args.in_flight == 0 {
        return Err(BenchError::new(
            "--connections and --in-flight must be at least 1",
        ));
    }
    let input: Value = serde_json::from_str(&args.input)
        .map_err(|e| BenchError::new(format!("--input is not JSON: {e}")))?;
    // The submit message minus its `ref`, which is appended per send.
    let prefix = format!(
        "{{\"type\":\"submit\",\"task\":{},\"input\":{},\"ref\":\"",
        Value::String(args.task.clone()),
        input
    );
    let deadline = Instant::now() + args.timeout;

    let client = ws::client(&args.url, &args.key)?;
    let mut sockets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        sockets.push(ws::connect(&client, None).await?);
    }

    let n_conns = args.connections as u64;
    let before = CpuSample::take(args.server_pid.as_deref()).map_err(BenchError::io)?;
    let start = Instant::now();
    let mut loops = Vec::with_capacity(args.connections);
    for (i, socket) in sockets.into_iter().enumerate() {
        // Spread N over the connections; the first ones take the remainder.
        let quota = args.count / n_conns + u64::from((i as u64) < args.count % n_conns);
        let prefix = prefix.clone();
        let in_flight = args.in_flight;
        loops.push(tokio::spawn(async move {
            drive(socket, quota, in_flight, &prefix, deadline).await
        }));
    }
    let mut merged = new_histogram()?;
    let (mut completed, mut failed, mut queue_full) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    for handle in loops {
        let stats = handle
            .await
            .map_err(|e| BenchError::new(format!("connection loop panicked: {e}")))??;
        merged
            .add(&stats.latency_us)
            .map_err(|e| BenchError::new(format!("histogram: {e:?}")))?;
        completed += stats.completed;
        failed += stats.failed;
        queue_full += stats.queue_full;
        first_error = first_error.or(stats.first_error);
    }
    let wall = start.elapsed().as_secs_f64();
    let after = CpuSample::take(args.server_pid.as_deref()).map_err(BenchError::io)?;

    let client_cpu = after.client - before.client;
    let server_cpu = match (before.server, after.server) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let finished = completed + failed;
    Ok(json!({
        "mode": "tasks",
        "task": args.task,
        "connections": args.connections,
        "in_flight": args.in_flight,
        "count": args.count,
        "completed": completed,
        "failures": failed,
        "queue_full_retries": queue_full,
        "first_error": first_error,
        "wall_s": wall,
        "tasks_per_s": finished as f64 / wall,
        "latency_us": percentiles(&merged),
        "client_cpu_s": client_cpu,
        "client_cpu_us_per_task": per_task_us(client_cpu, finished),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_task": server_cpu.map(|s| per_task_us(s, finished)),
    }))
}

fn per_task_us(cpu_s: f64, tasks: u64) -> f64 {
    if tasks == 0 {
        0.0
    } else {
        cpu_s * 1e6 / tasks as f64
    }
}

pub fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| BenchError::new(format!("histogram: {e:?}")))
}

async fn drive(
    mut socket: Socket,
    quota: u64,
    in_flight: usize,
    prefix: &str,
    deadline: Instant,
) -> Result<ConnStats, BenchError> {
    let mut stats = ConnStats {
        latency_us: new_histogram()?,
        completed: 0,
        failed: 0,
        queue_full: 0,
        first_error: None,
    };
    let window = usize::try_from(quota).map_or(in_flight, |q| q.min(in_flight));
    let mut started: Vec<Instant> = vec![Instant::now(); window];
    let mut by_task: HashMap<u128, usize> = HashMap::with_capacity(window * 2);
    let mut retries: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut to_send: Vec<usize> = (0..window).collect();
    let mut submitted = window as u64;
    let mut finished = 0u64;

    loop {
        if !to_send.is_empty() {
            let now = Instant::now();
            for slot in to_send.drain(..) {
                started[slot] = now;
                let mut text = String::with_capacity(prefix.len() + 24);
                text.push_str(prefix);
                text.push_str(itoa(slot).as_str());
                text.push_str("\"}");
                socket.feed_text(text).await.map_err(ws_error)?;
            }
            socket.flush().await.map_err(ws_error)?;
        }
        if finished >= quota {
            break;
        }
        let next_retry = retries.peek().map(|Reverse((at, _))| *at);
        let message = tokio::select! {
            message = socket.recv() => message,
            () = sleep_until_opt(next_retry) => {
                let now = Instant::now();
                while let Some(Reverse((at, slot))) = retries.peek().copied() {
                    if at > now { break; }
                    retries.pop();
                    to_send.push(slot);
                }
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(BenchError::new(format!(
                    "timed out with {} of {quota} tasks finished on a connection", finished
                )));
            }
        };
        let mut message = message;
        let mut handled = 0;
        loop {
            if let Frame::Message(msg) = message.map_err(ws_error)?
                && let Some(slot) = handle(&msg, &mut stats, &mut by_task, &started, &mut retries)?
            {
                finished += 1;
                if submitted < quota {
                    submitted += 1;
                    to_send.push(slot);
                }
            }
            handled += 1;
            if handled >= READ_BURST {
                break;
            }
            // Take what is already buffered without waiting.
            match socket.try_recv() {
                Some(next) => message = next,
                None => break,
            }
        }
    }
    let _ = socket.close().await;
    Ok(stats)
}

/// Applies one message; returns the slot it freed, if it ended a task.
fn handle(
    msg: &Message,
    stats: &mut ConnStats,
    by_task: &mut HashMap<u128, usize>,
    started: &[Instant],
    retries: &mut BinaryHeap<Reverse<(Instant, usize)>>,
) -> Result<Option<usize>, BenchError> {
    let slot_of_ref = |kind: &str, reference: Option<&str>| -> Result<usize, BenchError> {
        reference
            .and_then(|r| r.parse::<usize>().ok())
            .filter(|slot| *slot < started.len())
            .ok_or_else(|| BenchError::new(format!("a `{kind}` without a ref of ours")))
    };
    match msg {
        Message::Event(event) => match &event.kind {
            EventKind::Accepted { .. } if event.reference.is_some() => {
                let slot = slot_of_ref("accepted", event.reference.as_deref())?;
                let key = ws::task_key(event.task_id.as_str())
                    .ok_or_else(|| BenchError::new("`accepted` without a task id"))?;
                by_task.insert(key, slot);
                Ok(None)
            }
            kind if kind.is_terminal() => {
                let Some(slot) =
                    ws::task_key(event.task_id.as_str()).and_then(|key| by_task.remove(&key))
                else {
                    return Ok(None); // not one of ours, or seen twice
                };
                if let EventKind::Completed { .. } = kind {
                    stats.completed += 1;
                    let us = u64::try_from(started[slot].elapsed().as_micros()).unwrap_or(u64::MAX);
                    stats.latency_us.saturating_record(us.max(1));
                } else {
                    stats.failed += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = Some(match kind {
                            EventKind::Failed { error } => {
                                format!("failed: {}: {}", error.code.as_str(), error.message)
                            }
                            other => other.name().to_owned(),
                        });
                    }
                }
                Ok(Some(slot))
            }
            _ => Ok(None),
        },
        Message::Rejected { reference, error } => {
            let slot = slot_of_ref("rejected", reference.as_deref())?;
            if error.code == ErrorCode::QueueFull {
                stats.queue_full += 1;
                let wait = Duration::from_millis(error.retry_after_ms.unwrap_or(10).max(1));
                retries.push(Reverse((Instant::now() + wait, slot)));
                return Ok(None);
            }
            stats.failed += 1;
            if stats.first_error.is_none() {
                stats.first_error = Some(format!(
                    "rejected: {}: {}",
                    error.code.as_str(),
                    error.message
                ));
            }
            Ok(Some(slot))
        }
        Message::Error { error, .. } => Err(BenchError::new(format!(
            "server error: {}: {}",
            error.code.as_str(),
            error.message
        ))),
        _ => Ok(None),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A slot number as text, without going through `format!`.
fn itoa(n: usize) -> SmallText {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    SmallText { buf, start: i }
}

struct SmallText {
    buf: [u8; 20],
    start: usize,
}

impl SmallText {
    fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("0")
    }
}

#[cfg(test)]
mod tests {
    use super::itoa;

    #[test]
    fn itoa_writes_decimal() {
        for n in [0usize, 7, 10, 63, 12_345, usize::MAX] {
            assert_eq!(itoa(n).as_str(), n.to_string());
        }
    }
}
