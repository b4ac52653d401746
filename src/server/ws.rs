//! `GET /v1/ws`: checks before the upgrade, then hands the socket to
//! [`super::connection`].

use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, caller, connection, origin};
use crate::protocol::{CloseCode, SUBPROTOCOL};

/// WebSocket read buffer: small, so an idle connection costs little.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before tungstenite writes to the socket.
const WRITE_BUFFER: usize = 64 * 1024;

pub(super) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.draining.is_cancelled() {
        return ApiError::ShuttingDown.into_response();
    }
    if !super::origin_allowed(&state, &headers) {
        tracing::info!("websocket refused: origin not allowed");
        return ApiError::Forbidden("origin not allowed").into_response();
    }
    // Header auth: a wrong key is refused before the upgrade.
    let principal = if headers.contains_key(header::AUTHORIZATION) {
        match caller::authenticate_shared(&state, &headers).await {
            Ok(principal) => Some(principal),
            Err(error) => return error.into_response(),
        }
    } else {
        None
    };
    let origin = origin(&headers).map(str::to_owned);
    let offered = upgrade.requested_protocols().any(|p| {
        p.to_str()
            .is_ok_and(|p| p.split(',').any(|p| p.trim() == SUBPROTOCOL))
    });
    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * state.config.limits.max_message_bytes)
        .max_message_size(state.config.limits.max_message_bytes)
        .max_frame_size(state.config.limits.max_message_bytes);
    if offered {
        upgrade.set_selected_protocol(HeaderValue::from_static(SUBPROTOCOL));
    }
    let slot = state.connection_slot();
    upgrade
        .on_upgrade(move |mut socket| async move {
            let Some(slot) = slot else {
                // Over max_connections: a close frame says why.
                let close = CloseCode::TooManyConnections;
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: close.code(),
                        reason: close.reason().into(),
                    })))
                    .await;
                return;
            };
            let tracker = state.streams.clone();
            tracker
                .track_future(connection::run(socket, state, principal, origin, slot))
                .await;
        })
        .into_response()
}
