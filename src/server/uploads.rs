//! Uploads over REST (`POST /v1/uploads`, `GET`/`DELETE
//! /v1/uploads/{upload_id}`) and the per-attempt input links of external
//! workers (`GET /v1/inputs/{token}`).
//!
//! An upload's body is the file's bytes (`?name=` names it); it streams to
//! disk chunk by chunk, never held in memory. The caller is authenticated
//! from the request head before any byte of the body is read, a declared
//! `Content-Length` over `max_upload_bytes` is refused before reading, and
//! the body must keep arriving (`body_timeout_s` between chunks).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;

use super::caller::Caller;
use super::{ApiError, AppState, encode, files};
use crate::inputs::UploadInfo;
use crate::protocol::inputs::Upload;

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
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let body_timeout =
        tower_http::timeout::RequestBodyTimeoutLayer::new(state.config.limits.body_timeout);
    Router::new()
        .route("/v1/uploads", post(upload))
        .route("/v1/uploads/{upload_id}", get(info).delete(delete))
        .layer(body_timeout)
        .layer(cors)
        .route("/v1/inputs/{token}", get(input_link))
}

/// The JSON body describing an upload.
pub(super) fn upload_json(info: &UploadInfo) -> String {
    let id = info.id.to_text();
    let expires_at = encode::rfc3339(info.expires_at);
    serde_json::to_string(&upload_wire(info, &id, &expires_at)).unwrap_or_default()
}

pub(super) fn upload_wire<'a>(
    info: &'a UploadInfo,
    id: &'a str,
    expires_at: &'a str,
) -> Upload<'a> {
    Upload {
        upload_id: id,
        name: &info.name,
        size: info.size,
        sha256: &info.sha256,
        content_type: &info.content_type,
        expires_at,
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// Longest `?name=`, in bytes (names are cut to 200 bytes when cleaned).
const MAX_NAME_BYTES: usize = 1024;

async fn upload(
    State(state): State<AppState>,
    Caller(principal): Caller,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadMessage(format!("bad query string: {e}")))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type.is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    }) {
        return Err(ApiError::BadMessage(
            "send the file's bytes as the body, named with ?name= (multipart bodies are not taken)"
                .to_owned(),
        ));
    }
    let name = query.name.unwrap_or_else(|| "upload".to_owned());
    if name.len() > MAX_NAME_BYTES {
        return Err(ApiError::BadMessage(format!(
            "name: longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut writer = state
        .inputs
        .uploads()
        .begin(principal.owner(), &name, content_type, declared)
        .await?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| body_error(&state, &e))?;
        state.metrics.bytes_received.inc_by(chunk.len() as u64);
        writer.write(&chunk).await?;
    }
    let info = writer.finish().await?;
    tracing::debug!(client = %principal.client, size = info.size, "upload stored");
    Ok(json(StatusCode::CREATED, upload_json(&info)))
}

/// A body that broke off: too slow (`408`), or gone.
fn body_error(state: &AppState, error: &axum::Error) -> ApiError {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::BodyTimeout(state.config.limits.body_timeout);
        }
        source = cause.source();
    }
    ApiError::BadMessage("the body broke off".to_owned())
}

async fn info(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(upload_id): Path<String>,
) -> Result<Response, ApiError> {
    let info = state
        .inputs
        .upload_info(&upload_id, &principal)
        .await
        .map_err(unknown)?
        .ok_or(ApiError::NoSuchThing("no such upload"))?;
    Ok(json(StatusCode::OK, upload_json(&info)))
}

async fn delete(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(upload_id): Path<String>,
) -> Result<Response, ApiError> {
    if state
        .inputs
        .delete_upload(&upload_id, &principal)
        .await
        .map_err(unknown)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NoSuchThing("no such upload"))
    }
}

/// Cluster mode: another node did not answer about an upload.
fn unknown(reason: String) -> ApiError {
    tracing::debug!(error = %reason, "no answer about an upload from every node");
    ApiError::Refused(crate::scheduler::Refusal::Unavailable {
        retry_after: std::time::Duration::from_millis(500),
    })
}

/// An input file of a worker's running attempt; the token is the
/// capability, and dies with the attempt.
async fn input_link(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let Some(file) = state.inputs.shared(&token) else {
        return (StatusCode::NOT_FOUND, "no such input\n").into_response();
    };
    files::serve_file(
        &file.dir,
        &file.disk_name,
        &file.name,
        &file.content_type,
        request,
    )
    .await
}
