//! A connection's bounded inbox, and what the scheduler puts in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Refusal, Stats, TaskView, WorkerView};
use crate::task::{EventRecord, TaskId};
use crate::telemetry::Metrics;

/// What the scheduler pushes to a connection (a WebSocket or an SSE stream).
#[derive(Debug)]
pub enum Outbound {
    /// A task event. `reference` and `duplicate` make a private copy (the
    /// reply to this client's own request); `stream` asks the connection
    /// to send the files as bytes before this (completed) event.
    Event {
        record: Arc<EventRecord>,
        reference: Option<Box<str>>,
        duplicate: bool,
        stream: bool,
    },
    /// Held events replayed to a new subscriber, in order.
    Replay(Vec<Arc<EventRecord>>),
    /// A submit the scheduler refused.
    Rejected {
        reference: Option<Box<str>>,
        error: Box<Refusal>,
    },
    /// Any other request the scheduler refused.
    Error {
        reference: Option<Box<str>>,
        error: Box<Refusal>,
    },
    Unsubscribed {
        reference: Option<Box<str>>,
        task_id: TaskId,
    },
    /// Admin `watch` reply: every held task, every executor, the counters.
    Watching(Box<Watching>),
    /// Admin: a task changed.
    TaskUpdate(Box<TaskView>),
    /// Admin: an executor connected, changed or left.
    WorkerUpdate(Box<WorkerView>),
    /// Admin: the counters changed.
    Stats(Box<Stats>),
}

/// The admin `watch` reply's content.
#[derive(Debug)]
pub struct Watching {
    pub reference: Option<Box<str>>,
    pub tasks: Vec<TaskView>,
    pub workers: Vec<WorkerView>,
    pub stats: Stats,
}

/// A mailbox's id, unique for the life of the process.
pub(crate) type MailboxId = u64;

/// A connection's bounded inbox. Cloned into every task it follows.
#[derive(Clone, Debug)]
pub struct Mailbox {
    id: MailboxId,
    tx: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages, its receiver, and the
    /// token cancelled when it overflows.
    pub fn new(capacity: usize) -> (Mailbox, mpsc::Receiver<Outbound>, CancellationToken) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let mailbox = Mailbox {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            tx,
            overflow: overflow.clone(),
        };
        (mailbox, rx, overflow)
    }

    pub fn id(&self) -> MailboxId {
        self.id
    }

    /// Delivers without waiting; false when the mailbox is gone or just
    /// overflowed (its connection is then closing).
    pub(crate) fn deliver(&self, message: Outbound, metrics: &Metrics) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflow.is_cancelled() {
                    metrics.slow_consumers.inc();
                    self.overflow.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every mailbox's channel allocates its first block of 32 slots when
    /// it is made: an idle connection pays 32 × this. The rare, large
    /// variants are boxed to keep it small.
    #[test]
    fn an_outbound_message_stays_small() {
        let size = std::mem::size_of::<super::Outbound>();
        assert!(size <= 48, "Outbound is {size} bytes");
    }
}
