//! Admission: the one path that turns "this caller asks for this task with
//! this input" into a [`TaskSpec`] the scheduler may queue. The WebSocket,
//! REST, schedules and other nodes all go through [`Admission::admit`].
//!
//! Checks, in order: the task name (offered by the [`Directory`]), a browser
//! token's task list and expiry, the options, then the input (a built-in
//! handler's `validate`, or the task's JSON Schema). Inputs larger than
//! [`BLOCKING_INPUT_BYTES`] are checked on the blocking pool, never on the
//! async threads.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::catalog::InvalidInput;
use crate::directory::Directory;
use crate::task::{Delivery, Priority, TaskId, TaskOptions, TaskSpec};

/// Inputs at least this large are validated off the async threads.
pub const BLOCKING_INPUT_BYTES: usize = 256 * 1024;
/// Longest `idempotency_key` / `concurrency_key`, in bytes.
pub const MAX_OPTION_KEY_BYTES: usize = 256;

/// What a caller asks for, before any check.
#[derive(Debug)]
pub struct SubmitRequest {
    pub task: String,
    pub input: Box<RawValue>,
    pub options: RequestedOptions,
    /// The schedule that submits it, if one does.
    pub tag: Option<Arc<str>>,
}

/// `submit.options` as sent (every field optional).
#[derive(Debug, Default, Clone)]
pub struct RequestedOptions {
    pub timeout_s: Option<f64>,
    pub priority: Option<Priority>,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub delivery: Option<Delivery>,
    pub cancel_on_disconnect: Option<bool>,
    pub interactive: Option<bool>,
}

/// Why a submit was refused before queueing.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("no task named {0:?}")]
    UnknownTask(String),
    #[error("this token may not run {0:?}")]
    NotAllowed(String),
    #[error("the token has expired")]
    TokenExpired,
    #[error("{0}")]
    BadOption(String),
    #[error("invalid input: {0}")]
    InvalidInput(InvalidInput),
    #[error("no randomness for a task id: {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub struct Admission {
    directory: Arc<Directory>,
    max_timeout: Duration,
}

impl Admission {
    pub fn new(directory: Arc<Directory>, max_timeout: Duration) -> Admission {
        Admission {
            directory,
            max_timeout,
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// Checks a request and makes the task it asks for.
    pub async fn admit(
        &self,
        principal: &Principal,
        request: SubmitRequest,
    ) -> Result<TaskSpec, AdmissionError> {
        let SubmitRequest {
            task,
            input,
            options,
            tag,
        } = request;
        let Some(offer) = self.directory.get(&task) else {
            let shown: String = task.chars().take(64).collect();
            return Err(AdmissionError::UnknownTask(shown));
        };
        if !principal.may_run(&offer.name) {
            return Err(AdmissionError::NotAllowed(offer.name.to_string()));
        }
        if principal.is_expired(Instant::now()) {
            return Err(AdmissionError::TokenExpired);
        }
        let max = offer
            .timeout
            .map_or(self.max_timeout, |t| t.min(self.max_timeout));
        let timeout = match options.timeout_s {
            None => max,
            Some(t) if t.is_finite() && t > 0.0 => {
                Duration::try_from_secs_f64(t).map_or(max, |d| d.min(self.max_timeout))
            }
            Some(_) => {
                return Err(AdmissionError::BadOption(
                    "options.timeout_s must be a positive number".to_owned(),
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
                return Err(AdmissionError::BadOption(format!(
                    "options.{field} must be 1 to {MAX_OPTION_KEY_BYTES} bytes"
                )));
            }
        }
        let check = offer.check.clone();
        let input = if input.get().len() >= BLOCKING_INPUT_BYTES {
            let checked = tokio::task::spawn_blocking(move || {
                let result = check.run(&input);
                (input, result)
            })
            .await
            .map_err(|e| AdmissionError::Internal(format!("input check lost: {e}")))?;
            checked.1.map_err(AdmissionError::InvalidInput)?;
            checked.0
        } else {
            check.run(&input).map_err(AdmissionError::InvalidInput)?;
            input
        };
        let id = TaskId::generate().map_err(|e| AdmissionError::Internal(e.to_string()))?;
        Ok(TaskSpec {
            id,
            name: Arc::clone(&offer.name),
            input,
            options: TaskOptions {
                timeout,
                priority: options.priority.unwrap_or(Priority::Normal),
                idempotency_key: options.idempotency_key,
                concurrency_key: options.concurrency_key,
                delivery: options.delivery.unwrap_or(Delivery::Link),
                cancel_on_disconnect: options.cancel_on_disconnect.unwrap_or(false),
                interactive: options.interactive.unwrap_or(true),
            },
            owner: principal.owner(),
            retry_safe: offer.retry_safe,
            tag,
        })
    }
}
