//! Server-to-client messages.
//!
//! Every field borrows, so encoding an event allocates only its output
//! buffer. Task inputs, results and progress data are [`RawValue`]s: the
//! JSON a handler produced is written through unchanged.

use serde::Serialize;
use serde_json::value::RawValue;

use super::WireError;

/// Every message type the server sends on a WebSocket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome(Welcome<'a>),
    Rejected {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        error: &'a WireError,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        error: &'a WireError,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Unsubscribed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task_id: &'a str,
    },
    StreamBegin {
        task_id: &'a str,
        stream: u32,
        name: &'a str,
        size: u64,
        content_type: &'a str,
    },
    StreamEnd {
        task_id: &'a str,
        stream: u32,
        sha256: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Encodes the message as one JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and
        // every number finite (progress is clamped before it gets here).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","error":{"code":"internal","message":"encoding failed"}}"#.to_owned()
        })
    }
}

/// The fields every task event carries. `ref` only on the submitter's copy
/// of `accepted` and on the canceller's copy of `cancelled`.
#[derive(Debug)]
pub struct EventHead<'a> {
    pub reference: Option<&'a str>,
    /// 32 hex digits.
    pub task_id: &'a str,
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: &'a str,
}

/// What each task event type adds to the head. Serialized as a plain
/// struct (its `type` comes from [`EventBody::kind`]), so an event is
/// written in one pass without serde's buffering of flattened fields.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EventBody<'a> {
    Accepted {
        position: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    Started {
        worker: &'a str,
        attempt: u32,
    },
    Progress {
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    Question {
        question_id: &'a str,
        prompt: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        schema: Option<&'a serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default: Option<&'a serde_json::Value>,
        expires_at: &'a str,
    },
    Answered {
        question_id: &'a str,
        outcome: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a serde_json::Value>,
    },
    Requeued {
        attempt: u32,
        reason: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        details: Option<&'a serde_json::Value>,
    },
    Completed {
        result: &'a RawValue,
        files: &'a [FileObject<'a>],
        duration_ms: u64,
    },
    Failed {
        error: &'a WireError,
    },
    Cancelled {
        reason: &'a str,
    },
}

impl EventBody<'_> {
    /// The event's wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Accepted { .. } => "accepted",
            EventBody::Started { .. } => "started",
            EventBody::Progress { .. } => "progress",
            EventBody::Question { .. } => "question",
            EventBody::Answered { .. } => "answered",
            EventBody::Requeued { .. } => "requeued",
            EventBody::Completed { .. } => "completed",
            EventBody::Failed { .. } => "failed",
            EventBody::Cancelled { .. } => "cancelled",
        }
    }
}

/// Encodes a task event: `{"type", "ref"?, "task_id", "seq", "at", ...body}`.
pub fn event_json(head: &EventHead<'_>, body: &EventBody<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(body.kind().as_bytes());
    out.push(b'"');
    if let Some(reference) = head.reference {
        out.extend_from_slice(b",\"ref\":");
        // A `ref` is client text: serde_json escapes it.
        let _ = serde_json::to_writer(&mut out, reference);
    }
    out.extend_from_slice(b",\"task_id\":");
    let _ = serde_json::to_writer(&mut out, head.task_id);
    out.extend_from_slice(b",\"seq\":");
    let _ = serde_json::to_writer(&mut out, &head.seq);
    out.extend_from_slice(b",\"at\":");
    let _ = serde_json::to_writer(&mut out, head.at);
    // The body is an object: its fields continue this one.
    let start = out.len();
    if serde_json::to_writer(&mut out, body).is_err() {
        out.truncate(start);
        out.push(b'}');
        return out;
    }
    if out.len() - start <= 2 {
        out.truncate(start);
        out.push(b'}');
    } else {
        out[start] = b',';
    }
    out
}

/// One choice of a question.
#[derive(Debug, Serialize)]
pub struct Choice<'a> {
    pub value: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
}

/// An open question as the snapshot shows it.
#[derive(Debug, Serialize)]
pub struct OpenQuestion<'a> {
    pub question_id: &'a str,
    pub prompt: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Choice<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'a serde_json::Value>,
    pub expires_at: &'a str,
}

/// `welcome`.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    pub server: ServerInfo<'a>,
    pub protocol: u32,
    pub tasks: Vec<TaskInfo<'a>>,
    pub limits: Limits,
}

#[derive(Debug, Serialize)]
pub struct ServerInfo<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

#[derive(Debug, Serialize)]
pub struct TaskInfo<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub input_schema: &'a serde_json::Value,
    /// `builtin` or `workers`.
    pub served_by: &'a str,
    /// For tasks served by workers: how many are connected now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub queue_capacity: u64,
    pub workers: u64,
    pub max_timeout_s: u64,
    pub file_ttl_s: u64,
}

/// The File object.
#[derive(Debug, Serialize)]
pub struct FileObject<'a> {
    pub name: &'a str,
    pub size: u64,
    pub content_type: &'a str,
    pub sha256: &'a str,
    pub url: String,
    pub expires_at: &'a str,
}

/// `POST /v1/tasks` answer (`202`).
#[derive(Debug, Serialize)]
pub struct Submitted<'a> {
    pub task_id: &'a str,
    pub status_url: String,
    pub events_url: String,
    pub position: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The REST status snapshot.
#[derive(Debug, Serialize)]
pub struct Snapshot<'a> {
    pub task_id: &'a str,
    pub task: &'a str,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<OpenQuestion<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a WireError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<&'a [FileObject<'a>]>,
    pub created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<&'a str>,
    pub last_seq: u64,
}

/// `DELETE /v1/tasks/{id}` answer.
#[derive(Debug, Serialize)]
pub struct Cancelled<'a> {
    pub task_id: &'a str,
    pub state: &'a str,
}

/// `POST /v1/tokens` answer (`201`).
#[derive(Debug, Serialize)]
pub struct Minted<'a> {
    pub token: &'a str,
    pub expires_at: &'a str,
}

/// The body of every REST error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a WireError,
}
