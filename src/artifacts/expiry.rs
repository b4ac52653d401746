//! The expiry loop: sleeps until the next deadline (never a periodic scan),
//! unlinks expired files off the async threads, and later forgets their
//! tombstones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Weak;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Artifacts, DownloadToken, Inner};
use crate::telemetry::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// Unlink the file; its link answers `410` from now on.
    Expire,
    /// Drop the tombstone; the link answers `404` from now on.
    Forget,
}

/// Runs until `stop` or until the area is gone. Holds only a weak reference,
/// so it never keeps the area (and its temp dir) alive.
pub(super) async fn run(
    inner: Weak<Inner>,
    mut incoming: mpsc::Receiver<(Instant, DownloadToken)>,
    stop: CancellationToken,
    metrics: Metrics,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, DownloadToken, Due)>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            () = stop.cancelled() => break,
            item = incoming.recv() => match item {
                Some((at, token)) => heap.push(Reverse((at, token, Due::Expire))),
                None => break,
            },
            () = sleep_until_some(next) => {
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some(Reverse((at, token, kind))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    due.push((token, kind));
                }
                let Some(inner) = inner.upgrade() else { break };
                let artifacts = Artifacts { inner };
                let ttl = artifacts.inner.ttl;
                let worker = artifacts.clone();
                let done = tokio::task::spawn_blocking(move || {
                    for (token, kind) in &due {
                        match kind {
                            Due::Expire => worker.expire(*token),
                            Due::Forget => worker.forget(*token),
                        }
                    }
                    due
                })
                .await;
                if let Ok(due) = done {
                    for (token, kind) in due {
                        if kind == Due::Expire {
                            heap.push(Reverse((now + ttl, token, Due::Forget)));
                        }
                    }
                }
                metrics.temp_bytes.set(artifacts.used_bytes() as i64);
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
