//! One WebSocket connection: a single task that reads client messages,
//! writes what the scheduler pushes into its [`Mailbox`], streams files, and
//! takes uploads in binary frames ([`super::ws_uploads`]).
//!
//! Writes are batched: everything waiting in the mailbox is fed to the
//! socket, then flushed once. The mailbox is bounded; when the scheduler
//! finds it full the connection is closed with `1013` (the client may come
//! back and `subscribe` with `after_seq`: nothing is lost, and neither a
//! worker nor another client ever waited on it).
//!
//! **Architecture Invariant:** this task never holds a lock across an
//! `.await`, and never waits on the scheduler while the scheduler could be
//! waiting on it (the scheduler only ever `try_send`s to the mailbox).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, ConnectionSlot, encode, submit_request};
use crate::auth::Principal;
use crate::protocol::client::{self, ClientMessage};
use crate::protocol::server::ServerMessage;
use crate::protocol::{CloseCode, ErrorCode, WireError};
use crate::scheduler::{Mailbox, Outbound};
use crate::task::{EventRecord, PublishedFile, TaskEvent, TaskId};

/// Mailbox messages taken per write burst.
const BURST: usize = 128;
/// Bytes of file per binary frame in stream delivery (4-byte header extra).
const STREAM_CHUNK: usize = 64 * 1024;
/// A ping when the connection was quiet this long.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a close frame may take to go out.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A slow reader's close frame waits behind what it has not read yet.
const SLOW_CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

enum End {
    Close(CloseCode),
    /// The client closed: tungstenite has queued the echoing close frame;
    /// a flush sends it.
    ClosedByClient,
    /// The peer went away or the socket broke: nothing more to send.
    Gone,
}

/// A file delivery in progress.
struct StreamJob {
    record: Arc<EventRecord>,
    reference: Option<Box<str>>,
    files: Vec<PublishedFile>,
    next_file: usize,
    current: Option<(u32, tokio::fs::File)>,
}

struct Conn {
    state: AppState,
    principal: Option<Principal>,
    origin: Option<String>,
    mailbox: Mailbox,
    /// Tasks this connection follows and that have not ended.
    following: HashSet<TaskId>,
    /// Frames waiting to be written in this turn.
    out: Vec<Message>,
    streams: VecDeque<StreamJob>,
    next_stream: u32,
    watching: bool,
    /// Uploads arriving in binary frames.
    uploads: super::ws_uploads::WsUploads,
}

pub(super) async fn run(
    mut socket: WebSocket,
    state: AppState,
    principal: Option<Principal>,
    origin: Option<String>,
    _slot: ConnectionSlot,
) {
    let gauge = state.metrics.connections("ws");
    gauge.inc();
    let (mailbox, mut inbox, overflow) = Mailbox::new(state.config.limits.send_queue);
    let mut conn = Conn {
        state: state.clone(),
        principal,
        origin,
        mailbox,
        following: HashSet::new(),
        out: Vec::new(),
        streams: VecDeque::new(),
        next_stream: 1,
        watching: false,
        uploads: Default::default(),
    };
    let who = conn.client_name();
    tracing::info!(client = %who, "websocket connected");
    if conn.principal.is_some() {
        conn.out.push(Message::Text(state.welcome()));
    }
    let end = conn.serve(&mut socket, &mut inbox, &overflow).await;
    let code = match end {
        End::Close(code) => {
            let frame = CloseFrame {
                code: code.code(),
                reason: code.reason().into(),
            };
            let wait = if code == CloseCode::TryAgainLater {
                SLOW_CLOSE_TIMEOUT
            } else {
                CLOSE_WRITE_TIMEOUT
            };
            let _ = tokio::time::timeout(wait, socket.send(Message::Close(Some(frame)))).await;
            Some(code.code())
        }
        End::ClosedByClient => {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, socket.flush()).await;
            Some(CloseCode::Normal.code())
        }
        End::Gone => None,
    };
    tracing::info!(client = %conn.client_name(), close = ?code, "websocket closed");
    gauge.dec();
    conn.leave().await;
}

impl Conn {
    fn client_name(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "(unauthenticated)".to_owned(), |p| p.client.to_string())
    }

    async fn serve(
        &mut self,
        socket: &mut WebSocket,
        inbox: &mut mpsc::Receiver<Outbound>,
        overflow: &CancellationToken,
    ) -> End {
        let auth_deadline = Instant::now() + self.state.config.security.auth_timeout;
        let drained = self.state.drained.clone();
        let never = CancellationToken::new();
        // Grows on the first burst only: an idle connection stays small.
        let mut burst = Vec::new();
        let mut last_heard = Instant::now();
        loop {
            // Whatever else is ready goes out in the same write.
            while self.out.len() < BURST {
                match inbox.try_recv() {
                    Ok(message) => self.outbound(message),
                    Err(_) => break,
                }
            }
            let write_by = self.write_deadline(auth_deadline);
            if !self.out.is_empty()
                && let Err(end) = self.write_out(socket, overflow, write_by).await
            {
                return end;
            }
            let heartbeat = last_heard + HEARTBEAT;
            let upload_idle = self.uploads.next_deadline();
            // A revoked token ends the socket at once.
            // (Only a token can be revoked: a key's socket never polls this.)
            let token = self
                .principal
                .as_ref()
                .and_then(|p| p.token.as_ref())
                .map(|t| t.revoked.clone());
            let revoked = token.as_ref().unwrap_or(&never);
            tokio::select! {
                biased;
                () = overflow.cancelled() => return End::Close(CloseCode::TryAgainLater),
                () = revoked.cancelled(), if token.is_some() => {
                    tracing::info!(client = %self.client_name(), "websocket closed: its token was revoked");
                    return End::Close(CloseCode::Unauthorized);
                }
                () = drained.cancelled() => {
                    // Every task has ended and its events are in the inbox.
                    while let Ok(message) = inbox.try_recv() {
                        self.outbound(message);
                    }
                    while !self.streams.is_empty() {
                        let write_by = self.write_deadline(auth_deadline);
                        if let Err(end) = self.write_out(socket, overflow, write_by).await {
                            return end;
                        }
                        self.stream_step().await;
                    }
                    let write_by = self.write_deadline(auth_deadline);
                    if let Err(end) = self.write_out(socket, overflow, write_by).await {
                        return end;
                    }
                    return End::Close(CloseCode::GoingAway);
                }
                () = tokio::time::sleep_until(auth_deadline), if self.principal.is_none() => {
                    self.state.metrics.rejected(ErrorCode::Unauthorized);
                    tracing::info!(client = "unknown", "no auth message in time");
                    return End::Close(CloseCode::AuthTimeout);
                }
                received = socket.recv() => {
                    last_heard = Instant::now();
                    match received {
                        Some(Ok(message)) => {
                            if let Some(end) = self.on_frame(message).await {
                                return end;
                            }
                        }
                        Some(Err(error)) => return read_error(error),
                        None => return End::Gone,
                    }
                }
                n = inbox.recv_many(&mut burst, BURST) => {
                    if n == 0 {
                        return End::Gone;
                    }
                    for message in burst.drain(..) {
                        self.outbound(message);
                    }
                }
                () = self.stream_step(), if !self.streams.is_empty() => {}
                () = sleep_until_some(upload_idle) => {
                    let idle = self.state.config.limits.body_timeout;
                    for error in self.uploads.expire(Instant::now(), idle) {
                        self.send_wire_error(None, &error);
                    }
                }
                () = tokio::time::sleep_until(heartbeat) => {
                    last_heard = Instant::now();
                    self.out.push(Message::Ping(Bytes::new()));
                }
            }
        }
    }

    /// When the next write must be done: `write_timeout` from now, or the
    /// auth deadline while unauthenticated (which must fire whatever the
    /// socket does).
    fn write_deadline(&self, auth_deadline: Instant) -> (Instant, CloseCode) {
        let by = Instant::now() + self.state.config.limits.write_timeout;
        if self.principal.is_none() && auth_deadline < by {
            (auth_deadline, CloseCode::AuthTimeout)
        } else {
            (by, CloseCode::TryAgainLater)
        }
    }

    /// Writes and flushes everything in `out`; gives up on a slow reader
    /// (its mailbox overflowed, or the write took past its deadline).
    async fn write_out(
        &mut self,
        socket: &mut WebSocket,
        overflow: &CancellationToken,
        (deadline, late): (Instant, CloseCode),
    ) -> Result<(), End> {
        let frames = std::mem::take(&mut self.out);
        let mut bytes = 0u64;
        let write = async {
            for frame in frames {
                bytes += frame_len(&frame);
                socket.feed(frame).await?;
            }
            socket.flush().await
        };
        // Biased: a write that completes at once never arms the deadline.
        let result = tokio::select! {
            biased;
            result = write => result,
            () = overflow.cancelled() => return Err(End::Close(CloseCode::TryAgainLater)),
            () = tokio::time::sleep_until(deadline) => {
                if late == CloseCode::AuthTimeout {
                    self.state.metrics.rejected(ErrorCode::Unauthorized);
                    tracing::info!(client = "unknown", "no auth message in time");
                }
                // The socket's buffer is full: nothing more can be written.
                return Err(End::Gone);
            }
        };
        self.state.metrics.bytes_sent.inc_by(bytes);
        result.map_err(|_| End::Gone)
    }

    /// Handles one frame from the client; `Some` ends the connection.
    ///
    /// The rare, large awaits here and in `on_text` (uploads, a token's
    /// lookup) are boxed: inline, each would be laid out in every
    /// connection's future, idle or not (BENCHMARKS.md, idle connections).
    async fn on_frame(&mut self, message: Message) -> Option<End> {
        match message {
            Message::Text(text) => {
                self.state.metrics.bytes_received.inc_by(text.len() as u64);
                self.on_text(&text).await
            }
            Message::Binary(data) => {
                self.state.metrics.bytes_received.inc_by(data.len() as u64);
                if self.principal.is_none() {
                    self.reply_error(
                        None,
                        ErrorCode::Unauthorized,
                        "send an auth message before binary frames",
                    );
                    return None;
                }
                let idle = self.state.config.limits.body_timeout;
                if let Some(error) = Box::pin(self.uploads.data(&data, idle)).await {
                    self.send_wire_error(None, &error);
                }
                None
            }
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => Some(End::ClosedByClient),
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<End> {
        let request = match client::decode(text) {
            Ok(request) => request,
            Err(e) => {
                self.reply_error(
                    e.reference.map(String::into_boxed_str),
                    ErrorCode::BadMessage,
                    &e.message,
                );
                return None;
            }
        };
        let reference = request.reference.map(String::into_boxed_str);
        let Some(principal) = self.principal.clone() else {
            return match request.message {
                ClientMessage::Auth { key } => {
                    Box::pin(super::caller::learn_token(&self.state, &key)).await;
                    self.authenticate(&key)
                }
                other => {
                    let message = format!("send an auth message before {}", other.kind());
                    self.reply_error(reference, ErrorCode::Unauthorized, &message);
                    None
                }
            };
        };
        let scheduler = self.state.scheduler.clone();
        let mailbox = self.mailbox.clone();
        let alive = match request.message {
            ClientMessage::Auth { .. } => {
                self.reply_error(reference, ErrorCode::BadMessage, "already authenticated");
                true
            }
            ClientMessage::Ping => {
                self.send(ServerMessage::Pong {
                    reference: reference.as_deref(),
                });
                true
            }
            ClientMessage::Submit(submit) => {
                let request = submit_request(&submit);
                match self.state.admission.admit(&principal, request).await {
                    Ok(spec) => scheduler.submit_to(spec, mailbox, reference).await,
                    Err(error) => {
                        let error = ApiError::from(error).wire();
                        self.state.metrics.rejected(error.code);
                        self.send(ServerMessage::Rejected {
                            reference: reference.as_deref(),
                            error: &error,
                        });
                        true
                    }
                }
            }
            ClientMessage::Cancel { task_id } => match task_id.parse::<TaskId>() {
                Ok(task_id) => {
                    scheduler
                        .cancel_to(task_id, principal, mailbox, reference)
                        .await
                }
                Err(_) => {
                    self.reply_error(reference, ErrorCode::NotFound, "no such task");
                    true
                }
            },
            ClientMessage::Answer {
                task_id,
                question_id,
                value,
            } => match (task_id.parse::<TaskId>(), serde_json::from_str(value.get())) {
                (Ok(task_id), Ok(value)) => {
                    scheduler
                        .answer_to(task_id, principal, question_id, value, mailbox, reference)
                        .await
                }
                (Err(_), _) => {
                    self.reply_error(reference, ErrorCode::NotFound, "no such task");
                    true
                }
                (_, Err(e)) => {
                    self.reply_error(reference, ErrorCode::BadMessage, &format!("answer: {e}"));
                    true
                }
            },
            ClientMessage::Subscribe { task_id, after_seq } => match task_id.parse::<TaskId>() {
                Ok(task_id) => {
                    self.following.insert(task_id);
                    scheduler
                        .subscribe(task_id, principal, after_seq, mailbox, reference)
                        .await
                }
                Err(_) => {
                    self.reply_error(reference, ErrorCode::NotFound, "no such task");
                    true
                }
            },
            ClientMessage::Unsubscribe { task_id } => match task_id.parse::<TaskId>() {
                Ok(task_id) => {
                    self.following.remove(&task_id);
                    let id = mailbox.id();
                    scheduler
                        .unsubscribe(task_id, id, Some((mailbox, reference)))
                        .await
                }
                Err(_) => {
                    self.send(ServerMessage::Unsubscribed {
                        reference: reference.as_deref(),
                        task_id: &task_id,
                    });
                    true
                }
            },
            ClientMessage::UploadBegin {
                stream,
                name,
                size,
                content_type,
            } => {
                let idle = self.state.config.limits.body_timeout;
                let begun = Box::pin(self.uploads.begin(
                    self.state.inputs.uploads(),
                    &principal,
                    super::ws_uploads::Begin {
                        stream,
                        name: &name,
                        size,
                        content_type: content_type.as_deref(),
                    },
                    idle,
                ))
                .await;
                match begun {
                    Ok(()) => self.send(ServerMessage::UploadReady {
                        reference: reference.as_deref(),
                        stream,
                    }),
                    Err(error) => self.send_wire_error(reference.as_deref(), &error),
                }
                true
            }
            ClientMessage::UploadEnd { stream } => {
                match Box::pin(self.uploads.end(stream)).await {
                    Ok(info) => {
                        let id = info.id.to_text();
                        let expires_at = encode::rfc3339(info.expires_at);
                        self.send(ServerMessage::Uploaded {
                            reference: reference.as_deref(),
                            stream,
                            upload: super::uploads::upload_wire(&info, &id, &expires_at),
                        });
                    }
                    Err(error) => self.send_wire_error(reference.as_deref(), &error),
                }
                true
            }
            ClientMessage::UploadAbort { stream } => {
                if self.uploads.abort(stream) {
                    self.send(ServerMessage::UploadAborted {
                        reference: reference.as_deref(),
                        stream,
                    });
                } else {
                    let error = super::ws_uploads::stream_error(
                        stream,
                        ErrorCode::BadMessage,
                        format!("no upload is open on stream {stream}"),
                    );
                    self.send_wire_error(reference.as_deref(), &error);
                }
                true
            }
            ClientMessage::Watch => {
                if principal.admin {
                    self.watching = true;
                    scheduler.watch(mailbox, reference).await
                } else {
                    self.state.metrics.rejected(ErrorCode::Unauthorized);
                    self.reply_error(
                        reference,
                        ErrorCode::Unauthorized,
                        "watch needs an admin key",
                    );
                    true
                }
            }
            ClientMessage::Unwatch => {
                self.watching = false;
                scheduler.unwatch(mailbox.id()).await;
                true
            }
        };
        if alive {
            None
        } else {
            Some(End::Close(CloseCode::GoingAway))
        }
    }

    fn authenticate(&mut self, key: &str) -> Option<End> {
        match self.state.auth.authenticate(key, self.origin.as_deref()) {
            Some(principal) => {
                tracing::info!(client = %principal.client, "websocket authenticated");
                self.principal = Some(principal);
                self.out.push(Message::Text(self.state.welcome()));
                None
            }
            None => {
                self.state.metrics.rejected(ErrorCode::Unauthorized);
                tracing::info!(client = "unknown", "websocket authentication failed");
                Some(End::Close(CloseCode::Unauthorized))
            }
        }
    }

    /// Queues a server message for this turn's write.
    fn send(&mut self, message: ServerMessage<'_>) {
        self.out.push(Message::Text(message.to_json().into()));
    }

    fn reply_error(&mut self, reference: Option<Box<str>>, code: ErrorCode, message: &str) {
        if code == ErrorCode::BadMessage {
            self.state.metrics.rejected(code);
        }
        let error = WireError::new(code, message);
        self.send(ServerMessage::Error {
            reference: reference.as_deref(),
            error: &error,
        });
    }

    /// Sends an `error` carrying a ready-made error object.
    fn send_wire_error(&mut self, reference: Option<&str>, error: &WireError) {
        self.state.metrics.rejected(error.code);
        self.send(ServerMessage::Error { reference, error });
    }

    /// Turns one scheduler message into frames (or a stream job).
    fn outbound(&mut self, message: Outbound) {
        match message {
            Outbound::Event {
                record,
                reference,
                duplicate,
                stream,
            } => {
                if stream && let TaskEvent::Completed { files, .. } = &record.event {
                    let files = files.clone();
                    self.streams.push_back(StreamJob {
                        record,
                        reference,
                        files,
                        next_file: 0,
                        current: None,
                    });
                    return;
                }
                self.event(&record, reference.as_deref(), duplicate);
            }
            Outbound::Replay(records) => {
                for record in records {
                    self.event(&record, None, false);
                }
            }
            Outbound::Rejected { reference, error } => {
                let error = ApiError::from(*error).wire();
                self.state.metrics.rejected(error.code);
                self.send(ServerMessage::Rejected {
                    reference: reference.as_deref(),
                    error: &error,
                });
            }
            Outbound::Error { reference, error } => {
                let error = ApiError::from(*error).wire();
                self.state.metrics.rejected(error.code);
                self.send(ServerMessage::Error {
                    reference: reference.as_deref(),
                    error: &error,
                });
            }
            Outbound::Unsubscribed { reference, task_id } => {
                let id = task_id.hex();
                self.send(ServerMessage::Unsubscribed {
                    reference: reference.as_deref(),
                    task_id: id.as_str(),
                });
            }
            Outbound::Watching(w) => {
                let text = encode::watching(w.reference.as_deref(), &w.tasks, &w.workers, &w.stats);
                self.out.push(Message::Text(text.into()));
            }
            Outbound::WorkerUpdate(view) => {
                if self.watching {
                    self.out
                        .push(Message::Text(encode::worker_update(&view).into()));
                }
            }
            Outbound::TaskUpdate(view) => {
                if self.watching {
                    self.out
                        .push(Message::Text(encode::task_update(&view).into()));
                }
            }
            Outbound::Stats(stats) => {
                if self.watching {
                    self.out
                        .push(Message::Text(encode::stats_message(&stats).into()));
                }
            }
        }
    }

    fn event(&mut self, record: &EventRecord, reference: Option<&str>, duplicate: bool) {
        let links = &self.state.links;
        let bytes = if reference.is_some() || duplicate {
            encode::event(record, reference, duplicate, links)
        } else {
            encode::shared_event(record, links)
        };
        if record.event.is_terminal() {
            self.following.remove(&record.task_id);
        } else {
            self.following.insert(record.task_id);
        }
        match Utf8Bytes::try_from(bytes) {
            Ok(text) => self.out.push(Message::Text(text)),
            Err(_) => tracing::error!("an encoded event was not UTF-8"),
        }
    }

    /// Sends the next piece of the first stream job: a `stream_begin`, a
    /// binary chunk, a `stream_end`, or (after the last file) the event.
    async fn stream_step(&mut self) {
        let Some(job) = self.streams.front_mut() else {
            return;
        };
        let task_id = job.record.task_id.hex();
        if let Some((stream, file)) = &mut job.current {
            let stream = *stream;
            // The frame is read in place: 4-byte stream number, then bytes.
            let mut buffer = BytesMut::with_capacity(4 + STREAM_CHUNK);
            buffer.put_u32(stream);
            buffer.resize(4 + STREAM_CHUNK, 0);
            match file.read(&mut buffer[4..]).await {
                Ok(0) | Err(_) => {
                    let sha = job
                        .files
                        .get(job.next_file - 1)
                        .map_or("", |f| f.sha256.as_str());
                    let end = ServerMessage::StreamEnd {
                        task_id: task_id.as_str(),
                        stream,
                        sha256: sha,
                    }
                    .to_json();
                    job.current = None;
                    self.out.push(Message::Text(end.into()));
                }
                Ok(n) => {
                    buffer.truncate(4 + n);
                    self.out.push(Message::Binary(buffer.freeze()));
                }
            }
            return;
        }
        if let Some(file) = job.files.get(job.next_file) {
            // Cluster mode: a file published on another node is copied here
            // first (a no-op for a file of this node).
            let _ = self.state.artifacts.find(&file.token, &file.name).await;
            let path = self.state.artifacts.published_path(&file.token);
            // Cancel-safe: the file counts as started only once it is open.
            let opened = tokio::task::spawn_blocking(move || match path {
                Some(path) => super::files::open_no_follow(&path),
                None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|opened| opened.map(tokio::fs::File::from_std));
            let Some(file) = job.files.get(job.next_file) else {
                return;
            };
            job.next_file += 1;
            match opened {
                Ok(opened) => {
                    let stream = self.next_stream;
                    self.next_stream = self.next_stream.wrapping_add(1);
                    let begin = ServerMessage::StreamBegin {
                        task_id: task_id.as_str(),
                        stream,
                        name: &file.name,
                        size: file.size,
                        content_type: &file.content_type,
                    }
                    .to_json();
                    job.current = Some((stream, opened));
                    self.out.push(Message::Text(begin.into()));
                }
                Err(e) => tracing::warn!(error = %e, "a file to stream is gone"),
            }
            return;
        }
        if let Some(job) = self.streams.pop_front() {
            self.event(&job.record, job.reference.as_deref(), false);
        }
    }

    /// Tells the scheduler this connection is gone.
    async fn leave(self) {
        let tasks = self.following.into_iter().collect();
        self.state
            .scheduler
            .disconnected(self.mailbox.id(), tasks)
            .await;
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn frame_len(frame: &Message) -> u64 {
    match frame {
        Message::Text(t) => t.len() as u64,
        Message::Binary(b) => b.len() as u64,
        _ => 0,
    }
}

/// Maps a read error to the close code the client earned.
fn read_error(error: axum::Error) -> End {
    let inner = error.into_inner();
    match inner.downcast::<tungstenite::Error>() {
        Ok(error) => match *error {
            tungstenite::Error::Capacity(_) => End::Close(CloseCode::MessageTooBig),
            tungstenite::Error::Utf8(_) => End::Close(CloseCode::InvalidPayload),
            tungstenite::Error::Protocol(_) => End::Close(CloseCode::ProtocolError),
            _ => End::Gone,
        },
        Err(_) => End::Gone,
    }
}
