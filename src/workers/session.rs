//! One worker's session as a state machine, without IO.
//!
//! It takes what happens — a frame from the worker, an [`Order`] from the
//! scheduler, the registration's answer, the transport closing, the clock —
//! and answers with [`Effect`]s for its driver (`stdio.rs` for managed
//! workers, `server/worker_ws.rs` for remote ones) to carry out in order:
//! frames to send, [`Report`]s for the scheduler, a registration to make, a
//! completed attempt whose files must be published, an end.
//!
//! What it enforces: the `hello` (declared tasks, their JSON Schemas, the
//! group's task filter); slots; the attempt fence (`stale_attempt`,
//! `not_assigned`; a repeat of an applied `complete`/`fail` is answered `ok`
//! again and never applied twice); violations per minute, then the end;
//! heartbeats both ways; a `cancel` that is not answered within its grace;
//! a remote worker's reconnect grace.
//!
//! **Architecture Invariant:** nothing here awaits, reads a clock or
//! touches a file: every instant comes in as an argument, so the whole
//! protocol is unit-tested synchronously below.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::exec::{
    Assignment, ExecutorKind, ExecutorSpec, LostCause, Order, Outcome, RegisterError, Report,
    TaskDecl,
};
use crate::protocol::worker::{
    self as wire, Assign, FileEntry, Hello, LogLevel, Resumed, ServerMessage, WorkerCloseCode,
    WorkerError, WorkerErrorCode, WorkerLimits, WorkerMessage, WorkerWelcome,
};
use crate::task::{
    AnswerOutcome, Choice, FailureKind, Progress, QuestionSpec, TaskFailure, TaskId,
};

/// The settings a session runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Time allowed for the first `hello`.
    pub hello_timeout: Duration,
    /// Remote only: how long a dropped connection's attempts wait for a
    /// reconnect with `resume` (zero for managed workers).
    pub reconnect_grace: Duration,
    pub max_violations: u32,
    pub max_message_bytes: u64,
    pub max_file_bytes: u64,
    /// Managed groups: only these declared names are served.
    pub task_filter: Option<Vec<String>>,
    /// `[[tasks]]`: where config declares a name, its schema and
    /// `retry_safe` win over the worker's.
    pub declared: Arc<HashMap<Arc<str>, TaskDecl>>,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Send this JSON text to the worker.
    Send(String),
    /// Tell the scheduler.
    Report(Report),
    /// Register this executor ([`Session::registered`] or
    /// [`Session::refused`] comes back).
    Register(ExecutorSpec),
    /// An attempt completed: publish its files (managed: adopt them from its
    /// output directory; remote: its uploads), then report
    /// [`Report::Finished`] and, when `reference` is set, send `ok`.
    Complete {
        task_id: TaskId,
        attempt: u32,
        result: Box<RawValue>,
        files: Vec<FileEntry>,
        reference: Option<String>,
    },
    /// An attempt ended without completing: drop its output directory or
    /// uploads.
    Release { task_id: TaskId, attempt: u32 },
    /// End the session (after sending what came before). Managed workers'
    /// processes are killed when `cause` is set.
    Close {
        code: WorkerCloseCode,
        cause: Option<LostCause>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `hello` until this instant.
    Hello {
        until: Instant,
    },
    /// `hello` was good; the registration is under way.
    Registering,
    Ready,
    /// Takes nothing new (it said `draining`, or the server sent `drain`).
    Draining,
    /// The transport dropped; attempts wait for a reconnect until then.
    Disconnected {
        until: Instant,
    },
    Closed,
}

#[derive(Debug)]
struct Running {
    attempt: u32,
    /// A `cancel` was sent; past this the worker is lost.
    cancel_by: Option<Instant>,
    /// The grace of that cancel (given again after a reconnect).
    cancel_grace: Option<Duration>,
    asking: bool,
    /// Assigned while the worker was disconnected: it does not know it yet.
    unsent: bool,
}

/// The worker session's state.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    kind: ExecutorKind,
    /// Managed: the name the supervisor gave the process; remote: `hello`'s.
    name: Option<Arc<str>>,
    prefix: Option<Arc<str>>,
    worker_id: Option<String>,
    phase: Phase,
    slots: usize,
    running: HashMap<TaskId, Running>,
    /// Attempts that ended here, newest last: a repeat of their terminal
    /// message is answered `ok`, a report about them is `stale_attempt`.
    ended: VecDeque<(TaskId, u32)>,
    /// Highest attempt ever seen per task, for `stale_attempt`.
    violations: VecDeque<Instant>,
    last_heard: Instant,
    last_sent: Instant,
    /// Attempts a first `hello` asked to resume (none is kept: no
    /// registration holds them), until the registration answers.
    resume: Vec<(TaskId, u32)>,
    /// Frames for a disconnected remote worker, sent when it comes back.
    pending: Vec<String>,
    /// A `drain` came while it was disconnected.
    drain_after: bool,
    /// What happened last, for the monitoring page.
    pub stats: SessionStats,
}

/// Counters shown on the monitoring page.
#[derive(Debug, Default, Clone)]
pub struct SessionStats {
    pub done: u64,
    pub failed: u64,
    pub last_heartbeat_at: Option<SystemTime>,
}

/// Frames held for a disconnected worker at most (then it is lost).
const MAX_PENDING: usize = 4096;
/// How many ended attempts are remembered for replays and fencing.
const ENDED_MEMORY: usize = 1024;
/// The window of `max_worker_violations`.
const VIOLATION_WINDOW: Duration = Duration::from_secs(60);

impl Session {
    /// A session whose transport just opened. `name` is the supervisor's
    /// name for a managed process (`None` for remote: `hello` names it).
    pub fn new(
        settings: Settings,
        kind: ExecutorKind,
        name: Option<Arc<str>>,
        now: Instant,
    ) -> Session {
        let until = now + settings.hello_timeout;
        Session {
            settings,
            kind,
            name,
            prefix: None,
            worker_id: None,
            phase: Phase::Hello { until },
            slots: 0,
            running: HashMap::new(),
            ended: VecDeque::new(),
            violations: VecDeque::new(),
            last_heard: now,
            last_sent: now,
            resume: Vec::new(),
            pending: Vec::new(),
            drain_after: false,
            stats: SessionStats::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Attempts running now.
    pub fn running(&self) -> impl Iterator<Item = (TaskId, u32)> + '_ {
        self.running.iter().map(|(id, r)| (*id, r.attempt))
    }

    /// When [`Session::on_tick`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = match self.phase {
            Phase::Hello { until } | Phase::Disconnected { until } => return Some(until),
            Phase::Closed => return None,
            Phase::Registering => None,
            Phase::Ready | Phase::Draining => Some(
                (self.last_sent + self.settings.heartbeat_interval)
                    .min(self.last_heard + self.settings.heartbeat_timeout),
            ),
        };
        for running in self.running.values() {
            if let Some(at) = running.cancel_by {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// A frame from the worker (a WebSocket text message or a stdio line).
    pub fn on_frame(&mut self, text: &str, now: Instant, out: &mut Vec<Effect>) {
        if matches!(self.phase, Phase::Closed | Phase::Disconnected { .. }) {
            return;
        }
        self.last_heard = now;
        self.stats.last_heartbeat_at = Some(SystemTime::now());
        if text.len() as u64 > self.settings.max_message_bytes {
            self.refuse(
                None,
                WorkerErrorCode::TooLarge,
                "message over max_message_bytes",
                now,
                out,
            );
            return;
        }
        let request = match wire::decode(text) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(
                    worker = self.shown_name(),
                    kind = e.kind,
                    "bad worker message"
                );
                if matches!(self.phase, Phase::Hello { .. }) && e.kind == Some("hello") {
                    // An unusable hello ends the session: nothing else can follow.
                    self.send_error(
                        e.reference.as_deref(),
                        WorkerErrorCode::BadMessage,
                        &e.message,
                        now,
                        out,
                    );
                    self.close(WorkerCloseCode::Violations, None, out);
                    return;
                }
                self.refuse(
                    e.reference.as_deref(),
                    WorkerErrorCode::BadMessage,
                    &e.message,
                    now,
                    out,
                );
                return;
            }
        };
        let reference = request.reference;
        match request.message {
            WorkerMessage::Hello(hello) => self.on_hello(hello, reference, now, out),
            _ if matches!(self.phase, Phase::Hello { .. } | Phase::Registering) => {
                self.refuse(
                    reference.as_deref(),
                    WorkerErrorCode::BadMessage,
                    "the first message must be hello",
                    now,
                    out,
                );
            }
            WorkerMessage::Heartbeat => {}
            WorkerMessage::Log {
                task_id,
                attempt,
                level,
                message,
            } => {
                let name = self.shown_name();
                let task = task_id.as_deref().unwrap_or("");
                let attempt = attempt.unwrap_or(0);
                match level {
                    LogLevel::Debug => {
                        tracing::debug!(worker = name, task.id = task, attempt, "{message}")
                    }
                    LogLevel::Info => {
                        tracing::info!(worker = name, task.id = task, attempt, "{message}")
                    }
                    LogLevel::Warn => {
                        tracing::warn!(worker = name, task.id = task, attempt, "{message}")
                    }
                    LogLevel::Error => {
                        tracing::error!(worker = name, task.id = task, attempt, "{message}")
                    }
                }
            }
            WorkerMessage::Progress {
                task_id,
                attempt,
                progress,
                message,
                data,
            } => {
                let Some(task_id) =
                    self.fence(&task_id, attempt, false, reference.as_deref(), now, out)
                else {
                    return;
                };
                out.push(Effect::Report(Report::Progress {
                    task_id,
                    attempt,
                    progress: Progress {
                        fraction: progress,
                        message,
                        data: data.map(ToOwned::to_owned),
                    },
                }));
            }
            WorkerMessage::Ask {
                task_id,
                attempt,
                question,
            } => {
                let Some(task_id) =
                    self.fence(&task_id, attempt, false, reference.as_deref(), now, out)
                else {
                    return;
                };
                let Some(running) = self.running.get_mut(&task_id) else {
                    return;
                };
                if running.asking {
                    self.refuse(
                        reference.as_deref(),
                        WorkerErrorCode::BadMessage,
                        "ask: a question of this attempt is open already",
                        now,
                        out,
                    );
                    return;
                }
                running.asking = true;
                out.push(Effect::Report(Report::Ask {
                    task_id,
                    attempt,
                    question: QuestionSpec {
                        question_id: question.question_id,
                        prompt: question.prompt,
                        choices: question.choices.map(|list| {
                            list.into_iter()
                                .map(|c| Choice {
                                    value: c.value,
                                    label: c.label,
                                })
                                .collect()
                        }),
                        schema: question.schema,
                        default: question.default,
                        timeout: question
                            .timeout_s
                            .and_then(|t| Duration::try_from_secs_f64(t).ok()),
                    },
                }));
            }
            WorkerMessage::Complete {
                task_id,
                attempt,
                result,
                files,
            } => {
                let Some(task_id) =
                    self.fence(&task_id, attempt, true, reference.as_deref(), now, out)
                else {
                    return;
                };
                let result = match result {
                    Some(raw) => raw.to_owned(),
                    None => null(),
                };
                self.end(task_id, attempt);
                self.stats.done += 1;
                out.push(Effect::Complete {
                    task_id,
                    attempt,
                    result,
                    files,
                    reference,
                });
            }
            WorkerMessage::Fail {
                task_id,
                attempt,
                error,
            } => {
                let Some(task_id) =
                    self.fence(&task_id, attempt, true, reference.as_deref(), now, out)
                else {
                    return;
                };
                let mut details = serde_json::Map::new();
                if let Some(code) = error.code {
                    details.insert("worker_code".to_owned(), serde_json::Value::String(code));
                }
                if let Some(more) = error.details {
                    details.insert("worker_details".to_owned(), more);
                }
                let failure = TaskFailure {
                    kind: FailureKind::TaskError,
                    message: error.message,
                    details: (!details.is_empty()).then_some(serde_json::Value::Object(details)),
                };
                self.end(task_id, attempt);
                self.stats.failed += 1;
                out.push(Effect::Release { task_id, attempt });
                out.push(Effect::Report(Report::Finished {
                    task_id,
                    attempt,
                    outcome: Outcome::Failed(failure),
                    slot_free: true,
                }));
                if let Some(reference) = reference {
                    self.send(
                        &ServerMessage::Ok {
                            reference: &reference,
                        },
                        now,
                        out,
                    );
                }
            }
            WorkerMessage::Cancelled { task_id, attempt } => {
                let Some(task_id) =
                    self.fence(&task_id, attempt, true, reference.as_deref(), now, out)
                else {
                    return;
                };
                let asked = self
                    .running
                    .get(&task_id)
                    .is_some_and(|r| r.cancel_by.is_some());
                self.end(task_id, attempt);
                out.push(Effect::Release { task_id, attempt });
                let outcome = if asked {
                    Outcome::Cancelled
                } else {
                    self.stats.failed += 1;
                    Outcome::Failed(TaskFailure::new(
                        FailureKind::TaskError,
                        "the worker cancelled the attempt without being asked to",
                    ))
                };
                out.push(Effect::Report(Report::Finished {
                    task_id,
                    attempt,
                    outcome,
                    slot_free: true,
                }));
            }
            WorkerMessage::Draining { reason } => {
                tracing::info!(
                    worker = self.shown_name(),
                    reason = reason.as_deref().unwrap_or(""),
                    "worker draining"
                );
                if self.phase == Phase::Ready {
                    self.phase = Phase::Draining;
                    out.push(Effect::Report(Report::Draining));
                }
            }
            WorkerMessage::Bye { reason } => {
                tracing::info!(
                    worker = self.shown_name(),
                    reason = reason.as_deref().unwrap_or(""),
                    "worker said bye"
                );
                let cause = (!self.running.is_empty()).then_some(LostCause::Disconnected);
                self.gone(cause.clone(), out);
                self.close(WorkerCloseCode::GoingAway, cause, out);
            }
        }
    }

    /// A frame the transport could not take as text (a binary frame).
    pub fn on_unreadable(&mut self, message: &str, now: Instant, out: &mut Vec<Effect>) {
        if matches!(self.phase, Phase::Closed | Phase::Disconnected { .. }) {
            return;
        }
        self.last_heard = now;
        self.refuse(None, WorkerErrorCode::BadMessage, message, now, out);
    }

    /// Remote workers are shown as `<key name>/<hello name>`, so workers of
    /// different keys never share a name.
    pub fn with_name_prefix(mut self, prefix: &str) -> Session {
        self.prefix = Some(Arc::from(prefix));
        self
    }

    /// A frame over `max_message_bytes` that the transport did not keep.
    pub fn on_oversize(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if matches!(self.phase, Phase::Closed | Phase::Disconnected { .. }) {
            return;
        }
        self.last_heard = now;
        self.refuse(
            None,
            WorkerErrorCode::TooLarge,
            "message over max_message_bytes",
            now,
            out,
        );
    }

    /// Stop taking work (a managed process that reached `max_tasks`, or
    /// the server draining); the session ends once nothing runs.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.phase != Phase::Ready {
            return;
        }
        self.phase = Phase::Draining;
        out.push(Effect::Report(Report::Draining));
        self.send(&ServerMessage::Drain, now, out);
    }

    /// Whether the session is draining with nothing left to run.
    pub fn idle_draining(&self) -> bool {
        self.phase == Phase::Draining && self.running.is_empty()
    }

    fn on_hello(
        &mut self,
        hello: Hello,
        reference: Option<String>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if !matches!(self.phase, Phase::Hello { .. }) {
            self.refuse(
                reference.as_deref(),
                WorkerErrorCode::BadMessage,
                "hello: already said",
                now,
                out,
            );
            return;
        }
        let mut tasks = Vec::new();
        for declared in hello.tasks {
            if let Some(filter) = &self.settings.task_filter
                && !filter.contains(&declared.name)
            {
                continue;
            }
            let name: Arc<str> = Arc::from(declared.name.as_str());
            if let Some(config) = self.settings.declared.get(&name) {
                let mut decl = config.clone();
                if decl.description.is_empty() {
                    decl.description = declared.description.unwrap_or_default();
                }
                tasks.push(decl);
                continue;
            }
            if let Some(schema) = &declared.input_schema
                && let Err(why) = super::schema::compile(schema)
            {
                let message = format!("hello: task {:?}: input_schema is {why}", declared.name);
                self.send_error(
                    reference.as_deref(),
                    WorkerErrorCode::BadMessage,
                    &message,
                    now,
                    out,
                );
                self.close(WorkerCloseCode::Violations, None, out);
                return;
            }
            tasks.push(TaskDecl {
                name,
                description: declared.description.unwrap_or_default(),
                input_schema: declared.input_schema,
                retry_safe: declared.retry_safe,
                timeout: declared
                    .timeout_s
                    .and_then(|t| Duration::try_from_secs_f64(t).ok()),
            });
        }
        if tasks.is_empty() {
            let message = "hello: none of the declared tasks is served by this group (see its `tasks` filter)";
            self.send_error(
                reference.as_deref(),
                WorkerErrorCode::BadMessage,
                message,
                now,
                out,
            );
            self.close(WorkerCloseCode::Violations, None, out);
            return;
        }
        let mut resume = Vec::new();
        if matches!(self.kind, ExecutorKind::Remote { .. }) {
            for entry in hello.resume {
                if let Ok(id) = entry.task_id.parse::<TaskId>() {
                    resume.push((id, entry.attempt));
                }
            }
        }
        if self.name.is_none() {
            self.name = Some(match &self.prefix {
                Some(prefix) => Arc::from(format!("{prefix}/{}", hello.worker.name)),
                None => Arc::from(hello.worker.name.as_str()),
            });
        }
        tracing::info!(
            worker = self.shown_name(),
            version = hello.worker.version.as_deref().unwrap_or(""),
            sdk = hello.worker.sdk.as_deref().unwrap_or(""),
            slots = hello.slots,
            tasks = tasks.len(),
            "worker said hello"
        );
        self.slots = hello.slots as usize;
        self.resume = resume.clone();
        self.phase = Phase::Registering;
        out.push(Effect::Register(ExecutorSpec {
            name: self.name.clone().unwrap_or_else(|| Arc::from("worker")),
            kind: self.kind.clone(),
            slots: self.slots,
            tasks,
        }));
    }

    /// The scheduler took the registration.
    /// A fresh session's `resume` names attempts that no registration of
    /// this worker holds (it came back too late, or to another server):
    /// none is kept.
    pub fn registered(&mut self, worker_id: String, now: Instant, out: &mut Vec<Effect>) {
        if self.phase != Phase::Registering {
            return;
        }
        let resumed: Vec<(TaskId, u32, bool)> = self
            .resume
            .drain(..)
            .map(|(id, attempt)| (id, attempt, false))
            .collect();
        self.worker_id = Some(worker_id);
        self.phase = Phase::Ready;
        self.welcome(&resumed, now, out);
    }

    fn welcome(&mut self, resumed: &[(TaskId, u32, bool)], now: Instant, out: &mut Vec<Effect>) {
        let texts: Vec<String> = resumed.iter().map(|(id, _, _)| id.to_string()).collect();
        let listed: Vec<Resumed<'_>> = resumed
            .iter()
            .zip(&texts)
            .map(|((_, attempt, kept), text)| Resumed {
                task_id: text,
                attempt: *attempt,
                kept: *kept,
            })
            .collect();
        let worker_id = self.worker_id.clone().unwrap_or_default();
        let welcome = ServerMessage::Welcome(WorkerWelcome {
            protocol: wire::WORKER_PROTOCOL_VERSION,
            worker_id: &worker_id,
            heartbeat_interval_s: self.settings.heartbeat_interval.as_secs_f64(),
            heartbeat_timeout_s: self.settings.heartbeat_timeout.as_secs_f64(),
            limits: WorkerLimits {
                max_message_bytes: self.settings.max_message_bytes,
                max_file_bytes: self.settings.max_file_bytes,
            },
            resumed: &listed,
        })
        .to_json();
        self.push_send(welcome, now, out);
    }

    /// A remote worker came back (within its reconnect grace) and said
    /// `hello` on a new connection: the attempts it lists and still holds
    /// here go on; the others it held are lost (`Report::Lost`); what was
    /// sent for it meanwhile (assignments, cancels, answers) follows the
    /// `welcome`. The registration (tasks, slots) is the first hello's.
    pub fn reattach(&mut self, text: &str, now: Instant, out: &mut Vec<Effect>) {
        let Phase::Disconnected { .. } = self.phase else {
            return;
        };
        let Ok(wire::WorkerRequest {
            message: WorkerMessage::Hello(hello),
            ..
        }) = wire::decode(text)
        else {
            return;
        };
        self.last_heard = now;
        let listed: Vec<(TaskId, u32)> = hello
            .resume
            .iter()
            .filter_map(|e| Some((e.task_id.parse::<TaskId>().ok()?, e.attempt)))
            .collect();
        let mut resumed = Vec::new();
        for (id, attempt) in &listed {
            let kept = self
                .running
                .get(id)
                .is_some_and(|r| r.attempt == *attempt && !r.unsent);
            resumed.push((*id, *attempt, kept));
        }
        let lost: Vec<(TaskId, u32)> = self
            .running
            .iter()
            .filter(|(id, r)| !r.unsent && !listed.contains(&(**id, r.attempt)))
            .map(|(id, r)| (*id, r.attempt))
            .collect();
        for (task_id, attempt) in lost {
            self.end(task_id, attempt);
            out.push(Effect::Release { task_id, attempt });
            out.push(Effect::Report(Report::Lost {
                task_id,
                attempt,
                cause: LostCause::Disconnected,
            }));
        }
        tracing::info!(
            worker = self.shown_name(),
            kept = resumed.iter().filter(|r| r.2).count(),
            "remote worker reconnected"
        );
        self.phase = if self.drain_after {
            Phase::Draining
        } else {
            Phase::Ready
        };
        self.welcome(&resumed, now, out);
        for running in self.running.values_mut() {
            running.unsent = false;
            if let Some(grace) = running.cancel_grace {
                running.cancel_by = Some(now + grace);
            }
        }
        for text in std::mem::take(&mut self.pending) {
            self.push_send(text, now, out);
        }
    }

    /// The scheduler refused the registration: tell the worker, then close.
    pub fn refused(&mut self, error: &RegisterError, now: Instant, out: &mut Vec<Effect>) {
        let code = match error {
            RegisterError::ShuttingDown => WorkerCloseCode::GoingAway,
            RegisterError::BadTask { .. } | RegisterError::BadSlots { .. } => {
                WorkerCloseCode::Violations
            }
        };
        self.send_error(
            None,
            WorkerErrorCode::BadMessage,
            &format!("hello refused: {error}"),
            now,
            out,
        );
        self.close(code, None, out);
    }

    /// An order from the scheduler. An `Assign` comes with the attempt's
    /// output directory (managed) or upload URL (remote), already made.
    pub fn on_order(
        &mut self,
        order: Order,
        place: Place<'_>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        match order {
            Order::Assign(assignment) => self.assign(&assignment, place, now, out),
            Order::Stop {
                task_id,
                attempt,
                reason,
                grace,
            } => {
                let Some(running) = self
                    .running
                    .get_mut(&task_id)
                    .filter(|r| r.attempt == attempt)
                else {
                    return;
                };
                running.cancel_by = Some(now + grace);
                running.cancel_grace = Some(grace);
                let text = task_id.to_string();
                self.send(
                    &ServerMessage::Cancel {
                        task_id: &text,
                        attempt,
                        reason: reason.as_str(),
                        grace_s: grace.as_secs_f64(),
                    },
                    now,
                    out,
                );
            }
            Order::Answer {
                task_id,
                attempt,
                answer,
                deadline_at,
                ..
            } => {
                let Some(running) = self
                    .running
                    .get_mut(&task_id)
                    .filter(|r| r.attempt == attempt)
                else {
                    return;
                };
                running.asking = false;
                let text = task_id.to_string();
                let deadline = crate::server::encode::rfc3339(deadline_at);
                let outcome = match answer.outcome {
                    AnswerOutcome::Answered => "answered",
                    AnswerOutcome::TimedOut => "timed_out",
                    AnswerOutcome::Cancelled => "cancelled",
                    AnswerOutcome::NotInteractive => "not_interactive",
                };
                self.send(
                    &ServerMessage::Answer {
                        task_id: &text,
                        attempt,
                        question_id: &answer.question_id,
                        outcome,
                        value: answer.value.as_ref(),
                        deadline: &deadline,
                    },
                    now,
                    out,
                );
            }
            Order::AskRefused {
                task_id,
                attempt,
                question_id,
                reason,
            } => {
                let Some(running) = self
                    .running
                    .get_mut(&task_id)
                    .filter(|r| r.attempt == attempt)
                else {
                    return;
                };
                running.asking = false;
                let message = format!("ask {question_id:?} refused: {reason}");
                self.send_error(None, WorkerErrorCode::BadMessage, &message, now, out);
            }
            Order::Drain => {
                if matches!(self.phase, Phase::Ready | Phase::Registering) {
                    self.phase = Phase::Draining;
                }
                if matches!(self.phase, Phase::Disconnected { .. }) {
                    self.drain_after = true;
                }
                if matches!(self.phase, Phase::Draining | Phase::Disconnected { .. }) {
                    self.send(&ServerMessage::Drain, now, out);
                }
            }
        }
    }

    fn assign(&mut self, a: &Assignment, place: Place<'_>, now: Instant, out: &mut Vec<Effect>) {
        if self.running.len() >= self.slots {
            // The scheduler never does this; if it did, the task must not vanish.
            tracing::error!(worker = self.shown_name(), task.id = %a.task_id, "assignment past the worker's slots");
        }
        let unsent = matches!(self.phase, Phase::Disconnected { .. });
        self.running.insert(
            a.task_id,
            Running {
                attempt: a.attempt,
                cancel_by: None,
                cancel_grace: None,
                asking: false,
                // Sent when the worker comes back; lost if it does not.
                unsent,
            },
        );
        let text = a.task_id.to_string();
        let deadline = crate::server::encode::rfc3339(a.deadline_at);
        let (output_dir, upload_url) = match place {
            Place::OutputDir(dir) => (Some(dir), None),
            Place::UploadUrl(url) => (None, Some(url)),
            Place::None => (None, None),
        };
        self.send(
            &ServerMessage::Assign(Assign {
                task_id: &text,
                attempt: a.attempt,
                task: &a.task,
                input: &a.input,
                deadline: &deadline,
                timeout_s: a.timeout.as_secs_f64(),
                interactive: a.interactive,
                output_dir,
                upload_url,
            }),
            now,
            out,
        );
    }

    /// The transport closed (remote connection dropped, managed pipe
    /// closed or process exited: `exit` says how).
    pub fn on_closed(&mut self, exit: Option<LostCause>, now: Instant, out: &mut Vec<Effect>) {
        match self.phase {
            Phase::Closed => {}
            Phase::Hello { .. } | Phase::Registering => self.phase = Phase::Closed,
            Phase::Disconnected { .. } => {}
            Phase::Ready | Phase::Draining => {
                let remote = matches!(self.kind, ExecutorKind::Remote { .. });
                if remote && !self.running.is_empty() && !self.settings.reconnect_grace.is_zero() {
                    // Its registration and attempts wait for a reconnect;
                    // what is sent meanwhile waits in `pending`.
                    self.phase = Phase::Disconnected {
                        until: now + self.settings.reconnect_grace,
                    };
                    return;
                }
                let cause = if self.running.is_empty() {
                    None
                } else {
                    Some(exit.unwrap_or(LostCause::Disconnected))
                };
                self.gone(cause, out);
                self.phase = Phase::Closed;
            }
        }
    }

    /// Timers: the hello deadline, heartbeats, cancel graces, the
    /// reconnect grace.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
        match self.phase {
            Phase::Closed | Phase::Registering => {}
            Phase::Hello { until } => {
                if now >= until {
                    tracing::debug!(worker = self.shown_name(), "no hello before the deadline");
                    self.close(WorkerCloseCode::Timeout, Some(LostCause::Hung), out);
                }
            }
            Phase::Disconnected { until } => {
                if now >= until {
                    tracing::info!(
                        worker = self.shown_name(),
                        "remote worker did not come back in time"
                    );
                    self.gone(Some(LostCause::Disconnected), out);
                    self.phase = Phase::Closed;
                }
            }
            Phase::Ready | Phase::Draining => {
                if now >= self.last_heard + self.settings.heartbeat_timeout {
                    tracing::warn!(worker = self.shown_name(), "worker missed its heartbeats");
                    self.gone(Some(LostCause::Hung), out);
                    self.close(WorkerCloseCode::Timeout, Some(LostCause::Hung), out);
                    return;
                }
                if self
                    .running
                    .values()
                    .any(|r| r.cancel_by.is_some_and(|at| now >= at))
                {
                    tracing::warn!(
                        worker = self.shown_name(),
                        "worker ignored a cancel past its grace"
                    );
                    self.gone(Some(LostCause::CancelIgnored), out);
                    self.close(
                        WorkerCloseCode::Violations,
                        Some(LostCause::CancelIgnored),
                        out,
                    );
                    return;
                }
                if now >= self.last_sent + self.settings.heartbeat_interval {
                    self.send(&ServerMessage::Heartbeat, now, out);
                }
            }
        }
    }

    /// The server is going away: close once nothing runs (the driver calls
    /// this after the drain, with the attempts already ended or lost).
    pub fn shutdown(&mut self, out: &mut Vec<Effect>) {
        if self.phase == Phase::Closed {
            return;
        }
        let cause = (!self.running.is_empty()).then_some(LostCause::Disconnected);
        if matches!(
            self.phase,
            Phase::Ready | Phase::Draining | Phase::Disconnected { .. }
        ) {
            self.gone(cause.clone(), out);
        }
        self.close(WorkerCloseCode::GoingAway, cause, out);
    }

    /// Checks that a report is about an attempt this worker holds now.
    /// `terminal` messages about an attempt that already ended here are
    /// replays: answered `ok` (with their `ref`) and not applied.
    fn fence(
        &mut self,
        task_id: &str,
        attempt: u32,
        terminal: bool,
        reference: Option<&str>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Option<TaskId> {
        let parsed = task_id.parse::<TaskId>().ok();
        if let Some(id) = parsed
            && self.running.get(&id).is_some_and(|r| r.attempt == attempt)
        {
            return Some(id);
        }
        let ended_here = parsed.is_some_and(|id| self.ended.contains(&(id, attempt)));
        if ended_here && terminal {
            if let Some(reference) = reference {
                self.send(&ServerMessage::Ok { reference }, now, out);
            }
            return None;
        }
        let newer = parsed.is_some_and(|id| {
            self.running.get(&id).is_some_and(|r| r.attempt > attempt)
                || self.ended.iter().any(|(e, a)| *e == id && *a >= attempt)
        });
        tracing::debug!(
            worker = self.shown_name(),
            task.id = task_id,
            attempt,
            "report about an attempt this worker does not hold; ignored"
        );
        if newer || ended_here {
            // A race with a cancel, timeout or re-queue: answered, not counted.
            let message = format!("attempt {attempt} of this task is not current");
            self.send_error(reference, WorkerErrorCode::StaleAttempt, &message, now, out);
        } else {
            self.refuse(
                reference,
                WorkerErrorCode::NotAssigned,
                "this worker holds no such task",
                now,
                out,
            );
        }
        None
    }

    fn end(&mut self, task_id: TaskId, attempt: u32) {
        self.running.remove(&task_id);
        self.ended.push_back((task_id, attempt));
        while self.ended.len() > ENDED_MEMORY {
            self.ended.pop_front();
        }
    }

    fn gone(&mut self, cause: Option<LostCause>, out: &mut Vec<Effect>) {
        if matches!(
            self.phase,
            Phase::Hello { .. } | Phase::Registering | Phase::Closed
        ) {
            return;
        }
        let lost: Vec<(TaskId, u32)> = self
            .running
            .drain()
            .map(|(id, r)| (id, r.attempt))
            .collect();
        for (task_id, attempt) in lost {
            self.ended.push_back((task_id, attempt));
            out.push(Effect::Release { task_id, attempt });
        }
        out.push(Effect::Report(Report::Gone { cause }));
        self.phase = Phase::Closed;
    }

    fn close(&mut self, code: WorkerCloseCode, cause: Option<LostCause>, out: &mut Vec<Effect>) {
        if self.phase != Phase::Closed || !out.iter().any(|e| matches!(e, Effect::Close { .. })) {
            out.push(Effect::Close { code, cause });
        }
        self.phase = Phase::Closed;
    }

    /// Answers `error` and counts a violation; too many end the session.
    fn refuse(
        &mut self,
        reference: Option<&str>,
        code: WorkerErrorCode,
        message: &str,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        self.send_error(reference, code, message, now, out);
        self.violations.push_back(now);
        while self
            .violations
            .front()
            .is_some_and(|at| now.duration_since(*at) > VIOLATION_WINDOW)
        {
            self.violations.pop_front();
        }
        if self.violations.len() > self.settings.max_violations as usize {
            tracing::warn!(
                worker = self.shown_name(),
                violations = self.violations.len(),
                "worker broke the protocol too often; closing it"
            );
            self.gone(Some(LostCause::Violations), out);
            self.close(
                WorkerCloseCode::Violations,
                Some(LostCause::Violations),
                out,
            );
        }
    }

    fn send_error(
        &mut self,
        reference: Option<&str>,
        code: WorkerErrorCode,
        message: &str,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        self.send(
            &ServerMessage::Error {
                reference,
                error: WorkerError { code, message },
            },
            now,
            out,
        );
    }

    fn send(&mut self, message: &ServerMessage<'_>, now: Instant, out: &mut Vec<Effect>) {
        self.push_send(message.to_json(), now, out);
    }

    fn push_send(&mut self, text: String, now: Instant, out: &mut Vec<Effect>) {
        if matches!(self.phase, Phase::Disconnected { .. }) {
            if self.pending.len() < MAX_PENDING {
                self.pending.push(text);
            } else {
                tracing::warn!(
                    worker = self.shown_name(),
                    "too much waiting for a disconnected worker; it is lost"
                );
                self.gone(Some(LostCause::Disconnected), out);
            }
            return;
        }
        self.last_sent = now;
        out.push(Effect::Send(text));
    }

    fn shown_name(&self) -> &str {
        self.name.as_deref().unwrap_or("(before hello)")
    }
}

/// Where an assigned attempt puts its files.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    OutputDir(&'a str),
    UploadUrl(&'a str),
    None,
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
