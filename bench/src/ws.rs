//! WebSocket client plumbing: connect with header auth and TCP_NODELAY,
//! and decode the few fields of a server message the benchmark reads.

use std::borrow::Cow;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::BenchError;

pub type Socket = WebSocketStream<TcpStream>;

/// Opens an authenticated connection (`Authorization: Bearer`), offering
/// the `taskwire.v1` subprotocol, with Nagle off: the load generator must
/// not add 40 ms delayed-ACK stalls to what it measures.
pub async fn connect(
    url: &str,
    key: &str,
    read_buffer: Option<usize>,
) -> Result<Socket, BenchError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| BenchError::new(format!("bad url {url}: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| BenchError::new("the key is not a valid header value"))?;
    request.headers_mut().insert("authorization", bearer);
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("taskwire.v1"),
    );
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| BenchError::new(format!("no host in {url}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| BenchError::new(format!("connect {host}:{port}: {e}")))?;
    stream.set_nodelay(true).map_err(BenchError::io)?;
    let mut config = WebSocketConfig::default();
    if let Some(bytes) = read_buffer {
        config = config.read_buffer_size(bytes).write_buffer_size(0);
    }
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    BenchError::new(format!("upgrade refused: HTTP {}", response.status()))
                }
                other => BenchError::new(format!("websocket handshake: {other}")),
            })?;
    Ok(socket)
}

/// The fields of a server message the benchmark looks at; the rest
/// (results, timestamps) are skipped without being built.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(rename = "ref", borrow, default)]
    pub reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub task_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

impl Incoming<'_> {
    pub fn is_terminal(&self) -> bool {
        matches!(&*self.kind, "completed" | "failed" | "cancelled")
    }
}

/// Waits for the `welcome` message (header auth sends it at once).
pub async fn await_welcome(socket: &mut Socket, deadline: Instant) -> Result<(), BenchError> {
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| BenchError::new("no welcome before the deadline"))?;
        match next {
            Some(Ok(Message::Text(text))) => {
                let msg: Incoming<'_> = serde_json::from_str(&text)
                    .map_err(|e| BenchError::new(format!("undecodable message: {e}")))?;
                if msg.kind == "welcome" {
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::new(format!("closed before welcome: {frame:?}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(BenchError::new(format!("websocket: {e}"))),
            None => return Err(BenchError::new("closed before welcome")),
        }
    }
}

/// Parses a task id (32 hex digits) into a map key without allocating.
pub fn task_key(task_id: &str) -> Option<u128> {
    u128::from_str_radix(task_id, 16).ok()
}

/// How one task submitted by [`run_one`] ended.
#[derive(Debug)]
pub enum Ended {
    /// The `completed` event, whole.
    Completed(serde_json::Value),
    /// `rejected`, `failed` or `cancelled`: the event type and its error.
    NotCompleted(String),
}

/// Sends one prepared `submit` message (it must carry `"ref":"one"`) and
/// waits for the task's terminal event.
pub async fn run_one(
    socket: &mut Socket,
    submit: String,
    deadline: Instant,
) -> Result<Ended, BenchError> {
    use futures_util::SinkExt;
    socket
        .send(Message::text(submit))
        .await
        .map_err(|e| BenchError::new(format!("websocket: {e}")))?;
    let mut task: Option<u128> = None;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| BenchError::new("the task did not end before the deadline"))?;
        let body = match next {
            Some(Ok(Message::Text(body))) => body,
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::new(format!("closed: {frame:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(BenchError::new(format!("websocket: {e}"))),
            None => return Err(BenchError::new("the server closed the connection")),
        };
        let msg: Incoming<'_> = serde_json::from_str(&body)
            .map_err(|e| BenchError::new(format!("undecodable message: {e}")))?;
        let describe = |msg: &Incoming<'_>| match &msg.error {
            Some(e) => format!("{}: {}: {}", msg.kind, e.code, e.message),
            None => msg.kind.to_string(),
        };
        match &*msg.kind {
            "accepted" if msg.reference.as_deref() == Some("one") => {
                task = msg.task_id.as_deref().and_then(task_key);
            }
            "rejected" | "error" if msg.reference.as_deref() == Some("one") => {
                return Ok(Ended::NotCompleted(describe(&msg)));
            }
            _ if msg.is_terminal()
                && task.is_some()
                && msg.task_id.as_deref().and_then(task_key) == task =>
            {
                if msg.kind == "completed" {
                    let whole = serde_json::from_str(&body)
                        .map_err(|e| BenchError::new(format!("undecodable message: {e}")))?;
                    return Ok(Ended::Completed(whole));
                }
                return Ok(Ended::NotCompleted(describe(&msg)));
            }
            _ => {}
        }
    }
}
