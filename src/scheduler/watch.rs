//! The monitoring feed (admin `watch`) and the views it and the REST
//! snapshot are made of.
//!
//! Watchers get every queued and running task and the most recent finished
//! ones at once, then a `task_update` on every state change (progress at
//! most every [`PROGRESS_EVERY`] per task, queue positions as they move), a
//! `worker_update` when an executor comes, changes or goes, and the
//! counters at most every [`STATS_EVERY`] when they changed. Like every
//! mailbox, a watcher that does not keep up is dropped, never waited for.

use std::time::Duration;

use tokio::time::Instant;

use super::core::{Core, Task};
use super::{Mailbox, MailboxId, Outbound, Stats, TaskView, Watching, WorkerView};
use crate::task::TaskId;

/// Progress updates per task to the monitoring page, at most one per this.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Counters to the monitoring page, at most once per this.
pub(crate) const STATS_EVERY: Duration = Duration::from_millis(500);
/// At most this many finished tasks in a `watch` reply; at most this many
/// queued tasks are followed for position changes.
pub(crate) const RECENT: usize = 200;

#[derive(Debug, Default)]
pub(crate) struct WatchFeed {
    watchers: Vec<Mailbox>,
    /// Per task: when the watchers last heard of its progress, and the
    /// queue position they last saw.
    seen: crate::task::IdMap<(Option<Instant>, Option<u64>)>,
    stats_dirty: bool,
    pub(crate) stats_due: Option<Instant>,
    last_stats: Stats,
}

impl WatchFeed {
    pub(crate) fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    pub(crate) fn remove(&mut self, mailbox: MailboxId) {
        self.watchers.retain(|w| w.id() != mailbox);
        if self.watchers.is_empty() {
            self.seen.clear();
        }
    }

    pub(crate) fn forget(&mut self, id: TaskId) {
        self.seen.remove(&id);
    }

    pub(crate) fn dirty(&mut self) {
        self.stats_dirty = true;
    }

    /// Schedules a stats push if the counters may have changed.
    pub(crate) fn after_batch(&mut self, now: Instant) {
        if self.stats_dirty && !self.watchers.is_empty() && self.stats_due.is_none() {
            self.stats_due = Some(now + STATS_EVERY);
        }
        self.stats_dirty = false;
    }

    pub(super) fn send(
        &mut self,
        message: impl Fn() -> Outbound,
        metrics: &crate::telemetry::Metrics,
    ) {
        self.watchers.retain(|w| w.deliver(message(), metrics));
    }
}

impl Core {
    pub(super) fn view(&self, task: &Task) -> TaskView {
        TaskView {
            task_id: task.id,
            task: task.name.clone(),
            owner: task.owner.clone(),
            state: task.state,
            attempt: task.attempt,
            position: task.place.as_ref().map(|place| {
                let cohort = self.registry.make_cohort(&task.name);
                self.queue.position(place, cohort.iter())
            }),
            progress: task.progress,
            message: task.message.clone(),
            worker: task.worker.clone(),
            question: task
                .question
                .as_ref()
                .map(|q| (q.spec.clone(), q.expires_at)),
            terminal: task
                .state
                .is_terminal()
                .then(|| task.log.last().cloned())
                .flatten(),
            created_at: task.created_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
            last_seq: task.log.last_seq(),
            subscribers: task.subscribers.len(),
            schedule: task.tag.clone(),
        }
    }

    /// Running and queued tasks, then the most recently finished ones.
    pub(super) fn watch_list(&self) -> Vec<TaskView> {
        let mut list: Vec<TaskView> = self
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .map(|t| self.view(t))
            .collect();
        list.extend(
            self.retention
                .recent()
                .take(RECENT)
                .filter_map(|id| self.tasks.get(&id))
                .map(|t| self.view(t)),
        );
        list
    }

    pub(super) fn workers_list(&self) -> Vec<WorkerView> {
        let Some(cluster) = &self.cluster else {
            return self.registry.iter().map(|(id, e)| e.view(id)).collect();
        };
        // Cluster mode: this node's executors as `<node>/<name>`, then the
        // other nodes'.
        let mut list: Vec<WorkerView> = self
            .registry
            .iter()
            .map(|(id, e)| {
                let mut view = e.view(id);
                view.name = std::sync::Arc::from(format!("{}/{}", cluster.node, view.name));
                view.node = Some(std::sync::Arc::clone(&cluster.node));
                view
            })
            .collect();
        for node in cluster.nodes.values() {
            list.extend(node.workers.iter().cloned().map(|mut w| {
                if node.state == super::cluster::NodeState::Gone {
                    w.state = super::WorkerState::Gone;
                }
                w
            }));
        }
        list
    }

    /// This node's executors as its registry entry lists them.
    pub(super) fn local_workers(&self) -> Vec<WorkerView> {
        self.registry.iter().map(|(id, e)| e.view(id)).collect()
    }

    pub(super) fn nodes_list(&self) -> Vec<super::NodeSummary> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let (slots, busy) = self.registry.slot_counts();
        let mut list = vec![super::NodeSummary {
            name: std::sync::Arc::clone(&cluster.node),
            state: if self.drain.is_some() {
                super::cluster::NodeState::Draining
            } else {
                super::cluster::NodeState::Up
            },
            started_at: self.started_at,
            seen_at: std::time::SystemTime::now(),
            workers: self.registry.iter().count(),
            slots,
            running: busy,
            this: true,
        }];
        for node in cluster.nodes.values() {
            list.push(super::NodeSummary {
                name: std::sync::Arc::clone(&node.name),
                state: node.state,
                started_at: node.started_at,
                seen_at: node.seen_at,
                workers: node.workers.len(),
                slots: node.workers.iter().map(|w| w.slots).sum(),
                running: node.workers.iter().map(|w| w.running.len()).sum(),
                this: false,
            });
        }
        list
    }

    pub(super) fn stats(&self) -> Stats {
        let mut tasks: Vec<(std::sync::Arc<str>, [u64; 3])> = self
            .directory
            .snapshot()
            .tasks
            .keys()
            .map(|name| {
                let m = self.metrics.task(name);
                (
                    std::sync::Arc::clone(name),
                    [m.completed.get(), m.failed.get(), m.cancelled.get()],
                )
            })
            .collect();
        tasks.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut slots, mut busy) = self.registry.slot_counts();
        let mut running = self.running as u64;
        if let Some(cluster) = &self.cluster {
            for node in cluster.nodes.values() {
                if node.state != super::cluster::NodeState::Gone {
                    slots += node.workers.iter().map(|w| w.slots).sum::<usize>();
                    busy += node.workers.iter().map(|w| w.running.len()).sum::<usize>();
                }
            }
            running = self
                .tasks
                .values()
                .filter(|t| {
                    matches!(
                        t.state,
                        crate::task::TaskState::Running | crate::task::TaskState::Waiting
                    )
                })
                .count() as u64;
        }
        Stats {
            workers: slots as u64,
            workers_busy: busy as u64,
            queued: self.queue.len() as u64,
            running,
            connections: u64::try_from(self.metrics.connections("ws").get()).unwrap_or(0),
            tasks,
        }
    }

    pub(super) fn start_watch(&mut self, mailbox: Mailbox, reference: Option<Box<str>>) {
        let reply = Outbound::Watching(Box::new(Watching {
            reference,
            tasks: self.watch_list(),
            workers: self.workers_list(),
            stats: self.stats(),
        }));
        if mailbox.deliver(reply, &self.metrics) {
            self.watch.remove(mailbox.id());
            self.watch.watchers.push(mailbox);
        }
    }

    /// A task changed: tell the watchers (progress throttled per task).
    pub(super) fn watch_task(&mut self, id: TaskId, is_progress: bool, now: Instant) {
        if self.watch.is_empty() {
            return;
        }
        let (heard, _) = self.watch.seen.entry(id).or_default();
        if is_progress && heard.is_some_and(|at| now < at + PROGRESS_EVERY) {
            return;
        }
        *heard = Some(now);
        self.tell_watchers(id);
    }

    pub(super) fn tell_watchers(&mut self, id: TaskId) {
        let Some(view) = self.tasks.get(&id).map(|task| self.view(task)) else {
            return;
        };
        self.watch.seen.entry(id).or_default().1 = view.position;
        let metrics = self.metrics.clone();
        self.watch
            .send(|| Outbound::TaskUpdate(Box::new(view.clone())), &metrics);
    }

    /// An executor came, changed or went.
    pub(super) fn watch_worker(&mut self, view: WorkerView) {
        if self.watch.is_empty() {
            return;
        }
        let metrics = self.metrics.clone();
        self.watch
            .send(|| Outbound::WorkerUpdate(Box::new(view.clone())), &metrics);
    }

    pub(super) fn push_stats(&mut self) {
        if self.watch.is_empty() {
            return;
        }
        // Queued tasks move up as others start or leave.
        let queued: Vec<TaskId> = self.queue.ids().take(RECENT).collect();
        for id in queued {
            let position = self
                .tasks
                .get(&id)
                .and_then(|task| self.view(task).position);
            let seen = self.watch.seen.get(&id).and_then(|(_, p)| *p);
            if position != seen {
                self.tell_watchers(id);
            }
        }
        let stats = self.stats();
        if stats == self.watch.last_stats {
            return;
        }
        self.watch.last_stats = stats.clone();
        let metrics = self.metrics.clone();
        self.watch
            .send(|| Outbound::Stats(Box::new(stats.clone())), &metrics);
    }
}
