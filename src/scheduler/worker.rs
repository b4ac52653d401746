//! The local executor: runs one task per worker slot as a tokio task.
//!
//! A job races its handler against its cancel token and its deadline. A
//! handler that panics (in `run` itself or in its future) fails its task
//! with `task_error`; nothing else notices. Only a completed task publishes
//! its files; any other end drops its stage, which removes them. The slot
//! is handed back only when the task's blocking work has ended too, so a
//! CPU-bound task that ignores cancellation still holds its slot and the
//! pool never runs more than `workers` tasks' worth of work.
//!
//! This is the executor seam: a pool of external worker processes would take
//! the same [`Job`] and send the same [`Report`]s.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, Report};
use crate::artifacts::Artifacts;
use crate::catalog::{TaskCtx, TaskError, TaskHandler, panic_message};
use crate::task::{FailureKind, TaskFailure, TaskId};

/// One task handed to a worker slot.
pub(crate) struct Job {
    pub id: TaskId,
    pub handler: Arc<dyn TaskHandler>,
    pub input: Box<RawValue>,
    pub timeout: Duration,
    pub cancel: CancellationToken,
    pub slot: usize,
}

#[derive(Debug)]
pub(crate) struct Pool {
    reports: mpsc::Sender<Report>,
    artifacts: Artifacts,
    tracker: TaskTracker,
    names: Vec<Arc<str>>,
}

impl Pool {
    pub(crate) fn new(
        workers: usize,
        reports: mpsc::Sender<Report>,
        artifacts: Artifacts,
        tracker: TaskTracker,
    ) -> Pool {
        Pool {
            reports,
            artifacts,
            tracker,
            names: (1..=workers)
                .map(|i| Arc::from(format!("local-{i}")))
                .collect(),
        }
    }

    /// How many tasks may run at once.
    pub(crate) fn size(&self) -> usize {
        self.names.len()
    }

    /// The name a slot reports in `started.worker`.
    pub(crate) fn name(&self, slot: usize) -> Arc<str> {
        self.names
            .get(slot)
            .cloned()
            .unwrap_or_else(|| Arc::from("local"))
    }

    pub(crate) fn start(&self, job: Job) {
        let reports = self.reports.clone();
        let artifacts = self.artifacts.clone();
        self.tracker.spawn(run(job, reports, artifacts));
    }
}

async fn run(job: Job, reports: mpsc::Sender<Report>, artifacts: Artifacts) {
    let Job {
        id,
        handler,
        input,
        timeout,
        cancel,
        slot,
    } = job;
    let started = Instant::now();
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + Duration::from_secs(86_400 * 365));
    let ctx = TaskCtx::new(
        id,
        reports.clone(),
        cancel.clone(),
        deadline,
        artifacts.stage(),
    );
    let handler_ctx = ctx.clone();
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(move || {
        handler.run(input, handler_ctx)
    })) {
        Err(panic) => Outcome::Failed(TaskFailure::new(
            FailureKind::TaskError,
            panic_message(panic),
        )),
        Ok(future) => {
            tokio::select! {
                biased;
                () = cancel.cancelled() => Outcome::Cancelled,
                () = tokio::time::sleep_until(deadline) => {
                    cancel.cancel();
                    Outcome::Failed(TaskFailure::new(
                        FailureKind::Timeout,
                        format!("ran past its timeout of {} s", timeout.as_secs_f64()),
                    ))
                }
                result = AssertUnwindSafe(future).catch_unwind() => match result {
                    Ok(Ok(output)) => publish(&ctx, &artifacts, output.result, started).await,
                    Ok(Err(TaskError(failure))) => Outcome::Failed(failure),
                    Err(panic) => Outcome::Failed(TaskFailure::new(FailureKind::TaskError, panic_message(panic))),
                },
            }
        }
    };
    if !matches!(outcome, Outcome::Completed { .. }) {
        // Unpublished files go with the stage, off the async threads.
        if let Some(stage) = ctx.take_stage()
            && !stage.is_empty()
        {
            drop(tokio::task::spawn_blocking(move || drop(stage)));
        }
    }
    let idle = ctx.blocking_idle();
    let _ = reports
        .send(Report::Finished {
            task_id: id,
            outcome,
            release: idle.then_some(slot),
        })
        .await;
    if !idle {
        ctx.blocking_done().await;
        let _ = reports.send(Report::Released { slot }).await;
    }
}

async fn publish(
    ctx: &TaskCtx,
    artifacts: &Artifacts,
    result: Box<RawValue>,
    started: Instant,
) -> Outcome {
    let Some(stage) = ctx.take_stage() else {
        return Outcome::Failed(TaskFailure::new(
            FailureKind::Internal,
            "the task's files were lost",
        ));
    };
    match artifacts.publish(stage).await {
        Ok(files) => Outcome::Completed {
            result,
            files,
            duration: started.elapsed(),
        },
        Err(e) => {
            tracing::error!(task_id = %ctx.task_id(), error = %e, "publishing files failed");
            Outcome::Failed(TaskFailure::new(
                FailureKind::Internal,
                "publishing the task's files failed",
            ))
        }
    }
}
