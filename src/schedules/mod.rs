//! Schedules: tasks submitted on a timer (`cron` or `every`) and on demand
//! ("Run now"), each an ordinary task submitted through admission as the
//! schedule's key, tagged with the schedule's name.
//!
//! One loop owns every schedule's state: when it fires next, whether it is
//! paused, and its last [`RUNS_KEPT`] runs, which it follows through a
//! mailbox like any client (so the monitoring page can show each run's
//! state, duration and error). Each occurrence carries the idempotency key
//! `schedule:<name>:<occurrence>`: one occurrence never makes two tasks,
//! whoever fires it (in a cluster, every node computes the same key).
//!
//! Overlap: with `overlap = "skip"` (the default) an occurrence whose
//! previous run has not ended is recorded as skipped; with `"queue"` it is
//! submitted anyway. Missed occurrences (the server was down) are not
//! replayed unless `catch_up = "last"` (cron only), which submits the
//! latest occurrence before startup once, at startup.

pub mod spec;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use jiff::Zoned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::spec::{CatchUp, FileSchedule, Overlap, Schedule, When};
use crate::admission::{Admission, SubmitRequest};
use crate::auth::Principal;
use crate::scheduler::{Mailbox, Outbound, Scheduler};
use crate::task::{ClientId, EventRecord, TaskEvent, TaskFailure, TaskId};

/// Runs kept per schedule for the monitoring page (the oldest go first).
pub const RUNS_KEPT: usize = 20;
/// Events waiting for the schedules loop.
const INBOX: usize = 1024;

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Timer,
    Manual,
    CatchUp,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Timer => "timer",
            Trigger::Manual => "manual",
            Trigger::CatchUp => "catch_up",
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
    /// Not submitted: the previous run had not ended (`overlap = "skip"`).
    Skipped,
    /// Not submitted: admission or the scheduler refused it.
    Refused,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Waiting => "waiting",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
            RunState::Refused => "refused",
        }
    }

    fn is_over(self) -> bool {
        !matches!(
            self,
            RunState::Queued | RunState::Running | RunState::Waiting
        )
    }
}

/// One run of a schedule, as the monitoring page shows it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The occurrence it stands for (the time it was due).
    pub occurrence: SystemTime,
    pub trigger: Trigger,
    pub task_id: Option<TaskId>,
    pub state: RunState,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Why it failed, or was refused or skipped.
    pub failure: Option<TaskFailure>,
    /// The refusal or skip, in words.
    pub note: Option<String>,
}

/// A schedule as the monitoring page shows it.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub name: Arc<str>,
    pub task: String,
    pub when: String,
    pub overlap: Overlap,
    pub paused: bool,
    pub next_at: Option<SystemTime>,
    /// The newest first.
    pub runs: Vec<RunView>,
}

/// Why a request about a schedule failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("no schedule named {0:?}")]
    NotFound(String),
    #[error("the run was refused: {0}")]
    Refused(String),
    #[error("schedules are stopping")]
    Stopped,
}

enum Request {
    List(oneshot::Sender<Vec<ScheduleView>>),
    RunNow {
        name: String,
        reply: oneshot::Sender<Result<TaskId, ScheduleError>>,
    },
    Pause {
        name: String,
        paused: bool,
        reply: oneshot::Sender<Result<ScheduleView, ScheduleError>>,
    },
}

/// Handle to the schedules loop; cheap to clone.
#[derive(Clone, Debug)]
pub struct Schedules {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("schedules::Request")
    }
}

impl Schedules {
    /// Starts the loop (tracked by `tracker`, ending with `stop`).
    pub fn start(
        schedules: Vec<Schedule>,
        admission: Admission,
        scheduler: Scheduler,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Schedules {
        let (tx, rx) = mpsc::channel(64);
        let (mailbox, inbox, overflow) = Mailbox::new(INBOX);
        let now = Instant::now();
        let wall = Zoned::now();
        let entries = schedules
            .into_iter()
            .map(|schedule| Entry::new(schedule, now, &wall))
            .collect();
        let state = Loop {
            entries,
            admission,
            scheduler,
            mailbox,
            overflow,
        };
        tracker.spawn(state.run(rx, inbox, stop));
        Schedules { requests: tx }
    }

    pub async fn list(&self) -> Vec<ScheduleView> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::List(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Submits a run now, outside the timer; its task id.
    pub async fn run_now(&self, name: &str) -> Result<TaskId, ScheduleError> {
        let (reply, rx) = oneshot::channel();
        let request = Request::RunNow {
            name: name.to_owned(),
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| ScheduleError::Stopped)?;
        rx.await.unwrap_or(Err(ScheduleError::Stopped))
    }

    /// Pauses (no timer runs; "Run now" still works) or resumes.
    pub async fn pause(&self, name: &str, paused: bool) -> Result<ScheduleView, ScheduleError> {
        let (reply, rx) = oneshot::channel();
        let request = Request::Pause {
            name: name.to_owned(),
            paused,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| ScheduleError::Stopped)?;
        rx.await.unwrap_or(Err(ScheduleError::Stopped))
    }
}

struct Entry {
    schedule: Schedule,
    principal: Principal,
    paused: bool,
    /// When the timer fires next, and the occurrence it stands for.
    next: Option<(Instant, Zoned)>,
    runs: VecDeque<RunView>,
    /// Manual runs made so far (for their idempotency keys).
    manual: u64,
}

impl Entry {
    fn new(schedule: Schedule, now: Instant, wall: &Zoned) -> Entry {
        let principal = Principal {
            client: ClientId::new(&schedule.key),
            admin: schedule.admin,
            tasks: None,
            token: None,
        };
        let paused = !schedule.enabled;
        let mut entry = Entry {
            schedule,
            principal,
            paused,
            next: None,
            runs: VecDeque::new(),
            manual: 0,
        };
        entry.plan(now, wall);
        entry
    }

    /// Computes the next firing after `wall` (none while paused).
    fn plan(&mut self, now: Instant, wall: &Zoned) {
        self.next = if self.paused {
            None
        } else {
            self.schedule.when.next_after(wall).map(|at| {
                let wait = at.duration_since(wall).unsigned_abs();
                (now + wait, at)
            })
        };
    }

    fn view(&self) -> ScheduleView {
        ScheduleView {
            name: Arc::clone(&self.schedule.name),
            task: self.schedule.task.clone(),
            when: self.schedule.when.describe(),
            overlap: self.schedule.overlap,
            paused: self.paused,
            next_at: self
                .next
                .as_ref()
                .map(|(_, at)| SystemTime::from(at.timestamp())),
            runs: self.runs.iter().rev().cloned().collect(),
        }
    }

    fn record(&mut self, run: RunView) {
        if self.runs.len() == RUNS_KEPT {
            self.runs.pop_front();
        }
        self.runs.push_back(run);
    }

    /// The previous run has not ended.
    fn busy(&self) -> bool {
        self.runs.back().is_some_and(|r| !r.state.is_over())
    }
}

struct Loop {
    entries: Vec<Entry>,
    admission: Admission,
    scheduler: Scheduler,
    mailbox: Mailbox,
    overflow: CancellationToken,
}

impl Loop {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut inbox: mpsc::Receiver<Outbound>,
        stop: CancellationToken,
    ) {
        for i in 0..self.entries.len() {
            let entry = &self.entries[i];
            let missed = (entry.schedule.catch_up == CatchUp::Last && !entry.paused)
                .then(|| entry.schedule.when.last_at_or_before(&Zoned::now()))
                .flatten();
            if let Some(missed) = missed {
                // A refusal is recorded on the run.
                let _ = self.fire(i, missed, Trigger::CatchUp).await;
            }
        }
        loop {
            let due = self
                .entries
                .iter()
                .filter_map(|e| e.next.as_ref().map(|n| n.0))
                .min();
            tokio::select! {
                () = stop.cancelled() => break,
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request).await,
                    None => break,
                },
                message = inbox.recv() => match message {
                    Some(message) => self.on_message(message),
                    None => break,
                },
                () = self.overflow.cancelled() => {
                    inbox = self.resubscribe().await;
                }
                () = sleep_until_opt(due) => self.fire_due().await,
            }
        }
    }

    async fn fire_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.entries.len() {
            let Some((at, occurrence)) = self.entries[i].next.clone() else {
                continue;
            };
            if at > now {
                continue;
            }
            // A skip or a refusal is recorded on the run.
            let _ = self.fire(i, occurrence.clone(), Trigger::Timer).await;
            let entry = &mut self.entries[i];
            // `every` counts from the occurrence (no drift); cron from the
            // clock (a late wake-up never fires twice).
            match entry.schedule.when {
                When::Every(period) => {
                    let span = jiff::SignedDuration::try_from(period).unwrap_or_default();
                    entry.next = occurrence
                        .checked_add(span)
                        .ok()
                        .map(|next| (at + period, next));
                }
                When::Cron { .. } => entry.plan(Instant::now(), &Zoned::now().max(occurrence)),
            }
        }
    }

    /// Submits one run of schedule `i` for `occurrence`.
    async fn fire(
        &mut self,
        i: usize,
        occurrence: Zoned,
        trigger: Trigger,
    ) -> Result<TaskId, ScheduleError> {
        let entry = &mut self.entries[i];
        let name = Arc::clone(&entry.schedule.name);
        let mut run = RunView {
            occurrence: SystemTime::from(occurrence.timestamp()),
            trigger,
            task_id: None,
            state: RunState::Queued,
            started_at: None,
            finished_at: None,
            failure: None,
            note: None,
        };
        if trigger == Trigger::Timer && entry.schedule.overlap == Overlap::Skip && entry.busy() {
            run.state = RunState::Skipped;
            run.note = Some("the previous run had not ended".to_owned());
            tracing::info!(schedule = %name, "scheduled run skipped: the previous one still runs");
            entry.record(run);
            return Err(ScheduleError::Refused(
                "the previous run had not ended".to_owned(),
            ));
        }
        let key = match trigger {
            Trigger::Manual => {
                entry.manual += 1;
                let nonce = crate::auth::hex(&crate::auth::random_bytes::<8>().unwrap_or_default());
                format!("schedule:{name}:manual:{nonce}")
            }
            Trigger::Timer | Trigger::CatchUp => {
                format!(
                    "schedule:{name}:{}",
                    occurrence.timestamp().as_millisecond()
                )
            }
        };
        let mut options = entry.schedule.options.clone();
        options.idempotency_key = Some(key);
        let request = SubmitRequest {
            task: entry.schedule.task.clone(),
            input: entry.schedule.input.clone(),
            options,
            tag: Some(Arc::clone(&name)),
        };
        let principal = entry.principal.clone();
        let outcome = match self.admission.admit(&principal, request).await {
            Ok(spec) => self.scheduler.submit(spec).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let entry = &mut self.entries[i];
        match outcome {
            Ok(submitted) => {
                run.task_id = Some(submitted.task_id);
                entry.record(run);
                tracing::info!(schedule = %name, task_id = %submitted.task_id, trigger = trigger.as_str(), "scheduled run submitted");
                self.scheduler
                    .subscribe(submitted.task_id, principal, 0, self.mailbox.clone(), None)
                    .await;
                Ok(submitted.task_id)
            }
            Err(why) => {
                run.state = RunState::Refused;
                run.note = Some(why.clone());
                tracing::warn!(schedule = %name, reason = %why, "scheduled run refused");
                entry.record(run);
                Err(ScheduleError::Refused(why))
            }
        }
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::List(reply) => {
                let _ = reply.send(self.entries.iter().map(Entry::view).collect());
            }
            Request::RunNow { name, reply } => {
                let result = match self.find(&name) {
                    Some(i) => self.fire(i, Zoned::now(), Trigger::Manual).await,
                    None => Err(ScheduleError::NotFound(name)),
                };
                let _ = reply.send(result);
            }
            Request::Pause {
                name,
                paused,
                reply,
            } => {
                let result = match self.find(&name) {
                    Some(i) => {
                        let entry = &mut self.entries[i];
                        entry.paused = paused;
                        entry.plan(Instant::now(), &Zoned::now());
                        tracing::info!(schedule = %name, paused, "schedule paused or resumed");
                        Ok(entry.view())
                    }
                    None => Err(ScheduleError::NotFound(name)),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| &*e.schedule.name == name)
    }

    fn on_message(&mut self, message: Outbound) {
        match message {
            Outbound::Event { record, .. } => self.on_event(&record),
            Outbound::Replay(records) => {
                for record in records {
                    self.on_event(&record);
                }
            }
            // Subscriptions of tasks forgotten meanwhile, and messages this
            // mailbox never gets.
            Outbound::Error { .. }
            | Outbound::Rejected { .. }
            | Outbound::Unsubscribed { .. }
            | Outbound::Watching(_)
            | Outbound::TaskUpdate(_)
            | Outbound::WorkerUpdate(_)
            | Outbound::Stats(_) => {}
        }
    }

    fn on_event(&mut self, record: &EventRecord) {
        let Some(run) = self
            .entries
            .iter_mut()
            .flat_map(|e| e.runs.iter_mut())
            .find(|r| r.task_id == Some(record.task_id))
        else {
            return;
        };
        match &record.event {
            TaskEvent::Accepted { .. } | TaskEvent::Requeued { .. } => run.state = RunState::Queued,
            TaskEvent::Started { .. } => {
                run.state = RunState::Running;
                run.started_at = Some(record.at);
            }
            TaskEvent::Progress(_) => {}
            TaskEvent::Question { .. } => run.state = RunState::Waiting,
            TaskEvent::Answered(_) => run.state = RunState::Running,
            TaskEvent::Completed { .. } => {
                run.state = RunState::Completed;
                run.finished_at = Some(record.at);
            }
            TaskEvent::Failed(failure) => {
                run.state = RunState::Failed;
                run.finished_at = Some(record.at);
                run.failure = Some(failure.clone());
            }
            TaskEvent::Cancelled(reason) => {
                run.state = RunState::Cancelled;
                run.finished_at = Some(record.at);
                run.note = Some(format!("cancelled ({})", reason.as_str()));
            }
        }
    }

    /// The mailbox overflowed (it was dropped from its tasks): a new one
    /// follows every unfinished run again from its first event.
    async fn resubscribe(&mut self) -> mpsc::Receiver<Outbound> {
        let (mailbox, inbox, overflow) = Mailbox::new(INBOX);
        self.mailbox = mailbox;
        self.overflow = overflow;
        for entry in &self.entries {
            for run in entry.runs.iter().filter(|r| !r.state.is_over()) {
                if let Some(id) = run.task_id {
                    self.scheduler
                        .subscribe(id, entry.principal.clone(), 0, self.mailbox.clone(), None)
                        .await;
                }
            }
        }
        inbox
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
