//! Finished tasks, oldest first: how long each is held and what holding
//! them costs.
//!
//! A finished task is forgotten at its deadline (`result_ttl` after it
//! ended), or earlier, oldest first, when more than `max_held_tasks` are
//! held or their events (results, errors, progress data) pass
//! `max_held_result_bytes`.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::task::TaskId;

#[derive(Debug, Default)]
pub(crate) struct Retention {
    finished: VecDeque<(Instant, TaskId, usize)>,
    bytes: usize,
}

impl Retention {
    pub(crate) fn push(&mut self, forget_at: Instant, id: TaskId, bytes: usize) {
        self.finished.push_back((forget_at, id, bytes));
        self.bytes += bytes;
    }

    /// The next task to forget at `now` under the bounds, if any.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        max_tasks: usize,
        max_bytes: usize,
    ) -> Option<TaskId> {
        let &(at, id, bytes) = self.finished.front()?;
        if at > now && self.finished.len() <= max_tasks && self.bytes <= max_bytes {
            return None;
        }
        self.finished.pop_front();
        self.bytes -= bytes;
        Some(id)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.finished.front().map(|(at, _, _)| *at)
    }

    /// The most recently finished tasks, newest first.
    pub(crate) fn recent(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.finished.iter().rev().map(|(_, id, _)| *id)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u8) -> TaskId {
        format!("{n:032x}").parse().expect("hex")
    }

    #[test]
    fn forgets_by_deadline_count_and_bytes() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut r = Retention::default();
        r.push(later, id(1), 100);
        r.push(later, id(2), 100);
        r.push(later, id(3), 100);
        assert_eq!(r.pop_due(now, 10, 1000), None);
        // Over the count: the oldest goes first.
        assert_eq!(r.pop_due(now, 2, 1000), Some(id(1)));
        assert_eq!(r.pop_due(now, 2, 1000), None);
        // Over the bytes.
        assert_eq!(r.pop_due(now, 10, 150), Some(id(2)));
        assert_eq!(r.pop_due(now, 10, 150), None);
        assert_eq!(r.bytes(), 100);
        // At the deadline.
        assert_eq!(r.pop_due(later, 10, 1000), Some(id(3)));
        assert_eq!(r.next_deadline(), None);
    }
}
