//! Carries out a [`Session`]'s effects: the registration, reports to the
//! scheduler, each attempt's files (an output directory for a managed
//! worker, uploads for a remote one), publishing at `complete`. The
//! transports (`stdio.rs`, `server/worker_ws.rs`) own the bytes: they feed
//! frames in and send what [`Driver::take_outgoing`] gives them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::board;
use super::session::{Effect, Phase, Place, Session};
use super::uploads::Uploads;
use crate::artifacts::{AdoptError, Artifacts, ListedFile, OutputDir, Stage};
use crate::exec::{ExecutorId, LostCause, Order, Outcome, Report, Reporter};
use crate::protocol::worker::{FileEntry, ServerMessage, WorkerCloseCode};
use crate::scheduler::Scheduler;
use crate::task::{FailureKind, TaskFailure, TaskId};

/// Where an attempt's files come from.
#[derive(Debug, Clone)]
pub enum Files {
    /// A fresh directory per attempt, adopted at `complete`.
    OutputDir,
    /// `PUT {upload_url}/{name}` into the attempt's stage.
    Uploads {
        uploads: Uploads,
        /// `…/v1/worker/uploads` (absolute under `public_url`).
        base_url: String,
        /// The worker key's name: only it may upload.
        owner: Arc<str>,
    },
}

#[derive(Debug)]
struct AttemptFiles {
    started: Instant,
    dir: Option<OutputDir>,
}

/// A session with its IO around it.
#[derive(Debug)]
pub struct Driver {
    pub session: Session,
    scheduler: Scheduler,
    artifacts: Artifacts,
    files: Files,
    max_file_bytes: u64,
    registration: Option<(ExecutorId, mpsc::Receiver<Order>, Reporter)>,
    attempts: HashMap<(TaskId, u32), AttemptFiles>,
    entry: board::Entry,
    /// Frames waiting for the transport.
    outgoing: Vec<String>,
    /// Set when the session ended: how to close, and why (lost or not).
    end: Option<(WorkerCloseCode, Option<LostCause>)>,
    /// What the board was last shown: phase, running attempts, when.
    shown: (Phase, usize, Instant),
    /// Empty output directories of finished attempts, for the next ones.
    free_dirs: Vec<OutputDir>,
}

/// The board is refreshed at most this often while nothing changes shape.
const BOARD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Driver {
    pub fn new(
        session: Session,
        scheduler: Scheduler,
        artifacts: Artifacts,
        files: Files,
        max_file_bytes: u64,
        entry: board::Entry,
    ) -> Driver {
        Driver {
            session,
            scheduler,
            artifacts,
            files,
            max_file_bytes,
            registration: None,
            attempts: HashMap::new(),
            entry,
            outgoing: Vec::new(),
            end: None,
            shown: (Phase::Closed, usize::MAX, Instant::now()),
            free_dirs: Vec::new(),
        }
    }

    /// Frames to send now, in order.
    pub fn take_outgoing(&mut self) -> Vec<String> {
        std::mem::take(&mut self.outgoing)
    }

    /// How the session ended, once it has.
    pub fn end(&self) -> Option<&(WorkerCloseCode, Option<LostCause>)> {
        self.end.as_ref()
    }

    /// The executor id, once registered.
    pub fn executor(&self) -> Option<ExecutorId> {
        self.registration.as_ref().map(|(id, _, _)| *id)
    }

    /// The next order; never completes before the registration.
    pub async fn next_order(&mut self) -> Option<Order> {
        match &mut self.registration {
            Some((_, orders, _)) => orders.recv().await,
            None => std::future::pending().await,
        }
    }

    pub async fn frame(&mut self, text: &str) {
        let mut out = Vec::new();
        self.session.on_frame(text, Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn unreadable(&mut self, message: &str) {
        let mut out = Vec::new();
        self.session
            .on_unreadable(message, Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn oversize(&mut self) {
        let mut out = Vec::new();
        self.session.on_oversize(Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn drain(&mut self) {
        let mut out = Vec::new();
        self.session.drain(Instant::now(), &mut out);
        self.run(out).await;
    }

    /// A remote worker's new connection took this session over.
    pub async fn reattach(&mut self, hello: &str) {
        let mut out = Vec::new();
        self.session.reattach(hello, Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn tick(&mut self) {
        let mut out = Vec::new();
        self.session.on_tick(Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn closed(&mut self, exit: Option<LostCause>) {
        let mut out = Vec::new();
        self.session.on_closed(exit, Instant::now(), &mut out);
        self.run(out).await;
    }

    pub async fn shutdown(&mut self) {
        let mut out = Vec::new();
        self.session.shutdown(&mut out);
        self.run(out).await;
    }

    /// The scheduler closed our order channel: it has stopped.
    pub async fn orders_closed(&mut self) {
        self.registration = None;
        self.shutdown().await;
    }

    pub async fn order(&mut self, order: Order) {
        let now = Instant::now();
        let mut out = Vec::new();
        match order {
            Order::Assign(assignment) => {
                let key = (assignment.task_id, assignment.attempt);
                let mut files = AttemptFiles {
                    started: now,
                    dir: None,
                };
                let place_text = match &self.files {
                    // A reused empty directory, or a new one (see artifacts/adopt.rs).
                    Files::OutputDir => match self.free_dirs.pop() {
                        Some(dir) => {
                            let text = dir.path().to_string_lossy().into_owned();
                            files.dir = Some(dir);
                            Some(text)
                        }
                        None => {
                            let artifacts = self.artifacts.clone();
                            match tokio::task::spawn_blocking(move || artifacts.output_dir()).await
                            {
                                Ok(Ok(dir)) => {
                                    let text = dir.path().to_string_lossy().into_owned();
                                    files.dir = Some(dir);
                                    Some(text)
                                }
                                Ok(Err(e)) => {
                                    tracing::error!(error = %e, "cannot make an output directory");
                                    None
                                }
                                Err(_) => None,
                            }
                        }
                    },
                    Files::Uploads {
                        uploads,
                        base_url,
                        owner,
                    } => {
                        uploads.open(key.0, key.1, Arc::clone(owner), self.artifacts.stage());
                        Some(format!("{base_url}/{}/{}", key.0, key.1))
                    }
                };
                self.attempts.insert(key, files);
                let place = match (&self.files, place_text.as_deref()) {
                    (Files::OutputDir, Some(dir)) => Place::OutputDir(dir),
                    (Files::Uploads { .. }, Some(url)) => Place::UploadUrl(url),
                    _ => Place::None,
                };
                self.session
                    .on_order(Order::Assign(assignment), place, now, &mut out);
            }
            other => self.session.on_order(other, Place::None, now, &mut out),
        }
        self.run(out).await;
    }

    async fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(text) => self.outgoing.push(text),
                Effect::Report(report) => self.report(report).await,
                Effect::Register(spec) => {
                    let tasks: Vec<Arc<str>> =
                        spec.tasks.iter().map(|t| Arc::clone(&t.name)).collect();
                    let slots = spec.slots;
                    let name = Arc::clone(&spec.name);
                    let result = super::register(&self.scheduler, spec).await;
                    let mut out = Vec::new();
                    match result {
                        Ok(registration) => {
                            self.entry.update(|v| {
                                v.id = Some(registration.id.to_string());
                                v.name = name;
                                v.tasks = tasks;
                                v.slots = slots;
                            });
                            self.session.registered(
                                registration.id.to_string(),
                                Instant::now(),
                                &mut out,
                            );
                            self.registration =
                                Some((registration.id, registration.orders, registration.reporter));
                        }
                        Err(e) => {
                            tracing::warn!(worker = %name, error = %e, "worker registration refused");
                            self.session.refused(&e, Instant::now(), &mut out);
                        }
                    }
                    // These follow-ups have no registration effects of their own.
                    Box::pin(self.run(out)).await;
                }
                Effect::Complete {
                    task_id,
                    attempt,
                    result,
                    files,
                    reference,
                } => {
                    let outcome = self.publish(task_id, attempt, result, files).await;
                    self.report(Report::Finished {
                        task_id,
                        attempt,
                        outcome,
                        slot_free: true,
                    })
                    .await;
                    if let Some(reference) = reference {
                        self.outgoing.push(
                            ServerMessage::Ok {
                                reference: &reference,
                            }
                            .to_json(),
                        );
                    }
                }
                Effect::Release { task_id, attempt } => self.release(task_id, attempt),
                Effect::Close { code, cause } => {
                    if cause.is_some() && self.registration.is_some() {
                        self.entry.update(|v| v.state = "gone");
                    }
                    self.end.get_or_insert((code, cause));
                }
            }
        }
        self.show();
    }

    async fn report(&mut self, report: Report) {
        if let Report::Gone { cause: Some(_) } = &report {
            self.entry.lost();
        }
        if let Some((_, _, reporter)) = &self.registration {
            let gone = matches!(report, Report::Gone { .. });
            if !reporter.send(report).await {
                tracing::debug!("scheduler stopped; report dropped");
            }
            if gone {
                self.registration = None;
            }
        }
    }

    fn release(&mut self, task_id: TaskId, attempt: u32) {
        if let Files::Uploads { uploads, .. } = &self.files {
            uploads.close(task_id, attempt);
        }
        if let Some(files) = self.attempts.remove(&(task_id, attempt))
            && let Some(dir) = files.dir
        {
            self.give_back(dir);
        }
    }

    async fn publish(
        &mut self,
        task_id: TaskId,
        attempt: u32,
        result: Box<serde_json::value::RawValue>,
        files: Vec<FileEntry>,
    ) -> Outcome {
        let attempt_files = self.attempts.remove(&(task_id, attempt));
        let started = attempt_files
            .as_ref()
            .map_or_else(Instant::now, |f| f.started);
        let stage: Result<Stage, TaskFailure> = match &self.files {
            Files::OutputDir => {
                let Some(dir) = attempt_files.and_then(|f| f.dir) else {
                    return Outcome::Failed(TaskFailure::new(
                        FailureKind::Internal,
                        "the attempt's output directory is gone",
                    ));
                };
                if files.is_empty() {
                    self.give_back(dir);
                    return Outcome::Completed {
                        result,
                        files: Vec::new(),
                        duration: started.elapsed(),
                    };
                }
                let listed: Vec<ListedFile> = files
                    .into_iter()
                    .map(|f| ListedFile {
                        path: f.path.unwrap_or_else(|| f.name.clone()),
                        name: f.name,
                        content_type: f.content_type,
                    })
                    .collect();
                let artifacts = self.artifacts.clone();
                let max = self.max_file_bytes;
                let adopted = tokio::task::spawn_blocking(move || {
                    let stage = artifacts.adopt(&dir, &listed, max);
                    (dir, stage)
                })
                .await;
                let adopted = match adopted {
                    Ok((dir, stage)) => {
                        self.give_back(dir);
                        Ok(stage)
                    }
                    Err(e) => Err(e),
                };
                match adopted {
                    Ok(Ok(stage)) => Ok(stage),
                    Ok(Err(e)) => Err(adopt_failure(&e)),
                    Err(_) => Err(TaskFailure::new(
                        FailureKind::Internal,
                        "adopting the files failed",
                    )),
                }
            }
            Files::Uploads { uploads, .. } => match uploads.take(task_id, attempt) {
                None => Err(TaskFailure::new(
                    FailureKind::Internal,
                    "the attempt's uploads are gone",
                )),
                Some(stage) => {
                    let names = stage.names();
                    match files
                        .iter()
                        .position(|f| !names.contains(&crate::artifacts::clean_name(&f.name)))
                    {
                        Some(index) => {
                            drop(tokio::task::spawn_blocking(move || drop(stage)));
                            Err(invalid_file(format!("files[{index}]: was not uploaded")))
                        }
                        None => Ok(stage),
                    }
                }
            },
        };
        let stage = match stage {
            Ok(stage) => stage,
            Err(failure) => return Outcome::Failed(failure),
        };
        match self.artifacts.publish(stage).await {
            Ok(files) => Outcome::Completed {
                result,
                files,
                duration: started.elapsed(),
            },
            Err(e) => {
                tracing::error!(task.id = %task_id, error = %e, "publishing a worker's files failed");
                Outcome::Failed(TaskFailure::new(
                    FailureKind::Internal,
                    "publishing the task's files failed",
                ))
            }
        }
    }

    /// An attempt's directory after the attempt: reused when it is empty
    /// again, else removed off the async threads.
    fn give_back(&mut self, dir: OutputDir) {
        if self.free_dirs.len() < self.session.slots().max(1) && dir.is_empty() {
            self.free_dirs.push(dir);
        } else {
            drop(tokio::task::spawn_blocking(move || drop(dir)));
        }
    }

    /// Mirrors the session on the board: at once when its phase changed or
    /// it became idle, else at most every 100 ms (the board is for people
    /// and gauges, not for every frame).
    fn show(&mut self) {
        let phase = self.session.phase();
        let busy = self.session.running().count();
        let now = Instant::now();
        let idle_now = busy == 0 && self.shown.1 != 0;
        if phase == self.shown.0 && !idle_now && now.duration_since(self.shown.2) < BOARD_EVERY {
            return;
        }
        self.shown = (phase, busy, now);
        let running: Vec<TaskId> = self.session.running().map(|(id, _)| id).collect();
        let stats = self.session.stats.clone();
        let registered = self.registration.is_some();
        self.entry.update(|v| {
            v.state = match phase {
                Phase::Hello { .. } | Phase::Registering => "starting",
                Phase::Ready if registered => "ready",
                Phase::Ready => "starting",
                Phase::Draining | Phase::Disconnected { .. } => "draining",
                Phase::Closed => "gone",
            };
            v.running = running;
            v.done = stats.done;
            v.failed = stats.failed;
            v.last_heartbeat_at = stats.last_heartbeat_at;
        });
    }
}

fn invalid_file(reason: String) -> TaskFailure {
    let mut failure = TaskFailure::new(
        FailureKind::TaskError,
        format!("the worker's files cannot be published: {reason}"),
    );
    failure.details = Some(serde_json::json!({ "invalid_file": reason }));
    failure
}

fn adopt_failure(error: &AdoptError) -> TaskFailure {
    match error {
        AdoptError::StorageFull { max } => TaskFailure::new(
            FailureKind::StorageFull,
            format!("the temporary area is full (max_temp_bytes = {max})"),
        ),
        AdoptError::Io(e) => {
            tracing::warn!(error = %e, "reading a worker's output file failed");
            TaskFailure::new(
                FailureKind::Internal,
                "reading the worker's output files failed",
            )
        }
        AdoptError::Invalid { .. } | AdoptError::TooLarge { .. } => invalid_file(error.to_string()),
    }
}
