//! The scheduler: one actor that owns every task's state.
//!
//! [`Scheduler`] is the handle the front door (WebSocket, REST, and later
//! timers and other nodes) uses: typed methods that send a [`Command`] and,
//! for callers without a mailbox, await a typed answer. Executors (the
//! built-in pool, external workers) register through it and then talk to
//! the actor only through the messages of [`crate::exec`].
//!
//! Inside: [`actor`] is the thin async shell (one `select!` loop over
//! commands, reports and the next timer); [`core`] holds the state and makes
//! every decision synchronously, with the time passed in, so its rules are
//! unit-tested without a runtime (`core_tests.rs`). Beside it: the waiting
//! line ([`queue`]), each task's event log ([`events`]), the executors
//! ([`registry`]), idempotency keys ([`idempotency`]), finished-task
//! retention ([`retention`]), questions ([`questions`]) and the monitoring
//! feed ([`watch`]).
//!
//! **Architecture Invariants:**
//! - Only the actor changes task state, so a task's events are numbered
//!   without gaps and there are no locks around tasks.
//! - It never waits on a client or an executor: mailboxes and order queues
//!   are bounded and filled with `try_send`; a full mailbox marks its
//!   connection as a slow consumer (closed with `1013`) and is dropped.
//! - Only the current attempt of a task, on the executor it was given to,
//!   may change it; reports about any other attempt are ignored.
//! - Every accepted task ends with exactly one terminal event.
//!
//! Bounds: `queue_capacity` queued tasks and `max_queued_input_bytes` of
//! their inputs (with a per-client share), `max_task_events` held events per
//! task, `max_held_tasks` finished tasks and `max_held_result_bytes` of
//! their results, each for at most `result_ttl`.

mod actor;
mod claims;
pub(crate) mod cluster;
mod core;
mod events;
mod idempotency;
mod mailbox;
mod mirror;
mod questions;
mod queue;
mod registry;
mod requests;
mod retention;
mod routing;
mod running;
mod timers;
mod watch;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod core_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, Either};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use self::mailbox::{Mailbox, MailboxId, Outbound, Watching};
use crate::auth::Principal;
use crate::catalog::InvalidInput;
use crate::config::Limits;
use crate::directory::Directory;
use crate::exec::{ExecutorKind, ExecutorSpec, RegisterError, Registration};
use crate::task::{EventRecord, Owner, QuestionSpec, TaskId, TaskSpec, TaskState};
use crate::telemetry::Metrics;

/// Why the scheduler refused a request. `server` maps each to its wire code
/// and HTTP status, in one place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the queue is full ({capacity} tasks)")]
    QueueFull {
        capacity: usize,
        retry_after: Duration,
    },
    #[error("queued inputs are at their bound ({max} bytes)")]
    QueuedBytesFull { max: u64, retry_after: Duration },
    #[error("this client's queued inputs are at their share ({max} bytes)")]
    ClientShareFull { max: u64, retry_after: Duration },
    #[error("no such task")]
    NotFound,
    #[error("no such open question")]
    NoSuchQuestion,
    #[error("the task has already finished")]
    AlreadyFinished,
    #[error("the question was already answered")]
    AlreadyAnswered,
    #[error("invalid answer: {0}")]
    InvalidAnswer(InvalidInput),
    /// Cluster mode: NATS cannot be reached, so nothing can be queued.
    #[error("the cluster's queue cannot be reached; try again shortly")]
    Unavailable { retry_after: Duration },
    /// Cluster mode, between nodes: this node does not run the task.
    #[error("the task is not run by this node")]
    NotOwner,
    /// Cluster mode: no node has an upload of that id that the caller may
    /// use (the same answer as admission's on one node).
    #[error("{path}: no such upload")]
    NoSuchUpload { path: String },
    /// As many cancels of this task as [`MAX_CANCELS_WAITING`] already wait
    /// for its end (each of them gets it).
    #[error("{max} cancels of this task already wait for its end")]
    TooManyCancels { max: usize },
}

/// Cancels of one running task waiting for its end at most (each gets the
/// task's `cancelled`, or its real end); one more is refused
/// `rate_limited` at once.
pub(crate) const MAX_CANCELS_WAITING: usize = 64;

/// A submit's answer.
#[derive(Debug, Clone, Copy)]
pub struct Submitted {
    pub task_id: TaskId,
    pub position: u64,
    pub duplicate: bool,
}

/// Where the answer to a request goes: into the requester's mailbox (as
/// the event itself, carrying its `ref`), or back to an awaiting caller.
#[derive(Debug)]
pub(crate) enum Reply<T> {
    Mailbox {
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Direct(oneshot::Sender<Result<T, Refusal>>),
}

/// From the front door and executors to the scheduler.
#[derive(Debug)]
pub(crate) enum Command {
    Submit {
        spec: TaskSpec,
        reply: Reply<Submitted>,
    },
    Cancel {
        task_id: TaskId,
        principal: Principal,
        reply: Reply<()>,
    },
    Answer {
        task_id: TaskId,
        principal: Principal,
        question_id: String,
        value: serde_json::Value,
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
        mailbox: MailboxId,
        reply: Option<(Mailbox, Option<Box<str>>)>,
    },
    Snapshot {
        task_id: TaskId,
        principal: Principal,
        reply: oneshot::Sender<Option<TaskView>>,
    },
    /// A connection is gone: drop its subscriptions, cancel its
    /// `cancel_on_disconnect` tasks.
    Disconnected {
        mailbox: MailboxId,
        tasks: Vec<TaskId>,
    },
    Watch {
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    },
    Unwatch {
        mailbox: MailboxId,
    },
    AdminList {
        reply: oneshot::Sender<(Vec<TaskView>, Stats)>,
    },
    AdminWorkers {
        reply: oneshot::Sender<Vec<WorkerView>>,
    },
    AdminNodes {
        reply: oneshot::Sender<Vec<NodeSummary>>,
    },
    Register {
        spec: ExecutorSpec,
        reply: oneshot::Sender<Result<Registration, RegisterError>>,
    },
    /// Shutdown: stop taking tasks, cancel queued ones, give running ones
    /// `shutdown_grace`, answer when every task has ended.
    Drain {
        reply: oneshot::Sender<()>,
    },
}

impl Command {
    /// The task a request is about, for the requests a cluster node holds
    /// until it knows that task (its history read from the stream).
    pub(crate) fn about_task(&self) -> Option<TaskId> {
        match self {
            Command::Cancel { task_id, .. }
            | Command::Answer { task_id, .. }
            | Command::Subscribe { task_id, .. }
            | Command::Snapshot { task_id, .. } => Some(*task_id),
            _ => None,
        }
    }
}

/// A task as the REST snapshot and the monitoring page show it.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub task_id: TaskId,
    pub task: Arc<str>,
    pub owner: Owner,
    pub state: TaskState,
    pub attempt: u32,
    pub position: Option<u64>,
    pub progress: Option<f64>,
    pub message: Option<String>,
    pub worker: Option<Arc<str>>,
    /// The open question, if the task waits for an answer.
    pub question: Option<(QuestionSpec, SystemTime)>,
    /// The terminal event, once there is one.
    pub terminal: Option<Arc<EventRecord>>,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub last_seq: u64,
    /// Mailboxes following it now.
    pub subscribers: usize,
    /// The schedule that submitted it.
    pub schedule: Option<Arc<str>>,
}

/// An executor as the monitoring page shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: crate::exec::ExecutorId,
    /// The node it is connected to (cluster mode).
    pub node: Option<Arc<str>>,
    pub name: Arc<str>,
    pub kind: ExecutorKind,
    pub tasks: Vec<Arc<str>>,
    pub slots: usize,
    pub running: Vec<TaskId>,
    pub state: WorkerState,
    pub connected_at: SystemTime,
    pub done: u64,
    pub failed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Ready,
    Draining,
    Gone,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Ready => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Gone => "gone",
        }
    }
}

/// A node of the cluster as the monitoring page shows it.
#[derive(Debug, Clone)]
pub struct NodeSummary {
    pub name: Arc<str>,
    pub state: cluster::NodeState,
    pub started_at: SystemTime,
    pub seen_at: SystemTime,
    pub workers: usize,
    pub slots: usize,
    pub running: usize,
    /// This node.
    pub this: bool,
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

/// What a [`Scheduler`] method that only sends a command returns: false
/// once the scheduler stopped. Ready at once unless the command channel is
/// full.
pub(crate) type Sent<'a> = Either<std::future::Ready<bool>, BoxFuture<'a, bool>>;

/// Handle to the scheduler; cheap to clone.
#[derive(Clone, Debug)]
pub struct Scheduler {
    commands: mpsc::Sender<Command>,
    draining: Arc<AtomicBool>,
}

/// Commands waiting for the actor; senders wait (briefly) when it is full.
const COMMAND_QUEUE: usize = 4096;
/// Reports waiting for the actor; an executor waits when it is full.
const REPORT_QUEUE: usize = 4096;
/// Cluster inputs and effects waiting on either side of the link.
const CLUSTER_QUEUE: usize = 4096;

/// The link's end of a cluster node's scheduler: effects to carry out,
/// inputs to send back.
#[derive(Debug)]
pub struct ClusterPort {
    pub inputs: mpsc::Sender<cluster::Input>,
    pub effects: mpsc::Receiver<cluster::Effect>,
}

impl Scheduler {
    /// Starts the actor (tracked by `tracker`; it ends when every handle is
    /// dropped, or with `stop`).
    pub fn start(
        limits: &Limits,
        directory: Arc<Directory>,
        metrics: Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
        orphans: impl FnMut(Vec<crate::task::PublishedFile>) + Send + 'static,
    ) -> Scheduler {
        Scheduler::start_with(limits, directory, metrics, tracker, stop, orphans, None).0
    }

    /// [`Scheduler::start`] as a node of a cluster: the core proposes to
    /// and mirrors the cluster's streams through the returned port.
    #[expect(
        clippy::too_many_arguments,
        reason = "start's arguments and the node's two"
    )]
    pub fn start_cluster(
        limits: &Limits,
        directory: Arc<Directory>,
        metrics: Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
        orphans: impl FnMut(Vec<crate::task::PublishedFile>) + Send + 'static,
        node: Arc<str>,
        lease: Duration,
    ) -> (Scheduler, ClusterPort) {
        let (scheduler, port) = Scheduler::start_with(
            limits,
            directory,
            metrics,
            tracker,
            stop,
            orphans,
            Some((node, lease)),
        );
        (
            scheduler,
            port.unwrap_or_else(|| unreachable!("asked for a port")),
        )
    }

    fn start_with(
        limits: &Limits,
        directory: Arc<Directory>,
        metrics: Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
        orphans: impl FnMut(Vec<crate::task::PublishedFile>) + Send + 'static,
        cluster: Option<(Arc<str>, Duration)>,
    ) -> (Scheduler, Option<ClusterPort>) {
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
        let draining = Arc::new(AtomicBool::new(false));
        let mut core = core::Core::new(limits.clone(), directory, metrics, reports_tx);
        let mut port = None;
        let mut link = None;
        if let Some((node, lease)) = cluster {
            core.enable_cluster(node, lease);
            let (inputs_tx, inputs_rx) = mpsc::channel(CLUSTER_QUEUE);
            let (effects_tx, effects_rx) = mpsc::channel(CLUSTER_QUEUE);
            port = Some(ClusterPort {
                inputs: inputs_tx,
                effects: effects_rx,
            });
            link = Some((inputs_rx, effects_tx));
        }
        tracker.spawn(actor::run(
            core,
            commands_rx,
            reports_rx,
            link,
            stop,
            orphans,
        ));
        (
            Scheduler {
                commands: commands_tx,
                draining,
            },
            port,
        )
    }

    /// Sends a command; the future waits for room only when the channel is
    /// full, and that wait is boxed: inline, `Sender::send`'s future (with
    /// the command in it) would make every caller's future, each WebSocket
    /// connection's among them, ~1 KiB larger for a path taken only under
    /// backpressure.
    fn send(&self, command: Command) -> Sent<'_> {
        match self.commands.try_send(command) {
            Ok(()) => Either::Left(std::future::ready(true)),
            Err(mpsc::error::TrySendError::Full(command)) => Either::Right(Box::pin(async move {
                self.commands.send(command).await.is_ok()
            })),
            Err(mpsc::error::TrySendError::Closed(_)) => Either::Left(std::future::ready(false)),
        }
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(command(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    async fn ask_result<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refusal> {
        self.ask(|tx| command(Reply::Direct(tx)))
            .await
            .unwrap_or(Err(Refusal::ShuttingDown))
    }

    /// Queues a task; the answer is awaited.
    pub async fn submit(&self, spec: TaskSpec) -> Result<Submitted, Refusal> {
        self.ask_result(|reply| Command::Submit { spec, reply })
            .await
    }

    /// Queues a task; the `accepted` event (or `rejected`) goes to
    /// `mailbox`, which follows the task. False if the scheduler stopped.
    pub(crate) fn submit_to(
        &self,
        spec: TaskSpec,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) -> Sent<'_> {
        let reply = Reply::Mailbox { mailbox, reference };
        self.send(Command::Submit { spec, reply })
    }

    /// Cancels a task and waits until it is cancelled.
    pub async fn cancel(&self, task_id: TaskId, principal: Principal) -> Result<(), Refusal> {
        self.ask_result(|reply| Command::Cancel {
            task_id,
            principal,
            reply,
        })
        .await
    }

    /// Cancels a task; its `cancelled` event (or the error) goes to `mailbox`.
    pub(crate) fn cancel_to(
        &self,
        task_id: TaskId,
        principal: Principal,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) -> Sent<'_> {
        let reply = Reply::Mailbox { mailbox, reference };
        self.send(Command::Cancel {
            task_id,
            principal,
            reply,
        })
    }

    /// Answers a task's open question; waits for the answer to be taken.
    pub async fn answer(
        &self,
        task_id: TaskId,
        principal: Principal,
        question_id: String,
        value: serde_json::Value,
    ) -> Result<(), Refusal> {
        self.ask_result(|reply| Command::Answer {
            task_id,
            principal,
            question_id,
            value,
            reply,
        })
        .await
    }

    /// Answers a question; the `answered` event (or the error) goes to
    /// `mailbox`.
    pub(crate) fn answer_to(
        &self,
        task_id: TaskId,
        principal: Principal,
        question_id: String,
        value: serde_json::Value,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) -> Sent<'_> {
        let reply = Reply::Mailbox { mailbox, reference };
        self.send(Command::Answer {
            task_id,
            principal,
            question_id,
            value,
            reply,
        })
    }

    /// Replays a task's held events after `after_seq` into `mailbox`, then
    /// follows it; `not_found` goes to the mailbox too.
    pub(crate) fn subscribe(
        &self,
        task_id: TaskId,
        principal: Principal,
        after_seq: u64,
        mailbox: Mailbox,
        reference: Option<Box<str>>,
    ) -> Sent<'_> {
        self.send(Command::Subscribe {
            task_id,
            principal,
            after_seq,
            mailbox,
            reference,
        })
    }

    /// Stops following a task; `unsubscribed` goes to `reply` when given.
    pub(crate) fn unsubscribe(
        &self,
        task_id: TaskId,
        mailbox: MailboxId,
        reply: Option<(Mailbox, Option<Box<str>>)>,
    ) -> Sent<'_> {
        self.send(Command::Unsubscribe {
            task_id,
            mailbox,
            reply,
        })
    }

    /// [`Scheduler::unsubscribe`] without waiting, for `Drop` paths.
    pub fn unsubscribe_now(&self, task_id: TaskId, mailbox: MailboxId) -> bool {
        self.commands
            .try_send(Command::Unsubscribe {
                task_id,
                mailbox,
                reply: None,
            })
            .is_ok()
    }

    /// A task as its owner (or an admin) may see it.
    pub async fn snapshot(&self, task_id: TaskId, principal: Principal) -> Option<TaskView> {
        self.ask(|reply| Command::Snapshot {
            task_id,
            principal,
            reply,
        })
        .await
        .flatten()
    }

    /// A connection is gone.
    pub async fn disconnected(&self, mailbox: MailboxId, tasks: Vec<TaskId>) {
        let _ = self.send(Command::Disconnected { mailbox, tasks }).await;
    }

    /// Admin: every held task and every change from now on, into `mailbox`.
    pub async fn watch(&self, mailbox: Mailbox, reference: Option<Box<str>>) -> bool {
        self.send(Command::Watch { mailbox, reference }).await
    }

    pub async fn unwatch(&self, mailbox: MailboxId) {
        let _ = self.send(Command::Unwatch { mailbox }).await;
    }

    /// Admin: every held task and the counters.
    pub async fn admin_list(&self) -> Option<(Vec<TaskView>, Stats)> {
        self.ask(|reply| Command::AdminList { reply }).await
    }

    /// Admin: every executor.
    pub async fn admin_workers(&self) -> Option<Vec<WorkerView>> {
        self.ask(|reply| Command::AdminWorkers { reply }).await
    }

    /// Admin: every node of the cluster (none in local mode).
    pub async fn admin_nodes(&self) -> Option<Vec<NodeSummary>> {
        self.ask(|reply| Command::AdminNodes { reply }).await
    }

    /// Registers an executor: it will get orders for the tasks it declared.
    pub async fn register(&self, spec: ExecutorSpec) -> Result<Registration, RegisterError> {
        self.ask(|reply| Command::Register { spec, reply })
            .await
            .unwrap_or(Err(RegisterError::ShuttingDown))
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Begins the drain and waits until every task has ended.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        let _ = self.ask(|reply| Command::Drain { reply }).await;
    }
}
