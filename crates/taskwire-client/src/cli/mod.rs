//! The `taskwire` command line's client side (feature `cli`): `submit`,
//! `status`, `events`, `cancel`, `answer`, `tasks`, `top`.
//!
//! The main binary flattens [`Command`] into its own subcommands and calls
//! [`run`]. Every subcommand takes the server's URL and key from
//! `--url`/`--key` or `TASKWIRE_URL`/`TASKWIRE_KEY`; the key is never
//! printed, not even in `--help` or an error.
//!
//! Output: human lines and a progress bar (on stderr) on a terminal, plain
//! lines when piped, one JSON object per line with `--json`. Exit codes
//! are [`exit`]'s.

mod nodes;
mod output;
mod schedules;
mod tasks;
mod top;
mod work;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::{Client, Error};

/// Exit codes of the client subcommands.
pub mod exit {
    /// The command worked; with `--wait`/`events`: the task completed.
    pub const COMPLETED: u8 = 0;
    /// The task failed (`failed` event).
    pub const FAILED: u8 = 1;
    /// Bad usage: unknown flag, bad JSON, missing key (clap's own code).
    pub const USAGE: u8 = 2;
    /// The task was cancelled.
    pub const CANCELLED: u8 = 3;
    /// The server could not be reached, or the connection was lost for good.
    pub const CONNECTION: u8 = 4;
    /// The server refused: a protocol error (`rejected`, `not_found`,
    /// `unauthorized`, `already_finished`, ...), or a download whose
    /// checksum did not match.
    pub const REFUSED: u8 = 5;
}

/// Where the server is and how to talk to it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The server's base URL.
    #[arg(long, env = "TASKWIRE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The API key (prefer the environment variable: a flag shows in `ps`).
    #[arg(long, env = "TASKWIRE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// One JSON object per line on stdout.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    fn client(&self) -> Result<Client, Failure> {
        let key = self
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Failure::usage("no API key: set TASKWIRE_KEY (or pass --key)"))?;
        Client::builder(&self.url, key)
            .build()
            .map_err(Failure::from)
    }
}

/// The client subcommands of `taskwire`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submits a task; prints its id, or with --wait/--follow its result or events.
    Submit(work::SubmitArgs),
    /// Prints a task's status snapshot.
    Status {
        /// The task id.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Prints a task's events until it ends (resumes after a reconnect).
    Events {
        id: String,
        /// Only events after this seq (as after a reconnect).
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Cancels a task.
    Cancel {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Answers a task's question (VALUE is JSON; other text is sent as a string).
    Answer {
        id: String,
        /// The question's id (from its `question` event).
        question_id: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Admin: lists queued, running and recently finished tasks.
    Tasks(tasks::TasksArgs),
    /// Admin: lists schedules; `schedules run NAME` runs one now.
    Schedules(schedules::SchedulesArgs),
    /// Admin: lists the cluster's nodes (up, draining, gone) and their slots.
    Nodes {
        #[command(flatten)]
        target: Target,
    },
    /// Admin: a live view of running, queued and failed tasks and the workers.
    Top {
        /// Finished tasks shown (most recent first).
        #[arg(long, default_value_t = 20)]
        recent: usize,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorityArg {
    High,
    Normal,
    Low,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryArg {
    Link,
    Stream,
}

/// Why a subcommand stopped, and its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    /// Ends with this code without another message (the output said it).
    pub(crate) fn quiet(code: u8) -> Failure {
        Failure {
            code,
            message: String::new(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = if e.is_usage() {
            exit::USAGE
        } else if e.is_connect() || e.is_timeout() || e.is_closed() || e.is_decode() {
            exit::CONNECTION
        } else {
            exit::REFUSED
        };
        // The whole chain: the transport's own error hides its cause.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e).and_then(std::error::Error::source);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Failure { code, message }
    }
}

/// Runs one client subcommand to its exit code.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("taskwire: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::Submit(args) => work::submit(args).await,
            Command::Status { id, target } => work::status(&id, &target).await,
            Command::Events { id, after, target } => work::events(&id, after, &target).await,
            Command::Cancel { id, target } => work::cancel(&id, &target).await,
            Command::Answer {
                id,
                question_id,
                value,
                target,
            } => work::answer(&id, &question_id, &value, &target).await,
            Command::Tasks(args) => tasks::run(args).await,
            Command::Schedules(args) => schedules::run(args).await,
            Command::Nodes { target } => nodes::run(&target).await,
            Command::Top { recent, target } => top::run(&target, recent).await,
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("taskwire: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}
