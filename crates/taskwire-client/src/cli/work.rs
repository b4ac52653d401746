//! `submit`, `status`, `events`, `cancel`, `answer`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::output::{Out, Progress};
use super::{DeliveryArg, Failure, PriorityArg, Target, exit};
use crate::{Client, Delivery, Event, EventKind, Priority, Session, Submit, TaskEvents, TaskId};

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The task's name (`echo`, `sleep`, `blob`, `abstract_booklet`, ...).
    pub task: String,
    /// The input: JSON text, `@FILE` to read it from a file, `-` to read
    /// stdin. Default `{}`.
    pub input: Option<String>,
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Seconds the task may run once started (capped by the server).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// A repeat submit with this key returns the first task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Tasks sharing this key never run at the same time.
    #[arg(long)]
    pub concurrency_key: Option<String>,
    #[arg(long, value_enum)]
    pub delivery: Option<DeliveryArg>,
    /// Cancel the task if this command's connection closes.
    #[arg(long)]
    pub cancel_on_disconnect: bool,
    /// `false`: the task may not ask questions (each gets its default).
    #[arg(long, value_name = "BOOL")]
    pub interactive: Option<bool>,
    /// Wait for the task to end; print its result.
    #[arg(long)]
    pub wait: bool,
    /// Print every event until the task ends.
    #[arg(long)]
    pub follow: bool,
    /// Wait, then download the task's files into DIR (sha256 checked).
    #[arg(long, value_name = "DIR")]
    pub download: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

fn read_input(input: Option<&str>) -> Result<String, Failure> {
    match input {
        None => Ok("{}".to_owned()),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("cannot read the input from stdin: {e}")))?;
            Ok(text)
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read the input file {path}: {e}"))),
            None => Ok(arg.to_owned()),
        },
    }
}

fn build(args: &SubmitArgs) -> Result<Submit, Failure> {
    let input = read_input(args.input.as_deref())?;
    let mut submit = Submit::json(args.task.clone(), input)?;
    if let Some(priority) = args.priority {
        submit = submit.priority(match priority {
            PriorityArg::High => Priority::High,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::Low => Priority::Low,
        });
    }
    if let Some(seconds) = args.timeout {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(Failure::usage(
                "--timeout must be a positive number of seconds",
            ));
        }
        submit = submit.timeout(Duration::from_secs_f64(seconds));
    }
    if let Some(key) = &args.idempotency_key {
        submit = submit.idempotency_key(key.clone());
    }
    if let Some(key) = &args.concurrency_key {
        submit = submit.concurrency_key(key.clone());
    }
    if let Some(delivery) = args.delivery {
        submit = submit.delivery(match delivery {
            DeliveryArg::Link => Delivery::Link,
            DeliveryArg::Stream => Delivery::Stream,
        });
    }
    if args.cancel_on_disconnect {
        submit = submit.cancel_on_disconnect(true);
    }
    if let Some(yes) = args.interactive {
        submit = submit.interactive(yes);
    }
    Ok(submit)
}

pub(crate) async fn submit(args: SubmitArgs) -> Result<u8, Failure> {
    let submit = build(&args)?;
    let out = Out::new(args.target.json);
    let client = args.target.client()?;
    if let Some(dir) = &args.download {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    let session = client.connect().await?;
    let task = session.submit(submit).await?;
    let waits = args.wait || args.follow || args.download.is_some();
    let mut events = task.into_events();
    if !waits {
        // `accepted` is already here; printing it is all that is asked.
        let accepted = next_event(&mut events).await?;
        if out.json {
            out.json(&accepted);
        } else {
            out.line(accepted.task_id.as_str());
        }
        session.close().await;
        return Ok(exit::COMPLETED);
    }
    let end = follow(&mut events, &out, args.follow, Some(&session)).await?;
    session.close().await;
    finish(&client, &end, &out, args.follow, args.download.as_ref()).await
}

async fn next_event(events: &mut TaskEvents) -> Result<Event, Failure> {
    match events.next().await {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(e.into()),
        None => Err(Failure {
            code: exit::CONNECTION,
            message: "the events ended before the task did".to_owned(),
        }),
    }
}

/// Reads to the terminal event, printing each event when `print`. A
/// question is asked on the terminal when there is one (and answered
/// through `session`); otherwise a line on stderr says how to answer.
async fn follow(
    events: &mut TaskEvents,
    out: &Out,
    print: bool,
    session: Option<&Session>,
) -> Result<Event, Failure> {
    let progress: Progress = out.progress();
    loop {
        let event = match next_event(events).await {
            Ok(event) => event,
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        };
        progress.update(&event);
        if print {
            if out.json {
                progress.println(out, &serde_json::to_string(&event).unwrap_or_default());
            } else {
                progress.println(out, &super::output::describe(&event));
            }
        }
        if let EventKind::Question(question) = &event.kind {
            let asks = session.filter(|_| !out.json && std::io::stdin().is_terminal());
            match asks {
                Some(session) => {
                    // Off the runtime: the session keeps reading meanwhile.
                    progress.pause();
                    let asked = (**question).clone();
                    let value = tokio::task::spawn_blocking(move || prompt(&asked))
                        .await
                        .ok()
                        .flatten();
                    progress.resume(out);
                    if let Some(value) = value
                        && let Err(e) = session
                            .answer(&event.task_id, &question.question_id, &value)
                            .await
                    {
                        progress.println(out, &format!("taskwire: the answer was refused: {e}"));
                    }
                }
                None => eprintln!(
                    "taskwire: the task asks ({}): {} -- answer with: taskwire answer {} {} VALUE",
                    question.question_id, question.prompt, event.task_id, question.question_id
                ),
            }
        }
        if event.is_terminal() {
            progress.finish();
            return Ok(event);
        }
    }
}

/// Prints the outcome (unless the events were printed), downloads the
/// files, and picks the exit code.
async fn finish(
    client: &Client,
    end: &Event,
    out: &Out,
    printed: bool,
    download: Option<&PathBuf>,
) -> Result<u8, Failure> {
    match &end.kind {
        EventKind::Completed { result, files, .. } => {
            if !printed {
                if out.json {
                    out.json(end);
                } else if download.is_none() {
                    out.line(result.get());
                }
            }
            if let Some(dir) = download {
                for file in files {
                    let path = client.download(file, dir).await?;
                    if out.json {
                        out.json(&json!({
                            "type": "downloaded",
                            "name": file.name,
                            "path": path,
                            "size": file.size,
                            "sha256": file.sha256,
                        }));
                    } else {
                        out.line(&path.display().to_string());
                    }
                }
            }
            Ok(exit::COMPLETED)
        }
        EventKind::Failed { error } => {
            if !printed && out.json {
                out.json(end);
            }
            eprintln!(
                "taskwire: the task failed: {}: {}",
                error.code.as_str(),
                error.message
            );
            Ok(exit::FAILED)
        }
        EventKind::Cancelled { reason } => {
            if !printed && out.json {
                out.json(end);
            }
            eprintln!("taskwire: the task was cancelled ({reason})");
            Ok(exit::CANCELLED)
        }
        _ => Err(Failure::quiet(exit::CONNECTION)),
    }
}

pub(crate) async fn status(id: &str, target: &Target) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let client = target.client()?;
    let snapshot = client.status(&TaskId::from(id)).await?;
    if out.json {
        out.json(&snapshot);
        return Ok(exit::COMPLETED);
    }
    let mut lines = vec![
        ("task_id", snapshot.task_id.to_string()),
        ("task", snapshot.task.clone()),
        ("state", snapshot.state.clone()),
    ];
    if let Some(position) = snapshot.position {
        lines.push(("position", position.to_string()));
    }
    if let Some(progress) = snapshot.progress {
        lines.push(("progress", format!("{:.0}%", progress * 100.0)));
    }
    if let Some(message) = &snapshot.message {
        lines.push(("message", message.clone()));
    }
    lines.push(("created_at", snapshot.created_at.clone()));
    if let Some(at) = &snapshot.started_at {
        lines.push(("started_at", at.clone()));
    }
    if let Some(at) = &snapshot.finished_at {
        lines.push(("finished_at", at.clone()));
    }
    if let Some(result) = &snapshot.result {
        lines.push(("result", result.get().to_owned()));
    }
    if let Some(error) = &snapshot.error {
        lines.push((
            "error",
            format!("{}: {}", error.code.as_str(), error.message),
        ));
    }
    for file in snapshot.files.iter().flatten() {
        lines.push((
            "file",
            format!(
                "{} {} bytes sha256={} {}",
                file.name, file.size, file.sha256, file.url
            ),
        ));
    }
    lines.push(("last_seq", snapshot.last_seq.to_string()));
    for (name, value) in lines {
        out.line(&format!("{name:<12}{value}"));
    }
    Ok(exit::COMPLETED)
}

pub(crate) async fn events(id: &str, after: u64, target: &Target) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let client = target.client()?;
    let session = client.connect().await?;
    let mut events = session.follow(&TaskId::from(id), after).await?;
    let end = follow(&mut events, &out, true, Some(&session)).await;
    session.close().await;
    finish(&client, &end?, &out, true, None).await
}

pub(crate) async fn cancel(id: &str, target: &Target) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let client = target.client()?;
    let task_id = TaskId::from(id);
    client.cancel(&task_id).await?;
    if out.json {
        out.json(&json!({"task_id": task_id, "state": "cancelled"}));
    } else {
        out.line(&format!("cancelled {task_id}"));
    }
    Ok(exit::COMPLETED)
}

pub(crate) async fn answer(
    id: &str,
    question_id: &str,
    value: &str,
    target: &Target,
) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let client = target.client()?;
    let value = answer_value(value);
    let task_id = TaskId::from(id);
    let reply = client.answer(&task_id, question_id, &value).await?;
    if out.json {
        out.json(&reply);
    } else {
        out.line(&format!("{} {question_id} of {task_id}", reply.outcome));
    }
    Ok(exit::COMPLETED)
}

/// Asks a question on the terminal; `None` when stdin ends.
fn prompt(question: &crate::Question) -> Option<serde_json::Value> {
    eprintln!("The task asks: {}", question.prompt);
    if let Some(choices) = &question.choices {
        for choice in choices {
            match &choice.label {
                Some(label) => eprintln!("  {}  ({label})", choice.value.get()),
                None => eprintln!("  {}", choice.value.get()),
            }
        }
    }
    if let Some(default) = &question.default {
        eprintln!("(default {}, by {})", default.get(), question.expires_at);
    }
    eprint!("answer> ");
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(answer_value(line.trim())),
    }
}

/// JSON when it is JSON, else the text as a string (`yes` → `"yes"`).
fn answer_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}
