//! Managed workers: the `[[workers]]` groups' processes, started by
//! `taskwire serve`, one loop per instance.
//!
//! Each process is a child in its own process group (so a signal reaches
//! whatever it starts), with `kill_on_drop`, and — when the launcher is
//! known (`taskwire`'s own binary) — started through `taskwire
//! worker-exec`, which sets the Linux parent-death signal (SIGKILL) on
//! itself, starts the worker's group reaper (`taskwire worker-reap`) and
//! then `exec`s the worker: if `serve` dies, even by SIGKILL, the worker
//! dies with it, and when the worker dies (that way or any other) the
//! reaper kills the worker's process group, so what the worker started dies
//! too (a descendant that leaves the group, with `setsid` or `setpgid`, is
//! beyond it). (The signal is tied to the thread that spawned
//! the child; instances spawn from the runtime's worker threads, which live
//! as long as `serve`.) Every start, exit (code or signal) and restart is
//! logged under the worker's name; restarts back off exponentially
//! (capped, with jitter). A process that sends no `hello` within
//! `startup_timeout_s` is killed and restarted the same way.
//!
//! At shutdown each process gets `drain`, then (once its attempts ended)
//! its stdin closes; whatever still runs after `shutdown_grace` gets
//! SIGTERM, then SIGKILL.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Workers;
use super::board::WorkerView;
use super::config::GroupConfig;
use super::driver::{Driver, Files};
use super::session::Session;
use super::stdio::{self, ProcessEnd};
use crate::exec::{ExecutorKind, LostCause};

/// First restart delay; doubles per failed start up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A process that was ready this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The managed groups' instance loops.
#[derive(Debug)]
pub struct Supervisor {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Supervisor {
    /// Starts every instance of every group.
    pub fn start(workers: &Workers) -> Supervisor {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        for group in &workers.config().groups {
            workers.board().managed_group(&group.name);
            for index in 1..=group.instances {
                tracker.spawn(instance(
                    workers.clone(),
                    group.clone(),
                    index,
                    stop.clone(),
                ));
            }
        }
        tracker.close();
        Supervisor { stop, tracker }
    }

    /// Drains and stops every process; returns when all are gone.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn instance(workers: Workers, group: GroupConfig, index: usize, stop: CancellationToken) {
    let name: Arc<str> = Arc::from(format!("{}-{index}", group.name));
    let mut backoff = Backoff::default();
    let mut restarts: u64 = 0;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let end = match spawn(&workers, &group, &name) {
            Ok(child) => run_process(&workers, &group, &name, child, restarts, &stop).await,
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "cannot start worker");
                None
            }
        };
        if stop.is_cancelled() {
            break;
        }
        let healthy = end
            .as_ref()
            .is_some_and(|end| end.was_ready && started.elapsed() >= BACKOFF_RESET);
        let recycled = end.as_ref().is_some_and(|end| {
            end.kill.is_none() && group.max_tasks.is_some_and(|max| end.tasks >= max)
        });
        if healthy || recycled {
            backoff = Backoff::default();
        }
        let delay = if recycled {
            Duration::ZERO
        } else {
            backoff.next()
        };
        restarts += 1;
        workers.board().restarted(&group.name);
        tracing::info!(worker = %name, restarts, delay_ms = delay.as_millis() as u64, "restarting worker");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
}

fn spawn(workers: &Workers, group: &GroupConfig, name: &str) -> std::io::Result<Child> {
    let mut command = match &workers.config().launcher {
        Some(launcher) => {
            let mut command = Command::new(launcher);
            command
                .arg("worker-exec")
                .arg("--parent")
                .arg(std::process::id().to_string())
                .arg("--")
                .args(&group.command);
            command
        }
        None => {
            let mut command = Command::new(&group.command[0]);
            command.args(&group.command[1..]);
            command
        }
    };
    command
        .args(&group.args)
        .envs(&group.env)
        .env("TASKWIRE_TRANSPORT", "stdio")
        .env("TASKWIRE_WORKER_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &group.cwd {
        command.current_dir(cwd);
    }
    command.spawn()
}

async fn run_process(
    workers: &Workers,
    group: &GroupConfig,
    name: &Arc<str>,
    mut child: Child,
    restarts: u64,
    stop: &CancellationToken,
) -> Option<ProcessEnd> {
    let pid = child.id();
    tracing::info!(worker = %name, pid, "worker started");
    let kind = ExecutorKind::Managed {
        group: Arc::clone(&group.name),
        pid,
    };
    let entry = workers.board().join(
        WorkerView {
            id: None,
            name: Arc::clone(name),
            group: Some(Arc::clone(&group.name)),
            kind: "managed",
            pid,
            peer: None,
            tasks: Vec::new(),
            slots: 0,
            running: Vec::new(),
            state: "starting",
            connected_at: std::time::SystemTime::now(),
            last_heartbeat_at: None,
            done: 0,
            failed: 0,
            restarts: Some(restarts),
        },
        Arc::clone(&group.name),
    );
    let session = Session::new(
        workers.settings(Some(group)),
        kind,
        Some(Arc::clone(name)),
        Instant::now(),
    );
    let driver = Driver::new(
        session,
        workers.scheduler().clone(),
        workers.artifacts().clone(),
        Files::OutputDir,
        workers.max_file_bytes(),
        entry,
    )
    .with_inputs(workers.inputs().clone(), workers.public_url());
    let mut end = stdio::run(
        &mut child,
        driver,
        workers.max_message_bytes(),
        group.max_tasks,
        stop.clone(),
    )
    .await;
    if end.status.is_none() {
        end.status = stop_process(
            &mut child,
            pid,
            end.kill.is_some(),
            workers.shutdown_grace(),
        )
        .await;
    }
    // Whatever the worker started in its group goes with it.
    if let Some(pid) = pid {
        kill_group(pid, rustix::process::Signal::KILL);
    }
    if matches!(end.kill, Some(LostCause::Hung)) && !end.was_ready {
        tracing::warn!(
            worker = %name,
            startup_timeout_s = group.startup_timeout.as_secs(),
            "worker sent no hello in time; killed"
        );
    }
    log_exit(name, end.status.as_ref());
    Some(end)
}

/// Ends a process whose session is over: at once when it was lost, else
/// after `grace` (it should exit by itself once its stdin closed), then
/// SIGTERM to its group, then SIGKILL.
async fn stop_process(
    child: &mut Child,
    pid: Option<u32>,
    lost: bool,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if !lost && let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status.ok();
    }
    if let Some(pid) = pid
        && !lost
    {
        kill_group(pid, rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(TERM_GRACE, child.wait()).await {
            return status.ok();
        }
    }
    if let Some(pid) = pid {
        kill_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

fn kill_group(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // ESRCH: the group is gone already.
    let _ = rustix::process::kill_process_group(pid, signal);
}

fn log_exit(name: &str, status: Option<&std::process::ExitStatus>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => tracing::info!(worker = %name, code, "worker exited"),
            (None, Some(signal)) => {
                tracing::info!(worker = %name, signal, "worker killed by signal")
            }
            (None, None) => tracing::info!(worker = %name, "worker exited"),
        },
        None => tracing::info!(worker = %name, "worker ended (status unknown)"),
    }
}

/// Capped exponential backoff with jitter (±20 %).
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = BACKOFF_START
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        let mut bytes = [0u8; 2];
        let _ = getrandom::fill(&mut bytes);
        let jitter = 0.8 + 0.4 * f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX);
        base.mul_f64(jitter)
    }
}

/// `taskwire worker-exec --parent <pid> -- <command…>`: the launcher of a
/// managed worker. Sets the parent-death signal, checks the parent is
/// still `serve` (it could have died before), then becomes the worker.
/// Returns only if that fails.
pub fn exec_worker(parent: u32, argv: &[std::ffi::OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        return e.into();
    }
    let parent_now = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if parent_now != i32::try_from(parent).ok() {
        return std::io::Error::other("taskwire serve is gone");
    }
    let Some((program, args)) = argv.split_first() else {
        return std::io::Error::other("no worker command");
    };
    // `serve` runs without transparent huge pages; the worker runs with
    // the system's default (the setting is inherited across exec).
    let _ = rustix::thread::disable_transparent_huge_pages(false);
    if let Err(e) = start_group_reaper() {
        // The worker still runs and still dies with `serve`; only what it
        // starts could outlive it.
        eprintln!(
            "taskwire worker-exec: no group reaper ({e}); the worker's children may outlive it"
        );
    }
    std::process::Command::new(program).args(args).exec()
}

/// Starts the worker's **group reaper** (`taskwire worker-reap`), and
/// returns once it watches this process (the worker-to-be: the `exec` that
/// follows keeps the pid). It shares the worker's process group.
fn start_group_reaper() -> std::io::Result<()> {
    use std::io::Read;
    let mut reaper = std::process::Command::new(std::env::current_exe()?)
        .arg("worker-reap")
        .arg("--worker")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // One byte once it holds a pidfd of this process (no pid reuse can
    // fool it after that); the pipe is close-on-exec, the worker never
    // sees it.
    let mut watching = [0u8; 1];
    let read = match reaper.stdout.take() {
        Some(mut out) => out.read(&mut watching)?,
        None => 0,
    };
    if read == 1 {
        Ok(())
    } else {
        Err(std::io::Error::other("the reaper did not start"))
    }
}

/// `taskwire worker-reap --worker <pid>`: waits for the managed worker
/// `pid` to die, however it dies (its own exit, a crash, or the SIGKILL
/// of its parent-death signal when `serve` dies), then kills its process
/// group, so that whatever the worker started (a shell's children, a pool
/// of subprocesses) dies with it: the worker's parent-death signal covers
/// the worker, the reaper its descendants. Signals sent to the group
/// (`serve`'s SIGTERM at shutdown, a terminal's Ctrl-C) are the worker's
/// business, and the reaper ignores them.
pub fn reap_worker_group(worker: u32) {
    use std::io::Write;
    let Some(pid) = i32::try_from(worker)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // Handled (so not fatal), never acted on: tokio's handlers only note
    // them. The runtime is kept for that; nothing runs on it.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let _ignored: Vec<_> = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = runtime.enter();
        [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .filter_map(|kind| signal(kind).ok())
        .collect()
    };
    let watch = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Some(fd),
        // Dead already: its group goes now.
        Err(rustix::io::Errno::SRCH) => None,
        // Cannot watch it (a kernel before 5.3): do nothing rather than
        // kill a live group.
        Err(_) => return,
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(b"1").and_then(|()| out.flush());
    if let Some(fd) = watch {
        use rustix::event::{PollFd, PollFlags, poll};
        // A pidfd turns readable when its process has exited; a signal
        // interrupts the wait, which goes on.
        loop {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, None) {
                Err(rustix::io::Errno::INTR) => {}
                // Unknown whether it lives: leave the group alone.
                Err(_) => return,
                Ok(_) if fds[0].revents().is_empty() => {}
                Ok(_) => break,
            }
        }
    }
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut backoff = Backoff::default();
        let first = backoff.next();
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        let second = backoff.next();
        assert!(second >= Duration::from_millis(800) && second <= Duration::from_millis(1200));
        for _ in 0..20 {
            assert!(backoff.next() <= BACKOFF_MAX.mul_f64(1.2));
        }
    }
}
