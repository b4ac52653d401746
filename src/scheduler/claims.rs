//! Cluster mode: taking tasks from the cluster's queue for this node's
//! executors, and writing the events of the tasks it runs.
//!
//! An executor with a free slot asks for work from the lanes (task name and
//! priority) its names have queued in the mirror, highest priority and
//! oldest head first, so strict priority and the absence of head-of-line
//! blocking across names hold as in local mode. A claimed task is decided
//! against its history: a finished one is dropped from the queue, a queued
//! one starts here, one whose attempt was running on a node that stopped
//! renewing its lease is re-queued (retry-safe, attempts left) or fails
//! with `worker_lost`. An attempt runs only once its `started` is in the
//! stream: the stream's fence, not a local decision, makes it this node's.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::cluster::{AcceptedInfo, ClaimedTask, Effect, PendingSubmit, Settle};
use super::core::Core;
use super::queue::Next;
use crate::exec::{ExecutorId, Order, StopReason};
use crate::task::{EventRecord, FailureKind, Priority, TaskEvent, TaskFailure, TaskId, TaskState};

impl Core {
    /// Claims work for every executor with free slots not yet promised.
    ///
    /// Executors that serve the same names (the built-in pool's one-slot
    /// executors, or one worker's connections) claim as one group, with
    /// one fetch for all their free slots, and a group claims again only
    /// once its claim in flight has come back: slots that free up in the
    /// meantime wait for it and go in the next fetch together. Under load
    /// that turns one fetch per task into one fetch per round trip.
    pub(crate) fn cluster_dispatch(&mut self, now: Instant) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if self.drain.is_some() || cluster.down.is_some() {
            return;
        }
        let version = cluster.queue_version;
        // A retry whose time came, or made for an older queue, no longer
        // holds its executor back; kept, it would wake the core at once.
        cluster
            .empty_at
            .retain(|_, (v, at)| *v == version && now < *at + super::cluster::EMPTY_RETRY);
        let cluster = &*cluster;
        let probe = cluster.probe_at <= now;
        // No more asked for than the queue this node sees holds: with many
        // one-slot executors, one queued task is one fetch, not one per
        // executor (the others would come back empty and ask again).
        let promised_total: usize = cluster.claiming.values().sum();
        let mut budget = self.queue.len().saturating_sub(promised_total);
        // Per group (the names its executors serve): whether a claim of it
        // is in flight, and its members with free slots (the ones whose
        // last claim came back empty apart: they only probe).
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (id, exec) in self.registry.iter() {
            let group = match groups
                .iter_mut()
                .position(|g| g.tasks == exec.tasks.as_slice())
            {
                Some(at) => &mut groups[at],
                None => {
                    groups.push(Group {
                        tasks: exec.tasks.as_slice(),
                        busy: false,
                        ready: Vec::new(),
                        probing: Vec::new(),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            let promised = cluster.claiming.get(&id).copied().unwrap_or(0);
            group.busy |= promised > 0;
            let want = exec.free().saturating_sub(promised);
            if want == 0 {
                continue;
            }
            if cluster.empty_at.contains_key(&id) {
                group.probing.push((id, want));
            } else {
                group.ready.push((id, want));
            }
        }
        let mut claims = Vec::new();
        for group in groups {
            if group.busy {
                continue;
            }
            let lanes = self.queue.lanes_for(group.tasks.iter());
            if !lanes.is_empty() && !group.ready.is_empty() {
                if budget == 0 {
                    continue;
                }
                let mut executors = Vec::new();
                let mut n = 0;
                for (id, want) in group.ready {
                    let take = want.min(budget - n);
                    if take == 0 {
                        break;
                    }
                    executors.push((id, take));
                    n += take;
                }
                budget -= n;
                claims.push((executors, lanes, n));
            } else if probe {
                // Nothing queued here for them (or it was just found gone):
                // every lane of their names, in case a lost node's task came
                // back to the queue (no event announces that).
                let mut executors = group.ready;
                executors.extend(group.probing);
                if executors.is_empty() {
                    continue;
                }
                let lanes = group
                    .tasks
                    .iter()
                    .flat_map(|name| {
                        [Priority::High, Priority::Normal, Priority::Low]
                            .map(|p| (Arc::clone(name), p))
                    })
                    .collect();
                let n = executors.iter().map(|(_, want)| want).sum();
                claims.push((executors, lanes, n));
            }
        }
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if probe {
            cluster.probe_at = now + cluster.lease / 2;
        }
        for (executors, lanes, n) in claims {
            for (executor, take) in &executors {
                *cluster.claiming.entry(*executor).or_default() += take;
            }
            cluster.effects.push_back(Effect::Claim {
                executors,
                lanes,
                n,
            });
        }
    }

    /// An executor with a slot free for a task being submitted here, whose
    /// group has no claim in flight: the submit's fetch is promised its
    /// slot. Under load every group has a claim out, and submits leave the
    /// claiming to `cluster_dispatch`, batched.
    pub(super) fn claim_at_submit(&mut self, name: &Arc<str>) -> Option<ExecutorId> {
        let cluster = self.cluster.as_ref()?;
        if self.drain.is_some() || cluster.down.is_some() {
            return None;
        }
        let promised = |id: &ExecutorId| cluster.claiming.get(id).copied().unwrap_or(0);
        let (id, exec) = self
            .registry
            .iter()
            .find(|(id, e)| e.tasks.contains(name) && e.free() > promised(id))?;
        let busy = self
            .registry
            .iter()
            .any(|(other, e)| e.tasks == exec.tasks && promised(&other) > 0);
        if busy {
            return None;
        }
        let cluster = self.cluster.as_mut()?;
        *cluster.claiming.entry(id).or_default() += 1;
        Some(id)
    }

    /// A promised slot whose claim was not made.
    pub(super) fn unpromise(&mut self, executor: ExecutorId, n: usize) {
        if let Some(promised) = self
            .cluster
            .as_mut()
            .and_then(|c| c.claiming.get_mut(&executor))
        {
            *promised = promised.saturating_sub(n);
        }
    }

    /// The link's answer to a claim: each task goes to the next free slot
    /// of the executors that asked.
    pub(super) fn claimed(
        &mut self,
        executors: Vec<(ExecutorId, usize)>,
        tasks: Vec<ClaimedTask>,
        now: Instant,
    ) {
        for (executor, n) in &executors {
            self.unpromise(*executor, *n);
        }
        if let Some(cluster) = &mut self.cluster {
            for (executor, _) in &executors {
                if tasks.is_empty() {
                    cluster
                        .empty_at
                        .insert(*executor, (cluster.queue_version, now));
                } else {
                    cluster.empty_at.remove(executor);
                }
            }
        }
        let mut slots = executors
            .iter()
            .flat_map(|(executor, n)| std::iter::repeat_n(*executor, *n));
        for claimed in tasks {
            // More tasks than slots asked for cannot come from the link;
            // should they, the first executor's fallback finds a free one.
            let Some(executor) = slots.next().or_else(|| executors.first().map(|e| e.0)) else {
                break;
            };
            self.decide(claimed, executor, now);
        }
    }

    /// What becomes of one claimed task, against its history.
    pub(super) fn decide(&mut self, claimed: ClaimedTask, executor: ExecutorId, now: Instant) {
        let id = claimed.spec.id;
        let draining = self.drain.is_some();
        let Some(task) = self.tasks.get(&id) else {
            return self.park_claim(claimed, executor);
        };
        if task.state.is_terminal() || task.cluster.as_ref().is_some_and(|c| c.ended) {
            return self.effect(Effect::Settle {
                task_id: id,
                settle: Settle::Drop,
            });
        }
        if draining {
            return self.give_back(id);
        }
        match task.state {
            TaskState::Queued => self.own(claimed, executor, now),
            TaskState::Running | TaskState::Waiting => {
                // Its queue message came back: the node running it stopped
                // renewing its lease (it died, or lost NATS for too long).
                let attempt = task.attempt;
                let worker = task.worker.clone().unwrap_or_else(|| Arc::from("?"));
                let again = task.retry_safe && attempt < self.limits.max_attempts;
                let mut failure = TaskFailure::new(
                    FailureKind::WorkerLost,
                    format!(
                        "node of worker {worker} stopped renewing its lease during attempt {attempt}"
                    ),
                );
                failure.details = Some(serde_json::json!({
                    "worker": &*worker, "attempt": attempt, "cause": "node_lost",
                }));
                tracing::warn!(task_id = %id, task = %task.name, attempt, again, "a task's node was lost");
                if again {
                    self.emit(id, TaskEvent::Requeued { attempt, failure }, Vec::new());
                } else {
                    task.metrics.failed.inc();
                    self.emit(id, TaskEvent::Failed(failure), Vec::new());
                }
            }
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled => {}
        }
    }

    /// A claimed task goes back to the queue at once, for any node.
    fn give_back(&mut self, id: TaskId) {
        self.effect(Effect::Settle {
            task_id: id,
            settle: Settle::Retry(std::time::Duration::ZERO),
        });
    }

    /// Takes a queued task for `executor` (or another free one serving it).
    fn own(&mut self, claimed: ClaimedTask, executor: ExecutorId, now: Instant) {
        let ClaimedTask { spec, .. } = claimed;
        let id = spec.id;
        let executor = if self
            .registry
            .get(executor)
            .is_some_and(|e| e.free() > 0 && e.tasks.contains(&spec.name))
        {
            Some(executor)
        } else {
            self.registry.with_free_slots().into_iter().find(|e| {
                self.registry
                    .get(*e)
                    .is_some_and(|x| x.tasks.contains(&spec.name))
            })
        };
        let Some(executor) = executor else {
            return self.give_back(id);
        };
        self.unqueue(id);
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.input = Some(spec.input);
        task.inputs = spec.inputs;
        if let Some(cl) = task.cluster.as_deref_mut() {
            cl.owned = true;
        }
        self.start(Next { id, group: None }, executor, now);
    }

    /// A claimed task whose history is empty (its submitter died between
    /// the queue and the `accepted`): this node writes `accepted` and runs it.
    pub(super) fn adopt(&mut self, claimed: ClaimedTask, executor: ExecutorId, now: Instant) {
        self.adopt_as(claimed, executor, 0, None, now);
    }

    /// A task submitted here that the submit's own fetch brought back
    /// before its `accepted` was written: this node writes it and runs the
    /// task, like an adopted one; its submitter is answered when that
    /// `accepted` is applied (`mirror.rs`).
    pub(super) fn adopt_submitted(
        &mut self,
        claimed: ClaimedTask,
        executor: ExecutorId,
        pending: PendingSubmit,
        now: Instant,
    ) {
        self.unpromise(executor, 1);
        if let Some(cluster) = &mut self.cluster {
            cluster.empty_at.remove(&executor);
        }
        let position = pending.position;
        self.adopt_as(claimed, executor, position, Some(pending), now);
    }

    /// `accepted` and, when the task starts at once, `started` go to the
    /// stream in one message: one round trip, and one fence, for both.
    fn adopt_as(
        &mut self,
        claimed: ClaimedTask,
        executor: ExecutorId,
        position: u64,
        submitter: Option<PendingSubmit>,
        now: Instant,
    ) {
        let info = AcceptedInfo::of(&claimed.spec);
        let id = claimed.spec.id;
        let at = SystemTime::now();
        self.mirror_new(id, info, at);
        if let Some(cluster) = &mut self.cluster {
            cluster.adopted.insert(id);
        }
        if let Some(cl) = self.cluster_task(id) {
            // `accepted` waits for what follows it.
            cl.holding = true;
            cl.submitter = submitter.map(Box::new);
        }
        self.emit(id, TaskEvent::Accepted { position }, Vec::new());
        if let Some(task) = self.tasks.get_mut(&id) {
            task.state = TaskState::Queued;
        }
        if self.drain.is_some() {
            // A draining node starts nothing: the task is queued, for
            // another node.
            self.give_back(id);
        } else {
            self.own(claimed, executor, now);
        }
        if let Some(cl) = self.cluster_task(id) {
            cl.holding = false;
        }
        self.send_proposals(id);
    }

    /// A proposed event, in cluster mode: numbered after the task's last,
    /// sent when the one before it is committed.
    pub(crate) fn propose(
        &mut self,
        id: TaskId,
        event: TaskEvent,
        copies: Vec<(super::Mailbox, Option<Box<str>>)>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        if cl.ended {
            return;
        }
        let terminal = event.is_terminal();
        if terminal {
            cl.ended = true;
            if cl.owned {
                task.state = match event {
                    TaskEvent::Completed { .. } => TaskState::Completed,
                    TaskEvent::Failed(_) => TaskState::Failed,
                    _ => TaskState::Cancelled,
                };
                task.input = None;
                task.question = None;
            }
        }
        // A progress waiting behind another proposal replaces the one
        // before it (same seq): a task that reports faster than the stream
        // commits never piles up events.
        if let TaskEvent::Progress(_) = event
            && let Some(last) = cl.pending.back_mut()
            && matches!(last.event, TaskEvent::Progress(_))
        {
            *last = Arc::new(EventRecord::new(id, last.seq, event));
            return;
        }
        let seq = cl.proposed.max(task.log.last_seq()) + 1;
        cl.proposed = seq;
        let record = Arc::new(EventRecord::new(id, seq, event));
        for (mailbox, reference) in copies {
            cl.copies.push((seq, mailbox, reference));
        }
        cl.pending.push_back(record);
        self.send_proposals(id);
    }

    /// Unless a proposal of the task is out, the events waiting go, all in
    /// one message (fenced on the task's last stream sequence).
    fn send_proposals(&mut self, id: TaskId) {
        let Some(cl) = self.cluster_task(id) else {
            return;
        };
        if cl.holding || cl.in_flight() {
            return;
        }
        let mut waiting = std::mem::take(&mut cl.pending).into_iter();
        let Some(record) = waiting.next() else {
            return;
        };
        let info = (record.seq == 1).then(|| cl.info.clone()).flatten();
        let then: Vec<_> = waiting.collect();
        cl.flying.push(Arc::clone(&record));
        cl.flying.extend(then.iter().cloned());
        let propose = Effect::Propose {
            record,
            then,
            expected: cl.stream_seq,
            info,
        };
        self.effect(propose);
    }

    /// A proposal is in the stream (`seq`: its last event's): the events
    /// waiting behind it go; a committed `started` lets its attempt run.
    pub(super) fn committed(&mut self, id: TaskId, seq: u64, stream_seq: u64, now: Instant) {
        // Its first proposal was `accepted`: an adopted task is this node's.
        if let Some(cluster) = &mut self.cluster {
            cluster.adopted.remove(&id);
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        cl.stream_seq = cl.stream_seq.max(stream_seq);
        let assign = match cl.assign.take() {
            Some((at, assignment)) if at <= seq => Some(assignment),
            other => {
                cl.assign = other;
                None
            }
        };
        if cl.pending.is_empty() && cl.ended {
            // Its terminal event is in the stream: this node is done with it.
            cl.owned = false;
        }
        // Its events are the task's history now: delivered at once, not
        // when the feed brings them back.
        let flying = std::mem::take(&mut cl.flying);
        let writer = self.node_name();
        for record in flying {
            self.apply(super::cluster::Applied {
                record,
                stream_seq,
                writer: Arc::clone(&writer),
                info: None,
            });
        }
        self.send_proposals(id);
        if let Some(assignment) = assign
            && let Some(executor) = self
                .tasks
                .get(&id)
                .and_then(|t| t.run.as_ref())
                .map(|r| r.executor)
        {
            self.order(executor, Order::Assign(assignment));
        }
        let _ = now;
        self.finish_drain_if_done();
    }

    /// This node no longer runs a task (another node wrote to it first, or
    /// its lease lapsed): the attempt stops, nothing more is proposed, and
    /// the task follows its stream like any other.
    ///
    /// A task this node adopted (its history looked empty) whose submitter's
    /// `accepted` turned out to come first is the common case under load: the
    /// node still holds its queue message, so instead of letting it go (the
    /// task would wait a whole lease for its redelivery) it reads the history
    /// again and decides once more, usually to run it at once.
    pub(super) fn abandon(&mut self, id: TaskId, now: Instant) {
        let reclaim = self.cluster.as_mut().is_some_and(|c| c.adopted.remove(&id));
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let executor = task.run.as_ref().map(|r| r.executor);
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        let was_owned = std::mem::take(&mut cl.owned);
        cl.pending.clear();
        cl.flying.clear();
        cl.ended = false;
        cl.proposed = task.log.last_seq();
        cl.copies.clear();
        let assign = cl.assign.take();
        for waiter in std::mem::take(&mut task.cancel_waiters) {
            let reason = task
                .cancel_reason
                .unwrap_or(crate::task::CancelReason::Client);
            if let Some(cl) = task.cluster.as_deref_mut() {
                cl.retry_cancel.push((waiter, reason));
            }
        }
        if let Some(run) = task.run.take() {
            self.running = self.running.saturating_sub(1);
            if std::mem::take(&mut task.holds_group)
                && let Some(group) = &task.concurrency_key
            {
                self.queue.release(group);
            }
            let attempt = task.attempt;
            match assign {
                // Never told to run: its slot is free at once, and the
                // attempt (its `started` never committed) does not count.
                Some(_) => {
                    if let Some(exec) = self.registry.get_mut(run.executor) {
                        exec.release(id, attempt);
                    }
                    task.attempt = attempt.saturating_sub(1);
                }
                None => {
                    if let Some(exec) = self.registry.get_mut(run.executor) {
                        exec.mark_ended(id, attempt);
                    }
                    self.order(
                        run.executor,
                        Order::Stop {
                            task_id: id,
                            attempt,
                            reason: StopReason::Superseded,
                            grace: self.limits.cancel_grace,
                        },
                    );
                }
            }
        }
        // Until the stream says otherwise, the task is as its last event left it.
        if let Some(task) = self.tasks.get_mut(&id) {
            task.state = match task.log.last().map(|r| &r.event) {
                Some(
                    TaskEvent::Started { .. } | TaskEvent::Progress(_) | TaskEvent::Answered(_),
                ) => TaskState::Running,
                Some(TaskEvent::Question { .. }) => TaskState::Waiting,
                Some(TaskEvent::Completed { .. }) => TaskState::Completed,
                Some(TaskEvent::Failed(_)) => TaskState::Failed,
                Some(TaskEvent::Cancelled(_)) => TaskState::Cancelled,
                Some(TaskEvent::Accepted { .. } | TaskEvent::Requeued { .. }) | None => {
                    TaskState::Queued
                }
            };
            task.input = None;
        }
        match executor {
            Some(executor) if was_owned && reclaim => {
                tracing::debug!(task_id = %id, "its submitter's accepted came first; this node decides again, still holding it");
                self.effect(Effect::Reclaim {
                    task_id: id,
                    executor,
                });
            }
            _ if was_owned => self.effect(Effect::Abandon { task_id: id }),
            _ => {}
        }
        let _ = now;
        self.finish_drain_if_done();
    }

    /// The no-worker timer in cluster mode: nobody in the cluster serves it.
    pub(super) fn cluster_no_worker(&self, id: TaskId, at: Instant) -> bool {
        let Some(task) = self.tasks.get(&id) else {
            return false;
        };
        task.state == TaskState::Queued
            && task.no_worker_at == Some(at)
            && !self.cluster_serves(&task.name)
    }
}

/// Executors serving the same names, as [`Core::cluster_dispatch`] sees them.
struct Group<'a> {
    tasks: &'a [Arc<str>],
    /// A claim of one of them is in flight.
    busy: bool,
    /// Members with free slots (and how many).
    ready: Vec<(ExecutorId, usize)>,
    /// Members with free slots whose last claim came back empty just now.
    probing: Vec<(ExecutorId, usize)>,
}
