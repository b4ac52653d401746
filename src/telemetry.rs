//! Logs and metrics.
//!
//! Logs: `tracing` with dotted fields (`task.id`, `conn.id`, `client.id`),
//! text or JSON, filtered by `RUST_LOG` (default `info`) under a fixed
//! ceiling for other crates ([`ceiling`]). Never a key, a token, an
//! `Authorization` header, a task's input or result.
//!
//! Metrics: one Prometheus registry, every name `taskwire_*`. Per-task
//! handles ([`TaskMetrics`]) are made once per task name and cloned into each
//! task, so the hot path is an atomic add, not a label lookup.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::LogFormat;

/// Installs the global subscriber. Logs go to stderr, filtered by
/// `RUST_LOG` (default `info`) under [`ceiling`].
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(ceiling()).with(filter);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry.with(output).try_init(),
        LogFormat::Json => registry.with(output.json().flatten_event(true)).try_init(),
    };
}

/// The most any `RUST_LOG` can turn on: our own targets up to `trace`,
/// tower-http's request log up to `debug` (our trace layer records the route
/// template and the status, nothing else), every other crate up to `info`.
/// Below that, dependencies log what must never reach a log: tungstenite
/// (through the `log` bridge) every WebSocket frame, with the `auth`
/// message's key and task inputs in them; hyper and h2 (with their tracing
/// features) headers, `Authorization` included; axum rejected bodies.
pub fn ceiling() -> tracing_subscriber::filter::Targets {
    use tracing::level_filters::LevelFilter;
    tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("taskwire", LevelFilter::TRACE)
        .with_target("taskwire_protocol", LevelFilter::TRACE)
        .with_target("tower_http", LevelFilter::DEBUG)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskOutcome {
    task: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskName {
    task: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Limit {
    limit: &'static str,
}

fn duration_histogram() -> Histogram {
    // 100 µs .. ~1.8 h, ×2.5 per bucket.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.5, 18,
    ))
}

/// Every metric of the service; cheap to clone (all handles are `Arc`s).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    outcomes: Family<TaskOutcome, Counter>,
    submitted: Family<TaskName, Counter>,
    durations: Family<TaskName, Histogram, fn() -> Histogram>,
    rejections: Family<Code, Counter>,
    connections: Family<Kind, Gauge>,
    refused: Family<Limit, Counter>,
    per_task: Arc<RwLock<HashMap<Arc<str>, TaskMetrics>>>,
    pub queue_depth: Gauge,
    pub tasks_running: Gauge,
    pub tasks_held: Gauge,
    pub workers: Gauge,
    pub workers_busy: Gauge,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub slow_consumers: Counter,
    pub temp_bytes: Gauge,
    pub queued_input_bytes: Gauge,
    pub held_result_bytes: Gauge,
    /// Open TCP connections to the listener (WebSockets included).
    pub http_connections: Gauge,
    /// Per worker group: connected workers, slots, busy slots, lost
    /// workers, restarts.
    pub worker_groups: WorkerGroupMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupName {
    group: Arc<str>,
}

/// The metric families of worker groups (managed `[[workers]]` groups, and
/// remote workers grouped by the name of their key).
#[derive(Clone, Debug, Default)]
pub struct WorkerGroupMetrics {
    connected: Family<GroupName, Gauge>,
    slots: Family<GroupName, Gauge>,
    busy: Family<GroupName, Gauge>,
    lost: Family<GroupName, Counter>,
    restarts: Family<GroupName, Counter>,
}

impl WorkerGroupMetrics {
    fn label(group: &Arc<str>) -> GroupName {
        GroupName {
            group: Arc::clone(group),
        }
    }
    pub fn connected(&self, group: &Arc<str>) -> Gauge {
        self.connected.get_or_create_owned(&Self::label(group))
    }
    pub fn slots(&self, group: &Arc<str>) -> Gauge {
        self.slots.get_or_create_owned(&Self::label(group))
    }
    pub fn busy(&self, group: &Arc<str>) -> Gauge {
        self.busy.get_or_create_owned(&Self::label(group))
    }
    pub fn lost(&self, group: &Arc<str>) -> Counter {
        self.lost.get_or_create_owned(&Self::label(group))
    }
    pub fn restarts(&self, group: &Arc<str>) -> Counter {
        self.restarts.get_or_create_owned(&Self::label(group))
    }
}

/// The metric handles of one task name.
#[derive(Clone, Debug)]
pub struct TaskMetrics {
    pub submitted: Counter,
    pub completed: Counter,
    pub failed: Counter,
    pub cancelled: Counter,
    pub duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("taskwire");
        let outcomes = Family::<TaskOutcome, Counter>::default();
        let submitted = Family::<TaskName, Counter>::default();
        let durations = Family::<TaskName, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let rejections = Family::<Code, Counter>::default();
        let connections = Family::<Kind, Gauge>::default();
        let refused = Family::<Limit, Counter>::default();
        let metrics = Metrics {
            registry: Arc::new(Registry::default()),
            outcomes,
            submitted,
            durations,
            rejections,
            connections,
            refused,
            per_task: Arc::default(),
            queue_depth: Gauge::default(),
            tasks_running: Gauge::default(),
            tasks_held: Gauge::default(),
            workers: Gauge::default(),
            workers_busy: Gauge::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            slow_consumers: Counter::default(),
            temp_bytes: Gauge::default(),
            queued_input_bytes: Gauge::default(),
            held_result_bytes: Gauge::default(),
            http_connections: Gauge::default(),
            worker_groups: WorkerGroupMetrics::default(),
        };
        let m = &metrics;
        registry.register(
            "tasks",
            "Tasks that reached a terminal state, by task name and outcome",
            m.outcomes.clone(),
        );
        registry.register(
            "tasks_submitted",
            "Tasks accepted into the queue, by task name",
            m.submitted.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Running time of finished tasks, by task name",
            m.durations.clone(),
        );
        registry.register(
            "rejections",
            "Requests answered with an error, by error code",
            m.rejections.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket and SSE connections",
            m.connections.clone(),
        );
        registry.register("queue_depth", "Tasks waiting to run", m.queue_depth.clone());
        registry.register(
            "tasks_running",
            "Tasks running now",
            m.tasks_running.clone(),
        );
        registry.register(
            "tasks_held",
            "Tasks held in memory, finished ones included",
            m.tasks_held.clone(),
        );
        registry.register(
            "workers",
            "Executor slots (built-in pool and external workers)",
            m.workers.clone(),
        );
        registry.register(
            "workers_busy",
            "Worker slots in use (a cancelled task holds its slot until its handler returns)",
            m.workers_busy.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes of WebSocket messages and REST bodies received",
            m.bytes_received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Bytes of WebSocket messages, SSE events and downloads sent",
            m.bytes_sent.clone(),
        );
        registry.register(
            "slow_consumers",
            "Connections closed because their send queue filled",
            m.slow_consumers.clone(),
        );
        registry.register(
            "temp_bytes",
            "Bytes of staged and published files, against max_temp_bytes",
            m.temp_bytes.clone(),
        );
        registry.register(
            "queued_input_bytes",
            "Bytes of queued task inputs, against max_queued_input_bytes",
            m.queued_input_bytes.clone(),
        );
        registry.register(
            "held_result_bytes",
            "Bytes of finished tasks' held events, against max_held_result_bytes",
            m.held_result_bytes.clone(),
        );
        registry.register(
            "http_connections",
            "Open TCP connections to the listener, WebSockets included (max_http_connections)",
            m.http_connections.clone(),
        );
        registry.register(
            "connections_refused",
            "TCP connections closed at accept, by the cap they hit (total: max_http_connections, per_ip: max_connections_per_ip)",
            m.refused.clone(),
        );
        for limit in ["total", "per_ip"] {
            let _ = m.refused.get_or_create(&Limit { limit });
        }
        let groups = &m.worker_groups;
        registry.register(
            "worker_group_connected",
            "Workers connected (remote) or running (managed), by worker group",
            groups.connected.clone(),
        );
        registry.register(
            "worker_group_slots",
            "Slots of connected workers, by worker group",
            groups.slots.clone(),
        );
        registry.register(
            "worker_group_busy",
            "Slots running an attempt, by worker group",
            groups.busy.clone(),
        );
        registry.register(
            "worker_group_lost",
            "Workers lost with attempts running (exit, hung, disconnected, cancel ignored, violations), by worker group",
            groups.lost.clone(),
        );
        registry.register(
            "worker_group_restarts",
            "Restarts of managed worker processes, by worker group",
            groups.restarts.clone(),
        );
        for code in crate::protocol::ErrorCode::ALL {
            let _ = m.rejections.get_or_create(&Code {
                code: code.as_str(),
            });
        }
        for kind in ["ws", "sse"] {
            let _ = m.connections.get_or_create(&Kind { kind });
        }
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The handles of one task name (made on first use).
    pub fn task(&self, name: &Arc<str>) -> TaskMetrics {
        if let Ok(map) = self.per_task.read()
            && let Some(found) = map.get(name)
        {
            return found.clone();
        }
        let outcome = |outcome| {
            self.outcomes.get_or_create_owned(&TaskOutcome {
                task: Arc::clone(name),
                outcome,
            })
        };
        let made = TaskMetrics {
            submitted: self.submitted.get_or_create_owned(&TaskName {
                task: Arc::clone(name),
            }),
            completed: outcome("completed"),
            failed: outcome("failed"),
            cancelled: outcome("cancelled"),
            duration: self.durations.get_or_create_owned(&TaskName {
                task: Arc::clone(name),
            }),
        };
        if let Ok(mut map) = self.per_task.write() {
            map.insert(Arc::clone(name), made.clone());
        }
        made
    }

    /// Counts a request answered with `code`.
    pub fn rejected(&self, code: crate::protocol::ErrorCode) {
        self.rejections
            .get_or_create(&Code {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts a connection closed at accept by `limit` (`total` or `per_ip`).
    pub fn connection_refused(&self, limit: &'static str) {
        self.refused.get_or_create(&Limit { limit }).inc();
    }

    /// The open-connections gauge of a kind (`ws` or `sse`).
    pub fn connections(&self, kind: &'static str) -> Gauge {
        self.connections.get_or_create_owned(&Kind { kind })
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
