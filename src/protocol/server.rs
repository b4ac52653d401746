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
    Accepted {
        #[serde(flatten)]
        head: EventHead<'a>,
        position: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    Started {
        #[serde(flatten)]
        head: EventHead<'a>,
        worker: &'a str,
    },
    Progress {
        #[serde(flatten)]
        head: EventHead<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    Completed {
        #[serde(flatten)]
        head: EventHead<'a>,
        result: &'a RawValue,
        files: &'a [FileObject<'a>],
        duration_ms: u64,
    },
    Failed {
        #[serde(flatten)]
        head: EventHead<'a>,
        error: &'a WireError,
    },
    Cancelled {
        #[serde(flatten)]
        head: EventHead<'a>,
        reason: &'a str,
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
/// of `accepted` and on the direct reply to `cancel`.
#[derive(Debug, Serialize)]
pub struct EventHead<'a> {
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
    pub task_id: &'a str,
    pub seq: u64,
    pub at: &'a str,
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
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a WireError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<&'a [FileObject<'a>]>,
    pub created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<&'a str>,
    pub last_seq: u64,
}

/// The body of every REST error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a WireError,
}
