//! The worker sections of the configuration: `[[workers]]` (managed worker
//! groups), `[[tasks]]` (task names declared ahead of any worker) and the
//! worker knobs of `docs/protocol.md` Part II. `config.rs` reads the file
//! and calls [`resolve`]; every problem is reported with the key it is
//! about, like the rest of the configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::exec::TaskDecl;
use crate::protocol::worker::check_name;

/// A `[[workers]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileGroup {
    name: String,
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    instances: Option<u64>,
    startup_timeout_s: Option<u64>,
    max_tasks: Option<u64>,
    tasks: Option<Vec<String>>,
}

/// A `[[tasks]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTask {
    name: String,
    description: Option<String>,
    /// Inline JSON Schema (a TOML table).
    input_schema: Option<toml::Value>,
    /// A JSON Schema file, relative to the config file.
    input_schema_file: Option<PathBuf>,
    timeout_s: Option<f64>,
    retry_safe: Option<bool>,
}

/// The scalar worker knobs, as the file, env and flags give them.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    pub heartbeat_interval_s: Option<u64>,
    pub heartbeat_timeout_s: Option<u64>,
    pub reconnect_grace_s: Option<u64>,
    pub max_worker_violations: Option<u32>,
}

/// One managed worker group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: Arc<str>,
    /// The program (`command[0]`) and its first arguments; never a shell line.
    pub command: Vec<String>,
    /// More arguments, after `command`'s.
    pub args: Vec<String>,
    /// Set in the child's environment (on top of the server's).
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Processes kept running.
    pub instances: usize,
    /// A process that has not sent `hello` by then is killed and restarted.
    pub startup_timeout: Duration,
    /// Recycle a process after this many attempts.
    pub max_tasks: Option<u64>,
    /// Only these of the task names a process declares are served.
    pub tasks: Option<Vec<String>>,
}

/// Everything about workers, validated.
#[derive(Debug, Clone)]
pub struct WorkersConfig {
    pub groups: Vec<GroupConfig>,
    /// `[[tasks]]`: offered (and validated) before any worker serves them.
    pub tasks: Vec<TaskDecl>,
    /// Either side sends `heartbeat` after this long without sending.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is lost (`hung`).
    pub heartbeat_timeout: Duration,
    /// A remote worker may reconnect and `resume` within this.
    pub reconnect_grace: Duration,
    /// Protocol violations per minute before a worker is closed.
    pub max_worker_violations: u32,
    /// The program that starts managed workers with a parent-death signal
    /// (`taskwire`'s own binary); `None`: started directly.
    pub launcher: Option<PathBuf>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            groups: Vec::new(),
            tasks: Vec::new(),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            reconnect_grace: Duration::from_secs(10),
            max_worker_violations: 20,
            launcher: None,
        }
    }
}

/// Most processes in one group.
const MAX_INSTANCES: u64 = 256;

/// Validates the worker sections; pushes a line per problem.
pub(crate) fn resolve(
    groups: Vec<FileGroup>,
    tasks: Vec<FileTask>,
    knobs: &Knobs,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> WorkersConfig {
    let defaults = WorkersConfig::default();
    let mut range = |key: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
        let value = value.unwrap_or(default);
        if value < min || value > max {
            problems.push(format!("{key}: {value} is out of range {min}..={max}"));
        }
        value
    };
    let heartbeat_interval_s = range(
        "heartbeat_interval_s",
        knobs.heartbeat_interval_s,
        defaults.heartbeat_interval.as_secs(),
        1,
        3600,
    );
    let heartbeat_timeout_s = range(
        "heartbeat_timeout_s",
        knobs.heartbeat_timeout_s,
        defaults.heartbeat_timeout.as_secs(),
        2,
        86_400,
    );
    let reconnect_grace_s = range(
        "reconnect_grace_s",
        knobs.reconnect_grace_s,
        defaults.reconnect_grace.as_secs(),
        0,
        3600,
    );
    let max_worker_violations = range(
        "max_worker_violations",
        knobs.max_worker_violations.map(u64::from),
        u64::from(defaults.max_worker_violations),
        1,
        100_000,
    );
    if heartbeat_timeout_s < 2 * heartbeat_interval_s {
        problems.push(format!(
            "heartbeat_timeout_s: {heartbeat_timeout_s} must be at least twice heartbeat_interval_s ({heartbeat_interval_s})"
        ));
    }

    let mut resolved_groups: Vec<GroupConfig> = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let at = format!("workers[{i}]");
        if let Err(why) = check_name(&group.name) {
            problems.push(format!("{at}.name: {why}"));
        }
        if resolved_groups.iter().any(|g| *g.name == group.name) {
            problems.push(format!("{at}.name: `{}` is used twice", group.name));
        }
        if group.command.is_empty() || group.command[0].is_empty() {
            problems.push(format!(
                "{at}.command: give the program and its arguments as a list, e.g. [\"node\", \"worker.mjs\"]"
            ));
        }
        let instances = group.instances.unwrap_or(1);
        if instances == 0 || instances > MAX_INSTANCES {
            problems.push(format!(
                "{at}.instances: {instances} is out of range 1..={MAX_INSTANCES}"
            ));
        }
        let startup_timeout_s = group.startup_timeout_s.unwrap_or(60);
        if startup_timeout_s == 0 || startup_timeout_s > 3600 {
            problems.push(format!(
                "{at}.startup_timeout_s: {startup_timeout_s} is out of range 1..=3600"
            ));
        }
        if group.max_tasks == Some(0) {
            problems.push(format!("{at}.max_tasks: must be 1 or more (or left out)"));
        }
        for (j, name) in group.tasks.iter().flatten().enumerate() {
            if let Err(why) = check_name(name) {
                problems.push(format!("{at}.tasks[{j}]: {why}"));
            }
        }
        for key in group.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                problems.push(format!("{at}.env: `{key}` is not a variable name"));
            }
        }
        let cwd = group.cwd.map(|dir| base_dir.join(dir));
        resolved_groups.push(GroupConfig {
            name: Arc::from(group.name),
            command: group.command,
            args: group.args,
            env: group.env,
            cwd,
            instances: instances.clamp(1, MAX_INSTANCES) as usize,
            startup_timeout: Duration::from_secs(startup_timeout_s),
            max_tasks: group.max_tasks,
            tasks: group.tasks,
        });
    }

    let mut declared: Vec<TaskDecl> = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let at = format!("tasks[{i}]");
        if let Err(why) = check_name(&task.name) {
            problems.push(format!("{at}.name: {why}"));
        }
        if declared.iter().any(|t| *t.name == task.name) {
            problems.push(format!("{at}.name: `{}` is declared twice", task.name));
        }
        let schema = match (task.input_schema, task.input_schema_file) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{at}: give input_schema or input_schema_file, not both"
                ));
                None
            }
            (Some(inline), None) => match serde_json::to_value(inline) {
                Ok(value) => Some(value),
                Err(e) => {
                    problems.push(format!("{at}.input_schema: {e}"));
                    None
                }
            },
            (None, Some(file)) => {
                let path = base_dir.join(&file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => match serde_json::from_str(&text) {
                        Ok(value) => Some(value),
                        Err(e) => {
                            problems.push(format!(
                                "{at}.input_schema_file: {} is not JSON: {e}",
                                path.display()
                            ));
                            None
                        }
                    },
                    Err(e) => {
                        problems.push(format!(
                            "{at}.input_schema_file: cannot read {}: {e}",
                            path.display()
                        ));
                        None
                    }
                }
            }
            (None, None) => None,
        };
        if let Some(schema) = &schema
            && let Err(why) = crate::workers::schema::compile(schema)
        {
            problems.push(format!("{at}.input_schema: {why}"));
        }
        let timeout = match task.timeout_s {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 => Duration::try_from_secs_f64(t).ok(),
            Some(t) => {
                problems.push(format!("{at}.timeout_s: {t} must be a positive number"));
                None
            }
        };
        declared.push(TaskDecl {
            name: Arc::from(task.name),
            description: task.description.unwrap_or_default(),
            input_schema: schema,
            retry_safe: task.retry_safe.unwrap_or(false),
            timeout,
        });
    }

    let secs = Duration::from_secs;
    WorkersConfig {
        groups: resolved_groups,
        tasks: declared,
        heartbeat_interval: secs(heartbeat_interval_s),
        heartbeat_timeout: secs(heartbeat_timeout_s),
        reconnect_grace: secs(reconnect_grace_s),
        max_worker_violations: max_worker_violations as u32,
        launcher: None,
    }
}
