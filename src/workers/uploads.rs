//! Remote workers' uploads: one stage per running attempt, filled by
//! `PUT {upload_url}/{name}` (`server/worker_upload.rs`) and published at
//! `complete`. Only the key that was assigned the attempt may upload, only
//! while the attempt is current; a lost or failed attempt's uploads go with
//! its stage.

use std::sync::Arc;

use dashmap::DashMap;

use crate::artifacts::Stage;
use crate::task::TaskId;

/// The stages of remote attempts; cheap to clone. A sharded map: uploads
/// of different attempts never wait on each other, and no lock is held
/// across an `.await`.
#[derive(Clone, Debug, Default)]
pub struct Uploads {
    slots: Arc<DashMap<(TaskId, u32), Slot>>,
}

#[derive(Debug)]
struct Slot {
    owner: Arc<str>,
    /// `None` while an upload is writing into it.
    stage: Option<Stage>,
}

/// Why an upload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("this attempt is not running on a worker of this key")]
    NotCurrent,
    #[error("another upload of this attempt is in progress")]
    Busy,
}

impl Uploads {
    /// An attempt was assigned to a worker of key `owner`.
    pub fn open(&self, task_id: TaskId, attempt: u32, owner: Arc<str>, stage: Stage) {
        self.slots.insert(
            (task_id, attempt),
            Slot {
                owner,
                stage: Some(stage),
            },
        );
    }

    /// The attempt ended without completing: its uploads are deleted.
    pub fn close(&self, task_id: TaskId, attempt: u32) {
        if let Some((_, slot)) = self.slots.remove(&(task_id, attempt))
            && let Some(stage) = slot.stage
        {
            drop(tokio::task::spawn_blocking(move || drop(stage)));
        }
    }

    /// The attempt completed: its stage, to publish.
    pub fn take(&self, task_id: TaskId, attempt: u32) -> Option<Stage> {
        self.slots
            .remove(&(task_id, attempt))
            .and_then(|(_, slot)| slot.stage)
    }

    /// Takes the stage for one upload.
    pub fn checkout(
        &self,
        task_id: TaskId,
        attempt: u32,
        owner: &str,
    ) -> Result<Stage, UploadError> {
        let mut slot = self
            .slots
            .get_mut(&(task_id, attempt))
            .ok_or(UploadError::NotCurrent)?;
        if *slot.owner != *owner {
            return Err(UploadError::NotCurrent);
        }
        slot.stage.take().ok_or(UploadError::Busy)
    }

    /// Gives the stage back after an upload; dropped if the attempt ended
    /// meanwhile.
    pub fn checkin(&self, task_id: TaskId, attempt: u32, stage: Stage) {
        match self.slots.get_mut(&(task_id, attempt)) {
            Some(mut slot) => slot.stage = Some(stage),
            None => drop(tokio::task::spawn_blocking(move || drop(stage))),
        }
    }
}
