//! External workers: processes that run tasks for the server, speaking the
//! worker protocol (`docs/protocol.md` Part II), either started and
//! supervised by `taskwire serve` (managed, over stdio) or dialling in to
//! `GET /v1/worker` (remote, over a WebSocket; `server/worker_ws.rs`).
//!
//! - [`session`]: one worker's protocol as a state machine without IO.
//! - [`stdio`]: drives a session over a child's stdin/stdout.
//! - [`supervisor`]: the `[[workers]]` groups: spawn, watch, restart,
//!   recycle, drain, kill.
//! - [`board`]: what the monitoring page and `/metrics` show of workers.
//! - [`config`]: the `[[workers]]` and `[[tasks]]` sections and knobs.
//! - [`schema`]: JSON Schemas of declared tasks, compiled.
//!
//! **Architecture Invariant:** workers reach the scheduler only through
//! `exec` (an `ExecutorSpec` registered, `Order`s in, `Report`s out); they
//! never see a client, a key or another worker's attempts.

pub mod board;
pub mod config;
pub mod driver;
pub mod remote;
pub mod schema;
pub mod session;
pub mod uploads;

use crate::exec::{ExecutorSpec, RegisterError, Registration};
use crate::scheduler::Scheduler;

/// Registers a worker with the scheduler.
pub async fn register(
    scheduler: &Scheduler,
    spec: ExecutorSpec,
) -> Result<Registration, RegisterError> {
    scheduler.register(spec).await
}
pub mod stdio;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::artifacts::Artifacts;
use crate::config::Config;
use crate::exec::TaskDecl;
use crate::telemetry::Metrics;

use self::board::Board;
use self::config::{GroupConfig, WorkersConfig};
use self::uploads::Uploads;

/// What every worker session needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: WorkersConfig,
    declared: Arc<HashMap<Arc<str>, TaskDecl>>,
    scheduler: Scheduler,
    artifacts: Artifacts,
    board: Board,
    uploads: Uploads,
    parking: remote::Parking,
    /// `public_url` without a trailing slash, or empty.
    public_url: String,
    max_message_bytes: usize,
    max_file_bytes: u64,
    shutdown_grace: Duration,
    hello_timeout_remote: Duration,
}

impl Workers {
    pub fn new(
        config: &Config,
        scheduler: Scheduler,
        artifacts: Artifacts,
        metrics: Metrics,
    ) -> Workers {
        let declared = config
            .workers
            .tasks
            .iter()
            .map(|t| (Arc::clone(&t.name), t.clone()))
            .collect();
        Workers {
            inner: Arc::new(Inner {
                config: config.workers.clone(),
                declared: Arc::new(declared),
                scheduler,
                artifacts,
                board: Board::new(metrics, config.limits.workers),
                uploads: Uploads::default(),
                parking: remote::Parking::default(),
                public_url: config.files.public_url.clone().unwrap_or_default(),
                max_message_bytes: config.limits.max_message_bytes,
                // A file cannot be larger than the whole temporary area.
                max_file_bytes: config.files.max_temp_bytes,
                shutdown_grace: config.limits.shutdown_grace,
                hello_timeout_remote: config.security.auth_timeout,
            }),
        }
    }

    pub fn config(&self) -> &WorkersConfig {
        &self.inner.config
    }

    pub fn board(&self) -> &Board {
        &self.inner.board
    }

    pub fn uploads(&self) -> &Uploads {
        &self.inner.uploads
    }

    pub fn parking(&self) -> &remote::Parking {
        &self.inner.parking
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.inner.artifacts
    }

    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    pub fn max_file_bytes(&self) -> u64 {
        self.inner.max_file_bytes
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.inner.shutdown_grace
    }

    /// A session's settings: a managed group's, or a remote worker's.
    pub fn settings(&self, group: Option<&GroupConfig>) -> session::Settings {
        let c = &self.inner.config;
        session::Settings {
            heartbeat_interval: c.heartbeat_interval,
            heartbeat_timeout: c.heartbeat_timeout,
            hello_timeout: group.map_or(self.inner.hello_timeout_remote, |g| g.startup_timeout),
            reconnect_grace: if group.is_some() {
                Duration::ZERO
            } else {
                c.reconnect_grace
            },
            max_violations: c.max_worker_violations,
            max_message_bytes: self.inner.max_message_bytes as u64,
            max_file_bytes: self.inner.max_file_bytes,
            task_filter: group.and_then(|g| g.tasks.clone()),
            declared: Arc::clone(&self.inner.declared),
        }
    }
}
