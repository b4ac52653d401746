//! The executor boundary: what the scheduler tells whoever runs tasks, and
//! what comes back. Every executor — the built-in pool, a managed worker
//! process, a remote worker, later another node — is registered with the
//! scheduler as an [`ExecutorSpec`] (a name, a number of slots, the task
//! names it serves), receives [`Order`]s on a bounded channel and sends
//! [`Report`]s through its [`Reporter`].
//!
//! These are plain data: an order or a report could be serialised and sent
//! over a pipe or a socket as it is (the worker protocol in
//! `docs/protocol.md` Part II is that translation). Files are referred to by
//! what the artifacts area published, never by a path an executor chose.
//!
//! A registration lives until its executor reports `Gone`: a remote worker
//! that reconnects within its grace keeps its registration (and so its
//! attempts) across connections; the scheduler never sees the gap.
//!
//! **Architecture Invariant:** this module knows nothing of the scheduler's
//! state, the catalogue or any transport; both the scheduler and the task
//! handlers depend on it, never the other way round.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::task::{
    Answer, CancelReason, Progress, PublishedFile, QuestionSpec, TaskFailure, TaskId,
};

/// An executor's id, unique for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutorId(pub u64);

impl fmt::Debug for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExecutorId({})", self.0)
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w-{}", self.0)
    }
}

/// What kind of executor, for the monitoring page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// The server's own pool of built-in tasks.
    Builtin,
    /// A child process started by `taskwire serve`.
    Managed { group: Arc<str>, pid: Option<u32> },
    /// A worker connected over `GET /v1/worker`.
    Remote { peer: String },
}

/// A task name an executor serves, as it declared it.
#[derive(Clone, Debug)]
pub struct TaskDecl {
    pub name: Arc<str>,
    pub description: String,
    /// JSON Schema of the input (checked at admission), if any.
    pub input_schema: Option<serde_json::Value>,
    /// The task may run again after a lost attempt.
    pub retry_safe: bool,
    /// Default `timeout_s` for this task (still capped by `max_timeout_s`).
    pub timeout: Option<Duration>,
}

/// An executor as it registers.
#[derive(Clone, Debug)]
pub struct ExecutorSpec {
    /// Shown in `started.worker` and on the monitoring page.
    pub name: Arc<str>,
    pub kind: ExecutorKind,
    /// Attempts it runs at once; `1` is strictly sequential.
    pub slots: usize,
    pub tasks: Vec<TaskDecl>,
}

/// One attempt of a task, handed to an executor.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub task_id: TaskId,
    /// 1 for the first attempt, then 2 … after a re-queue. Every report must
    /// carry it: reports about another attempt are ignored.
    pub attempt: u32,
    pub task: Arc<str>,
    /// The input as the client wrote it.
    pub input: Box<RawValue>,
    /// When the attempt must have ended (the scheduler enforces it).
    pub deadline: Instant,
    /// `deadline` on the wall clock, for the wire.
    pub deadline_at: SystemTime,
    pub timeout: Duration,
    /// The task may ask questions (`options.interactive`).
    pub interactive: bool,
}

/// Why the scheduler stops an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The task was cancelled (by a client, a disconnect or shutdown).
    Cancelled(CancelReason),
    /// The task ran past its deadline; it has already failed with `timeout`.
    Timeout,
    /// The attempt was given to another executor (this one was lost).
    Superseded,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cancelled(reason) => reason.as_str(),
            StopReason::Timeout => "timeout",
            StopReason::Superseded => "superseded",
        }
    }
}

/// Scheduler → executor.
#[derive(Debug)]
pub enum Order {
    /// Run this attempt (only ever sent while the executor has a free slot).
    Assign(Assignment),
    /// Stop this attempt within `grace`, then report it (`Cancelled`, or its
    /// real outcome if it finished first).
    Stop {
        task_id: TaskId,
        attempt: u32,
        reason: StopReason,
        grace: Duration,
    },
    /// The answer to the attempt's open question.
    Answer {
        task_id: TaskId,
        attempt: u32,
        answer: Answer,
        /// The attempt's deadline, moved by the time the question waited.
        deadline: Instant,
        deadline_at: SystemTime,
    },
    /// The attempt's question was refused (one is open already, or the
    /// question itself is malformed); the attempt goes on.
    AskRefused {
        task_id: TaskId,
        attempt: u32,
        question_id: String,
        reason: String,
    },
    /// Take no new work; finish what runs.
    Drain,
}

/// How an attempt ended, as its executor reports it.
#[derive(Debug)]
pub enum Outcome {
    /// Its files are published already; the scheduler discards them if the
    /// attempt turns out to be stale.
    Completed {
        result: Box<RawValue>,
        files: Vec<PublishedFile>,
        duration: Duration,
    },
    Failed(TaskFailure),
    Cancelled,
}

/// Why an executor is gone with attempts still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostCause {
    /// The process exited (managed) with this status.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// No heartbeat for too long.
    Hung,
    /// The connection closed (remote) and did not come back in time.
    Disconnected,
    /// It did not stop an attempt within the cancel grace.
    CancelIgnored,
    /// It broke the protocol too often.
    Violations,
}

impl LostCause {
    pub fn as_str(&self) -> &'static str {
        match self {
            LostCause::Exit { .. } => "exit",
            LostCause::Hung => "hung",
            LostCause::Disconnected => "disconnected",
            LostCause::CancelIgnored => "cancel_ignored",
            LostCause::Violations => "violations",
        }
    }
}

/// Executor → scheduler.
#[derive(Debug)]
pub enum Report {
    Progress {
        task_id: TaskId,
        attempt: u32,
        progress: Progress,
    },
    /// The attempt asks its submitter a question.
    Ask {
        task_id: TaskId,
        attempt: u32,
        question: QuestionSpec,
    },
    /// The attempt ended. `slot_free: false` when the executor still does
    /// work for it (blocking code that ignores cancellation): the slot is
    /// given back by a later [`Report::SlotFree`].
    Finished {
        task_id: TaskId,
        attempt: u32,
        outcome: Outcome,
        slot_free: bool,
    },
    SlotFree {
        task_id: TaskId,
        attempt: u32,
    },
    /// One attempt is lost while the executor lives on (a remote worker
    /// that came back without it, a cancel it ignored): the attempt is
    /// re-queued or fails with `worker_lost`, like a lost executor's, and
    /// its slot is free.
    Lost {
        task_id: TaskId,
        attempt: u32,
        cause: LostCause,
    },
    /// The executor takes no new work (it is draining).
    Draining,
    /// The executor is gone. Its running attempts are lost (`cause`), or it
    /// left cleanly with none (`cause: None`).
    Gone {
        cause: Option<LostCause>,
    },
}

/// A report tagged with the executor it comes from.
#[derive(Debug)]
pub struct Tagged {
    pub executor: ExecutorId,
    pub report: Report,
}

/// An executor's way to report; cheap to clone.
#[derive(Clone, Debug)]
pub struct Reporter {
    executor: ExecutorId,
    tx: mpsc::Sender<Tagged>,
}

impl Reporter {
    pub fn new(executor: ExecutorId, tx: mpsc::Sender<Tagged>) -> Reporter {
        Reporter { executor, tx }
    }

    pub fn executor(&self) -> ExecutorId {
        self.executor
    }

    /// Sends a report, waiting while the scheduler is behind (reports are
    /// never dropped). False when the scheduler has stopped.
    pub async fn send(&self, report: Report) -> bool {
        let tagged = Tagged {
            executor: self.executor,
            report,
        };
        self.tx.send(tagged).await.is_ok()
    }

    /// [`Reporter::send`] from blocking code (never on an async thread).
    pub fn blocking_send(&self, report: Report) -> bool {
        let tagged = Tagged {
            executor: self.executor,
            report,
        };
        self.tx.blocking_send(tagged).is_ok()
    }

    /// Sends without waiting, for `Drop` paths; false if it could not.
    pub fn try_send(&self, report: Report) -> bool {
        let tagged = Tagged {
            executor: self.executor,
            report,
        };
        self.tx.try_send(tagged).is_ok()
    }
}

/// What a registered executor holds: its id, its orders and its reporter.
#[derive(Debug)]
pub struct Registration {
    pub id: ExecutorId,
    pub orders: mpsc::Receiver<Order>,
    pub reporter: Reporter,
}

/// Why an executor was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("task {name:?}: {reason}")]
    BadTask { name: String, reason: String },
    #[error("slots must be 1 to {max}")]
    BadSlots { max: usize },
}

/// Orders waiting for one executor: at most its slots (assignments) plus
/// one stop and one answer per slot, plus a drain; this bound is never
/// reached by an executor that reads its orders.
pub fn order_queue(slots: usize) -> usize {
    slots.saturating_mul(3).saturating_add(8)
}
