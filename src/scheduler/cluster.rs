//! Cluster mode of the core: what it asks of NATS ([`Effect`]) and what
//! comes back ([`Input`]), as plain data, like the executor boundary.
//!
//! In cluster mode the core keeps doing what it does for its own executors
//! (dispatch, deadlines, questions, stops), but a task's history is the
//! task's JetStream subject, not this node's memory: every event the core
//! makes is *proposed* ([`Effect::Propose`], fenced by the stream sequence
//! of the task's last event) and only delivered when it comes back from the
//! stream ([`Input::Event`], `mirror.rs`), on every node alike. The core
//! mirrors every task of the cluster from that feed, so status, replay,
//! cancel and answers work on any node; it *owns* only the tasks it claimed
//! from the queue for its own executors (`claims.rs`).
//!
//! The shell (`src/cluster/`) does the IO; this file and its siblings only
//! decide, with the time passed in, so the rules are unit-tested like the
//! rest of the core (`core_tests.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::core::{Core, Task};
use super::{Command, Mailbox, Refusal, Reply, Submitted, WorkerView};
use crate::auth::Principal;
use crate::exec::{Assignment, ExecutorId, TaskDecl};
use crate::task::{
    CancelReason, ClientId, Delivery, EventRecord, Owner, Priority, TaskEvent, TaskId, TaskSpec,
    TaskState,
};

/// Submits in flight to NATS at most; past it a submit is `queue_full`.
pub(crate) const MAX_SUBMITS_IN_FLIGHT: usize = 4096;
/// Lookups of unknown tasks in flight at most; past it the request is
/// answered `not_found`.
pub(crate) const MAX_LOOKUPS: usize = 1024;
/// Requests waiting for one lookup at most.
pub(crate) const MAX_PARKED_PER_TASK: usize = 16;
/// How long a claimed task of a busy concurrency key waits before the
/// queue offers it again.
pub const BUSY_RETRY: Duration = Duration::from_millis(200);

/// What the core asks of the cluster link.
#[derive(Debug)]
pub enum Effect {
    /// Queue a task (idempotency, the queue bounds), then its `accepted`.
    Submit {
        spec: TaskSpec,
        accepted: Arc<EventRecord>,
        info: AcceptedInfo,
    },
    /// Append one event to a task's stream if its last event is still the
    /// one at stream sequence `expected` (0: the task has none yet).
    Propose {
        record: Arc<EventRecord>,
        expected: u64,
        info: Option<AcceptedInfo>,
    },
    /// Take up to `n` queued tasks for `executor` from these lanes, the
    /// first non-empty one first.
    Claim {
        executor: ExecutorId,
        lanes: Vec<(Arc<str>, Priority)>,
        n: usize,
    },
    /// A claimed task the core does not take: drop it from the queue (its
    /// history is terminal) or give it back after `delay`.
    Settle { task_id: TaskId, settle: Settle },
    /// The core gave a task up (another node wrote to it, or its lease
    /// lapsed): forget its queue message and lock without touching them.
    Abandon { task_id: TaskId },
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
    SubmitDone {
        task_id: TaskId,
        result: Result<SubmitOk, Refusal>,
    },
    /// A proposal was appended at `stream_seq`.
    Committed {
        task_id: TaskId,
        seq: u64,
        stream_seq: u64,
    },
    /// A proposal was refused: the stream moved on without this node.
    Conflict { task_id: TaskId, seq: u64 },
    /// The answer to a claim: at most `n` tasks.
    Claimed {
        executor: ExecutorId,
        n: usize,
        tasks: Vec<ClaimedTask>,
    },
    /// A task's whole history (empty: no such task).
    Loaded {
        task_id: TaskId,
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
    /// A proposal is on its way; the next ones wait.
    pub(crate) in_flight: bool,
    pub(crate) pending: VecDeque<Arc<EventRecord>>,
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
}

#[derive(Debug)]
pub(crate) struct PendingSubmit {
    pub(crate) reply: Reply<Submitted>,
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
const ENTRY_EVERY: Duration = Duration::from_millis(250);

impl ClusterCore {
    pub(crate) fn new(node: Arc<str>, lease: Duration, now: Instant) -> ClusterCore {
        ClusterCore {
            node,
            effects: VecDeque::new(),
            down: Some("connecting to NATS".to_owned()),
            submits: HashMap::new(),
            parked: HashMap::new(),
            parked_claims: HashMap::new(),
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

/// The principal a forwarded request acts as: the asking node checked the
/// caller already.
fn cluster_principal() -> Principal {
    Principal {
        client: ClientId::new("cluster"),
        admin: true,
        tasks: None,
        token: None,
    }
}

impl Core {
    /// Turns this core into a cluster node's.
    pub(crate) fn enable_cluster(&mut self, node: Arc<str>, lease: Duration) {
        self.cluster = Some(ClusterCore::new(node, lease, Instant::now()));
    }

    pub(crate) fn take_effects(&mut self) -> Option<&mut VecDeque<Effect>> {
        self.cluster.as_mut().map(|c| &mut c.effects)
    }

    pub(crate) fn effect(&mut self, effect: Effect) {
        if let Some(cluster) = &mut self.cluster {
            cluster.effects.push_back(effect);
        }
    }

    pub(crate) fn node_name(&self) -> Arc<str> {
        self.cluster
            .as_ref()
            .map_or_else(|| Arc::from(""), |c| Arc::clone(&c.node))
    }

    /// Whether any executor of the cluster serves `name` now.
    pub(crate) fn cluster_serves(&self, name: &str) -> bool {
        self.registry.serves(name)
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| c.remote_names.contains_key(name))
    }

    /// A command in cluster mode; `Some` when the local handling applies.
    pub(crate) fn cluster_command(&mut self, command: Command, now: Instant) -> Option<Command> {
        match command {
            Command::Submit { spec, reply } => {
                self.cluster_submit(spec, reply);
                None
            }
            Command::Cancel {
                task_id,
                principal,
                reply,
            } => {
                if !self.tasks.contains_key(&task_id) {
                    return self.park(
                        task_id,
                        Command::Cancel {
                            task_id,
                            principal,
                            reply,
                        },
                    );
                }
                let Some(task) = self
                    .tasks
                    .get(&task_id)
                    .filter(|t| t.visible_to(&principal))
                else {
                    self.refuse(reply, Refusal::NotFound);
                    return None;
                };
                let _ = task;
                self.cluster_cancel(task_id, reply, CancelReason::Client, now);
                None
            }
            Command::Answer {
                task_id,
                principal,
                question_id,
                value,
                reply,
            } => {
                if !self.tasks.contains_key(&task_id) {
                    return self.park(
                        task_id,
                        Command::Answer {
                            task_id,
                            principal,
                            question_id,
                            value,
                            reply,
                        },
                    );
                }
                self.cluster_answer(task_id, &principal, question_id, value, reply, now);
                None
            }
            Command::Subscribe { task_id, .. } | Command::Snapshot { task_id, .. }
                if !self.tasks.contains_key(&task_id) =>
            {
                self.park(task_id, command)
            }
            Command::Disconnected { mailbox, tasks } => {
                self.watch.remove(mailbox);
                for id in tasks {
                    let Some(task) = self.tasks.get_mut(&id) else {
                        continue;
                    };
                    task.subscribers.retain(|s| s.mailbox.id() != mailbox);
                    if task.cancel_with == Some(mailbox) && !task.state.is_terminal() {
                        let (tx, _) = oneshot::channel();
                        self.cluster_cancel(id, Reply::Direct(tx), CancelReason::Disconnect, now);
                    }
                }
                None
            }
            other => Some(other),
        }
    }

    /// Holds a request about a task this node does not know until the
    /// task's history is read; `not_found` past the bounds.
    fn park(&mut self, task_id: TaskId, command: Command) -> Option<Command> {
        let cluster = self.cluster.as_mut()?;
        let lookups = cluster.parked.len() + cluster.parked_claims.len();
        let waiting = cluster.parked.entry(task_id).or_default();
        if waiting.len() >= MAX_PARKED_PER_TASK || (waiting.is_empty() && lookups >= MAX_LOOKUPS) {
            // Handled as unknown by the local path: not_found.
            if waiting.is_empty() {
                cluster.parked.remove(&task_id);
            }
            return Some(command);
        }
        let first = waiting.is_empty() && !cluster.parked_claims.contains_key(&task_id);
        waiting.push(command);
        if first {
            cluster.effects.push_back(Effect::Lookup { task_id });
        }
        None
    }

    fn cluster_submit(&mut self, spec: TaskSpec, reply: Reply<Submitted>) {
        let Some(cluster) = &self.cluster else { return };
        if self.drain.is_some() {
            return self.reject(reply, Refusal::ShuttingDown);
        }
        let retry_after = self.retry_after();
        if cluster.down.is_some() {
            return self.reject(reply, Refusal::Unavailable { retry_after });
        }
        if cluster.submits.len() >= MAX_SUBMITS_IN_FLIGHT {
            let capacity = self.limits.queue_capacity;
            return self.reject(
                reply,
                Refusal::QueueFull {
                    capacity,
                    retry_after,
                },
            );
        }
        // The per-client share, against this node's view of the queue.
        let size = spec.input.get().len() as u64;
        let client_bytes = self
            .client_bytes
            .get(&spec.owner.client)
            .copied()
            .unwrap_or(0);
        if client_bytes + size > self.limits.max_queued_input_bytes_per_client {
            let max = self.limits.max_queued_input_bytes_per_client;
            return self.reject(reply, Refusal::ClientShareFull { max, retry_after });
        }
        if self.queued_bytes + size > self.limits.max_queued_input_bytes {
            let max = self.limits.max_queued_input_bytes;
            return self.reject(reply, Refusal::QueuedBytesFull { max, retry_after });
        }
        let position = {
            let cohort = self.registry.cohort(&spec.name);
            self.queue
                .count_through(cohort.iter(), spec.options.priority)
        };
        let info = AcceptedInfo::of(&spec);
        let accepted = Arc::new(EventRecord::new(
            spec.id,
            1,
            TaskEvent::Accepted { position },
        ));
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.submits.insert(
            spec.id,
            PendingSubmit {
                reply,
                delivery: spec.options.delivery,
                cancel_on_disconnect: spec.options.cancel_on_disconnect,
            },
        );
        cluster.effects.push_back(Effect::Submit {
            spec,
            accepted,
            info,
        });
    }

    /// The link's answer to a submit.
    pub(super) fn submit_done(&mut self, id: TaskId, result: Result<SubmitOk, Refusal>) {
        let Some(pending) = self.cluster.as_mut().and_then(|c| c.submits.remove(&id)) else {
            return;
        };
        let ok = match result {
            Ok(ok) => ok,
            Err(refusal) => return self.reject(pending.reply, refusal),
        };
        for applied in ok.records {
            self.apply(applied);
        }
        let task_id = ok.task_id;
        if !self.tasks.contains_key(&task_id) {
            // The history vanished between the publish and now.
            let retry_after = self.retry_after();
            return self.reject(pending.reply, Refusal::Unavailable { retry_after });
        }
        if ok.duplicate {
            return self.duplicate(task_id, pending.reply);
        }
        self.attach_submitter(task_id, pending);
    }

    /// The submitter of a queued task gets its `accepted` (with its `ref`),
    /// whatever happened since, and follows the task.
    fn attach_submitter(&mut self, id: TaskId, pending: PendingSubmit) {
        let metrics = self.metrics.clone();
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
        task.metrics.submitted.inc();
        match pending.reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Ok(Submitted {
                    task_id: id,
                    position,
                    duplicate: false,
                }));
            }
            Reply::Mailbox { mailbox, reference } => {
                let copy = super::Outbound::Event {
                    record: first,
                    reference,
                    duplicate: false,
                    stream: false,
                };
                if !mailbox.deliver(copy, &metrics) {
                    return;
                }
                let stream = pending.delivery == Delivery::Stream;
                for record in task.log.replay(1) {
                    let files = matches!(&record.event, TaskEvent::Completed { files, .. } if !files.is_empty());
                    let message = super::Outbound::Event {
                        record,
                        reference: None,
                        duplicate: false,
                        stream: stream && files,
                    };
                    if !mailbox.deliver(message, &metrics) {
                        return;
                    }
                }
                if pending.cancel_on_disconnect {
                    task.cancel_with = Some(mailbox.id());
                }
                if !task.state.is_terminal() {
                    task.subscribers
                        .push(super::core::Subscriber { mailbox, stream });
                }
            }
        }
    }

    /// A cancel in cluster mode: by whoever may write the task's next event.
    pub(super) fn cluster_cancel(
        &mut self,
        id: TaskId,
        reply: Reply<()>,
        reason: CancelReason,
        now: Instant,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return self.refuse(reply, Refusal::NotFound);
        };
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        if task.state.is_terminal() {
            return self.refuse(reply, Refusal::AlreadyFinished);
        }
        if cl.ended {
            // A terminal event is on its way: the cancel waits for it.
            task.cancel_waiters.push(reply);
            return;
        }
        if cl.owned {
            return match task.state {
                TaskState::Queued => self.cancel_queued(id, reason, copies_of(reply)),
                _ => self.stop_running(
                    id,
                    crate::exec::StopReason::Cancelled(reason),
                    Some(reply),
                    now,
                ),
            };
        }
        match task.state {
            TaskState::Queued => {
                // Answered when the `cancelled` comes back from the stream
                // (or tried again if another node started it first).
                task.cancel_reason = Some(reason);
                task.cancel_waiters.push(reply);
                self.cancel_queued(id, reason, Vec::new());
            }
            _ => {
                let Some(node) = cl.node.clone() else {
                    cl.retry_cancel.push((reply, reason));
                    return;
                };
                let Some(cluster) = &mut self.cluster else {
                    return;
                };
                let forward = cluster.next_forward;
                cluster.next_forward += 1;
                cluster
                    .forwards
                    .insert(forward, PendingForward::Cancel(id, reply, reason));
                cluster.effects.push_back(Effect::Forward {
                    id: forward,
                    node,
                    task_id: id,
                    request: Forwarded::Cancel(reason),
                });
            }
        }
    }

    fn cluster_answer(
        &mut self,
        id: TaskId,
        principal: &Principal,
        question_id: String,
        value: serde_json::Value,
        reply: Reply<()>,
        now: Instant,
    ) {
        let owned = self
            .tasks
            .get(&id)
            .and_then(|t| t.cluster.as_ref())
            .is_some_and(|c| c.owned);
        if owned {
            return self.answer(id, principal, &question_id, value, reply, now);
        }
        let Some(task) = self.tasks.get(&id).filter(|t| t.visible_to(principal)) else {
            return self.refuse(reply, Refusal::NotFound);
        };
        let checked = match task
            .question
            .as_ref()
            .filter(|q| q.spec.question_id == question_id)
        {
            Some(open) => super::questions::fits(open, &value).map_err(Refusal::InvalidAnswer),
            None if task.answered.iter().any(|q| *q == question_id) => {
                Err(Refusal::AlreadyAnswered)
            }
            None => Err(Refusal::NoSuchQuestion),
        };
        if let Err(refusal) = checked {
            return self.refuse(reply, refusal);
        }
        let Some(node) = task.cluster.as_ref().and_then(|c| c.node.clone()) else {
            return self.refuse(reply, Refusal::NoSuchQuestion);
        };
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let forward = cluster.next_forward;
        cluster.next_forward += 1;
        cluster.forwards.insert(
            forward,
            PendingForward::Answer(id, question_id.clone(), reply),
        );
        cluster.effects.push_back(Effect::Forward {
            id: forward,
            node,
            task_id: id,
            request: Forwarded::Answer { question_id, value },
        });
    }

    /// Another node asks about a task this node runs.
    pub(super) fn forwarded(
        &mut self,
        id: TaskId,
        request: Forwarded,
        reply: oneshot::Sender<Result<(), Refusal>>,
        now: Instant,
    ) {
        let owned = self
            .tasks
            .get(&id)
            .and_then(|t| t.cluster.as_ref())
            .is_some_and(|c| c.owned);
        if !owned {
            let _ = reply.send(Err(Refusal::NotOwner));
            return;
        }
        let principal = cluster_principal();
        match request {
            Forwarded::Cancel(reason) => {
                if let Some(task) = self.tasks.get_mut(&id)
                    && task.cancel_reason.is_none()
                {
                    task.cancel_reason = Some(reason);
                }
                let state = self.tasks.get(&id).map(|t| t.state);
                match state {
                    Some(TaskState::Running | TaskState::Waiting) => {
                        self.stop_running(
                            id,
                            crate::exec::StopReason::Cancelled(reason),
                            None,
                            now,
                        );
                        let _ = reply.send(Ok(()));
                    }
                    _ => {
                        let _ = reply.send(Err(Refusal::NotOwner));
                    }
                }
            }
            Forwarded::Answer { question_id, value } => {
                self.answer(
                    id,
                    &principal,
                    &question_id,
                    value,
                    Reply::Direct(reply),
                    now,
                );
            }
        }
    }

    pub(super) fn forward_done(&mut self, forward: u64, result: Result<(), Refusal>) {
        let Some(pending) = self
            .cluster
            .as_mut()
            .and_then(|c| c.forwards.remove(&forward))
        else {
            return;
        };
        match pending {
            PendingForward::Cancel(id, reply, reason) => match result {
                Ok(()) => {
                    if let Some(task) = self.tasks.get_mut(&id) {
                        task.cancel_waiters.push(reply);
                    }
                }
                Err(Refusal::NotOwner | Refusal::Unavailable { .. }) => {
                    // Moved or unreachable: try again when its history moves.
                    if let Some(cl) = self
                        .tasks
                        .get_mut(&id)
                        .and_then(|t| t.cluster.as_deref_mut())
                    {
                        cl.retry_cancel.push((reply, reason));
                    }
                }
                Err(refusal) => self.refuse(reply, refusal),
            },
            PendingForward::Answer(id, question_id, reply) => match result {
                Ok(()) => {
                    if let Some(cl) = self
                        .tasks
                        .get_mut(&id)
                        .and_then(|t| t.cluster.as_deref_mut())
                    {
                        cl.answerers.push((question_id, reply));
                    }
                }
                Err(Refusal::NotOwner) => {
                    let retry_after = self.retry_after();
                    self.refuse(reply, Refusal::Unavailable { retry_after });
                }
                Err(refusal) => self.refuse(reply, refusal),
            },
        }
    }

    /// A forgotten task's history goes too, if this node ended it.
    pub(crate) fn cluster_forget(&mut self, task: &Task) {
        let Some(cl) = &task.cluster else { return };
        if !cl.wrote_terminal {
            return;
        }
        let idempotency = task.idempotency_key.as_ref().map(|key| {
            (
                task.owner.client.clone(),
                Arc::clone(&task.name),
                key.clone(),
            )
        });
        self.effect(Effect::Forget {
            task_id: task.id,
            idempotency,
        });
    }

    /// Whether the drain may end: nothing of this node's runs or is on its
    /// way to the stream.
    pub(crate) fn cluster_idle(&self) -> bool {
        let Some(cluster) = &self.cluster else {
            return true;
        };
        cluster.submits.is_empty()
            && !self.tasks.values().any(|t| {
                t.cluster
                    .as_ref()
                    .is_some_and(|c| c.in_flight || !c.pending.is_empty())
            })
    }

    /// This node's registry entry, when it changed (at most every
    /// [`ENTRY_EVERY`]).
    pub(crate) fn entry_tick(&mut self, now: Instant) {
        let running = self.running;
        if let Some(cluster) = &mut self.cluster
            && cluster.entry_running != running
        {
            cluster.entry_running = running;
            cluster.entry_dirty = true;
        }
        if self
            .cluster
            .as_ref()
            .is_none_or(|c| !c.entry_dirty || c.entry_due.is_some_and(|at| at > now))
        {
            return;
        }
        let workers = self.local_workers();
        let tasks: Vec<TaskDecl> = self
            .directory
            .snapshot()
            .tasks
            .values()
            .filter(|offer| {
                offer.source != crate::directory::Source::Builtin
                    && self.registry.serves(&offer.name)
            })
            .map(|offer| TaskDecl {
                name: Arc::clone(&offer.name),
                description: offer.description.clone(),
                input_schema: Some(offer.input_schema.clone()),
                retry_safe: offer.retry_safe,
                timeout: offer.timeout,
            })
            .collect();
        let draining = self.drain.is_some();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if !cluster.entry_dirty {
            return;
        }
        if cluster.entry_due.is_some_and(|at| at > now) {
            return;
        }
        cluster.entry_dirty = false;
        cluster.entry_due = Some(now + ENTRY_EVERY);
        cluster.effects.push_back(Effect::Executors(NodeEntry {
            draining,
            workers,
            tasks,
        }));
    }

    /// The next instant the cluster side has something due.
    pub(crate) fn cluster_wake(&self) -> Option<Instant> {
        let cluster = self.cluster.as_ref()?;
        let entry = cluster.entry_dirty.then_some(cluster.entry_due).flatten();
        let retry = if self.queue.is_empty() {
            None
        } else {
            cluster
                .empty_at
                .values()
                .map(|(_, at)| *at + EMPTY_RETRY)
                .min()
        };
        [Some(cluster.probe_at), entry, retry]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn on_cluster(&mut self, input: Input, now: Instant) {
        self.now = now;
        match input {
            Input::Link(down) => {
                if let Some(cluster) = &mut self.cluster {
                    if down.is_none() {
                        cluster.probe_at = now;
                        cluster.entry_dirty = true;
                    }
                    cluster.down = down;
                }
            }
            Input::Event(applied) => self.apply(applied),
            Input::SubmitDone { task_id, result } => self.submit_done(task_id, result),
            Input::Committed {
                task_id,
                seq,
                stream_seq,
            } => self.committed(task_id, seq, stream_seq, now),
            Input::Conflict { task_id, seq } => {
                tracing::info!(task_id = %task_id, seq, "another node wrote to the task first; this node lets it go");
                self.abandon(task_id, now);
            }
            Input::Claimed { executor, n, tasks } => self.claimed(executor, n, tasks, now),
            Input::Loaded { task_id, records } => self.loaded(task_id, records, now),
            Input::Forwarded {
                task_id,
                request,
                reply,
            } => self.forwarded(task_id, request, reply, now),
            Input::ForwardDone { id, result } => self.forward_done(id, result),
            Input::LeaseLost { task_id } => {
                tracing::warn!(task_id = %task_id, "this node lost its hold on a running task; it stops it");
                self.abandon(task_id, now);
            }
            Input::Nodes(nodes) => self.nodes_changed(nodes),
        }
    }
}

fn copies_of(reply: Reply<()>) -> Vec<(Mailbox, Option<Box<str>>)> {
    match reply {
        Reply::Mailbox { mailbox, reference } => vec![(mailbox, reference)],
        Reply::Direct(tx) => {
            let _ = tx.send(Ok(()));
            Vec::new()
        }
    }
}
