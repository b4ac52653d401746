//! `sync`: the example of a device data-sync flow (`docs/sync.md`), as a
//! task any server can register ([`SyncExample`]; `taskwire serve` does not
//! offer it). A device's zip of XML files and CSV logs comes in as an
//! upload; the task unpacks it safely, reads every file, and produces the
//! instruction package the device downloads and applies.
//!
//! One sync per device at a time is the submitter's
//! `options.concurrency_key` (= the device id), not this task's concern.

use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{FileWriter, InvalidInput, TaskCtx, TaskError, TaskHandler, TaskOutput, decode_input};
use crate::inputs::archive::ArchiveLimits;
use crate::task::Progress;

/// The `sync` task.
#[derive(Debug)]
pub struct SyncExample;

/// Longest device id, in bytes.
const MAX_DEVICE_BYTES: usize = 128;
/// Most `work_ms` per file.
const MAX_WORK_MS: u64 = 10_000;
/// Bounds of the device's zip.
const LIMITS: ArchiveLimits = ArchiveLimits {
    max_entries: 10_000,
    max_total_bytes: 512 * 1024 * 1024,
    max_ratio: 100,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    device: String,
    /// The device's zip: `{"$upload": …}` (or `{"$url": …}`).
    package: Value,
    /// Example only: time spent per file, standing for real processing.
    #[serde(default)]
    work_ms: u64,
}

fn parse(input: &RawValue) -> Result<Input, InvalidInput> {
    let input: Input = decode_input(input)?;
    if input.device.is_empty() || input.device.len() > MAX_DEVICE_BYTES {
        return Err(InvalidInput::new(
            "$.device",
            format!("from 1 to {MAX_DEVICE_BYTES} bytes"),
        ));
    }
    let is_reference = input
        .package
        .as_object()
        .is_some_and(|p| p.contains_key("$upload") || p.contains_key("$url"));
    if !is_reference {
        return Err(InvalidInput::new(
            "$.package",
            "the device's zip: {\"$upload\": \"up_…\"}",
        ));
    }
    if input.work_ms > MAX_WORK_MS {
        return Err(InvalidInput::new(
            "$.work_ms",
            format!("at most {MAX_WORK_MS}"),
        ));
    }
    Ok(input)
}

/// What one received file held.
fn read_file(path: &std::path::Path, name: &str) -> Result<Value, String> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".xml") {
        let mut reader = quick_xml::Reader::from_file(path).map_err(|e| e.to_string())?;
        let mut buffer = Vec::new();
        let mut elements = 0u64;
        let mut root: Option<String> = None;
        loop {
            match reader.read_event_into(&mut buffer) {
                Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                    elements += 1;
                    if root.is_none() {
                        let name = e.name();
                        root = Some(name.into_inner().to_owned());
                    }
                }
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("not well-formed XML: {e}")),
            }
            buffer.clear();
        }
        Ok(json!({"file": name, "kind": "xml", "root": root, "elements": elements}))
    } else if lower.ends_with(".csv") {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|_| "not UTF-8 text".to_owned())?;
        let rows = text.lines().filter(|l| !l.trim().is_empty()).count();
        Ok(json!({"file": name, "kind": "csv", "records": rows.saturating_sub(1)}))
    } else {
        Ok(json!({"file": name, "kind": "other"}))
    }
}

/// Stands for real work: `ms` of waiting that a cancel cuts short.
fn work(ctx: &TaskCtx, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until && !ctx.is_cancelled() {
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

fn sync(ctx: &TaskCtx, input: &Input) -> Result<TaskOutput, TaskError> {
    let package = ctx
        .input_file("$.package")
        .cloned()
        .ok_or_else(|| TaskError::internal("the package input is missing"))?;
    let unpacked = ctx.unpack_zip(&package, &LIMITS)?;
    let total = unpacked.files().len();
    let mut received = Vec::with_capacity(total);
    let mut problems = Vec::new();
    for (i, file) in unpacked.files().iter().enumerate() {
        if ctx.is_cancelled() {
            return Err(TaskError::task("cancelled"));
        }
        match read_file(&file.path, &file.name) {
            Ok(seen) => received.push(seen),
            Err(why) => problems.push(json!({"file": file.name, "problem": why})),
        }
        work(ctx, input.work_ms);
        ctx.progress_blocking(Progress {
            fraction: Some((i + 1) as f64 / total.max(1) as f64),
            message: Some(format!("read {} of {total} files", i + 1)),
            data: None,
        });
    }
    let actions: Vec<Value> = received
        .iter()
        .map(|r| json!({"op": "acknowledge", "file": r["file"]}))
        .collect();
    let instructions = json!({
        "device": input.device,
        "received": received,
        "problems": problems,
        "actions": actions,
    });
    let package = instruction_package(&instructions)
        .map_err(|e| TaskError::internal(format!("writing the package: {e}")))?;
    let mut file = ctx.create_file(
        &format!("instructions-{}.zip", input.device),
        "application/zip",
    )?;
    file.write_all(&package)
        .map_err(|e| FileWriter::write_error(&e))?;
    file.finish()?;
    TaskOutput::json(&json!({
        "device": input.device,
        "files": total,
        "problems": problems.len(),
        "actions": actions.len(),
    }))
}

/// The zip the device applies: `instructions.json`.
fn instruction_package(instructions: &Value) -> Result<Vec<u8>, zip::result::ZipError> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("instructions.json", options)?;
    let text = serde_json::to_vec_pretty(instructions).unwrap_or_default();
    zip.write_all(&text)?;
    Ok(zip.finish()?.into_inner())
}

impl TaskHandler for SyncExample {
    fn name(&self) -> &'static str {
        "sync"
    }

    fn description(&self) -> &'static str {
        "Example: reads a device's zip of XML files and CSV logs and produces its instruction package."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["device", "package"],
            "properties": {
                "device": {"type": "string", "minLength": 1, "maxLength": MAX_DEVICE_BYTES},
                "package": {"type": "object", "description": "the device's zip: {\"$upload\": \"up_…\"}"},
                "work_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WORK_MS}
            }
        })
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        parse(input).map(|_| ())
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        Box::pin(async move {
            let input = parse(&input).map_err(|e| TaskError::invalid_input(&e))?;
            let work = ctx.clone();
            ctx.spawn_blocking(move || sync(&work, &input)).await?
        })
    }
}
