//! Admin REST for schedules: list, run now, pause, resume.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::caller::Admin;
use super::encode::rfc3339;
use super::error::failure_code;
use super::{ApiError, AppState};
use crate::protocol::WireError;
use crate::protocol::schedules::{Run, RunStarted, Schedule, ScheduleList};
use crate::schedules::{Overlap, ScheduleError, ScheduleView};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list))
        .route("/v1/schedules/{name}/run", post(run_now))
        .route("/v1/schedules/{name}/pause", post(pause))
        .route("/v1/schedules/{name}/resume", post(resume))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl From<ScheduleError> for ApiError {
    fn from(error: ScheduleError) -> ApiError {
        match error {
            ScheduleError::NotFound(_) => ApiError::NoSuchThing("no such schedule"),
            ScheduleError::Refused(why) => {
                ApiError::BadMessage(format!("the run was refused: {why}"))
            }
            ScheduleError::Stopped => ApiError::ShuttingDown,
        }
    }
}

fn schedule(view: &ScheduleView) -> Schedule<'_> {
    Schedule {
        name: &view.name,
        task: &view.task,
        when: &view.when,
        overlap: match view.overlap {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        },
        paused: view.paused,
        next_run_at: view.next_at.map(rfc3339),
        runs: view
            .runs
            .iter()
            .map(|run| Run {
                occurrence: rfc3339(run.occurrence),
                trigger: run.trigger.as_str(),
                task_id: run.task_id.map(|id| id.to_string()),
                state: run.state.as_str(),
                started_at: run.started_at.map(rfc3339),
                finished_at: run.finished_at.map(rfc3339),
                duration_ms: run
                    .started_at
                    .zip(run.finished_at)
                    .and_then(|(s, f)| f.duration_since(s).ok())
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                error: run.failure.as_ref().map(|f| {
                    let mut error = WireError::new(failure_code(f.kind), f.message.clone());
                    error.details.clone_from(&f.details);
                    error
                }),
                note: run.note.as_deref(),
            })
            .collect(),
    }
}

async fn list(State(state): State<AppState>, _: Admin) -> Response {
    let views = state.schedules.list().await;
    let body = ScheduleList {
        schedules: views.iter().map(schedule).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

async fn run_now(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let task_id = state.schedules.run_now(&name).await?;
    let id = task_id.hex();
    let base = state.links.public_url.as_deref().unwrap_or("");
    let body = RunStarted {
        schedule: &name,
        task_id: id.as_str(),
        status_url: format!("{base}/v1/tasks/{}", id.as_str()),
    };
    Ok(json(
        StatusCode::ACCEPTED,
        serde_json::to_string(&body).unwrap_or_default(),
    ))
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> Result<Response, ApiError> {
    let view = state.schedules.pause(name, paused).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::to_string(&schedule(&view)).unwrap_or_default(),
    ))
}

async fn pause(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &name, true).await
}

async fn resume(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&state, &name, false).await
}
