//! `conns`: N authenticated idle WebSocket connections, and what they cost
//! the server in resident memory.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::BenchError;
use crate::proc;
use crate::ws::{self, Socket};

/// Handshakes in flight at once.
const OPEN_CONCURRENCY: usize = 128;
/// Small client read buffers, so 10,000 sockets fit in the client too.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

#[derive(Debug, Clone)]
pub struct ConnsArgs {
    pub url: String,
    pub key: String,
    pub count: usize,
    pub server_pid: Option<String>,
    /// Time for the server to settle (allocator, lazily freed buffers)
    /// before memory is read.
    pub settle: Duration,
    pub timeout: Duration,
}

pub async fn run(args: ConnsArgs) -> Result<Value, BenchError> {
    // Each connection is one descriptor here; keep some for everything else.
    let wanted = args.count as u64 + 256;
    let nofile = proc::raise_nofile(wanted).map_err(BenchError::io)?;
    if nofile < wanted {
        return Err(BenchError::new(format!(
            "RLIMIT_NOFILE is {nofile} (hard limit), {wanted} needed for {} connections",
            args.count
        )));
    }
    let pid = args.server_pid.as_deref();
    let rss = |pid: Option<&str>| pid.map(proc::rss_bytes).transpose().map_err(BenchError::io);
    let rss_before = rss(pid)?;
    let deadline = Instant::now() + args.timeout;

    let client = ws::client(&args.url, &args.key)?;
    let start = Instant::now();
    let mut sockets: Vec<Socket> = Vec::with_capacity(args.count);
    while sockets.len() < args.count {
        let batch = OPEN_CONCURRENCY.min(args.count - sockets.len());
        let mut opening = Vec::with_capacity(batch);
        for _ in 0..batch {
            let client = client.clone();
            opening.push(tokio::spawn(async move {
                tokio::time::timeout_at(deadline, ws::connect(&client, Some(CLIENT_READ_BUFFER)))
                    .await
                    .map_err(|_| BenchError::new("no welcome before the deadline"))?
            }));
        }
        for handle in opening {
            let socket = handle
                .await
                .map_err(|e| BenchError::new(format!("opener panicked: {e}")))?
                .map_err(|e| {
                    BenchError::new(format!("connection {}: {}", sockets.len() + 1, e.0))
                })?;
            sockets.push(socket);
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(args.settle).await;
    let rss_open = rss(pid)?;
    let client_rss = proc::rss_bytes("self").ok();

    drop(sockets);
    tokio::time::sleep(args.settle).await;
    let rss_closed = rss(pid)?;

    let per_conn = match (rss_before, rss_open) {
        (Some(before), Some(open)) if args.count > 0 => {
            Some((open as f64 - before as f64) / args.count as f64)
        }
        _ => None,
    };
    Ok(json!({
        "mode": "conns",
        "count": args.count,
        "opened": args.count,
        "open_s": open_s,
        "connections_per_s": args.count as f64 / open_s.max(1e-9),
        "server_rss_before_bytes": rss_before,
        "server_rss_open_bytes": rss_open,
        "server_rss_closed_bytes": rss_closed,
        "server_bytes_per_connection": per_conn,
        "server_kib_per_connection": per_conn.map(|b| b / 1024.0),
        "client_rss_bytes": client_rss,
    }))
}
