//! Submits a task and prints its events until it ends.
//!
//! ```sh
//! taskwire serve                       # prints a demo key
//! TASKWIRE_KEY=tw_... cargo run -p taskwire-client --example submit -- sleep '{"ms":2000,"steps":4}'
//! ```
//!
//! `TASKWIRE_URL` defaults to `http://127.0.0.1:8080`. The session
//! reconnects by itself: stop and start a proxy in between and the events
//! go on where they stopped.

use taskwire_client::{Client, EventKind, Submit};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "echo".to_owned());
    let input = args.next().unwrap_or_else(|| "{}".to_owned());
    let url = std::env::var("TASKWIRE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let key = std::env::var("TASKWIRE_KEY")?;

    let client = Client::new(&url, key)?;
    let session = client.connect().await?;
    let mut task = session.submit(Submit::json(task, input)?).await?;
    eprintln!("task {} (position {})", task.id(), task.position());
    while let Some(event) = task.events().next().await {
        let event = event?;
        match &event.kind {
            EventKind::Progress {
                progress, message, ..
            } => eprintln!(
                "{:>3}% {}",
                progress.map_or(0.0, |p| p * 100.0),
                message.as_deref().unwrap_or("")
            ),
            EventKind::Completed { result, files, .. } => {
                eprintln!("completed: {result}");
                for file in files {
                    eprintln!("  {} ({} bytes): {}", file.name, file.size, file.url);
                }
            }
            EventKind::Failed { error } => {
                eprintln!("failed: {}: {}", error.code.as_str(), error.message)
            }
            EventKind::Question(question) => {
                eprintln!(
                    "the task asks: {} (answering with its first choice)",
                    question.prompt
                );
                if let Some(choice) = question.choices.as_ref().and_then(|c| c.first()) {
                    task.answer(&question.question_id, &choice.value).await?;
                }
            }
            other => eprintln!("{}", other.name()),
        }
    }
    session.close().await;
    Ok(())
}
