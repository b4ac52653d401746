//! `GET /v1/worker`: the remote worker transport (`docs/protocol.md`
//! Part II). Checks before the upgrade — no `Origin` (no browser is a
//! worker), a worker key as Bearer, the `taskwire.worker.v1` subprotocol,
//! the connection limit, not draining — then one task per socket drives
//! the worker's session ([`crate::workers::driver::Driver`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use tokio::time::Instant;

use super::{AppState, error_response};
use crate::auth::WorkerAuthError;
use crate::exec::ExecutorKind;
use crate::protocol::worker::{WORKER_SUBPROTOCOL, WorkerCloseCode};
use crate::protocol::{ErrorCode, WireError};
use crate::workers::board::WorkerView;
use crate::workers::driver::{Driver, Files};
use crate::workers::session::{Phase, Session};

/// WebSocket read buffer: small, so an idle worker costs little.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 64 * 1024;

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
    let Some(secret) = super::worker_rest::bearer_secret(&headers) else {
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
    let workers = &state.workers;
    let entry = workers.board().join(
        WorkerView {
            id: None,
            name: Arc::clone(&owner),
            group: Some(Arc::clone(&owner)),
            kind: "remote",
            pid: None,
            peer: Some(peer.clone()),
            tasks: Vec::new(),
            slots: 0,
            running: Vec::new(),
            state: "starting",
            connected_at: std::time::SystemTime::now(),
            last_heartbeat_at: None,
            done: 0,
            failed: 0,
            restarts: None,
        },
        Arc::clone(&owner),
    );
    let session = Session::new(
        workers.settings(None),
        ExecutorKind::Remote { peer: peer.clone() },
        None,
        Instant::now(),
    )
    .with_name_prefix(&owner);
    let base = state.config.files.public_url.as_deref().unwrap_or("");
    let mut driver = Driver::new(
        session,
        workers.scheduler().clone(),
        workers.artifacts().clone(),
        Files::Uploads {
            uploads: workers.uploads().clone(),
            base_url: format!("{base}/v1/worker/uploads"),
            owner: Arc::clone(&owner),
        },
        workers.max_file_bytes(),
        entry,
    );
    tracing::info!(client = %owner, %peer, "worker connected");
    let mut open = true;
    loop {
        let outgoing = driver.take_outgoing();
        if open && !outgoing.is_empty() && send_all(&mut socket, outgoing).await.is_err() {
            open = false;
            driver.closed(None).await;
            continue;
        }
        if let Some((code, _)) = driver.end().cloned() {
            if open {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: code.code(),
                        reason: code.reason().into(),
                    })))
                    .await;
            }
            break;
        }
        if !open && matches!(driver.session.phase(), Phase::Closed) {
            break;
        }
        let deadline = driver.session.next_deadline();
        tokio::select! {
            message = socket.recv(), if open => match message {
                Some(Ok(Message::Text(text))) => driver.frame(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => driver.unreadable("binary frames are not part of the worker protocol").await,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    open = false;
                    driver.closed(None).await;
                }
                Some(Err(e)) => {
                    let too_big = matches!(
                        e.into_inner().downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
                        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                    );
                    if too_big {
                        let close = WorkerCloseCode::MessageTooBig;
                        let _ = socket
                            .send(Message::Close(Some(CloseFrame { code: close.code(), reason: close.reason().into() })))
                            .await;
                    }
                    open = false;
                    driver.closed(None).await;
                }
            },
            order = driver.next_order() => match order {
                Some(order) => driver.order(order).await,
                None => driver.orders_closed().await,
            },
            () = sleep_until(deadline) => driver.tick().await,
            () = state.drained.cancelled() => driver.shutdown().await,
        }
    }
    tracing::info!(client = %owner, %peer, "worker disconnected");
}

async fn send_all(socket: &mut WebSocket, frames: Vec<String>) -> Result<(), axum::Error> {
    for frame in frames {
        socket.feed(Message::Text(frame.into())).await?;
    }
    socket.flush().await
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
