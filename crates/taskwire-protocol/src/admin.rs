//! The monitoring extension's messages and REST bodies (`docs/protocol.md`
//! §12): what admin keys see of every task and every worker.

use std::collections::BTreeMap;

use serde::Serialize;

use super::WireError;

/// A task as the monitoring page shows it.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub task_id: &'a str,
    pub task: &'a str,
    pub client: &'a str,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// The open question's prompt, while the task waits for an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Connections following the task now.
    pub subscribers: u64,
    /// The schedule that submitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<&'a str>,
}

/// A worker (an executor: a built-in slot, a managed or a remote worker).
#[derive(Debug, Serialize)]
pub struct Worker<'a> {
    pub id: String,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    /// `builtin`, `managed` or `remote`.
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<&'a str>,
    pub tasks: Vec<&'a str>,
    pub slots: u64,
    pub busy: u64,
    pub running: Vec<String>,
    /// `starting`, `ready`, `draining` or `gone`.
    pub state: &'a str,
    pub connected_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<String>,
    pub done: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
}

/// Per task name: `{completed, failed, cancelled}`.
#[derive(Debug, Serialize)]
pub struct Outcomes {
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// The counters.
#[derive(Debug, Serialize)]
pub struct Stats<'a> {
    pub workers: u64,
    pub workers_busy: u64,
    pub queued: u64,
    pub running: u64,
    pub connections: u64,
    pub tasks: BTreeMap<&'a str, Outcomes>,
}

/// Admin messages on the WebSocket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AdminMessage<'a> {
    Watching {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        tasks: Vec<Summary<'a>>,
        workers: Vec<Worker<'a>>,
        stats: Stats<'a>,
    },
    TaskUpdate {
        task: Summary<'a>,
    },
    WorkerUpdate {
        worker: Worker<'a>,
    },
    Stats {
        stats: Stats<'a>,
    },
}

/// `GET /v1/admin/tasks`.
#[derive(Debug, Serialize)]
pub struct AdminTasks<'a> {
    pub tasks: Vec<Summary<'a>>,
    pub stats: Stats<'a>,
}

/// `GET /v1/admin/workers`.
#[derive(Debug, Serialize)]
pub struct AdminWorkers<'a> {
    pub workers: Vec<Worker<'a>>,
}
