//! The worker protocol (`docs/protocol.md` Part II): what a worker sends
//! ([`WorkerMessage`]), what the server sends it ([`ServerMessage`]), the
//! worker-side error codes and close codes.
//!
//! Decoding works like the client side: one pass over the frame into
//! borrowed raw fields, then each field the message type needs is decoded
//! on its own, so `ref` is known even when the rest is wrong, unknown fields
//! are ignored whatever their type, and a result or progress `data` stays
//! the worker's JSON text ([`RawValue`]). Every failure is a
//! [`WorkerDecodeError`] whose message says which field is wrong.
//!
//! [`decode`] takes any `&str` and never panics: it is the fuzz target.

use std::borrow::Cow;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::MAX_REF_BYTES;

/// The worker protocol version (`hello.protocol`, `welcome.protocol`).
pub const WORKER_PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol of `GET /v1/worker`.
pub const WORKER_SUBPROTOCOL: &str = "taskwire.worker.v1";

/// Most slots a worker may declare.
pub const MAX_SLOTS: u32 = 1024;

/// Most task names one `hello` may declare.
pub const MAX_DECLARED_TASKS: usize = 256;

/// Longest task or worker name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest `message` of a `log` or `progress`, or `prompt` of an `ask`, in
/// bytes; longer text is cut (at a character boundary), not refused.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Most files one `complete` may list.
pub const MAX_FILES: usize = 1000;

/// One decoded worker message with the `ref` it carried.
#[derive(Debug)]
pub struct WorkerRequest<'a> {
    pub reference: Option<String>,
    pub message: WorkerMessage<'a>,
}

/// Every message a worker may send.
#[derive(Debug)]
pub enum WorkerMessage<'a> {
    Hello(Hello),
    Progress {
        task_id: String,
        attempt: u32,
        progress: Option<f64>,
        message: Option<String>,
        data: Option<&'a RawValue>,
    },
    Log {
        task_id: Option<String>,
        attempt: Option<u32>,
        level: LogLevel,
        message: String,
    },
    Ask {
        task_id: String,
        attempt: u32,
        question: Ask,
    },
    Complete {
        task_id: String,
        attempt: u32,
        /// `null` when absent.
        result: Option<&'a RawValue>,
        files: Vec<FileEntry>,
    },
    Fail {
        task_id: String,
        attempt: u32,
        error: WorkerFailure,
    },
    Cancelled {
        task_id: String,
        attempt: u32,
    },
    Heartbeat,
    Draining {
        reason: Option<String>,
    },
    Bye {
        reason: Option<String>,
    },
}

impl WorkerMessage<'_> {
    /// The wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerMessage::Hello(_) => "hello",
            WorkerMessage::Progress { .. } => "progress",
            WorkerMessage::Log { .. } => "log",
            WorkerMessage::Ask { .. } => "ask",
            WorkerMessage::Complete { .. } => "complete",
            WorkerMessage::Fail { .. } => "fail",
            WorkerMessage::Cancelled { .. } => "cancelled",
            WorkerMessage::Heartbeat => "heartbeat",
            WorkerMessage::Draining { .. } => "draining",
            WorkerMessage::Bye { .. } => "bye",
        }
    }
}

/// `hello`: who the worker is and what it serves.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub worker: WorkerInfo,
    #[serde(default = "one")]
    pub slots: u32,
    pub tasks: Vec<DeclaredTask>,
    #[serde(default)]
    pub resume: Vec<ResumeEntry>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub sdk: Option<String>,
}

/// A task a worker declares in its `hello`.
#[derive(Debug, Deserialize)]
pub struct DeclaredTask {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema; compiled (and refused if invalid) by the server.
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub retry_safe: bool,
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

/// An attempt a reconnecting worker still holds.
#[derive(Debug, Deserialize)]
pub struct ResumeEntry {
    pub task_id: String,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// `ask`'s question.
#[derive(Debug)]
pub struct Ask {
    pub question_id: String,
    pub prompt: String,
    pub choices: Option<Vec<AskChoice>>,
    pub schema: Option<serde_json::Value>,
    pub default: Option<serde_json::Value>,
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct AskChoice {
    pub value: serde_json::Value,
    #[serde(default)]
    pub label: Option<String>,
}

/// One entry of `complete.files`.
#[derive(Debug, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Managed workers: relative to `assign.output_dir` (default: `name`).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// `fail.error`.
#[derive(Debug, Deserialize)]
pub struct WorkerFailure {
    pub message: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

/// Why a worker frame is not a valid message: answered with `error`
/// `bad_message` and counted as a violation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WorkerDecodeError {
    /// The message's `ref`, when it could be read.
    pub reference: Option<String>,
    /// The message type, when it could be read.
    pub kind: Option<&'static str>,
    /// The `task_id` and `attempt`, when they could be read (a broken
    /// report still names the attempt it was about).
    pub task_id: Option<String>,
    pub message: String,
}

/// The raw fields of any worker message; one pass over the frame.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    protocol: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    worker: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    slots: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    tasks: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    resume: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    task_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    attempt: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    progress: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    level: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    question_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    prompt: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    choices: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    schema: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    default: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    timeout_s: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    files: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    reason: Option<&'a RawValue>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Decodes one worker frame (a WebSocket text message or a stdio line).
pub fn decode(text: &str) -> Result<WorkerRequest<'_>, WorkerDecodeError> {
    let plain = |message: String| WorkerDecodeError {
        reference: None,
        kind: None,
        task_id: None,
        message,
    };
    if text.trim_start().starts_with('[') {
        return Err(plain("a message must be a JSON object".to_owned()));
    }
    let raw: RawFields<'_> = serde_json::from_str(text).map_err(|e| {
        plain(if e.is_data() {
            "a message must be a JSON object".to_owned()
        } else {
            format!("malformed JSON: {}", strip_position(&e))
        })
    })?;
    let reference = match raw.reference {
        None => None,
        Some(value) => {
            let reference: String = serde_json::from_str(value.get())
                .map_err(|_| plain("field `ref` must be a string".to_owned()))?;
            if reference.len() > MAX_REF_BYTES {
                return Err(plain("field `ref` is longer than 128 bytes".to_owned()));
            }
            Some(reference)
        }
    };
    let task_id_text: Option<String> = raw
        .task_id
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    let fail = |kind: Option<&'static str>, message: String| WorkerDecodeError {
        reference: reference.clone(),
        kind,
        task_id: task_id_text.clone(),
        message,
    };
    let Some(kind_raw) = raw.kind else {
        return Err(fail(None, "missing field `type`".to_owned()));
    };
    let kind: Cow<'_, str> = serde_json::from_str(kind_raw.get())
        .map_err(|_| fail(None, "field `type` must be a string".to_owned()))?;
    let kind: &'static str = match &*kind {
        "hello" => "hello",
        "progress" => "progress",
        "log" => "log",
        "ask" => "ask",
        "complete" => "complete",
        "fail" => "fail",
        "cancelled" => "cancelled",
        "heartbeat" => "heartbeat",
        "draining" => "draining",
        "bye" => "bye",
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(fail(None, format!("unknown message type `{shown}`")));
        }
    };
    let message = decode_fields(kind, &raw).map_err(|m| fail(Some(kind), m))?;
    Ok(WorkerRequest { reference, message })
}

fn decode_fields<'a>(kind: &'static str, raw: &RawFields<'a>) -> Result<WorkerMessage<'a>, String> {
    let f = Fields { kind };
    Ok(match kind {
        "hello" => WorkerMessage::Hello(f.hello(raw)?),
        "progress" => WorkerMessage::Progress {
            task_id: f.required(raw.task_id, "task_id")?,
            attempt: f.attempt(raw.attempt)?,
            progress: f.fraction(raw.progress)?,
            message: f.text(raw.message, "message")?,
            data: raw.data.filter(|d| d.get() != "null"),
        },
        "log" => WorkerMessage::Log {
            task_id: f.optional(raw.task_id, "task_id")?,
            attempt: f.optional(raw.attempt, "attempt")?,
            level: f.optional(raw.level, "level")?.unwrap_or_default(),
            message: f
                .text(raw.message, "message")?
                .ok_or_else(|| f.missing("message"))?,
        },
        "ask" => WorkerMessage::Ask {
            task_id: f.required(raw.task_id, "task_id")?,
            attempt: f.attempt(raw.attempt)?,
            question: f.ask(raw)?,
        },
        "complete" => {
            let files: Vec<FileEntry> = f.optional(raw.files, "files")?.unwrap_or_default();
            if files.len() > MAX_FILES {
                return Err(format!("complete: more than {MAX_FILES} files"));
            }
            WorkerMessage::Complete {
                task_id: f.required(raw.task_id, "task_id")?,
                attempt: f.attempt(raw.attempt)?,
                result: raw.result,
                files,
            }
        }
        "fail" => WorkerMessage::Fail {
            task_id: f.required(raw.task_id, "task_id")?,
            attempt: f.attempt(raw.attempt)?,
            error: f.required(raw.error, "error")?,
        },
        "cancelled" => WorkerMessage::Cancelled {
            task_id: f.required(raw.task_id, "task_id")?,
            attempt: f.attempt(raw.attempt)?,
        },
        "heartbeat" => WorkerMessage::Heartbeat,
        "draining" => WorkerMessage::Draining {
            reason: f.text(raw.reason, "reason")?,
        },
        // Only "bye" is left: `decode` matched every type before this.
        _ => WorkerMessage::Bye {
            reason: f.text(raw.reason, "reason")?,
        },
    })
}

/// Field decoding with messages prefixed by the message type.
struct Fields {
    kind: &'static str,
}

impl Fields {
    fn missing(&self, field: &str) -> String {
        format!("{}: missing field `{field}`", self.kind)
    }

    fn required<T: DeserializeOwned>(
        &self,
        raw: Option<&RawValue>,
        field: &str,
    ) -> Result<T, String> {
        self.optional(raw, field)?
            .ok_or_else(|| self.missing(field))
    }

    fn optional<T: DeserializeOwned>(
        &self,
        raw: Option<&RawValue>,
        field: &str,
    ) -> Result<Option<T>, String> {
        let Some(raw) = raw else { return Ok(None) };
        if raw.get() == "null" {
            return Ok(None);
        }
        let mut de = serde_json::Deserializer::from_str(raw.get());
        serde_path_to_error::deserialize(&mut de)
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = strip_position(e.inner());
                if path == "." || path.is_empty() {
                    format!("{}: field `{field}`: {inner}", self.kind)
                } else {
                    format!("{}: field `{field}.{path}`: {inner}", self.kind)
                }
            })
    }

    fn attempt(&self, raw: Option<&RawValue>) -> Result<u32, String> {
        let attempt: u32 = self.required(raw, "attempt")?;
        if attempt == 0 {
            return Err(format!("{}: field `attempt` must be 1 or more", self.kind));
        }
        Ok(attempt)
    }

    fn fraction(&self, raw: Option<&RawValue>) -> Result<Option<f64>, String> {
        let value: Option<f64> = self.optional(raw, "progress")?;
        match value {
            Some(v) if !v.is_finite() => Err(format!(
                "{}: field `progress` must be a number from 0 to 1",
                self.kind
            )),
            Some(v) => Ok(Some(v.clamp(0.0, 1.0))),
            None => Ok(None),
        }
    }

    /// Optional text, cut at [`MAX_TEXT_BYTES`].
    fn text(&self, raw: Option<&RawValue>, field: &str) -> Result<Option<String>, String> {
        Ok(self
            .optional::<String>(raw, field)?
            .map(|t| cut(t, MAX_TEXT_BYTES)))
    }

    fn hello(&self, raw: &RawFields<'_>) -> Result<Hello, String> {
        let protocol: u32 = self.required(raw.protocol, "protocol")?;
        if protocol != WORKER_PROTOCOL_VERSION {
            return Err(format!(
                "hello: protocol {protocol} is not supported (this server speaks {WORKER_PROTOCOL_VERSION})"
            ));
        }
        let worker: WorkerInfo = self.required(raw.worker, "worker")?;
        check_name(&worker.name).map_err(|why| format!("hello: worker.name {why}"))?;
        let slots: u32 = self.optional(raw.slots, "slots")?.unwrap_or(1);
        if slots == 0 || slots > MAX_SLOTS {
            return Err(format!("hello: slots must be 1 to {MAX_SLOTS}"));
        }
        let tasks: Vec<DeclaredTask> = self.required(raw.tasks, "tasks")?;
        if tasks.is_empty() || tasks.len() > MAX_DECLARED_TASKS {
            return Err(format!(
                "hello: tasks must list 1 to {MAX_DECLARED_TASKS} tasks"
            ));
        }
        for (i, task) in tasks.iter().enumerate() {
            check_name(&task.name).map_err(|why| format!("hello: tasks[{i}].name {why}"))?;
            if tasks[..i].iter().any(|t| t.name == task.name) {
                return Err(format!("hello: tasks[{i}].name is declared twice"));
            }
            if task.timeout_s.is_some_and(|t| !t.is_finite() || t <= 0.0) {
                return Err(format!(
                    "hello: tasks[{i}].timeout_s must be a positive number"
                ));
            }
            if task
                .input_schema
                .as_ref()
                .is_some_and(|s| !s.is_object() && !s.is_boolean())
            {
                return Err(format!(
                    "hello: tasks[{i}].input_schema must be a JSON Schema (an object or a boolean)"
                ));
            }
        }
        let resume: Vec<ResumeEntry> = self.optional(raw.resume, "resume")?.unwrap_or_default();
        if resume.len() > slots as usize {
            return Err("hello: resume lists more attempts than slots".to_owned());
        }
        Ok(Hello {
            protocol,
            worker,
            slots,
            tasks,
            resume,
        })
    }

    fn ask(&self, raw: &RawFields<'_>) -> Result<Ask, String> {
        let question_id: String = self.required(raw.question_id, "question_id")?;
        if question_id.is_empty() || question_id.len() > MAX_REF_BYTES {
            return Err("ask: question_id must be 1 to 128 bytes".to_owned());
        }
        let prompt: String = self
            .text(raw.prompt, "prompt")?
            .ok_or_else(|| self.missing("prompt"))?;
        let choices: Option<Vec<AskChoice>> = self.optional(raw.choices, "choices")?;
        let schema: Option<serde_json::Value> = self.optional(raw.schema, "schema")?;
        match (&choices, &schema) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("ask: give exactly one of `choices` and `schema`".to_owned());
            }
            (Some(list), None) if list.is_empty() => {
                return Err("ask: `choices` must not be empty".to_owned());
            }
            _ => {}
        }
        let timeout_s: Option<f64> = self.optional(raw.timeout_s, "timeout_s")?;
        if timeout_s.is_some_and(|t| !t.is_finite() || t <= 0.0) {
            return Err("ask: timeout_s must be a positive number".to_owned());
        }
        Ok(Ask {
            question_id,
            prompt,
            choices,
            schema,
            default: self.optional(raw.default, "default")?,
            timeout_s,
        })
    }
}

/// A task or worker name: 1 to 128 bytes of `A-Z a-z 0-9 . _ - :`.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 128 characters from A-Z a-z 0-9 . _ - :")
    }
}

fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// serde_json appends " at line 1 column 9"; the field name says more.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

// ---------------------------------------------------------------------------
// Server → worker

/// Every message the server sends a worker.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Welcome(WorkerWelcome<'a>),
    Assign(Assign<'a>),
    Cancel {
        task_id: &'a str,
        attempt: u32,
        reason: &'a str,
        grace_s: f64,
    },
    Answer {
        task_id: &'a str,
        attempt: u32,
        question_id: &'a str,
        outcome: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a serde_json::Value>,
        deadline: &'a str,
    },
    Ok {
        #[serde(rename = "ref")]
        reference: &'a str,
    },
    Drain,
    Heartbeat,
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        error: WorkerError<'a>,
    },
}

impl ServerMessage<'_> {
    /// Encodes the message as one JSON text (no newline).
    pub fn to_json(&self) -> String {
        // Cannot fail: map keys are strings, numbers are finite.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","error":{"code":"bad_message","message":"encoding failed"}}"#
                .to_owned()
        })
    }
}

/// `welcome` to a worker.
#[derive(Debug, Serialize)]
pub struct WorkerWelcome<'a> {
    pub protocol: u32,
    pub worker_id: &'a str,
    pub heartbeat_interval_s: f64,
    pub heartbeat_timeout_s: f64,
    pub limits: WorkerLimits,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub resumed: &'a [Resumed<'a>],
}

#[derive(Debug, Serialize)]
pub struct WorkerLimits {
    pub max_message_bytes: u64,
    pub max_file_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Resumed<'a> {
    pub task_id: &'a str,
    pub attempt: u32,
    pub kept: bool,
}

/// `assign`: one attempt of a task.
#[derive(Debug, Serialize)]
pub struct Assign<'a> {
    pub task_id: &'a str,
    pub attempt: u32,
    pub task: &'a str,
    pub input: &'a RawValue,
    pub deadline: &'a str,
    pub timeout_s: f64,
    pub interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<&'a str>,
}

/// The `error` object sent to a worker.
#[derive(Debug, Serialize)]
pub struct WorkerError<'a> {
    pub code: WorkerErrorCode,
    pub message: &'a str,
}

/// Error codes of the worker side (Part II), one to one with the doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerErrorCode {
    BadMessage,
    StaleAttempt,
    NotAssigned,
    TooLarge,
    InvalidFile,
}

impl WorkerErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerErrorCode::BadMessage => "bad_message",
            WorkerErrorCode::StaleAttempt => "stale_attempt",
            WorkerErrorCode::NotAssigned => "not_assigned",
            WorkerErrorCode::TooLarge => "too_large",
            WorkerErrorCode::InvalidFile => "invalid_file",
        }
    }
}

/// Close codes of `GET /v1/worker`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCloseCode {
    /// `1001`: the server is shutting down (after the drain).
    GoingAway,
    /// `1009`: a message over `max_message_bytes`.
    MessageTooBig,
    /// `4400`: too many protocol violations (or an unusable `hello`).
    Violations,
    /// `4401`: not a worker key.
    Unauthorized,
    /// `4408`: no `hello` in time, or silent past `heartbeat_timeout_s`.
    Timeout,
}

impl WorkerCloseCode {
    pub fn code(self) -> u16 {
        match self {
            WorkerCloseCode::GoingAway => 1001,
            WorkerCloseCode::MessageTooBig => 1009,
            WorkerCloseCode::Violations => 4400,
            WorkerCloseCode::Unauthorized => 4401,
            WorkerCloseCode::Timeout => 4408,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            WorkerCloseCode::GoingAway => "server shutting down",
            WorkerCloseCode::MessageTooBig => "message too big",
            WorkerCloseCode::Violations => "too many protocol violations",
            WorkerCloseCode::Unauthorized => "not a worker key",
            WorkerCloseCode::Timeout => "no hello or heartbeat in time",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> WorkerRequest<'_> {
        decode(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn bad(text: &str) -> WorkerDecodeError {
        match decode(text) {
            Ok(request) => panic!("decoded {text} as {request:?}"),
            Err(e) => e,
        }
    }

    const HELLO: &str = r#"{"type":"hello","protocol":1,"worker":{"name":"core-1","version":"2"},
        "slots":2,"tasks":[{"name":"sync","input_schema":{"type":"object"},"retry_safe":true}]}"#;

    #[test]
    fn decodes_every_type() {
        let cases = [
            (HELLO, "hello"),
            (
                r#"{"type":"progress","task_id":"t","attempt":1,"progress":0.5,"data":{"a":1}}"#,
                "progress",
            ),
            (r#"{"type":"log","message":"hi","level":"warn"}"#, "log"),
            (
                r#"{"type":"ask","task_id":"t","attempt":1,"question_id":"q","prompt":"?","choices":[{"value":1}]}"#,
                "ask",
            ),
            (
                r#"{"type":"complete","ref":"c1","task_id":"t","attempt":2,"result":{"x":1},"files":[{"name":"a.txt"}]}"#,
                "complete",
            ),
            (
                r#"{"type":"fail","task_id":"t","attempt":1,"error":{"message":"no","code":"E1"}}"#,
                "fail",
            ),
            (
                r#"{"type":"cancelled","task_id":"t","attempt":1}"#,
                "cancelled",
            ),
            (r#"{"type":"heartbeat"}"#, "heartbeat"),
            (r#"{"type":"draining","reason":"sigterm"}"#, "draining"),
            (r#"{"type":"bye"}"#, "bye"),
        ];
        for (text, kind) in cases {
            assert_eq!(ok(text).message.kind(), kind, "{text}");
        }
    }

    #[test]
    fn hello_fields_and_defaults() {
        let WorkerMessage::Hello(hello) = ok(HELLO).message else {
            panic!("not a hello")
        };
        assert_eq!(hello.worker.name, "core-1");
        assert_eq!(hello.slots, 2);
        assert!(hello.tasks[0].retry_safe);
        let minimal =
            r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[{"name":"t"}]}"#;
        let WorkerMessage::Hello(hello) = ok(minimal).message else {
            panic!("not a hello")
        };
        assert_eq!(hello.slots, 1);
        assert!(!hello.tasks[0].retry_safe);
        assert!(hello.resume.is_empty());
    }

    #[test]
    fn result_and_data_stay_verbatim() {
        let text = r#"{"type":"complete","task_id":"t","attempt":1,"result": {"a" : [1, 2]}}"#;
        let WorkerMessage::Complete { result, files, .. } = ok(text).message else {
            panic!("not complete")
        };
        assert_eq!(result.map(RawValue::get), Some(r#"{"a" : [1, 2]}"#));
        assert!(files.is_empty());
        let text = r#"{"type":"complete","task_id":"t","attempt":1}"#;
        let WorkerMessage::Complete { result, .. } = ok(text).message else {
            panic!("not complete")
        };
        assert!(result.is_none());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let request = ok(r#"{"type":"heartbeat","task_id":5,"extra":{"x":[]},"attempt":"no"}"#);
        assert!(matches!(request.message, WorkerMessage::Heartbeat));
    }

    #[test]
    fn errors_keep_ref_and_task_id_and_name_the_field() {
        let e = bad(r#"{"type":"complete","ref":"c9","task_id":"t1","attempt":"one"}"#);
        assert_eq!(e.reference.as_deref(), Some("c9"));
        assert_eq!(e.task_id.as_deref(), Some("t1"));
        assert_eq!(e.kind, Some("complete"));
        assert!(
            e.message.starts_with("complete: field `attempt`"),
            "{}",
            e.message
        );
        let e = bad(r#"{"type":"fail","task_id":"t","attempt":1,"error":{"code":"x"}}"#);
        assert!(e.message.contains("error"), "{}", e.message);
        let e = bad(r#"{"type":"progress","task_id":"t","attempt":0}"#);
        assert!(e.message.contains("1 or more"), "{}", e.message);
        let e = bad(r#"{"type":"complete","task_id":"t","attempt":1,"files":[{"path":"x"}]}"#);
        assert!(
            e.message.starts_with("complete: field `files"),
            "{}",
            e.message
        );
    }

    #[test]
    fn hello_checks() {
        let cases = [
            (
                r#"{"type":"hello","protocol":2,"worker":{"name":"w"},"tasks":[{"name":"t"}]}"#,
                "protocol 2",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[]}"#,
                "1 to 256",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"a b"},"tasks":[{"name":"t"}]}"#,
                "worker.name",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"slots":0,"tasks":[{"name":"t"}]}"#,
                "slots",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"slots":5000,"tasks":[{"name":"t"}]}"#,
                "slots",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[{"name":"t"},{"name":"t"}]}"#,
                "twice",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[{"name":"t","input_schema":3}]}"#,
                "JSON Schema",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[{"name":"t","timeout_s":-1}]}"#,
                "timeout_s",
            ),
            (
                r#"{"type":"hello","protocol":1,"worker":{"name":"w"},"tasks":[{"name":"t"}],"resume":[{"task_id":"a","attempt":1},{"task_id":"b","attempt":1}]}"#,
                "resume",
            ),
        ];
        for (text, expected) in cases {
            let e = bad(text);
            assert!(e.message.contains(expected), "{text}: {}", e.message);
        }
    }

    #[test]
    fn ask_needs_exactly_one_of_choices_and_schema() {
        let both = r#"{"type":"ask","task_id":"t","attempt":1,"question_id":"q","prompt":"?","choices":[{"value":1}],"schema":{}}"#;
        assert!(bad(both).message.contains("exactly one"));
        let neither = r#"{"type":"ask","task_id":"t","attempt":1,"question_id":"q","prompt":"?"}"#;
        assert!(bad(neither).message.contains("exactly one"));
    }

    #[test]
    fn malformed_frames() {
        assert!(bad("{").message.starts_with("malformed JSON"));
        assert!(bad("").message.starts_with("malformed JSON"));
        assert_eq!(bad("[1]").message, "a message must be a JSON object");
        assert_eq!(bad("7").message, "a message must be a JSON object");
        assert_eq!(bad(r#"{"ref":"x"}"#).message, "missing field `type`");
        assert_eq!(bad(r#"{"ref":"x"}"#).reference.as_deref(), Some("x"));
        assert_eq!(
            bad(r#"{"type":7}"#).message,
            "field `type` must be a string"
        );
        assert!(
            bad(r#"{"type":"assign"}"#)
                .message
                .contains("unknown message type")
        );
        let long = "r".repeat(129);
        assert!(
            bad(&format!(r#"{{"type":"bye","ref":"{long}"}}"#))
                .reference
                .is_none()
        );
    }

    #[test]
    fn long_text_is_cut_not_refused() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let text = format!(r#"{{"type":"log","message":"{long}"}}"#);
        let WorkerMessage::Log { message, level, .. } = ok(&text).message else {
            panic!("not a log")
        };
        assert!(message.len() <= MAX_TEXT_BYTES);
        assert_eq!(level, LogLevel::Info);
    }

    #[test]
    fn progress_is_clamped_and_must_be_finite() {
        let WorkerMessage::Progress { progress, .. } =
            ok(r#"{"type":"progress","task_id":"t","attempt":1,"progress":7}"#).message
        else {
            panic!("not progress")
        };
        assert_eq!(progress, Some(1.0));
    }

    #[test]
    fn server_messages_encode_as_documented() {
        let input = RawValue::from_string(r#"{"device":"17"}"#.to_owned())
            .unwrap_or_else(|_| unreachable!());
        let assign = ServerMessage::Assign(Assign {
            task_id: "t1",
            attempt: 1,
            task: "sync",
            input: &input,
            deadline: "2026-12-01T11:00:00.000Z",
            timeout_s: 3600.0,
            interactive: true,
            output_dir: Some("/tmp/x"),
            upload_url: None,
        });
        let json: serde_json::Value =
            serde_json::from_str(&assign.to_json()).unwrap_or_else(|_| unreachable!());
        assert_eq!(json["type"], "assign");
        assert_eq!(json["input"]["device"], "17");
        assert_eq!(json["output_dir"], "/tmp/x");
        assert!(json.get("upload_url").is_none());
        let error = ServerMessage::Error {
            reference: Some("c1"),
            error: WorkerError {
                code: WorkerErrorCode::StaleAttempt,
                message: "attempt 1 is not current",
            },
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","ref":"c1","error":{"code":"stale_attempt","message":"attempt 1 is not current"}}"#
        );
        assert_eq!(ServerMessage::Drain.to_json(), r#"{"type":"drain"}"#);
        assert_eq!(
            ServerMessage::Ok { reference: "r" }.to_json(),
            r#"{"type":"ok","ref":"r"}"#
        );
    }
}
