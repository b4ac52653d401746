//! The scheduler: one actor that owns every task's state.
//!
//! Connections and REST handlers send it [`Command`]s; workers send it
//! [`Report`]s (on their own channel, served first, so a busy front door
//! never delays finishing work). It keeps the queue ([`queue`]), hands tasks
//! to worker slots ([`worker`]), numbers each task's events, holds them for
//! replay, and pushes every event into the [`Mailbox`] of each subscriber.
//!
//! **Architecture Invariants:**
//! - Only this actor changes task state, so a task's events are numbered
//!   without gaps and there are no locks around tasks.
//! - It never waits on a client: mailboxes are bounded and filled with
//!   `try_send`; a full one marks its connection as a slow consumer (the
//!   connection closes with `1013`) and is dropped from the task.
//! - An event is built once and shared (`Arc<EventRecord>`); its wire
//!   encoding is made once, by the first connection that writes it.
//!
//! Bounds: `queue_capacity` queued tasks (`queue_full` past it), `workers`
//! running tasks, `max_task_events` held events per task (past it, a new
//! progress event replaces the last held one), `max_held_tasks` finished
//! tasks (the oldest is forgotten first) each for at most `result_ttl`.

pub mod queue;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::queue::{GroupKey, Queue};
use self::worker::{Job, Pool};
use crate::artifacts::Artifacts;
use crate::auth::Principal;
use crate::catalog::Catalog;
use crate::config::Limits;
use crate::protocol::{ErrorCode, WireError};
use crate::task::{
    CancelReason, ClientId, Delivery, EventRecord, FailureKind, Priority, Progress, PublishedFile,
    TaskEvent, TaskFailure, TaskId, TaskSpec, TaskState,
};
use crate::telemetry::{Metrics, TaskMetrics};

/// How a task ended, as its worker reports it.
#[derive(Debug)]
pub enum Outcome {
    Completed {
        result: Box<RawValue>,
        files: Vec<PublishedFile>,
        duration: Duration,
    },
    Failed(TaskFailure),
    Cancelled,
}

/// From running tasks to the scheduler.
#[derive(Debug)]
pub enum Report {
    Progress {
        task_id: TaskId,
        progress: Progress,
    },
    /// The task ended; `release` is its slot if it is free already.
    Finished {
        task_id: TaskId,
        outcome: Outcome,
        release: Option<usize>,
    },
    /// A slot whose task's blocking work outlived the task is free now.
    Released {
        slot: usize,
    },
}

/// What the scheduler pushes to a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A task event. `reference` and `duplicate` make a private copy (the
    /// reply to this client's own request); `stream` asks the connection
    /// to send the files as bytes before this (completed) event.
    Event {
        record: Arc<EventRecord>,
        reference: Option<Box<str>>,
        duplicate: bool,
        stream: bool,
    },
    /// Held events replayed to a new subscriber, in order.
    Replay(Vec<Arc<EventRecord>>),
    Rejected {
        reference: Option<Box<str>>,
        error: Box<WireError>,
    },
    Error {
        reference: Option<Box<str>>,
        error: Box<WireError>,
    },
    Unsubscribed {
        reference: Option<Box<str>>,
        task_id: TaskId,
    },
    /// Admin `watch` reply: every held task and the counters.
    Watching(Box<Watching>),
    /// Admin: a task changed.
    TaskUpdate(Box<TaskView>),
    /// Admin: the counters changed.
    Stats(Box<Stats>),
}

/// The admin `watch` reply's content.
#[derive(Debug)]
pub struct Watching {
    pub reference: Option<Box<str>>,
    pub tasks: Vec<TaskView>,
    pub stats: Stats,
}

/// A connection's bounded inbox. Cloned into every task it follows.
#[derive(Clone, Debug)]
pub struct Mailbox {
    id: u64,
    tx: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages, its receiver, and the
    /// token cancelled when it overflows.
    pub fn new(capacity: usize) -> (Mailbox, mpsc::Receiver<Outbound>, CancellationToken) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let mailbox = Mailbox {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            tx,
            overflow: overflow.clone(),
        };
        (mailbox, rx, overflow)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Delivers without waiting; false when the mailbox is gone or just
    /// overflowed (its connection is then closing).
    fn deliver(&self, message: Outbound, metrics: &Metrics) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflow.is_cancelled() {
                    metrics.slow_consumers.inc();
                    self.overflow.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Where the answer to a submit or cancel goes.
#[derive(Debug)]
pub enum Reply<T> {
    Mailbox {
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Rest(oneshot::Sender<Result<T, WireError>>),
}

/// A REST submit's answer.
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    pub task_id: TaskId,
    pub position: u64,
    pub duplicate: bool,
}

/// From connections and REST handlers to the scheduler.
#[derive(Debug)]
pub enum Command {
    Submit {
        spec: TaskSpec,
        owner: ClientId,
        reply: Reply<Submitted>,
    },
    Cancel {
        task_id: TaskId,
        principal: Principal,
        reply: Reply<()>,
    },
    Subscribe {
        task_id: TaskId,
        principal: Principal,
        after_seq: u64,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Unsubscribe {
        task_id: TaskId,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Snapshot {
        task_id: TaskId,
        principal: Principal,
        reply: oneshot::Sender<Option<TaskView>>,
    },
    /// A connection is gone: drop its subscriptions, cancel its
    /// `cancel_on_disconnect` tasks.
    Disconnected {
        mailbox: u64,
        tasks: Vec<TaskId>,
    },
    Watch {
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Unwatch {
        mailbox: u64,
    },
    AdminList {
        reply: oneshot::Sender<(Vec<TaskView>, Stats)>,
    },
    /// Shutdown: stop taking tasks, cancel queued ones, give running ones
    /// `shutdown_grace`, answer when every task has ended.
    Drain {
        reply: oneshot::Sender<()>,
    },
}

/// A task as the REST snapshot and the monitoring page show it.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub task_id: TaskId,
    pub task: Arc<str>,
    pub client: ClientId,
    pub state: TaskState,
    pub position: Option<u64>,
    pub progress: Option<f64>,
    pub message: Option<String>,
    pub worker: Option<Arc<str>>,
    /// The terminal event, once there is one.
    pub terminal: Option<Arc<EventRecord>>,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub last_seq: u64,
}

/// Counters for the monitoring page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub workers: u64,
    pub workers_busy: u64,
    pub queued: u64,
    pub running: u64,
    pub connections: u64,
    /// Per task name: completed, failed, cancelled since start.
    pub tasks: Vec<(Arc<str>, [u64; 3])>,
}

/// Handle to the scheduler; cheap to clone.
#[derive(Clone, Debug)]
pub struct Scheduler {
    commands: mpsc::Sender<Command>,
    draining: Arc<AtomicBool>,
}

/// Commands waiting for the actor; senders wait (briefly) when it is full.
const COMMAND_QUEUE: usize = 4096;
/// Reports waiting for the actor; a task's progress waits when it is full.
const REPORT_QUEUE: usize = 4096;
/// At most this many finished tasks in a `watch` reply.
const WATCH_RECENT: usize = 200;

impl Scheduler {
    /// Starts the actor (tracked by `tracker`; it ends when every handle is
    /// dropped, or with `stop`).
    pub fn start(
        limits: &Limits,
        catalog: Arc<Catalog>,
        artifacts: Artifacts,
        metrics: Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Scheduler {
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
        let draining = Arc::new(AtomicBool::new(false));
        let pool = Pool::new(limits.workers, reports_tx, artifacts, tracker.clone());
        metrics.workers.set(pool.size() as i64);
        let core = Core {
            limits: limits.clone(),
            catalog,
            tasks: HashMap::new(),
            queue: Queue::default(),
            free: (0..pool.size()).rev().collect(),
            pool,
            running: 0,
            finished: VecDeque::new(),
            idempotency: HashMap::new(),
            ewma_ms: 10.0,
            drain: None,
            draining: Arc::clone(&draining),
            watchers: Vec::new(),
            stats_dirty: false,
            stats_due: None,
            last_stats: Stats::default(),
            metrics,
        };
        tracker.spawn(core.run(commands_rx, reports_rx, stop));
        Scheduler {
            commands: commands_tx,
            draining,
        }
    }

    /// Sends a command; false if the scheduler has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Sends a command without waiting (for `Drop` paths); false if the
    /// scheduler is stopped or swamped.
    pub fn try_send(&self, command: Command) -> bool {
        self.commands.try_send(command).is_ok()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Begins the drain and waits until every task has ended.
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Drain { reply: tx }).await {
            let _ = rx.await;
        }
    }
}

struct Task {
    id: TaskId,
    name: Arc<str>,
    owner: ClientId,
    metrics: TaskMetrics,
    priority: Priority,
    group: Option<GroupKey>,
    timeout: Duration,
    idempotency_key: Option<Box<str>>,
    /// The submitter's mailbox when `cancel_on_disconnect`.
    cancel_with: Option<u64>,
    state: TaskState,
    input: Option<Box<RawValue>>,
    events: Vec<Arc<EventRecord>>,
    next_seq: u64,
    subscribers: Vec<Subscriber>,
    cancel: Option<CancellationToken>,
    cancel_reason: Option<CancelReason>,
    cancel_requests: Vec<Reply<()>>,
    worker: Option<Arc<str>>,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    progress: Option<f64>,
    message: Option<String>,
    /// When the monitoring page last heard of this task's progress.
    watched_at: Option<Instant>,
    /// The queue position the monitoring page last saw.
    watched_position: Option<u64>,
}

struct Subscriber {
    mailbox: Mailbox,
    /// The submitter of a `delivery: stream` task: files go down its socket.
    stream: bool,
}

struct DrainState {
    waiters: Vec<oneshot::Sender<()>>,
    /// When running tasks are cancelled; `None` once they were.
    grace_until: Option<Instant>,
}

struct Core {
    limits: Limits,
    catalog: Arc<Catalog>,
    tasks: HashMap<TaskId, Task>,
    queue: Queue,
    /// Idle worker slots.
    free: Vec<usize>,
    pool: Pool,
    /// Tasks started and not yet finished.
    running: usize,
    /// Finished tasks, oldest first, with when to forget them.
    finished: VecDeque<(Instant, TaskId)>,
    idempotency: HashMap<(ClientId, Arc<str>, Box<str>), TaskId>,
    /// Moving average of task run time, for `retry_after_ms`.
    ewma_ms: f64,
    drain: Option<DrainState>,
    draining: Arc<AtomicBool>,
    watchers: Vec<Mailbox>,
    stats_dirty: bool,
    stats_due: Option<Instant>,
    last_stats: Stats,
    metrics: Metrics,
}

/// Progress updates per task to the monitoring page, at most one per this.
const WATCH_PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Stats to the monitoring page, at most one per this.
const WATCH_STATS_EVERY: Duration = Duration::from_millis(500);

fn wire(code: ErrorCode, message: impl Into<String>) -> Box<WireError> {
    Box::new(WireError::new(code, message))
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, Box<WireError>>, metrics: &Metrics, rejected: bool) {
        match self {
            Reply::Rest(tx) => {
                let _ = tx.send(result.map_err(|e| *e));
            }
            Reply::Mailbox { mailbox, reference } => {
                if let Err(error) = result {
                    let message = if rejected {
                        Outbound::Rejected { reference, error }
                    } else {
                        Outbound::Error { reference, error }
                    };
                    mailbox.deliver(message, metrics);
                }
            }
        }
    }
}

impl Core {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<Report>,
        stop: CancellationToken,
    ) {
        let mut command_batch = Vec::with_capacity(256);
        let mut report_batch = Vec::with_capacity(256);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                n = reports.recv_many(&mut report_batch, 256) => {
                    if n == 0 { break; }
                    for report in report_batch.drain(..) {
                        self.on_report(report);
                    }
                }
                n = commands.recv_many(&mut command_batch, 256) => {
                    if n == 0 { break; }
                    for command in command_batch.drain(..) {
                        self.on_command(command);
                    }
                }
                () = sleep_until_opt(wake) => {}
            }
            self.on_time(Instant::now());
            self.dispatch();
            self.update_gauges();
        }
        // Stopping: nothing runs any more; cancel what is left.
        for task in self.tasks.values() {
            if let Some(cancel) = &task.cancel {
                cancel.cancel();
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.finished.front().map(|(at, _)| *at);
        if let Some(at) = self.drain.as_ref().and_then(|d| d.grace_until) {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        if let Some(at) = self.stats_due {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        wake
    }

    fn on_time(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.finished.front() {
            if at > now && self.finished.len() <= self.limits.max_held_tasks {
                break;
            }
            self.finished.pop_front();
            self.forget(id);
        }
        if let Some(drain) = &mut self.drain
            && drain.grace_until.is_some_and(|at| at <= now)
        {
            drain.grace_until = None;
            let running: Vec<TaskId> = self
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Running)
                .map(|t| t.id)
                .collect();
            for id in running {
                self.cancel_running(id, CancelReason::Shutdown, None);
            }
        }
        if self.stats_due.is_some_and(|at| at <= now) {
            self.stats_due = None;
            self.push_stats();
        }
        self.finish_drain_if_done();
    }

    fn forget(&mut self, id: TaskId) {
        if let Some(task) = self.tasks.remove(&id)
            && let Some(key) = task.idempotency_key
        {
            let entry = (task.owner, task.name, key);
            if self.idempotency.get(&entry) == Some(&id) {
                self.idempotency.remove(&entry);
            }
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Progress { task_id, progress } => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if task.state != TaskState::Running || task.cancel_reason.is_some() {
                    return;
                }
                if let Some(fraction) = progress.fraction {
                    task.progress = Some(fraction);
                }
                if let Some(message) = &progress.message {
                    task.message = Some(message.clone());
                }
                self.emit(task_id, TaskEvent::Progress(progress), None);
            }
            Report::Finished {
                task_id,
                outcome,
                release,
            } => {
                if let Some(slot) = release {
                    self.free.push(slot);
                }
                self.on_finished(task_id, outcome);
            }
            Report::Released { slot } => self.free.push(slot),
        }
    }

    fn on_finished(&mut self, task_id: TaskId, outcome: Outcome) {
        self.running = self.running.saturating_sub(1);
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        if let Some(group) = task.group.take() {
            self.queue.release(&group);
        }
        let reason = task.cancel_reason;
        let requests = std::mem::take(&mut task.cancel_requests);
        let elapsed = task
            .started_at
            .and_then(|at| at.elapsed().ok())
            .unwrap_or_default();
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
                task.metrics.duration.observe(elapsed.as_secs_f64());
                tracing::info!(task_id = %task_id, task = %task.name, kind = ?failure.kind, "task failed");
                TaskEvent::Failed(failure)
            }
            Outcome::Cancelled => {
                task.metrics.cancelled.inc();
                let reason = reason.unwrap_or(CancelReason::Shutdown);
                tracing::info!(task_id = %task_id, task = %task.name, reason = reason.as_str(), "task cancelled");
                TaskEvent::Cancelled(reason)
            }
        };
        let cancelled = matches!(event, TaskEvent::Cancelled(_));
        let mut requests = requests.into_iter();
        // The first canceller gets the event itself (with its ref).
        let first = if cancelled { requests.next() } else { None };
        let copy_to = match first {
            Some(Reply::Mailbox { mailbox, reference }) => Some((mailbox, reference)),
            Some(Reply::Rest(tx)) => {
                let _ = tx.send(Ok(()));
                None
            }
            None => None,
        };
        self.emit(task_id, event, copy_to);
        for request in requests {
            let result = if cancelled {
                Ok(())
            } else {
                Err(wire(
                    ErrorCode::AlreadyFinished,
                    "the task finished before it could be cancelled",
                ))
            };
            request.send(result, &self.metrics, false);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit { spec, owner, reply } => self.submit(spec, owner, reply),
            Command::Cancel {
                task_id,
                principal,
                reply,
            } => self.cancel(task_id, &principal, reply),
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
                reference,
            } => {
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.subscribers.retain(|s| s.mailbox.id != mailbox.id);
                }
                mailbox.deliver(Outbound::Unsubscribed { reference, task_id }, &self.metrics);
            }
            Command::Snapshot {
                task_id,
                principal,
                reply,
            } => {
                let view = self
                    .tasks
                    .get(&task_id)
                    .filter(|t| visible(t, &principal))
                    .map(|t| self.view(t));
                let _ = reply.send(view);
            }
            Command::Disconnected { mailbox, tasks } => self.disconnected(mailbox, &tasks),
            Command::Watch { mailbox, reference } => {
                let tasks = self.watch_list();
                let stats = self.stats();
                let reply = Outbound::Watching(Box::new(Watching {
                    reference,
                    tasks,
                    stats,
                }));
                if mailbox.deliver(reply, &self.metrics) {
                    self.watchers.retain(|w| w.id != mailbox.id);
                    self.watchers.push(mailbox);
                }
            }
            Command::Unwatch { mailbox } => self.watchers.retain(|w| w.id != mailbox),
            Command::AdminList { reply } => {
                let _ = reply.send((self.watch_list(), self.stats()));
            }
            Command::Drain { reply } => self.begin_drain(reply),
        }
    }

    fn submit(&mut self, spec: TaskSpec, owner: ClientId, reply: Reply<Submitted>) {
        let metrics = self.metrics.clone();
        let reject = |reply: Reply<Submitted>, error: Box<WireError>| {
            metrics.rejected(error.code);
            reply.send(Err(error), &metrics, true);
        };
        if self.drain.is_some() {
            return reject(
                reply,
                wire(ErrorCode::ShuttingDown, "the server is shutting down"),
            );
        }
        let Some(entry) = self.catalog.get(&spec.name) else {
            return reject(
                reply,
                wire(
                    ErrorCode::UnknownTask,
                    format!("no task named {:?}", &*spec.name),
                ),
            );
        };
        let name = Arc::clone(&entry.name);
        let handler_metrics = self.metrics.task(&name);
        if let Some(key) = &spec.options.idempotency_key {
            let lookup = (
                owner.clone(),
                Arc::clone(&name),
                Box::<str>::from(key.as_str()),
            );
            if let Some(&existing) = self.idempotency.get(&lookup)
                && self.tasks.contains_key(&existing)
            {
                return self.duplicate(existing, reply);
            }
        }
        if self.queue.len() >= self.limits.queue_capacity {
            let mut error = wire(
                ErrorCode::QueueFull,
                format!("the queue is full ({} tasks)", self.limits.queue_capacity),
            );
            error.retry_after_ms = Some(self.retry_after_ms());
            return reject(reply, error);
        }
        let id = TaskId::generate();
        let options = spec.options;
        let group = options
            .concurrency_key
            .as_deref()
            .map(|key| (owner.clone(), Box::<str>::from(key)));
        let idempotency_key = options.idempotency_key.as_deref().map(Box::<str>::from);
        if let Some(key) = &idempotency_key {
            self.idempotency
                .insert((owner.clone(), Arc::clone(&name), key.clone()), id);
        }
        handler_metrics.submitted.inc();
        let position = self.queue.push(id, options.priority, group.clone());
        let mut subscribers = Vec::with_capacity(1);
        let mut cancel_with = None;
        let (copy_to, rest) = match reply {
            Reply::Mailbox { mailbox, reference } => {
                if options.cancel_on_disconnect {
                    cancel_with = Some(mailbox.id);
                }
                subscribers.push(Subscriber {
                    mailbox: mailbox.clone(),
                    stream: options.delivery == Delivery::Stream,
                });
                (Some((mailbox, reference)), None)
            }
            Reply::Rest(tx) => (None, Some(tx)),
        };
        tracing::debug!(task_id = %id, task = %name, client = %owner, "task accepted");
        self.tasks.insert(
            id,
            Task {
                id,
                name,
                owner,
                metrics: handler_metrics,
                priority: options.priority,
                group,
                timeout: options.timeout,
                idempotency_key,
                cancel_with,
                state: TaskState::Queued,
                input: Some(spec.input),
                events: Vec::with_capacity(4),
                next_seq: 1,
                subscribers,
                cancel: None,
                cancel_reason: None,
                cancel_requests: Vec::new(),
                worker: None,
                created_at: SystemTime::now(),
                started_at: None,
                finished_at: None,
                progress: None,
                message: None,
                watched_at: None,
                watched_position: None,
            },
        );
        self.emit(id, TaskEvent::Accepted { position }, copy_to);
        if let Some(tx) = rest {
            let _ = tx.send(Ok(Submitted {
                task_id: id,
                position,
                duplicate: false,
            }));
        }
    }

    /// A repeat of an idempotent submit: the first task's `accepted`
    /// (marked duplicate), what it did since, and its live events.
    fn duplicate(&mut self, id: TaskId, reply: Reply<Submitted>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(first) = task.events.first().cloned() else {
            return;
        };
        let position = match &first.event {
            TaskEvent::Accepted { position } => *position,
            _ => 0,
        };
        match reply {
            Reply::Rest(tx) => {
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
                let rest: Vec<_> = task.events.iter().skip(1).cloned().collect();
                if !rest.is_empty() && !mailbox.deliver(Outbound::Replay(rest), &self.metrics) {
                    return;
                }
                if !task.state.is_terminal()
                    && !task.subscribers.iter().any(|s| s.mailbox.id == mailbox.id)
                {
                    task.subscribers.push(Subscriber {
                        mailbox,
                        stream: false,
                    });
                }
            }
        }
    }

    fn retry_after_ms(&self) -> u64 {
        let per_worker = self.queue.len() as f64 / self.pool.size().max(1) as f64;
        let estimate = self.ewma_ms * per_worker.max(1.0);
        (estimate.ceil() as u64).clamp(10, 60_000)
    }

    fn cancel(&mut self, id: TaskId, principal: &Principal, reply: Reply<()>) {
        let Some(task) = self.tasks.get_mut(&id).filter(|t| visible(t, principal)) else {
            self.metrics.rejected(ErrorCode::NotFound);
            return reply.send(
                Err(wire(ErrorCode::NotFound, "no such task")),
                &self.metrics,
                false,
            );
        };
        match task.state {
            TaskState::Queued => {
                let copy_to = match reply {
                    Reply::Mailbox { mailbox, reference } => Some((mailbox, reference)),
                    Reply::Rest(tx) => {
                        let _ = tx.send(Ok(()));
                        None
                    }
                };
                self.cancel_queued(id, CancelReason::Client, copy_to);
            }
            TaskState::Running => self.cancel_running(id, CancelReason::Client, Some(reply)),
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled => {
                self.metrics.rejected(ErrorCode::AlreadyFinished);
                reply.send(
                    Err(wire(
                        ErrorCode::AlreadyFinished,
                        "the task has already finished",
                    )),
                    &self.metrics,
                    false,
                );
            }
        }
    }

    /// Takes a queued task out of the line; it never starts.
    fn cancel_queued(
        &mut self,
        id: TaskId,
        reason: CancelReason,
        copy_to: Option<(Mailbox, Option<Box<str>>)>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        self.queue.remove(id, task.priority, task.group.as_ref());
        task.group = None;
        task.metrics.cancelled.inc();
        tracing::info!(task_id = %id, task = %task.name, reason = reason.as_str(), "task cancelled");
        self.emit(id, TaskEvent::Cancelled(reason), copy_to);
    }

    fn cancel_running(&mut self, id: TaskId, reason: CancelReason, reply: Option<Reply<()>>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if task.cancel_reason.is_none() {
            task.cancel_reason = Some(reason);
        }
        if let Some(cancel) = &task.cancel {
            cancel.cancel();
        }
        if let Some(reply) = reply {
            task.cancel_requests.push(reply);
        }
    }

    fn subscribe(
        &mut self,
        id: TaskId,
        principal: &Principal,
        after_seq: u64,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) {
        let Some(task) = self.tasks.get_mut(&id).filter(|t| visible(t, principal)) else {
            self.metrics.rejected(ErrorCode::NotFound);
            mailbox.deliver(
                Outbound::Error {
                    reference,
                    error: wire(ErrorCode::NotFound, "no such task"),
                },
                &self.metrics,
            );
            return;
        };
        let replay: Vec<_> = task
            .events
            .iter()
            .filter(|e| e.seq > after_seq)
            .cloned()
            .collect();
        if !replay.is_empty() && !mailbox.deliver(Outbound::Replay(replay), &self.metrics) {
            return;
        }
        if !task.state.is_terminal() && !task.subscribers.iter().any(|s| s.mailbox.id == mailbox.id)
        {
            task.subscribers.push(Subscriber {
                mailbox,
                stream: false,
            });
        }
    }

    fn disconnected(&mut self, mailbox: u64, tasks: &[TaskId]) {
        self.watchers.retain(|w| w.id != mailbox);
        for id in tasks {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            task.subscribers.retain(|s| s.mailbox.id != mailbox);
            if task.cancel_with != Some(mailbox) || task.state.is_terminal() {
                continue;
            }
            match task.state {
                TaskState::Queued => self.cancel_queued(*id, CancelReason::Disconnect, None),
                TaskState::Running => self.cancel_running(*id, CancelReason::Disconnect, None),
                _ => {}
            }
        }
    }

    fn begin_drain(&mut self, reply: oneshot::Sender<()>) {
        if let Some(drain) = &mut self.drain {
            drain.waiters.push(reply);
            return;
        }
        self.draining.store(true, Ordering::Release);
        tracing::info!(
            queued = self.queue.len(),
            running = self.running,
            "draining: queued tasks are cancelled, running ones get the grace period"
        );
        let queued: Vec<TaskId> = self.queue.ids().collect();
        for id in queued {
            self.cancel_queued(id, CancelReason::Shutdown, None);
        }
        self.drain = Some(DrainState {
            waiters: vec![reply],
            grace_until: Some(Instant::now() + self.limits.shutdown_grace),
        });
        self.finish_drain_if_done();
    }

    fn finish_drain_if_done(&mut self) {
        let Some(drain) = &mut self.drain else { return };
        if self.running > 0 || !self.queue.is_empty() {
            return;
        }
        drain.grace_until = None;
        for waiter in drain.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Starts queued tasks while slots are free.
    fn dispatch(&mut self) {
        while !self.free.is_empty() && self.drain.is_none() {
            let Some(next) = self.queue.pop() else { break };
            let Some(slot) = self.free.pop() else { break };
            let Some(task) = self.tasks.get_mut(&next.id) else {
                self.free.push(slot);
                continue;
            };
            let Some(input) = task.input.take() else {
                self.free.push(slot);
                continue;
            };
            let Some(entry) = self.catalog.get(&task.name) else {
                self.free.push(slot);
                continue;
            };
            let cancel = CancellationToken::new();
            task.group = next.group;
            task.state = TaskState::Running;
            task.cancel = Some(cancel.clone());
            task.started_at = Some(SystemTime::now());
            let worker = self.pool.name(slot);
            task.worker = Some(Arc::clone(&worker));
            self.running += 1;
            self.pool.start(Job {
                id: next.id,
                handler: Arc::clone(&entry.handler),
                input,
                timeout: task.timeout,
                cancel,
                slot,
            });
            self.emit(next.id, TaskEvent::Started { worker }, None);
        }
    }

    /// Numbers, holds and delivers one event of a task; `copy_to` gets its
    /// own copy carrying its `ref` (instead of its subscriber copy).
    fn emit(&mut self, id: TaskId, event: TaskEvent, copy_to: Option<(Mailbox, Option<Box<str>>)>) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let terminal = event.is_terminal();
        let is_progress = matches!(event, TaskEvent::Progress(_));
        let record = Arc::new(EventRecord::new(id, task.next_seq, event));
        task.next_seq += 1;
        if terminal {
            task.state = match record.event {
                TaskEvent::Completed { .. } => TaskState::Completed,
                TaskEvent::Failed(_) => TaskState::Failed,
                _ => TaskState::Cancelled,
            };
            task.finished_at = Some(record.at);
            task.cancel = None;
            task.input = None;
        }
        if task.events.len() < self.limits.max_task_events || terminal {
            task.events.push(Arc::clone(&record));
        } else if is_progress
            && let Some(last) = task
                .events
                .last_mut()
                .filter(|e| matches!(e.event, TaskEvent::Progress(_)))
        {
            *last = Arc::clone(&record);
        }
        let copy_id = copy_to.as_ref().map(|(m, _)| m.id);
        let metrics = &self.metrics;
        let streams =
            matches!(&record.event, TaskEvent::Completed { files, .. } if !files.is_empty());
        task.subscribers.retain(|sub| {
            if Some(sub.mailbox.id) == copy_id {
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
        if let Some((mailbox, reference)) = copy_to {
            let stream = task
                .subscribers
                .iter()
                .any(|s| s.mailbox.id == mailbox.id && s.stream)
                && streams;
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
                task.subscribers.retain(|s| s.mailbox.id != mailbox.id);
            }
        }
        if terminal {
            task.subscribers = Vec::new();
            self.finished
                .push_back((Instant::now() + self.limits.result_ttl, id));
        }
        if !self.watchers.is_empty() {
            self.watch_event(id, is_progress);
        }
        self.stats_dirty = true;
    }

    fn watch_event(&mut self, id: TaskId, is_progress: bool) {
        let now = Instant::now();
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if is_progress
            && task
                .watched_at
                .is_some_and(|at| now < at + WATCH_PROGRESS_EVERY)
        {
            return;
        }
        task.watched_at = Some(now);
        self.tell_watchers(id);
    }

    /// Sends a task's current view to every watcher.
    fn tell_watchers(&mut self, id: TaskId) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let view = self.view(task);
        if let Some(task) = self.tasks.get_mut(&id) {
            task.watched_position = view.position;
        }
        let metrics = &self.metrics;
        self.watchers
            .retain(|w| w.deliver(Outbound::TaskUpdate(Box::new(view.clone())), metrics));
    }

    fn view(&self, task: &Task) -> TaskView {
        TaskView {
            task_id: task.id,
            task: Arc::clone(&task.name),
            client: task.owner.clone(),
            state: task.state,
            position: (task.state == TaskState::Queued)
                .then(|| {
                    self.queue
                        .position(task.id, task.priority, task.group.as_ref())
                })
                .flatten(),
            progress: task.progress,
            message: task.message.clone(),
            worker: task.worker.clone(),
            terminal: task
                .state
                .is_terminal()
                .then(|| task.events.last().cloned())
                .flatten(),
            created_at: task.created_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
            last_seq: task.next_seq - 1,
        }
    }

    /// Running and queued tasks, then the most recently finished ones.
    fn watch_list(&self) -> Vec<TaskView> {
        let mut list: Vec<TaskView> = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .map(|t| self.view(t))
            .collect();
        list.extend(
            self.finished
                .iter()
                .rev()
                .take(WATCH_RECENT)
                .filter_map(|(_, id)| self.tasks.get(id))
                .map(|t| self.view(t)),
        );
        list
    }

    fn stats(&self) -> Stats {
        let mut tasks: Vec<(Arc<str>, [u64; 3])> = self
            .catalog
            .iter()
            .map(|entry| {
                let m = self.metrics.task(&entry.name);
                (
                    Arc::clone(&entry.name),
                    [m.completed.get(), m.failed.get(), m.cancelled.get()],
                )
            })
            .collect();
        tasks.sort_by(|a, b| a.0.cmp(&b.0));
        Stats {
            workers: self.pool.size() as u64,
            workers_busy: (self.pool.size() - self.free.len()) as u64,
            queued: self.queue.len() as u64,
            running: self.running as u64,
            connections: u64::try_from(self.metrics.connections("ws").get()).unwrap_or(0),
            tasks,
        }
    }

    fn push_stats(&mut self) {
        if self.watchers.is_empty() {
            return;
        }
        self.push_positions();
        let stats = self.stats();
        if stats == self.last_stats {
            return;
        }
        self.last_stats = stats.clone();
        let metrics = &self.metrics;
        self.watchers
            .retain(|w| w.deliver(Outbound::Stats(Box::new(stats.clone())), metrics));
    }

    /// Queued tasks move up as others start or leave: the monitoring page
    /// hears of the first `WATCH_RECENT` whose position changed.
    fn push_positions(&mut self) {
        let queued: Vec<TaskId> = self.queue.ids().take(WATCH_RECENT).collect();
        for id in queued {
            let moved = self.tasks.get(&id).is_some_and(|task| {
                let position = self.queue.position(id, task.priority, task.group.as_ref());
                position != task.watched_position
            });
            if moved {
                self.tell_watchers(id);
            }
        }
    }

    fn update_gauges(&mut self) {
        self.metrics.queue_depth.set(self.queue.len() as i64);
        self.metrics.tasks_running.set(self.running as i64);
        self.metrics.tasks_held.set(self.tasks.len() as i64);
        self.metrics
            .workers_busy
            .set((self.pool.size() - self.free.len()) as i64);
        if self.stats_dirty && !self.watchers.is_empty() && self.stats_due.is_none() {
            self.stats_due = Some(Instant::now() + WATCH_STATS_EVERY);
        }
        self.stats_dirty = false;
    }
}

/// A task is visible to the API key (name) that submitted it, and to admins.
fn visible(task: &Task, principal: &Principal) -> bool {
    principal.admin || task.owner == principal.client
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl FailureKind {
    /// The wire code of a failure.
    pub fn code(self) -> ErrorCode {
        match self {
            FailureKind::Timeout => ErrorCode::Timeout,
            FailureKind::TaskError => ErrorCode::TaskError,
            FailureKind::InvalidInput => ErrorCode::InvalidInput,
            FailureKind::StorageFull => ErrorCode::StorageFull,
            FailureKind::Internal => ErrorCode::Internal,
        }
    }
}
