//! Idempotency keys: (client, task name, key) → the task they first named.
//!
//! A key is remembered as long as its task is held; forgetting the task
//! forgets the key (only if it still points at that task).

use std::collections::HashMap;
use std::sync::Arc;

use crate::task::{ClientId, TaskId};

type Key = (ClientId, Arc<str>, Box<str>);

#[derive(Debug, Default)]
pub(crate) struct Idempotency {
    keys: HashMap<Key, TaskId>,
}

impl Idempotency {
    pub(crate) fn find(&self, client: &ClientId, name: &Arc<str>, key: &str) -> Option<TaskId> {
        // Lookups build the owned key: keys are short (≤ 256 bytes) and only
        // submits that carry one pay for it.
        self.keys
            .get(&(client.clone(), Arc::clone(name), Box::from(key)))
            .copied()
    }

    pub(crate) fn remember(&mut self, client: &ClientId, name: &Arc<str>, key: &str, id: TaskId) {
        self.keys
            .insert((client.clone(), Arc::clone(name), Box::from(key)), id);
    }

    pub(crate) fn forget(&mut self, client: &ClientId, name: &Arc<str>, key: &str, id: TaskId) {
        let entry = (client.clone(), Arc::clone(name), Box::from(key));
        if self.keys.get(&entry) == Some(&id) {
            self.keys.remove(&entry);
        }
    }
}
