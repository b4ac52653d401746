//! The service configuration: defaults < TOML file < `TASKWIRE_*` env < flags.
//!
//! Every knob is read here and nowhere else (no `std::env::var` elsewhere),
//! validated once into a typed [`Config`] with `Duration`s in code and units
//! in the key names. A problem stops startup with a message naming the key.
//! README's knob table repeats each default and what happens at its bound.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Flags of `taskwire serve` and `taskwire config`; each also reads
/// `TASKWIRE_<NAME>` from the environment (a flag wins over the variable).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "TASKWIRE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "TASKWIRE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Tasks running at once (default: CPU count).
    #[arg(long, env = "TASKWIRE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Threads the server's own work runs on: connections, scheduling,
    /// the cluster link (default: CPU count).
    #[arg(long, env = "TASKWIRE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Tasks waiting to run, not counting running ones (default 1024).
    #[arg(long, env = "TASKWIRE_QUEUE_CAPACITY", value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Seconds a finished task and its events are held (default 3600).
    #[arg(long, env = "TASKWIRE_RESULT_TTL_S", value_name = "N")]
    pub result_ttl_s: Option<u64>,
    /// Seconds a WebSocket may stay unauthenticated (default 10).
    #[arg(long, env = "TASKWIRE_AUTH_TIMEOUT_S", value_name = "N")]
    pub auth_timeout_s: Option<u64>,
    /// Largest message or REST body, in bytes (default 64 MiB).
    #[arg(long, env = "TASKWIRE_MAX_MESSAGE_BYTES", value_name = "N")]
    pub max_message_bytes: Option<u64>,
    /// Longest running time a task may ask for (default 3600).
    #[arg(long, env = "TASKWIRE_MAX_TIMEOUT_S", value_name = "N")]
    pub max_timeout_s: Option<u64>,
    /// Seconds running tasks get to finish on shutdown (default 30).
    #[arg(long, env = "TASKWIRE_SHUTDOWN_GRACE_S", value_name = "N")]
    pub shutdown_grace_s: Option<u64>,
    /// Seconds a file output can be downloaded (default 3600).
    #[arg(long, env = "TASKWIRE_FILE_TTL_S", value_name = "N")]
    pub file_ttl_s: Option<u64>,
    /// Directory for staged and published files (default: a fresh one under
    /// the system temp dir, removed on exit).
    #[arg(long, env = "TASKWIRE_TEMP_DIR", value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Public base URL, making download links absolute.
    #[arg(long, env = "TASKWIRE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Log format: text or json (default text).
    #[arg(long, env = "TASKWIRE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Open WebSocket and SSE connections (default 10000).
    #[arg(long, env = "TASKWIRE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Messages queued for one connection before it counts as a slow reader
    /// and is closed with 1013 (default 4096).
    #[arg(long, env = "TASKWIRE_SEND_QUEUE", value_name = "N")]
    pub send_queue: Option<usize>,
    /// Events held per task for replay (default 1000).
    #[arg(long, env = "TASKWIRE_MAX_TASK_EVENTS", value_name = "N")]
    pub max_task_events: Option<usize>,
    /// Tasks held in memory, finished ones included (default 100000).
    #[arg(long, env = "TASKWIRE_MAX_HELD_TASKS", value_name = "N")]
    pub max_held_tasks: Option<usize>,
    /// Bytes of staged and published files (default 1 GiB).
    #[arg(long, env = "TASKWIRE_MAX_TEMP_BYTES", value_name = "N")]
    pub max_temp_bytes: Option<u64>,
    /// Bytes of queued task inputs (default: a quarter of the machine's
    /// memory, at most 2 GiB).
    #[arg(long, env = "TASKWIRE_MAX_QUEUED_INPUT_BYTES", value_name = "N")]
    pub max_queued_input_bytes: Option<u64>,
    /// Bytes of queued inputs one client may hold (default: half of
    /// max_queued_input_bytes).
    #[arg(
        long,
        env = "TASKWIRE_MAX_QUEUED_INPUT_BYTES_PER_CLIENT",
        value_name = "N"
    )]
    pub max_queued_input_bytes_per_client: Option<u64>,
    /// Bytes of held finished-task results, errors and progress data
    /// (default 256 MiB).
    #[arg(long, env = "TASKWIRE_MAX_HELD_RESULT_BYTES", value_name = "N")]
    pub max_held_result_bytes: Option<u64>,
    /// Longest wait for an answer to a task's question (default 3600).
    #[arg(long, env = "TASKWIRE_MAX_QUESTION_WAIT_S", value_name = "N")]
    pub max_question_wait_s: Option<u64>,
    /// Seconds an executor gets to stop a task it was told to stop
    /// (default 10).
    #[arg(long, env = "TASKWIRE_CANCEL_GRACE_S", value_name = "N")]
    pub cancel_grace_s: Option<u64>,
    /// Attempts a retry-safe task gets when its workers are lost (default 2).
    #[arg(long, env = "TASKWIRE_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Seconds a queued task waits for a worker serving its name before it
    /// fails with no_worker (default 600).
    #[arg(long, env = "TASKWIRE_NO_WORKER_WAIT_S", value_name = "N")]
    pub no_worker_wait_s: Option<u64>,
    /// Seconds one write to a client socket may take before the client
    /// counts as a slow reader (default 30).
    #[arg(long, env = "TASKWIRE_WRITE_TIMEOUT_S", value_name = "N")]
    pub write_timeout_s: Option<u64>,
    /// Seconds a REST request body may take to arrive (default 30).
    #[arg(long, env = "TASKWIRE_BODY_TIMEOUT_S", value_name = "N")]
    pub body_timeout_s: Option<u64>,
    /// Largest upload (`POST /v1/uploads`), in bytes (default 256 MiB).
    #[arg(long, env = "TASKWIRE_MAX_UPLOAD_BYTES", value_name = "N")]
    pub max_upload_bytes: Option<u64>,
    /// Seconds an upload no task uses is kept (default 3600).
    #[arg(long, env = "TASKWIRE_UPLOAD_TTL_S", value_name = "N")]
    pub upload_ttl_s: Option<u64>,
    /// Largest URL input the server fetches, in bytes (default 256 MiB).
    #[arg(long, env = "TASKWIRE_MAX_FETCH_BYTES", value_name = "N")]
    pub max_fetch_bytes: Option<u64>,
    /// Seconds one URL input may take to fetch (default 60).
    #[arg(long, env = "TASKWIRE_FETCH_TIMEOUT_S", value_name = "N")]
    pub fetch_timeout_s: Option<u64>,
    /// Seconds a connection gets to send a complete request head, from its
    /// opening or from the end of its previous response (default 10).
    #[arg(long, env = "TASKWIRE_HEADER_READ_TIMEOUT_S", value_name = "N")]
    pub header_read_timeout_s: Option<u64>,
    /// Seconds a connection (HTTP or WebSocket) may move no byte either way
    /// before it is closed (default 120).
    #[arg(long, env = "TASKWIRE_IDLE_TIMEOUT_S", value_name = "N")]
    pub idle_timeout_s: Option<u64>,
    /// Open TCP connections at once, WebSockets included (default 16384;
    /// lowered to fit the file descriptor limit).
    #[arg(long, env = "TASKWIRE_MAX_HTTP_CONNECTIONS", value_name = "N")]
    pub max_http_connections: Option<usize>,
    /// Open TCP connections from one IP address (IPv6: one /64) (default 256).
    #[arg(long, env = "TASKWIRE_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// `[cluster]`: several nodes on NATS JetStream (docs/cluster.md).
    #[command(flatten)]
    pub cluster: crate::cluster::config::ClusterOverrides,
    /// Seconds between heartbeats to and from workers (default 5).
    #[arg(long, env = "TASKWIRE_HEARTBEAT_INTERVAL_S", value_name = "N")]
    pub heartbeat_interval_s: Option<u64>,
    /// Seconds of silence after which a worker is lost (default 15).
    #[arg(long, env = "TASKWIRE_HEARTBEAT_TIMEOUT_S", value_name = "N")]
    pub heartbeat_timeout_s: Option<u64>,
    /// Seconds a remote worker may take to reconnect and resume (default 10).
    #[arg(long, env = "TASKWIRE_RECONNECT_GRACE_S", value_name = "N")]
    pub reconnect_grace_s: Option<u64>,
    /// Protocol violations per minute before a worker is closed (default 20).
    #[arg(long, env = "TASKWIRE_MAX_WORKER_VIOLATIONS", value_name = "N")]
    pub max_worker_violations: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// The TOML file: the same names in snake_case, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    /// `workers = N` (v1: the built-in pool size) or `[[workers]]` (managed
    /// worker groups); TOML cannot hold both, so `builtin_workers` also sets
    /// the pool size.
    workers: Option<toml::Value>,
    builtin_workers: Option<usize>,
    threads: Option<usize>,
    queue_capacity: Option<usize>,
    result_ttl_s: Option<u64>,
    auth_timeout_s: Option<u64>,
    max_message_bytes: Option<u64>,
    max_timeout_s: Option<u64>,
    shutdown_grace_s: Option<u64>,
    file_ttl_s: Option<u64>,
    temp_dir: Option<PathBuf>,
    public_url: Option<String>,
    log_format: Option<LogFormat>,
    max_connections: Option<usize>,
    send_queue: Option<usize>,
    max_task_events: Option<usize>,
    max_held_tasks: Option<usize>,
    max_temp_bytes: Option<u64>,
    max_queued_input_bytes: Option<u64>,
    max_queued_input_bytes_per_client: Option<u64>,
    max_held_result_bytes: Option<u64>,
    max_question_wait_s: Option<u64>,
    cancel_grace_s: Option<u64>,
    max_attempts: Option<u32>,
    no_worker_wait_s: Option<u64>,
    write_timeout_s: Option<u64>,
    body_timeout_s: Option<u64>,
    max_upload_bytes: Option<u64>,
    upload_ttl_s: Option<u64>,
    max_fetch_bytes: Option<u64>,
    fetch_timeout_s: Option<u64>,
    /// Addresses URL inputs may reach despite the SSRF guard (CIDRs).
    fetch_allow: Option<Vec<String>>,
    max_token_ttl_s: Option<u64>,
    header_read_timeout_s: Option<u64>,
    idle_timeout_s: Option<u64>,
    max_http_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    api_keys: Vec<FileApiKey>,
    cluster: Option<crate::cluster::config::FileCluster>,
    #[serde(default)]
    schedules: Vec<crate::schedules::FileSchedule>,
    heartbeat_interval_s: Option<u64>,
    heartbeat_timeout_s: Option<u64>,
    reconnect_grace_s: Option<u64>,
    max_worker_violations: Option<u32>,
    #[serde(default)]
    tasks: Vec<crate::workers::config::FileTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApiKey {
    name: String,
    sha256: String,
    /// Kept for v1 configs: `admin = true` is `role = "admin"`.
    #[serde(default)]
    admin: bool,
    role: Option<KeyRole>,
}

/// What a key may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// Submit and follow its own tasks.
    #[default]
    Client,
    /// Anything a client may, on every task; the monitoring extension.
    Admin,
    /// Only `GET /v1/worker`: serve tasks, never submit or read them.
    Worker,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Client => "client",
            KeyRole::Admin => "admin",
            KeyRole::Worker => "worker",
        }
    }
}

/// One accepted API key, as its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub name: String,
    pub digest: [u8; 32],
    pub role: KeyRole,
    pub source: KeySource,
}

impl KeyConfig {
    pub fn is_admin(&self) -> bool {
        self.role == KeyRole::Admin
    }
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    File,
    Env,
    Demo,
}

/// The effective, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The async runtime's worker threads.
    pub threads: usize,
    /// `[[schedules]]`, checked.
    pub schedules: Vec<crate::schedules::Schedule>,
    pub limits: Limits,
    pub files: FilesConfig,
    pub security: SecurityConfig,
    pub http: HttpConfig,
    pub log_format: LogFormat,
    /// Uploads and URL inputs.
    pub inputs: InputsConfig,
    /// `[cluster]`, when this node shares its queue with others on NATS.
    pub cluster: Option<crate::cluster::config::ClusterConfig>,
    /// Managed worker groups, declared tasks, worker knobs.
    pub workers: crate::workers::config::WorkersConfig,
}

/// Uploads and URL inputs (`docs/protocol.md` §8.3 to §8.6).
#[derive(Debug, Clone)]
pub struct InputsConfig {
    /// Largest upload; past it `413`.
    pub max_upload_bytes: u64,
    /// An upload no task refers to is deleted this long after it was made.
    pub upload_ttl: Duration,
    /// Largest URL input; past it the task fails with `input_fetch_failed`.
    pub max_fetch_bytes: u64,
    /// Longest time one URL input may take (connect, headers and body).
    pub fetch_timeout: Duration,
    /// Networks URL inputs may reach even though the SSRF guard forbids
    /// them (loopback, private, link-local ...), e.g. `127.0.0.1/32`.
    pub fetch_allow: Vec<crate::inputs::guard::Cidr>,
}

/// The listener's own bounds (`server::listener`), before any request is
/// routed or authenticated.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// From a connection's opening, or the end of its previous response, to
    /// the end of the next request head; then the connection is closed.
    pub header_read_timeout: Duration,
    /// No byte read or written for this long: the connection is closed.
    pub idle_timeout: Duration,
    /// Open TCP connections (WebSockets included); more are closed at once.
    pub max_http_connections: usize,
    /// Open TCP connections per peer IP (IPv6: per /64); more are closed at once.
    pub max_connections_per_ip: usize,
}

/// The bounds the scheduler, the worker pool and the connections enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    pub workers: usize,
    pub queue_capacity: usize,
    pub result_ttl: Duration,
    pub max_message_bytes: usize,
    pub max_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub send_queue: usize,
    pub max_task_events: usize,
    pub max_held_tasks: usize,
    /// Queued inputs in all; past it a submit is `queue_full`.
    pub max_queued_input_bytes: u64,
    /// Queued inputs of one client; past it its submits are `queue_full`.
    pub max_queued_input_bytes_per_client: u64,
    /// Held finished tasks' events; past it the oldest is forgotten.
    pub max_held_result_bytes: usize,
    pub max_question_wait: Duration,
    pub cancel_grace: Duration,
    pub max_attempts: u32,
    pub no_worker_wait: Duration,
    pub write_timeout: Duration,
    pub body_timeout: Duration,
}

/// A time far enough away to stand for "never" in deadline arithmetic.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The default bound on queued inputs: a quarter of the machine's memory,
/// at most 2 GiB (2 GiB when the memory cannot be read).
fn default_queued_input_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024);
    let cap = 2 * 1024 * MIB;
    total.map_or(cap, |bytes| (bytes / 4).min(cap))
}

#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub file_ttl: Duration,
    pub temp_dir: Option<PathBuf>,
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub max_temp_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub api_keys: Vec<KeyConfig>,
    /// Origins (`scheme://host[:port]`) allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    pub auth_timeout: Duration,
    /// Longest life of a browser token (`POST /v1/tokens`).
    pub max_token_ttl: Duration,
}

/// Why the configuration cannot be used; names every offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .problems.join("\n"))]
    Invalid { problems: Vec<String> },
}

impl Config {
    /// Reads the file named by `overrides.config` (if any), applies the
    /// environment's `TASKWIRE_API_KEY` and the overrides, and validates.
    pub fn load(overrides: &Overrides, env_api_key: Option<&str>) -> Result<Config, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let base = overrides
            .config
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        Config::from_layers(file, overrides, env_api_key, base)
    }

    /// Parses a TOML text as a config file (used by tests).
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = parse_file(text, Path::new("<inline>"))?;
        Config::from_layers(file, overrides, None, Path::new("."))
    }

    /// Everything at its default, with the given keys (tests and embedding).
    pub fn with_keys(keys: Vec<KeyConfig>) -> Config {
        let mut config = Config::from_layers(
            FileConfig::default(),
            &Overrides::default(),
            None,
            Path::new("."),
        )
        .unwrap_or_else(|_| unreachable!("the defaults are valid"));
        config.security.api_keys = keys;
        config
    }

    fn from_layers(
        file: FileConfig,
        o: &Overrides,
        env_api_key: Option<&str>,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());

        let listen_text = pick(o.listen.clone(), file.listen, "127.0.0.1:8080".to_owned());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "listen: `{listen_text}` is not an address like 127.0.0.1:8080"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });

        let (pool_size, groups) = workers_key(file.workers, &mut problems);
        if pool_size.is_some() && file.builtin_workers.is_some() {
            problems.push(
                "builtin_workers: give either `workers = N` or `builtin_workers = N`".to_owned(),
            );
        }
        let pool_size = pool_size.or(file.builtin_workers);
        let mut check = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                problems.push(format!("{key}: {value} is out of range {min}..={max}"));
            }
            value
        };
        let workers = check("workers", pick(o.workers, pool_size, cpus) as u64, 1, 4096);
        let threads = check(
            "threads",
            pick(o.threads, file.threads, cpus) as u64,
            1,
            1024,
        );
        let queue_capacity = check(
            "queue_capacity",
            pick(o.queue_capacity, file.queue_capacity, 1024) as u64,
            1,
            10_000_000,
        );
        let result_ttl_s = check(
            "result_ttl_s",
            pick(o.result_ttl_s, file.result_ttl_s, 3600),
            1,
            7 * 86_400,
        );
        let auth_timeout_s = check(
            "auth_timeout_s",
            pick(o.auth_timeout_s, file.auth_timeout_s, 10),
            1,
            3600,
        );
        let max_message_bytes = check(
            "max_message_bytes",
            pick(o.max_message_bytes, file.max_message_bytes, 64 * MIB),
            1024,
            1024 * MIB,
        );
        let max_timeout_s = check(
            "max_timeout_s",
            pick(o.max_timeout_s, file.max_timeout_s, 3600),
            1,
            7 * 86_400,
        );
        let shutdown_grace_s = check(
            "shutdown_grace_s",
            pick(o.shutdown_grace_s, file.shutdown_grace_s, 30),
            0,
            3600,
        );
        let file_ttl_s = check(
            "file_ttl_s",
            pick(o.file_ttl_s, file.file_ttl_s, 3600),
            1,
            7 * 86_400,
        );
        let max_connections = check(
            "max_connections",
            pick(o.max_connections, file.max_connections, 10_000) as u64,
            1,
            1_000_000,
        );
        let send_queue = check(
            "send_queue",
            pick(o.send_queue, file.send_queue, 4096) as u64,
            16,
            1_000_000,
        );
        let max_task_events = check(
            "max_task_events",
            pick(o.max_task_events, file.max_task_events, 1000) as u64,
            8,
            1_000_000,
        );
        let max_held_tasks = check(
            "max_held_tasks",
            pick(o.max_held_tasks, file.max_held_tasks, 100_000) as u64,
            1,
            100_000_000,
        );
        let max_temp_bytes = check(
            "max_temp_bytes",
            pick(o.max_temp_bytes, file.max_temp_bytes, 1024 * MIB),
            0,
            u64::MAX / 2,
        );
        let max_queued_input_bytes = check(
            "max_queued_input_bytes",
            pick(
                o.max_queued_input_bytes,
                file.max_queued_input_bytes,
                default_queued_input_bytes(),
            ),
            MIB,
            u64::MAX / 2,
        );
        let max_queued_input_bytes_per_client = check(
            "max_queued_input_bytes_per_client",
            pick(
                o.max_queued_input_bytes_per_client,
                file.max_queued_input_bytes_per_client,
                max_queued_input_bytes / 2,
            ),
            1024,
            u64::MAX / 2,
        );
        let max_held_result_bytes = check(
            "max_held_result_bytes",
            pick(
                o.max_held_result_bytes,
                file.max_held_result_bytes,
                256 * MIB,
            ),
            MIB,
            u64::MAX / 2,
        );
        let max_question_wait_s = check(
            "max_question_wait_s",
            pick(o.max_question_wait_s, file.max_question_wait_s, 3600),
            1,
            7 * 86_400,
        );
        let cancel_grace_s = check(
            "cancel_grace_s",
            pick(o.cancel_grace_s, file.cancel_grace_s, 10),
            1,
            3600,
        );
        let max_attempts = check(
            "max_attempts",
            u64::from(pick(o.max_attempts, file.max_attempts, 2)),
            1,
            100,
        );
        let no_worker_wait_s = check(
            "no_worker_wait_s",
            pick(o.no_worker_wait_s, file.no_worker_wait_s, 600),
            1,
            7 * 86_400,
        );
        let write_timeout_s = check(
            "write_timeout_s",
            pick(o.write_timeout_s, file.write_timeout_s, 30),
            1,
            3600,
        );
        let body_timeout_s = check(
            "body_timeout_s",
            pick(o.body_timeout_s, file.body_timeout_s, 30),
            1,
            3600,
        );
        let max_upload_bytes = check(
            "max_upload_bytes",
            pick(o.max_upload_bytes, file.max_upload_bytes, 256 * MIB),
            1,
            u64::MAX / 2,
        );
        let upload_ttl_s = check(
            "upload_ttl_s",
            pick(o.upload_ttl_s, file.upload_ttl_s, 3600),
            1,
            7 * 86_400,
        );
        let max_fetch_bytes = check(
            "max_fetch_bytes",
            pick(o.max_fetch_bytes, file.max_fetch_bytes, 256 * MIB),
            1,
            u64::MAX / 2,
        );
        let fetch_timeout_s = check(
            "fetch_timeout_s",
            pick(o.fetch_timeout_s, file.fetch_timeout_s, 60),
            1,
            86_400,
        );
        let max_token_ttl_s = check(
            "max_token_ttl_s",
            file.max_token_ttl_s.unwrap_or(3600),
            1,
            86_400,
        );
        let header_read_timeout_s = check(
            "header_read_timeout_s",
            pick(o.header_read_timeout_s, file.header_read_timeout_s, 10),
            1,
            600,
        );
        // Above the WebSocket heartbeat (a ping after 30 quiet seconds), so a
        // healthy idle socket is never taken for a dead one.
        let idle_timeout_s = check(
            "idle_timeout_s",
            pick(o.idle_timeout_s, file.idle_timeout_s, 120),
            60,
            86_400,
        );
        let max_http_connections = check(
            "max_http_connections",
            pick(o.max_http_connections, file.max_http_connections, 16_384) as u64,
            1,
            1_000_000,
        );
        let max_connections_per_ip = check(
            "max_connections_per_ip",
            pick(o.max_connections_per_ip, file.max_connections_per_ip, 256) as u64,
            1,
            1_000_000,
        );
        if max_connections_per_ip > max_http_connections {
            problems.push(format!(
                "max_connections_per_ip: {max_connections_per_ip} is more than max_http_connections ({max_http_connections})"
            ));
        }

        let public_url = pick(o.public_url.clone(), file.public_url, String::new());
        let public_url = if public_url.is_empty() {
            None
        } else {
            match normalize_public_url(&public_url) {
                Ok(url) => Some(url),
                Err(why) => {
                    problems.push(format!("public_url: {why}"));
                    None
                }
            }
        };

        let mut allowed_origins = Vec::new();
        for origin in file.allowed_origins.unwrap_or_default() {
            match normalize_origin(&origin) {
                Ok(origin) => allowed_origins.push(origin),
                Err(why) => problems.push(format!("allowed_origins: `{origin}`: {why}")),
            }
        }

        let mut fetch_allow = Vec::new();
        for cidr in file.fetch_allow.unwrap_or_default() {
            match cidr.parse::<crate::inputs::guard::Cidr>() {
                Ok(cidr) => fetch_allow.push(cidr),
                Err(why) => problems.push(format!("fetch_allow: `{cidr}`: {why}")),
            }
        }

        let mut api_keys = Vec::new();
        for (i, key) in file.api_keys.into_iter().enumerate() {
            if let Err(why) = check_key_name(&key.name) {
                problems.push(format!("api_keys[{i}].name: {why}"));
            }
            let role = match (key.role, key.admin) {
                (None, false) => KeyRole::Client,
                (None, true) | (Some(KeyRole::Admin), _) => KeyRole::Admin,
                (Some(role), false) => role,
                (Some(role), true) => {
                    problems.push(format!(
                        "api_keys[{i}]: `admin = true` contradicts `role = \"{}\"`",
                        role.as_str()
                    ));
                    role
                }
            };
            match parse_digest(&key.sha256) {
                Some(digest) => api_keys.push(KeyConfig {
                    name: key.name,
                    digest,
                    role,
                    source: KeySource::File,
                }),
                None => problems.push(format!(
                    "api_keys[{i}].sha256: expected 64 hex digits, optionally after `sha256:`"
                )),
            }
        }
        if let Some(key) = env_api_key.filter(|k| !k.is_empty()) {
            api_keys.push(KeyConfig {
                name: "env".to_owned(),
                digest: crate::auth::digest(key),
                role: KeyRole::Client,
                source: KeySource::Env,
            });
        }
        for (i, a) in api_keys.iter().enumerate() {
            if api_keys[..i]
                .iter()
                .any(|b| b.name == a.name && b.role != a.role)
            {
                problems.push(format!(
                    "api_keys: entries named `{}` disagree on `role` (keys sharing a name are one client)",
                    a.name
                ));
            }
        }

        let cluster = crate::cluster::config::ClusterConfig::from_layers(
            file.cluster,
            &o.cluster,
            &mut problems,
        );
        let schedules = crate::schedules::spec::parse(file.schedules, &api_keys, &mut problems);
        let worker_config = crate::workers::config::resolve(
            groups,
            file.tasks,
            &crate::workers::config::Knobs {
                heartbeat_interval_s: o.heartbeat_interval_s.or(file.heartbeat_interval_s),
                heartbeat_timeout_s: o.heartbeat_timeout_s.or(file.heartbeat_timeout_s),
                reconnect_grace_s: o.reconnect_grace_s.or(file.reconnect_grace_s),
                max_worker_violations: o.max_worker_violations.or(file.max_worker_violations),
            },
            base_dir,
            &mut problems,
        );

        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let secs = Duration::from_secs;
        Ok(Config {
            listen,
            threads: threads as usize,
            schedules,
            limits: Limits {
                workers: workers as usize,
                queue_capacity: queue_capacity as usize,
                result_ttl: secs(result_ttl_s),
                max_message_bytes: max_message_bytes as usize,
                max_timeout: secs(max_timeout_s),
                shutdown_grace: secs(shutdown_grace_s),
                max_connections: max_connections as usize,
                send_queue: send_queue as usize,
                max_task_events: max_task_events as usize,
                max_held_tasks: max_held_tasks as usize,
                max_queued_input_bytes,
                max_queued_input_bytes_per_client,
                max_held_result_bytes: usize::try_from(max_held_result_bytes).unwrap_or(usize::MAX),
                max_question_wait: secs(max_question_wait_s),
                cancel_grace: secs(cancel_grace_s),
                max_attempts: max_attempts as u32,
                no_worker_wait: secs(no_worker_wait_s),
                write_timeout: secs(write_timeout_s),
                body_timeout: secs(body_timeout_s),
            },
            files: FilesConfig {
                file_ttl: secs(file_ttl_s),
                temp_dir: o.temp_dir.clone().or(file.temp_dir),
                public_url,
                max_temp_bytes,
            },
            security: SecurityConfig {
                api_keys,
                allowed_origins,
                auth_timeout: secs(auth_timeout_s),
                max_token_ttl: secs(max_token_ttl_s),
            },
            http: HttpConfig {
                header_read_timeout: secs(header_read_timeout_s),
                idle_timeout: secs(idle_timeout_s),
                max_http_connections: max_http_connections as usize,
                max_connections_per_ip: max_connections_per_ip as usize,
            },
            log_format: pick(o.log_format, file.log_format, LogFormat::Text),
            inputs: InputsConfig {
                max_upload_bytes,
                upload_ttl: secs(upload_ttl_s),
                max_fetch_bytes,
                fetch_timeout: secs(fetch_timeout_s),
                fetch_allow,
            },
            cluster,
            workers: worker_config,
        })
    }

    /// The effective configuration as TOML, without secrets (key digests are
    /// left out; names, roles and where each key came from are shown).
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            listen: String,
            threads: usize,
            workers: usize,
            queue_capacity: usize,
            result_ttl_s: u64,
            auth_timeout_s: u64,
            max_message_bytes: usize,
            max_timeout_s: u64,
            shutdown_grace_s: u64,
            file_ttl_s: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            temp_dir: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            public_url: Option<&'a str>,
            log_format: LogFormat,
            max_connections: usize,
            send_queue: usize,
            max_task_events: usize,
            max_held_tasks: usize,
            max_temp_bytes: u64,
            max_queued_input_bytes: u64,
            max_queued_input_bytes_per_client: u64,
            max_held_result_bytes: usize,
            max_question_wait_s: u64,
            cancel_grace_s: u64,
            max_attempts: u32,
            no_worker_wait_s: u64,
            write_timeout_s: u64,
            body_timeout_s: u64,
            max_upload_bytes: u64,
            upload_ttl_s: u64,
            max_fetch_bytes: u64,
            fetch_timeout_s: u64,
            fetch_allow: Vec<String>,
            max_token_ttl_s: u64,
            header_read_timeout_s: u64,
            idle_timeout_s: u64,
            max_http_connections: usize,
            max_connections_per_ip: usize,
            allowed_origins: &'a [String],
            heartbeat_interval_s: u64,
            heartbeat_timeout_s: u64,
            reconnect_grace_s: u64,
            max_worker_violations: u32,
        }
        let shown = Shown {
            listen: self.listen.to_string(),
            threads: self.threads,
            workers: self.limits.workers,
            queue_capacity: self.limits.queue_capacity,
            result_ttl_s: self.limits.result_ttl.as_secs(),
            auth_timeout_s: self.security.auth_timeout.as_secs(),
            max_message_bytes: self.limits.max_message_bytes,
            max_timeout_s: self.limits.max_timeout.as_secs(),
            shutdown_grace_s: self.limits.shutdown_grace.as_secs(),
            file_ttl_s: self.files.file_ttl.as_secs(),
            temp_dir: self.files.temp_dir.as_deref(),
            public_url: self.files.public_url.as_deref(),
            log_format: self.log_format,
            max_connections: self.limits.max_connections,
            send_queue: self.limits.send_queue,
            max_task_events: self.limits.max_task_events,
            max_held_tasks: self.limits.max_held_tasks,
            max_temp_bytes: self.files.max_temp_bytes,
            max_queued_input_bytes: self.limits.max_queued_input_bytes,
            max_queued_input_bytes_per_client: self.limits.max_queued_input_bytes_per_client,
            max_held_result_bytes: self.limits.max_held_result_bytes,
            max_question_wait_s: self.limits.max_question_wait.as_secs(),
            cancel_grace_s: self.limits.cancel_grace.as_secs(),
            max_attempts: self.limits.max_attempts,
            no_worker_wait_s: self.limits.no_worker_wait.as_secs(),
            write_timeout_s: self.limits.write_timeout.as_secs(),
            body_timeout_s: self.limits.body_timeout.as_secs(),
            max_upload_bytes: self.inputs.max_upload_bytes,
            upload_ttl_s: self.inputs.upload_ttl.as_secs(),
            max_fetch_bytes: self.inputs.max_fetch_bytes,
            fetch_timeout_s: self.inputs.fetch_timeout.as_secs(),
            fetch_allow: self
                .inputs
                .fetch_allow
                .iter()
                .map(ToString::to_string)
                .collect(),
            max_token_ttl_s: self.security.max_token_ttl.as_secs(),
            header_read_timeout_s: self.http.header_read_timeout.as_secs(),
            idle_timeout_s: self.http.idle_timeout.as_secs(),
            max_http_connections: self.http.max_http_connections,
            max_connections_per_ip: self.http.max_connections_per_ip,
            allowed_origins: &self.security.allowed_origins,
            heartbeat_interval_s: self.workers.heartbeat_interval.as_secs(),
            heartbeat_timeout_s: self.workers.heartbeat_timeout.as_secs(),
            reconnect_grace_s: self.workers.reconnect_grace.as_secs(),
            max_worker_violations: self.workers.max_worker_violations,
        };
        let mut out = toml::to_string(&shown).unwrap_or_default();
        if self.security.api_keys.is_empty() {
            out.push_str("\n# api_keys: none (serve makes a demo key for its run)\n");
        }
        for key in &self.security.api_keys {
            let source = match key.source {
                KeySource::File => "config file",
                KeySource::Env => "TASKWIRE_API_KEY",
                KeySource::Demo => "demo",
            };
            let _ = write!(
                out,
                "\n[[api_keys]]  # from {source}; digest not shown\nname = {:?}\nrole = {:?}\n",
                key.name,
                key.role.as_str()
            );
        }
        for group in &self.workers.groups {
            // Environment values may be secrets: only their names are shown.
            let _ = write!(
                out,
                "\n[[workers]]\nname = {:?}\ncommand = {:?}\nargs = {:?}\ninstances = {}\nstartup_timeout_s = {}\n# env: {:?} (values not shown)\n",
                &*group.name,
                group.command,
                group.args,
                group.instances,
                group.startup_timeout.as_secs(),
                group.env.keys().collect::<Vec<_>>(),
            );
        }
        for task in &self.workers.tasks {
            let _ = write!(
                out,
                "\n[[tasks]]\nname = {:?}\nretry_safe = {}\n",
                &*task.name, task.retry_safe
            );
        }
        if let Some(cluster) = &self.cluster {
            out.push_str(&cluster.to_toml());
        }
        out
    }
}

/// The two meanings of the `workers` key: v1's pool size, or the
/// `[[workers]]` groups.
fn workers_key(
    value: Option<toml::Value>,
    problems: &mut Vec<String>,
) -> (Option<usize>, Vec<crate::workers::config::FileGroup>) {
    match value {
        None => (None, Vec::new()),
        Some(toml::Value::Integer(n)) => match usize::try_from(n) {
            Ok(n) => (Some(n), Vec::new()),
            Err(_) => {
                problems.push(format!("workers: {n} is out of range 1..=4096"));
                (None, Vec::new())
            }
        },
        Some(value @ toml::Value::Array(_)) => match serde_path_to_error::deserialize(value) {
            Ok(groups) => (None, groups),
            Err(e) => {
                problems.push(format!("workers{}: {}", e.path(), e.inner()));
                (None, Vec::new())
            }
        },
        Some(_) => {
            problems.push(
                "workers: a number (the built-in pool size) or [[workers]] tables".to_owned(),
            );
            (None, Vec::new())
        }
    }
}

fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: T) -> T {
    flag_or_env.or(file).unwrap_or(default)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text, path)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `sha256:<hex>` or `<hex>`, 64 hex digits, either case.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

fn check_key_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("1 to 64 characters from A-Z a-z 0-9 . _ -")
    }
}

/// Longest origin accepted anywhere (config, `Origin` header, a browser
/// token's `origin`), in bytes: a 253-byte host name with scheme and port fits.
pub const MAX_ORIGIN_BYTES: usize = 300;

/// `scheme://host[:port]`, lowercased, without a path and without the
/// scheme's default port (as browsers send it); `*` is refused.
pub(crate) fn normalize_origin(origin: &str) -> Result<String, &'static str> {
    if origin.len() > MAX_ORIGIN_BYTES {
        return Err("longer than 300 bytes");
    }
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("expected scheme://host[:port]");
    };
    if scheme != "http" && scheme != "https" {
        return Err("scheme must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '*', '?', '#', '@', ' ']) {
        return Err("expected scheme://host[:port] without path or wildcard");
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    match rest.strip_suffix(default_port) {
        Some(host) if !host.is_empty() => Ok(format!("{scheme}://{host}")),
        _ => Ok(origin),
    }
}

fn normalize_public_url(url: &str) -> Result<String, &'static str> {
    let url = url.trim().trim_end_matches('/');
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected http(s)://host[:port][/path]");
    };
    if (scheme != "http" && scheme != "https") || rest.is_empty() || rest.starts_with('/') {
        return Err("expected http(s)://host[:port][/path]");
    }
    if rest.contains(['?', '#', ' ']) {
        return Err("no query, fragment or spaces allowed");
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> String {
        match Config::from_toml(text, &Overrides::default()) {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let config = Config::from_toml("", &Overrides::default()).expect("defaults");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.limits.queue_capacity, 1024);
        assert_eq!(config.limits.max_message_bytes, 64 * 1024 * 1024);
        assert_eq!(config.limits.result_ttl, Duration::from_secs(3600));
        assert_eq!(config.security.auth_timeout, Duration::from_secs(10));
        assert!(config.limits.workers >= 1);
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.http.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.http.max_http_connections, 16_384);
        assert_eq!(config.http.max_connections_per_ip, 256);
    }

    #[test]
    fn flags_win_over_the_file() {
        let overrides = Overrides {
            workers: Some(3),
            threads: Some(1),
            ..Overrides::default()
        };
        let text = "workers = 7\nthreads = 4\nqueue_capacity = 5";
        let config = Config::from_toml(text, &overrides).expect("ok");
        assert_eq!(config.limits.workers, 3);
        assert_eq!(config.threads, 1);
        assert_eq!(config.limits.queue_capacity, 5);
        let config = Config::from_toml("threads = 4", &Overrides::default()).expect("ok");
        assert_eq!(config.threads, 4);
        assert!(config.to_toml().contains("threads = 4"));
    }

    #[test]
    fn problems_name_their_key() {
        assert!(invalid("wrokers = 2").contains("wrokers"));
        assert!(invalid("workers = 0").contains("workers: 0 is out of range"));
        assert!(invalid("threads = 0").contains("threads: 0 is out of range"));
        assert!(invalid("workers = \"two\"").contains("workers"));
        assert!(invalid("listen = \"nowhere\"").contains("listen"));
        assert!(invalid("allowed_origins = [\"*\"]").contains("allowed_origins"));
        assert!(invalid("idle_timeout_s = 30").contains("idle_timeout_s: 30 is out of range"));
        assert!(invalid("header_read_timeout_s = 0").contains("header_read_timeout_s"));
        let e = invalid("max_http_connections = 10\nmax_connections_per_ip = 11");
        assert!(e.contains("max_connections_per_ip: 11 is more than"), "{e}");
        let e = invalid("[[api_keys]]\nname = \"a\"\nsha256 = \"zz\"");
        assert!(e.contains("api_keys[0].sha256"), "{e}");
        let e = invalid("[[api_keys]]\nname = \"a\"\nsha256 = \"sha256:\"");
        assert!(e.contains("api_keys"), "{e}");
    }

    #[test]
    fn keys_accept_both_digest_spellings() {
        let hex = "ab".repeat(32);
        let text = format!(
            "[[api_keys]]\nname = \"a\"\nsha256 = \"{hex}\"\n[[api_keys]]\nname = \"b\"\nsha256 = \"sha256:{hex}\"\nadmin = true"
        );
        let config = Config::from_toml(&text, &Overrides::default()).expect("ok");
        assert_eq!(config.security.api_keys.len(), 2);
        assert_eq!(config.security.api_keys[0].digest, [0xab; 32]);
        assert!(config.security.api_keys[1].is_admin());
        assert!(!config.to_toml().contains(&hex));
    }

    #[test]
    fn worker_sections_and_knobs() {
        let text = r#"
builtin_workers = 3
heartbeat_interval_s = 2
cancel_grace_s = 4
max_attempts = 3
[[workers]]
name = "pdf"
command = ["node", "worker.mjs"]
args = ["--fast"]
env = { TOKEN = "secret-value" }
instances = 4
max_tasks = 100
tasks = ["render"]
[[tasks]]
name = "render"
description = "Renders a page"
input_schema = { type = "object", required = ["page"] }
timeout_s = 30
retry_safe = true
[[api_keys]]
name = "pool"
sha256 = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
role = "worker"
"#;
        let config = Config::from_toml(text, &Overrides::default()).expect("valid");
        assert_eq!(config.limits.workers, 3);
        let w = &config.workers;
        assert_eq!(w.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(w.heartbeat_timeout, Duration::from_secs(15));
        assert_eq!(config.limits.cancel_grace, Duration::from_secs(4));
        assert_eq!(config.limits.max_attempts, 3);
        assert_eq!(w.groups[0].instances, 4);
        assert_eq!(w.groups[0].command, ["node", "worker.mjs"]);
        assert_eq!(w.groups[0].max_tasks, Some(100));
        assert_eq!(w.tasks[0].timeout, Some(Duration::from_secs(30)));
        assert!(w.tasks[0].retry_safe);
        assert_eq!(
            w.tasks[0].input_schema,
            Some(serde_json::json!({"type": "object", "required": ["page"]}))
        );
        assert_eq!(config.security.api_keys[0].role, KeyRole::Worker);
        let shown = config.to_toml();
        assert!(
            shown.contains("TOKEN") && !shown.contains("secret-value"),
            "{shown}"
        );
        // v1's `workers = N` still sets the pool.
        let config = Config::from_toml("workers = 5", &Overrides::default()).expect("v1");
        assert_eq!(config.limits.workers, 5);
        assert!(config.workers.groups.is_empty());
    }

    #[test]
    fn worker_problems_name_their_key() {
        let cases = [
            (
                "[[workers]]\nname = \"a b\"\ncommand = [\"x\"]",
                "workers[0].name",
            ),
            (
                "[[workers]]\nname = \"a\"\ncommand = []",
                "workers[0].command",
            ),
            (
                "[[workers]]\nname = \"a\"\ncommand = \"node w.mjs\"",
                "command",
            ),
            (
                "[[workers]]\nname = \"a\"\ncommand = [\"x\"]\ninstances = 0",
                "workers[0].instances",
            ),
            (
                "[[workers]]\nname = \"a\"\ncommand = [\"x\"]\n[[workers]]\nname = \"a\"\ncommand = [\"y\"]",
                "used twice",
            ),
            (
                "[[tasks]]\nname = \"t\"\ninput_schema = { type = \"nope\" }",
                "tasks[0].input_schema",
            ),
            (
                "[[tasks]]\nname = \"t\"\ninput_schema_file = \"/no/such/file.json\"",
                "tasks[0].input_schema_file",
            ),
            (
                "heartbeat_interval_s = 10\nheartbeat_timeout_s = 15",
                "heartbeat_timeout_s",
            ),
            ("max_attempts = 0", "max_attempts"),
            ("workers = 2\nbuiltin_workers = 2", "builtin_workers"),
            (
                "[[api_keys]]\nname = \"a\"\nsha256 = \"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\"\nrole = \"worker\"\nadmin = true",
                "contradicts",
            ),
            (
                "[[api_keys]]\nname = \"a\"\nsha256 = \"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\"\nrole = \"root\"",
                "role",
            ),
        ];
        for (text, expected) in cases {
            let e = invalid(text);
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            normalize_origin("HTTPS://Indico.Example.org/").as_deref(),
            Ok("https://indico.example.org")
        );
        assert!(normalize_origin("https://a.org/path").is_err());
        assert!(normalize_origin("ftp://a.org").is_err());
        // The default port is left out, as browsers do; another is kept.
        assert_eq!(
            normalize_origin("https://a.org:443").as_deref(),
            Ok("https://a.org")
        );
        assert_eq!(
            normalize_origin("http://a.org:80").as_deref(),
            Ok("http://a.org")
        );
        assert_eq!(
            normalize_origin("https://a.org:80").as_deref(),
            Ok("https://a.org:80")
        );
        let long = format!("https://{}.org", "a".repeat(MAX_ORIGIN_BYTES));
        assert!(normalize_origin(&long).is_err());
    }
}
