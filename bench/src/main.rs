//! `taskwire-bench`: load generator for `taskwire serve`.
//!
//! Each mode prints ONE JSON object on stdout (also on failure, with an
//! `error` field and exit status 1), so `bench/run.sh` can collect runs as
//! JSON lines. See `BENCHMARKS.md` for the commands and the numbers.
//!
//! Modules: [`tasks`] (throughput and latency), [`conns`] (memory per idle
//! connection), [`download`] (file links), [`booklet`] (end to end), with
//! [`ws`] and [`http`] as the client plumbing and [`proc`] reading `/proc`.

mod booklet;
mod conns;
mod download;
mod http;
mod proc;
mod tasks;
mod worker;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "taskwire-bench",
    version,
    about = "Load generator for taskwire: prints one JSON object per run."
)]
struct Cli {
    /// Client runtime threads (default: the CPUs this process may use).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 600)]
    timeout_s: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// C connections × W tasks in flight until N tasks ended: tasks/s, latency.
    Tasks {
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        /// API key (sent as `Authorization: Bearer`).
        #[arg(long, env = "TASKWIRE_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value = "echo")]
        task: String,
        /// The task input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// Server process, for its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// N authenticated idle connections: server memory per connection.
    Conns {
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        #[arg(long, env = "TASKWIRE_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Server process, for its resident memory (VmRSS).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Milliseconds to wait before reading memory.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
    },
    /// A `blob` of --size bytes, then its link fetched --count times: MB/s.
    Download {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, env = "TASKWIRE_API_KEY", hide_env_values = true)]
        key: String,
        #[arg(long, default_value_t = 64 * 1024 * 1024)]
        size: u64,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// A remote worker serving a no-op task until the server closes it.
    Worker {
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/worker")]
        url: String,
        /// A worker key (`role = "worker"`).
        #[arg(long, env = "TASKWIRE_WORKER_KEY", hide_env_values = true)]
        key: String,
        #[arg(long, default_value = "bench")]
        name: String,
        #[arg(long, default_value = "noop")]
        task: String,
        #[arg(long, default_value_t = 64)]
        slots: u32,
    },
    /// `abstract_booklet` of a generated event: submit to completed (link).
    Booklet {
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        #[arg(long, env = "TASKWIRE_API_KEY", hide_env_values = true)]
        key: String,
        /// Contributions in the generated event (1 to 10,000).
        #[arg(long, default_value_t = 3000)]
        contributions: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Event seed; seed % 3 picks the shape (0: Indico export, 1: its
        /// envelope, 2: the plugin shape).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Why a run failed; printed as `{"mode": ..., "error": ...}`.
#[derive(Debug)]
pub struct BenchError(pub String);

impl BenchError {
    pub fn new(message: impl Into<String>) -> BenchError {
        BenchError(message.into())
    }

    pub fn io(e: std::io::Error) -> BenchError {
        BenchError(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("taskwire-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(cli.timeout_s);
    let (name, outcome) = runtime.block_on(async move {
        match cli.mode {
            Mode::Tasks {
                url,
                key,
                connections,
                in_flight,
                count,
                task,
                input,
                server_pid,
            } => {
                let args = tasks::TasksArgs {
                    url,
                    key,
                    connections,
                    in_flight,
                    count,
                    task,
                    input,
                    server_pid: server_pid.map(|p| p.to_string()),
                    timeout,
                };
                ("tasks", tasks::run(args).await)
            }
            Mode::Conns {
                url,
                key,
                count,
                server_pid,
                settle_ms,
            } => {
                let args = conns::ConnsArgs {
                    url,
                    key,
                    count,
                    server_pid: server_pid.map(|p| p.to_string()),
                    settle: Duration::from_millis(settle_ms),
                    timeout,
                };
                ("conns", conns::run(args).await)
            }
            Mode::Download {
                url,
                key,
                size,
                count,
            } => (
                "download",
                download::run(download::DownloadArgs {
                    url,
                    key,
                    size,
                    count,
                    timeout,
                })
                .await,
            ),
            Mode::Worker {
                url,
                key,
                name,
                task,
                slots,
            } => (
                "worker",
                worker::run(worker::WorkerArgs {
                    url,
                    key,
                    name,
                    task,
                    slots,
                })
                .await,
            ),
            Mode::Booklet {
                url,
                key,
                contributions,
                runs,
                seed,
            } => {
                let args = booklet::BookletArgs {
                    url,
                    key,
                    contributions,
                    runs,
                    seed,
                    timeout,
                };
                ("booklet", booklet::run(args).await)
            }
        }
    });
    // Sockets still open in spawned loops must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(report) => {
            emit(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            emit(&json!({"mode": name, "error": e.0}));
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn emit(report: &Value) {
    println!("{report}");
}

/// Latency percentiles in µs from an HDR histogram.
pub fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"samples": 0});
    }
    json!({
        "samples": h.len(),
        "min": h.min(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
    })
}

/// Median, min and max of a few samples (`null`s when there are none).
pub fn summary(values: &[f64]) -> Value {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    };
    json!({
        "median": median,
        "min": sorted.first(),
        "max": sorted.last(),
        "samples": sorted,
    })
}
