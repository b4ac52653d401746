//! [`TaskCtx`]: everything a running task may touch.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use super::TaskError;
use crate::artifacts::{Stage, StageError, StagedFile};
use crate::exec::{Report, Reporter};
use crate::task::{Answer, FailureKind, Progress, QuestionSpec, TaskFailure, TaskId};

/// A running task's handle on the server: progress, cancellation, its
/// deadline, blocking work, and files. Cheap to clone; clones may move into
/// blocking closures.
#[derive(Clone, Debug)]
pub struct TaskCtx {
    inner: Arc<Inner>,
}

/// Why [`TaskCtx::ask`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The question was refused (another one is open, or it is malformed).
    #[error("question refused: {0}")]
    Refused(String),
    /// The task is being stopped (cancelled, timed out, shutdown).
    #[error("the task was stopped while it waited for an answer")]
    Stopped,
}

#[derive(Debug)]
struct Inner {
    task_id: TaskId,
    attempt: u32,
    reporter: Reporter,
    cancel: CancellationToken,
    deadline: Instant,
    /// The task's files; taken by the worker when the task completes.
    stage: Mutex<Option<Stage>>,
    /// Blocking work of this task: its worker slot is not reused before
    /// this is empty, even if the task was cancelled or timed out.
    blocking: TaskTracker,
    /// Where the answer to the open question goes.
    answer: Mutex<Option<oneshot::Sender<Result<Answer, AskError>>>>,
}

impl TaskCtx {
    pub(crate) fn new(
        task_id: TaskId,
        attempt: u32,
        reporter: Reporter,
        cancel: CancellationToken,
        deadline: Instant,
        stage: Stage,
    ) -> TaskCtx {
        TaskCtx {
            inner: Arc::new(Inner {
                task_id,
                attempt,
                reporter,
                cancel,
                deadline,
                stage: Mutex::new(Some(stage)),
                blocking: TaskTracker::new(),
                answer: Mutex::new(None),
            }),
        }
    }

    pub fn task_id(&self) -> TaskId {
        self.inner.task_id
    }

    /// Reports progress (waits if the scheduler is behind: progress is
    /// never dropped between the task and the scheduler).
    pub async fn progress(&self, progress: Progress) {
        let report = Report::Progress {
            task_id: self.inner.task_id,
            attempt: self.inner.attempt,
            progress,
        };
        // A closed channel means the server is going away; nothing to tell.
        let _ = self.inner.reporter.send(report).await;
    }

    /// [`TaskCtx::progress`] from blocking code (never call it on an async thread).
    pub fn progress_blocking(&self, progress: Progress) {
        let report = Report::Progress {
            task_id: self.inner.task_id,
            attempt: self.inner.attempt,
            progress,
        };
        let _ = self.inner.reporter.blocking_send(report);
    }

    /// Asks the task's submitter a question and waits for the answer
    /// (`docs/protocol.md` §7). The answer's `outcome` says whether someone
    /// answered, or it timed out (then `value` is the default, if any), or
    /// the submitter cannot be asked (`interactive: false`). The wait does
    /// not count against the task's timeout.
    pub async fn ask(&self, question: QuestionSpec) -> Result<Answer, AskError> {
        let (tx, rx) = oneshot::channel();
        *self.lock_answer() = Some(tx);
        let report = Report::Ask {
            task_id: self.inner.task_id,
            attempt: self.inner.attempt,
            question,
        };
        if !self.inner.reporter.send(report).await {
            return Err(AskError::Stopped);
        }
        tokio::select! {
            answer = rx => answer.unwrap_or(Err(AskError::Stopped)),
            () = self.inner.cancel.cancelled() => Err(AskError::Stopped),
        }
    }

    fn lock_answer(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<oneshot::Sender<Result<Answer, AskError>>>> {
        self.inner
            .answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The executor's side: the answer to the open question arrived.
    pub(crate) fn deliver_answer(&self, answer: Result<Answer, AskError>) {
        if let Some(tx) = self.lock_answer().take() {
            let _ = tx.send(answer);
        }
    }

    /// Which attempt of the task this is (1, then 2 … after a re-queue).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }

    /// Whether the task was cancelled (by a client, a disconnect, its
    /// timeout, or shutdown). Blocking code polls this.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the task is cancelled.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }

    /// When the task's `timeout_s` runs out.
    pub fn deadline(&self) -> Instant {
        self.inner.deadline
    }

    /// Runs CPU-heavy or blocking work off the async threads. A panic in
    /// `work` fails the task with `task_error`.
    pub async fn spawn_blocking<F, R>(&self, work: F) -> Result<R, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let handle = self.inner.blocking.spawn_blocking(work);
        match handle.await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => Err(TaskError::task(panic_message(e.into_panic()))),
            Err(e) => Err(TaskError::internal(format!("blocking work lost: {e}"))),
        }
    }

    /// Opens a new output file of this task; blocking IO, so call it from
    /// blocking work. The file is published only if the task completes.
    pub fn create_file(&self, name: &str, content_type: &str) -> Result<FileWriter, TaskError> {
        let mut stage = self.lock_stage();
        let stage = stage
            .as_mut()
            .ok_or_else(|| TaskError::internal("the task already ended"))?;
        let file = stage.create_file(name, content_type).map_err(stage_error)?;
        Ok(FileWriter {
            file,
            ctx: self.clone(),
        })
    }

    fn lock_stage(&self) -> std::sync::MutexGuard<'_, Option<Stage>> {
        self.inner
            .stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker's side: the files, once the task completed.
    pub(crate) fn take_stage(&self) -> Option<Stage> {
        self.lock_stage().take()
    }

    /// The worker's side: whether no blocking work of this task runs.
    pub(crate) fn blocking_idle(&self) -> bool {
        self.inner.blocking.is_empty()
    }

    /// The worker's side: waits until no blocking work of this task runs.
    pub(crate) async fn blocking_done(&self) {
        self.inner.blocking.close();
        self.inner.blocking.wait().await;
    }
}

/// An output file being written: `std::io::Write`, then [`FileWriter::finish`].
/// Dropped without `finish`, the file is discarded.
#[derive(Debug)]
pub struct FileWriter {
    file: StagedFile,
    ctx: TaskCtx,
}

impl FileWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.file.size()
    }

    /// Finishes the file; it is published when the task completes.
    pub fn finish(self) -> Result<(), TaskError> {
        let mut stage = self.ctx.lock_stage();
        let stage = stage
            .as_mut()
            .ok_or_else(|| TaskError::internal("the task already ended"))?;
        stage.add(self.file).map_err(stage_error)
    }

    /// Maps a write error to the task's failure (`storage_full` past the quota).
    pub fn write_error(error: &std::io::Error) -> TaskError {
        if crate::artifacts::is_storage_full(error) {
            TaskError(TaskFailure::new(
                FailureKind::StorageFull,
                "the temporary area is full (max_temp_bytes)",
            ))
        } else {
            TaskError::internal(format!("writing an output file: {error}"))
        }
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn stage_error(error: StageError) -> TaskError {
    match error {
        StageError::StorageFull { max } => TaskError(TaskFailure::new(
            FailureKind::StorageFull,
            format!("the temporary area is full (max_temp_bytes = {max})"),
        )),
        StageError::Io(e) => FileWriter::write_error(&e),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("the task panicked: {text}")
}
