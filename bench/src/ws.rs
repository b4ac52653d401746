//! WebSocket client plumbing, through `taskwire-client`'s bare
//! [`Connection`]: header auth, the `taskwire.v1` subprotocol, TCP_NODELAY,
//! typed frames. The load generator measures the crate's own socket,
//! encoding and decoding; only the scheduling of submits is its own.

use taskwire_client::protocol::incoming::{EventKind, Message};
use taskwire_client::{Client, Connection, Frame};
use tokio::time::Instant;

use crate::BenchError;

pub type Socket = Connection;

/// The server and key every connection of a run shares.
pub fn client(url: &str, key: &str) -> Result<Client, BenchError> {
    Client::new(url, key).map_err(|e| BenchError::new(format!("{url}: {e}")))
}

/// Opens an authenticated connection and waits for `welcome`; Nagle is
/// off (the load generator must not add delayed-ACK stalls).
pub async fn connect(client: &Client, read_buffer: Option<usize>) -> Result<Socket, BenchError> {
    Connection::open_with(client, read_buffer)
        .await
        .map_err(|e| BenchError::new(format!("connect: {e}")))
}

/// Parses a task id (32 hex digits) into a map key without allocating.
pub fn task_key(task_id: &str) -> Option<u128> {
    u128::from_str_radix(task_id, 16).ok()
}

pub fn ws_error(e: taskwire_client::Error) -> BenchError {
    BenchError::new(format!("websocket: {e}"))
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
    socket.send_text(submit).await.map_err(ws_error)?;
    let mut task: Option<u128> = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| BenchError::new("the task did not end before the deadline"))?
            .map_err(ws_error)?;
        let Frame::Message(message) = frame else {
            continue;
        };
        match message {
            Message::Event(event) => {
                if matches!(event.kind, EventKind::Accepted { .. })
                    && event.reference.as_deref() == Some("one")
                {
                    task = task_key(event.task_id.as_str());
                } else if event.is_terminal()
                    && task.is_some()
                    && task_key(event.task_id.as_str()) == task
                {
                    return Ok(match &event.kind {
                        EventKind::Completed { .. } => Ended::Completed(
                            serde_json::to_value(&event)
                                .map_err(|e| BenchError::new(format!("event: {e}")))?,
                        ),
                        EventKind::Failed { error } => Ended::NotCompleted(format!(
                            "failed: {}: {}",
                            error.code.as_str(),
                            error.message
                        )),
                        _ => Ended::NotCompleted(event.kind.name().to_owned()),
                    });
                }
            }
            Message::Rejected { reference, error } | Message::Error { reference, error }
                if reference.as_deref() == Some("one") =>
            {
                return Ok(Ended::NotCompleted(format!(
                    "rejected: {}: {}",
                    error.code.as_str(),
                    error.message
                )));
            }
            _ => {}
        }
    }
}
