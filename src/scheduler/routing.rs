//! Cluster mode: requests about tasks on any node (submits through the
//! link, cancels and answers written here or sent to the node running the
//! task, requests about tasks not seen yet parked until they are read),
//! forgetting, the drain, this node's registry entry, and the dispatch of
//! the link's inputs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::cluster::{
    AcceptedInfo, ClaimedTask, ClusterCore, EMPTY_RETRY, ENTRY_EVERY, Effect, Forwarded, Input,
    MAX_FORWARDS, MAX_LOOKUPS, MAX_PARKED_PER_TASK, MAX_SUBMITS_IN_FLIGHT, NodeEntry,
    PendingForward, PendingSubmit, SubmitOk,
};
use super::core::{Core, Task};
use super::{Command, Mailbox, Refusal, Reply, Submitted};
use crate::auth::Principal;
use crate::exec::{ExecutorId, TaskDecl};
use crate::task::{
    CancelReason, ClientId, Delivery, EventRecord, TaskEvent, TaskId, TaskSpec, TaskState,
};

/// How long a forwarded cancel that found its node busy or its task moving
/// waits before it is sent again (unless the task's history moves first).
const CANCEL_RETRY: Duration = Duration::from_millis(500);
/// The answer to a cancel or an answer for another node while
/// [`MAX_FORWARDS`] are on their way.
const FORWARDS_FULL: Refusal = Refusal::Unavailable {
    retry_after: Duration::from_secs(1),
};

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
        if let Some(task_id) = command.about_task()
            && !self.tasks.contains_key(&task_id)
        {
            return self.park(task_id, command);
        }
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
                if !self
                    .tasks
                    .get(&task_id)
                    .is_some_and(|t| t.visible_to(&principal))
                {
                    self.refuse(reply, Refusal::NotFound);
                    return None;
                }
                if let Some(refusal) = self.too_many_cancels(task_id) {
                    self.refuse(reply, refusal);
                    return None;
                }
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
                self.cluster_answer(task_id, &principal, question_id, value, reply, now);
                None
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
        let claim = self.claim_at_submit(&spec.name);
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.submits.insert(
            spec.id,
            PendingSubmit {
                reply,
                position,
                delivery: spec.options.delivery,
                cancel_on_disconnect: spec.options.cancel_on_disconnect,
            },
        );
        cluster.effects.push_back(Effect::Submit {
            spec,
            accepted,
            info,
            claim,
        });
    }

    /// The link's answer to a submit, and what the submit's own fetch
    /// brought (`claimed`: the executor it was for, and the tasks).
    pub(super) fn submit_done(
        &mut self,
        id: TaskId,
        result: Result<SubmitOk, Refusal>,
        claimed: Option<(ExecutorId, Option<Vec<ClaimedTask>>)>,
        now: Instant,
    ) {
        let claimed_here = matches!(&result, Ok(ok) if ok.claimed_here);
        let pending = self.cluster.as_mut().and_then(|c| c.submits.remove(&id));
        let (executor, mut tasks) = match claimed {
            Some((executor, Some(tasks))) => (Some(executor), tasks),
            Some((executor, None)) => {
                self.unpromise(executor, 1);
                (None, Vec::new())
            }
            None => (None, Vec::new()),
        };
        let mine = tasks.iter().position(|t| t.spec.id == id);
        match (pending, executor, mine) {
            (Some(pending), Some(executor), Some(mine)) if claimed_here => {
                // Its `accepted` is this node's to write, with its
                // `started`: the submitter is answered when it is applied.
                let claimed = tasks.swap_remove(mine);
                return self.adopt_submitted(claimed, executor, pending, now);
            }
            (Some(pending), ..) => self.submit_answered(result, pending),
            (None, ..) => {}
        }
        // The history first: the fetched task is then known here.
        if let Some(executor) = executor {
            self.claimed(vec![(executor, 1)], tasks, now);
        }
    }

    fn submit_answered(&mut self, result: Result<SubmitOk, Refusal>, pending: PendingSubmit) {
        let ok = match result {
            Ok(ok) => ok,
            Err(refusal) => return self.reject(pending.reply, refusal),
        };
        if ok.claimed_here {
            // Not for want of the claim: the link only says so with it.
            let retry_after = self.retry_after();
            return self.reject(pending.reply, Refusal::Unavailable { retry_after });
        }
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
    pub(super) fn attach_submitter(&mut self, id: TaskId, pending: PendingSubmit) {
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
                if !task.log_ended() {
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
                let pending = PendingForward::Cancel(id, reply, reason);
                self.send_forward(node, id, pending, Forwarded::Cancel(reason));
            }
        }
    }

    /// Sends a cancel or an answer to the node running the task; its reply
    /// waits in `pending` for that node's answer, or is refused at once
    /// while [`MAX_FORWARDS`] are on their way.
    fn send_forward(
        &mut self,
        node: Arc<str>,
        id: TaskId,
        pending: PendingForward,
        request: Forwarded,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.forwards.len() >= MAX_FORWARDS {
            let (PendingForward::Cancel(_, reply, _) | PendingForward::Answer(_, _, reply)) =
                pending;
            return self.refuse(reply, FORWARDS_FULL);
        }
        let forward = cluster.next_forward;
        cluster.next_forward += 1;
        cluster.forwards.insert(forward, pending);
        cluster.effects.push_back(Effect::Forward {
            id: forward,
            node,
            task_id: id,
            request,
        });
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
            None if task.answered.contains(&question_id) => Err(Refusal::AlreadyAnswered),
            None => Err(Refusal::NoSuchQuestion),
        };
        if let Err(refusal) = checked {
            return self.refuse(reply, refusal);
        }
        let Some(node) = task.cluster.as_ref().and_then(|c| c.node.clone()) else {
            return self.refuse(reply, Refusal::NoSuchQuestion);
        };
        let pending = PendingForward::Answer(id, question_id.clone(), reply);
        self.send_forward(node, id, pending, Forwarded::Answer { question_id, value });
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
                    // The end may have come back from the stream before
                    // this answer did.
                    let ended = self
                        .tasks
                        .get(&id)
                        .filter(|t| t.state.is_terminal())
                        .and_then(|t| t.log.last().cloned());
                    match ended {
                        Some(record) => self.answer_with(reply, record),
                        None => {
                            if let Some(task) = self.tasks.get_mut(&id) {
                                task.cancel_waiters.push(reply);
                            }
                        }
                    }
                }
                Err(refusal @ (Refusal::NotOwner | Refusal::Unavailable { .. })) => {
                    // Moved or unreachable: try again when its history
                    // moves, or after a while if it does not.
                    let Some(cl) = self.cluster_task(id) else {
                        return;
                    };
                    let first = cl.retry_cancel.is_empty();
                    cl.retry_cancel.push((reply, reason));
                    if first {
                        let wait = match refusal {
                            Refusal::Unavailable { retry_after } => retry_after,
                            _ => CANCEL_RETRY,
                        };
                        let at = self.now + wait.clamp(CANCEL_RETRY / 5, CANCEL_RETRY * 10);
                        self.set_timer(id, at, super::core::Timer::RetryCancel);
                    }
                }
                Err(refusal) => self.refuse(reply, refusal),
            },
            PendingForward::Answer(id, question_id, reply) => match result {
                Ok(()) => {
                    let answered = self.tasks.get(&id).and_then(|t| {
                        t.log
                            .replay(0)
                            .into_iter()
                            .rev()
                            .find(|r| matches!(&r.event, TaskEvent::Answered(a) if a.question_id == question_id))
                    });
                    if let Some(record) = answered {
                        return self.answer_with(reply, record);
                    }
                    if let Some(cl) = self.cluster_task(id) {
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

    /// Answers a request with the event that settled it (the requester's
    /// copy with its `ref`), or `already_finished` if another end came.
    fn answer_with(&self, reply: Reply<()>, record: Arc<EventRecord>) {
        let fits = matches!(
            record.event,
            TaskEvent::Cancelled(_) | TaskEvent::Answered(_)
        );
        if !fits {
            return self.refuse(reply, Refusal::AlreadyFinished);
        }
        match reply {
            Reply::Direct(tx) => {
                let _ = tx.send(Ok(()));
            }
            Reply::Mailbox { mailbox, reference } => {
                mailbox.deliver(
                    super::Outbound::Event {
                        record,
                        reference,
                        duplicate: false,
                        stream: false,
                    },
                    &self.metrics,
                );
            }
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
                    .is_some_and(|c| c.in_flight() || !c.pending.is_empty())
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
        // Only retries still ahead: `cluster_dispatch` drops the others
        // (a wake in the past would spin the core).
        let retry = if self.queue.is_empty() {
            None
        } else {
            cluster
                .empty_at
                .values()
                .map(|(_, at)| *at + EMPTY_RETRY)
                .filter(|at| *at > self.now)
                .min()
        };
        // No claims while NATS is away or the node drains: no probe either.
        let probe = (cluster.down.is_none() && self.drain.is_none()).then_some(cluster.probe_at);
        [probe, entry, retry].into_iter().flatten().min()
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
            Input::SubmitDone {
                task_id,
                result,
                claimed,
            } => self.submit_done(task_id, result, claimed, now),
            Input::Committed {
                task_id,
                seq,
                stream_seq,
            } => self.committed(task_id, seq, stream_seq, now),
            Input::Conflict { task_id, seq } => {
                // Only a refusal of the proposal in flight counts; an older
                // one is stale (the feed already showed who wrote that event:
                // this node let the attempt go then, or decided again from
                // the history since and now proposes a newer one).
                let current = self
                    .tasks
                    .get(&task_id)
                    .and_then(|t| t.cluster.as_deref())
                    .is_some_and(|cl| cl.flying.first().is_some_and(|r| r.seq == seq));
                if !current {
                    tracing::debug!(task_id = %task_id, seq, "a stale refusal of an event is ignored");
                    return;
                }
                tracing::info!(task_id = %task_id, seq, "another node wrote to the task first; this node lets it go");
                self.abandon(task_id, now);
            }
            Input::Claimed { executors, tasks } => self.claimed(executors, tasks, now),
            Input::Loaded { task_id, records } => self.loaded(task_id, records, now),
            Input::Reclaimed {
                executor,
                claimed,
                records,
            } => {
                for applied in records {
                    self.apply(applied);
                }
                self.decide(claimed, executor, now);
            }
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
