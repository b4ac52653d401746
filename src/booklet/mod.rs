//! Placeholder until the builder lands.
#![allow(missing_docs, unreachable_pub)]

pub const DESCRIPTION: &str = "Abstract booklet (.odt) of an Indico event.";

pub fn input_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "required": ["event"]})
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InputError {
    pub path: String,
    pub reason: String,
}

pub fn check(_input: &str) -> Result<(), InputError> {
    Ok(())
}

#[derive(Debug)]
pub struct Progress {
    pub fraction: f64,
    pub message: String,
}

pub trait Observer {
    fn progress(&mut self, p: Progress);
    fn cancelled(&self) -> bool;
}

#[derive(Debug)]
pub struct Booklet {
    pub filename: String,
    pub odt: Vec<u8>,
    pub result: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    InvalidInput(InputError),
    #[error("cancelled")]
    Cancelled,
    #[error("not built yet")]
    Missing,
}

pub fn build(_input: &str, _observer: &mut dyn Observer) -> Result<Booklet, BuildError> {
    Err(BuildError::Missing)
}
