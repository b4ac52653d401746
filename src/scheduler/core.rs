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

use std::collections::BTreeSet;
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
use crate::exec::{ExecutorId, Order, Tagged};
use crate::task::{
    Answer, CancelReason, ClientId, IdMap, Owner, Priority, PublishedFile, TaskEvent, TaskId,
    TaskState,
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
    /// Cluster mode: a cancel the running node could not take (busy or
    /// unreachable) is sent again, even if the task's history stays still.
    RetryCancel,
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
    /// Its file inputs, until it ends (holding them keeps pinned uploads).
    pub(crate) inputs: crate::inputs::TaskInputs,
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
    /// Cluster mode: what this node knows of the task's stream and whether
    /// it runs it (`None` in local mode).
    pub(crate) cluster: Option<Box<super::cluster::ClusterTask>>,
    /// The schedule that submitted it.
    pub(crate) tag: Option<Arc<str>>,
    /// Its entries in `Core::timers` (at most one of each kind), removed
    /// with it, so finished tasks leave no timers behind.
    pub(crate) timers: Vec<(Instant, Timer)>,
}

impl Task {
    /// Whether its terminal event is in its log: no event follows, so a
    /// subscriber added now would wait for nothing. (In cluster mode `state`
    /// turns terminal when this node proposes the end, before the event is
    /// committed and delivered; a subscriber added in between must stay.)
    pub(crate) fn log_ended(&self) -> bool {
        self.log.last().is_some_and(|r| r.event.is_terminal())
    }

    /// A task is visible to its client (a browser token: only to itself,
    /// unless minted with the key's scope) and to admins.
    pub(crate) fn visible_to(&self, principal: &Principal) -> bool {
        principal.admin
            || (self.owner.client == principal.client && principal.sees(self.owner.token))
    }

    pub(crate) fn answer_order(&self, answer: Answer, now: Instant) -> Order {
        let deadline = self.run.as_ref().map_or(now, |r| r.deadline);
        let left = deadline.saturating_duration_since(now);
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
    pub(crate) tasks: IdMap<Task>,
    pub(crate) queue: Queue,
    pub(crate) registry: Registry,
    pub(crate) idempotency: Idempotency,
    pub(crate) retention: Retention,
    pub(crate) watch: WatchFeed,
    pub(crate) timers: BTreeSet<(Instant, TaskId, Timer)>,
    /// Bytes of queued inputs, in all and per client.
    pub(crate) queued_bytes: u64,
    pub(crate) client_bytes: rustc_hash::FxHashMap<ClientId, u64>,
    /// Tasks running (or waiting for an answer).
    pub(crate) running: usize,
    /// Moving average of task run time, for `retry_after_ms`.
    pub(crate) ewma_ms: f64,
    pub(crate) drain: Option<DrainState>,
    /// Files of attempts that completed too late, to be discarded.
    pub(crate) orphans: Vec<PublishedFile>,
    /// The time of the input being handled (set by every entry point).
    pub(crate) now: Instant,
    /// Cluster mode (`None`: local mode, where nothing of it runs).
    pub(crate) cluster: Option<super::cluster::ClusterCore>,
    pub(crate) started_at: SystemTime,
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
            tasks: IdMap::default(),
            queue: Queue::default(),
            registry: Registry::default(),
            idempotency: Idempotency::default(),
            retention: Retention::default(),
            watch: WatchFeed::default(),
            timers: BTreeSet::new(),
            queued_bytes: 0,
            client_bytes: rustc_hash::FxHashMap::default(),
            running: 0,
            ewma_ms: 10.0,
            drain: None,
            orphans: Vec::new(),
            now: Instant::now(),
            cluster: None,
            started_at: SystemTime::now(),
        }
    }

    pub(crate) fn take_orphans(&mut self) -> Vec<PublishedFile> {
        std::mem::take(&mut self.orphans)
    }

    pub(crate) fn on_command(&mut self, command: Command, now: Instant) {
        self.now = now;
        let command = if self.cluster.is_some() {
            match self.cluster_command(command, now) {
                Some(command) => command,
                None => return,
            }
        } else {
            command
        };
        self.local_command(command, now);
    }

    /// A command as local mode handles it.
    pub(crate) fn local_command(&mut self, command: Command, now: Instant) {
        self.now = now;
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
            Command::AdminNodes { reply } => {
                let _ = reply.send(self.nodes_list());
            }
            Command::Register { spec, reply } => {
                let _ = reply.send(self.register(spec, now));
            }
            Command::Drain { reply } => self.begin_drain(reply, now),
        }
    }

    /// Sets a timer of a task (replacing one of the same kind).
    pub(crate) fn set_timer(&mut self, id: TaskId, at: Instant, timer: Timer) {
        self.clear_timers(id, |t| {
            std::mem::discriminant(&t) == std::mem::discriminant(&timer)
        });
        if let Some(task) = self.tasks.get_mut(&id) {
            task.timers.push((at, timer));
            self.timers.insert((at, id, timer));
        }
    }

    /// Removes a task's timers that `which` selects.
    pub(crate) fn clear_timers(&mut self, id: TaskId, which: impl Fn(Timer) -> bool) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let timers = &mut self.timers;
        task.timers.retain(|&(at, timer)| {
            if which(timer) {
                timers.remove(&(at, id, timer));
                false
            } else {
                true
            }
        });
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
                        error: Box::new(refusal),
                    },
                    &self.metrics,
                );
            }
        }
    }

    pub(super) fn reject(&self, reply: Reply<Submitted>, refusal: Refusal) {
        match reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Err(refusal));
            }
            Reply::Mailbox { mailbox, reference } => {
                mailbox.deliver(
                    Outbound::Rejected {
                        reference,
                        error: Box::new(refusal),
                    },
                    &self.metrics,
                );
            }
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
        if self.cluster.is_some() {
            // Cluster mode: the event is proposed to the task's stream and
            // delivered once it is committed (`mirror.rs::apply`).
            return self.propose(id, event, copies);
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let record = task.log.push(id, event, self.limits.max_task_events);
        self.record(id, record, copies);
    }

    /// Holds-side effects of a numbered event: the task's state at its end,
    /// delivery to subscribers (and the private copies), retention, watchers.
    pub(crate) fn record(
        &mut self,
        id: TaskId,
        record: Arc<crate::task::EventRecord>,
        copies: Vec<(Mailbox, Option<Box<str>>)>,
    ) {
        let now = self.now;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let terminal = record.event.is_terminal();
        let is_progress = matches!(record.event, TaskEvent::Progress(_));
        if terminal {
            task.state = match record.event {
                TaskEvent::Completed { .. } => TaskState::Completed,
                TaskEvent::Failed(_) => TaskState::Failed,
                _ => TaskState::Cancelled,
            };
            task.finished_at = Some(record.at);
            task.input = None;
            task.inputs = Default::default();
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
            for (at, timer) in std::mem::take(&mut task.timers) {
                self.timers.remove(&(at, id, timer));
            }
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
        if let Some(task) = self.tasks.remove(&id) {
            if let Some(key) = &task.idempotency_key {
                self.idempotency
                    .forget(&task.owner.client, &task.name, key, id);
            }
            self.cluster_forget(&task);
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
