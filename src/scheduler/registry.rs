//! The executors the scheduler may give work to: who they are, which task
//! names they serve, how many slots they have and which attempts hold them.
//!
//! A slot is held from the `Assign` until the executor says it is free
//! (`Finished { slot_free: true }` or `SlotFree`), even when the task itself
//! ended earlier (a timeout, or a cancel whose grace ran out): the server
//! never has more attempts on an executor than it has slots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::{WorkerState, WorkerView};
use crate::exec::{ExecutorId, ExecutorKind, Order};
use crate::task::TaskId;

#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ExecutorKind,
    pub(crate) slots: usize,
    pub(crate) tasks: Vec<Arc<str>>,
    pub(crate) orders: mpsc::Sender<Order>,
    /// Attempts holding a slot; `true` once the task itself has ended.
    pub(crate) held: Vec<(TaskId, u32, bool)>,
    pub(crate) draining: bool,
    pub(crate) connected_at: SystemTime,
    pub(crate) done: u64,
    pub(crate) failed: u64,
}

impl Executor {
    pub(crate) fn free(&self) -> usize {
        if self.draining {
            0
        } else {
            self.slots.saturating_sub(self.held.len())
        }
    }

    pub(crate) fn holds(&self, task_id: TaskId, attempt: u32) -> bool {
        self.held
            .iter()
            .any(|(id, a, _)| *id == task_id && *a == attempt)
    }

    /// Gives a slot back.
    pub(crate) fn release(&mut self, task_id: TaskId, attempt: u32) -> bool {
        let before = self.held.len();
        self.held
            .retain(|(id, a, _)| !(*id == task_id && *a == attempt));
        self.held.len() < before
    }

    pub(crate) fn mark_ended(&mut self, task_id: TaskId, attempt: u32) {
        for held in &mut self.held {
            if held.0 == task_id && held.1 == attempt {
                held.2 = true;
            }
        }
    }

    pub(crate) fn view(&self, id: ExecutorId) -> WorkerView {
        WorkerView {
            id,
            node: None,
            name: Arc::clone(&self.name),
            kind: self.kind.clone(),
            tasks: self.tasks.clone(),
            slots: self.slots,
            running: self
                .held
                .iter()
                .filter(|(_, _, ended)| !ended)
                .map(|(id, _, _)| *id)
                .collect(),
            state: if self.draining {
                WorkerState::Draining
            } else {
                WorkerState::Ready
            },
            connected_at: self.connected_at,
            done: self.done,
            failed: self.failed,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    executors: BTreeMap<ExecutorId, Executor>,
    next_id: u64,
    /// How many executors serve each name.
    serving: rustc_hash::FxHashMap<Arc<str>, usize>,
    /// Per name, the names that compete with it (see [`Registry::cohort`]);
    /// made again whenever an executor comes or goes.
    cohorts: rustc_hash::FxHashMap<Arc<str>, Arc<[Arc<str>]>>,
}

impl Registry {
    pub(crate) fn add(&mut self, executor: Executor) -> ExecutorId {
        self.next_id += 1;
        let id = ExecutorId(self.next_id);
        for name in &executor.tasks {
            *self.serving.entry(Arc::clone(name)).or_default() += 1;
        }
        self.executors.insert(id, executor);
        self.cohorts.clear();
        id
    }

    pub(crate) fn remove(&mut self, id: ExecutorId) -> Option<Executor> {
        let executor = self.executors.remove(&id)?;
        self.cohorts.clear();
        for name in &executor.tasks {
            if let Some(n) = self.serving.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    self.serving.remove(name);
                }
            }
        }
        Some(executor)
    }

    pub(crate) fn get(&self, id: ExecutorId) -> Option<&Executor> {
        self.executors.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ExecutorId) -> Option<&mut Executor> {
        self.executors.get_mut(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ExecutorId, &Executor)> {
        self.executors.iter().map(|(id, e)| (*id, e))
    }

    pub(crate) fn serves(&self, name: &str) -> bool {
        self.serving.contains_key(name)
    }

    /// Executors with a free slot, the least busy first (then the oldest).
    pub(crate) fn with_free_slots(&self) -> Vec<ExecutorId> {
        let mut free: Vec<(usize, ExecutorId)> = self
            .executors
            .iter()
            .filter(|(_, e)| e.free() > 0)
            .map(|(id, e)| (e.held.len(), *id))
            .collect();
        free.sort_unstable();
        free.into_iter().map(|(_, id)| id).collect()
    }

    /// The task names that compete with `name` for executors: every name
    /// served by an executor that serves `name` (just `name` if none does).
    pub(crate) fn cohort(&mut self, name: &Arc<str>) -> Arc<[Arc<str>]> {
        if let Some(found) = self.cohorts.get(name) {
            return Arc::clone(found);
        }
        let cohort: Arc<[Arc<str>]> = self.make_cohort(name).into();
        self.cohorts.insert(Arc::clone(name), Arc::clone(&cohort));
        cohort
    }

    /// [`Registry::cohort`] without the cache (for views, which hold `&self`).
    pub(crate) fn make_cohort(&self, name: &Arc<str>) -> Vec<Arc<str>> {
        let mut cohort: Vec<Arc<str>> = vec![Arc::clone(name)];
        for executor in self.executors.values() {
            if executor.tasks.iter().any(|t| t == name) {
                for other in &executor.tasks {
                    if !cohort.contains(other) {
                        cohort.push(Arc::clone(other));
                    }
                }
            }
        }
        cohort
    }

    /// Slots in all, and slots held.
    pub(crate) fn slot_counts(&self) -> (usize, usize) {
        self.executors.values().fold((0, 0), |(all, busy), e| {
            (all + e.slots, busy + e.held.len())
        })
    }
}
