//! The waiting line: pure data, no IO, no time.
//!
//! One set of lanes per task name, three lanes per set (one per priority),
//! each lane in submission order. An executor takes work with
//! [`Queue::pop_for`], naming the task names it serves: it gets the oldest
//! task of the highest priority among those names. A backlog of one name
//! therefore never holds up another name that a different executor serves
//! (no head-of-line blocking across names), while executors serving several
//! names keep strict priority and FIFO across them.
//!
//! Concurrency groups (one client + one `concurrency_key`, across task
//! names): while a task of a group runs, the group's other tasks are parked
//! beside the lanes as pops meet them, so they never block the tasks behind
//! them, and all go back to their lanes, in their original places, when
//! the group frees up.
//!
//! **Architecture Invariant:** every queued task is in exactly one place:
//! its name's lane or one group's parked list; every lane is sorted by
//! `order`. `len` counts both.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::task::{ClientId, Priority, TaskId};

/// A concurrency group: one client's tasks sharing a `concurrency_key`.
pub(crate) type GroupKey = (ClientId, Box<str>);

/// Where a task is in the line: submission order (re-queued tasks get an
/// order before every other task).
pub(crate) type Order = i64;

#[derive(Debug, Clone)]
struct Queued {
    order: Order,
    id: TaskId,
    name: Arc<str>,
    priority: Priority,
    group: Option<GroupKey>,
}

#[derive(Debug, Default)]
struct Group {
    /// A task of the group is running.
    busy: bool,
    parked: VecDeque<Queued>,
}

type Lanes = [VecDeque<Queued>; 3];

/// A task taken from the queue to run.
#[derive(Debug)]
pub(crate) struct Next {
    pub(crate) id: TaskId,
    /// The group it holds until [`Queue::release`].
    pub(crate) group: Option<GroupKey>,
}

/// Where to find a queued task again (what [`Queue::push`] returned).
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) order: Order,
    pub(crate) name: Arc<str>,
    pub(crate) priority: Priority,
    pub(crate) group: Option<GroupKey>,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Task names are offered names (never a client's free text): a fast
    /// hash is safe here.
    lanes: rustc_hash::FxHashMap<Arc<str>, Lanes>,
    /// Tasks in all lanes of each priority (a pop skips empty priorities).
    per_rank: [usize; 3],
    groups: HashMap<GroupKey, Group>,
    len: usize,
    next_order: Order,
    next_front: Order,
}

impl Queue {
    /// Queued tasks, parked ones included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a task at the back of its lane.
    pub(crate) fn push(
        &mut self,
        id: TaskId,
        name: &Arc<str>,
        priority: Priority,
        group: Option<GroupKey>,
    ) -> Place {
        self.next_order += 1;
        self.insert(self.next_order, id, name, priority, group)
    }

    /// Adds a task before every task of its lane (a re-queued attempt).
    pub(crate) fn push_front(
        &mut self,
        id: TaskId,
        name: &Arc<str>,
        priority: Priority,
        group: Option<GroupKey>,
    ) -> Place {
        self.next_front -= 1;
        self.insert(self.next_front, id, name, priority, group)
    }

    fn insert(
        &mut self,
        order: Order,
        id: TaskId,
        name: &Arc<str>,
        priority: Priority,
        group: Option<GroupKey>,
    ) -> Place {
        let item = Queued {
            order,
            id,
            name: Arc::clone(name),
            priority,
            group: group.clone(),
        };
        self.reinsert(item);
        self.len += 1;
        Place {
            order,
            name: Arc::clone(name),
            priority,
            group,
        }
    }

    fn reinsert(&mut self, item: Queued) {
        self.per_rank[item.priority.rank()] += 1;
        let lane = &mut self.lanes.entry(Arc::clone(&item.name)).or_default()[item.priority.rank()];
        let at = lane.partition_point(|other| other.order < item.order);
        lane.insert(at, item);
    }

    /// Takes the next task that may run now among `names` (the oldest of
    /// the highest priority), parking tasks whose group is busy on the way.
    pub(crate) fn pop_for<'a>(
        &mut self,
        names: impl Iterator<Item = &'a Arc<str>> + Clone,
    ) -> Option<Next> {
        for rank in 0..3 {
            while self.per_rank[rank] > 0 {
                // The oldest head among the asked names' lanes of this rank
                // (walking the lanes that hold tasks: usually fewer than
                // the names an executor serves).
                let mut best: Option<(Arc<str>, Order)> = None;
                for (name, lanes) in &self.lanes {
                    let Some(head) = lanes[rank].front() else {
                        continue;
                    };
                    if best.as_ref().is_none_or(|(_, order)| head.order < *order)
                        && names.clone().any(|asked| same_name(asked, name))
                    {
                        best = Some((Arc::clone(name), head.order));
                    }
                }
                let Some((name, _)) = best else { break };
                let lanes = self.lanes.get_mut(&name)?;
                let item = lanes[rank].pop_front()?;
                self.per_rank[rank] -= 1;
                if lanes.iter().all(VecDeque::is_empty) {
                    self.lanes.remove(&item.name);
                }
                let Some(key) = &item.group else {
                    self.len -= 1;
                    return Some(Next {
                        id: item.id,
                        group: None,
                    });
                };
                let group = self.groups.entry(key.clone()).or_default();
                if group.busy {
                    group.parked.push_back(item);
                    continue;
                }
                group.busy = true;
                self.len -= 1;
                return Some(Next {
                    id: item.id,
                    group: item.group,
                });
            }
        }
        None
    }

    /// A task of `group` ended: its parked tasks go back to their lanes, in
    /// their original places (all of them: the next to run may be any, by
    /// priority and by which executors are free; the others park again).
    pub(crate) fn release(&mut self, key: &GroupKey) {
        let Some(group) = self.groups.remove(key) else {
            return;
        };
        for item in group.parked {
            self.reinsert(item);
        }
    }

    /// Removes a queued task (cancelled); false if it is not queued.
    pub(crate) fn remove(&mut self, id: TaskId, place: &Place) -> bool {
        if let Some(lanes) = self.lanes.get_mut(&place.name) {
            let lane = &mut lanes[place.priority.rank()];
            let at = lane.partition_point(|other| other.order < place.order);
            if lane.get(at).is_some_and(|q| q.id == id) {
                lane.remove(at);
                self.per_rank[place.priority.rank()] -= 1;
                if lanes.iter().all(VecDeque::is_empty) {
                    self.lanes.remove(&place.name);
                }
                self.len -= 1;
                return true;
            }
        }
        let Some(key) = &place.group else {
            return false;
        };
        let Some(group) = self.groups.get_mut(key) else {
            return false;
        };
        let Some(at) = group.parked.iter().position(|q| q.id == id) else {
            return false;
        };
        group.parked.remove(at);
        self.len -= 1;
        if !group.busy && group.parked.is_empty() {
            self.groups.remove(key);
        }
        true
    }

    /// How many queued tasks start before this one: those of higher
    /// priority, and those ahead of it in its priority, among the task names
    /// that compete for the same executors (`cohort`, its own name
    /// included). A parked task counts the tasks ahead of its place.
    pub(crate) fn position<'a>(
        &self,
        place: &Place,
        cohort: impl Iterator<Item = &'a Arc<str>> + Clone,
    ) -> u64 {
        let rank = place.priority.rank();
        let mut ahead = 0usize;
        for (name, lanes) in &self.lanes {
            if !cohort.clone().any(|c| same_name(c, name)) {
                continue;
            }
            ahead += lanes[..rank].iter().map(VecDeque::len).sum::<usize>();
            ahead += lanes[rank].partition_point(|other| other.order < place.order);
        }
        ahead as u64
    }

    /// Lanes (name, priority) holding tasks among `names`, in the order
    /// [`Queue::pop_for`] would take from them: highest priority first, then
    /// the oldest head (cluster mode claims from the cluster's queue in
    /// that order).
    pub(crate) fn lanes_for<'a>(
        &self,
        names: impl Iterator<Item = &'a Arc<str>>,
    ) -> Vec<(Arc<str>, Priority)> {
        let mut heads: Vec<(usize, Order, Arc<str>, Priority)> = Vec::new();
        for name in names {
            let Some(lanes) = self.lanes.get(name) else {
                continue;
            };
            for (rank, lane) in lanes.iter().enumerate() {
                if let Some(head) = lane.front() {
                    heads.push((rank, head.order, Arc::clone(name), head.priority));
                }
            }
        }
        heads.sort_by_key(|h| (h.0, h.1));
        heads
            .into_iter()
            .map(|(_, _, name, priority)| (name, priority))
            .collect()
    }

    /// Queued tasks among `cohort` that a new task of `priority` would wait
    /// behind (those of its priority or higher).
    pub(crate) fn count_through<'a>(
        &self,
        cohort: impl Iterator<Item = &'a Arc<str>>,
        priority: Priority,
    ) -> u64 {
        let rank = priority.rank();
        cohort
            .filter_map(|name| self.lanes.get(name))
            .map(|lanes| lanes[..=rank].iter().map(VecDeque::len).sum::<usize>())
            .sum::<usize>() as u64
    }

    /// Every queued task of `name` (parked ones included).
    pub(crate) fn ids_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = TaskId> + 'a {
        self.lanes
            .get(name)
            .into_iter()
            .flat_map(|lanes| lanes.iter().flatten())
            .chain(
                self.groups
                    .values()
                    .flat_map(|g| g.parked.iter())
                    .filter(move |q| &*q.name == name),
            )
            .map(|q| q.id)
    }

    /// Every queued task, highest priority first (parked ones last).
    pub(crate) fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        (0..3)
            .flat_map(move |rank| self.lanes.values().flat_map(move |l| l[rank].iter()))
            .chain(self.groups.values().flat_map(|g| g.parked.iter()))
            .map(|q| q.id)
    }
}

/// Names are usually the same allocation (the directory's); compare the
/// pointers first.
fn same_name(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
