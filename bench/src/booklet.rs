//! `booklet`: end-to-end time of an `abstract_booklet` task for a generated
//! event, from the first byte of the submit to the `completed` event that
//! carries the link; the median of several runs on one connection.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::ws::{self, Ended};
use crate::{BenchError, summary};

#[derive(Debug, Clone)]
pub struct BookletArgs {
    pub url: String,
    pub key: String,
    pub contributions: usize,
    pub runs: usize,
    pub seed: u64,
    pub timeout: Duration,
}

pub async fn run(args: BookletArgs) -> Result<Value, BenchError> {
    let generated = Instant::now();
    // `{"event": ..., "settings": ...}`, the task input; the seed picks the
    // shape (seed % 3: Indico export, its envelope, the plugin shape).
    let input = taskwire::booklet::generate::event(args.seed, args.contributions);
    let input_json = input.to_string();
    let generate_s = generated.elapsed().as_secs_f64();
    let submit = format!(
        "{{\"type\":\"submit\",\"ref\":\"one\",\"task\":\"abstract_booklet\",\"input\":{input_json}}}"
    );

    let deadline = Instant::now() + args.timeout;
    let client = ws::client(&args.url, &args.key)?;
    let mut socket = ws::connect(&client, None).await?;
    let mut seconds = Vec::with_capacity(args.runs);
    let mut failures = 0usize;
    let mut first_error = None;
    let mut file = Value::Null;
    let mut result = Value::Null;
    for _ in 0..args.runs {
        let start = Instant::now();
        let ended = ws::run_one(&mut socket, submit.clone(), deadline)
            .await
            .map_err(|e| {
                BenchError::new(format!(
                    "{} (the submit was {} bytes: is it over the server's max_message_bytes?)",
                    e.0,
                    submit.len()
                ))
            })?;
        match ended {
            Ended::Completed(event) => {
                seconds.push(start.elapsed().as_secs_f64());
                file = json!({
                    "name": event["files"][0]["name"],
                    "size": event["files"][0]["size"],
                    "has_link": event["files"][0]["url"].is_string(),
                });
                result = json!({
                    "contributions": event["result"]["contributions"],
                    "sessions": event["result"]["sessions"],
                });
            }
            Ended::NotCompleted(why) => {
                failures += 1;
                first_error.get_or_insert(why);
            }
        }
    }
    let _ = socket.close().await;
    Ok(json!({
        "mode": "booklet",
        "contributions": args.contributions,
        "generator": "taskwire::booklet::generate::event",
        "seed": args.seed,
        "input_bytes": input_json.len(),
        "generate_s": generate_s,
        "runs": args.runs,
        "completed": seconds.len(),
        "failures": failures,
        "first_error": first_error,
        "seconds": summary(&seconds),
        "file": file,
        "result": result,
    }))
}
