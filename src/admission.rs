//! Admission: the one path that turns "this caller asks for this task with
//! this input" into a [`TaskSpec`] the scheduler may queue. The WebSocket,
//! REST, schedules and other nodes all go through [`Admission::admit`].
//!
//! Checks, in order: the task name (offered by the [`Directory`]), a browser
//! token's task list and expiry, the options, then the input (a built-in
//! handler's `validate`, or the task's JSON Schema), then its file
//! references (`$upload`, `$url`: each upload must be the caller's, and is
//! pinned to the task from here on). Inputs larger than
//! [`BLOCKING_INPUT_BYTES`] are checked on the blocking pool, never on the
//! async threads.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::catalog::InvalidInput;
use crate::directory::Directory;
use crate::inputs::{Inputs, Reference, ResolveError, TaskInputs, find_references};
use crate::task::{Delivery, Priority, TaskId, TaskOptions, TaskSpec};

/// Inputs at least this large are validated off the async threads.
pub(crate) const BLOCKING_INPUT_BYTES: usize = 256 * 1024;
/// Longest `idempotency_key` / `concurrency_key`, in bytes.
pub(crate) const MAX_OPTION_KEY_BYTES: usize = 256;

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
    /// An `$upload` names no upload this caller may use.
    #[error("{path}: no such upload")]
    NoSuchUpload { path: String },
    #[error("no randomness for a task id: {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
pub struct Admission {
    directory: Arc<Directory>,
    max_timeout: Duration,
    /// Where `$upload` references are resolved; without it, an input with
    /// file references is refused.
    inputs: Option<Inputs>,
}

impl Admission {
    pub fn new(directory: Arc<Directory>, max_timeout: Duration) -> Admission {
        Admission {
            directory,
            max_timeout,
            inputs: None,
        }
    }

    /// Resolves file references through `inputs`.
    pub fn with_inputs(mut self, inputs: Inputs) -> Admission {
        self.inputs = Some(inputs);
        self
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
        let check_all = move |input: &RawValue| -> Result<Vec<Reference>, InvalidInput> {
            check.run(input)?;
            find_references(input)
        };
        let (input, references) = if input.get().len() >= BLOCKING_INPUT_BYTES {
            let checked = tokio::task::spawn_blocking(move || {
                let result = check_all(&input);
                (input, result)
            })
            .await
            .map_err(|e| AdmissionError::Internal(format!("input check lost: {e}")))?;
            let references = checked.1.map_err(AdmissionError::InvalidInput)?;
            (checked.0, references)
        } else {
            let references = check_all(&input).map_err(AdmissionError::InvalidInput)?;
            (input, references)
        };
        let inputs = match (&self.inputs, references.is_empty()) {
            (_, true) => TaskInputs::default(),
            (Some(inputs), false) => {
                inputs.resolve(principal, references).map_err(|e| match e {
                    ResolveError::NoSuchUpload { path } => AdmissionError::NoSuchUpload { path },
                    ResolveError::Invalid(invalid) => AdmissionError::InvalidInput(invalid),
                })?
            }
            (None, false) => {
                return Err(AdmissionError::InvalidInput(InvalidInput::new(
                    "$",
                    "this server takes no file references",
                )));
            }
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
            inputs,
            tag,
        })
    }
}
