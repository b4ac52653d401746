//! Domain nouns of a task: ids, what a client asked for, what happened to it.
//!
//! No IO and no serde derives: the scheduler, the worker pool and the
//! handlers pass these Rust types; `server` turns them into wire messages.
//! Task input and result are opaque JSON texts ([`RawValue`]) that only a
//! task's handler decodes or produces.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;

/// A task's id: 128 random bits shown as 32 lowercase hex digits. Ids
/// cannot be guessed from one another (a client that knows its own task's
/// id learns nothing about anyone else's), and never repeat across restarts
/// or nodes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u128);

impl TaskId {
    /// A new random id from the operating system's generator.
    pub fn generate() -> Result<TaskId, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(TaskId(u128::from_be_bytes(bytes)))
    }

    /// The id as a stack string, for encoding without allocating.
    pub fn hex(self) -> TaskIdText {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, slot) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (124 - 4 * i)) & 0xf;
            *slot = DIGITS[nibble as usize];
        }
        TaskIdText(out)
    }
}

/// Hashes a [`TaskId`] by its low 64 bits: ids are random, so no client
/// can pick ids that collide, and maps keyed by ids (looked up a dozen
/// times per task) skip a general-purpose hash of 16 bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `TaskId` (it writes one u128); kept correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

/// A map keyed by task ids.
pub type IdMap<V> = std::collections::HashMap<TaskId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// [`TaskId`] as text.
#[derive(Clone, Copy, Debug)]
pub struct TaskIdText([u8; 32]);

impl TaskIdText {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// A task id that is not 32 hex digits names no task.
#[derive(Debug, thiserror::Error)]
#[error("not a task id")]
pub struct BadTaskId;

impl FromStr for TaskId {
    type Err = BadTaskId;

    fn from_str(text: &str) -> Result<TaskId, BadTaskId> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadTaskId);
        }
        u128::from_str_radix(text, 16)
            .map(TaskId)
            .map_err(|_| BadTaskId)
    }
}

/// Who owns a task: the name of the API key that submitted it (keys sharing a
/// name are one client, which is how a key is rotated without losing access).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn new(name: &str) -> ClientId {
        ClientId(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who owns a task: the client (key name) and, when a browser token
/// submitted it, that token (a token sees only its own tasks unless it was
/// minted with the key's scope).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub client: ClientId,
    pub token: Option<u64>,
}

/// Queue priority; strict between levels, FIFO within one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    /// Index into per-priority arrays, highest first.
    pub fn rank(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// How a task's files reach the submitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Only as download links in `completed.files`.
    Link,
    /// Also as bytes on the submitter's WebSocket before `completed`.
    Stream,
}

/// What a client asked for, validated by admission.
#[derive(Debug)]
pub struct TaskSpec {
    /// Made at admission: 128 random bits.
    pub id: TaskId,
    /// An offered task's name.
    pub name: Arc<str>,
    /// Input accepted by the task's schema or check.
    pub input: Box<RawValue>,
    pub options: TaskOptions,
    pub owner: Owner,
    /// The task may run again after a lost attempt (its declaration says so).
    pub retry_safe: bool,
    /// Its file inputs (uploads pinned at admission, URLs to fetch).
    pub inputs: crate::inputs::TaskInputs,
    /// The schedule that submitted it, if one did.
    pub tag: Option<Arc<str>>,
}

#[cfg(test)]
impl TaskSpec {
    /// A spec for unit tests: client `c`, [`TaskOptions::for_test`], not
    /// retry-safe, no file inputs.
    pub(crate) fn for_test(id: TaskId, name: &str, input: &str) -> TaskSpec {
        TaskSpec {
            id,
            name: Arc::from(name),
            input: RawValue::from_string(input.to_owned()).expect("json"),
            options: TaskOptions::for_test(),
            owner: Owner {
                client: ClientId::new("c"),
                token: None,
            },
            retry_safe: false,
            inputs: crate::inputs::TaskInputs::default(),
            tag: None,
        }
    }
}

#[cfg(test)]
impl TaskOptions {
    /// Options for unit tests: normal priority, 60 s, link delivery,
    /// interactive, no keys.
    pub(crate) fn for_test() -> TaskOptions {
        TaskOptions {
            timeout: Duration::from_secs(60),
            priority: Priority::Normal,
            idempotency_key: None,
            concurrency_key: None,
            delivery: Delivery::Link,
            cancel_on_disconnect: false,
            interactive: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TaskOptions {
    /// Running time allowed, already capped by `max_timeout_s`.
    pub timeout: Duration,
    pub priority: Priority,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub delivery: Delivery,
    pub cancel_on_disconnect: bool,
    /// The task may ask its submitter questions.
    pub interactive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Running,
    /// Running, with a question waiting for its answer.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Waiting => "waiting",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    Client,
    Disconnect,
    Shutdown,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Client => "client",
            CancelReason::Disconnect => "disconnect",
            CancelReason::Shutdown => "shutdown",
        }
    }
}

/// Why a task failed; `server` maps each kind to its wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// It ran past its `timeout_s`.
    Timeout,
    /// The handler returned an error or panicked.
    TaskError,
    /// The handler found its input unusable while running.
    InvalidInput,
    /// Writing its files would pass `max_temp_bytes`.
    StorageFull,
    /// Something on the server's side broke (a bug or an IO error).
    Internal,
    /// Its worker died, hung or disconnected, and it may not run again.
    WorkerLost,
    /// No worker serving its name came in time.
    NoWorker,
    /// A URL input could not be fetched (`details: {path, reason, status?}`).
    InputFetchFailed,
}

/// A task's failure, as reported in `failed.error`.
#[derive(Clone, Debug)]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub message: String,
    /// Machine-readable details (for `invalid_input`: `{path, reason}`).
    pub details: Option<serde_json::Value>,
}

impl TaskFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            kind,
            message: message.into(),
            details: None,
        }
    }
}

/// A published file output, as listed in `completed.files`.
#[derive(Clone, Debug)]
pub struct PublishedFile {
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Lowercase hex.
    pub sha256: String,
    /// The download token's text (the capability in the link).
    pub token: String,
    pub expires_at: SystemTime,
}

/// One progress report of a running task.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Fraction done, clamped to 0.0..=1.0.
    pub fraction: Option<f64>,
    pub message: Option<String>,
    pub data: Option<Box<RawValue>>,
}

/// A choice offered by a question.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub value: serde_json::Value,
    pub label: Option<String>,
}

/// A question a running task asks its submitter (`docs/protocol.md` §7).
#[derive(Clone, Debug)]
pub struct QuestionSpec {
    /// Chosen by the task; unique within the task.
    pub question_id: String,
    pub prompt: String,
    /// The answer is one of these values ...
    pub choices: Option<Vec<Choice>>,
    /// ... or a value valid against this JSON Schema.
    pub schema: Option<serde_json::Value>,
    /// Used when nobody answers in time.
    pub default: Option<serde_json::Value>,
    /// How long to wait (capped by `max_question_wait_s`).
    pub timeout: Option<Duration>,
}

/// Why an answer reached a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerOutcome {
    Answered,
    TimedOut,
    Cancelled,
    NotInteractive,
}

impl AnswerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerOutcome::Answered => "answered",
            AnswerOutcome::TimedOut => "timed_out",
            AnswerOutcome::Cancelled => "cancelled",
            AnswerOutcome::NotInteractive => "not_interactive",
        }
    }
}

/// The answer to a question, as the task receives it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub question_id: String,
    pub outcome: AnswerOutcome,
    /// The answer (or the default, when it timed out or nobody may answer).
    pub value: Option<serde_json::Value>,
}

/// Something that happened to a task.
#[derive(Debug)]
pub enum TaskEvent {
    Accepted {
        position: u64,
    },
    Started {
        worker: Arc<str>,
        attempt: u32,
    },
    Progress(Progress),
    Question {
        question: QuestionSpec,
        expires_at: SystemTime,
    },
    Answered(Answer),
    /// The attempt was lost and the task waits to run again.
    Requeued {
        attempt: u32,
        failure: TaskFailure,
    },
    Completed {
        result: Box<RawValue>,
        files: Vec<PublishedFile>,
        duration: Duration,
    },
    Failed(TaskFailure),
    Cancelled(CancelReason),
}

impl TaskEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskEvent::Completed { .. } | TaskEvent::Failed(_) | TaskEvent::Cancelled(_)
        )
    }

    /// Roughly the memory holding this event costs, for
    /// `max_held_result_bytes`.
    pub fn held_bytes(&self) -> usize {
        const BASE: usize = 128;
        fn json(value: &serde_json::Value) -> usize {
            serde_json::to_string(value).map_or(0, |text| text.len())
        }
        fn failure(f: &TaskFailure) -> usize {
            f.message.len() + f.details.as_ref().map_or(0, json)
        }
        BASE + match self {
            TaskEvent::Accepted { .. } | TaskEvent::Cancelled(_) => 0,
            TaskEvent::Started { worker, .. } => worker.len(),
            TaskEvent::Progress(p) => {
                p.message.as_ref().map_or(0, String::len)
                    + p.data.as_ref().map_or(0, |d| d.get().len())
            }
            TaskEvent::Question { question, .. } => {
                question.prompt.len()
                    + question.schema.as_ref().map_or(0, json)
                    + question.default.as_ref().map_or(0, json)
                    + question.choices.as_ref().map_or(0, |choices| {
                        choices
                            .iter()
                            .map(|c| json(&c.value) + c.label.as_ref().map_or(0, String::len))
                            .sum()
                    })
            }
            TaskEvent::Answered(answer) => answer.value.as_ref().map_or(0, json),
            TaskEvent::Requeued { failure: f, .. } | TaskEvent::Failed(f) => failure(f),
            TaskEvent::Completed { result, files, .. } => {
                result.get().len()
                    + files
                        .iter()
                        .map(|f| 160 + f.name.len() + f.content_type.len())
                        .sum::<usize>()
            }
        }
    }

    /// The wire `type` of the event.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskEvent::Accepted { .. } => "accepted",
            TaskEvent::Started { .. } => "started",
            TaskEvent::Progress(_) => "progress",
            TaskEvent::Question { .. } => "question",
            TaskEvent::Answered(_) => "answered",
            TaskEvent::Requeued { .. } => "requeued",
            TaskEvent::Completed { .. } => "completed",
            TaskEvent::Failed(_) => "failed",
            TaskEvent::Cancelled(_) => "cancelled",
        }
    }
}

/// A task event with its place in the task's history. Shared (`Arc`) by the
/// task's log and every subscriber's queue; encoded at most once.
#[derive(Debug)]
pub struct EventRecord {
    pub task_id: TaskId,
    /// 1, 2, 3 ... per task, without gaps.
    pub seq: u64,
    pub at: SystemTime,
    pub event: TaskEvent,
    /// The event's wire encoding, made by the first reader that needs it.
    encoded: OnceLock<Bytes>,
}

impl EventRecord {
    pub fn new(task_id: TaskId, seq: u64, event: TaskEvent) -> EventRecord {
        EventRecord {
            task_id,
            seq,
            at: SystemTime::now(),
            event,
            encoded: OnceLock::new(),
        }
    }

    /// An event numbered and timed elsewhere (another node of a cluster).
    pub fn with_time(task_id: TaskId, seq: u64, at: SystemTime, event: TaskEvent) -> EventRecord {
        EventRecord {
            task_id,
            seq,
            at,
            event,
            encoded: OnceLock::new(),
        }
    }

    /// The encoded event, made by `encode` the first time it is asked for.
    pub fn encoded(&self, encode: impl FnOnce(&EventRecord) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(self)).clone()
    }
}
