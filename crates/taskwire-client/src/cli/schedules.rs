//! `schedules`: list them; `run`, `pause`, `resume` one (admin).

use clap::{Args, Subcommand};

use super::output::Out;
use super::{Failure, Target, exit};

#[derive(Args, Debug)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Runs a schedule now (also while paused); prints the task id.
    Run {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Pauses a schedule (its timer stops; `run` still works).
    Pause {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Resumes a paused schedule.
    Resume {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(args: SchedulesArgs) -> Result<u8, Failure> {
    match args.action {
        None => list(&args.target).await,
        Some(Action::Run { name, target }) => {
            let out = Out::new(target.json);
            let started = target.client()?.run_schedule(&name).await?;
            if out.json {
                out.json(&started);
            } else {
                out.line(started.task_id.as_str());
            }
            Ok(exit::COMPLETED)
        }
        Some(Action::Pause { name, target }) => pause(&name, &target, true).await,
        Some(Action::Resume { name, target }) => pause(&name, &target, false).await,
    }
}

async fn pause(name: &str, target: &Target, paused: bool) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let schedule = target.client()?.pause_schedule(name, paused).await?;
    if out.json {
        out.json(&schedule);
    } else {
        let state = if schedule.paused { "paused" } else { "resumed" };
        out.line(&format!("{state} {}", schedule.name));
    }
    Ok(exit::COMPLETED)
}

async fn list(target: &Target) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let schedules = target.client()?.schedules().await?;
    if out.json {
        for schedule in &schedules {
            out.json(schedule);
        }
        return Ok(exit::COMPLETED);
    }
    out.line(&format!(
        "{:<20}  {:<16}  {:<7}  {:<24}  {:<10}  {}",
        "NAME", "TASK", "PAUSED", "NEXT RUN", "LAST", "WHEN / LAST ERROR"
    ));
    for s in &schedules {
        let last = s.runs.first();
        let detail = last
            .and_then(|r| r.error.as_ref())
            .map(|e| format!("{}: {}", e.code.as_str(), e.message))
            .or_else(|| last.and_then(|r| r.note.clone()))
            .unwrap_or_else(|| s.when.clone());
        out.line(&format!(
            "{:<20}  {:<16}  {:<7}  {:<24}  {:<10}  {}",
            s.name,
            s.task,
            if s.paused { "yes" } else { "no" },
            s.next_run_at.as_deref().unwrap_or("-"),
            last.map_or("-", |r| r.state.as_str()),
            detail
        ));
    }
    Ok(exit::COMPLETED)
}
