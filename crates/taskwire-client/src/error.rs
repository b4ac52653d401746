//! The one public error type: opaque, with questions instead of variants.
//!
//! Like hyper's `Error`, [`Error`] keeps its kinds private so they can grow
//! without breaking callers: ask it what happened (`is_connect`, `code`,
//! `status`, ...) and print it. It never holds the API key: no request
//! header is ever part of an error.

use std::fmt;
use std::time::Duration;

use taskwire_protocol::{ErrorCode, WireError};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong talking to a taskwire server.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    /// What the server answered, when it answered with an error object.
    wire: Option<WireError>,
    /// The HTTP status of a REST answer or a refused upgrade.
    status: Option<u16>,
    /// The WebSocket close code the server sent.
    close: Option<u16>,
    /// A few words of context (never the key).
    context: Option<String>,
    cause: Option<Cause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The server could not be reached, or the connection was lost.
    Connect,
    /// The key was refused (HTTP 401, close 4401).
    Auth,
    /// The server answered with a protocol error (`rejected`, `error`, a
    /// REST error body).
    Server,
    /// The server sent something this crate cannot read.
    Decode,
    /// A deadline passed.
    Timeout,
    /// Local IO (writing a download).
    Io,
    /// A downloaded file does not match its `sha256`.
    Checksum,
    /// The caller's own mistake: a bad URL, a key that is not a header
    /// value, input that is not JSON.
    Usage,
    /// The session was closed (by its owner, or for good after failed
    /// reconnects).
    Closed,
}

impl Error {
    fn new(kind: Kind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                wire: None,
                status: None,
                close: None,
                context: None,
                cause: None,
            }),
        }
    }

    pub(crate) fn connect(context: impl Into<String>) -> Error {
        Error::new(Kind::Connect).context(context)
    }

    pub(crate) fn auth(context: impl Into<String>) -> Error {
        Error::new(Kind::Auth).context(context)
    }

    pub(crate) fn decode(context: impl Into<String>) -> Error {
        Error::new(Kind::Decode).context(context)
    }

    pub(crate) fn timeout(context: impl Into<String>) -> Error {
        Error::new(Kind::Timeout).context(context)
    }

    pub(crate) fn io(context: impl Into<String>) -> Error {
        Error::new(Kind::Io).context(context)
    }

    pub(crate) fn checksum(context: impl Into<String>) -> Error {
        Error::new(Kind::Checksum).context(context)
    }

    pub(crate) fn usage(context: impl Into<String>) -> Error {
        Error::new(Kind::Usage).context(context)
    }

    /// An HTTP answer that is an error without the protocol's error body
    /// (a proxy's page, a route this server does not have).
    pub(crate) fn http(status: u16) -> Error {
        Error::new(Kind::Server)
            .context(format!("the server answered HTTP {status}"))
            .with_status(status)
    }

    pub(crate) fn closed() -> Error {
        Error::new(Kind::Closed)
    }

    /// The server's error object; `401`/`unauthorized` answers are also
    /// [`is_auth`](Error::is_auth).
    pub(crate) fn server(wire: WireError) -> Error {
        let kind = if wire.code == ErrorCode::Unauthorized {
            Kind::Auth
        } else {
            Kind::Server
        };
        let mut error = Error::new(kind);
        error.inner.wire = Some(wire);
        error
    }

    pub(crate) fn with_status(mut self, status: u16) -> Error {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_close(mut self, code: u16) -> Error {
        self.inner.close = Some(code);
        self
    }

    pub(crate) fn context(mut self, context: impl Into<String>) -> Error {
        self.inner.context = Some(context.into());
        self
    }

    pub(crate) fn with(mut self, cause: impl Into<Cause>) -> Error {
        self.inner.cause = Some(cause.into());
        self
    }

    /// The protocol error code the server answered with (`queue_full`,
    /// `not_found`, ...).
    pub fn code(&self) -> Option<ErrorCode> {
        self.inner.wire.as_ref().map(|w| w.code)
    }

    /// The whole error object the server answered with (message, details).
    pub fn wire(&self) -> Option<&WireError> {
        self.inner.wire.as_ref()
    }

    /// The HTTP status of a REST answer or of a refused WebSocket upgrade.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// The WebSocket close code, when the server closed the connection.
    pub fn close_code(&self) -> Option<u16> {
        self.inner.close
    }

    /// How long the server asked to wait before trying again
    /// (`queue_full`, `rate_limited`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner
            .wire
            .as_ref()
            .and_then(|w| w.retry_after_ms)
            .map(Duration::from_millis)
    }

    /// The server could not be reached or the connection broke.
    pub fn is_connect(&self) -> bool {
        self.inner.kind == Kind::Connect
    }

    /// The key (or browser token) was refused.
    pub fn is_auth(&self) -> bool {
        self.inner.kind == Kind::Auth
    }

    /// The server answered with a protocol error ([`code`](Error::code)).
    pub fn is_server(&self) -> bool {
        self.inner.kind == Kind::Server
    }

    /// The server sent something this client cannot read.
    pub fn is_decode(&self) -> bool {
        self.inner.kind == Kind::Decode
    }

    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// Local IO failed (writing a download to disk).
    pub fn is_io(&self) -> bool {
        self.inner.kind == Kind::Io
    }

    /// A downloaded file's bytes do not match the `sha256` the server
    /// announced (the partial file was removed).
    pub fn is_checksum(&self) -> bool {
        self.inner.kind == Kind::Checksum
    }

    /// The caller's own mistake (bad URL, key or JSON).
    pub fn is_usage(&self) -> bool {
        self.inner.kind == Kind::Usage
    }

    /// The session is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.kind == Kind::Closed
    }

    fn description(&self) -> &'static str {
        match self.inner.kind {
            Kind::Connect => "connection failed",
            Kind::Auth => "unauthorized",
            Kind::Server => "server error",
            Kind::Decode => "undecodable server message",
            Kind::Timeout => "timed out",
            Kind::Io => "io error",
            Kind::Checksum => "checksum mismatch",
            Kind::Usage => "invalid argument",
            Kind::Closed => "session closed",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.inner.wire, &self.inner.context) {
            (None, Some(context)) if self.inner.kind == Kind::Server => f.write_str(context)?,
            (Some(wire), _) => write!(f, "{}: {}", wire.code.as_str(), wire.message)?,
            (None, Some(context)) => write!(f, "{}: {context}", self.description())?,
            (None, None) => f.write_str(self.description())?,
        }
        if let Some(status) = self.inner.status
            && self.inner.wire.is_some()
        {
            write!(f, " (HTTP {status})")?;
        }
        if let Some(code) = self.inner.close {
            write!(f, " (close {code})")?;
        }
        if let Some(cause) = &self.inner.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("taskwire_client::Error");
        d.field("kind", &self.inner.kind);
        if let Some(wire) = &self.inner.wire {
            d.field("code", &wire.code).field("message", &wire.message);
        }
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(close) = self.inner.close {
            d.field("close", &close);
        }
        if let Some(context) = &self.inner.context {
            d.field("context", context);
        }
        if let Some(cause) = &self.inner.cause {
            d.field("cause", cause);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .cause
            .as_ref()
            .map(|c| &**c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_carry_their_code_and_retry_hint() {
        let mut wire = WireError::new(ErrorCode::QueueFull, "queue is full");
        wire.retry_after_ms = Some(250);
        let e = Error::server(wire).with_status(429);
        assert!(e.is_server());
        assert_eq!(e.code(), Some(ErrorCode::QueueFull));
        assert_eq!(e.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(e.to_string(), "queue_full: queue is full (HTTP 429)");
        let e = Error::server(WireError::new(ErrorCode::Unauthorized, "bad key"));
        assert!(e.is_auth());
    }

    #[test]
    fn connection_errors_say_what_and_why() {
        let e = Error::connect("connection lost").with_close(1013);
        assert!(e.is_connect());
        assert_eq!(e.close_code(), Some(1013));
        assert_eq!(
            e.to_string(),
            "connection failed: connection lost (close 1013)"
        );
    }
}
