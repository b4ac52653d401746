//! The HTTP front door: one axum router on one listener.
//!
//! - [`listener`]: the accept loop, under the connection-level bounds
//!   (header-read and idle timeouts, open connections in total and per peer).
//! - `/v1/ws` ([`ws`], then [`connection`]): the WebSocket protocol.
//! - `/v1/tasks...` ([`rest`]): REST submit, snapshot, cancel, and SSE events.
//! - `/v1/tokens`, `/v1/admin/tasks` ([`rest`]): browser tokens, monitoring.
//! - `/v1/uploads...`, `/v1/inputs/{token}` ([`uploads`]): file inputs.
//! - `/files/{token}/{name}` ([`files`]): downloads, no key (the token is
//!   the capability).
//! - `/healthz`, `/readyz`, `/metrics`; `/` and the rest of `static/`.
//!
//! **Architecture Invariant:** handlers turn wire messages into scheduler
//! [`Command`](crate::scheduler::Command)s and scheduler output into wire
//! messages ([`encode`]); they hold no task state of their own.

mod caller;
mod connection;
pub(crate) mod encode;
pub(crate) mod error;
mod files;
pub(crate) mod listener;
mod rest;
mod schedules;
mod uploads;
mod worker_rest;
mod worker_ws;
mod ws;
mod ws_uploads;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::Utf8Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use self::error::ApiError;
use crate::admission::Admission;
use crate::artifacts::Artifacts;
use crate::auth::{Authenticator, OriginPolicy};
use crate::config::Config;
use crate::directory::{Directory, Offered, Source};
use crate::protocol::PROTOCOL_VERSION;
use crate::protocol::server::{Limits, ServerInfo, ServerMessage, TaskInfo, Welcome};
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub config: Config,
    pub admission: Admission,
    pub directory: Arc<Directory>,
    pub scheduler: Scheduler,
    pub schedules: crate::schedules::Schedules,
    pub artifacts: Artifacts,
    /// Uploads, URL inputs, input links for workers.
    pub inputs: crate::inputs::Inputs,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    pub metrics: Metrics,
    pub links: encode::Links,
    /// The `welcome` message, encoded once per directory version.
    pub welcome: Mutex<(u64, Utf8Bytes)>,
    /// Open WebSocket connections and SSE streams (for `max_connections`).
    pub connections: AtomicUsize,
    /// Cancelled when shutdown begins (`readyz` answers 503).
    pub draining: CancellationToken,
    /// Cancelled when every task has ended: connections flush and close.
    pub drained: CancellationToken,
    /// WebSocket and SSE connections, waited for at shutdown.
    pub streams: TaskTracker,
    /// Where `static/` is served from.
    pub static_dir: PathBuf,
    /// Cluster mode: this node's link to NATS.
    pub cluster: Option<crate::cluster::Cluster>,
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
    pub(crate) fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    /// Takes a connection slot; `None` when `max_connections` are open.
    pub(crate) fn connection_slot(&self) -> Option<ConnectionSlot> {
        let max = self.config.limits.max_connections;
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| ConnectionSlot(self.clone()))
    }

    /// The `welcome` message for what is offered now.
    pub(crate) fn welcome(&self) -> Utf8Bytes {
        let offered = self.directory.snapshot();
        let mut cached = self.welcome.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.0 != offered.version {
            *cached = (offered.version, welcome(&offered, &self.config));
        }
        cached.1.clone()
    }
}

/// A taken connection slot, given back on drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(AppState);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The `welcome` message for what is offered and the configuration.
pub(crate) fn welcome(offered: &Offered, config: &Config) -> Utf8Bytes {
    let limits = &config.limits;
    let message = ServerMessage::Welcome(Welcome {
        server: ServerInfo {
            name: "taskwire",
            version: env!("CARGO_PKG_VERSION"),
        },
        protocol: PROTOCOL_VERSION,
        tasks: offered
            .tasks
            .values()
            .map(|offer| TaskInfo {
                name: &offer.name,
                description: &offer.description,
                input_schema: &offer.input_schema,
                served_by: if offer.source == Source::Builtin {
                    "builtin"
                } else {
                    "workers"
                },
                workers: (offer.source != Source::Builtin)
                    .then_some((offer.workers + offer.remote_workers) as u64),
            })
            .collect(),
        limits: Limits {
            max_message_bytes: limits.max_message_bytes as u64,
            queue_capacity: limits.queue_capacity as u64,
            workers: limits.workers as u64,
            max_timeout_s: limits.max_timeout.as_secs(),
            file_ttl_s: config.files.file_ttl.as_secs(),
            max_upload_bytes: config.inputs.max_upload_bytes,
        },
    });
    Utf8Bytes::from(message.to_json())
}

/// The whole router.
pub(crate) fn router(state: AppState) -> Router {
    let static_files = tower_http::services::ServeDir::new(&state.static_dir)
        .append_index_html_on_directories(true)
        .html_as_default_extension(true);
    Router::new()
        .route("/v1/ws", get(ws::upgrade))
        .merge(rest::routes(&state))
        .merge(uploads::routes(&state))
        .merge(schedules::routes())
        .route("/v1/worker", get(worker_ws::upgrade))
        .merge(worker_rest::routes())
        .merge(files::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Public files: any page may load the client and the widget (the
        // WebSocket and REST still check `allowed_origins`).
        .fallback_service(
            tower::ServiceBuilder::new()
                .layer(tower_http::cors::CorsLayer::new().allow_origin(tower_http::cors::Any))
                .service(static_files),
        )
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_errors,
        ))
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

/// Counts every error answer by its code, once, whatever route made it.
async fn count_errors(State(state): State<AppState>, response: Response) -> Response {
    if let Some(error::AnsweredCode(code)) = response.extensions().get() {
        state.metrics.rejected(*code);
    }
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if let Some(why) = state.cluster.as_ref().and_then(|c| c.unready()) {
        (StatusCode::SERVICE_UNAVAILABLE, format!("unready: {why}")).into_response()
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

/// The `Origin` header, if any, as text.
pub(crate) fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Whether a request's Origin (if it has one) is allowed.
pub(crate) fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    origin
        .to_str()
        .is_ok_and(|origin| state.origins.allows(origin))
}

/// A wire `submit` as admission's request (the input is copied once, here).
pub(crate) fn submit_request(
    submit: &crate::protocol::client::Submit<'_>,
) -> crate::admission::SubmitRequest {
    use crate::protocol::client::{Delivery as WireDelivery, Priority as WirePriority};
    use crate::task::{Delivery, Priority};
    let options = &submit.options;
    crate::admission::SubmitRequest {
        task: submit.task.clone(),
        input: submit.input.to_owned(),
        options: crate::admission::RequestedOptions {
            timeout_s: options.timeout_s,
            priority: options.priority.map(|p| match p {
                WirePriority::High => Priority::High,
                WirePriority::Normal => Priority::Normal,
                WirePriority::Low => Priority::Low,
            }),
            idempotency_key: options.idempotency_key.clone(),
            concurrency_key: options.concurrency_key.clone(),
            delivery: options.delivery.map(|d| match d {
                WireDelivery::Link => Delivery::Link,
                WireDelivery::Stream => Delivery::Stream,
            }),
            cancel_on_disconnect: options.cancel_on_disconnect,
            interactive: options.interactive,
        },
        tag: None,
    }
}
