//! Requests about tasks: submits (with idempotency and the queue bounds),
//! cancels, subscriptions, disconnects, and the drain.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::core::{Core, DrainState, STOP_MARGIN, Subscriber, Task, Timer};
use super::events::EventLog;
use super::{Mailbox, MailboxId, Outbound, Refusal, Reply, Submitted};
use crate::auth::Principal;
use crate::exec::{ExecutorId, Order, StopReason};
use crate::task::{CancelReason, ClientId, Delivery, TaskEvent, TaskId, TaskSpec, TaskState};

impl Core {
    pub(super) fn submit(&mut self, spec: TaskSpec, reply: Reply<Submitted>, now: Instant) {
        if self.drain.is_some() {
            return self.reject(reply, Refusal::ShuttingDown);
        }
        let TaskSpec {
            id,
            name,
            input,
            options,
            owner,
            retry_safe,
            inputs,
            tag,
        } = spec;
        if let Some(key) = &options.idempotency_key
            && let Some(existing) = self.idempotency.find(&owner.client, &name, key)
            && self.tasks.contains_key(&existing)
        {
            return self.duplicate(existing, reply);
        }
        let retry_after = self.retry_after();
        if self.queue.len() >= self.limits.queue_capacity {
            let capacity = self.limits.queue_capacity;
            return self.reject(
                reply,
                Refusal::QueueFull {
                    capacity,
                    retry_after,
                },
            );
        }
        let size = input.get().len() as u64;
        if self.queued_bytes + size > self.limits.max_queued_input_bytes {
            let max = self.limits.max_queued_input_bytes;
            return self.reject(reply, Refusal::QueuedBytesFull { max, retry_after });
        }
        let client_bytes = self.client_bytes.get(&owner.client).copied().unwrap_or(0);
        if client_bytes + size > self.limits.max_queued_input_bytes_per_client {
            let max = self.limits.max_queued_input_bytes_per_client;
            return self.reject(reply, Refusal::ClientShareFull { max, retry_after });
        }
        self.charge(&owner.client, size);
        let metrics = self.metrics.task(&name);
        metrics.submitted.inc();
        if let Some(key) = &options.idempotency_key {
            self.idempotency.remember(&owner.client, &name, key, id);
        }
        let group = options
            .concurrency_key
            .as_deref()
            .map(|key| (owner.client.clone(), Box::<str>::from(key)));
        let place = self.queue.push(id, &name, options.priority, group.clone());
        let position = {
            let cohort = self.registry.cohort(&name);
            self.queue.position(&place, cohort.iter())
        };
        let mut subscribers = Vec::with_capacity(1);
        let mut cancel_with = None;
        let (copies, direct) = match reply {
            Reply::Mailbox { mailbox, reference } => {
                if options.cancel_on_disconnect {
                    cancel_with = Some(mailbox.id());
                }
                subscribers.push(Subscriber {
                    mailbox: mailbox.clone(),
                    stream: options.delivery == Delivery::Stream,
                });
                (vec![(mailbox, reference)], None)
            }
            Reply::Direct(tx) => (Vec::new(), Some(tx)),
        };
        let no_worker_at = (!self.registry.serves(&name)).then(|| now + self.limits.no_worker_wait);
        tracing::debug!(task_id = %id, task = %name, client = %owner.client, "task accepted");
        self.tasks.insert(
            id,
            Task {
                id,
                name,
                owner,
                metrics,
                priority: options.priority,
                concurrency_key: group,
                place: Some(place),
                holds_group: false,
                timeout: options.timeout,
                idempotency_key: options.idempotency_key.map(String::into_boxed_str),
                cancel_with,
                interactive: options.interactive,
                retry_safe,
                state: TaskState::Queued,
                input: Some(input),
                inputs,
                charged: size,
                attempt: 0,
                run: None,
                log: EventLog::new(),
                subscribers,
                cancel_reason: None,
                cancel_waiters: Vec::new(),
                question: None,
                answered: Vec::new(),
                worker: None,
                created_at: SystemTime::now(),
                started_at: None,
                finished_at: None,
                progress: None,
                message: None,
                no_worker_at,
                cluster: None,
                tag,
                timers: Vec::new(),
            },
        );
        if let Some(at) = no_worker_at {
            self.set_timer(id, at, Timer::NoWorker);
        }
        self.emit(id, TaskEvent::Accepted { position }, copies);
        if let Some(tx) = direct {
            let _ = tx.send(Ok(Submitted {
                task_id: id,
                position,
                duplicate: false,
            }));
        }
    }

    pub(crate) fn charge(&mut self, client: &ClientId, bytes: u64) {
        self.queued_bytes += bytes;
        *self.client_bytes.entry(client.clone()).or_default() += bytes;
    }

    /// Gives back a queued task's input charge.
    pub(crate) fn uncharge(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let bytes = std::mem::take(&mut task.charged);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        if let Some(used) = self.client_bytes.get_mut(&task.owner.client) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                self.client_bytes.remove(&task.owner.client);
            }
        }
    }

    /// A repeat of an idempotent submit: the first task's `accepted`
    /// (marked duplicate), what it did since, and its live events.
    pub(super) fn duplicate(&mut self, id: TaskId, reply: Reply<Submitted>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(first) = task.log.first().cloned() else {
            return;
        };
        let position = match &first.event {
            TaskEvent::Accepted { position } => *position,
            _ => 0,
        };
        match reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Ok(Submitted {
                    task_id: id,
                    position,
                    duplicate: true,
                }));
            }
            Reply::Mailbox { mailbox, reference } => {
                let copy = Outbound::Event {
                    record: first,
                    reference,
                    duplicate: true,
                    stream: false,
                };
                if !mailbox.deliver(copy, &self.metrics) {
                    return;
                }
                let rest = task.log.replay(1);
                if !rest.is_empty() && !mailbox.deliver(Outbound::Replay(rest), &self.metrics) {
                    return;
                }
                if !task.log_ended()
                    && !task
                        .subscribers
                        .iter()
                        .any(|s| s.mailbox.id() == mailbox.id())
                {
                    task.subscribers.push(Subscriber {
                        mailbox,
                        stream: false,
                    });
                }
            }
        }
    }

    pub(crate) fn retry_after(&self) -> Duration {
        let (slots, _) = self.registry.slot_counts();
        let per_slot = self.queue.len() as f64 / slots.max(1) as f64;
        let estimate = self.ewma_ms * per_slot.max(1.0);
        Duration::from_millis((estimate.ceil() as u64).clamp(10, 60_000))
    }

    /// A cancel of this task is refused when [`super::MAX_CANCELS_WAITING`]
    /// already wait for its end here: for its terminal event or, in cluster
    /// mode, for another try or the running node's answer.
    pub(super) fn too_many_cancels(&self, id: TaskId) -> Option<Refusal> {
        let task = self.tasks.get(&id)?;
        let retrying = task.cluster.as_deref().map_or(0, |c| c.retry_cancel.len());
        let forwarded = self.cluster.as_ref().map_or(0, |c| {
            c.forwards
                .values()
                .filter(|f| matches!(f, super::cluster::PendingForward::Cancel(t, ..) if *t == id))
                .count()
        });
        let max = super::MAX_CANCELS_WAITING;
        (task.cancel_waiters.len() + retrying + forwarded >= max)
            .then_some(Refusal::TooManyCancels { max })
    }

    pub(super) fn cancel(
        &mut self,
        id: TaskId,
        principal: &Principal,
        reply: Reply<()>,
        now: Instant,
    ) {
        let Some(task) = self.tasks.get(&id).filter(|t| t.visible_to(principal)) else {
            return self.refuse(reply, Refusal::NotFound);
        };
        match task.state {
            TaskState::Queued => {
                let copies = match reply {
                    Reply::Mailbox { mailbox, reference } => vec![(mailbox, reference)],
                    Reply::Direct(tx) => {
                        let _ = tx.send(Ok(()));
                        Vec::new()
                    }
                };
                self.cancel_queued(id, CancelReason::Client, copies);
            }
            TaskState::Running | TaskState::Waiting => {
                if let Some(refusal) = self.too_many_cancels(id) {
                    return self.refuse(reply, refusal);
                }
                self.stop_running(
                    id,
                    StopReason::Cancelled(CancelReason::Client),
                    Some(reply),
                    now,
                );
            }
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled => {
                self.refuse(reply, Refusal::AlreadyFinished);
            }
        }
    }

    /// Takes a queued task out of the line; it never starts.
    pub(crate) fn cancel_queued(
        &mut self,
        id: TaskId,
        reason: CancelReason,
        copies: Vec<(Mailbox, Option<Box<str>>)>,
    ) {
        self.unqueue(id);
        if let Some(task) = self.tasks.get(&id) {
            task.metrics.cancelled.inc();
            tracing::info!(task_id = %id, task = %task.name, reason = reason.as_str(), "task cancelled");
        }
        self.emit(id, TaskEvent::Cancelled(reason), copies);
    }

    /// Removes a queued task from the line and gives back its charge.
    pub(crate) fn unqueue(&mut self, id: TaskId) {
        if let Some(place) = self.tasks.get_mut(&id).and_then(|t| t.place.take()) {
            self.queue.remove(id, &place);
        }
        self.uncharge(id);
    }

    /// Asks the executor of a running task to stop it; the terminal event
    /// comes with the executor's report (or when its grace runs out).
    pub(crate) fn stop_running(
        &mut self,
        id: TaskId,
        reason: StopReason,
        reply: Option<Reply<()>>,
        now: Instant,
    ) {
        if let StopReason::Cancelled(_) = reason
            && self.tasks.get(&id).is_some_and(|t| t.question.is_some())
        {
            self.close_question(
                id,
                crate::task::AnswerOutcome::Cancelled,
                None,
                Vec::new(),
                now,
            );
        }
        let grace = self.limits.cancel_grace;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if let StopReason::Cancelled(cause) = reason
            && task.cancel_reason.is_none()
        {
            task.cancel_reason = Some(cause);
        }
        if let Some(reply) = reply {
            task.cancel_waiters.push(reply);
        }
        let attempt = task.attempt;
        let Some(run) = task.run.as_mut().filter(|r| !r.stopping) else {
            return;
        };
        run.stopping = true;
        let executor = run.executor;
        self.set_timer(id, now + grace + STOP_MARGIN, Timer::Stop(attempt));
        self.order(
            executor,
            Order::Stop {
                task_id: id,
                attempt,
                reason,
                grace,
            },
        );
    }

    pub(super) fn subscribe(
        &mut self,
        id: TaskId,
        principal: &Principal,
        after_seq: u64,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) {
        let Some(task) = self.tasks.get_mut(&id).filter(|t| t.visible_to(principal)) else {
            let reply: Reply<()> = Reply::Mailbox { mailbox, reference };
            return self.refuse(reply, Refusal::NotFound);
        };
        let replay = task.log.replay(after_seq);
        if !replay.is_empty() && !mailbox.deliver(Outbound::Replay(replay), &self.metrics) {
            return;
        }
        if !task.log_ended()
            && !task
                .subscribers
                .iter()
                .any(|s| s.mailbox.id() == mailbox.id())
        {
            task.subscribers.push(Subscriber {
                mailbox,
                stream: false,
            });
        }
    }

    pub(super) fn disconnected(&mut self, mailbox: MailboxId, tasks: &[TaskId], now: Instant) {
        self.watch.remove(mailbox);
        for id in tasks {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            task.subscribers.retain(|s| s.mailbox.id() != mailbox);
            if task.cancel_with != Some(mailbox) {
                continue;
            }
            match task.state {
                TaskState::Queued => self.cancel_queued(*id, CancelReason::Disconnect, Vec::new()),
                TaskState::Running | TaskState::Waiting => self.stop_running(
                    *id,
                    StopReason::Cancelled(CancelReason::Disconnect),
                    None,
                    now,
                ),
                TaskState::Completed | TaskState::Failed | TaskState::Cancelled => {}
            }
        }
    }

    pub(super) fn begin_drain(&mut self, reply: oneshot::Sender<()>, now: Instant) {
        if let Some(drain) = &mut self.drain {
            drain.waiters.push(reply);
            return;
        }
        tracing::info!(
            queued = self.queue.len(),
            running = self.running,
            "draining: queued tasks are cancelled, running ones get the grace period"
        );
        // In cluster mode the queue is the cluster's: it stays for the
        // other nodes.
        let queued: Vec<TaskId> = if self.cluster.is_some() {
            Vec::new()
        } else {
            self.queue.ids().collect()
        };
        for id in queued {
            self.cancel_queued(id, CancelReason::Shutdown, Vec::new());
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.entry_dirty = true;
        }
        let executors: Vec<ExecutorId> = self.registry.iter().map(|(id, _)| id).collect();
        for executor in executors {
            self.order(executor, Order::Drain);
        }
        self.drain = Some(DrainState {
            waiters: vec![reply],
            grace_until: Some(now + self.limits.shutdown_grace),
        });
        self.finish_drain_if_done();
    }

    pub(crate) fn finish_drain_if_done(&mut self) {
        // Called after every batch: nothing to look at unless draining (the
        // cluster's idle check walks every task).
        if self.drain.is_none() {
            return;
        }
        let idle = if self.cluster.is_some() {
            self.running == 0 && self.cluster_idle()
        } else {
            self.running == 0 && self.queue.is_empty()
        };
        let Some(drain) = &mut self.drain else { return };
        if !idle {
            return;
        }
        drain.grace_until = None;
        for waiter in drain.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}
