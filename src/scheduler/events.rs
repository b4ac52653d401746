//! One task's event log: numbering, the hold policy, replay.
//!
//! Events are numbered 1, 2, 3 … without gaps as they are made. At most
//! `max` are held for replay: past that, a new `progress` replaces the last
//! held event if that is a `progress` too (and is not held otherwise), while
//! every other kind of event is always held, so a late subscriber always
//! sees `accepted`, each `started`, questions and answers, and the terminal
//! event. Live subscribers get every event whatever is held.

use std::sync::Arc;

use crate::task::{EventRecord, TaskEvent, TaskId};

#[derive(Debug)]
pub(crate) struct EventLog {
    held: Vec<Arc<EventRecord>>,
    next_seq: u64,
    /// Approximate memory of the held events (`TaskEvent::held_bytes`).
    bytes: usize,
}

impl EventLog {
    pub(crate) fn new() -> EventLog {
        EventLog {
            held: Vec::with_capacity(4),
            next_seq: 1,
            bytes: 0,
        }
    }

    /// Numbers `event`, holds it under the policy, and returns it.
    pub(crate) fn push(
        &mut self,
        task_id: TaskId,
        event: TaskEvent,
        max: usize,
    ) -> Arc<EventRecord> {
        let is_progress = matches!(event, TaskEvent::Progress(_));
        let size = event.held_bytes();
        let record = Arc::new(EventRecord::new(task_id, self.next_seq, event));
        self.next_seq += 1;
        if !is_progress || self.held.len() < max {
            self.held.push(Arc::clone(&record));
            self.bytes += size;
        } else if let Some(last) = self
            .held
            .last_mut()
            .filter(|e| matches!(e.event, TaskEvent::Progress(_)))
        {
            self.bytes = self.bytes.saturating_sub(last.event.held_bytes()) + size;
            *last = Arc::clone(&record);
        }
        record
    }

    /// Holds an event numbered elsewhere (cluster mode: the next `seq` of
    /// the task's stream); numbering continues after it.
    pub(crate) fn push_numbered(&mut self, record: Arc<EventRecord>, max: usize) {
        let is_progress = matches!(record.event, TaskEvent::Progress(_));
        let size = record.event.held_bytes();
        self.next_seq = record.seq + 1;
        if !is_progress || self.held.len() < max {
            self.held.push(record);
            self.bytes += size;
        } else if let Some(last) = self
            .held
            .last_mut()
            .filter(|e| matches!(e.event, TaskEvent::Progress(_)))
        {
            self.bytes = self.bytes.saturating_sub(last.event.held_bytes()) + size;
            *last = record;
        }
    }

    /// Held events with `seq > after_seq`, in order.
    pub(crate) fn replay(&self, after_seq: u64) -> Vec<Arc<EventRecord>> {
        let from = self.held.partition_point(|e| e.seq <= after_seq);
        self.held[from..].to_vec()
    }

    /// The first event (`accepted`).
    pub(crate) fn first(&self) -> Option<&Arc<EventRecord>> {
        self.held.first()
    }

    pub(crate) fn last(&self) -> Option<&Arc<EventRecord>> {
        self.held.last()
    }

    /// The seq of the newest event (0 before the first).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{CancelReason, Progress};
    use proptest::prelude::*;

    fn progress(n: u64) -> TaskEvent {
        TaskEvent::Progress(Progress {
            fraction: None,
            message: Some(format!("step {n}")),
            data: None,
        })
    }

    fn id() -> TaskId {
        "0123456789abcdef0123456789abcdef".parse().expect("hex")
    }

    #[test]
    fn numbers_without_gaps_and_replays_after_seq() {
        let mut log = EventLog::new();
        for n in 0..5 {
            log.push(id(), progress(n), 100);
        }
        assert_eq!(log.last_seq(), 5);
        let seqs: Vec<u64> = log.replay(2).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert!(log.replay(5).is_empty());
    }

    #[test]
    fn past_the_bound_progress_replaces_progress() {
        let mut log = EventLog::new();
        log.push(id(), TaskEvent::Accepted { position: 0 }, 3);
        for n in 0..10 {
            log.push(id(), progress(n), 3);
        }
        log.push(id(), TaskEvent::Cancelled(CancelReason::Client), 3);
        let seqs: Vec<u64> = log.replay(0).iter().map(|e| e.seq).collect();
        // accepted, the first progress, the newest progress, the terminal.
        assert_eq!(seqs, vec![1, 2, 11, 12]);
        assert_eq!(log.last_seq(), 12);
    }

    proptest! {
        /// The hold policy: seqs are 1..=n in order; non-progress events are
        /// always held; at most `max` progress events are held.
        #[test]
        fn hold_policy(kinds in proptest::collection::vec(0..4u8, 1..200), max in 1..20usize) {
            let mut log = EventLog::new();
            let mut non_progress = Vec::new();
            for (i, kind) in kinds.iter().enumerate() {
                let seq = i as u64 + 1;
                let event = match kind {
                    0 => TaskEvent::Accepted { position: 0 },
                    1 => TaskEvent::Cancelled(CancelReason::Client),
                    _ => progress(seq),
                };
                if *kind < 2 {
                    non_progress.push(seq);
                }
                let record = log.push(id(), event, max);
                prop_assert_eq!(record.seq, seq);
            }
            let held: Vec<u64> = log.replay(0).iter().map(|e| e.seq).collect();
            prop_assert!(held.windows(2).all(|w| w[0] < w[1]));
            for seq in &non_progress {
                prop_assert!(held.contains(seq));
            }
            let held_progress = held.iter().filter(|s| !non_progress.contains(s)).count();
            prop_assert!(held_progress <= max);
            prop_assert_eq!(log.last_seq(), kinds.len() as u64);
        }
    }
}
