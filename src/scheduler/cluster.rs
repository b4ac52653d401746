//! Cluster mode of the core: what it asks of NATS ([`Effect`]) and what
//! comes back ([`Input`]), as plain data, like the executor boundary.
//!
//! In cluster mode the core keeps doing what it does for its own executors
//! (dispatch, deadlines, questions, stops), but a task's history is the
//! task's JetStream subject, not this node's memory: every event the core
//! makes is *proposed* ([`Effect::Propose`], fenced by the stream sequence
//! of the task's last event) and only delivered once the stream has it: by
//! the node that wrote it when JetStream acknowledges it
//! ([`Input::Committed`]), by every other node when its feed brings it
//! ([`Input::Event`], `mirror.rs`; the writer's own copy is a repeat). The core
//! mirrors every task of the cluster from that feed, so status, replay,
//! cancel and answers work on any node; it *owns* only the tasks it claimed
//! from the queue for its own executors (`claims.rs`).
//!
//! The shell (`src/cluster/`) does the IO; this file and its siblings only
//! decide, with the time passed in, so the rules are unit-tested like the
//! rest of the core (`core_tests.rs`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Command, Mailbox, Refusal, Reply, Submitted, WorkerView};
use crate::exec::{Assignment, ExecutorId, TaskDecl};
use crate::task::{
    CancelReason, ClientId, Delivery, EventRecord, Owner, Priority, TaskId, TaskSpec,
};

/// Submits in flight to NATS at most; past it a submit is `queue_full`.
pub(crate) const MAX_SUBMITS_IN_FLIGHT: usize = 4096;
/// Lookups of unknown tasks in flight at most; past it the request is
/// answered `not_found`.
pub(crate) const MAX_LOOKUPS: usize = 1024;
/// Cancels and answers sent to other nodes and not answered yet, at most;
/// past it one more is refused `unavailable` at once.
pub(crate) const MAX_FORWARDS: usize = 1024;
/// Requests waiting for one lookup at most.
pub(crate) const MAX_PARKED_PER_TASK: usize = 16;
/// How long a claimed task of a busy concurrency key waits before the
/// queue offers it again.
pub(crate) const BUSY_RETRY: Duration = Duration::from_millis(200);

/// What the core asks of the cluster link.
#[derive(Debug)]
pub enum Effect {
    /// Queue a task (idempotency, the queue bounds), then its `accepted`.
    /// With `claim`, an executor here is free for it: the link also
    /// fetches from its lane while the queue publish is on its way. When
    /// that fetch brings this very task, the link writes nothing more: the
    /// core writes `accepted` and `started` in one message (two round trips
    /// less before the task starts; [`SubmitOk::claimed_here`]).
    Submit {
        spec: TaskSpec,
        accepted: Arc<EventRecord>,
        info: AcceptedInfo,
        claim: Option<ExecutorId>,
    },
    /// Append one event (and the ones after it in `then`, in the same
    /// message) to a task's stream if its last event is still the one at
    /// stream sequence `expected` (0: the task has none yet).
    Propose {
        record: Arc<EventRecord>,
        then: Vec<Arc<EventRecord>>,
        expected: u64,
        info: Option<AcceptedInfo>,
    },
    /// Take up to `n` queued tasks from these lanes, the first non-empty
    /// one first, for these executors (each with the free slots it gave:
    /// they sum to `n`). Executors that serve the same names claim
    /// together, in one fetch.
    Claim {
        executors: Vec<(ExecutorId, usize)>,
        lanes: Vec<(Arc<str>, Priority)>,
        n: usize,
    },
    /// A claimed task the core does not take: drop it from the queue (its
    /// history is terminal) or give it back after `delay`.
    Settle { task_id: TaskId, settle: Settle },
    /// The core gave a task up (another node wrote to it, or its lease
    /// lapsed): forget its queue message and lock without touching them.
    Abandon { task_id: TaskId },
    /// A task this node adopted lost the race for its `accepted` to its
    /// submitter: keep holding its queue message, read its history again
    /// and hand the task back to the core to decide once more.
    Reclaim {
        task_id: TaskId,
        executor: ExecutorId,
    },
    /// Read a task's whole history.
    Lookup { task_id: TaskId },
    /// Ask the node running a task to cancel it or take an answer.
    Forward {
        id: u64,
        node: Arc<str>,
        task_id: TaskId,
        request: Forwarded,
    },
    /// A finished task is forgotten here; this node wrote its terminal
    /// event, so it removes its history and idempotency key.
    Forget {
        task_id: TaskId,
        idempotency: Option<(ClientId, Arc<str>, Box<str>)>,
    },
    /// This node's executors and offered tasks changed.
    Executors(NodeEntry),
}

/// How a claimed queue message ends for a task the core does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Drop,
    Retry(Duration),
}

/// A request for the node that runs a task.
#[derive(Debug, Clone)]
pub enum Forwarded {
    Cancel(CancelReason),
    Answer {
        question_id: String,
        value: serde_json::Value,
    },
}

/// What a task's `accepted` event carries besides the event: enough for
/// every node to mirror it (never the input).
#[derive(Debug, Clone)]
pub struct AcceptedInfo {
    pub name: Arc<str>,
    pub owner: Owner,
    pub priority: Priority,
    pub timeout: Duration,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub interactive: bool,
    pub retry_safe: bool,
    pub delivery: Delivery,
    pub cancel_on_disconnect: bool,
    pub input_bytes: u64,
}

impl AcceptedInfo {
    pub fn of(spec: &TaskSpec) -> AcceptedInfo {
        AcceptedInfo {
            name: Arc::clone(&spec.name),
            owner: spec.owner.clone(),
            priority: spec.options.priority,
            timeout: spec.options.timeout,
            idempotency_key: spec.options.idempotency_key.clone(),
            concurrency_key: spec.options.concurrency_key.clone(),
            interactive: spec.options.interactive,
            retry_safe: spec.retry_safe,
            delivery: spec.options.delivery,
            cancel_on_disconnect: spec.options.cancel_on_disconnect,
            input_bytes: spec.input.get().len() as u64,
        }
    }
}

/// An event as the stream holds it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: Arc<EventRecord>,
    pub stream_seq: u64,
    /// The node that wrote it.
    pub writer: Arc<str>,
    /// With `accepted` only.
    pub info: Option<AcceptedInfo>,
}

/// A queued task the link took from the queue for an executor.
#[derive(Debug)]
pub struct ClaimedTask {
    pub spec: TaskSpec,
    /// Deliveries of its queue message so far (1: first).
    pub delivered: u64,
}

/// A node as its registry entry shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: Arc<str>,
    pub state: NodeState,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskDecl>,
    pub started_at: SystemTime,
    pub seen_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Draining,
    Gone,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Draining => "draining",
            NodeState::Gone => "gone",
        }
    }
}

/// What this node tells the others about itself.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub draining: bool,
    pub workers: Vec<WorkerView>,
    pub tasks: Vec<TaskDecl>,
}

/// From the cluster link to the core.
#[derive(Debug)]
pub enum Input {
    /// NATS is reachable (`None`) or not (why).
    Link(Option<String>),
    /// A committed event from the stream.
    Event(Applied),
    /// A submit was queued (`records`: the task's history so far, its
    /// `accepted` first) or refused.
    /// `claimed`: for a submit with a claim, the executor and what its
    /// fetch brought (`None`: there was no fetch, the submit was refused or
    /// answered from an earlier one).
    SubmitDone {
        task_id: TaskId,
        result: Result<SubmitOk, Refusal>,
        claimed: Option<(ExecutorId, Option<Vec<ClaimedTask>>)>,
    },
    /// A proposal was appended at `stream_seq` (`seq`: its last event's).
    Committed {
        task_id: TaskId,
        seq: u64,
        stream_seq: u64,
    },
    /// A proposal was refused (`seq`: its first event's, which tells it
    /// from a later proposal of the task): the stream moved on without this
    /// node.
    Conflict { task_id: TaskId, seq: u64 },
    /// The answer to a claim: at most as many tasks as the executors gave
    /// free slots.
    Claimed {
        executors: Vec<(ExecutorId, usize)>,
        tasks: Vec<ClaimedTask>,
    },
    /// A task's whole history (empty: no such task).
    Loaded {
        task_id: TaskId,
        records: Vec<Applied>,
    },
    /// The answer to a [`Effect::Reclaim`]: the task again, with its
    /// history as the stream has it now.
    Reclaimed {
        executor: ExecutorId,
        claimed: ClaimedTask,
        records: Vec<Applied>,
    },
    /// Another node asks this one about a task it runs.
    Forwarded {
        task_id: TaskId,
        request: Forwarded,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    ForwardDone {
        id: u64,
        result: Result<(), Refusal>,
    },
    /// This node can no longer be sure it holds the task (its lease
    /// renewals failed for too long): it stops the attempt.
    LeaseLost { task_id: TaskId },
    /// The registry of nodes changed.
    Nodes(Vec<NodeView>),
}

/// A submit's outcome from the link.
#[derive(Debug)]
pub struct SubmitOk {
    /// The task the submit names (an earlier one for a duplicate).
    pub task_id: TaskId,
    pub duplicate: bool,
    pub records: Vec<Applied>,
    /// The submit's own fetch brought this task before its `accepted` was
    /// written (`records` is empty): the core writes it with `started`.
    pub claimed_here: bool,
}

/// Per task, in cluster mode.
#[derive(Debug, Default)]
pub(crate) struct ClusterTask {
    /// This node claimed it and runs it (or is about to).
    pub(crate) owned: bool,
    /// Stream sequence of the last event applied or committed here.
    pub(crate) stream_seq: u64,
    /// `seq` of the last event proposed here.
    pub(crate) proposed: u64,
    /// Events proposed, waiting for the proposal on its way.
    pub(crate) pending: VecDeque<Arc<EventRecord>>,
    /// The events of the proposal on its way (none: nothing is), applied
    /// here when it is committed (the feed's copy of them comes after, or
    /// before, and only once counts).
    pub(crate) flying: Vec<Arc<EventRecord>>,
    /// Proposals wait while the core makes the events that go with them
    /// (an adopted task's `accepted` waits for its `started`).
    pub(crate) holding: bool,
    /// A terminal event was proposed here: nothing more is.
    pub(crate) ended: bool,
    /// Private copies of proposed events, delivered when they are applied.
    pub(crate) copies: Vec<(u64, Mailbox, Option<Box<str>>)>,
    /// Answerers waiting for the `answered` event of a question.
    pub(crate) answerers: Vec<(String, Reply<()>)>,
    /// Cancels to try again when the task's history moves.
    pub(crate) retry_cancel: Vec<(Reply<()>, CancelReason)>,
    /// The node running the current attempt (from `started`).
    pub(crate) node: Option<Arc<str>>,
    /// The assignment waiting for `started` (its seq) to be committed.
    pub(crate) assign: Option<(u64, Assignment)>,
    /// This node wrote the terminal event.
    pub(crate) wrote_terminal: bool,
    pub(crate) info: Option<AcceptedInfo>,
    /// The submitter of a task whose `accepted` this node writes with its
    /// `started`: it gets its answer when that `accepted` is applied.
    pub(crate) submitter: Option<Box<PendingSubmit>>,
}

impl ClusterTask {
    /// A proposal of the task is on its way: the next ones wait for it.
    pub(crate) fn in_flight(&self) -> bool {
        !self.flying.is_empty()
    }
}

#[derive(Debug)]
pub(crate) struct PendingSubmit {
    pub(crate) reply: Reply<Submitted>,
    /// Its `accepted`'s position, for a task whose `accepted` the core
    /// writes itself ([`SubmitOk::claimed_here`]).
    pub(crate) position: u64,
    pub(crate) delivery: Delivery,
    pub(crate) cancel_on_disconnect: bool,
}

#[derive(Debug)]
pub(crate) enum PendingForward {
    Cancel(TaskId, Reply<()>, CancelReason),
    Answer(TaskId, String, Reply<()>),
}

/// The core's cluster state.
#[derive(Debug)]
pub(crate) struct ClusterCore {
    pub(crate) node: Arc<str>,
    /// Effects for the link, taken by the shell after each batch.
    pub(crate) effects: VecDeque<Effect>,
    /// Why NATS is unreachable, if it is.
    pub(crate) down: Option<String>,
    pub(crate) submits: HashMap<TaskId, PendingSubmit>,
    /// Requests about tasks being looked up.
    pub(crate) parked: HashMap<TaskId, Vec<Command>>,
    /// Claimed tasks waiting for their lookup.
    pub(crate) parked_claims: HashMap<TaskId, (ClaimedTask, ExecutorId)>,
    /// Tasks this node adopted whose `accepted` is not committed yet.
    pub(crate) adopted: HashSet<TaskId>,
    pub(crate) forwards: HashMap<u64, PendingForward>,
    pub(crate) next_forward: u64,
    /// Claims out per executor (slots promised to the link's answers).
    pub(crate) claiming: HashMap<ExecutorId, usize>,
    /// Per executor: the queue version its last claim found empty, and
    /// when: it claims again when the queue grew, or shortly after (another
    /// node may have taken what it saw, or be about to give it back).
    pub(crate) empty_at: HashMap<ExecutorId, (u64, Instant)>,
    /// Grows whenever a task is queued in the mirror.
    pub(crate) queue_version: u64,
    /// When every executor with a free slot looks at its lanes again
    /// (redelivered tasks of lost nodes are not announced by any event).
    pub(crate) probe_at: Instant,
    pub(crate) lease: Duration,
    pub(crate) nodes: BTreeMap<Arc<str>, NodeView>,
    /// Names served by other nodes now (up or draining).
    pub(crate) remote_names: HashMap<Arc<str>, usize>,
    /// The registry changed since the last `Executors` effect.
    pub(crate) entry_dirty: bool,
    pub(crate) entry_due: Option<Instant>,
    /// Attempts running here when the entry was last written.
    pub(crate) entry_running: usize,
}

/// How soon an executor whose claim came back empty tries the same lanes.
pub(crate) const EMPTY_RETRY: Duration = Duration::from_millis(50);

/// How often this node's entry is written at most.
pub(crate) const ENTRY_EVERY: Duration = Duration::from_millis(250);

impl ClusterCore {
    pub(crate) fn new(node: Arc<str>, lease: Duration, now: Instant) -> ClusterCore {
        ClusterCore {
            node,
            effects: VecDeque::new(),
            down: Some("connecting to NATS".to_owned()),
            submits: HashMap::new(),
            parked: HashMap::new(),
            parked_claims: HashMap::new(),
            adopted: HashSet::new(),
            forwards: HashMap::new(),
            next_forward: 1,
            claiming: HashMap::new(),
            empty_at: HashMap::new(),
            queue_version: 0,
            probe_at: now,
            lease,
            nodes: BTreeMap::new(),
            remote_names: HashMap::new(),
            entry_dirty: true,
            entry_due: None,
            entry_running: 0,
        }
    }
}
