//! Runs a task over REST, waits for it with Server-Sent Events, and
//! downloads its files into a directory (each checked against its sha256).
//!
//! ```sh
//! TASKWIRE_KEY=tw_... cargo run -p taskwire-client --example download -- out/
//! ```

use std::path::PathBuf;

use taskwire_client::{Client, EventKind, Submit};

#[tokio::main(flavor = "current_thread")]
#[allow(clippy::print_stdout, reason = "an example prints what it downloaded")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".to_owned()));
    let url = std::env::var("TASKWIRE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let client = Client::new(&url, std::env::var("TASKWIRE_KEY")?)?;

    // `blob` writes one file of deterministic bytes.
    let input = serde_json::json!({"size": 1_000_000, "name": "blob.bin"});
    let submitted = client.submit(&Submit::new("blob", &input)?).await?;
    let mut events = client.events(&submitted.task_id, 0);
    while let Some(event) = events.next().await {
        if let EventKind::Completed { files, .. } = event?.kind {
            std::fs::create_dir_all(&dir)?;
            for file in &files {
                let path = client.download(file, &dir).await?;
                println!(
                    "{} ({} bytes, sha256 {})",
                    path.display(),
                    file.size,
                    file.sha256
                );
            }
        }
    }
    Ok(())
}
