//! Time: the next instant something is due, and what happens then
//! (deadlines, stop graces, question expiries, waiting for a worker, the
//! end of the shutdown grace, forgetting finished tasks, the counters).

use tokio::time::Instant;

use super::core::{Core, Timer};
use crate::exec::StopReason;
use crate::task::{CancelReason, FailureKind, TaskEvent, TaskFailure, TaskId, TaskState};

impl Core {
    /// The next instant something is due.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        [
            self.retention.next_deadline(),
            self.drain.as_ref().and_then(|d| d.grace_until),
            self.watch.stats_due,
            self.timers.first().map(|(at, _, _)| *at),
            self.cluster_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn on_time(&mut self, now: Instant) {
        self.now = now;
        while let Some(id) = self.retention.pop_due(
            now,
            self.limits.max_held_tasks,
            self.limits.max_held_result_bytes,
        ) {
            self.forget(id);
        }
        while let Some(&(at, id, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(task) = self.tasks.get_mut(&id) {
                task.timers.retain(|&entry| entry != (at, timer));
            }
            self.fire(id, timer, at, now);
        }
        if let Some(drain) = &mut self.drain
            && drain.grace_until.is_some_and(|at| at <= now)
        {
            drain.grace_until = None;
            let running: Vec<TaskId> = self
                .tasks
                .values()
                .filter(|t| matches!(t.state, TaskState::Running | TaskState::Waiting))
                .map(|t| t.id)
                .collect();
            for id in running {
                self.stop_running(id, StopReason::Cancelled(CancelReason::Shutdown), None, now);
            }
        }
        if self.watch.stats_due.is_some_and(|at| at <= now) {
            self.watch.stats_due = None;
            self.push_stats();
        }
        self.finish_drain_if_done();
    }

    pub(super) fn fire(&mut self, id: TaskId, timer: Timer, at: Instant, now: Instant) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        match timer {
            Timer::Run(attempt) => {
                let due = task.attempt == attempt
                    && !task.state.is_terminal()
                    && task
                        .run
                        .as_ref()
                        .is_some_and(|r| !r.is_paused() && r.deadline == at);
                if !due {
                    return;
                }
                let timeout = task.timeout;
                task.metrics.failed.inc();
                let failure = TaskFailure::new(
                    FailureKind::Timeout,
                    format!("ran past its timeout of {} s", timeout.as_secs_f64()),
                );
                self.stop_running(id, StopReason::Timeout, None, now);
                self.end_running(id, TaskEvent::Failed(failure), now);
            }
            Timer::Stop(attempt) => {
                let due = task.attempt == attempt
                    && !task.state.is_terminal()
                    && task.run.as_ref().is_some_and(|r| r.stopping);
                if !due {
                    return;
                }
                let reason = task.cancel_reason.unwrap_or(CancelReason::Shutdown);
                task.metrics.cancelled.inc();
                tracing::warn!(task_id = %id, task = %task.name, "the worker did not stop the task in time");
                self.end_running(id, TaskEvent::Cancelled(reason), now);
            }
            Timer::Question(attempt) => self.question_expired(id, attempt, now),
            Timer::RetryCancel => {
                if !task.state.is_terminal() {
                    self.retry_cancels(id);
                }
            }
            Timer::NoWorker => {
                let due = if self.cluster.is_some() {
                    self.cluster_no_worker(id, at)
                } else {
                    task.state == TaskState::Queued
                        && task.no_worker_at == Some(at)
                        && !self.registry.serves(&task.name)
                };
                if !due {
                    return;
                }
                let failure = TaskFailure::new(
                    FailureKind::NoWorker,
                    format!(
                        "no worker serving {:?} came within {} s",
                        &*task.name,
                        self.limits.no_worker_wait.as_secs()
                    ),
                );
                self.fail_queued(id, failure);
            }
        }
    }
}
