//! Who is calling a REST route: one extractor that checks `Origin` and the
//! `Authorization` header from the request head, **before** any body is
//! read (axum runs head extractors first), so a refused request never costs
//! the server its body and never gets `100 Continue`.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::{ApiError, AppState, origin, origin_allowed};
use crate::auth::Principal;
use crate::task::TaskId;

/// An authenticated REST caller (a client or admin key, or a browser token).
#[derive(Debug)]
pub(super) struct Caller(pub(super) Principal);

/// An authenticated admin.
#[derive(Debug)]
pub(super) struct Admin(#[allow(dead_code)] pub(super) Principal);

/// The task id in the path; anything that is not one is `404`.
#[derive(Debug)]
pub(super) struct TaskPath(pub(super) TaskId);

/// The secret of an `Authorization: Bearer <secret>` header (the scheme is
/// case-insensitive, RFC 7235).
pub(super) fn bearer_secret(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| secret.trim())
        .filter(|s| !s.is_empty())
}

/// Cluster mode: a browser token minted on another node that this node has
/// not heard of yet is read from the cluster once.
pub(super) async fn learn_token(state: &AppState, secret: &str) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    if !secret.starts_with(crate::auth::TOKEN_PREFIX) {
        return;
    }
    let key = crate::auth::token_key(secret);
    if state.auth.tokens.knows(&key) {
        return;
    }
    if let Some(grant) = cluster.fetch_token(&key).await {
        state.auth.tokens.adopt(&key, &grant);
    }
}

/// [`authenticate`], after [`learn_token`].
pub(super) async fn authenticate_shared(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    if let Some(secret) = bearer_secret(headers) {
        learn_token(state, secret).await;
    }
    authenticate(state, headers)
}

/// The principal of a request head: `Origin` first (`403`), then the key
/// (`401`).
pub(super) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if !origin_allowed(state, headers) {
        return Err(ApiError::Forbidden("origin not allowed"));
    }
    let Some(secret) = bearer_secret(headers) else {
        return Err(ApiError::Unauthorized(
            "missing Authorization: Bearer <api key>",
        ));
    };
    match state.auth.authenticate(secret, origin(headers)) {
        Some(principal) => Ok(principal),
        None if state.auth.is_worker_key(secret) => Err(ApiError::Forbidden(
            "a worker key may only serve tasks (GET /v1/worker)",
        )),
        None => {
            tracing::info!(client = "unknown", "authentication failed");
            Err(ApiError::Unauthorized("unknown or expired key"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate_shared(state, &parts.headers).await.map(Caller)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = authenticate_shared(state, &parts.headers).await?;
        if !principal.admin {
            return Err(ApiError::Forbidden("needs an admin key"));
        }
        Ok(Admin(principal))
    }
}

impl FromRequestParts<AppState> for TaskPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Every path parameter; the task id is the first one.
        let Ok(Path(params)) =
            Path::<Vec<(String, String)>>::from_request_parts(parts, state).await
        else {
            return Err(ApiError::NotFound);
        };
        params
            .first()
            .and_then(|(_, id)| id.parse().ok())
            .map(TaskPath)
            .ok_or(ApiError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn bearer_is_case_insensitive() {
        for value in ["Bearer tw_x", "bearer tw_x", "BEARER  tw_x ", "bEaReR tw_x"] {
            assert_eq!(bearer_secret(&headers(value)), Some("tw_x"), "{value}");
        }
        for value in ["Basic tw_x", "Bearer", "Bearer ", "tw_x", "Bearertw_x"] {
            assert_eq!(bearer_secret(&headers(value)), None, "{value}");
        }
    }
}
