//! Worker routes besides the WebSocket: remote workers' uploads
//! (`PUT /v1/worker/uploads/{task_id}/{attempt}/{name}`, the `upload_url`
//! of an `assign` plus the file name), and what `/readyz` says about
//! managed groups.

use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use futures::StreamExt;
use serde::Serialize;

use super::AppState;
use super::error::error_response;
use crate::artifacts::{Stage, StageError, StagedFile};
use crate::auth::WorkerAuthError;
use crate::protocol::worker::WorkerErrorCode;
use crate::protocol::{ErrorCode, WireError};
use crate::task::TaskId;
use crate::workers::uploads::UploadError;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/worker/uploads/{task_id}/{attempt}/{name}",
        // The size bound is `max_file_bytes`, checked while streaming.
        put(upload).layer(DefaultBodyLimit::disable()),
    )
}

/// What `/readyz` answers while a managed group has no ready process.
pub(super) fn not_ready(state: &AppState) -> Option<String> {
    state
        .workers
        .board()
        .waiting_for()
        .map(|group| format!("waiting for worker group {group}"))
}

#[derive(Serialize)]
struct WorkerErrorBody<'a> {
    error: WorkerErrorObject<'a>,
}

#[derive(Serialize)]
struct WorkerErrorObject<'a> {
    code: &'a str,
    message: &'a str,
}

fn worker_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_string(&WorkerErrorBody {
        error: WorkerErrorObject { code, message },
    })
    .unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Serialize)]
struct Uploaded<'a> {
    name: &'a str,
    size: u64,
    sha256: &'a str,
}

async fn upload(
    State(state): State<AppState>,
    Path((task_id, attempt, name)): Path<(String, u32, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if headers.contains_key(header::ORIGIN) {
        return error_response(
            StatusCode::FORBIDDEN,
            &WireError::new(
                ErrorCode::Unauthorized,
                "workers do not upload from browsers",
            ),
        );
    }
    let Some(secret) = super::caller::bearer_secret(&headers) else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            &WireError::new(
                ErrorCode::Unauthorized,
                "missing Authorization: Bearer <worker key>",
            ),
        );
    };
    let owner = match state.auth.worker(secret) {
        Ok(owner) => owner,
        Err(WorkerAuthError::Unknown) => {
            return error_response(
                StatusCode::UNAUTHORIZED,
                &WireError::new(ErrorCode::Unauthorized, "unknown key"),
            );
        }
        Err(WorkerAuthError::NotAWorkerKey) => {
            return error_response(
                StatusCode::FORBIDDEN,
                &WireError::new(ErrorCode::Unauthorized, "not a worker key"),
            );
        }
    };
    let Ok(task_id) = task_id.parse::<TaskId>() else {
        return error_response(
            StatusCode::NOT_FOUND,
            &WireError::new(ErrorCode::NotFound, "no such attempt"),
        );
    };
    let max = state.workers.max_file_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return worker_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            WorkerErrorCode::TooLarge.as_str(),
            "the file is larger than max_file_bytes",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let uploads = state.workers.uploads().clone();
    let stage = match uploads.checkout(task_id, attempt, owner.as_str()) {
        Ok(stage) => stage,
        Err(e @ (UploadError::NotCurrent | UploadError::Busy)) => {
            return worker_error(
                StatusCode::CONFLICT,
                WorkerErrorCode::StaleAttempt.as_str(),
                &e.to_string(),
            );
        }
    };
    let idle = state.config.limits.body_timeout;
    let (stage, written) = write_body(stage, name, content_type, body, max, idle).await;
    let last = stage.as_ref().and_then(Stage::last_file);
    let response = match written {
        Ok(()) => match last {
            Some((name, size, sha256)) => {
                let body = serde_json::to_string(&Uploaded {
                    name: &name,
                    size,
                    sha256: &sha256,
                })
                .unwrap_or_default();
                (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response()
            }
            None => worker_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the upload was lost",
            ),
        },
        Err(failure) => failure,
    };
    match stage {
        Some(stage) => uploads.checkin(task_id, attempt, stage),
        None => uploads.close(task_id, attempt),
    }
    response
}

/// Streams the body into a new file of `stage`, off the async threads.
async fn write_body(
    stage: Stage,
    name: String,
    content_type: String,
    body: Body,
    max: u64,
    idle: Duration,
) -> (Option<Stage>, Result<(), Response>) {
    let mut stage = stage;
    let opened = tokio::task::spawn_blocking(move || {
        let file = stage.create_file(&name, &content_type);
        (stage, file)
    })
    .await;
    let (stage, file) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "an upload's file could not be opened");
            return (
                None,
                Err(worker_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "cannot write the file",
                )),
            );
        }
    };
    let mut stage = stage;
    let result = write_into(&mut stage, file, body, max, idle).await;
    (Some(stage), result)
}

async fn write_into(
    stage: &mut Stage,
    file: Result<StagedFile, StageError>,
    body: Body,
    max: u64,
    idle: Duration,
) -> Result<(), Response> {
    let storage_full = || {
        worker_error(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::StorageFull.as_str(),
            "the temporary area is full (max_temp_bytes)",
        )
    };
    let internal = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "writing an upload failed");
        worker_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot write the file",
        )
    };
    let mut file: StagedFile = match file {
        Ok(file) => file,
        Err(StageError::StorageFull { .. }) => return Err(storage_full()),
        Err(StageError::Io(e)) => return Err(internal(&e)),
    };
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(worker_error(
                    StatusCode::REQUEST_TIMEOUT,
                    WorkerErrorCode::BadMessage.as_str(),
                    "the upload stalled",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(internal(&e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if file.size() + chunk.len() as u64 > max {
            return Err(worker_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                WorkerErrorCode::TooLarge.as_str(),
                "the file is larger than max_file_bytes",
            ));
        }
        let moved = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&chunk);
            (file, result)
        })
        .await;
        let (back, result) = match moved {
            Ok(pair) => pair,
            Err(e) => return Err(internal(&e)),
        };
        file = back;
        if let Err(e) = result {
            return Err(if crate::artifacts::is_storage_full(&e) {
                storage_full()
            } else {
                internal(&e)
            });
        }
    }
    stage.add(file).map_err(|e| match e {
        StageError::StorageFull { .. } => storage_full(),
        StageError::Io(e) => internal(&e),
    })
}

/// `GET /v1/admin/workers`: the scheduler's executors, with when each was
/// last heard from and its restarts (which only the worker side knows).
pub(super) fn admin_workers_json(
    state: &AppState,
    views: &[crate::scheduler::WorkerView],
) -> String {
    let board = state.workers.board();
    let workers = views
        .iter()
        .map(|view| {
            let mut worker = super::encode::worker(view);
            if let Some((heard, restarts)) = board.liveness(&worker.id) {
                worker.last_heartbeat_at = heard.map(super::encode::rfc3339);
                worker.restarts = restarts;
            }
            worker
        })
        .collect();
    serde_json::to_string(&crate::protocol::admin::AdminWorkers { workers }).unwrap_or_default()
}
