//! Cluster mode: every task of the cluster as this node sees it, built from
//! the committed events of the task streams (`Input::Event`, `Loaded`).
//!
//! A task this node does not run is changed only here, by its events; a
//! task it runs (owns) is changed by the core's usual rules, and its events
//! only get delivered here (when this node's proposal is committed, or by
//! the feed, whichever comes first). Events are applied in `seq` order
//! without gaps: a gap (a feed that skipped, a node that joined late) makes
//! the node read the task's whole history again.

use std::sync::Arc;

use tokio::time::Instant;

use super::cluster::{AcceptedInfo, Applied, ClaimedTask, Effect, NodeState, NodeView};
use super::core::{Core, Task, Timer};
use super::events::EventLog;
use super::questions::OpenQuestion;
use super::{Command, Reply};
use crate::exec::ExecutorId;
use crate::task::{TaskEvent, TaskId, TaskState};

/// Question ids remembered per task (for `already_answered`).
const ANSWERED_KEPT: usize = 64;

impl Core {
    /// One committed event of the cluster.
    pub(super) fn apply(&mut self, applied: Applied) {
        let Applied {
            record,
            stream_seq,
            writer,
            info,
        } = applied;
        let id = record.task_id;
        if !self.tasks.contains_key(&id) {
            match (&record.event, info) {
                (TaskEvent::Accepted { .. }, Some(info)) if record.seq == 1 => {
                    self.mirror_new(id, info, record.at);
                }
                _ => {
                    // Joined in the middle of its history: read all of it
                    // (a finished task nobody asked about is not worth it).
                    if !record.event.is_terminal() {
                        self.lookup(id);
                    }
                    return;
                }
            }
        }
        let node = self.node_name();
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        let last = task.log.last_seq();
        if record.seq <= last {
            cl.stream_seq = cl.stream_seq.max(stream_seq);
            return;
        }
        if record.seq > last + 1 {
            self.lookup(id);
            return;
        }
        cl.stream_seq = cl.stream_seq.max(stream_seq);
        let foreign = *writer != *node;
        let terminal = record.event.is_terminal();
        if terminal && !foreign {
            cl.wrote_terminal = true;
        }
        if cl.owned && foreign {
            // Another node wrote to a task this one runs: it lost it.
            let now = self.now;
            self.abandon(id, now);
        }
        let owned = self
            .tasks
            .get(&id)
            .and_then(|t| t.cluster.as_ref())
            .is_some_and(|c| c.owned);
        if !owned {
            self.mirror_update(id, &record);
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(cl) = task.cluster.as_deref_mut() else {
            return;
        };
        let mut copies = Vec::new();
        cl.copies.retain_mut(|(seq, mailbox, reference)| {
            if *seq == record.seq {
                copies.push((mailbox.clone(), reference.take()));
                false
            } else {
                true
            }
        });
        let mut replies = Vec::new();
        if let TaskEvent::Answered(answer) = &record.event {
            let mut kept = Vec::new();
            for (qid, reply) in std::mem::take(&mut cl.answerers) {
                if qid == answer.question_id {
                    replies.push(reply);
                } else {
                    kept.push((qid, reply));
                }
            }
            cl.answerers = kept;
        }
        if terminal {
            cl.owned = false;
            let cancelled = matches!(record.event, TaskEvent::Cancelled(_));
            for waiter in std::mem::take(&mut task.cancel_waiters) {
                if cancelled {
                    replies.push(waiter);
                } else {
                    self.refuse(waiter, super::Refusal::AlreadyFinished);
                }
            }
            // Answerers of a task that ended get their answer refused.
            if let Some(cl) = self.cluster_task(id) {
                for (_, reply) in std::mem::take(&mut cl.answerers) {
                    self.refuse(reply, super::Refusal::AlreadyFinished);
                }
            }
        }
        for reply in replies {
            match reply {
                Reply::Mailbox { mailbox, reference } => copies.push((mailbox, reference)),
                Reply::Direct(tx) => {
                    let _ = tx.send(Ok(()));
                }
            }
        }
        let max = self.limits.max_task_events;
        if let Some(task) = self.tasks.get_mut(&id) {
            task.log.push_numbered(Arc::clone(&record), max);
        }
        self.record(id, record, copies);
        // A submitter waiting for the `accepted` this node wrote with the
        // task's `started` (`claims.rs::adopt_submitted`).
        if let Some(pending) = self.cluster_task(id).and_then(|cl| cl.submitter.take()) {
            self.attach_submitter(id, *pending);
        }
        if terminal {
            self.finish_drain_if_done();
        }
        self.retry_cancels(id);
    }

    /// A task's cluster-mode state.
    pub(super) fn cluster_task(&mut self, id: TaskId) -> Option<&mut super::cluster::ClusterTask> {
        self.tasks.get_mut(&id)?.cluster.as_deref_mut()
    }

    /// Cancels that found the task between owners try again.
    pub(super) fn retry_cancels(&mut self, id: TaskId) {
        let now = self.now;
        let Some(cl) = self.cluster_task(id) else {
            return;
        };
        if cl.retry_cancel.is_empty() {
            return;
        }
        for (reply, reason) in std::mem::take(&mut cl.retry_cancel) {
            self.cluster_cancel(id, reply, reason, now);
        }
    }

    /// A task first seen by its `accepted`.
    pub(super) fn mirror_new(&mut self, id: TaskId, info: AcceptedInfo, at: std::time::SystemTime) {
        let group = info
            .concurrency_key
            .as_deref()
            .map(|key| (info.owner.client.clone(), Box::<str>::from(key)));
        let task = Task {
            id,
            name: Arc::clone(&info.name),
            owner: info.owner.clone(),
            metrics: self.metrics.task(&info.name),
            priority: info.priority,
            concurrency_key: group,
            place: None,
            holds_group: false,
            timeout: info.timeout,
            idempotency_key: info.idempotency_key.clone().map(String::into_boxed_str),
            cancel_with: None,
            interactive: info.interactive,
            retry_safe: info.retry_safe,
            state: TaskState::Queued,
            input: None,
            charged: 0,
            attempt: 0,
            run: None,
            log: EventLog::new(),
            subscribers: Vec::new(),
            cancel_reason: None,
            cancel_waiters: Vec::new(),
            question: None,
            answered: Vec::new(),
            timers: Vec::new(),
            worker: None,
            created_at: at,
            started_at: None,
            finished_at: None,
            progress: None,
            message: None,
            no_worker_at: None,
            tag: None,
            inputs: crate::inputs::TaskInputs::default(),
            cluster: Some(Box::new(super::cluster::ClusterTask {
                info: Some(info),
                ..Default::default()
            })),
        };
        self.tasks.insert(id, task);
    }

    /// A task this node does not run follows its events.
    fn mirror_update(&mut self, id: TaskId, record: &crate::task::EventRecord) {
        let now = self.now;
        match &record.event {
            TaskEvent::Accepted { .. } => self.mirror_queue(id, false, now),
            TaskEvent::Started { worker, attempt } => {
                self.unqueue(id);
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                task.state = TaskState::Running;
                task.attempt = *attempt;
                task.worker = Some(Arc::clone(worker));
                task.started_at = Some(record.at);
                task.no_worker_at = None;
                if let Some(cl) = task.cluster.as_deref_mut() {
                    cl.node = worker.split_once('/').map(|(node, _)| Arc::from(node));
                }
            }
            TaskEvent::Progress(progress) => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                if let Some(fraction) = progress.fraction {
                    task.progress = Some(fraction);
                }
                if let Some(message) = &progress.message {
                    task.message = Some(message.clone());
                }
            }
            TaskEvent::Question {
                question,
                expires_at,
            } => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                task.state = TaskState::Waiting;
                task.question = Some(OpenQuestion::mirrored(question.clone(), *expires_at));
            }
            TaskEvent::Answered(answer) => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                if task.state == TaskState::Waiting {
                    task.state = TaskState::Running;
                }
                task.question = None;
                task.answered.push(answer.question_id.clone());
                if task.answered.len() > ANSWERED_KEPT {
                    task.answered.remove(0);
                }
            }
            TaskEvent::Requeued { .. } => {
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.worker = None;
                    task.question = None;
                    if let Some(cl) = task.cluster.as_deref_mut() {
                        cl.node = None;
                    }
                }
                self.mirror_queue(id, true, now);
            }
            TaskEvent::Completed { .. } | TaskEvent::Failed(_) | TaskEvent::Cancelled(_) => {
                self.unqueue(id);
            }
        }
    }

    /// A task waits in the cluster's queue (as this node sees it).
    fn mirror_queue(&mut self, id: TaskId, front: bool, now: Instant) {
        let serves = self
            .tasks
            .get(&id)
            .is_some_and(|t| self.cluster_serves(&t.name));
        let wait = self.limits.no_worker_wait;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if task.place.is_some() {
            return;
        }
        task.state = TaskState::Queued;
        let place = if front {
            self.queue
                .push_front(id, &task.name, task.priority, task.concurrency_key.clone())
        } else {
            self.queue
                .push(id, &task.name, task.priority, task.concurrency_key.clone())
        };
        task.place = Some(place);
        let size = task
            .cluster
            .as_ref()
            .and_then(|c| c.info.as_ref())
            .map_or(0, |i| i.input_bytes);
        task.charged = size;
        let client = task.owner.client.clone();
        if !serves && task.no_worker_at.is_none() {
            let at = now + wait;
            task.no_worker_at = Some(at);
            task.timers.push((at, Timer::NoWorker));
            self.timers.insert((at, id, Timer::NoWorker));
        }
        self.charge(&client, size);
        if let Some(cluster) = &mut self.cluster {
            cluster.queue_version += 1;
        }
    }

    pub(super) fn lookup(&mut self, id: TaskId) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.parked.contains_key(&id) || cluster.parked_claims.contains_key(&id) {
            return;
        }
        cluster.parked.insert(id, Vec::new());
        cluster.effects.push_back(Effect::Lookup { task_id: id });
    }

    /// A task's history, read for a lookup.
    pub(super) fn loaded(&mut self, id: TaskId, records: Vec<Applied>, now: Instant) {
        let (commands, claim) = match &mut self.cluster {
            Some(cluster) => (
                cluster.parked.remove(&id).unwrap_or_default(),
                cluster.parked_claims.remove(&id),
            ),
            None => return,
        };
        for applied in records {
            self.apply(applied);
        }
        if let Some((claimed, executor)) = claim {
            if self.tasks.contains_key(&id) {
                self.decide(claimed, executor, now);
            } else {
                self.adopt(claimed, executor, now);
            }
        }
        for command in commands {
            self.unparked(command, now);
        }
    }

    /// A parked request, once its task is known (or known not to exist).
    fn unparked(&mut self, command: Command, now: Instant) {
        let known = command
            .about_task()
            .is_none_or(|task_id| self.tasks.contains_key(&task_id));
        if known {
            self.on_command(command, now);
        } else {
            self.local_command(command, now);
        }
    }

    /// A claimed task whose history is not known here yet.
    pub(super) fn park_claim(&mut self, claimed: ClaimedTask, executor: ExecutorId) {
        let id = claimed.spec.id;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let first = !cluster.parked.contains_key(&id);
        cluster.parked_claims.insert(id, (claimed, executor));
        if first {
            cluster.effects.push_back(Effect::Lookup { task_id: id });
        }
    }

    /// The registry of nodes changed: offered names, who serves what, the
    /// monitoring page.
    pub(super) fn nodes_changed(&mut self, nodes: Vec<NodeView>) {
        let me = self.node_name();
        let mut served: std::collections::HashMap<Arc<str>, usize> = Default::default();
        for node in &nodes {
            if *node.name == *me {
                continue;
            }
            for decl in &node.tasks {
                let _ = self
                    .directory
                    .declare(decl, crate::directory::Source::Worker);
            }
            if node.state == NodeState::Gone {
                continue;
            }
            for worker in &node.workers {
                for name in &worker.tasks {
                    *served.entry(Arc::clone(name)).or_default() += 1;
                }
            }
        }
        self.directory.set_remote_workers(&served);
        let now = self.now;
        let wait = self.limits.no_worker_wait;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let changed = cluster.remote_names != served;
        cluster.remote_names = served;
        let mut views = Vec::new();
        let old = std::mem::take(&mut cluster.nodes);
        for node in nodes {
            if *node.name == *me {
                continue;
            }
            let differs = old.get(&node.name).is_none_or(|o| {
                o.state != node.state
                    || o.workers.len() != node.workers.len()
                    || o.workers.iter().zip(&node.workers).any(|(a, b)| {
                        a.running != b.running || a.state != b.state || a.done != b.done
                    })
            });
            if differs {
                views.extend(node.workers.iter().cloned().map(|mut w| {
                    if node.state == NodeState::Gone {
                        w.state = super::WorkerState::Gone;
                    }
                    w
                }));
            }
            cluster.nodes.insert(Arc::clone(&node.name), node);
        }
        for view in views {
            self.watch_worker(view);
        }
        self.watch.dirty();
        if !changed {
            return;
        }
        // Queued tasks of names nobody serves any more wait for one, bounded.
        let queued: Vec<TaskId> = self.queue.ids().collect();
        for id in queued {
            let Some(name) = self.tasks.get(&id).map(|t| Arc::clone(&t.name)) else {
                continue;
            };
            let serves = self.cluster_serves(&name);
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            if serves {
                task.no_worker_at = None;
            } else if task.no_worker_at.is_none() {
                let at = now + wait;
                task.no_worker_at = Some(at);
                task.timers.push((at, Timer::NoWorker));
                self.timers.insert((at, id, Timer::NoWorker));
            }
        }
    }
}
