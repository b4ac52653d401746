//! REST: submit, snapshot, cancel, SSE events; browser tokens; the admin
//! task list. Same rules as the WebSocket: Bearer auth, one key sees only
//! its own tasks (others get `404`), errors carry the protocol's error body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AppState, bearer, encode, error_response, origin_allowed, prepare, status_of};
use crate::auth::Principal;
use crate::protocol::client::decode_submit;
use crate::protocol::server::Submitted as SubmittedBody;
use crate::protocol::{ErrorCode, WireError};
use crate::scheduler::{Command, Mailbox, Outbound, Reply, Submitted, TaskView};
use crate::task::{EventRecord, TaskId};

/// The SSE resume header.
const LAST_EVENT_ID: header::HeaderName = header::HeaderName::from_static("last-event-id");

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(
            state
                .config
                .security
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, LAST_EVENT_ID])
        .max_age(Duration::from_secs(600));
    Router::new()
        .route(
            "/v1/tasks",
            post(submit).layer(DefaultBodyLimit::max(state.config.limits.max_message_bytes)),
        )
        .route("/v1/tasks/{task_id}", get(snapshot).delete(cancel))
        .route("/v1/tasks/{task_id}/events", get(events))
        .route("/v1/tokens", post(mint))
        .route("/v1/tokens/{token}", delete(revoke))
        .route("/v1/admin/tasks", get(admin_tasks))
        .layer(cors)
}

fn fail(state: &AppState, error: &WireError) -> Response {
    state.metrics.rejected(error.code);
    rejection(error)
}

/// An error response, with `Retry-After` when the error says when.
fn rejection(error: &WireError) -> Response {
    let mut response = error_response(status_of(error.code), error);
    if let Some(ms) = error.retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn shutting_down(state: &AppState) -> Response {
    fail(
        state,
        &WireError::new(ErrorCode::ShuttingDown, "the server is shutting down"),
    )
}

/// Auth and Origin checks shared by every REST route.
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response, on the rejection path only"
)]
fn caller(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    if !origin_allowed(state, headers) {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            &WireError::new(ErrorCode::Unauthorized, "origin not allowed"),
        ));
    }
    bearer(state, headers)
}

/// [`caller`] plus the task id of the path (`404` when it is not one).
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response, on the rejection path only"
)]
fn task_caller(
    state: &AppState,
    headers: &HeaderMap,
    task_id: &str,
) -> Result<(Principal, TaskId), Response> {
    let principal = caller(state, headers)?;
    let task_id = task_id.parse::<TaskId>().map_err(|_| not_found(state))?;
    Ok((principal, task_id))
}

fn not_found(state: &AppState) -> Response {
    fail(state, &WireError::new(ErrorCode::NotFound, "no such task"))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = match caller(&state, &headers) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            return error_response(
                status,
                &WireError::new(
                    ErrorCode::BadMessage,
                    format!("cannot read the body: {rejection}"),
                ),
            );
        }
    };
    state.metrics.bytes_received.inc_by(body.len() as u64);
    let Ok(text) = std::str::from_utf8(&body) else {
        return fail(
            &state,
            &WireError::new(ErrorCode::BadMessage, "the body is not UTF-8"),
        );
    };
    let (_, submit) = match decode_submit(text) {
        Ok(decoded) => decoded,
        Err(e) => return fail(&state, &WireError::new(ErrorCode::BadMessage, e.message)),
    };
    let spec = match prepare(&state, &principal, &submit) {
        Ok(spec) => spec,
        Err(error) => return fail(&state, &error),
    };
    let (tx, rx) = oneshot::channel();
    let command = Command::Submit {
        spec,
        owner: principal.client.clone(),
        reply: Reply::Rest(tx),
    };
    if !state.scheduler.send(command).await {
        return shutting_down(&state);
    }
    match rx.await {
        Ok(Ok(Submitted {
            task_id,
            position,
            duplicate,
        })) => {
            let id = task_id.hex();
            let base = state.links.public_url.as_deref().unwrap_or("");
            let body = SubmittedBody {
                task_id: id.as_str(),
                status_url: format!("{base}/v1/tasks/{}", id.as_str()),
                events_url: format!("{base}/v1/tasks/{}/events", id.as_str()),
                position,
                duplicate,
            };
            json(
                StatusCode::ACCEPTED,
                serde_json::to_string(&body).unwrap_or_default(),
            )
        }
        // Rejections were counted by the scheduler.
        Ok(Err(error)) => rejection(&error),
        Err(_) => shutting_down(&state),
    }
}

async fn view(state: &AppState, principal: Principal, task_id: TaskId) -> Option<TaskView> {
    let (tx, rx) = oneshot::channel();
    let command = Command::Snapshot {
        task_id,
        principal,
        reply: tx,
    };
    if !state.scheduler.send(command).await {
        return None;
    }
    rx.await.ok().flatten()
}

async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Response {
    let (principal, task_id) = match task_caller(&state, &headers, &task_id) {
        Ok(found) => found,
        Err(response) => return response,
    };
    match view(&state, principal, task_id).await {
        Some(view) => json(StatusCode::OK, encode::snapshot(&view, &state.links)),
        None => not_found(&state),
    }
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Response {
    let (principal, task_id) = match task_caller(&state, &headers, &task_id) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (tx, rx) = oneshot::channel();
    let command = Command::Cancel {
        task_id,
        principal,
        reply: Reply::Rest(tx),
    };
    if !state.scheduler.send(command).await {
        return shutting_down(&state);
    }
    match rx.await {
        Ok(Ok(())) => {
            let id = task_id.hex();
            json(
                StatusCode::OK,
                serde_json::json!({"task_id": id.as_str(), "state": "cancelled"}).to_string(),
            )
        }
        Ok(Err(error)) => rejection(&error),
        Err(_) => shutting_down(&state),
    }
}

/// SSE: held events after `Last-Event-ID`, then live
/// ones; the stream ends after the terminal event.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Response {
    let (principal, task_id) = match task_caller(&state, &headers, &task_id) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let after_seq = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let Some(view) = view(&state, principal.clone(), task_id).await else {
        return not_found(&state);
    };
    let (mailbox, inbox, overflow) = Mailbox::new(state.config.limits.send_queue);
    let finished = view.state.is_terminal() && view.last_seq <= after_seq;
    if !finished {
        let command = Command::Subscribe {
            task_id,
            principal,
            after_seq,
            mailbox,
            reference: None,
        };
        state.scheduler.send(command).await;
    }
    let stream = SseStream {
        state: state.clone(),
        inbox,
        overflow,
        drained: state.drained.clone(),
        pending: VecDeque::new(),
        done: finished,
        gauge: state.metrics.connections("sse"),
    };
    stream.gauge.inc();
    Sse::new(stream.into_stream())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct SseStream {
    state: AppState,
    inbox: mpsc::Receiver<Outbound>,
    overflow: CancellationToken,
    drained: CancellationToken,
    pending: VecDeque<Event>,
    done: bool,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl SseStream {
    fn push(&mut self, record: &EventRecord) {
        let data = encode::shared_event(record, &self.state.links);
        let text = String::from_utf8_lossy(&data);
        self.pending.push_back(
            Event::default()
                .event(record.event.kind())
                .id(record.seq.to_string())
                .data(text),
        );
        if record.event.is_terminal() {
            self.done = true;
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    return Some((Ok(event), s));
                }
                if s.done {
                    return None;
                }
                let message = tokio::select! {
                    message = s.inbox.recv() => message,
                    () = s.overflow.cancelled() => None,
                    () = s.drained.cancelled() => s.inbox.try_recv().ok(),
                };
                match message? {
                    Outbound::Event { record, .. } => s.push(&record),
                    Outbound::Replay(records) => {
                        for record in records {
                            s.push(&record);
                        }
                    }
                    _ => {}
                }
            }
        })
    }
}

#[derive(Deserialize)]
struct MintRequest {
    ttl_s: Option<u64>,
    tasks: Option<Vec<String>>,
    origin: Option<String>,
}

async fn mint(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let principal = match caller(&state, &headers) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let request: MintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest {
            ttl_s: None,
            tasks: None,
            origin: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return fail(
                    &state,
                    &WireError::new(ErrorCode::BadMessage, format!("bad token request: {e}")),
                );
            }
        }
    };
    if let Some(tasks) = &request.tasks
        && let Some(unknown) = tasks.iter().find(|t| state.catalog.get(t).is_none())
    {
        let shown: String = unknown.chars().take(64).collect();
        return fail(
            &state,
            &WireError::new(ErrorCode::UnknownTask, format!("no task named {shown:?}")),
        );
    }
    let origin = match request
        .origin
        .as_deref()
        .map(crate::config::normalize_origin)
    {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(why)) => {
            return fail(
                &state,
                &WireError::new(ErrorCode::BadMessage, format!("origin: {why}")),
            );
        }
    };
    if request.ttl_s == Some(0) {
        return fail(
            &state,
            &WireError::new(ErrorCode::BadMessage, "ttl_s must be at least 1"),
        );
    }
    let ttl = request.ttl_s.map(Duration::from_secs);
    match state
        .auth
        .tokens
        .mint(&principal, ttl, request.tasks, origin)
    {
        Ok((token, expires)) => json(
            StatusCode::CREATED,
            serde_json::json!({"token": token, "expires_at": encode::rfc3339(expires)}).to_string(),
        ),
        Err(crate::auth::MintError::NotAKey) => fail(
            &state,
            &WireError::new(ErrorCode::Unauthorized, "browser tokens cannot mint tokens"),
        ),
        Err(crate::auth::MintError::TooMany) => fail(
            &state,
            &WireError::new(ErrorCode::RateLimited, "too many live tokens"),
        ),
        Err(e) => fail(&state, &WireError::new(ErrorCode::Internal, e.to_string())),
    }
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let principal = match caller(&state, &headers) {
        Ok(p) => p,
        Err(response) => return response,
    };
    if principal.via_token || !state.auth.tokens.revoke(&principal.client, &token) {
        return fail(
            &state,
            &WireError::new(ErrorCode::NotFound, "no such token"),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_tasks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let principal = match caller(&state, &headers) {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !principal.admin {
        state.metrics.rejected(ErrorCode::Unauthorized);
        return error_response(
            StatusCode::FORBIDDEN,
            &WireError::new(ErrorCode::Unauthorized, "needs an admin key"),
        );
    }
    let (tx, rx) = oneshot::channel();
    if !state.scheduler.send(Command::AdminList { reply: tx }).await {
        return shutting_down(&state);
    }
    match rx.await {
        Ok((tasks, stats)) => json(StatusCode::OK, encode::admin_list(&tasks, &stats)),
        Err(_) => shutting_down(&state),
    }
}
