//! Server messages as a client reads them: owned and decoded.
//!
//! [`server`](crate::server) holds the server's side: borrowed types it only
//! serializes (events through its own one-pass encoder). A client needs the
//! opposite, so this module is separate and the server never touches it:
//! [`decode`] reads one text frame in one pass into borrowed raw fields,
//! then decodes only the fields its `type` needs. Task results and progress
//! data stay JSON text ([`RawValue`]) until the caller decodes them into
//! its own types. A `type` this crate does not know (a newer server) is
//! [`Message::Unknown`], never an error, and unknown fields are ignored.
//!
//! REST bodies ([`Snapshot`], [`Submitted`], [`AdminList`], [`ErrorBody`])
//! derive `Deserialize` and are read with `serde_json` directly.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, WireError};

/// A task id as the server wrote it (32 hex digits today; treated as
/// opaque text so a future id format still works).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    pub fn new(text: impl Into<String>) -> TaskId {
        TaskId(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl From<&str> for TaskId {
    fn from(text: &str) -> TaskId {
        TaskId(text.to_owned())
    }
}

impl From<String> for TaskId {
    fn from(text: String) -> TaskId {
        TaskId(text)
    }
}

impl std::str::FromStr for TaskId {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<TaskId, Self::Err> {
        Ok(TaskId(text.to_owned()))
    }
}

/// Every server message, decoded.
#[derive(Debug, Clone)]
pub enum Message {
    /// After authentication.
    Welcome(Box<Welcome>),
    /// The answer to a `submit` that was not accepted.
    Rejected {
        reference: Option<String>,
        error: WireError,
    },
    /// The answer to any message that failed (`not_found`, `bad_message`, ...).
    Error {
        reference: Option<String>,
        error: WireError,
    },
    Pong {
        reference: Option<String>,
    },
    Unsubscribed {
        reference: Option<String>,
        task_id: TaskId,
    },
    /// A file follows as binary frames (`delivery: "stream"`).
    StreamBegin(StreamBegin),
    StreamEnd(StreamEnd),
    /// A task event.
    Event(Event),
    /// Admin: the answer to `watch`.
    Watching {
        reference: Option<String>,
        tasks: Vec<Summary>,
        workers: Vec<Worker>,
        stats: Stats,
    },
    /// Admin: a watched task changed.
    TaskUpdate(Box<Summary>),
    /// Admin: the counters changed.
    Stats(Box<Stats>),
    /// Admin: a worker connected, changed or left.
    WorkerUpdate(Box<Worker>),
    /// A message type this crate does not know (a newer server): skip it.
    Unknown {
        kind: String,
    },
}

/// One task event: the head every event carries and what its type adds.
/// Serializes back to its wire form (one flat object).
#[derive(Debug, Clone)]
pub struct Event {
    pub task_id: TaskId,
    /// 1, 2, 3 ... per task, gap-free as sent (a replay may skip superseded
    /// `progress` numbers).
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: String,
    /// On the submitter's copy of `accepted` and the canceller's copy of
    /// `cancelled`.
    pub reference: Option<String>,
    pub kind: EventKind,
}

impl Event {
    /// `completed`, `failed` or `cancelled`: nothing follows for this task.
    pub fn is_terminal(&self) -> bool {
        self.kind.is_terminal()
    }
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.kind.name())?;
        if let Some(reference) = &self.reference {
            map.serialize_entry("ref", reference)?;
        }
        map.serialize_entry("task_id", &self.task_id)?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("at", &self.at)?;
        match &self.kind {
            EventKind::Accepted {
                position,
                duplicate,
            } => {
                map.serialize_entry("position", position)?;
                if *duplicate {
                    map.serialize_entry("duplicate", &true)?;
                }
            }
            EventKind::Started { worker, attempt } => {
                map.serialize_entry("worker", worker)?;
                map.serialize_entry("attempt", attempt)?;
            }
            EventKind::Requeued {
                attempt,
                reason,
                message,
                details,
            } => {
                map.serialize_entry("attempt", attempt)?;
                map.serialize_entry("reason", reason)?;
                map.serialize_entry("message", message)?;
                if let Some(v) = details {
                    map.serialize_entry("details", v)?;
                }
            }
            EventKind::Progress {
                progress,
                message,
                data,
            } => {
                if let Some(v) = progress {
                    map.serialize_entry("progress", v)?;
                }
                if let Some(v) = message {
                    map.serialize_entry("message", v)?;
                }
                if let Some(v) = data {
                    map.serialize_entry("data", v)?;
                }
            }
            EventKind::Completed {
                result,
                files,
                duration_ms,
            } => {
                map.serialize_entry("result", result)?;
                map.serialize_entry("files", files)?;
                map.serialize_entry("duration_ms", duration_ms)?;
            }
            EventKind::Failed { error } => map.serialize_entry("error", error)?,
            EventKind::Cancelled { reason } => map.serialize_entry("reason", reason)?,
            EventKind::Question(q) => {
                map.serialize_entry("question_id", &q.question_id)?;
                map.serialize_entry("prompt", &q.prompt)?;
                if let Some(v) = &q.choices {
                    map.serialize_entry("choices", v)?;
                }
                if let Some(v) = &q.schema {
                    map.serialize_entry("schema", v)?;
                }
                if let Some(v) = &q.default {
                    map.serialize_entry("default", v)?;
                }
                map.serialize_entry("expires_at", &q.expires_at)?;
            }
            EventKind::Answered {
                question_id,
                outcome,
                value,
            } => {
                map.serialize_entry("question_id", question_id)?;
                map.serialize_entry("outcome", outcome)?;
                if let Some(v) = value {
                    map.serialize_entry("value", v)?;
                }
            }
        }
        map.end()
    }
}

/// What each event type adds.
#[derive(Debug, Clone)]
pub enum EventKind {
    Accepted {
        position: u64,
        duplicate: bool,
    },
    Started {
        worker: String,
        /// 1, then 2 ... after a re-queue.
        attempt: u32,
    },
    /// The attempt's worker was lost; the task waits again and will have
    /// a new `started`.
    Requeued {
        attempt: u32,
        reason: String,
        message: String,
        details: Option<serde_json::Value>,
    },
    Progress {
        progress: Option<f64>,
        message: Option<String>,
        data: Option<Box<RawValue>>,
    },
    Completed {
        result: Box<RawValue>,
        files: Vec<File>,
        duration_ms: u64,
    },
    Failed {
        error: WireError,
    },
    Cancelled {
        /// `client`, `disconnect` or `shutdown`.
        reason: String,
    },
    /// The task asks its submitter and waits for an answer.
    Question(Box<Question>),
    /// A question was answered, timed out or closed with its task
    /// (`outcome`: `answered`, `timed_out`, `cancelled`).
    Answered {
        question_id: String,
        outcome: String,
        value: Option<Box<RawValue>>,
    },
}

impl EventKind {
    /// The event's wire `type`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Accepted { .. } => "accepted",
            EventKind::Started { .. } => "started",
            EventKind::Progress { .. } => "progress",
            EventKind::Requeued { .. } => "requeued",
            EventKind::Completed { .. } => "completed",
            EventKind::Failed { .. } => "failed",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Question(_) => "question",
            EventKind::Answered { .. } => "answered",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::Completed { .. } | EventKind::Failed { .. } | EventKind::Cancelled { .. }
        )
    }
}

/// A `question` event's fields (also the snapshot's open question).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Question {
    pub question_id: String,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Choice>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Box<RawValue>>,
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub value: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The File object of `completed` and of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Lowercase hex.
    pub sha256: String,
    /// Absolute when the server has a `public_url`, else a path.
    pub url: String,
    pub expires_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamBegin {
    pub task_id: TaskId,
    pub stream: u32,
    pub name: String,
    pub size: u64,
    pub content_type: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamEnd {
    pub task_id: TaskId,
    pub stream: u32,
    pub sha256: String,
}

/// `welcome`.
#[derive(Debug, Clone, Deserialize)]
pub struct Welcome {
    pub server: ServerInfo,
    pub protocol: u32,
    pub tasks: Vec<TaskInfo>,
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
    /// `builtin` or `workers`.
    #[serde(default)]
    pub served_by: Option<String>,
    /// For tasks served by workers: how many are connected now.
    #[serde(default)]
    pub workers: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub queue_capacity: u64,
    pub workers: u64,
    pub max_timeout_s: u64,
    pub file_ttl_s: u64,
}

/// `POST /v1/tasks` → `202`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub task_id: TaskId,
    pub status_url: String,
    pub events_url: String,
    pub position: u64,
    #[serde(default)]
    pub duplicate: bool,
}

/// `GET /v1/tasks/{id}`: the status snapshot (serializes back to it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub task_id: TaskId,
    pub task: String,
    /// `queued`, `running`, `waiting` (running, with an open question),
    /// `completed`, `failed` or `cancelled`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The open question, while the task waits for an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    /// Present once completed (`null` is a result too).
    #[serde(
        default,
        deserialize_with = "present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<File>>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub last_seq: u64,
}

/// Admin: a task as the monitoring feed shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub task_id: TaskId,
    pub task: String,
    /// The name of the key that submitted it.
    pub client: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The open question's prompt, while the task waits for an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Connections following the task now.
    #[serde(default)]
    pub subscribers: u64,
}

/// Admin: a worker (a built-in slot, a managed or a remote worker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `builtin`, `managed` or `remote`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The task names it serves.
    #[serde(default)]
    pub tasks: Vec<String>,
    pub slots: u64,
    pub busy: u64,
    /// The tasks it runs now.
    #[serde(default)]
    pub running: Vec<TaskId>,
    /// `starting`, `ready`, `draining` or `gone`.
    pub state: String,
    pub connected_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<String>,
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
}

/// `GET /v1/admin/workers`.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminWorkers {
    pub workers: Vec<Worker>,
}

/// Admin: `GET /v1/admin/nodes`: every node of the cluster (empty outside
/// a cluster).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminNodes {
    pub nodes: Vec<Node>,
}

/// Admin: a node of the cluster, as the answering node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// `up`, `draining` or `gone`.
    pub state: String,
    /// The node that answered.
    #[serde(default)]
    pub this: bool,
    pub started_at: String,
    /// When its registry entry was last renewed.
    pub seen_at: String,
    pub workers: u64,
    pub slots: u64,
    pub busy: u64,
}

/// `POST /v1/tasks/{id}/questions/{qid}/answer` → `200`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerReply {
    pub task_id: TaskId,
    pub question_id: String,
    pub outcome: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

/// Admin: a schedule (`GET /v1/schedules`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub task: String,
    /// How it fires, in words (`cron 0 */15 * * * (Europe/Zurich)`, `every 15m`).
    pub when: String,
    /// `skip` or `queue`.
    pub overlap: String,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// At most 20, newest first.
    #[serde(default)]
    pub runs: Vec<ScheduleRun>,
}

/// One run of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub occurrence: String,
    /// `timer`, `manual` or `catch_up`.
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// A task state, or `skipped` / `refused`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// `POST /v1/schedules/{name}/run` → `202`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleStarted {
    pub schedule: String,
    pub task_id: TaskId,
    pub status_url: String,
}

/// Admin: the server's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub workers: u64,
    pub workers_busy: u64,
    pub queued: u64,
    pub running: u64,
    pub connections: u64,
    /// Finished tasks per task name.
    #[serde(default)]
    pub tasks: BTreeMap<String, Outcomes>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Outcomes {
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// `GET /v1/admin/tasks`.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminList {
    pub tasks: Vec<Summary>,
    pub stats: Stats,
}

/// The body of every REST error response.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub error: WireError,
}

/// Why a frame could not be read as a server message.
#[derive(Debug, thiserror::Error)]
#[error("undecodable server message: {0}")]
pub struct DecodeError(String);

/// The raw fields of any server message; one pass over the frame. A field
/// present as `null` is `Some` (an echo task's result may be `null`).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    task_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    seq: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    at: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    position: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    duplicate: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    worker: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    progress: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    files: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    duration_ms: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reason: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    question_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    outcome: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    tasks: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    workers: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    attempt: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    details: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    task: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    stats: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Decodes one text frame from the server.
pub fn decode(text: &str) -> Result<Message, DecodeError> {
    let raw: Fields<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError(format!("not a JSON object: {e}")))?;
    let kind = type_name(raw.kind)?;
    let message = match &*kind {
        "accepted" | "started" | "progress" | "completed" | "failed" | "cancelled" | "question"
        | "answered" | "requeued" => Message::Event(event(&kind, &raw, text)?),
        "welcome" => Message::Welcome(Box::new(whole(text)?)),
        "rejected" => Message::Rejected {
            reference: optional(raw.reference, "ref")?,
            error: wire_error(raw.error)?,
        },
        "error" => Message::Error {
            reference: optional(raw.reference, "ref")?,
            error: wire_error(raw.error)?,
        },
        "pong" => Message::Pong {
            reference: optional(raw.reference, "ref")?,
        },
        "unsubscribed" => Message::Unsubscribed {
            reference: optional(raw.reference, "ref")?,
            task_id: required(raw.task_id, "task_id")?,
        },
        "stream_begin" => Message::StreamBegin(whole(text)?),
        "stream_end" => Message::StreamEnd(whole(text)?),
        "watching" => Message::Watching {
            reference: optional(raw.reference, "ref")?,
            tasks: required(raw.tasks, "tasks")?,
            workers: optional(raw.workers, "workers")?.unwrap_or_default(),
            stats: required(raw.stats, "stats")?,
        },
        "worker_update" => Message::WorkerUpdate(Box::new(required(raw.worker, "worker")?)),
        "task_update" => Message::TaskUpdate(Box::new(required(raw.task, "task")?)),
        "stats" => Message::Stats(Box::new(required(raw.stats, "stats")?)),
        other => Message::Unknown {
            kind: other.to_owned(),
        },
    };
    Ok(message)
}

fn event(kind: &str, raw: &Fields<'_>, text: &str) -> Result<Event, DecodeError> {
    let body = match kind {
        "accepted" => EventKind::Accepted {
            position: optional(raw.position, "position")?.unwrap_or(0),
            duplicate: optional(raw.duplicate, "duplicate")?.unwrap_or(false),
        },
        "started" => EventKind::Started {
            worker: optional(raw.worker, "worker")?.unwrap_or_default(),
            attempt: optional(raw.attempt, "attempt")?.unwrap_or(1),
        },
        "requeued" => EventKind::Requeued {
            attempt: optional(raw.attempt, "attempt")?.unwrap_or(1),
            reason: optional(raw.reason, "reason")?.unwrap_or_default(),
            message: optional(raw.message, "message")?.unwrap_or_default(),
            details: optional(raw.details, "details")?,
        },
        "progress" => EventKind::Progress {
            progress: optional(raw.progress, "progress")?,
            message: optional(raw.message, "message")?,
            data: raw.data.map(RawValue::to_owned),
        },
        "completed" => EventKind::Completed {
            result: raw
                .result
                .map(RawValue::to_owned)
                .ok_or_else(|| DecodeError("completed: missing field `result`".to_owned()))?,
            files: optional(raw.files, "files")?.unwrap_or_default(),
            duration_ms: optional(raw.duration_ms, "duration_ms")?.unwrap_or(0),
        },
        "failed" => EventKind::Failed {
            error: wire_error(raw.error)?,
        },
        "cancelled" => EventKind::Cancelled {
            reason: optional(raw.reason, "reason")?.unwrap_or_default(),
        },
        "question" => EventKind::Question(Box::new(whole(text)?)),
        _ => EventKind::Answered {
            question_id: required(raw.question_id, "question_id")?,
            outcome: required(raw.outcome, "outcome")?,
            value: raw
                .value
                .filter(|v| v.get() != "null")
                .map(RawValue::to_owned),
        },
    };
    Ok(Event {
        task_id: required(raw.task_id, "task_id")?,
        seq: required(raw.seq, "seq")?,
        at: optional(raw.at, "at")?.unwrap_or_default(),
        reference: optional(raw.reference, "ref")?,
        kind: body,
    })
}

/// The error object; an error code this crate does not know (a newer
/// server) reads as `internal` with the code kept in the message.
fn wire_error(raw: Option<&RawValue>) -> Result<WireError, DecodeError> {
    #[derive(Deserialize)]
    struct Loose {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        details: Option<serde_json::Value>,
        #[serde(default)]
        retry_after_ms: Option<u64>,
    }
    let loose: Loose = required(raw, "error")?;
    let known: Result<ErrorCode, _> =
        serde_json::from_value(serde_json::Value::String(loose.code.clone()));
    let (code, message) = match known {
        Ok(code) => (code, loose.message),
        Err(_) => (
            ErrorCode::Internal,
            format!("{}: {}", loose.code, loose.message),
        ),
    };
    Ok(WireError {
        code,
        message,
        details: loose.details,
        retry_after_ms: loose.retry_after_ms,
    })
}

/// The `type`: borrowed (it never needs escapes), owned if it has them.
fn type_name<'a>(raw: Option<&'a RawValue>) -> Result<std::borrow::Cow<'a, str>, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError("missing field `type`".to_owned()))?;
    if let Ok(borrowed) = serde_json::from_str::<&str>(raw.get()) {
        return Ok(std::borrow::Cow::Borrowed(borrowed));
    }
    serde_json::from_str::<String>(raw.get())
        .map(std::borrow::Cow::Owned)
        .map_err(|_| DecodeError("field `type` must be a string".to_owned()))
}

fn whole<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
}

fn required<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<T, DecodeError> {
    optional(raw, field)?.ok_or_else(|| DecodeError(format!("missing field `{field}`")))
}

fn optional<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<T>, DecodeError> {
    match raw {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| DecodeError(format!("field `{field}`: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(text: &str) -> Event {
        match decode(text) {
            Ok(Message::Event(event)) => event,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn reads_every_event_type() {
        let head = r#""task_id":"00ff","seq":2,"at":"2026-01-01T00:00:00.000Z""#;
        let cases = [
            (
                format!(r#"{{"type":"accepted","ref":"r1",{head},"position":3}}"#),
                "accepted",
            ),
            (
                format!(r#"{{"type":"started",{head},"worker":"local-1"}}"#),
                "started",
            ),
            (
                format!(r#"{{"type":"progress",{head},"progress":0.5,"data":{{"a":1}}}}"#),
                "progress",
            ),
            (
                format!(
                    r#"{{"type":"completed",{head},"result":null,"files":[],"duration_ms":4}}"#
                ),
                "completed",
            ),
            (
                format!(r#"{{"type":"failed",{head},"error":{{"code":"timeout","message":"m"}}}}"#),
                "failed",
            ),
            (
                format!(r#"{{"type":"cancelled",{head},"reason":"client"}}"#),
                "cancelled",
            ),
            (
                format!(
                    r#"{{"type":"question",{head},"question_id":"q1","prompt":"p","choices":[{{"value":1}}],"expires_at":"x"}}"#
                ),
                "question",
            ),
            (
                format!(
                    r#"{{"type":"answered",{head},"question_id":"q1","outcome":"answered","value":true}}"#
                ),
                "answered",
            ),
        ];
        for (text, name) in cases {
            let event = event_of(&text);
            assert_eq!(event.kind.name(), name);
            assert_eq!(event.task_id.as_str(), "00ff");
            assert_eq!(event.seq, 2);
        }
    }

    #[test]
    fn results_stay_json_text_and_null_is_a_result() {
        let e = event_of(
            r#"{"type":"completed","task_id":"a","seq":3,"at":"t","result":{"x" : [1]},"files":[{"name":"n","size":1,"content_type":"c","sha256":"s","url":"/files/t/n","expires_at":"e"}],"duration_ms":1}"#,
        );
        let EventKind::Completed { result, files, .. } = e.kind else {
            panic!("not completed")
        };
        assert_eq!(result.get(), r#"{"x" : [1]}"#);
        assert_eq!(files[0].url, "/files/t/n");
        assert!(
            decode(
                r#"{"type":"completed","task_id":"a","seq":3,"at":"t","files":[],"duration_ms":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn replies_unknown_types_and_unknown_codes() {
        assert!(matches!(
            decode(r#"{"type":"pong","ref":"7"}"#),
            Ok(Message::Pong { reference: Some(r) }) if r == "7"
        ));
        assert!(matches!(
            decode(r#"{"type":"worker_joined","worker":{"x":1}}"#),
            Ok(Message::Unknown { kind }) if kind == "worker_joined"
        ));
        let Ok(Message::Error { error, .. }) =
            decode(r#"{"type":"error","error":{"code":"brand_new","message":"m"}}"#)
        else {
            panic!("not an error")
        };
        assert_eq!(error.code, ErrorCode::Internal);
        assert_eq!(error.message, "brand_new: m");
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"ref":"x"}"#).is_err());
    }

    #[test]
    fn reads_the_admin_feed() {
        let text = r#"{"type":"watching","tasks":[{"task_id":"a","task":"echo","client":"alice","state":"running","created_at":"t"}],"stats":{"workers":2,"workers_busy":1,"queued":0,"running":1,"connections":1,"tasks":{"echo":{"completed":1,"failed":0,"cancelled":0}}}}"#;
        let Ok(Message::Watching { tasks, stats, .. }) = decode(text) else {
            panic!("not watching")
        };
        assert_eq!(tasks[0].client, "alice");
        assert_eq!(stats.tasks["echo"].completed, 1);
    }

    #[test]
    fn an_event_serializes_back_to_its_wire_form() {
        let texts = [
            r#"{"type":"started","task_id":"a","seq":2,"at":"t","worker":"local-1","attempt":2}"#,
            r#"{"type":"requeued","task_id":"a","seq":3,"at":"t","attempt":1,"reason":"worker_lost","message":"m","details":{"worker":"w"}}"#,
            r#"{"type":"answered","ref":"9","task_id":"a","seq":6,"at":"t","question_id":"q1","outcome":"answered","value":"go"}"#,
            r#"{"type":"completed","task_id":"a","seq":7,"at":"t","result":{"x":1},"files":[],"duration_ms":3}"#,
        ];
        for text in texts {
            let event = event_of(text);
            let back = serde_json::to_value(&event).unwrap_or_default();
            let wire: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            assert_eq!(back, wire, "{text}");
        }
    }

    #[test]
    fn reads_worker_updates() {
        let text = r#"{"type":"worker_update","worker":{"id":"w1","name":"py-1","kind":"remote","tasks":["ocr"],"slots":4,"busy":1,"running":["ab"],"state":"ready","connected_at":"t","done":3,"failed":0}}"#;
        let Ok(Message::WorkerUpdate(worker)) = decode(text) else {
            panic!("not a worker update")
        };
        assert_eq!(
            (worker.name.as_str(), worker.busy, worker.slots),
            ("py-1", 1, 4)
        );
        assert_eq!(worker.running[0].as_str(), "ab");
    }
}
