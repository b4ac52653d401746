//! Which tasks the server offers, by name: the built-in ones, the ones
//! declared in config (`[[tasks]]`) and the ones external workers declared.
//!
//! Admission reads it on every submit (from any thread, without waiting on
//! the scheduler); the scheduler updates it when executors come and go; the
//! `welcome` message is made from it. A name, once offered, stays offered
//! for the life of the process (its submits wait for a worker, bounded by
//! `no_worker_wait_s`), so a restarting worker never turns accepted names
//! into `unknown_task`.
//!
//! **Architecture Invariant:** the lock is held only to copy an `Arc` out
//! or to swap a new snapshot in, never across an `.await` or a validation.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::catalog::{Catalog, InvalidInput, TaskHandler};
use crate::exec::TaskDecl;

/// How an offered task checks its input before it is queued.
#[derive(Clone)]
pub enum Check {
    /// A built-in handler's own `validate`.
    Handler(Arc<dyn TaskHandler>),
    /// A JSON Schema (compiled once).
    Schema(Arc<jsonschema::Validator>),
    /// Any JSON is accepted.
    Any,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Check::Handler(_) => "Check::Handler",
            Check::Schema(_) => "Check::Schema",
            Check::Any => "Check::Any",
        })
    }
}

impl Check {
    /// Checks an input; blocking for large inputs (callers move big ones
    /// off the async threads).
    pub fn run(&self, input: &RawValue) -> Result<(), InvalidInput> {
        match self {
            Check::Handler(handler) => handler.validate(input),
            Check::Any => Ok(()),
            Check::Schema(validator) => {
                let value: serde_json::Value = serde_json::from_str(input.get())
                    .map_err(|e| InvalidInput::new("$", e.to_string()))?;
                schema_check(validator, &value)
            }
        }
    }
}

/// Checks a value against a compiled schema; the first error, with its path
/// in the JSON path notation `invalid_input` uses everywhere.
pub(crate) fn schema_check(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
) -> Result<(), InvalidInput> {
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(error) => Err(InvalidInput::new(
            json_path(error.instance_path().as_str()),
            error.to_string(),
        )),
    }
}

/// A JSON Pointer (`/event/sessions/3`) as a JSON path (`$.event.sessions[3]`).
pub(crate) fn json_path(pointer: &str) -> String {
    let mut path = String::from("$");
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            path.push('[');
            path.push_str(&token);
            path.push(']');
        } else if !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            path.push('.');
            path.push_str(&token);
        } else {
            path.push_str("[\"");
            path.push_str(&token.replace('\\', "\\\\").replace('"', "\\\""));
            path.push_str("\"]");
        }
    }
    path
}

/// Compiles a JSON Schema, saying why it is not one.
pub(crate) fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// Where an offered name comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Builtin,
    Config,
    Worker,
}

/// One offered task.
#[derive(Clone, Debug)]
pub struct Offer {
    pub name: Arc<str>,
    pub description: String,
    /// Shown in `welcome`.
    pub input_schema: serde_json::Value,
    pub check: Check,
    pub source: Source,
    /// Connected executors serving it now.
    pub workers: usize,
    /// Executors of other nodes serving it now (cluster mode).
    pub remote_workers: usize,
    /// It may run again after a lost attempt.
    pub retry_safe: bool,
    /// Its default timeout, if it has one.
    pub timeout: Option<Duration>,
}

/// Everything offered, as one immutable snapshot.
#[derive(Debug, Default)]
pub struct Offered {
    /// Grows by one on every change (the encoded `welcome` is cached by it).
    pub version: u64,
    pub tasks: BTreeMap<Arc<str>, Arc<Offer>>,
}

#[derive(Debug, Default)]
pub struct Directory {
    current: RwLock<Arc<Offered>>,
}

impl Directory {
    /// The built-in tasks of `catalog`.
    pub fn with_builtins(catalog: &Catalog) -> Directory {
        let mut tasks = BTreeMap::new();
        for entry in catalog.iter() {
            tasks.insert(
                Arc::clone(&entry.name),
                Arc::new(Offer {
                    name: Arc::clone(&entry.name),
                    description: entry.handler.description().to_owned(),
                    input_schema: entry.schema.clone(),
                    check: Check::Handler(Arc::clone(&entry.handler)),
                    source: Source::Builtin,
                    workers: 0,
                    remote_workers: 0,
                    retry_safe: entry.handler.retry_safe(),
                    timeout: None,
                }),
            );
        }
        Directory {
            current: RwLock::new(Arc::new(Offered { version: 1, tasks })),
        }
    }

    pub fn snapshot(&self) -> Arc<Offered> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Offer>> {
        self.snapshot().tasks.get(name).cloned()
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<Arc<str>, Arc<Offer>>)) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let mut tasks = current.tasks.clone();
        change(&mut tasks);
        *current = Arc::new(Offered {
            version: current.version + 1,
            tasks,
        });
    }

    /// Declares a task (from config or a worker's `hello`). A name declared
    /// in config keeps config's schema, description and flags; a built-in
    /// name cannot be taken over.
    pub fn declare(&self, decl: &TaskDecl, source: Source) -> Result<(), String> {
        let check = match &decl.input_schema {
            Some(schema) => Check::Schema(Arc::new(compile_schema(schema)?)),
            None => Check::Any,
        };
        let mut refused = None;
        self.update(|tasks| match tasks.get(&decl.name) {
            Some(existing) if existing.source == Source::Builtin => {
                refused = Some(format!("{:?} is a built-in task", &*decl.name));
            }
            Some(existing) if existing.source == Source::Config || source == Source::Worker => {}
            _ => {
                tasks.insert(
                    Arc::clone(&decl.name),
                    Arc::new(Offer {
                        name: Arc::clone(&decl.name),
                        description: decl.description.clone(),
                        input_schema: decl
                            .input_schema
                            .clone()
                            .unwrap_or_else(|| serde_json::json!({})),
                        check,
                        source,
                        workers: tasks.get(&decl.name).map_or(0, |t| t.workers),
                        remote_workers: tasks.get(&decl.name).map_or(0, |t| t.remote_workers),
                        retry_safe: decl.retry_safe,
                        timeout: decl.timeout,
                    }),
                );
            }
        });
        refused.map_or(Ok(()), Err)
    }

    /// How many executors of other nodes serve each name now (cluster
    /// mode); names not listed have none.
    pub(crate) fn set_remote_workers(&self, counts: &std::collections::HashMap<Arc<str>, usize>) {
        let differs = self
            .snapshot()
            .tasks
            .values()
            .any(|o| o.remote_workers != counts.get(&o.name).copied().unwrap_or(0));
        if !differs {
            return;
        }
        self.update(|tasks| {
            for offer in tasks.values_mut() {
                let n = counts.get(&offer.name).copied().unwrap_or(0);
                if offer.remote_workers != n {
                    let mut changed = (**offer).clone();
                    changed.remote_workers = n;
                    *offer = Arc::new(changed);
                }
            }
        });
    }

    /// Changes how many executors serve `name` now.
    pub(crate) fn count_workers(&self, names: &[Arc<str>], delta: isize) {
        self.update(|tasks| {
            for name in names {
                if let Some(offer) = tasks.get_mut(name) {
                    let mut changed = (**offer).clone();
                    changed.workers = changed.workers.saturating_add_signed(delta);
                    *offer = Arc::new(changed);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_from_pointers() {
        assert_eq!(json_path(""), "$");
        assert_eq!(
            json_path("/event/sessions/3/title"),
            "$.event.sessions[3].title"
        );
        assert_eq!(json_path("/a b/c~1d"), "$[\"a b\"][\"c/d\"]");
    }

    #[test]
    fn schema_errors_name_the_path() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
            "required": ["items"]
        });
        let validator = compile_schema(&schema).expect("schema");
        let bad = serde_json::json!({"items": [1, "two"]});
        let error = schema_check(&validator, &bad).expect_err("invalid");
        assert_eq!(error.path, "$.items[1]");
        assert!(schema_check(&validator, &serde_json::json!({"items": []})).is_ok());
        assert!(compile_schema(&serde_json::json!({"type": 12})).is_err());
    }
}
