//! The scheduler's state and its decisions, without IO or a runtime.
//!
//! Every entry point takes the time (`now`) from its caller, so the rules
//! can be driven step by step in tests (`core_tests.rs`). Effects leave only
//! through bounded channels filled with `try_send` (subscriber mailboxes,
//! executor order queues, reply oneshots), and files of stale attempts are
//! handed back to the shell ([`Core::take_orphans`]) to be discarded.
//! This file: the state, submits, cancels, subscriptions, event emission and
//! the drain; `running.rs` has dispatch, executor reports and timers;
//! `questions.rs` and `watch.rs` the rest.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::events::EventLog;
use super::idempotency::Idempotency;
use super::questions::OpenQuestion;
use super::queue::{GroupKey, Place, Queue};
use super::registry::Registry;
use super::retention::Retention;
use super::watch::WatchFeed;
use super::{Command, Mailbox, MailboxId, Outbound, Refusal, Reply, Submitted};
use crate::auth::Principal;
use crate::config::Limits;
use crate::directory::Directory;
use crate::exec::{ExecutorId, Order, StopReason, Tagged};
use crate::task::{
    Answer, CancelReason, ClientId, Delivery, Owner, Priority, PublishedFile, TaskEvent, TaskId,
    TaskSpec, TaskState,
};
use crate::telemetry::{Metrics, TaskMetrics};

/// What a timer is for; a timer whose task moved on is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The attempt's deadline.
    Run(u32),
    /// The attempt was told to stop and did not answer within its grace.
    Stop(u32),
    /// The attempt's open question expires.
    Question(u32),
    /// The task waited too long for any executor serving its name.
    NoWorker,
}

/// Extra time the scheduler gives an executor past the cancel grace before
/// it ends the task itself (the executor's own grace handling comes first).
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(2);

/// One attempt running on an executor.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) executor: ExecutorId,
    pub(crate) deadline: Instant,
    /// Set while a question is open: the time the deadline had left.
    paused: Option<Duration>,
    /// A stop was sent (cancel or shutdown).
    pub(crate) stopping: bool,
}

impl Run {
    pub(crate) fn new(executor: ExecutorId, deadline: Instant) -> Run {
        Run {
            executor,
            deadline,
            paused: None,
            stopping: false,
        }
    }

    pub(crate) fn pause(&mut self, now: Instant) {
        if self.paused.is_none() {
            self.paused = Some(super::questions::remaining(self.deadline, now));
        }
    }

    /// Ends a pause; the new deadline.
    pub(crate) fn resume(&mut self, now: Instant) -> Instant {
        if let Some(left) = self.paused.take() {
            self.deadline = now + left;
        }
        self.deadline
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.is_some()
    }
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) mailbox: Mailbox,
    /// The submitter of a `delivery: stream` task: files go down its socket.
    pub(crate) stream: bool,
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) id: TaskId,
    pub(crate) name: Arc<str>,
    pub(crate) owner: Owner,
    pub(crate) metrics: TaskMetrics,
    pub(crate) priority: Priority,
    pub(crate) concurrency_key: Option<GroupKey>,
    /// Where it waits, while queued.
    pub(crate) place: Option<Place>,
    /// The group it holds, while running.
    pub(crate) holds_group: bool,
    pub(crate) timeout: Duration,
    pub(crate) idempotency_key: Option<Box<str>>,
    /// The submitter's mailbox when `cancel_on_disconnect`.
    pub(crate) cancel_with: Option<MailboxId>,
    pub(crate) interactive: bool,
    pub(crate) retry_safe: bool,
    pub(crate) state: TaskState,
    /// The input, while it may still be needed (queued; running when the
    /// task may run again).
    pub(crate) input: Option<Box<RawValue>>,
    /// Bytes charged to the queued-input bound while queued.
    pub(crate) charged: u64,
    /// 0 before the first start.
    pub(crate) attempt: u32,
    pub(crate) run: Option<Run>,
    pub(crate) log: EventLog,
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) cancel_reason: Option<CancelReason>,
    pub(crate) cancel_waiters: Vec<Reply<()>>,
    pub(crate) question: Option<OpenQuestion>,
    /// Ids of questions already closed (for `already_answered`).
    pub(crate) answered: Vec<String>,
    pub(crate) worker: Option<Arc<str>>,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) progress: Option<f64>,
    pub(crate) message: Option<String>,
    /// When it fails with `no_worker` unless an executor for it comes.
    pub(crate) no_worker_at: Option<Instant>,
}

impl Task {
    /// A task is visible to its client (a browser token: only to itself,
    /// unless minted with the key's scope) and to admins.
    pub(crate) fn visible_to(&self, principal: &Principal) -> bool {
        principal.admin
            || (self.owner.client == principal.client && principal.sees(self.owner.token))
    }

    pub(crate) fn answer_order(&self, answer: Answer) -> Order {
        let deadline = self.run.as_ref().map_or_else(Instant::now, |r| r.deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        Order::Answer {
            task_id: self.id,
            attempt: self.attempt,
            answer,
            deadline,
            deadline_at: SystemTime::now() + left,
        }
    }
}

pub(crate) struct DrainState {
    pub(crate) waiters: Vec<oneshot::Sender<()>>,
    /// When running tasks are stopped; `None` once they were.
    pub(crate) grace_until: Option<Instant>,
}

pub(crate) struct Core {
    pub(crate) limits: Limits,
    pub(crate) directory: Arc<Directory>,
    pub(crate) metrics: Metrics,
    /// Handed to every executor that registers.
    pub(crate) reports: mpsc::Sender<Tagged>,
    pub(crate) tasks: HashMap<TaskId, Task>,
    pub(crate) queue: Queue,
    pub(crate) registry: Registry,
    pub(crate) idempotency: Idempotency,
    pub(crate) retention: Retention,
    pub(crate) watch: WatchFeed,
    pub(crate) timers: BTreeSet<(Instant, TaskId, Timer)>,
    /// Bytes of queued inputs, in all and per client.
    pub(crate) queued_bytes: u64,
    pub(crate) client_bytes: HashMap<ClientId, u64>,
    /// Tasks running (or waiting for an answer).
    pub(crate) running: usize,
    /// Moving average of task run time, for `retry_after_ms`.
    pub(crate) ewma_ms: f64,
    pub(crate) drain: Option<DrainState>,
    /// Files of attempts that completed too late, to be discarded.
    pub(crate) orphans: Vec<PublishedFile>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("tasks", &self.tasks.len())
            .field("queued", &self.queue.len())
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(
        limits: Limits,
        directory: Arc<Directory>,
        metrics: Metrics,
        reports: mpsc::Sender<Tagged>,
    ) -> Core {
        Core {
            limits,
            directory,
            metrics,
            reports,
            tasks: HashMap::new(),
            queue: Queue::default(),
            registry: Registry::default(),
            idempotency: Idempotency::default(),
            retention: Retention::default(),
            watch: WatchFeed::default(),
            timers: BTreeSet::new(),
            queued_bytes: 0,
            client_bytes: HashMap::new(),
            running: 0,
            ewma_ms: 10.0,
            drain: None,
            orphans: Vec::new(),
        }
    }

    pub(crate) fn take_orphans(&mut self) -> Vec<PublishedFile> {
        std::mem::take(&mut self.orphans)
    }

    pub(crate) fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Submit { spec, reply } => self.submit(spec, reply, now),
            Command::Cancel {
                task_id,
                principal,
                reply,
            } => self.cancel(task_id, &principal, reply, now),
            Command::Answer {
                task_id,
                principal,
                question_id,
                value,
                reply,
            } => self.answer(task_id, &principal, &question_id, value, reply, now),
            Command::Subscribe {
                task_id,
                principal,
                after_seq,
                mailbox,
                reference,
            } => self.subscribe(task_id, &principal, after_seq, mailbox, reference),
            Command::Unsubscribe {
                task_id,
                mailbox,
                reply,
            } => {
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.subscribers.retain(|s| s.mailbox.id() != mailbox);
                }
                if let Some((to, reference)) = reply {
                    to.deliver(Outbound::Unsubscribed { reference, task_id }, &self.metrics);
                }
            }
            Command::Snapshot {
                task_id,
                principal,
                reply,
            } => {
                let view = self
                    .tasks
                    .get(&task_id)
                    .filter(|t| t.visible_to(&principal))
                    .map(|t| self.view(t));
                let _ = reply.send(view);
            }
            Command::Disconnected { mailbox, tasks } => self.disconnected(mailbox, &tasks, now),
            Command::Watch { mailbox, reference } => self.start_watch(mailbox, reference),
            Command::Unwatch { mailbox } => self.watch.remove(mailbox),
            Command::AdminList { reply } => {
                let _ = reply.send((self.watch_list(), self.stats()));
            }
            Command::AdminWorkers { reply } => {
                let _ = reply.send(self.workers_list());
            }
            Command::Register { spec, reply } => {
                let _ = reply.send(self.register(spec, now));
            }
            Command::Drain { reply } => self.begin_drain(reply, now),
        }
    }

    /// Answers a refused request.
    pub(crate) fn refuse<T>(&self, reply: Reply<T>, refusal: Refusal) {
        match reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Err(refusal));
            }
            Reply::Mailbox { mailbox, reference } => {
                mailbox.deliver(
                    Outbound::Error {
                        reference,
                        error: refusal,
                    },
                    &self.metrics,
                );
            }
        }
    }

    fn reject(&self, reply: Reply<Submitted>, refusal: Refusal) {
        match reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Err(refusal));
            }
            Reply::Mailbox { mailbox, reference } => {
                mailbox.deliver(
                    Outbound::Rejected {
                        reference,
                        error: refusal,
                    },
                    &self.metrics,
                );
            }
        }
    }

    fn submit(&mut self, spec: TaskSpec, reply: Reply<Submitted>, now: Instant) {
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
        if let Some(at) = no_worker_at {
            self.timers.insert((at, id, Timer::NoWorker));
        }
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
            },
        );
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
    fn duplicate(&mut self, id: TaskId, reply: Reply<Submitted>) {
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
                if !task.state.is_terminal()
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

    fn cancel(&mut self, id: TaskId, principal: &Principal, reply: Reply<()>, now: Instant) {
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
        self.timers
            .insert((now + grace + STOP_MARGIN, id, Timer::Stop(attempt)));
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

    fn subscribe(
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
        if !task.state.is_terminal()
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

    fn disconnected(&mut self, mailbox: MailboxId, tasks: &[TaskId], now: Instant) {
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

    fn begin_drain(&mut self, reply: oneshot::Sender<()>, now: Instant) {
        if let Some(drain) = &mut self.drain {
            drain.waiters.push(reply);
            return;
        }
        tracing::info!(
            queued = self.queue.len(),
            running = self.running,
            "draining: queued tasks are cancelled, running ones get the grace period"
        );
        let queued: Vec<TaskId> = self.queue.ids().collect();
        for id in queued {
            self.cancel_queued(id, CancelReason::Shutdown, Vec::new());
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
        let Some(drain) = &mut self.drain else { return };
        if self.running > 0 || !self.queue.is_empty() {
            return;
        }
        drain.grace_until = None;
        for waiter in drain.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Sends an order to an executor without waiting. An executor whose
    /// queue is full or closed is not reading its orders: it gets no more
    /// work, and its attempts are lost when it reports `Gone` (or at their
    /// deadlines).
    pub(crate) fn order(&mut self, executor: ExecutorId, order: Order) {
        let Some(exec) = self.registry.get_mut(executor) else {
            return;
        };
        if exec.orders.try_send(order).is_err() && !exec.draining {
            tracing::warn!(executor = %exec.name, "an executor stopped reading its orders");
            exec.draining = true;
        }
    }

    /// Numbers, holds and delivers one event of a task; each of `copies`
    /// gets its own copy carrying its `ref` (instead of a subscriber copy).
    pub(crate) fn emit(
        &mut self,
        id: TaskId,
        event: TaskEvent,
        copies: Vec<(Mailbox, Option<Box<str>>)>,
    ) {
        let now = Instant::now();
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let terminal = event.is_terminal();
        let is_progress = matches!(event, TaskEvent::Progress(_));
        let record = task.log.push(id, event, self.limits.max_task_events);
        if terminal {
            task.state = match record.event {
                TaskEvent::Completed { .. } => TaskState::Completed,
                TaskEvent::Failed(_) => TaskState::Failed,
                _ => TaskState::Cancelled,
            };
            task.finished_at = Some(record.at);
            task.input = None;
            task.question = None;
        }
        let metrics = &self.metrics;
        let streams =
            matches!(&record.event, TaskEvent::Completed { files, .. } if !files.is_empty());
        task.subscribers.retain(|sub| {
            if copies.iter().any(|(m, _)| m.id() == sub.mailbox.id()) {
                return true;
            }
            sub.mailbox.deliver(
                Outbound::Event {
                    record: Arc::clone(&record),
                    reference: None,
                    duplicate: false,
                    stream: sub.stream && streams,
                },
                metrics,
            )
        });
        for (mailbox, reference) in copies {
            let stream = streams
                && task
                    .subscribers
                    .iter()
                    .any(|s| s.mailbox.id() == mailbox.id() && s.stream);
            let delivered = mailbox.deliver(
                Outbound::Event {
                    record: Arc::clone(&record),
                    reference,
                    duplicate: false,
                    stream,
                },
                metrics,
            );
            if !delivered {
                task.subscribers.retain(|s| s.mailbox.id() != mailbox.id());
            }
        }
        if terminal {
            task.subscribers = Vec::new();
            let bytes = task.log.bytes();
            self.retention.push(now + self.limits.result_ttl, id, bytes);
        }
        self.watch_task(id, is_progress, now);
        self.watch.dirty();
    }

    /// Forgets a finished task (its idempotency key with it).
    pub(crate) fn forget(&mut self, id: TaskId) {
        self.watch.forget(id);
        if let Some(task) = self.tasks.remove(&id)
            && let Some(key) = &task.idempotency_key
        {
            self.idempotency
                .forget(&task.owner.client, &task.name, key, id);
        }
    }

    pub(crate) fn update_gauges(&mut self, now: Instant) {
        let (slots, busy) = self.registry.slot_counts();
        self.metrics.queue_depth.set(self.queue.len() as i64);
        self.metrics.tasks_running.set(self.running as i64);
        self.metrics.tasks_held.set(self.tasks.len() as i64);
        self.metrics.workers.set(slots as i64);
        self.metrics.workers_busy.set(busy as i64);
        self.metrics
            .queued_input_bytes
            .set(i64::try_from(self.queued_bytes).unwrap_or(i64::MAX));
        self.metrics
            .held_result_bytes
            .set(i64::try_from(self.retention.bytes()).unwrap_or(i64::MAX));
        self.watch.after_batch(now);
    }
}
