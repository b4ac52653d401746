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
use axum::routing::{any, delete, get, post};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::caller::{Admin, Caller, TaskPath};
use super::{ApiError, AppState, ConnectionSlot, encode, submit_request};
use crate::protocol::client::decode_submit;
use crate::protocol::server::{Cancelled as CancelledBody, Minted, Submitted as SubmittedBody};
use crate::scheduler::{Mailbox, Outbound};
use crate::task::{EventRecord, TaskId};

/// The SSE resume header.
const LAST_EVENT_ID: header::HeaderName = header::HeaderName::from_static("last-event-id");
/// Largest `POST /v1/tokens` or answer body.
const SMALL_BODY: usize = 64 * 1024;

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
    let body_timeout =
        tower_http::timeout::RequestBodyTimeoutLayer::new(state.config.limits.body_timeout);
    Router::new()
        .route(
            "/v1/tasks",
            post(submit).layer(DefaultBodyLimit::max(state.config.limits.max_message_bytes)),
        )
        .route("/v1/tasks/{task_id}", get(snapshot).delete(cancel))
        .route("/v1/tasks/{task_id}/events", get(events))
        .route(
            "/v1/tasks/{task_id}/questions/{question_id}/answer",
            post(answer).layer(DefaultBodyLimit::max(SMALL_BODY)),
        )
        .route(
            "/v1/tokens",
            post(mint).layer(DefaultBodyLimit::max(SMALL_BODY)),
        )
        .route("/v1/tokens/{token}", delete(revoke))
        .route("/v1/admin/tasks", get(admin_tasks))
        .route("/v1/admin/workers", get(admin_workers))
        .route("/v1/admin/nodes", get(admin_nodes))
        .route(
            "/v1/{*rest}",
            any(|| async { ApiError::NoSuchThing("no such route") }),
        )
        .layer(body_timeout)
        .layer(cors)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The body, or the error that reading it earned (`413`, `408`, `400`).
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    match body {
        Ok(body) => {
            state.metrics.bytes_received.inc_by(body.len() as u64);
            Ok(body)
        }
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::BodyTooLarge {
                max: state.config.limits.max_message_bytes,
            })
        }
        Err(rejection) if body_timed_out(&rejection) => {
            Err(ApiError::BodyTimeout(state.config.limits.body_timeout))
        }
        Err(rejection) => Err(ApiError::BadMessage(format!(
            "cannot read the body: {rejection}"
        ))),
    }
}

fn body_timed_out(rejection: &BytesRejection) -> bool {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = Some(rejection);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = error.source();
    }
    false
}

async fn submit(
    State(state): State<AppState>,
    Caller(principal): Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(&state, raw)?;
    let text = std::str::from_utf8(&raw)
        .map_err(|_| ApiError::BadMessage("the body is not UTF-8".to_owned()))?;
    let (_, submit) = decode_submit(text).map_err(|e| ApiError::BadMessage(e.message))?;
    let request = submit_request(&submit);
    drop(raw);
    let spec = state.admission.admit(&principal, request).await?;
    let submitted = state.scheduler.submit(spec).await?;
    let id = submitted.task_id.hex();
    let base = state.links.public_url.as_deref().unwrap_or("");
    let body = SubmittedBody {
        task_id: id.as_str(),
        status_url: format!("{base}/v1/tasks/{}", id.as_str()),
        events_url: format!("{base}/v1/tasks/{}/events", id.as_str()),
        position: submitted.position,
        duplicate: submitted.duplicate,
    };
    Ok(json(StatusCode::ACCEPTED, to_json(&body)))
}

async fn snapshot(
    State(state): State<AppState>,
    Caller(principal): Caller,
    TaskPath(task_id): TaskPath,
) -> Result<Response, ApiError> {
    let view = state
        .scheduler
        .snapshot(task_id, principal)
        .await
        .ok_or(ApiError::NotFound)?;
    Ok(json(StatusCode::OK, encode::snapshot(&view, &state.links)))
}

async fn cancel(
    State(state): State<AppState>,
    Caller(principal): Caller,
    TaskPath(task_id): TaskPath,
) -> Result<Response, ApiError> {
    state.scheduler.cancel(task_id, principal).await?;
    let id = task_id.hex();
    let body = CancelledBody {
        task_id: id.as_str(),
        state: "cancelled",
    };
    Ok(json(StatusCode::OK, to_json(&body)))
}

#[derive(Deserialize)]
struct AnswerBody {
    value: serde_json::Value,
}

async fn answer(
    State(state): State<AppState>,
    Caller(principal): Caller,
    TaskPath(task_id): TaskPath,
    Path((_, question_id)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(&state, raw)?;
    let request: AnswerBody = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::BadMessage(format!("bad answer: {e}")))?;
    let value = request.value.clone();
    state
        .scheduler
        .answer(task_id, principal, question_id.clone(), request.value)
        .await?;
    let id = task_id.hex();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"task_id": id.as_str(), "question_id": question_id,
            "outcome": "answered", "value": value})
        .to_string(),
    ))
}

/// SSE: held events after `Last-Event-ID`, then live ones; the stream ends
/// after the terminal event. It holds a connection slot while open.
async fn events(
    State(state): State<AppState>,
    Caller(principal): Caller,
    TaskPath(task_id): TaskPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::ShuttingDown);
    }
    let after_seq = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let view = state
        .scheduler
        .snapshot(task_id, principal.clone())
        .await
        .ok_or(ApiError::NotFound)?;
    let slot = state.connection_slot().ok_or_else(|| {
        ApiError::RateLimited(format!(
            "too many open connections (max_connections = {})",
            state.config.limits.max_connections
        ))
    })?;
    let (mailbox, inbox, overflow) = Mailbox::new(state.config.limits.send_queue);
    let mailbox_id = mailbox.id();
    let finished = view.state.is_terminal() && view.last_seq <= after_seq;
    if !finished {
        state
            .scheduler
            .subscribe(task_id, principal, after_seq, mailbox, None)
            .await;
    }
    let stream = SseStream {
        state: state.clone(),
        task_id,
        mailbox: mailbox_id,
        inbox,
        overflow,
        drained: state.drained.clone(),
        pending: VecDeque::new(),
        done: finished,
        gauge: state.metrics.connections("sse"),
        _slot: slot,
    };
    stream.gauge.inc();
    Ok(Sse::new(stream.into_stream())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct SseStream {
    state: AppState,
    task_id: TaskId,
    mailbox: crate::scheduler::MailboxId,
    inbox: mpsc::Receiver<Outbound>,
    overflow: CancellationToken,
    drained: CancellationToken,
    pending: VecDeque<Event>,
    done: bool,
    gauge: prometheus_client::metrics::gauge::Gauge,
    _slot: ConnectionSlot,
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.gauge.dec();
        // A dropped stream stops following its task at once (a client that
        // comes and goes leaves nothing behind).
        if !self.done {
            self.state
                .scheduler
                .unsubscribe_now(self.task_id, self.mailbox);
        }
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
                    // The task was forgotten between the snapshot and the
                    // subscription: nothing more will come.
                    Outbound::Error { .. } | Outbound::Rejected { .. } => s.done = true,
                    // Never sent to an SSE stream's mailbox.
                    Outbound::Unsubscribed { .. }
                    | Outbound::Watching(_)
                    | Outbound::TaskUpdate(_)
                    | Outbound::WorkerUpdate(_)
                    | Outbound::Stats(_) => {}
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
    scope: Option<String>,
}

async fn mint(
    State(state): State<AppState>,
    Caller(principal): Caller,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(&state, raw)?;
    let request: MintRequest = if raw.iter().all(u8::is_ascii_whitespace) {
        MintRequest {
            ttl_s: None,
            tasks: None,
            origin: None,
            scope: None,
        }
    } else {
        serde_json::from_slice(&raw)
            .map_err(|e| ApiError::BadMessage(format!("bad token request: {e}")))?
    };
    if let Some(tasks) = &request.tasks
        && let Some(unknown) = tasks.iter().find(|t| state.directory.get(t).is_none())
    {
        let shown: String = unknown.chars().take(64).collect();
        return Err(crate::admission::AdmissionError::UnknownTask(shown).into());
    }
    let origin = match request
        .origin
        .as_deref()
        .map(crate::config::normalize_origin)
    {
        None => None,
        Some(Ok(origin)) => Some(origin),
        Some(Err(why)) => return Err(ApiError::BadMessage(format!("origin: {why}"))),
    };
    if request.ttl_s == Some(0) {
        return Err(ApiError::BadMessage("ttl_s must be at least 1".to_owned()));
    }
    let scope = match request.scope.as_deref() {
        None | Some("own") => crate::auth::TokenScope::Own,
        Some("key") => crate::auth::TokenScope::Key,
        Some(_) => {
            return Err(ApiError::BadMessage(
                "scope must be \"own\" or \"key\"".to_owned(),
            ));
        }
    };
    let ttl = request.ttl_s.map(Duration::from_secs);
    match state
        .auth
        .tokens
        .mint(&principal, ttl, request.tasks, origin, scope)
    {
        Ok((token, expires)) => {
            // Cluster mode: the token works on every node once this answers.
            if let Some(cluster) = &state.cluster {
                let shared = state.auth.tokens.shared(&token);
                let key = crate::auth::token_key(&token);
                let outcome = match &shared {
                    Some(grant) => cluster.share_token(&key, grant).await,
                    None => Err("the token expired at once".to_owned()),
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e, "a browser token could not be shared with the cluster");
                    state.auth.tokens.revoke(&principal.client, &token);
                    return Err(ApiError::Refused(crate::scheduler::Refusal::Unavailable {
                        retry_after: Duration::from_millis(500),
                    }));
                }
            }
            let expires_at = encode::rfc3339(expires);
            let body = Minted {
                token: &token,
                expires_at: &expires_at,
            };
            Ok(json(StatusCode::CREATED, to_json(&body)))
        }
        Err(crate::auth::MintError::NotAKey) => {
            Err(ApiError::Unauthorized("browser tokens cannot mint tokens"))
        }
        Err(crate::auth::MintError::TooMany) => {
            Err(ApiError::RateLimited("too many live tokens".to_owned()))
        }
        Err(e @ crate::auth::MintError::TooManyTasks { .. }) => {
            Err(ApiError::BadMessage(e.to_string()))
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

async fn revoke(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if principal.via_token() {
        return Err(ApiError::NoSuchThing("no such token"));
    }
    super::caller::learn_token(&state, &token).await;
    if !state.auth.tokens.revoke(&principal.client, &token) {
        return Err(ApiError::NoSuchThing("no such token"));
    }
    if let Some(cluster) = &state.cluster {
        cluster.unshare_token(&crate::auth::token_key(&token)).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_tasks(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let (tasks, stats) = state
        .scheduler
        .admin_list()
        .await
        .ok_or(ApiError::ShuttingDown)?;
    Ok(json(StatusCode::OK, encode::admin_list(&tasks, &stats)))
}

async fn admin_nodes(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let nodes = state
        .scheduler
        .admin_nodes()
        .await
        .ok_or(ApiError::ShuttingDown)?;
    Ok(json(StatusCode::OK, encode::admin_nodes(&nodes)))
}

async fn admin_workers(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let workers = state
        .scheduler
        .admin_workers()
        .await
        .ok_or(ApiError::ShuttingDown)?;
    Ok(json(
        StatusCode::OK,
        super::worker_rest::admin_workers_json(&state, &workers),
    ))
}
