//! `GET /v1/schedules` and friends (`docs/protocol.md` §12).

use serde::Serialize;

use super::WireError;

/// One schedule.
#[derive(Debug, Serialize)]
pub struct Schedule<'a> {
    pub name: &'a str,
    pub task: &'a str,
    /// `cron <expression> (<zone>)` or `every <period>`.
    pub when: &'a str,
    /// `skip` or `queue`.
    pub overlap: &'a str,
    pub paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// The newest first.
    pub runs: Vec<Run<'a>>,
}

/// One run of a schedule.
#[derive(Debug, Serialize)]
pub struct Run<'a> {
    pub occurrence: String,
    /// `timer`, `manual` or `catch_up`.
    pub trigger: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `queued`, `running`, `waiting`, `completed`, `failed`, `cancelled`,
    /// `skipped` or `refused`.
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
}

/// `GET /v1/schedules`.
#[derive(Debug, Serialize)]
pub struct ScheduleList<'a> {
    pub schedules: Vec<Schedule<'a>>,
}

/// `POST /v1/schedules/{name}/run` (`202`).
#[derive(Debug, Serialize)]
pub struct RunStarted<'a> {
    pub schedule: &'a str,
    pub task_id: &'a str,
    pub status_url: String,
}
