//! The scheduler's async shell: one loop that feeds the core commands,
//! executor reports (served first, so a busy front door never delays
//! finishing work) and the time, then lets it dispatch.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Command;
use super::core::Core;
use crate::exec::Tagged;
use crate::task::PublishedFile;

/// Commands or reports taken per turn.
const BATCH: usize = 256;

pub(super) async fn run(
    mut core: Core,
    mut commands: mpsc::Receiver<Command>,
    mut reports: mpsc::Receiver<Tagged>,
    stop: CancellationToken,
    mut orphans: impl FnMut(Vec<PublishedFile>) + Send + 'static,
) {
    let mut command_batch = Vec::with_capacity(BATCH);
    let mut report_batch = Vec::with_capacity(BATCH);
    loop {
        let wake = core.next_wake();
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            n = reports.recv_many(&mut report_batch, BATCH) => {
                if n == 0 { break; }
                let now = Instant::now();
                for report in report_batch.drain(..) {
                    core.on_report(report, now);
                }
            }
            n = commands.recv_many(&mut command_batch, BATCH) => {
                if n == 0 { break; }
                let now = Instant::now();
                for command in command_batch.drain(..) {
                    core.on_command(command, now);
                }
            }
            () = sleep_until_opt(wake) => {}
        }
        let now = Instant::now();
        core.on_time(now);
        core.dispatch(now);
        let files = core.take_orphans();
        if !files.is_empty() {
            orphans(files);
        }
        core.update_gauges(now);
    }
    // Dropping the core closes every executor's order queue: executors
    // stop what they still run.
    drop(core);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
