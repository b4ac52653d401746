//! `GET /v1/worker`: the remote worker transport (`docs/protocol.md`
//! Part II). Checks before the upgrade — no `Origin` (no browser is a
//! worker), a worker key as Bearer, the `taskwire.worker.v1` subprotocol,
//! the connection limit, not draining — then one task per socket pumps
//! frames between it and the worker's session (`workers::remote`), which
//! runs apart so that it can outlive a dropped connection and be taken
//! over by the worker's next one.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use tokio::sync::mpsc;

use super::AppState;
use super::error::error_response;
use crate::auth::WorkerAuthError;
use crate::protocol::worker::{WORKER_SUBPROTOCOL, WorkerCloseCode};
use crate::protocol::{ErrorCode, WireError};
use crate::workers::remote::{self, Link, LinkIn, LinkOut};

/// WebSocket read buffer: small, so an idle worker costs little.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;
/// Frames written before one flush.
const MAX_BURST: usize = 256;

pub(super) async fn upgrade(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let refuse = |status: StatusCode, message: &str| {
        state.metrics.rejected(ErrorCode::Unauthorized);
        error_response(status, &WireError::new(ErrorCode::Unauthorized, message))
    };
    if headers.contains_key(header::ORIGIN) {
        tracing::info!("worker connection refused: it carries an Origin");
        return refuse(
            StatusCode::FORBIDDEN,
            "workers do not connect from browsers (no Origin allowed)",
        );
    }
    let Some(secret) = super::caller::bearer_secret(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <worker key>",
        );
    };
    let owner = match state.auth.worker(secret) {
        Ok(owner) => owner,
        Err(WorkerAuthError::Unknown) => {
            tracing::info!(client = "unknown", "worker authentication failed");
            return refuse(StatusCode::UNAUTHORIZED, "unknown key");
        }
        Err(WorkerAuthError::NotAWorkerKey) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "not a worker key (role = \"worker\")",
            );
        }
    };
    let offered = upgrade.requested_protocols().any(|p| {
        p.to_str()
            .is_ok_and(|p| p.split(',').any(|p| p.trim() == WORKER_SUBPROTOCOL))
    });
    if !offered {
        return error_response(
            StatusCode::BAD_REQUEST,
            &WireError::new(
                ErrorCode::BadMessage,
                format!("offer the subprotocol {WORKER_SUBPROTOCOL}"),
            ),
        );
    }
    if state.draining.is_cancelled() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &WireError::new(ErrorCode::ShuttingDown, "the server is shutting down"),
        );
    }
    let Some(slot) = state.connection_slot() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &WireError::new(ErrorCode::RateLimited, "too many connections"),
        );
    };
    let max = state.config.limits.max_message_bytes;
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max)
        .max_message_size(max)
        .max_frame_size(max);
    upgrade.set_selected_protocol(HeaderValue::from_static(WORKER_SUBPROTOCOL));
    let peer = peer.map_or_else(
        || "unknown".to_owned(),
        |Extension(ConnectInfo(addr))| addr.to_string(),
    );
    let owner: Arc<str> = Arc::from(owner.as_str());
    upgrade
        .on_upgrade(move |socket| async move {
            let tracker = state.streams.clone();
            tracker
                .track_future(run(socket, state, owner, peer, slot))
                .await;
        })
        .into_response()
}

async fn run(
    mut socket: WebSocket,
    state: AppState,
    owner: Arc<str>,
    peer: String,
    _slot: super::ConnectionSlot,
) {
    // The first frame: a hello (maybe of a worker coming back), or whatever
    // the session will refuse.
    let first =
        match tokio::time::timeout(state.config.security.auth_timeout, first_text(&mut socket))
            .await
        {
            Ok(Some(text)) => text,
            Ok(None) => return,
            Err(_) => {
                close(&mut socket, WorkerCloseCode::Timeout).await;
                return;
            }
        };
    let (in_tx, incoming) = mpsc::channel(64);
    let (outgoing, mut out_rx) = mpsc::channel(remote::LINK_QUEUE);
    let link = Link {
        incoming,
        outgoing,
        peer: peer.clone(),
    };
    let workers = &state.workers;
    let link = match remote::hello_name(&owner, &first) {
        Some(name) => workers.parking().take_over(&name, link, first).err(),
        None => Some((link, first)),
    };
    if let Some((link, first)) = link {
        tracing::info!(client = %owner, %peer, "worker connected");
        state.streams.spawn(remote::run(
            workers.clone(),
            Arc::clone(&owner),
            link,
            first,
            state.drained.clone(),
        ));
    } else {
        tracing::info!(client = %owner, %peer, "worker reconnected");
    }
    loop {
        tokio::select! {
            message = socket.recv() => {
                let event = match message {
                    Some(Ok(Message::Text(text))) => LinkIn::Frame(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(_))) => LinkIn::Unreadable("binary frames are not part of the worker protocol"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            close(&mut socket, WorkerCloseCode::MessageTooBig).await;
                        }
                        break;
                    }
                };
                if in_tx.send(event).await.is_err() {
                    break;
                }
            }
            out = out_rx.recv() => match out {
                Some(LinkOut::Frame(first)) => {
                    if write_burst(&mut socket, &mut out_rx, first).await.is_err() {
                        break;
                    }
                }
                Some(LinkOut::Close(code)) => {
                    close(&mut socket, code).await;
                    break;
                }
                None => break,
            },
        }
    }
    tracing::info!(client = %owner, %peer, "worker connection closed");
}

/// The first text frame, or `None` when the socket closed first.
async fn first_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Binary(_)) => return Some(String::new()),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(_)) => return None,
            Err(e) => {
                if is_too_big(e) {
                    close(socket, WorkerCloseCode::MessageTooBig).await;
                }
                return None;
            }
        }
    }
}

fn is_too_big(error: axum::Error) -> bool {
    matches!(
        error
            .into_inner()
            .downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

async fn close(socket: &mut WebSocket, code: WorkerCloseCode) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: code.code(),
            reason: code.reason().into(),
        })))
        .await;
}

/// Feeds what is queued (up to a burst), then flushes once.
async fn write_burst(
    socket: &mut WebSocket,
    queue: &mut mpsc::Receiver<LinkOut>,
    first: String,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first.into())).await?;
    for _ in 1..MAX_BURST {
        match queue.try_recv() {
            Ok(LinkOut::Frame(text)) => socket.feed(Message::Text(text.into())).await?,
            Ok(LinkOut::Close(code)) => {
                socket.flush().await?;
                close(socket, code).await;
                return Err(axum::Error::new(std::io::Error::other("closed")));
            }
            Err(_) => break,
        }
    }
    socket.flush().await
}
