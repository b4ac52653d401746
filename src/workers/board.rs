//! What is known of every worker, for `GET /v1/admin/workers`, the
//! monitoring page, `/readyz` and the per-group metrics.
//!
//! Sessions and the supervisor write here after each batch of events; the
//! routes read a copy. A `std::sync::Mutex` fits: the sections are a few
//! field writes, never held across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::task::TaskId;
use crate::telemetry::Metrics;

/// One worker as the monitoring page shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// The executor id (`w-3`) once registered.
    pub id: Option<String>,
    pub name: Arc<str>,
    pub group: Option<Arc<str>>,
    /// `builtin`, `managed` or `remote`.
    pub kind: &'static str,
    pub pid: Option<u32>,
    pub peer: Option<String>,
    pub tasks: Vec<Arc<str>>,
    pub slots: usize,
    pub running: Vec<TaskId>,
    /// `starting`, `ready`, `draining` or `gone`.
    pub state: &'static str,
    pub connected_at: SystemTime,
    pub last_heartbeat_at: Option<SystemTime>,
    pub done: u64,
    pub failed: u64,
    /// Managed only: restarts of this instance's process so far.
    pub restarts: Option<u64>,
}

/// A group's counters and gauges.
#[derive(Debug, Clone)]
struct Group {
    managed: bool,
    ready: usize,
    connected: Gauge,
    slots: Gauge,
    busy: Gauge,
    lost: Counter,
    restarts: Counter,
}

/// Shared view of every worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct Board {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    workers: Mutex<BTreeMap<u64, WorkerView>>,
    groups: Mutex<BTreeMap<Arc<str>, Group>>,
    next: AtomicU64,
    metrics: Metrics,
    /// The built-in pool, shown as one entry.
    builtin_slots: usize,
}

/// A worker's place on the board; removed when dropped.
#[derive(Debug)]
pub struct Entry {
    board: Board,
    key: u64,
    group: Arc<str>,
    counted: Counted,
}

/// What this entry adds to its group's gauges now.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    connected: bool,
    ready: bool,
    slots: usize,
    busy: usize,
}

impl Board {
    pub fn new(metrics: Metrics, builtin_slots: usize) -> Board {
        Board {
            inner: Arc::new(Inner {
                workers: Mutex::new(BTreeMap::new()),
                groups: Mutex::new(BTreeMap::new()),
                next: AtomicU64::new(1),
                metrics,
                builtin_slots,
            }),
        }
    }

    /// Declares a managed group (so `/readyz` waits for it).
    pub fn managed_group(&self, name: &Arc<str>) {
        self.group_mut(name, true, |_| {});
    }

    /// Whether every managed group has a ready process; else the first
    /// group that has none.
    pub fn waiting_for(&self) -> Option<Arc<str>> {
        let groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        groups
            .iter()
            .find(|(_, g)| g.managed && g.ready == 0)
            .map(|(name, _)| Arc::clone(name))
    }

    /// A new worker (process started or connection opened).
    pub fn join(&self, view: WorkerView, group: Arc<str>) -> Entry {
        let key = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let managed = view.kind == "managed";
        self.group_mut(&group, managed, |_| {});
        self.lock().insert(key, view);
        Entry {
            board: self.clone(),
            key,
            group,
            counted: Counted::default(),
        }
    }

    /// Counts a restart of a group's process.
    pub fn restarted(&self, group: &Arc<str>) {
        self.group_mut(group, true, |g| {
            g.restarts.inc();
        });
    }

    /// Counts a lost worker (its attempts were lost).
    pub fn lost(&self, group: &Arc<str>) {
        self.group_mut(group, false, |g| {
            g.lost.inc();
        });
    }

    /// Every worker, the built-in pool first.
    pub fn list(&self) -> Vec<WorkerView> {
        let builtin = WorkerView {
            id: Some("builtin".to_owned()),
            name: Arc::from("builtin"),
            group: None,
            kind: "builtin",
            pid: Some(std::process::id()),
            peer: None,
            tasks: Vec::new(),
            slots: self.inner.builtin_slots,
            running: Vec::new(),
            state: "ready",
            connected_at: SystemTime::now(),
            last_heartbeat_at: None,
            done: 0,
            failed: 0,
            restarts: None,
        };
        let mut list = vec![builtin];
        list.extend(self.lock().values().cloned());
        list
    }

    /// What only the board knows of executor `id` (`w-3`): when it was
    /// last heard from, and its process's restarts.
    pub fn liveness(&self, id: &str) -> Option<(Option<SystemTime>, Option<u64>)> {
        self.lock()
            .values()
            .find(|v| v.id.as_deref() == Some(id))
            .map(|v| (v.last_heartbeat_at, v.restarts))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, WorkerView>> {
        self.inner
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn group_mut(&self, name: &Arc<str>, managed: bool, change: impl FnOnce(&mut Group)) {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let group = groups.entry(Arc::clone(name)).or_insert_with(|| {
            let m = &self.inner.metrics.worker_groups;
            Group {
                managed,
                ready: 0,
                connected: m.connected(name),
                slots: m.slots(name),
                busy: m.busy(name),
                lost: m.lost(name),
                restarts: m.restarts(name),
            }
        });
        group.managed |= managed;
        change(group);
    }
}

impl Entry {
    /// Changes this worker's view and the group's gauges with it.
    pub fn update(&mut self, change: impl FnOnce(&mut WorkerView)) {
        let now = {
            let mut workers = self.board.lock();
            let Some(view) = workers.get_mut(&self.key) else {
                return;
            };
            change(view);
            Counted {
                connected: view.state != "gone",
                ready: matches!(view.state, "ready" | "draining"),
                slots: if view.state == "gone" { 0 } else { view.slots },
                busy: view.running.len(),
            }
        };
        self.apply(now);
    }

    /// Counts this worker as lost in its group.
    pub fn lost(&self) {
        self.board.lost(&self.group);
    }

    fn apply(&mut self, now: Counted) {
        let before = self.counted;
        self.board.group_mut(&self.group, false, |g| {
            g.connected
                .inc_by(i64::from(now.connected) - i64::from(before.connected));
            g.slots.inc_by(now.slots as i64 - before.slots as i64);
            g.busy.inc_by(now.busy as i64 - before.busy as i64);
            g.ready = (g.ready + usize::from(now.ready)).saturating_sub(usize::from(before.ready));
        });
        self.counted = now;
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.apply(Counted::default());
        self.board.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(kind: &'static str) -> WorkerView {
        WorkerView {
            id: None,
            name: Arc::from("g-1"),
            group: Some(Arc::from("g")),
            kind,
            pid: Some(1),
            peer: None,
            tasks: vec![Arc::from("t")],
            slots: 2,
            running: Vec::new(),
            state: "starting",
            connected_at: SystemTime::now(),
            last_heartbeat_at: None,
            done: 0,
            failed: 0,
            restarts: Some(0),
        }
    }

    #[test]
    fn readiness_follows_ready_processes() {
        let board = Board::new(Metrics::new(), 2);
        let group: Arc<str> = Arc::from("g");
        board.managed_group(&group);
        assert_eq!(board.waiting_for().as_deref(), Some("g"));
        let mut entry = board.join(view("managed"), Arc::clone(&group));
        assert_eq!(board.waiting_for().as_deref(), Some("g"));
        entry.update(|v| v.state = "ready");
        assert_eq!(board.waiting_for(), None);
        assert_eq!(board.list().len(), 2);
        drop(entry);
        assert_eq!(board.waiting_for().as_deref(), Some("g"));
        assert_eq!(board.list().len(), 1);
        let text = board.inner.metrics.encode();
        assert!(
            text.contains("taskwire_worker_group_slots{group=\"g\"} 0"),
            "{text}"
        );
    }
}
