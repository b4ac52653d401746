//! Every error the front door answers, mapped to its wire code and HTTP
//! status in one place.
//!
//! Domain errors ([`Refusal`] from the scheduler, [`AdmissionError`] from
//! admission, failures of tasks) become a [`WireError`] here and nowhere
//! else. REST answers every error with the protocol's error body; the
//! WebSocket sends the same object in `error` / `rejected` messages.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::AdmissionError;
use crate::protocol::server::ErrorBody;
use crate::protocol::{ErrorCode, WireError};
use crate::scheduler::Refusal;
use crate::task::FailureKind;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Upload(#[from] crate::inputs::UploadError),
    #[error("{0}")]
    BadMessage(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// `403`: a foreign `Origin`, an admin-only route, a key of the wrong role.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such task")]
    NotFound,
    #[error("{0}")]
    NoSuchThing(&'static str),
    #[error("this path does not take that method")]
    MethodNotAllowed,
    #[error("the body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("the body did not arrive within {} s", .0.as_secs())]
    BodyTimeout(Duration),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Internal(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl ApiError {
    /// The wire error object.
    pub(crate) fn wire(&self) -> WireError {
        let message = self.to_string();
        match self {
            ApiError::Refused(refusal) => refusal_wire(refusal, message),
            ApiError::Upload(e) => upload_wire(e, message),
            ApiError::Admission(e) => match e {
                AdmissionError::UnknownTask(_) => WireError::new(ErrorCode::UnknownTask, message),
                AdmissionError::NotAllowed(_) | AdmissionError::TokenExpired => {
                    WireError::new(ErrorCode::Unauthorized, message)
                }
                AdmissionError::BadOption(_) => WireError::new(ErrorCode::BadMessage, message),
                AdmissionError::InvalidInput(invalid) => {
                    WireError::new(ErrorCode::InvalidInput, message).with_details(invalid.details())
                }
                AdmissionError::NoSuchUpload { path } => {
                    WireError::new(ErrorCode::NotFound, message)
                        .with_details(serde_json::json!({ "path": path }))
                }
                AdmissionError::Internal(_) => WireError::new(ErrorCode::Internal, message),
            },
            ApiError::BadMessage(_)
            | ApiError::MethodNotAllowed
            | ApiError::BodyTooLarge { .. }
            | ApiError::BodyTimeout(_) => WireError::new(ErrorCode::BadMessage, message),
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => {
                WireError::new(ErrorCode::Unauthorized, message)
            }
            ApiError::NotFound | ApiError::NoSuchThing(_) => {
                WireError::new(ErrorCode::NotFound, message)
            }
            ApiError::RateLimited(_) => WireError::new(ErrorCode::RateLimited, message),
            ApiError::Internal(_) => WireError::new(ErrorCode::Internal, message),
            ApiError::ShuttingDown => WireError::new(ErrorCode::ShuttingDown, message),
        }
    }

    /// The HTTP status of this error on REST.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Refused(Refusal::AlreadyAnswered) => StatusCode::CONFLICT,
            ApiError::Upload(crate::inputs::UploadError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => status_of(self.wire().code),
        }
    }
}

fn upload_wire(error: &crate::inputs::UploadError, message: String) -> WireError {
    use crate::inputs::UploadError;
    match error {
        UploadError::TooLarge { max } => WireError::new(ErrorCode::BadMessage, message)
            .with_details(serde_json::json!({"bound": "max_upload_bytes", "max": max})),
        UploadError::SizeMismatch { .. } => WireError::new(ErrorCode::BadMessage, message),
        UploadError::StorageFull { .. } => WireError::new(ErrorCode::StorageFull, message),
        UploadError::Io(_) => WireError::new(ErrorCode::Internal, "cannot store the upload"),
    }
}

fn refusal_wire(refusal: &Refusal, message: String) -> WireError {
    let with_retry = |bound: &str, retry_after: Duration| {
        let mut error = WireError::new(ErrorCode::QueueFull, message.clone())
            .with_details(serde_json::json!({ "bound": bound }));
        error.retry_after_ms = Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
        error
    };
    match refusal {
        Refusal::ShuttingDown => WireError::new(ErrorCode::ShuttingDown, message),
        Refusal::QueueFull { retry_after, .. } => with_retry("queue_capacity", *retry_after),
        Refusal::QueuedBytesFull { retry_after, .. } => {
            with_retry("max_queued_input_bytes", *retry_after)
        }
        Refusal::ClientShareFull { retry_after, .. } => {
            with_retry("max_queued_input_bytes_per_client", *retry_after)
        }
        Refusal::NotFound | Refusal::NoSuchQuestion => WireError::new(ErrorCode::NotFound, message),
        Refusal::AlreadyFinished => WireError::new(ErrorCode::AlreadyFinished, message),
        Refusal::AlreadyAnswered => WireError::new(ErrorCode::AlreadyAnswered, message),
        Refusal::InvalidAnswer(invalid) => {
            WireError::new(ErrorCode::InvalidInput, message).with_details(invalid.details())
        }
        Refusal::Unavailable { retry_after } => {
            let mut error = WireError::new(ErrorCode::Unavailable, message);
            error.retry_after_ms = Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
            error
        }
        Refusal::NotOwner => {
            let mut error = WireError::new(ErrorCode::Unavailable, message);
            error.retry_after_ms = Some(100);
            error
        }
        Refusal::NoSuchUpload { path } => WireError::new(ErrorCode::NotFound, message)
            .with_details(serde_json::json!({ "path": path })),
        Refusal::TooManyCancels { max } => WireError::new(ErrorCode::RateLimited, message)
            .with_details(serde_json::json!({ "bound": "cancels_waiting", "max": max })),
    }
}

/// The HTTP status of an error code on REST.
pub(crate) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadMessage | ErrorCode::InvalidInput | ErrorCode::UnknownTask => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyFinished | ErrorCode::AlreadyAnswered => StatusCode::CONFLICT,
        ErrorCode::QueueFull | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ShuttingDown | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Timeout
        | ErrorCode::TaskError
        | ErrorCode::WorkerLost
        | ErrorCode::NoWorker
        | ErrorCode::InputFetchFailed
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The wire code of a task's failure.
pub(crate) fn failure_code(kind: FailureKind) -> ErrorCode {
    match kind {
        FailureKind::Timeout => ErrorCode::Timeout,
        FailureKind::TaskError => ErrorCode::TaskError,
        FailureKind::InvalidInput => ErrorCode::InvalidInput,
        FailureKind::StorageFull => ErrorCode::StorageFull,
        FailureKind::Internal => ErrorCode::Internal,
        FailureKind::WorkerLost => ErrorCode::WorkerLost,
        FailureKind::NoWorker => ErrorCode::NoWorker,
        FailureKind::InputFetchFailed => ErrorCode::InputFetchFailed,
    }
}

/// The code an error response carried, for the metrics layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AnsweredCode(pub(crate) ErrorCode);

/// A REST error response with the protocol's error body.
pub(crate) fn error_response(status: StatusCode, error: &WireError) -> Response {
    let body = serde_json::to_string(&ErrorBody { error }).unwrap_or_default();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(ms) = error.retry_after_ms
        && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response.extensions_mut().insert(AnsweredCode(error.code));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status(), &self.wire())
    }
}
