//! The HTTP front door: one axum router on one listener.
//!
//! - `/v1/ws` ([`ws`], then [`connection`]): the WebSocket protocol.
//! - `/v1/tasks...` ([`rest`]): REST submit, snapshot, cancel, and SSE events.
//! - `/v1/tokens`, `/v1/admin/tasks` ([`rest`]): browser tokens, monitoring.
//! - `/files/{token}/{name}` ([`files`]): downloads, no key (the token is
//!   the capability).
//! - `/healthz`, `/readyz`, `/metrics`; `/` and the rest of `static/`.
//!
//! **Architecture Invariant:** handlers turn wire messages into scheduler
//! [`Command`](crate::scheduler::Command)s and scheduler output into wire
//! messages ([`encode`]); they hold no task state of their own.

mod connection;
pub mod encode;
mod files;
mod rest;
mod worker_rest;
mod worker_ws;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::Utf8Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::artifacts::Artifacts;
use crate::auth::{Authenticator, OriginPolicy, Principal};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::protocol::server::{Limits, ServerInfo, ServerMessage, TaskInfo, Welcome};
use crate::protocol::{ErrorCode, PROTOCOL_VERSION, WireError};
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub catalog: Arc<Catalog>,
    pub scheduler: Scheduler,
    pub artifacts: Artifacts,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    pub metrics: Metrics,
    pub links: encode::Links,
    /// The `welcome` message, encoded once.
    pub welcome: Utf8Bytes,
    /// Open WebSocket connections (for `max_connections`).
    pub connections: AtomicUsize,
    /// Cancelled when shutdown begins (`readyz` answers 503).
    pub draining: CancellationToken,
    /// Cancelled when every task has ended: connections flush and close.
    pub drained: CancellationToken,
    /// WebSocket and SSE connections, waited for at shutdown.
    pub streams: TaskTracker,
    /// Where `static/` is served from.
    pub static_dir: PathBuf,
    /// External workers: sessions' shared settings, the board, uploads.
    pub workers: crate::workers::Workers,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Takes a connection slot; `None` when `max_connections` are open.
    pub fn connection_slot(&self) -> Option<ConnectionSlot> {
        let max = self.config.limits.max_connections;
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| ConnectionSlot(self.clone()))
    }
}

/// A taken connection slot, given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot(AppState);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The `welcome` message for a catalogue and configuration.
pub fn welcome(catalog: &Catalog, config: &Config) -> Utf8Bytes {
    let limits = &config.limits;
    let message = ServerMessage::Welcome(Welcome {
        server: ServerInfo {
            name: "taskwire",
            version: env!("CARGO_PKG_VERSION"),
        },
        protocol: PROTOCOL_VERSION,
        tasks: catalog
            .iter()
            .map(|e| TaskInfo {
                name: &e.name,
                description: e.handler.description(),
                input_schema: &e.schema,
            })
            .collect(),
        limits: Limits {
            max_message_bytes: limits.max_message_bytes as u64,
            queue_capacity: limits.queue_capacity as u64,
            workers: limits.workers as u64,
            max_timeout_s: limits.max_timeout.as_secs(),
            file_ttl_s: config.files.file_ttl.as_secs(),
        },
    });
    Utf8Bytes::from(message.to_json())
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let static_files = tower_http::services::ServeDir::new(&state.static_dir)
        .append_index_html_on_directories(true)
        .html_as_default_extension(true);
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .merge(rest::routes(&state))
        .route("/v1/worker", get(worker_ws::upgrade))
        .merge(worker_rest::routes())
        .merge(files::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Public files: any page may load the client and the widget (the
        // WebSocket and REST still check `allowed_origins`).
        .fallback_service(
            tower::ServiceBuilder::new()
                .layer(tower_http::cors::CorsLayer::new().allow_origin(tower_http::cors::Any))
                .service(static_files),
        )
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    // The route template only: tokens and names never reach a log.
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("(static)", axum::extract::MatchedPath::as_str);
                    tracing::debug_span!("http", method = %request.method(), route)
                })
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                ),
        )
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if let Some(waiting) = worker_rest::not_ready(&state) {
        (StatusCode::SERVICE_UNAVAILABLE, waiting).into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .temp_bytes
        .set(i64::try_from(state.artifacts.used_bytes()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// A REST error response with the protocol's error body.
pub fn error_response(status: StatusCode, error: &WireError) -> Response {
    let body =
        serde_json::to_string(&crate::protocol::server::ErrorBody { error }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status of an error code on REST.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadMessage | ErrorCode::InvalidInput | ErrorCode::UnknownTask => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyFinished => StatusCode::CONFLICT,
        ErrorCode::QueueFull | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Timeout | ErrorCode::TaskError | ErrorCode::Internal => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The `Origin` header, if any, as text.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Whether a request's Origin (if it has one) is allowed.
pub fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    origin
        .to_str()
        .is_ok_and(|origin| state.origins.allows(origin, host))
}

/// The caller of a REST request, from `Authorization: Bearer ...`.
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished HTTP response, on the rejection path only"
)]
pub fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Principal, Response> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(secret) = secret else {
        state.metrics.rejected(ErrorCode::Unauthorized);
        return Err(error_response(
            StatusCode::UNAUTHORIZED,
            &WireError::new(
                ErrorCode::Unauthorized,
                "missing Authorization: Bearer <api key>",
            ),
        ));
    };
    match state.auth.authenticate(secret, origin(headers)) {
        Some(principal) => Ok(principal),
        None if state.auth.is_worker_key(secret) => {
            state.metrics.rejected(ErrorCode::Unauthorized);
            Err(error_response(
                StatusCode::FORBIDDEN,
                &WireError::new(
                    ErrorCode::Unauthorized,
                    "a worker key may only serve tasks (GET /v1/worker)",
                ),
            ))
        }
        None => {
            state.metrics.rejected(ErrorCode::Unauthorized);
            tracing::info!(client = "unknown", "authentication failed");
            Err(error_response(
                StatusCode::UNAUTHORIZED,
                &WireError::new(ErrorCode::Unauthorized, "unknown or expired key"),
            ))
        }
    }
}

/// Longest `idempotency_key` / `concurrency_key`, in bytes.
pub const MAX_OPTION_KEY_BYTES: usize = 256;

/// Turns a wire `submit` into a task the scheduler can queue, checking
/// everything that can be checked before queueing.
pub fn prepare(
    state: &AppState,
    principal: &Principal,
    submit: &crate::protocol::client::Submit<'_>,
) -> Result<crate::task::TaskSpec, WireError> {
    use crate::protocol::client::{Delivery as WireDelivery, Priority as WirePriority};
    use crate::task::{Delivery, Priority, TaskOptions, TaskSpec};

    let Some(entry) = state.catalog.get(&submit.task) else {
        let shown: String = submit.task.chars().take(64).collect();
        return Err(WireError::new(
            ErrorCode::UnknownTask,
            format!("no task named {shown:?}"),
        ));
    };
    if !principal.may_run(&entry.name) {
        return Err(WireError::new(
            ErrorCode::Unauthorized,
            format!("this token may not run {:?}", &*entry.name),
        ));
    }
    let options = &submit.options;
    let max = state.config.limits.max_timeout;
    let timeout = match options.timeout_s {
        None => max,
        Some(t) if t.is_finite() && t > 0.0 => {
            std::time::Duration::try_from_secs_f64(t).map_or(max, |d| d.min(max))
        }
        Some(_) => {
            return Err(WireError::new(
                ErrorCode::BadMessage,
                "options.timeout_s must be a positive number",
            ));
        }
    };
    for (field, value) in [
        ("idempotency_key", &options.idempotency_key),
        ("concurrency_key", &options.concurrency_key),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > MAX_OPTION_KEY_BYTES)
        {
            return Err(WireError::new(
                ErrorCode::BadMessage,
                format!("options.{field} must be 1 to {MAX_OPTION_KEY_BYTES} bytes"),
            ));
        }
    }
    entry.handler.validate(submit.input).map_err(|invalid| {
        WireError::new(ErrorCode::InvalidInput, format!("invalid input: {invalid}"))
            .with_details(invalid.details())
    })?;
    Ok(TaskSpec {
        name: std::sync::Arc::clone(&entry.name),
        input: submit.input.to_owned(),
        options: TaskOptions {
            timeout,
            priority: match options.priority {
                Some(WirePriority::High) => Priority::High,
                Some(WirePriority::Low) => Priority::Low,
                Some(WirePriority::Normal) | None => Priority::Normal,
            },
            idempotency_key: options.idempotency_key.clone(),
            concurrency_key: options.concurrency_key.clone(),
            delivery: match options.delivery {
                Some(WireDelivery::Stream) => Delivery::Stream,
                Some(WireDelivery::Link) | None => Delivery::Link,
            },
            cancel_on_disconnect: options.cancel_on_disconnect.unwrap_or(false),
        },
    })
}
