//! The built-in pool: the server's own executor for the tasks compiled into
//! it (the [`Catalog`]). Each of its `workers` slots registers with the
//! scheduler as an executor of one slot named `local-<n>`, and runs one
//! attempt at a time as a tokio task.
//!
//! An attempt races its handler against its stop (a cancel, the deadline
//! the scheduler enforces, shutdown). A handler that panics (in `run`
//! itself or in its future) fails its task with `task_error`; nothing else
//! notices. Only a completed task publishes its files; any other end drops
//! its stage, which removes them. The slot is given back only when the
//! task's blocking work has ended too, so a CPU-bound task that ignores
//! cancellation still holds its slot and the pool never runs more than
//! `workers` tasks' worth of work.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::artifacts::Artifacts;
use crate::catalog::{AskError, Catalog, TaskCtx, TaskError, panic_message};
use crate::exec::{
    Assignment, ExecutorKind, ExecutorSpec, Order, Outcome, RegisterError, Registration, Report,
    Reporter, TaskDecl,
};
use crate::inputs::Inputs;
use crate::scheduler::Scheduler;
use crate::task::{FailureKind, TaskFailure};

/// Registers `slots` executors for the catalogue's tasks and starts them.
pub(crate) async fn start(
    scheduler: &Scheduler,
    catalog: Arc<Catalog>,
    artifacts: Artifacts,
    inputs: Inputs,
    slots: usize,
    only: Option<&[String]>,
    tracker: &TaskTracker,
) -> Result<(), RegisterError> {
    let tasks: Vec<TaskDecl> = catalog
        .iter()
        .filter(|entry| only.is_none_or(|names| names.iter().any(|n| *n == *entry.name)))
        .map(|entry| TaskDecl {
            name: Arc::clone(&entry.name),
            description: entry.handler.description().to_owned(),
            input_schema: None,
            retry_safe: entry.handler.retry_safe(),
            timeout: None,
        })
        .collect();
    if tasks.is_empty() {
        // `[cluster] pool_tasks` named none of them: other nodes run them.
        return Ok(());
    }
    for n in 1..=slots {
        let registration = scheduler
            .register(ExecutorSpec {
                name: Arc::from(format!("local-{n}")),
                kind: ExecutorKind::Builtin,
                slots: 1,
                tasks: tasks.clone(),
            })
            .await?;
        let slot = Slot {
            catalog: Arc::clone(&catalog),
            artifacts: artifacts.clone(),
            inputs: inputs.clone(),
        };
        tracker.spawn(slot.serve(registration));
    }
    Ok(())
}

struct Slot {
    catalog: Arc<Catalog>,
    artifacts: Artifacts,
    inputs: Inputs,
}

impl Slot {
    /// Runs assignments one at a time until the scheduler goes away.
    async fn serve(self, registration: Registration) {
        let Registration {
            mut orders,
            reporter,
            ..
        } = registration;
        while let Some(order) = orders.recv().await {
            match order {
                Order::Assign(assignment) => {
                    self.run(assignment, &mut orders, &reporter).await;
                }
                // About an attempt that already ended here: nothing to do.
                Order::Stop { .. } | Order::Answer { .. } | Order::AskRefused { .. } => {}
                // The scheduler sends no new work while draining.
                Order::Drain => {}
            }
        }
    }

    async fn run(
        &self,
        assignment: Assignment,
        orders: &mut mpsc::Receiver<Order>,
        reporter: &Reporter,
    ) {
        let Assignment {
            task_id,
            attempt,
            task,
            input,
            deadline,
            inputs,
            ..
        } = assignment;
        let started = Instant::now();
        let cancel = CancellationToken::new();
        let ctx = TaskCtx::new(
            task_id,
            attempt,
            reporter.clone(),
            cancel.clone(),
            deadline,
            self.artifacts.stage(),
            self.inputs.clone(),
        );
        let outcome = match self.catalog.get(&task) {
            None => Outcome::Failed(TaskFailure::new(
                FailureKind::Internal,
                format!("no built-in task {:?} on this server", &*task),
            )),
            Some(entry) => {
                let handler = Arc::clone(&entry.handler);
                let handler_ctx = ctx.clone();
                let prepare = self.inputs.clone();
                let prepare_reporter = reporter.clone();
                // Input files first (URL inputs are fetched now, with
                // progress), then the handler; both race the stop below, and
                // a panic in `run` itself is caught with the future's.
                let future = async move {
                    if !inputs.is_empty() {
                        let files = prepare
                            .prepare(task_id, attempt, &inputs, &prepare_reporter)
                            .await
                            .map_err(TaskError)?;
                        handler_ctx.set_inputs(files);
                    }
                    drop(inputs);
                    handler.run(input, handler_ctx).await
                };
                let mut future = std::pin::pin!(AssertUnwindSafe(future).catch_unwind());
                loop {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => break Outcome::Cancelled,
                        order = orders.recv() => match order {
                            // The scheduler stopped: so does the task.
                            None => cancel.cancel(),
                            Some(order) => on_order(order, &ctx, &cancel),
                        },
                        result = &mut future => break match result {
                            Ok(Ok(output)) => publish(&ctx, &self.artifacts, output.result, started).await,
                            Ok(Err(TaskError(failure))) => Outcome::Failed(failure),
                            Err(panic) => Outcome::Failed(TaskFailure::new(FailureKind::TaskError, panic_message(panic))),
                        },
                    }
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
        let _ = reporter
            .send(Report::Finished {
                task_id,
                attempt,
                outcome,
                slot_free: idle,
            })
            .await;
        if !idle {
            ctx.blocking_done().await;
            let _ = reporter.send(Report::SlotFree { task_id, attempt }).await;
        }
    }
}

/// An order about the running attempt.
fn on_order(order: Order, ctx: &TaskCtx, cancel: &CancellationToken) {
    match order {
        Order::Stop { .. } => cancel.cancel(),
        Order::Answer { answer, .. } => ctx.deliver_answer(Ok(answer)),
        Order::AskRefused { reason, .. } => ctx.deliver_answer(Err(AskError::Refused(reason))),
        // One slot, one attempt: the scheduler never assigns a busy slot.
        Order::Assign(assignment) => {
            tracing::error!(task_id = %assignment.task_id, "a busy slot was assigned a task");
        }
        Order::Drain => {}
    }
}

async fn publish(
    ctx: &TaskCtx,
    artifacts: &Artifacts,
    result: Box<serde_json::value::RawValue>,
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
