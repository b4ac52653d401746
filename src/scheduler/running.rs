//! Running tasks: registering executors, handing attempts out, reading
//! executors' reports, deadlines, lost executors and re-queues.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WorkerState;
use super::core::{Core, Run, Timer};
use super::queue::Next;
use super::registry::Executor;
use crate::directory::Source;
use crate::exec::{
    Assignment, ExecutorId, ExecutorKind, ExecutorSpec, LostCause, Order, Outcome, RegisterError,
    Registration, Report, Reporter, Tagged, order_queue,
};
use crate::task::{CancelReason, FailureKind, TaskEvent, TaskFailure, TaskId, TaskState};

/// Most slots one executor may declare.
pub(crate) const MAX_SLOTS: usize = 1024;

impl Core {
    pub(super) fn register(
        &mut self,
        spec: ExecutorSpec,
        now: Instant,
    ) -> Result<Registration, RegisterError> {
        if self.drain.is_some() {
            return Err(RegisterError::ShuttingDown);
        }
        if !(1..=MAX_SLOTS).contains(&spec.slots) {
            return Err(RegisterError::BadSlots { max: MAX_SLOTS });
        }
        let builtin = spec.kind == ExecutorKind::Builtin;
        for decl in &spec.tasks {
            let known = self.directory.get(&decl.name);
            if builtin {
                if known.is_none_or(|offer| offer.source != Source::Builtin) {
                    return Err(RegisterError::BadTask {
                        name: decl.name.to_string(),
                        reason: "not a built-in task".to_owned(),
                    });
                }
            } else {
                self.directory
                    .declare(decl, Source::Worker)
                    .map_err(|reason| RegisterError::BadTask {
                        name: decl.name.to_string(),
                        reason,
                    })?;
            }
        }
        let names: Vec<Arc<str>> = spec.tasks.iter().map(|d| Arc::clone(&d.name)).collect();
        let (tx, rx) = mpsc::channel(order_queue(spec.slots));
        let id = self.registry.add(Executor {
            name: spec.name,
            kind: spec.kind,
            slots: spec.slots,
            tasks: names.clone(),
            orders: tx,
            held: Vec::new(),
            draining: false,
            connected_at: SystemTime::now(),
            done: 0,
            failed: 0,
        });
        self.directory.count_workers(&names, 1);
        if let Some(cluster) = &mut self.cluster {
            cluster.entry_dirty = true;
        }
        // Queued tasks of these names no longer wait for "no worker".
        for name in &names {
            let queued: Vec<TaskId> = self.queue.ids_of(name).collect();
            for task_id in queued {
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.no_worker_at = None;
                }
                self.clear_timers(task_id, |t| t == Timer::NoWorker);
            }
        }
        if let Some(view) = self.registry.get(id).map(|e| e.view(id)) {
            tracing::info!(worker = %view.name, slots = view.slots, "executor registered");
            self.watch_worker(view);
        }
        self.watch.dirty();
        let _ = now;
        Ok(Registration {
            id,
            orders: rx,
            reporter: Reporter::new(id, self.reports.clone()),
        })
    }

    /// Hands queued tasks to executors with free slots, the least busy
    /// executor first, until no executor can take one.
    pub(crate) fn dispatch(&mut self, now: Instant) {
        self.now = now;
        if self.cluster.is_some() {
            return self.cluster_dispatch(now);
        }
        if self.drain.is_some() {
            return;
        }
        while !self.queue.is_empty() {
            let mut started = false;
            for executor in self.registry.with_free_slots() {
                let Some(exec) = self.registry.get(executor) else {
                    continue;
                };
                let Some(next) = self.queue.pop_for(exec.tasks.iter()) else {
                    continue;
                };
                self.start(next, executor, now);
                started = true;
                break;
            }
            if !started {
                break;
            }
        }
    }

    pub(super) fn start(&mut self, next: Next, executor: ExecutorId, now: Instant) {
        let Next { id, group } = next;
        self.uncharge(id);
        let Some(task) = self.tasks.get_mut(&id) else {
            if let Some(group) = group {
                self.queue.release(&group);
            }
            return;
        };
        task.place = None;
        task.holds_group = group.is_some();
        let input = if task.retry_safe {
            task.input.clone()
        } else {
            task.input.take()
        };
        let Some(input) = input else {
            // Never strand a popped task: it fails, and frees its group.
            self.fail_queued(
                id,
                TaskFailure::new(FailureKind::Internal, "the task's input was lost"),
            );
            return;
        };
        let Some(exec) = self.registry.get_mut(executor) else {
            return;
        };
        task.attempt += 1;
        let attempt = task.attempt;
        let deadline = now
            .checked_add(task.timeout)
            .unwrap_or(now + crate::config::FOREVER);
        let assignment = Assignment {
            task_id: id,
            attempt,
            task: Arc::clone(&task.name),
            input,
            deadline,
            deadline_at: SystemTime::now() + task.timeout.min(crate::config::FOREVER),
            timeout: task.timeout,
            interactive: task.interactive,
            inputs: task.inputs.clone(),
        };
        exec.held.push((id, attempt, false));
        let worker = Arc::clone(&exec.name);
        if let Some(cl) = task.cluster.as_deref_mut() {
            // Cluster mode: the attempt runs once its `started` is in the
            // task's stream (`claims.rs::committed`).
            let node = self.cluster.as_ref().map_or("", |c| &*c.node);
            let worker: Arc<str> = Arc::from(format!("{node}/{worker}"));
            cl.assign = Some((cl.proposed.max(task.log.last_seq()) + 1, assignment));
            task.state = TaskState::Running;
            task.run = Some(Run::new(executor, deadline));
            task.started_at = Some(SystemTime::now());
            task.worker = Some(Arc::clone(&worker));
            task.no_worker_at = None;
            self.running += 1;
            task.timers.push((deadline, Timer::Run(attempt)));
            self.timers.insert((deadline, id, Timer::Run(attempt)));
            self.emit(id, TaskEvent::Started { worker, attempt }, Vec::new());
            return;
        }
        if exec.orders.try_send(Order::Assign(assignment)).is_err() {
            // The executor is not reading: it gets no more work, and this
            // attempt is lost with it when it reports `Gone`.
            tracing::warn!(executor = %exec.name, "an executor stopped reading its orders");
            exec.draining = true;
        }
        task.state = TaskState::Running;
        task.run = Some(Run::new(executor, deadline));
        task.started_at = Some(SystemTime::now());
        task.worker = Some(Arc::clone(&worker));
        task.no_worker_at = None;
        self.running += 1;
        self.clear_timers(id, |t| t == Timer::NoWorker);
        self.set_timer(id, deadline, Timer::Run(attempt));
        self.emit(id, TaskEvent::Started { worker, attempt }, Vec::new());
    }

    /// Whether a report about `attempt` of `task_id` from `executor` is
    /// about the task's current, unfinished attempt.
    pub(super) fn is_current(&self, executor: ExecutorId, task_id: TaskId, attempt: u32) -> bool {
        self.tasks.get(&task_id).is_some_and(|t| {
            t.attempt == attempt
                && !t.state.is_terminal()
                && t.run.as_ref().is_some_and(|r| r.executor == executor)
        })
    }

    pub(crate) fn on_report(&mut self, tagged: Tagged, now: Instant) {
        self.now = now;
        let Tagged { executor, report } = tagged;
        match report {
            Report::Progress {
                task_id,
                attempt,
                progress,
            } => {
                if !self.is_current(executor, task_id, attempt) {
                    return;
                }
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if task.run.as_ref().is_some_and(|r| r.stopping) {
                    return;
                }
                if let Some(fraction) = progress.fraction {
                    task.progress = Some(fraction);
                }
                if let Some(message) = &progress.message {
                    task.message = Some(message.clone());
                }
                self.emit(task_id, TaskEvent::Progress(progress), Vec::new());
            }
            Report::Ask {
                task_id,
                attempt,
                question,
            } => {
                if self.is_current(executor, task_id, attempt) {
                    self.on_ask(executor, task_id, attempt, question, now);
                }
            }
            Report::Finished {
                task_id,
                attempt,
                outcome,
                slot_free,
            } => self.on_finished(executor, task_id, attempt, outcome, slot_free, now),
            Report::SlotFree { task_id, attempt } => {
                if let Some(exec) = self.registry.get_mut(executor) {
                    exec.release(task_id, attempt);
                }
            }
            Report::Lost {
                task_id,
                attempt,
                cause,
            } => {
                let current = self.is_current(executor, task_id, attempt);
                let Some(exec) = self.registry.get_mut(executor) else {
                    return;
                };
                exec.release(task_id, attempt);
                let name = std::sync::Arc::clone(&exec.name);
                if current {
                    self.lost(task_id, attempt, &name, &cause, now);
                }
            }
            Report::Draining => {
                if let Some(exec) = self.registry.get_mut(executor) {
                    exec.draining = true;
                    let view = exec.view(executor);
                    self.watch_worker(view);
                }
            }
            Report::Gone { cause } => self.executor_gone(executor, cause, now),
        }
    }

    pub(super) fn on_finished(
        &mut self,
        executor: ExecutorId,
        task_id: TaskId,
        attempt: u32,
        outcome: Outcome,
        slot_free: bool,
        now: Instant,
    ) {
        let current = self.is_current(executor, task_id, attempt);
        if let Some(exec) = self.registry.get_mut(executor) {
            if !exec.holds(task_id, attempt) {
                tracing::debug!(task_id = %task_id, attempt, "a report about an attempt not held was ignored");
            } else if slot_free {
                exec.release(task_id, attempt);
            } else {
                exec.mark_ended(task_id, attempt);
            }
            match &outcome {
                Outcome::Completed { .. } => exec.done += 1,
                Outcome::Failed(_) => exec.failed += 1,
                Outcome::Cancelled => {}
            }
        }
        if !current {
            if let Outcome::Completed { files, .. } = outcome {
                self.orphans.extend(files);
            }
            return;
        }
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        let event = match outcome {
            Outcome::Completed {
                result,
                files,
                duration,
            } => {
                task.metrics.completed.inc();
                task.metrics.duration.observe(duration.as_secs_f64());
                self.ewma_ms = 0.8 * self.ewma_ms + 0.2 * duration.as_secs_f64() * 1000.0;
                tracing::debug!(task_id = %task_id, task = %task.name, "task completed");
                TaskEvent::Completed {
                    result,
                    files,
                    duration,
                }
            }
            Outcome::Failed(failure) => {
                task.metrics.failed.inc();
                tracing::info!(task_id = %task_id, task = %task.name, kind = ?failure.kind, "task failed");
                TaskEvent::Failed(failure)
            }
            Outcome::Cancelled => {
                task.metrics.cancelled.inc();
                let reason = task.cancel_reason.unwrap_or(CancelReason::Shutdown);
                tracing::info!(task_id = %task_id, task = %task.name, reason = reason.as_str(), "task cancelled");
                TaskEvent::Cancelled(reason)
            }
        };
        self.end_running(task_id, event, now);
    }

    /// Ends a running task with its terminal event; every canceller gets an
    /// answer (the `cancelled` event with its `ref`, or `already_finished`).
    pub(crate) fn end_running(&mut self, task_id: TaskId, event: TaskEvent, now: Instant) {
        if self
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.question.is_some())
        {
            self.close_question(
                task_id,
                crate::task::AnswerOutcome::Cancelled,
                None,
                Vec::new(),
                now,
            );
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(run) = task.run.take() else { return };
        self.running = self.running.saturating_sub(1);
        if std::mem::take(&mut task.holds_group)
            && let Some(group) = &task.concurrency_key
        {
            self.queue.release(group);
        }
        if let Some(exec) = self.registry.get_mut(run.executor) {
            exec.mark_ended(task_id, task.attempt);
        }
        let cancelled = matches!(event, TaskEvent::Cancelled(_));
        let mut copies = Vec::new();
        for waiter in std::mem::take(&mut task.cancel_waiters) {
            match waiter {
                super::Reply::Mailbox { mailbox, reference } if cancelled => {
                    copies.push((mailbox, reference));
                }
                super::Reply::Direct(tx) if cancelled => {
                    let _ = tx.send(Ok(()));
                }
                other => self.refuse(other, super::Refusal::AlreadyFinished),
            }
        }
        self.emit(task_id, event, copies);
        self.finish_drain_if_done();
    }

    /// Fails a task that is queued or just popped (never started).
    pub(super) fn fail_queued(&mut self, id: TaskId, failure: TaskFailure) {
        self.unqueue(id);
        if let Some(task) = self.tasks.get_mut(&id) {
            if std::mem::take(&mut task.holds_group)
                && let Some(group) = &task.concurrency_key
            {
                self.queue.release(group);
            }
            task.metrics.failed.inc();
        }
        self.emit(id, TaskEvent::Failed(failure), Vec::new());
    }

    /// An executor is gone: each attempt it ran is re-queued (retry-safe,
    /// attempts left, not shutting down) or fails with `worker_lost`.
    pub(super) fn executor_gone(
        &mut self,
        executor: ExecutorId,
        cause: Option<LostCause>,
        now: Instant,
    ) {
        let Some(exec) = self.registry.remove(executor) else {
            return;
        };
        if let Some(cluster) = &mut self.cluster {
            cluster.entry_dirty = true;
            cluster.claiming.remove(&executor);
        }
        self.directory.count_workers(&exec.tasks, -1);
        let mut view = exec.view(executor);
        view.state = WorkerState::Gone;
        let cause = cause.unwrap_or(LostCause::Disconnected);
        tracing::info!(worker = %exec.name, cause = cause.as_str(), running = view.running.len(), "executor gone");
        for (task_id, attempt, _) in &exec.held {
            if self.is_current(executor, *task_id, *attempt) {
                self.lost(*task_id, *attempt, &exec.name, &cause, now);
            }
        }
        // Queued tasks that nobody serves any more wait for a new executor,
        // bounded by `no_worker_wait`.
        for name in &exec.tasks {
            if self.registry.serves(name) {
                continue;
            }
            let queued: Vec<TaskId> = self.queue.ids_of(name).collect();
            let at = now + self.limits.no_worker_wait;
            for task_id in queued {
                if let Some(task) = self.tasks.get_mut(&task_id)
                    && task.no_worker_at.is_none()
                {
                    task.no_worker_at = Some(at);
                    self.set_timer(task_id, at, Timer::NoWorker);
                }
            }
        }
        self.watch_worker(view);
        self.watch.dirty();
    }

    pub(super) fn lost(
        &mut self,
        id: TaskId,
        attempt: u32,
        worker: &str,
        cause: &LostCause,
        now: Instant,
    ) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let elapsed = task
            .started_at
            .and_then(|at| at.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        let how = match cause {
            LostCause::Exit {
                signal: Some(signal),
                ..
            } => format!("was killed by signal {signal}"),
            LostCause::Exit {
                code: Some(code), ..
            } => format!("exited with status {code}"),
            LostCause::Exit { .. } => "exited".to_owned(),
            LostCause::Hung => "stopped answering heartbeats".to_owned(),
            LostCause::Disconnected => "disconnected".to_owned(),
            LostCause::CancelIgnored => "did not stop when told to".to_owned(),
            LostCause::Violations => "broke the protocol too often".to_owned(),
        };
        let mut details = serde_json::json!({
            "worker": worker, "attempt": attempt, "cause": cause.as_str(),
        });
        if let LostCause::Exit { code, signal } = cause {
            details["exit_code"] = serde_json::json!(code);
            details["signal"] = serde_json::json!(signal);
        }
        let mut failure = TaskFailure::new(
            FailureKind::WorkerLost,
            format!("worker {worker} {how} {elapsed} s into attempt {attempt}"),
        );
        failure.details = Some(details);
        let stopping = task.run.as_ref().is_some_and(|r| r.stopping);
        if stopping {
            let reason = task.cancel_reason.unwrap_or(CancelReason::Shutdown);
            task.metrics.cancelled.inc();
            return self.end_running(id, TaskEvent::Cancelled(reason), now);
        }
        let again = task.retry_safe
            && attempt < self.limits.max_attempts
            && self.drain.is_none()
            && task.input.is_some();
        if again {
            return self.requeue(id, failure, now);
        }
        task.metrics.failed.inc();
        tracing::warn!(task_id = %id, task = %task.name, worker, "task failed: worker lost");
        self.end_running(id, TaskEvent::Failed(failure), now);
    }

    /// Puts a task whose attempt was lost back at the front of its lane.
    pub(super) fn requeue(&mut self, id: TaskId, failure: TaskFailure, now: Instant) {
        self.clear_timers(id, |_| true);
        if self.tasks.get(&id).is_some_and(|t| t.question.is_some()) {
            self.close_question(
                id,
                crate::task::AnswerOutcome::Cancelled,
                None,
                Vec::new(),
                now,
            );
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let Some(cl) = task.cluster.as_deref_mut() {
            // Cluster mode: back to the cluster's queue (the link gives its
            // message back once `requeued` is in the stream); any node may
            // take it again.
            cl.owned = false;
            task.run = None;
            task.input = None;
            self.running = self.running.saturating_sub(1);
            if std::mem::take(&mut task.holds_group)
                && let Some(group) = &task.concurrency_key
            {
                self.queue.release(group);
            }
            let attempt = task.attempt;
            self.emit(id, TaskEvent::Requeued { attempt, failure }, Vec::new());
            return;
        }
        task.run = None;
        self.running = self.running.saturating_sub(1);
        if std::mem::take(&mut task.holds_group)
            && let Some(group) = &task.concurrency_key
        {
            self.queue.release(group);
        }
        let size = task.input.as_ref().map_or(0, |i| i.get().len() as u64);
        task.charged = size;
        task.state = TaskState::Queued;
        task.worker = None;
        let place =
            self.queue
                .push_front(id, &task.name, task.priority, task.concurrency_key.clone());
        task.place = Some(place);
        let attempt = task.attempt;
        let client = task.owner.clone().client;
        tracing::info!(task_id = %id, task = %task.name, attempt, "task re-queued after its worker was lost");
        self.charge(&client, size);
        self.emit(id, TaskEvent::Requeued { attempt, failure }, Vec::new());
    }
}
