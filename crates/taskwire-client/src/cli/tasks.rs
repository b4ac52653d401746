//! `tasks`: the admin list (`GET /v1/admin/tasks`), filtered here.

use clap::{Args, ValueEnum};

use super::output::Out;
use super::{Failure, Target, exit};
use crate::Summary;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateArg {
    Queued,
    Running,
    /// Running, waiting for an answer to its question.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl StateArg {
    fn as_str(self) -> &'static str {
        match self {
            StateArg::Queued => "queued",
            StateArg::Running => "running",
            StateArg::Waiting => "waiting",
            StateArg::Completed => "completed",
            StateArg::Failed => "failed",
            StateArg::Cancelled => "cancelled",
        }
    }
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Only tasks in this state (repeatable).
    #[arg(long, value_enum)]
    pub state: Vec<StateArg>,
    /// Only tasks of this name (`sleep`, `abstract_booklet`, ...).
    #[arg(long)]
    pub task: Option<String>,
    /// Only tasks submitted with this key name.
    #[arg(long)]
    pub client: Option<String>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub target: Target,
}

impl TasksArgs {
    fn keeps(&self, task: &Summary) -> bool {
        (self.state.is_empty() || self.state.iter().any(|s| s.as_str() == task.state))
            && self.task.as_ref().is_none_or(|name| *name == task.task)
            && self.client.as_ref().is_none_or(|name| *name == task.client)
    }
}

pub(crate) async fn run(args: TasksArgs) -> Result<u8, Failure> {
    let out = Out::new(args.target.json);
    let client = args.target.client()?;
    let list = client.admin_tasks().await?;
    let rows: Vec<&Summary> = list
        .tasks
        .iter()
        .filter(|t| args.keeps(t))
        .take(args.limit.unwrap_or(usize::MAX))
        .collect();
    if out.json {
        for task in rows {
            out.json(task);
        }
        return Ok(exit::COMPLETED);
    }
    out.line(&format!(
        "{:<32}  {:<16}  {:<12}  {:<9}  {:>8}  {}",
        "TASK_ID", "TASK", "CLIENT", "STATE", "PROGRESS", "DETAIL"
    ));
    for task in rows {
        out.line(&format!(
            "{:<32}  {:<16}  {:<12}  {:<9}  {:>8}  {}",
            task.task_id,
            task.task,
            task.client,
            task.state,
            task.progress
                .map(|p| format!("{:.0}%", p * 100.0))
                .unwrap_or_default(),
            detail(task)
        ));
    }
    Ok(exit::COMPLETED)
}

/// What a person wants to know next: why it failed, where it waits.
pub(crate) fn detail(task: &Summary) -> String {
    if let Some(error) = &task.error {
        return format!("{}: {}", error.code.as_str(), error.message);
    }
    if let Some(reason) = &task.reason {
        return format!("cancelled ({reason})");
    }
    if let Some(position) = task.position {
        return format!("position {position}");
    }
    if let Some(question) = &task.question {
        return format!("asks: {question}");
    }
    let mut parts = Vec::new();
    if let Some(worker) = &task.worker {
        parts.push(worker.clone());
    }
    if let Some(message) = &task.message {
        parts.push(message.clone());
    }
    if let Some(ms) = task.duration_ms {
        parts.push(format!("{ms} ms"));
    }
    parts.join("  ")
}
