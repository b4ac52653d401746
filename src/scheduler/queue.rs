//! The waiting line: pure data, no IO, no time.
//!
//! Three FIFO lanes, one per priority, served strictly highest first; and
//! concurrency groups (one API key + one `concurrency_key`): while a task of
//! a group runs, the group's next tasks are parked beside the lanes so they
//! never block the tasks behind them, and go back to their lane, in their
//! original order, when the group frees up.
//!
//! **Architecture Invariant:** every queued task is in exactly one place:
//! a lane or one group's parked list. `len` counts both.

use std::collections::{HashMap, VecDeque};

use crate::task::{ClientId, Priority, TaskId};

/// A concurrency group: one API key's tasks sharing a `concurrency_key`.
pub type GroupKey = (ClientId, Box<str>);

#[derive(Debug, Clone)]
struct Queued {
    /// Submission order, to put parked tasks back where they were.
    order: u64,
    id: TaskId,
    priority: Priority,
    group: Option<GroupKey>,
}

#[derive(Debug, Default)]
struct Group {
    /// A task of the group is running.
    busy: bool,
    parked: VecDeque<Queued>,
}

/// A task taken from the queue to run.
#[derive(Debug)]
pub struct Next {
    pub id: TaskId,
    /// The group it holds until [`Queue::release`].
    pub group: Option<GroupKey>,
}

#[derive(Debug, Default)]
pub struct Queue {
    lanes: [VecDeque<Queued>; 3],
    groups: HashMap<GroupKey, Group>,
    len: usize,
    next_order: u64,
}

impl Queue {
    /// Queued tasks, parked ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a task at the back of its lane; returns how many tasks are
    /// ahead of it.
    pub fn push(&mut self, id: TaskId, priority: Priority, group: Option<GroupKey>) -> u64 {
        let ahead: usize = self.lanes[..=priority.rank()]
            .iter()
            .map(VecDeque::len)
            .sum();
        self.next_order += 1;
        self.lanes[priority.rank()].push_back(Queued {
            order: self.next_order,
            id,
            priority,
            group,
        });
        self.len += 1;
        ahead as u64
    }

    /// Takes the next task that may run now, parking tasks whose group is
    /// busy on the way.
    pub fn pop(&mut self) -> Option<Next> {
        for rank in 0..self.lanes.len() {
            while let Some(item) = self.lanes[rank].pop_front() {
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

    /// A task of `group` ended: its next parked task goes back to its lane.
    pub fn release(&mut self, key: &GroupKey) {
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        group.busy = false;
        match group.parked.pop_front() {
            Some(item) => self.reinsert(item),
            None => {
                self.groups.remove(key);
            }
        }
    }

    fn reinsert(&mut self, item: Queued) {
        let lane = &mut self.lanes[item.priority.rank()];
        let at = lane.partition_point(|other| other.order < item.order);
        lane.insert(at, item);
    }

    /// Removes a queued task (cancelled); false if it is not queued.
    pub fn remove(&mut self, id: TaskId, priority: Priority, group: Option<&GroupKey>) -> bool {
        let lane = &mut self.lanes[priority.rank()];
        if let Some(at) = lane.iter().position(|q| q.id == id) {
            lane.remove(at);
            self.len -= 1;
            return true;
        }
        let Some(key) = group else { return false };
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

    /// How many tasks are ahead of a queued one (parked tasks count the
    /// tasks ahead of them in their lane).
    pub fn position(
        &self,
        id: TaskId,
        priority: Priority,
        group: Option<&GroupKey>,
    ) -> Option<u64> {
        let higher: usize = self.lanes[..priority.rank()]
            .iter()
            .map(VecDeque::len)
            .sum();
        let lane = &self.lanes[priority.rank()];
        if let Some(at) = lane.iter().position(|q| q.id == id) {
            return Some((higher + at) as u64);
        }
        let parked = group.and_then(|key| self.groups.get(key))?;
        let item = parked.parked.iter().find(|q| q.id == id)?;
        let at = lane.partition_point(|other| other.order < item.order);
        Some((higher + at) as u64)
    }

    /// Every queued task in the order it would start (parked ones last).
    pub fn ids(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.lanes
            .iter()
            .flatten()
            .chain(self.groups.values().flat_map(|g| g.parked.iter()))
            .map(|q| q.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<TaskId> {
        (0..n).map(|_| TaskId::generate()).collect()
    }

    #[test]
    fn strict_priority_fifo_within() {
        let mut q = Queue::default();
        let t = ids(4);
        assert_eq!(q.push(t[0], Priority::Low, None), 0);
        assert_eq!(q.push(t[1], Priority::Normal, None), 0);
        assert_eq!(q.push(t[2], Priority::Normal, None), 1);
        assert_eq!(q.push(t[3], Priority::High, None), 0);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|n| n.id).collect();
        assert_eq!(order, vec![t[3], t[1], t[2], t[0]]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_busy_group_parks_without_blocking_others() {
        let mut q = Queue::default();
        let t = ids(4);
        let key: GroupKey = (ClientId::new("a"), "k".into());
        q.push(t[0], Priority::Normal, Some(key.clone()));
        q.push(t[1], Priority::Normal, Some(key.clone()));
        q.push(t[2], Priority::Normal, None);
        q.push(t[3], Priority::Normal, Some(key.clone()));
        let first = q.pop().map(|n| n.id);
        assert_eq!(first, Some(t[0]));
        assert_eq!(q.pop().map(|n| n.id), Some(t[2]));
        assert!(q.pop().is_none());
        assert_eq!(q.len(), 2);
        assert!(q.position(t[1], Priority::Normal, Some(&key)).is_some());
        q.release(&key);
        assert_eq!(q.pop().map(|n| n.id), Some(t[1]));
        assert!(q.pop().is_none());
        q.release(&key);
        assert_eq!(q.pop().map(|n| n.id), Some(t[3]));
        q.release(&key);
        assert!(q.is_empty());
        assert!(q.groups.is_empty());
    }

    #[test]
    fn remove_from_lane_and_from_parked() {
        let mut q = Queue::default();
        let t = ids(3);
        let key: GroupKey = (ClientId::new("a"), "k".into());
        q.push(t[0], Priority::Normal, Some(key.clone()));
        q.push(t[1], Priority::Normal, Some(key.clone()));
        q.push(t[2], Priority::Low, None);
        assert!(q.remove(t[2], Priority::Low, None));
        assert!(!q.remove(t[2], Priority::Low, None));
        assert_eq!(q.pop().map(|n| n.id), Some(t[0]));
        assert!(q.pop().is_none());
        assert!(q.remove(t[1], Priority::Normal, Some(&key)));
        assert_eq!(q.len(), 0);
    }
}
