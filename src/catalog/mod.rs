//! The task catalogue: every task the server can run, by name.
//!
//! A task is a [`TaskHandler`]: a name, a description, a JSON Schema of its
//! input (shown in `welcome`), a cheap `validate` run before anything is
//! queued, and `run(input, ctx)`, which reports progress and writes files
//! through its [`TaskCtx`] and sees cancellation there.
//!
//! **Architecture Invariant:** handlers know nothing of sockets, clients or
//! the queue; everything they touch goes through `TaskCtx`. That is the seam
//! a later out-of-process worker plugs into: the same `run` contract, spoken
//! over a pipe instead of a function call.

mod booklet;
mod builtin;
mod ctx;
mod pdf_check;
pub mod sync_example;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::value::RawValue;

pub(crate) use ctx::panic_message;
pub use ctx::{AskError, FileWriter, TaskCtx};

use crate::task::{FailureKind, TaskFailure};

/// Input a handler refused: where in the input and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InvalidInput {
    /// A JSON path such as `$.event.contributions[3]`.
    pub path: String,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> InvalidInput {
        InvalidInput {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// From a serde error on the whole input (`$` plus the path serde saw).
    pub fn from_serde(error: &serde_path_to_error::Error<serde_json::Error>) -> InvalidInput {
        let path = error.path().to_string();
        let path = if path == "." || path.is_empty() {
            "$".to_owned()
        } else {
            format!("$.{path}")
        };
        InvalidInput::new(path, error.inner().to_string())
    }

    /// The wire `details` object.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({"path": self.path, "reason": self.reason})
    }
}

/// Decodes a task input with serde, naming the failing path.
pub fn decode_input<'de, T: serde::Deserialize<'de>>(
    input: &'de RawValue,
) -> Result<T, InvalidInput> {
    let mut de = serde_json::Deserializer::from_str(input.get());
    serde_path_to_error::deserialize(&mut de).map_err(|e| InvalidInput::from_serde(&e))
}

/// What a completed task hands back; its files went through `ctx`.
#[derive(Debug)]
pub struct TaskOutput {
    pub result: Box<RawValue>,
}

impl TaskOutput {
    /// A result from any serializable value.
    pub fn json<T: serde::Serialize>(value: &T) -> Result<TaskOutput, TaskError> {
        serde_json::value::to_raw_value(value)
            .map(|result| TaskOutput { result })
            .map_err(|e| TaskError::internal(format!("result encoding: {e}")))
    }
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message)]
pub struct TaskError(pub TaskFailure);

impl TaskError {
    /// The task's own failure (`task_error`).
    pub fn task(message: impl Into<String>) -> TaskError {
        TaskError(TaskFailure::new(FailureKind::TaskError, message))
    }

    pub fn internal(message: impl Into<String>) -> TaskError {
        TaskError(TaskFailure::new(FailureKind::Internal, message))
    }

    pub fn invalid_input(invalid: &InvalidInput) -> TaskError {
        let mut failure = TaskFailure::new(FailureKind::InvalidInput, invalid.to_string());
        failure.details = Some(invalid.details());
        TaskError(failure)
    }
}

/// One kind of task.
pub trait TaskHandler: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON Schema of the input, as shown in `welcome`.
    fn input_schema(&self) -> serde_json::Value;
    /// Cheap checks before the task is queued; must not block for long
    /// (it runs on the connection's task).
    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput>;
    /// Running it again after a lost attempt does no harm (no side effects
    /// outside its own result). Only a cluster node can lose a built-in
    /// attempt (the node dies); then such a task runs again elsewhere.
    fn retry_safe(&self) -> bool {
        false
    }
    /// Runs the task. CPU-heavy or blocking work goes through
    /// [`TaskCtx::spawn_blocking`], never on the async threads.
    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>>;
}

/// A catalogue entry: the handler and what `welcome` shows of it.
pub struct Entry {
    pub name: Arc<str>,
    pub handler: Arc<dyn TaskHandler>,
    pub schema: serde_json::Value,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({})", self.name)
    }
}

/// Every task by name; fixed at startup.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: BTreeMap<Arc<str>, Entry>,
}

impl Catalog {
    /// The built-in tasks: `echo`, `sleep`, `blob`, `approval`,
    /// `abstract_booklet`, `pdf_check`.
    pub fn builtin(max_temp_bytes: u64) -> Catalog {
        let mut catalog = Catalog::default();
        builtin::register(&mut catalog, max_temp_bytes);
        catalog
    }

    pub fn register(&mut self, handler: Arc<dyn TaskHandler>) {
        let name: Arc<str> = Arc::from(handler.name());
        let schema = handler.input_schema();
        self.entries.insert(
            Arc::clone(&name),
            Entry {
                name,
                handler,
                schema,
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}
