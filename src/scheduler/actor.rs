//! The scheduler's async shell: one loop that feeds the core commands,
//! executor reports (served first, so a busy front door never delays
//! finishing work), cluster inputs (cluster mode) and the time, then lets
//! it dispatch and hands its cluster effects to the link.

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Command;
use super::cluster::{Effect, Input};
use super::core::Core;
use crate::exec::Tagged;
use crate::task::PublishedFile;

/// Commands or reports taken per turn.
const BATCH: usize = 256;

type Link = (mpsc::Receiver<Input>, mpsc::Sender<Effect>);

pub(super) async fn run(
    mut core: Core,
    mut commands: mpsc::Receiver<Command>,
    mut reports: mpsc::Receiver<Tagged>,
    link: Option<Link>,
    stop: CancellationToken,
    mut orphans: impl FnMut(Vec<PublishedFile>) + Send + 'static,
) {
    let mut command_batch = Vec::with_capacity(BATCH);
    let mut report_batch = Vec::with_capacity(BATCH);
    let mut input_batch = Vec::with_capacity(BATCH);
    let (mut inputs, effects) = match link {
        Some((inputs, effects)) => (Some(inputs), Some(effects)),
        None => (None, None),
    };
    loop {
        let wake = core.next_wake();
        // Effects that did not fit the link's queue wait in the core; the
        // loop wakes when there is room for them.
        let blocked = core.take_effects().is_some_and(|e| !e.is_empty());
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
            n = recv_inputs(&mut inputs, &mut input_batch) => {
                if n == 0 { inputs = None; continue; }
                let now = Instant::now();
                for input in input_batch.drain(..) {
                    core.on_cluster(input, now);
                }
            }
            n = commands.recv_many(&mut command_batch, BATCH) => {
                if n == 0 { break; }
                let now = Instant::now();
                for command in command_batch.drain(..) {
                    core.on_command(command, now);
                }
            }
            () = room(&effects, blocked) => {}
            () = sleep_until_opt(wake) => {}
        }
        let now = Instant::now();
        core.on_time(now);
        core.dispatch(now);
        core.entry_tick(now);
        let files = core.take_orphans();
        if !files.is_empty() {
            orphans(files);
        }
        core.update_gauges(now);
        if let (Some(tx), Some(queue)) = (&effects, core.take_effects()) {
            while let Some(effect) = queue.pop_front() {
                match tx.try_reserve() {
                    Ok(permit) => permit.send(effect),
                    Err(_) => {
                        queue.push_front(effect);
                        break;
                    }
                }
            }
        }
    }
    // Dropping the core closes every executor's order queue: executors
    // stop what they still run.
    drop(core);
}

async fn recv_inputs(inputs: &mut Option<mpsc::Receiver<Input>>, batch: &mut Vec<Input>) -> usize {
    match inputs {
        Some(rx) => rx.recv_many(batch, BATCH).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the link can take effects again (only while some wait).
async fn room(effects: &Option<mpsc::Sender<Effect>>, blocked: bool) {
    match effects {
        Some(tx) if blocked => {
            if let Ok(permit) = tx.reserve().await {
                drop(permit);
            }
        }
        _ => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
