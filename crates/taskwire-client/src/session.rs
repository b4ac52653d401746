//! [`Session`]: one WebSocket shared by many tasks, that reconnects and
//! resumes.
//!
//! A driver loop owns the [`Connection`]. Callers talk to it over a bounded
//! command channel; replies come back on oneshots matched by `ref`, and
//! each followed task's events go into that task's own bounded channel
//! ([`TaskEvents`]). The driver remembers, per task, the last `seq` it
//! handed over; everything at or below it is a duplicate and is dropped.
//!
//! **Reconnect.** When the socket breaks, the driver fails the requests in
//! flight (a `submit` with an idempotency key is sent again instead: the
//! server answers it with the same task), reconnects with backoff, and
//! sends `subscribe` with `after_seq` = the last `seq` handed over for each
//! followed task. On a fresh connection the server replays what is held
//! after that `seq`, then live events, in order: nothing is lost or doubled.
//!
//! **Slow readers.** The driver never waits on a [`TaskEvents`]: when its
//! channel is full the driver stops handing it events (the server holds
//! them). Once the reader has emptied its channel it asks the driver to
//! catch up: `unsubscribe`, then `subscribe` with `after_seq`; events that
//! arrive before the `unsubscribed` reply are dropped, and what follows it
//! is the replay, then live events. The admin feed catches up the same way
//! with a fresh `watch` snapshot.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use serde::Serialize;
use serde_json::value::RawValue;
use taskwire_protocol::incoming::{
    Event, EventKind, File, Message, Stats, Summary, TaskId, Welcome, Worker,
};
use taskwire_protocol::{WireError, outgoing};
use tokio::sync::{mpsc, oneshot};

use crate::socket::{Connection, Frame};
use crate::{Client, Error, Result, Submit};

/// Commands queued for the driver; callers wait when it is full.
const COMMAND_QUEUE: usize = 1024;
/// Commands written before one flush.
const WRITE_BURST: usize = 256;

/// An open session (see the module docs). Cheap to clone; the connection
/// closes when the last clone, task handle and event stream is dropped, or
/// on [`close`](Session::close).
#[derive(Clone, Debug)]
pub struct Session {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::Sender<Command>,
    refs: AtomicU64,
    welcome: Mutex<Arc<Welcome>>,
}

impl Shared {
    fn next_ref(&self) -> u64 {
        self.refs.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::closed())
    }
}

#[derive(Debug)]
enum Command {
    /// A message with a `ref` whose reply someone awaits.
    Request {
        reference: u64,
        text: String,
        pending: Pending,
    },
    Follow {
        task_id: TaskId,
        after_seq: u64,
        reply: oneshot::Sender<TaskEvents>,
    },
    /// A [`TaskEvents`] emptied its channel after it had filled.
    CatchUp {
        task_id: TaskId,
        follow: u64,
    },
    /// A [`TaskEvents`] was dropped before its task ended.
    Unfollow {
        task_id: TaskId,
        follow: u64,
    },
    /// The [`WatchFeed`] emptied its channel after it had filled.
    Rewatch,
    Unwatch,
    Close {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
enum Pending {
    Submit {
        reply: oneshot::Sender<Result<(Event, TaskEvents)>>,
        /// Sent again after a reconnect (it carries an idempotency key).
        resend: Option<String>,
    },
    Cancel {
        reply: oneshot::Sender<Result<Event>>,
    },
    Answer {
        reply: oneshot::Sender<Result<Event>>,
    },
    Ping {
        sent: Instant,
        reply: oneshot::Sender<Result<Duration>>,
    },
    Watch {
        reply: oneshot::Sender<Result<WatchFeed>>,
    },
    /// Internal: a `subscribe` (its only possible reply is an `error`).
    Subscribe { task_id: TaskId },
    /// Internal: the `unsubscribe` of a catch-up.
    Rejoin,
    /// Internal: a fresh `watch` after a reconnect or a catch-up.
    Rewatch,
}

/// Shared between the driver and one reader: whether the reader fell
/// behind, and the error it ends with.
#[derive(Debug, Default)]
struct Lane {
    state: AtomicU8,
    error: Mutex<Option<Error>>,
}

/// Events flow.
const LIVE: u8 = 0;
/// The channel filled: the driver drops events (the server holds them).
const BEHIND: u8 = 1;
/// The reader emptied its channel and asked to catch up.
const CATCHING_UP: u8 = 2;

impl Lane {
    fn fail(&self, error: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(error);
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl Session {
    pub(crate) async fn open(client: Client) -> Result<Session> {
        let connection = Connection::open(&client).await?;
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared {
            commands,
            refs: AtomicU64::new(0),
            welcome: Mutex::new(Arc::new(connection.welcome().clone())),
        });
        let driver = Driver {
            client,
            queue,
            shared: Arc::downgrade(&shared),
            follows: HashMap::new(),
            pending: HashMap::new(),
            watch: None,
            next_follow: 0,
        };
        tokio::spawn(driver.run(connection));
        Ok(Session { shared })
    }

    /// The server's latest `welcome` (its tasks and limits).
    pub fn welcome(&self) -> Arc<Welcome> {
        self.shared
            .welcome
            .lock()
            .map(|w| Arc::clone(&w))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    async fn request<T>(
        &self,
        message: impl FnOnce(&str) -> String,
        pending: impl FnOnce(oneshot::Sender<Result<T>>) -> Pending,
    ) -> Result<T> {
        let reference = self.shared.next_ref();
        let text = message(&reference.to_string());
        let (reply, answer) = oneshot::channel();
        self.shared
            .send(Command::Request {
                reference,
                text,
                pending: pending(reply),
            })
            .await?;
        answer.await.map_err(|_| Error::closed())?
    }

    /// Submits a task and follows its events. Returns once the server
    /// accepted it (`accepted`), or with the server's `rejected` error
    /// ([`Error::code`]: `queue_full` with [`Error::retry_after`],
    /// `invalid_input`, `unknown_task`, ...).
    pub async fn submit(&self, submit: Submit) -> Result<TaskHandle> {
        let keyed = submit.options().idempotency_key.is_some();
        let reference = self.shared.next_ref();
        let text = submit.message(Some(&reference.to_string())).to_json();
        let (reply, answer) = oneshot::channel();
        let pending = Pending::Submit {
            reply,
            resend: keyed.then(|| text.clone()),
        };
        self.shared
            .send(Command::Request {
                reference,
                text,
                pending,
            })
            .await?;
        let (accepted, events) = answer
            .await
            .map_err(|_| Error::closed())?
            .map_err(|e| e.context_if_lost(keyed))?;
        let (position, duplicate) = match accepted.kind {
            EventKind::Accepted {
                position,
                duplicate,
            } => (position, duplicate),
            _ => (0, false),
        };
        Ok(TaskHandle {
            id: accepted.task_id,
            position,
            duplicate,
            events,
            session: self.clone(),
        })
    }

    /// Follows a task's events with `seq > after_seq` (0: all that are
    /// held), then live ones. A task this key cannot see ends the stream
    /// with a `not_found` error.
    pub async fn follow(&self, task_id: &TaskId, after_seq: u64) -> Result<TaskEvents> {
        let (reply, events) = oneshot::channel();
        self.shared
            .send(Command::Follow {
                task_id: task_id.clone(),
                after_seq,
                reply,
            })
            .await?;
        events.await.map_err(|_| Error::closed())
    }

    /// Cancels a task; returns its `cancelled` event. A task that already
    /// ended is an error with code `already_finished`.
    pub async fn cancel(&self, task_id: &TaskId) -> Result<Event> {
        self.request(
            |r| {
                outgoing::Message::Cancel {
                    reference: Some(r),
                    task_id: task_id.as_str(),
                }
                .to_json()
            },
            |reply| Pending::Cancel { reply },
        )
        .await
    }

    /// Answers a task's open question; returns the task's `answered` event.
    /// A value that does not fit is `invalid_input` (the question stays
    /// open); a second answer `already_answered`.
    pub async fn answer(
        &self,
        task_id: &TaskId,
        question_id: &str,
        value: &impl Serialize,
    ) -> Result<Event> {
        let value = serde_json::value::to_raw_value(value)
            .map_err(|e| Error::usage("the answer cannot be written as JSON").with(e))?;
        self.answer_raw(task_id, question_id, &value).await
    }

    /// [`answer`](Session::answer) with the value as JSON text.
    pub async fn answer_raw(
        &self,
        task_id: &TaskId,
        question_id: &str,
        value: &RawValue,
    ) -> Result<Event> {
        self.request(
            |r| {
                outgoing::Message::Answer {
                    reference: Some(r),
                    task_id: task_id.as_str(),
                    question_id,
                    value,
                }
                .to_json()
            },
            |reply| Pending::Answer { reply },
        )
        .await
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<Duration> {
        self.request(
            |r| outgoing::Message::Ping { reference: Some(r) }.to_json(),
            |reply| Pending::Ping {
                sent: Instant::now(),
                reply,
            },
        )
        .await
    }

    /// Admin: every task's state changes and the server's counters. A
    /// session has at most one feed; a second call replaces the first.
    pub async fn watch(&self) -> Result<WatchFeed> {
        self.request(
            |r| outgoing::Message::Watch { reference: Some(r) }.to_json(),
            |reply| Pending::Watch { reply },
        )
        .await
    }

    /// Closes the connection (code 1000). Every open stream ends.
    pub async fn close(self) {
        let (reply, done) = oneshot::channel();
        if self.shared.send(Command::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
    }
}

impl Error {
    fn context_if_lost(self, keyed: bool) -> Error {
        if self.is_connect() && !keyed {
            self.context(
                "the connection broke before the submit was answered; \
                 give it an idempotency key to retry safely",
            )
        } else {
            self
        }
    }
}

/// A submitted task: its id, where it was queued, and its events.
#[derive(Debug)]
pub struct TaskHandle {
    id: TaskId,
    position: u64,
    duplicate: bool,
    events: TaskEvents,
    session: Session,
}

impl TaskHandle {
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// Tasks that start before this one when it was accepted.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The server returned an earlier task with the same idempotency key.
    pub fn duplicate(&self) -> bool {
        self.duplicate
    }

    /// The task's events, from `accepted` on.
    pub fn events(&mut self) -> &mut TaskEvents {
        &mut self.events
    }

    pub fn into_events(self) -> TaskEvents {
        self.events
    }

    /// Cancels the task (its `cancelled` event also reaches the events).
    pub async fn cancel(&self) -> Result<Event> {
        self.session.cancel(&self.id).await
    }

    /// Answers the task's open question.
    pub async fn answer(&self, question_id: &str, value: &impl Serialize) -> Result<Event> {
        self.session.answer(&self.id, question_id, value).await
    }

    /// Reads the events up to the terminal one.
    pub async fn wait(mut self) -> Result<Outcome> {
        self.events.outcome().await
    }
}

/// How a task ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Completed {
        /// The result as JSON text.
        result: Box<RawValue>,
        files: Vec<File>,
        duration_ms: u64,
    },
    Failed {
        error: WireError,
    },
    Cancelled {
        reason: String,
    },
}

impl Outcome {
    /// The outcome a terminal event carries.
    pub fn of(event: &Event) -> Option<Outcome> {
        match &event.kind {
            EventKind::Completed {
                result,
                files,
                duration_ms,
            } => Some(Outcome::Completed {
                result: result.clone(),
                files: files.clone(),
                duration_ms: *duration_ms,
            }),
            EventKind::Failed { error } => Some(Outcome::Failed {
                error: error.clone(),
            }),
            EventKind::Cancelled { reason } => Some(Outcome::Cancelled {
                reason: reason.clone(),
            }),
            _ => None,
        }
    }
}

/// One task's events, in `seq` order, each once, across reconnects; ends
/// after the terminal event. Also a [`Stream`].
pub struct TaskEvents {
    task_id: TaskId,
    follow: u64,
    events: mpsc::Receiver<Event>,
    lane: Arc<Lane>,
    session: Arc<Shared>,
    done: bool,
    last_seq: u64,
    /// A catch-up request waiting for room in the command queue.
    asking: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for TaskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEvents")
            .field("task_id", &self.task_id)
            .field("last_seq", &self.last_seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl TaskEvents {
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// The `seq` of the last event returned (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next event; `None` after the terminal event. An error ends the
    /// stream: the task is not visible (`not_found`), or the session gave
    /// up reconnecting or was closed.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Reads up to the terminal event and returns the outcome.
    pub async fn outcome(&mut self) -> Result<Outcome> {
        while let Some(event) = self.next().await {
            let event = event?;
            if let Some(outcome) = Outcome::of(&event) {
                return Ok(outcome);
            }
        }
        Err(Error::closed().context("the events ended before the task did"))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(asking) = self.asking.as_mut()
            && asking.as_mut().poll(cx).is_ready()
        {
            self.asking = None;
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.last_seq = event.seq;
                if event.is_terminal() {
                    self.done = true;
                }
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.lane.take_error().map(Err))
            }
            Poll::Pending => {
                let behind = self
                    .lane
                    .state
                    .compare_exchange(BEHIND, CATCHING_UP, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if behind {
                    let commands = self.session.commands.clone();
                    let command = Command::CatchUp {
                        task_id: self.task_id.clone(),
                        follow: self.follow,
                    };
                    let mut asking: Pin<Box<dyn Future<Output = ()> + Send>> =
                        Box::pin(async move {
                            let _ = commands.send(command).await;
                        });
                    if asking.as_mut().poll(cx).is_pending() {
                        self.asking = Some(asking);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Stream for TaskEvents {
    type Item = Result<Event>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for TaskEvents {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: if the queue is full the driver finds the
            // closed channel at the task's next event.
            let _ = self.session.commands.try_send(Command::Unfollow {
                task_id: self.task_id.clone(),
                follow: self.follow,
            });
        }
    }
}

/// What the admin feed delivers.
#[derive(Debug, Clone)]
pub enum WatchUpdate {
    /// Every queued and running task and the most recently finished ones:
    /// replaces what was known (first, and again after a reconnect or a
    /// catch-up).
    Snapshot {
        tasks: Vec<Summary>,
        workers: Vec<Worker>,
        stats: Stats,
    },
    Task(Box<Summary>),
    Worker(Box<Worker>),
    Stats(Box<Stats>),
}

/// The admin feed ([`Session::watch`]). Also a [`Stream`].
#[derive(Debug)]
pub struct WatchFeed {
    updates: mpsc::Receiver<WatchUpdate>,
    lane: Arc<Lane>,
    session: Arc<Shared>,
    done: bool,
}

impl WatchFeed {
    /// The next update; an error ends the feed (the session gave up).
    pub async fn next(&mut self) -> Option<Result<WatchUpdate>> {
        std::future::poll_fn(|cx| self.poll_update(cx)).await
    }

    fn poll_update(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WatchUpdate>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.updates.poll_recv(cx) {
            Poll::Ready(Some(update)) => Poll::Ready(Some(Ok(update))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.lane.take_error().map(Err))
            }
            Poll::Pending => {
                let behind = self
                    .lane
                    .state
                    .compare_exchange(BEHIND, CATCHING_UP, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if behind {
                    // Rare, and a full queue only delays the catch-up.
                    let _ = self.session.commands.try_send(Command::Rewatch);
                }
                Poll::Pending
            }
        }
    }
}

impl Stream for WatchFeed {
    type Item = Result<WatchUpdate>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_update(cx)
    }
}

impl Drop for WatchFeed {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.session.commands.try_send(Command::Unwatch);
        }
    }
}

/// The driver's record of one followed task.
struct Follow {
    id: u64,
    events: mpsc::Sender<Event>,
    lane: Arc<Lane>,
    /// The last `seq` handed to the reader.
    last: u64,
    /// Catching up: events are dropped until the `unsubscribed` reply
    /// with this ref; what follows it is the replay.
    rejoining: Option<u64>,
}

struct Watch {
    updates: mpsc::Sender<WatchUpdate>,
    lane: Arc<Lane>,
    /// Updates are dropped until the `watching` reply with this ref.
    resyncing: Option<u64>,
}

struct Driver {
    client: Client,
    queue: mpsc::Receiver<Command>,
    shared: std::sync::Weak<Shared>,
    follows: HashMap<TaskId, Follow>,
    pending: HashMap<u64, Pending>,
    watch: Option<Watch>,
    next_follow: u64,
}

/// Why the driver left its connection.
enum Leave {
    /// Every handle is gone, or `close` was called.
    Closed(Option<oneshot::Sender<()>>),
    /// The connection broke.
    Broken(Error),
}

impl Driver {
    async fn run(mut self, mut connection: Connection) {
        loop {
            match self.serve(&mut connection).await {
                Leave::Closed(reply) => {
                    let _ = connection.close().await;
                    self.end(Error::closed);
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                    return;
                }
                Leave::Broken(error) => {
                    self.broken();
                    match self.reconnect(error).await {
                        Ok(fresh) => {
                            connection = fresh;
                            if let Err(error) = self.resume(&mut connection).await {
                                // Broke again at once: go around.
                                let _ = error;
                                continue;
                            }
                        }
                        Err(error) => {
                            let message = error.to_string();
                            self.end(move || Error::connect(message.clone()));
                            // Drain callers until every handle is gone.
                            while let Some(command) = self.queue.recv().await {
                                self.refuse(command, &error);
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Serves one connection until it breaks or the session closes.
    async fn serve(&mut self, connection: &mut Connection) -> Leave {
        loop {
            tokio::select! {
                frame = connection.recv() => match frame {
                    Ok(frame) => {
                        self.on_frame(frame, connection).await;
                        // Handle what is already buffered before anything else.
                        while let Some(frame) = connection.try_recv() {
                            match frame {
                                Ok(frame) => self.on_frame(frame, connection).await,
                                Err(e) => return Leave::Broken(e),
                            }
                        }
                        if let Err(e) = connection.flush().await {
                            return Leave::Broken(e);
                        }
                    }
                    Err(e) if e.is_decode() => {} // one bad frame; carry on
                    Err(e) => return Leave::Broken(e),
                },
                command = self.queue.recv() => {
                    let Some(command) = command else { return Leave::Closed(None) };
                    let mut next = Some(command);
                    let mut written = 0;
                    while let Some(command) = next.take() {
                        match self.on_command(command, connection).await {
                            Ok(Some(reply)) => return Leave::Closed(Some(reply)),
                            Ok(None) => {}
                            Err(e) => return Leave::Broken(e),
                        }
                        written += 1;
                        if written < WRITE_BURST {
                            next = self.queue.try_recv().ok();
                        }
                    }
                    if let Err(e) = connection.flush().await {
                        return Leave::Broken(e);
                    }
                }
            }
        }
    }

    /// Handles one command; `Some(reply)` means close.
    async fn on_command(
        &mut self,
        command: Command,
        connection: &mut Connection,
    ) -> Result<Option<oneshot::Sender<()>>> {
        match command {
            Command::Request {
                reference,
                text,
                pending,
            } => {
                self.pending.insert(reference, pending);
                connection.feed_text(text).await?;
            }
            Command::Follow {
                task_id,
                after_seq,
                reply,
            } => {
                if let Some(events) = self.follow(task_id.clone(), after_seq) {
                    let _ = reply.send(events);
                }
                self.subscribe(connection, &task_id, after_seq).await?;
            }
            Command::CatchUp { task_id, follow } => {
                let Some(id) = self.shared_ref() else {
                    return Ok(None);
                };
                let Some(f) = self.follows.get_mut(&task_id).filter(|f| f.id == follow) else {
                    return Ok(None);
                };
                f.rejoining = Some(id);
                f.lane.state.store(LIVE, Ordering::Release);
                let after_seq = f.last;
                self.pending.insert(id, Pending::Rejoin);
                let reference = id.to_string();
                connection
                    .feed(&outgoing::Message::Unsubscribe {
                        reference: Some(&reference),
                        task_id: task_id.as_str(),
                    })
                    .await?;
                self.subscribe(connection, &task_id, after_seq).await?;
            }
            Command::Unfollow { task_id, follow } => {
                if self.follows.get(&task_id).is_some_and(|f| f.id == follow) {
                    self.follows.remove(&task_id);
                    connection
                        .feed(&outgoing::Message::Unsubscribe {
                            reference: None,
                            task_id: task_id.as_str(),
                        })
                        .await?;
                }
            }
            Command::Rewatch => {
                if self.watch.is_some() {
                    self.rewatch(connection).await?;
                }
            }
            Command::Unwatch => {
                if self.watch.take().is_some() {
                    connection
                        .feed(&outgoing::Message::Unwatch { reference: None })
                        .await?;
                }
            }
            Command::Close { reply } => return Ok(Some(reply)),
        }
        Ok(None)
    }

    fn shared_ref(&self) -> Option<u64> {
        self.shared.upgrade().map(|s| s.next_ref())
    }

    async fn subscribe(
        &mut self,
        connection: &mut Connection,
        task_id: &TaskId,
        after_seq: u64,
    ) -> Result<()> {
        let Some(id) = self.shared_ref() else {
            return Ok(());
        };
        self.pending.insert(
            id,
            Pending::Subscribe {
                task_id: task_id.clone(),
            },
        );
        let reference = id.to_string();
        connection
            .feed(&outgoing::Message::Subscribe {
                reference: Some(&reference),
                task_id: task_id.as_str(),
                after_seq,
            })
            .await
    }

    async fn rewatch(&mut self, connection: &mut Connection) -> Result<()> {
        let Some(id) = self.shared_ref() else {
            return Ok(());
        };
        if let Some(watch) = self.watch.as_mut() {
            watch.resyncing = Some(id);
            watch.lane.state.store(LIVE, Ordering::Release);
        }
        self.pending.insert(id, Pending::Rewatch);
        let reference = id.to_string();
        connection
            .feed(&outgoing::Message::Watch {
                reference: Some(&reference),
            })
            .await
    }

    /// Registers a follow (replacing an earlier one of the same task) and
    /// returns its reader.
    fn follow(&mut self, task_id: TaskId, last: u64) -> Option<TaskEvents> {
        let session = self.shared.upgrade()?;
        let (tx, rx) = mpsc::channel(self.client.inner.event_buffer);
        let lane = Arc::new(Lane::default());
        self.next_follow += 1;
        let id = self.next_follow;
        self.follows.insert(
            task_id.clone(),
            Follow {
                id,
                events: tx,
                lane: Arc::clone(&lane),
                last,
                rejoining: None,
            },
        );
        Some(TaskEvents {
            task_id,
            follow: id,
            events: rx,
            lane,
            session,
            done: false,
            last_seq: last,
            asking: None,
        })
    }

    async fn on_frame(&mut self, frame: Frame, connection: &mut Connection) {
        let Frame::Message(message) = frame else {
            return; // streamed file bytes: not handled by a session
        };
        match message {
            Message::Event(event) => self.on_event(event, connection).await,
            Message::Rejected { reference, error } | Message::Error { reference, error } => {
                let Some(pending) = take(&mut self.pending, reference.as_deref()) else {
                    return;
                };
                self.fail(pending, Error::server(error));
            }
            Message::Pong { reference } => {
                if let Some(Pending::Ping { sent, reply }) =
                    take(&mut self.pending, reference.as_deref())
                {
                    let _ = reply.send(Ok(sent.elapsed()));
                }
            }
            Message::Unsubscribed { reference, task_id } => {
                if let Some(Pending::Rejoin) = take(&mut self.pending, reference.as_deref())
                    && let Some(f) = self.follows.get_mut(&task_id)
                {
                    f.rejoining = None;
                }
            }
            Message::Watching {
                reference,
                tasks,
                workers,
                stats,
            } => {
                let snapshot = WatchUpdate::Snapshot {
                    tasks,
                    workers,
                    stats,
                };
                match take(&mut self.pending, reference.as_deref()) {
                    Some(Pending::Watch { reply }) => {
                        let (tx, rx) = mpsc::channel(self.client.inner.event_buffer);
                        let lane = Arc::new(Lane::default());
                        let _ = tx.try_send(snapshot);
                        self.watch = Some(Watch {
                            updates: tx,
                            lane: Arc::clone(&lane),
                            resyncing: None,
                        });
                        if let Some(session) = self.shared.upgrade() {
                            let _ = reply.send(Ok(WatchFeed {
                                updates: rx,
                                lane,
                                session,
                                done: false,
                            }));
                        }
                    }
                    Some(Pending::Rewatch) => {
                        if let Some(watch) = self.watch.as_mut() {
                            watch.resyncing = None;
                            deliver_update(watch, snapshot);
                        }
                    }
                    _ => {}
                }
            }
            Message::TaskUpdate(summary) => self.on_update(WatchUpdate::Task(summary)),
            Message::Stats(stats) => self.on_update(WatchUpdate::Stats(stats)),
            Message::WorkerUpdate(worker) => self.on_update(WatchUpdate::Worker(worker)),
            Message::Welcome(welcome) => {
                if let Some(shared) = self.shared.upgrade()
                    && let Ok(mut slot) = shared.welcome.lock()
                {
                    *slot = Arc::from(welcome);
                }
            }
            Message::StreamBegin(_) | Message::StreamEnd(_) | Message::Unknown { .. } => {}
        }
    }

    fn on_update(&mut self, update: WatchUpdate) {
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        if watch.resyncing.is_none() && deliver_update(watch, update) == Delivered::Gone {
            self.watch = None;
        }
    }

    async fn on_event(&mut self, event: Event, connection: &mut Connection) {
        let reference = event
            .reference
            .as_deref()
            .and_then(|r| r.parse::<u64>().ok());
        if let Some(reference) = reference {
            match self.pending.remove(&reference) {
                Some(Pending::Submit { reply, .. }) => {
                    if let Some(events) = self.follow(event.task_id.clone(), 0) {
                        let _ = reply.send(Ok((event.clone(), events)));
                    }
                }
                Some(Pending::Cancel { reply }) | Some(Pending::Answer { reply }) => {
                    let _ = reply.send(Ok(event.clone()));
                }
                Some(other) => {
                    self.pending.insert(reference, other);
                }
                None => {}
            }
        }
        let Some(follow) = self.follows.get_mut(&event.task_id) else {
            return;
        };
        if follow.rejoining.is_some()
            || event.seq <= follow.last
            || follow.lane.state.load(Ordering::Acquire) != LIVE
        {
            return;
        }
        let seq = event.seq;
        let ended = event.is_terminal().then(|| event.task_id.clone());
        match follow.events.try_send(event) {
            Ok(()) => {
                follow.last = seq;
                if let Some(task_id) = ended {
                    self.follows.remove(&task_id);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                follow.lane.state.store(BEHIND, Ordering::Release);
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                self.follows.remove(&event.task_id);
                let _ = connection
                    .feed(&outgoing::Message::Unsubscribe {
                        reference: None,
                        task_id: event.task_id.as_str(),
                    })
                    .await;
            }
        }
    }

    fn fail(&mut self, pending: Pending, error: Error) {
        match pending {
            Pending::Submit { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Pending::Cancel { reply } | Pending::Answer { reply } => {
                let _ = reply.send(Err(error));
            }
            Pending::Ping { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Pending::Watch { reply } => {
                let _ = reply.send(Err(error));
            }
            Pending::Subscribe { task_id } => {
                if let Some(follow) = self.follows.remove(&task_id) {
                    follow.lane.fail(error);
                }
            }
            Pending::Rejoin | Pending::Rewatch => {}
        }
    }

    /// The connection broke: requests in flight fail, except keyed
    /// submits, which are sent again after the reconnect.
    fn broken(&mut self) {
        let pending: Vec<(u64, Pending)> = self.pending.drain().collect();
        for (reference, pending) in pending {
            match pending {
                Pending::Submit {
                    reply,
                    resend: Some(text),
                } => {
                    self.pending.insert(
                        reference,
                        Pending::Submit {
                            reply,
                            resend: Some(text),
                        },
                    );
                }
                Pending::Subscribe { .. } | Pending::Rejoin | Pending::Rewatch => {}
                other => self.fail(other, Error::connect("the connection broke")),
            }
        }
        for follow in self.follows.values_mut() {
            follow.rejoining = None;
            follow.lane.state.store(LIVE, Ordering::Release);
        }
    }

    /// Connects again with backoff, or gives up.
    async fn reconnect(&mut self, error: Error) -> Result<Connection> {
        let policy = self.client.inner.reconnect;
        if error.is_auth() {
            return Err(error);
        }
        let started = Instant::now();
        let mut delay = policy.initial;
        let mut last = error;
        loop {
            if policy
                .give_up_after
                .is_some_and(|limit| started.elapsed() >= limit)
            {
                return Err(last);
            }
            if !delay.is_zero() {
                tokio::time::sleep(jitter(delay)).await;
            }
            match Connection::open(&self.client).await {
                Ok(connection) => return Ok(connection),
                Err(e) if e.is_auth() => return Err(e),
                Err(e) => last = e,
            }
            delay = (delay * 2).clamp(
                Duration::from_millis(10),
                policy.max.max(Duration::from_millis(10)),
            );
        }
    }

    /// On a fresh connection: subscribe again after the last `seq` of each
    /// followed task, watch again, resend keyed submits.
    async fn resume(&mut self, connection: &mut Connection) -> Result<()> {
        if let Some(shared) = self.shared.upgrade()
            && let Ok(mut slot) = shared.welcome.lock()
        {
            *slot = Arc::new(connection.welcome().clone());
        }
        let follows: Vec<(TaskId, u64)> = self
            .follows
            .iter()
            .map(|(t, f)| (t.clone(), f.last))
            .collect();
        for (task_id, last) in follows {
            self.subscribe(connection, &task_id, last).await?;
        }
        if self.watch.is_some() {
            self.rewatch(connection).await?;
        }
        let resend: Vec<String> = self
            .pending
            .values()
            .filter_map(|p| match p {
                Pending::Submit {
                    resend: Some(text), ..
                } => Some(text.clone()),
                _ => None,
            })
            .collect();
        for text in resend {
            connection.feed_text(text).await?;
        }
        connection.flush().await
    }

    /// Ends every stream and request with an error.
    fn end(&mut self, error: impl Fn() -> Error) {
        for (_, follow) in self.follows.drain() {
            follow.lane.fail(error());
        }
        if let Some(watch) = self.watch.take() {
            watch.lane.fail(error());
        }
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for pending in pending {
            self.fail(pending, error());
        }
    }

    fn refuse(&mut self, command: Command, error: &Error) {
        let error = || Error::connect(error.to_string());
        match command {
            Command::Request { pending, .. } => self.fail(pending, error()),
            Command::Follow { task_id, reply, .. } => {
                if let Some(events) = self.follow(task_id.clone(), 0) {
                    if let Some(follow) = self.follows.remove(&task_id) {
                        follow.lane.fail(error());
                    }
                    let _ = reply.send(events);
                }
            }
            Command::Close { reply } => {
                let _ = reply.send(());
            }
            Command::CatchUp { .. }
            | Command::Unfollow { .. }
            | Command::Rewatch
            | Command::Unwatch => {}
        }
    }
}

#[derive(PartialEq, Eq)]
enum Delivered {
    Yes,
    Gone,
}

fn deliver_update(watch: &mut Watch, update: WatchUpdate) -> Delivered {
    if watch.lane.state.load(Ordering::Acquire) != LIVE {
        return Delivered::Yes;
    }
    match watch.updates.try_send(update) {
        Ok(()) => Delivered::Yes,
        Err(mpsc::error::TrySendError::Full(_)) => {
            watch.lane.state.store(BEHIND, Ordering::Release);
            Delivered::Yes
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
    }
}

fn take(pending: &mut HashMap<u64, Pending>, reference: Option<&str>) -> Option<Pending> {
    let reference = reference?.parse::<u64>().ok()?;
    pending.remove(&reference)
}

/// Up to a quarter more, so many clients do not reconnect in step.
fn jitter(delay: Duration) -> Duration {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = clock.subsec_nanos() ^ std::process::id();
    let extra = delay.as_nanos() / 4 * u128::from(nanos % 1000) / 1000;
    delay + Duration::from_nanos(u64::try_from(extra).unwrap_or(0))
}
