//! Wire types of the taskwire protocol (`docs/protocol.md`).
//!
//! This module owns the JSON shapes only: what a client may send
//! ([`client::Request`]), what the server sends ([`server::ServerMessage`]),
//! the error codes and the close codes. It needs nothing but serde, so a
//! client crate can reuse it; it never sees sockets, the scheduler or domain
//! types (`server` converts those into these).

pub mod admin;
pub mod client;
pub mod inputs;
pub mod schedules;
pub mod server;
pub mod worker;

// The client's side (owned decoding of server messages, encoding of client
// messages); the server uses neither.
pub mod incoming;
pub mod outgoing;

use serde::{Deserialize, Serialize};

/// The protocol version spoken by this server (`welcome.protocol`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol the server selects when a client offers it.
pub const SUBPROTOCOL: &str = "taskwire.v1";

/// Longest `ref` a client may attach to a message, in bytes.
pub const MAX_REF_BYTES: usize = 128;

/// Every error code of PROTOCOL.md, one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    Unauthorized,
    UnknownTask,
    InvalidInput,
    QueueFull,
    RateLimited,
    NotFound,
    AlreadyFinished,
    AlreadyAnswered,
    Timeout,
    TaskError,
    WorkerLost,
    NoWorker,
    Internal,
    StorageFull,
    ShuttingDown,
    /// A URL input of the task could not be fetched.
    InputFetchFailed,
    /// Cluster mode: the shared queue (NATS) cannot be reached now.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for metrics that should show zeros too.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadMessage,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownTask,
        ErrorCode::InvalidInput,
        ErrorCode::QueueFull,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::AlreadyFinished,
        ErrorCode::AlreadyAnswered,
        ErrorCode::Timeout,
        ErrorCode::TaskError,
        ErrorCode::WorkerLost,
        ErrorCode::NoWorker,
        ErrorCode::Internal,
        ErrorCode::StorageFull,
        ErrorCode::ShuttingDown,
        ErrorCode::InputFetchFailed,
        ErrorCode::Unavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownTask => "unknown_task",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyFinished => "already_finished",
            ErrorCode::AlreadyAnswered => "already_answered",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TaskError => "task_error",
            ErrorCode::WorkerLost => "worker_lost",
            ErrorCode::NoWorker => "no_worker",
            ErrorCode::Internal => "internal",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::InputFetchFailed => "input_fetch_failed",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// The `error` object: `{code, message, details?, retry_after_ms?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after_ms: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// WebSocket close codes the server sends (PROTOCOL.md, plus `1013` for
/// slow readers and the RFC 6455 codes for broken frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// `1000`: normal closure.
    Normal,
    /// `1001`: the server is shutting down (after the drain).
    GoingAway,
    /// `1002`: a WebSocket protocol violation (bad framing, unmasked frame).
    ProtocolError,
    /// `1007`: a text frame that is not UTF-8.
    InvalidPayload,
    /// `1009`: a message over `max_message_bytes`.
    MessageTooBig,
    /// `1013`: the client read too slowly and its send queue filled
    /// (`docs/protocol.md`); it may reconnect and `subscribe` with `after_seq`.
    TryAgainLater,
    /// `4401`: wrong key in the `auth` message, or an expired token.
    Unauthorized,
    /// `4408`: no `auth` message within `auth_timeout_s`.
    AuthTimeout,
    /// `4429`: over `max_connections`.
    TooManyConnections,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Unauthorized => 4401,
            CloseCode::AuthTimeout => 4408,
            CloseCode::TooManyConnections => 4429,
        }
    }

    /// A short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol violation",
            CloseCode::InvalidPayload => "text frame is not UTF-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::TryAgainLater => {
                "send queue full: read faster, then subscribe with after_seq"
            }
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::AuthTimeout => "no auth message in time",
            CloseCode::TooManyConnections => "too many connections",
        }
    }
}
