//! The `taskwire` command: `serve`, `config`, `keygen`, and the client
//! subcommands of `taskwire_client::cli` (`submit`, `status`, `events`,
//! `cancel`, `answer`, `tasks`, `top`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use taskwire::config::{Config, KeyConfig, KeyRole, KeySource, Overrides};

/// mimalloc instead of glibc's malloc: a task's trip through the server is
/// many small, short-lived allocations across threads (frames, JSON,
/// NATS messages and headers), where glibc's arenas cost about a sixth
/// of the CPU in cluster mode (`BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "taskwire",
    version,
    about = "A compute-task service: submit tasks over WebSocket or REST, follow their events, download their files."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the service (WebSocket, REST, downloads, demo and monitoring pages).
    Serve(Overrides),
    /// Prints the effective configuration (no secrets).
    Config(Overrides),
    /// Prints a new API key and its `[[api_keys]]` block for the config file.
    Keygen {
        /// The key's name (the client its tasks belong to).
        #[arg(long, default_value = "default")]
        name: String,
        /// May watch and cancel every client's tasks (monitoring page).
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// What the key may do: client (default), admin, or worker (serve
        /// tasks on `GET /v1/worker`, nothing else).
        #[arg(long, value_parser = ["client", "admin", "worker"])]
        role: Option<String>,
    },
    /// Starts a managed worker with the parent-death signal set (used by
    /// `serve` for `[[workers]]` processes; not for direct use).
    #[command(hide = true)]
    WorkerExec {
        /// The pid of the `serve` process that started it.
        #[arg(long)]
        parent: u32,
        /// The worker's command and arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Waits for a managed worker to die, then kills its process group
    /// (started by `worker-exec`; not for direct use).
    #[command(hide = true)]
    WorkerReap {
        /// The worker's pid, which is also its process group's id.
        #[arg(long)]
        worker: u32,
    },
    #[command(flatten)]
    Client(taskwire_client::cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(overrides) => serve(&overrides),
        Command::Config(overrides) => match load(&overrides) {
            Ok(config) => {
                print(&config.to_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Keygen { name, admin, role } => keygen(&name, admin, role.as_deref()),
        Command::WorkerExec { parent, command } => {
            let error = taskwire::workers::supervisor::exec_worker(parent, &command);
            eprintln!("taskwire worker-exec: {error}");
            ExitCode::from(127)
        }
        Command::WorkerReap { worker } => {
            taskwire::workers::supervisor::reap_worker_group(worker);
            ExitCode::SUCCESS
        }
        Command::Client(command) => taskwire_client::cli::run(command),
    }
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    print!("{text}");
}

fn load(overrides: &Overrides) -> Result<Config, ExitCode> {
    let env_key = std::env::var("TASKWIRE_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    Config::load(overrides, env_key.as_deref()).map_err(|e| {
        eprintln!("taskwire: {e}");
        ExitCode::from(2)
    })
}

fn keygen(name: &str, admin: bool, role: Option<&str>) -> ExitCode {
    let key = match taskwire::auth::generate_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("taskwire: no randomness available: {e}");
            return ExitCode::FAILURE;
        }
    };
    let digest = taskwire::auth::hex(&taskwire::auth::digest(&key));
    let name = toml::Value::String(name.to_owned());
    let grant = match role {
        Some(role) => format!("role = \"{role}\""),
        None => format!("admin = {admin}"),
    };
    print(&format!(
        "# The key (give it to the client; it is not stored anywhere):\n# {key}\n\n[[api_keys]]\nname = {name}\nsha256 = \"{digest}\"\n{grant}\n"
    ));
    ExitCode::SUCCESS
}

fn serve(overrides: &Overrides) -> ExitCode {
    // No transparent huge pages for `serve`: under load, memory the
    // allocator takes fresh or gives back and takes again was faulted in
    // 2 MiB at a time, and the kernel's zeroing of it was ~10 % of a
    // cluster node's CPU (BENCHMARKS.md, "Huge pages off"). Managed
    // workers get the system's default back (`worker-exec`).
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let mut config = match load(overrides) {
        Ok(config) => config,
        Err(code) => return code,
    };
    taskwire::telemetry::init_logging(config.log_format);
    // Managed workers start through this binary, which gives each the
    // parent-death signal before it becomes the worker.
    config.workers.launcher = std::env::current_exe().ok();
    let demo_key = if config.security.api_keys.is_empty() {
        match taskwire::auth::generate_key() {
            Ok(key) => {
                config.security.api_keys.push(KeyConfig {
                    name: "demo".to_owned(),
                    digest: taskwire::auth::digest(&key),
                    role: KeyRole::Admin,
                    source: KeySource::Demo,
                });
                Some(key)
            }
            Err(e) => {
                eprintln!("taskwire: no randomness available: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("taskwire: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("taskwire: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let address = listener.local_addr().unwrap_or(config.listen);
        tracing::info!(%address, workers = config.limits.workers, "listening");
        if let Some(key) = demo_key {
            let host = if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            };
            eprintln!(
                "\nNo API key is configured, so this run has a demo key (admin, for this run only).\n\
                 Demo page:       http://{host}/#key={key}\n\
                 Monitoring page: http://{host}/monitor#key={key}\n\
                 Configure keys with `taskwire keygen` for real use.\n"
            );
        }
        match taskwire::serve(listener, config, taskwire::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("taskwire: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
