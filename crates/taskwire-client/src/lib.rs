//! A client for [taskwire](https://github.com/taskwire), the compute-task
//! service: submit self-contained tasks, follow their events, cancel them,
//! answer their questions and download their files.
//!
//! ```no_run
//! use taskwire_client::{Client, Outcome, Submit};
//!
//! # async fn run() -> Result<(), taskwire_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("TASKWIRE_KEY").unwrap_or_default())?;
//! let session = client.connect().await?;
//!
//! let task = session
//!     .submit(Submit::new("sleep", &serde_json::json!({"ms": 500, "steps": 5}))?)
//!     .await?;
//! println!("accepted as {}", task.id());
//! match task.wait().await? {
//!     Outcome::Completed { result, files, .. } => println!("result {result}, {} files", files.len()),
//!     Outcome::Failed { error } => println!("failed: {}: {}", error.code.as_str(), error.message),
//!     Outcome::Cancelled { reason } => println!("cancelled ({reason})"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! - [`Client`]: the server's URL and API key (sent as `Authorization:
//!   Bearer`, never logged nor shown in an error), plus REST: [`submit`],
//!   [`status`], [`cancel`], [`events`] (Server-Sent Events that resume with
//!   `Last-Event-ID`), [`download`] (streamed to disk, `sha256` checked).
//! - [`Session`] ([`Client::connect`]): one WebSocket shared by any number
//!   of tasks. Each task's events arrive on its own [`TaskEvents`] stream.
//!   When the connection breaks, the session reconnects with backoff and
//!   subscribes again with `after_seq` = the last `seq` each stream has
//!   seen, so no event is lost or delivered twice.
//! - [`Connection`] ([`Client::connection`]): one socket, typed frames in
//!   and out, no reconnection and no routing: for load generators and
//!   other code that wants every frame itself.
//!
//! The wire types are [`taskwire_protocol`]'s, re-exported as [`protocol`].
//!
//! # Errors
//!
//! Every call returns this crate's [`Error`], an opaque type: ask it
//! [`code`](Error::code) for the protocol's error code, [`status`](Error::status)
//! for an HTTP status, [`close_code`](Error::close_code) for a WebSocket
//! close, or one of its `is_*` questions.
//!
//! # Questions
//!
//! A running task may ask its submitter a question ([`EventKind::Question`]
//! in its events) and wait. Answer with [`TaskHandle::answer`],
//! [`Session::answer`] (the reply is the task's `answered` event) or
//! [`Client::answer`] (REST). [`Submit::interactive`]`(false)` keeps a task
//! from asking at all.
//!
//! [`submit`]: Client::submit
//! [`status`]: Client::status
//! [`cancel`]: Client::cancel
//! [`events`]: Client::events
//! [`download`]: Client::download

pub use taskwire_protocol as protocol;

mod download;
mod error;
mod rest;
mod session;
mod socket;
mod submit;

#[cfg(feature = "cli")]
pub mod cli;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use reqwest::Url;
pub use taskwire_protocol::client::{Delivery, Priority};
pub use taskwire_protocol::incoming::{
    AdminList, AdminNodes, AdminWorkers, AnswerReply, Event, EventKind, File, Node, Question,
    Schedule, ScheduleRun, ScheduleStarted, Snapshot, Stats, Submitted, Summary, TaskId, Worker,
};
pub use taskwire_protocol::{ErrorCode, WireError};

pub use crate::error::{Error, Result};
pub use crate::rest::SseEvents;
pub use crate::session::{Outcome, Session, TaskEvents, TaskHandle, WatchFeed, WatchUpdate};
pub use crate::socket::{Connection, Frame};
pub use crate::submit::Submit;

/// A taskwire server and the key to use with it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Url,
    key: ApiKey,
    http: reqwest::Client,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    reconnect: Reconnect,
    event_buffer: usize,
}

/// The key, redacted in `Debug`.
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// How a [`Session`] reconnects after its connection broke: exponential
/// backoff from `initial` up to `max` between attempts; after
/// `give_up_after` without a connection, every stream ends with the last
/// connection error and the session is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    pub initial: Duration,
    pub max: Duration,
    pub give_up_after: Option<Duration>,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up_after: Some(Duration::from_secs(60)),
        }
    }
}

impl Reconnect {
    /// Never reconnect: the first break ends every stream.
    pub fn never() -> Reconnect {
        Reconnect {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            give_up_after: Some(Duration::ZERO),
        }
    }
}

/// Settings of a [`Client`]; [`Client::builder`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    key: ApiKey,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    reconnect: Reconnect,
    event_buffer: usize,
}

impl ClientBuilder {
    /// How long connecting (TCP, TLS, upgrade, `welcome`) may take. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// A deadline for each whole REST request (not for SSE streams or
    /// downloads). Default: none.
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = Some(timeout);
        self
    }

    /// The session's reconnection policy.
    pub fn reconnect(mut self, reconnect: Reconnect) -> ClientBuilder {
        self.reconnect = reconnect;
        self
    }

    /// Events a [`TaskEvents`] stream holds before its session stops
    /// forwarding to it (it catches up from the server once read; see
    /// [`TaskEvents`]). Default 256, at least 1.
    pub fn event_buffer(mut self, events: usize) -> ClientBuilder {
        self.event_buffer = events.max(1);
        self
    }

    pub fn build(self) -> Result<Client> {
        let base = parse_base(&self.base)?;
        let secure = base.scheme() == "https";
        let tls = match tls_config() {
            Ok(config) => Some(config),
            Err(e) if secure => return Err(e),
            Err(_) => None,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("taskwire-client/", env!("CARGO_PKG_VERSION")));
        if let Some(timeout) = self.request_timeout {
            http = http.timeout(timeout);
        }
        let config = match &tls {
            Some(config) => (**config).clone(),
            // Plain HTTP never uses it, but the HTTP client wants one.
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::usage("TLS setup").with(e))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let http = http
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| Error::usage("HTTP client setup").with(e))?;
        Ok(Client {
            inner: Arc::new(Inner {
                base,
                key: self.key,
                http,
                tls,
                connect_timeout: self.connect_timeout,
                reconnect: self.reconnect,
                event_buffer: self.event_buffer,
            }),
        })
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`, or
    /// `https://`; a `ws://`/`wss://` URL of `/v1/ws` works too) with this
    /// API key or browser token.
    pub fn new(base_url: &str, key: impl Into<String>) -> Result<Client> {
        Client::builder(base_url, key).build()
    }

    pub fn builder(base_url: &str, key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            key: ApiKey(key.into()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
            reconnect: Reconnect::default(),
            event_buffer: 256,
        }
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Opens a [`Session`]: one WebSocket for any number of tasks, that
    /// reconnects and resumes.
    pub async fn connect(&self) -> Result<Session> {
        Session::open(self.clone()).await
    }

    /// Opens a bare [`Connection`] (no reconnection, no routing).
    pub async fn connection(&self) -> Result<Connection> {
        Connection::open(self).await
    }

    /// `ws[s]://host/v1/ws` for the base URL.
    pub(crate) fn ws_url(&self) -> Url {
        let mut url = self.url("/v1/ws");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http → ws and https → wss are always allowed by `Url`.
        let _ = url.set_scheme(scheme);
        url
    }

    /// An absolute URL for a server path (a file link may already be one).
    pub(crate) fn url(&self, path: &str) -> Url {
        if let Ok(url) = Url::parse(path) {
            return url;
        }
        let mut url = self.inner.base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(query);
        url
    }

    pub(crate) fn tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        self.inner
            .tls
            .clone()
            .ok_or_else(|| Error::usage("no TLS roots are available on this system"))
    }

    pub(crate) fn bearer(&self) -> &str {
        &self.inner.key.0
    }
}

fn parse_base(text: &str) -> Result<Url> {
    let mut url =
        Url::parse(text).map_err(|e| Error::usage(format!("bad server URL {text:?}")).with(e))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        other => {
            return Err(Error::usage(format!(
                "the server URL must be http(s) or ws(s), not {other}"
            )));
        }
    };
    if url.set_scheme(scheme).is_err() || url.host_str().is_none() {
        return Err(Error::usage(format!("bad server URL {text:?}")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::usage(
            "the server URL must not carry credentials (pass the key separately)",
        ));
    }
    // A WebSocket URL names the endpoint; the base is what is above it.
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1/ws").unwrap_or(path).to_owned();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// rustls with aws-lc-rs and the platform's certificate verifier.
fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::usage("TLS setup").with(e))?
    .with_platform_verifier()
    .map_err(|e| Error::usage("TLS certificate verifier").with(e))?
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_a_base() {
        let client = Client::new("http://127.0.0.1:8080", "k").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client.ws_url().as_str(), "ws://127.0.0.1:8080/v1/ws");
        assert_eq!(
            client.url("/v1/tasks/ab?x=1").as_str(),
            "http://127.0.0.1:8080/v1/tasks/ab?x=1"
        );
        assert_eq!(
            client.url("https://files.example/files/t/n").as_str(),
            "https://files.example/files/t/n"
        );
        let client =
            Client::new("wss://example.org/tw/v1/ws", "k").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client.base_url().as_str(), "https://example.org/tw");
        assert_eq!(client.ws_url().as_str(), "wss://example.org/tw/v1/ws");
        assert_eq!(
            client.url("/v1/tasks").as_str(),
            "https://example.org/tw/v1/tasks"
        );
        assert!(Client::new("ftp://x", "k").is_err_and(|e| e.is_usage()));
        assert!(Client::new("http://user:pw@x", "k").is_err_and(|e| e.is_usage()));
    }

    #[test]
    fn the_key_is_never_shown() {
        let client =
            Client::new("http://127.0.0.1:1", "tw_secret_key").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{client:?}").contains("tw_secret_key"));
    }
}
