//! The built-in tasks: `echo`, `sleep` and `blob` for tests, demos and
//! benchmarks, `approval` (a question to the submitter), and the real ones:
//! `abstract_booklet` and `pdf_check`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{
    Catalog, FileWriter, InvalidInput, TaskCtx, TaskError, TaskHandler, TaskOutput, decode_input,
};
use crate::task::{Choice, Progress, QuestionSpec};

pub(super) fn register(catalog: &mut Catalog, max_temp_bytes: u64) {
    catalog.register(Arc::new(Echo));
    catalog.register(Arc::new(Sleep));
    catalog.register(Arc::new(Blob { max_temp_bytes }));
    catalog.register(Arc::new(Approval));
    catalog.register(Arc::new(super::booklet::AbstractBooklet));
    catalog.register(Arc::new(super::pdf_check::PdfCheck));
}

/// `approval`: asks its submitter one question and completes with the
/// answer (the built-in way to try questions without any worker).
struct Approval;

/// Most choices `approval` offers.
const MAX_APPROVAL_CHOICES: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalInput {
    #[serde(default = "default_prompt")]
    prompt: String,
    choices: Option<Vec<String>>,
    schema: Option<serde_json::Value>,
    default: Option<serde_json::Value>,
    timeout_s: Option<u64>,
}

fn default_prompt() -> String {
    "Approve?".to_owned()
}

impl ApprovalInput {
    fn parse(input: &RawValue) -> Result<ApprovalInput, InvalidInput> {
        let parsed: ApprovalInput = decode_input(input)?;
        if parsed.prompt.is_empty() || parsed.prompt.len() > 1024 {
            return Err(InvalidInput::new("$.prompt", "from 1 to 1024 bytes"));
        }
        if parsed.choices.is_some() && parsed.schema.is_some() {
            return Err(InvalidInput::new(
                "$.schema",
                "give choices or a schema, not both",
            ));
        }
        if let Some(choices) = &parsed.choices
            && !(1..=MAX_APPROVAL_CHOICES).contains(&choices.len())
        {
            return Err(InvalidInput::new(
                "$.choices",
                format!("from 1 to {MAX_APPROVAL_CHOICES} choices"),
            ));
        }
        if let Some(schema) = &parsed.schema {
            crate::directory::compile_schema(schema)
                .map_err(|e| InvalidInput::new("$.schema", e))?;
        }
        Ok(parsed)
    }
}

impl TaskHandler for Approval {
    fn name(&self) -> &'static str {
        "approval"
    }

    fn description(&self) -> &'static str {
        "Asks its submitter one question (choices, default \"approve\" or \"reject\", or a JSON Schema) and completes with the answer."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "minLength": 1, "maxLength": 1024},
                "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_APPROVAL_CHOICES},
                "schema": {"type": "object"},
                "default": {},
                "timeout_s": {"type": "integer", "minimum": 1}
            },
            "additionalProperties": false
        })
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        ApprovalInput::parse(input).map(drop)
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        let parsed = ApprovalInput::parse(&input);
        Box::pin(async move {
            let input = parsed.map_err(|e| TaskError::invalid_input(&e))?;
            let choices = match (&input.schema, input.choices) {
                (Some(_), _) => None,
                (None, Some(choices)) => Some(choices),
                (None, None) => Some(vec!["approve".to_owned(), "reject".to_owned()]),
            };
            let question = QuestionSpec {
                question_id: "approval".to_owned(),
                prompt: input.prompt,
                choices: choices.map(|choices| {
                    choices
                        .into_iter()
                        .map(|c| Choice {
                            value: serde_json::Value::String(c),
                            label: None,
                        })
                        .collect()
                }),
                schema: input.schema,
                default: input.default,
                timeout: input.timeout_s.map(Duration::from_secs),
            };
            let answer = ctx
                .ask(question)
                .await
                .map_err(|e| TaskError::task(e.to_string()))?;
            if answer.value.is_none() {
                return Err(TaskError::task(format!(
                    "nobody answered ({})",
                    answer.outcome.as_str()
                )));
            }
            TaskOutput::json(&json!({"outcome": answer.outcome.as_str(), "answer": answer.value}))
        })
    }
}

/// `echo`: completes at once with the input as its result.
struct Echo;

impl TaskHandler for Echo {
    fn retry_safe(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "echo"
    }

    fn description(&self) -> &'static str {
        "Completes at once with its input as the result."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({"description": "Any JSON value."})
    }

    fn validate(&self, _input: &RawValue) -> Result<(), InvalidInput> {
        Ok(())
    }

    fn run(
        &self,
        input: Box<RawValue>,
        _ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        Box::pin(std::future::ready(Ok(TaskOutput { result: input })))
    }
}

/// `sleep`: waits, reporting progress, then completes or fails as asked.
struct Sleep;

const MAX_SLEEP_MS: u64 = 600_000;
const MAX_SLEEP_STEPS: u64 = 10_000;

#[derive(Deserialize)]
struct SleepInput {
    ms: u64,
    #[serde(default = "one")]
    steps: u64,
    #[serde(default)]
    fail: bool,
}

fn one() -> u64 {
    1
}

impl SleepInput {
    fn parse(input: &RawValue) -> Result<SleepInput, InvalidInput> {
        let parsed: SleepInput = decode_input(input)?;
        if parsed.ms > MAX_SLEEP_MS {
            return Err(InvalidInput::new("$.ms", format!("at most {MAX_SLEEP_MS}")));
        }
        if !(1..=MAX_SLEEP_STEPS).contains(&parsed.steps) {
            return Err(InvalidInput::new(
                "$.steps",
                format!("from 1 to {MAX_SLEEP_STEPS}"),
            ));
        }
        Ok(parsed)
    }
}

impl TaskHandler for Sleep {
    fn retry_safe(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "sleep"
    }

    fn description(&self) -> &'static str {
        "Sleeps `ms` milliseconds in `steps` progress steps, then completes (or fails when `fail`)."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "required": ["ms"],
            "properties": {
                "ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS},
                "steps": {"type": "integer", "minimum": 1, "maximum": MAX_SLEEP_STEPS, "default": 1},
                "fail": {"type": "boolean", "default": false}
            }
        })
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        SleepInput::parse(input).map(drop)
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        Box::pin(async move {
            let input = SleepInput::parse(&input).map_err(|e| TaskError::invalid_input(&e))?;
            let start = tokio::time::Instant::now();
            for i in 1..=input.steps {
                let at = start + Duration::from_millis(input.ms.saturating_mul(i) / input.steps);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = ctx.cancelled() => return Err(TaskError::task("cancelled")),
                }
                ctx.progress(Progress {
                    fraction: Some(i as f64 / input.steps as f64),
                    message: Some(format!("step {i} of {}", input.steps)),
                    data: None,
                })
                .await;
            }
            if input.fail {
                return Err(TaskError::task("failed, as the input asked"));
            }
            TaskOutput::json(&json!({"slept_ms": input.ms}))
        })
    }
}

/// `blob`: writes one file of deterministic bytes, streamed to disk.
struct Blob {
    max_temp_bytes: u64,
}

#[derive(Deserialize)]
struct BlobInput {
    size: u64,
    name: String,
}

const MAX_BLOB_NAME: usize = 1024;
const BLOB_CHUNK: usize = 256 * 1024;
const BLOB_PROGRESS_EVERY: u64 = 8 * 1024 * 1024;

impl Blob {
    fn parse(&self, input: &RawValue) -> Result<BlobInput, InvalidInput> {
        let parsed: BlobInput = decode_input(input)?;
        if parsed.size > self.max_temp_bytes {
            return Err(InvalidInput::new(
                "$.size",
                format!("at most max_temp_bytes ({})", self.max_temp_bytes),
            ));
        }
        if parsed.name.is_empty() || parsed.name.len() > MAX_BLOB_NAME {
            return Err(InvalidInput::new(
                "$.name",
                format!("from 1 to {MAX_BLOB_NAME} bytes"),
            ));
        }
        Ok(parsed)
    }
}

/// Fills `out` with the blob bytes starting at byte `offset` (a multiple of
/// 8): each 8-byte word is a SplitMix64 hash of its index, little-endian.
fn blob_bytes(offset: u64, out: &mut [u8]) {
    let first = offset / 8;
    for (i, word) in out.chunks_mut(8).enumerate() {
        let mut z = (first + i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

fn write_blob(ctx: &TaskCtx, input: &BlobInput) -> Result<(), TaskError> {
    let mut file = ctx.create_file(&input.name, "application/octet-stream")?;
    let mut buffer = vec![0u8; BLOB_CHUNK];
    let mut written = 0u64;
    let mut next_report = BLOB_PROGRESS_EVERY;
    while written < input.size {
        if ctx.is_cancelled() {
            return Err(TaskError::task("cancelled"));
        }
        let n =
            usize::try_from(input.size - written).map_or(BLOB_CHUNK, |left| left.min(BLOB_CHUNK));
        let chunk = &mut buffer[..n];
        blob_bytes(written, chunk);
        file.write_all(chunk)
            .map_err(|e| FileWriter::write_error(&e))?;
        written += n as u64;
        if written >= next_report && written < input.size {
            next_report += BLOB_PROGRESS_EVERY;
            ctx.progress_blocking(Progress {
                fraction: Some(written as f64 / input.size as f64),
                message: None,
                data: None,
            });
        }
    }
    file.finish()
}

impl TaskHandler for Blob {
    fn retry_safe(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "blob"
    }

    fn description(&self) -> &'static str {
        "Writes one file of `size` deterministic bytes named `name` (for tests and benchmarks)."
    }

    fn input_schema(&self) -> serde_json::Value {
        json!({
            "type": "object",
            "required": ["size", "name"],
            "properties": {
                "size": {"type": "integer", "minimum": 0, "maximum": self.max_temp_bytes},
                "name": {"type": "string", "minLength": 1, "maxLength": MAX_BLOB_NAME}
            }
        })
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        self.parse(input).map(drop)
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        let parsed = self.parse(&input);
        Box::pin(async move {
            let input = parsed.map_err(|e| TaskError::invalid_input(&e))?;
            let size = input.size;
            let work = ctx.clone();
            ctx.spawn_blocking(move || write_blob(&work, &input))
                .await??;
            TaskOutput::json(&json!({"size": size}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::blob_bytes;

    #[test]
    fn blob_bytes_do_not_depend_on_chunking() {
        let mut whole = vec![0u8; 1000];
        blob_bytes(0, &mut whole);
        let mut parts = vec![0u8; 1000];
        let (a, b) = parts.split_at_mut(512);
        blob_bytes(0, a);
        blob_bytes(512, b);
        assert_eq!(whole, parts);
        assert_ne!(whole[..8], whole[8..16]);
    }
}
