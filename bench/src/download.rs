//! `download`: one `blob` task of `--size` bytes, then its file link
//! fetched K times; throughput per fetch.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{self, Origin};
use crate::ws::{self, Ended};
use crate::{BenchError, summary};

/// Read size per `read` call.
const BUFFER: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct DownloadArgs {
    pub url: String,
    pub key: String,
    pub size: u64,
    pub count: usize,
    pub timeout: Duration,
}

pub async fn run(args: DownloadArgs) -> Result<Value, BenchError> {
    let origin = Origin::parse(&args.url)?;
    let deadline = Instant::now() + args.timeout;
    let client = ws::client(&origin.ws_url(), &args.key)?;
    let mut socket = ws::connect(&client, None).await?;
    let submit = json!({
        "type": "submit",
        "ref": "one",
        "task": "blob",
        "input": {"size": args.size, "name": "blob.bin"},
    })
    .to_string();
    let made = Instant::now();
    let completed = match ws::run_one(&mut socket, submit, deadline).await? {
        Ended::Completed(event) => event,
        Ended::NotCompleted(why) => return Err(BenchError::new(format!("blob task: {why}"))),
    };
    let blob_s = made.elapsed().as_secs_f64();
    let _ = socket.close().await;
    let url = completed["files"][0]["url"]
        .as_str()
        .ok_or_else(|| BenchError::new("the blob task completed without a file"))?;
    // The link is a path, or absolute when the server has a public_url.
    let path = match url.find("/files/") {
        Some(i) => url[i..].to_owned(),
        None => return Err(BenchError::new(format!("unexpected file link {url}"))),
    };

    let mut buffer = vec![0u8; BUFFER];
    let mut rates = Vec::with_capacity(args.count);
    let mut seconds = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let start = Instant::now();
        let fetched = tokio::time::timeout_at(deadline, http::get(&origin, &path, &mut buffer))
            .await
            .map_err(|_| BenchError::new("download timed out"))??;
        let elapsed = start.elapsed().as_secs_f64();
        if fetched.status != 200 || fetched.body_bytes != args.size {
            return Err(BenchError::new(format!(
                "download: HTTP {}, {} of {} bytes (content-length {:?})",
                fetched.status, fetched.body_bytes, args.size, fetched.content_length
            )));
        }
        seconds.push(elapsed);
        rates.push(args.size as f64 / elapsed / 1e6);
    }
    Ok(json!({
        "mode": "download",
        "size_bytes": args.size,
        "count": args.count,
        "blob_task_s": blob_s,
        "seconds": summary(&seconds),
        "mb_per_s": summary(&rates),
        "gb_per_s_median": summary(&rates)["median"].as_f64().map(|mb| mb / 1000.0),
    }))
}
