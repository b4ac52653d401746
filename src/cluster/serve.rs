//! The node's background loops: connecting and setting up NATS, the feed of
//! committed events, lease renewals, the registry of nodes, requests from
//! other nodes, and the effects of the core.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec;
use super::config::{ClusterConfig, NatsAuth};
use super::link::{
    EVENTS_STREAM, FILE_BUCKET, IDEM_BUCKET, INPUT_BUCKET, LOCK_BUCKET, Link, NODE_BUCKET,
    QUEUE_STREAM, Ready, TOKEN_BUCKET,
};
use crate::config::Limits;
use crate::scheduler::cluster::{Forwarded, Input, NodeState, NodeView};
use crate::scheduler::{ClusterPort, Refusal};
use crate::task::{CancelReason, TaskId};

/// Effects carried out at once, at most (each is one task's IO).
const EFFECTS_AT_ONCE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Setup(String),
}

/// What the nodes share besides tasks, and its bounds.
#[derive(Clone, Debug)]
pub struct Shares {
    /// `max_token_ttl_s`: the age limit of shared token grants.
    pub token_ttl: Duration,
    /// `file_ttl_s`: files are served this long, then answer `410`.
    pub file_ttl: Duration,
    /// `max_temp_bytes`: the bound of the shared file store.
    pub file_bytes: u64,
}

/// The node's view of its link, for `/readyz` and shutdown.
#[derive(Clone, Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node: Arc<str>,
    /// Why NATS is not usable now (`None`: it is).
    down: Mutex<Option<String>>,
    link: Arc<Link>,
    effects_done: tokio::sync::Notify,
    busy: std::sync::atomic::AtomicUsize,
}

impl Cluster {
    pub(super) fn link(&self) -> Arc<Link> {
        Arc::clone(&self.shared.link)
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Why this node cannot reach the cluster's queue, or cannot yet answer
    /// other nodes' requests (about its tasks and its uploads), if so.
    pub fn unready(&self) -> Option<String> {
        let down = self
            .shared
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        down.or_else(|| {
            let answering = self
                .shared
                .link
                .answering
                .load(std::sync::atomic::Ordering::Acquire);
            (answering < REQUEST_SUBJECTS)
                .then(|| "NATS: not yet answering other nodes' requests".to_owned())
        })
    }

    /// Waits (bounded) until no effect is being carried out: the last
    /// events of this node's tasks are in the stream.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.busy.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if tokio::time::timeout_at(deadline, self.shared.effects_done.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }

    /// A clean exit: this node's entry leaves the registry.
    pub async fn leave(&self) {
        self.shared.link.leave().await;
    }
}

async fn connect(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let setup = |e: std::io::Error| ClusterError::Setup(e.to_string());
    let mut options = match &config.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(setup)?,
        NatsAuth::NkeyFile(path) => {
            let seed = std::fs::read_to_string(path).map_err(setup)?;
            async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        }
    };
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = config
        .nats_urls
        .iter()
        .filter_map(|u| u.parse().ok())
        .collect();
    options
        .name(format!("taskwire {}", config.node))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(1000))
        })
        .connect(urls)
        .await
        .map_err(|e| ClusterError::Setup(e.to_string()))
}

/// Creates (or brings up to date) every stream and bucket.
async fn set_up(
    js: &jetstream::Context,
    config: &ClusterConfig,
    limits: &Limits,
    shares: &Shares,
) -> Result<Ready, String> {
    let replicas = config.replicas;
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let queue = stream::Config {
        name: QUEUE_STREAM.to_owned(),
        subjects: vec!["tw.q.>".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages: i64::try_from(limits.queue_capacity).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(limits.max_queued_input_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    };
    let queue = match js.create_or_update_stream(queue.clone()).await {
        Ok(_) => js.get_stream(QUEUE_STREAM).await.map_err(|e| text(&e))?,
        Err(e) => return Err(text(&e)),
    };
    // Events outlive their task by `result_ttl` (the node that ended it
    // purges them then); the age limit is the backstop if that node died.
    let max_age = limits.result_ttl * 2 + limits.max_timeout + limits.no_worker_wait;
    let events = stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec!["tw.ev.*".to_owned()],
        retention: stream::RetentionPolicy::Limits,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    };
    js.create_or_update_stream(events)
        .await
        .map_err(|e| text(&e))?;
    let events = js.get_stream(EVENTS_STREAM).await.map_err(|e| text(&e))?;
    let bucket = |name: &str, max_age: Duration| kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let idem = js
        .create_or_update_key_value(bucket(IDEM_BUCKET, max_age))
        .await
        .map_err(|e| text(&e))?;
    let locks = js
        .create_or_update_key_value(bucket(LOCK_BUCKET, config.lease))
        .await
        .map_err(|e| text(&e))?;
    let nodes = js
        .create_or_update_key_value(bucket(NODE_BUCKET, Duration::from_secs(86_400)))
        .await
        .map_err(|e| text(&e))?;
    let tokens = js
        .create_or_update_key_value(bucket(TOKEN_BUCKET, shares.token_ttl))
        .await
        .map_err(|e| text(&e))?;
    let files = open_store(
        js,
        config,
        FILE_BUCKET,
        shares.file_ttl * 2,
        shares.file_bytes,
    )
    .await?;
    // Uploads of queued and running tasks: deleted when their task ends;
    // the events' age limit is the backstop.
    let inputs = open_store(js, config, INPUT_BUCKET, max_age, shares.file_bytes).await?;
    Ok(Ready {
        js: js.clone(),
        queue,
        events,
        idem,
        locks,
        nodes,
        tokens,
        files,
        inputs,
    })
}

/// An object store: created if missing, its limits brought up to date.
async fn open_store(
    js: &jetstream::Context,
    config: &ClusterConfig,
    bucket: &str,
    max_age: Duration,
    max_bytes: u64,
) -> Result<jetstream::object_store::ObjectStore, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    match js.get_object_store(bucket).await {
        Ok(store) => {
            // The store is a stream `OBJ_<bucket>`: its limits follow the
            // configuration like the other streams'.
            let name = format!("OBJ_{bucket}");
            if let Ok(stream) = js.get_stream(&name).await {
                let mut wanted = stream.cached_info().config.clone();
                if wanted.max_age != max_age
                    || (wanted.max_bytes != max_bytes && wanted.max_bytes != -1)
                {
                    wanted.max_age = max_age;
                    wanted.max_bytes = max_bytes;
                    if let Err(e) = js.update_stream(wanted).await {
                        tracing::warn!(error = %e, bucket, "a shared object store keeps its old limits");
                    }
                }
            }
            Ok(store)
        }
        Err(_) => {
            let store = |max_bytes| jetstream::object_store::Config {
                bucket: bucket.to_owned(),
                max_age,
                max_bytes,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            };
            match js.create_object_store(store(max_bytes)).await {
                Ok(made) => Ok(made),
                // JetStream reserves a stream's `max_bytes` up front: where
                // its disk is smaller than `max_temp_bytes`, the store is
                // bounded by JetStream's own storage limit and its age.
                Err(e) if e.to_string().contains("insufficient storage") => {
                    tracing::warn!(
                        bucket,
                        "NATS cannot reserve max_temp_bytes for a shared object store; it is bounded by JetStream's storage limit instead"
                    );
                    js.create_object_store(store(-1))
                        .await
                        .map_err(|e| text(&e))
                }
                Err(e) => Err(text(&e)),
            }
        }
    }
}

/// Starts the node's link: connects (in the background: a node comes up
/// even while NATS is away, with `/readyz` saying so), sets up the streams
/// and runs every loop until `stop`.
pub async fn start(
    config: &ClusterConfig,
    limits: &Limits,
    shares: Shares,
    port: ClusterPort,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<Cluster, ClusterError> {
    let ClusterPort { inputs, effects } = port;
    let client = connect(config).await?;
    let node: Arc<str> = Arc::from(config.node.as_str());
    let link = Arc::new(Link::new(
        client.clone(),
        Arc::clone(&node),
        config.lease,
        inputs.clone(),
    ));
    let shared = Arc::new(Shared {
        node: Arc::clone(&node),
        down: Mutex::new(Some("connecting to NATS".to_owned())),
        link: Arc::clone(&link),
        effects_done: tokio::sync::Notify::new(),
        busy: std::sync::atomic::AtomicUsize::new(0),
    });
    let cluster = Cluster {
        shared: Arc::clone(&shared),
    };
    let _ = inputs
        .send(Input::Link(Some("connecting to NATS".to_owned())))
        .await;
    tracker.spawn(run_effects(
        Arc::clone(&shared),
        effects,
        tracker.clone(),
        stop.clone(),
    ));
    tracker.spawn(supervise(
        Arc::clone(&shared),
        config.clone(),
        limits.clone(),
        shares,
        tracker.clone(),
        stop,
    ));
    Ok(cluster)
}

async fn set_down(shared: &Shared, why: Option<String>) {
    let changed = {
        let mut down = shared.down.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = *down != why;
        down.clone_from(&why);
        changed
    };
    if changed {
        match &why {
            Some(why) => tracing::warn!(why = %why, "the cluster's queue is unreachable"),
            None => {
                tracing::info!("the cluster's queue is reachable");
                shared.link.reconnects.send_modify(|n| *n += 1);
            }
        }
        let _ = shared.link.inputs.send(Input::Link(why)).await;
    }
}

/// Sets up the streams, then watches the connection and runs the loops.
async fn supervise(
    shared: Arc<Shared>,
    config: ClusterConfig,
    limits: Limits,
    shares: Shares,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let link = Arc::clone(&shared.link);
    let js = jetstream::new(link.client.clone());
    loop {
        if stop.is_cancelled() {
            return;
        }
        match set_up(&js, &config, &limits, &shares).await {
            Ok(ready) => {
                let _ = link.ready.set(ready);
                break;
            }
            Err(why) => {
                set_down(&shared, Some(format!("NATS: {why}"))).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
    set_down(&shared, None).await;
    link.publish_entry().await;
    tracker.spawn(feed(
        Arc::clone(&link),
        link.reconnects.subscribe(),
        stop.clone(),
    ));
    tracker.spawn(requests(Arc::clone(&link), stop.clone()));
    tracker.spawn(registry(Arc::clone(&link), stop.clone()));
    // Renewals, and the connection's health.
    let every = config.lease / 4;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every.min(Duration::from_millis(500))) => {}
        }
        let state = link.client.connection_state();
        let why = match state {
            async_nats::connection::State::Connected => None,
            other => Some(format!("NATS connection {other}")),
        };
        set_down(&shared, why).await;
        link.renew().await;
    }
}

/// Carries out the core's effects, each in its own tracked future.
async fn run_effects(
    shared: Arc<Shared>,
    mut effects: mpsc::Receiver<crate::scheduler::cluster::Effect>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(EFFECTS_AT_ONCE));
    loop {
        let effect = tokio::select! {
            () = stop.cancelled() => return,
            effect = effects.recv() => match effect {
                Some(effect) => effect,
                None => return,
            },
        };
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let link = Arc::clone(&shared.link);
        let done = Arc::clone(&shared);
        done.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tracker.spawn(async move {
            link.handle(effect).await;
            drop(permit);
            done.busy.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            done.effects_done.notify_waiters();
        });
    }
}

/// How long the event feed may be silent before it checks that the stream
/// has nothing more for it.
const FEED_IDLE_CHECK: Duration = Duration::from_secs(2);

/// Every committed event of the cluster, in stream order, to the core.
///
/// An ordered consumer can go silent after a NATS server restarts or a
/// cluster member dies (the library believes it is live; the server no
/// longer serves it). So a feed idle for [`FEED_IDLE_CHECK`] asks the stream
/// for its last sequence and starts a fresh consumer from where it was when
/// the stream holds something newer it has not delivered; a new connection
/// does the same at once.
async fn feed(
    link: Arc<Link>,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let Some(ready) = link.ready.get() else {
        return;
    };
    // Where the feed starts: after the stream's last event when it begins
    // (the core loads older history on demand), then after the last one
    // delivered, so a restart never skips one.
    let mut from = loop {
        match ready.events.get_info().await {
            Ok(info) => break info.state.last_sequence,
            Err(e) => {
                tracing::debug!(error = %e, "the event feed waits for the stream");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    };
    // The stream's last sequence when a restart was last made for it: a
    // feed restarted for it that still delivers nothing (those events were
    // purged) is not restarted again until the stream grows.
    let mut restarted_for = 0;
    loop {
        let config = consumer::pull::OrderedConfig {
            filter_subject: "tw.ev.*".to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        };
        let messages = match ready.events.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.ok(),
            Err(e) => {
                tracing::debug!(error = %e, "the event feed cannot start; it tries again");
                None
            }
        };
        tracing::debug!(
            after = from,
            running = messages.is_some(),
            "the event feed starts"
        );
        if let Some(mut messages) = messages {
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    // A new connection: a fresh consumer from where this one
                    // was (the old one may be gone with a restarted server).
                    _ = reconnects.changed() => break,
                    next = messages.next() => next,
                    () = tokio::time::sleep(FEED_IDLE_CHECK) => {
                        match ready.events.get_info().await {
                            Ok(info) if info.state.last_sequence > from.max(restarted_for) => {
                                tracing::info!(
                                    delivered = from,
                                    last = info.state.last_sequence,
                                    "the event feed fell silent behind the stream; it restarts"
                                );
                                restarted_for = info.state.last_sequence;
                                break;
                            }
                            Ok(info) => {
                                tracing::trace!(delivered = from, last = info.state.last_sequence, "the event feed is idle");
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "the event feed cannot read the stream's state");
                                continue;
                            }
                        }
                    }
                };
                let Some(Ok(message)) = next else { break };
                let Ok(info) = message.info() else { continue };
                let seq = info.stream_sequence;
                from = seq;
                let Some(id) = message
                    .subject
                    .as_str()
                    .strip_prefix("tw.ev.")
                    .and_then(|id| id.parse::<TaskId>().ok())
                else {
                    continue;
                };
                match codec::decode_event(id, seq, &message.payload) {
                    Ok(events) => {
                        for applied in events {
                            if applied.record.event.is_terminal() {
                                link.task_ended(id);
                            }
                            if link.inputs.send(Input::Event(applied)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, task_id = %id, "an event cannot be read"),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The subjects [`answer_requests`] serves for each node: `req` (cancels
/// and answers about its tasks) and `upload` (its uploads).
const REQUEST_SUBJECTS: usize = 2;

/// Requests answered or waiting at once on each of a node's request
/// subjects; one more is answered at once with the subject's "busy" reply.
pub(super) const REQUESTS_AT_ONCE: usize = 256;

/// Answers the requests other nodes send to `tw.node.<node>.<what>`: each on
/// a task of its own, at most [`REQUESTS_AT_ONCE`] at once (one more gets
/// `busy` at once, so the asking node refuses its caller `unavailable`
/// instead of waiting for its timeout); subscribed again after NATS comes
/// back. Requests without a reply subject are dropped.
pub(super) async fn answer_requests<F, Fut>(
    link: Arc<Link>,
    what: &str,
    busy: Bytes,
    stop: CancellationToken,
    answer: F,
) where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = Bytes> + Send + 'static,
{
    let open = Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE));
    loop {
        let subject = format!("tw.node.{}.{what}", link.node);
        if let Ok(mut requests) = link.client.subscribe(subject).await {
            link.answering
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            loop {
                let request = tokio::select! {
                    () = stop.cancelled() => return,
                    request = requests.next() => request,
                };
                let Some(request) = request else {
                    link.answering
                        .fetch_sub(1, std::sync::atomic::Ordering::Release);
                    break;
                };
                let Some(reply_to) = request.reply else {
                    continue;
                };
                let Ok(slot) = Arc::clone(&open).try_acquire_owned() else {
                    let _ = link.client.publish(reply_to, busy.clone()).await;
                    continue;
                };
                let (link, answered) = (Arc::clone(&link), answer(request.payload));
                tokio::spawn(async move {
                    let reply = answered.await;
                    drop(slot);
                    let _ = link.client.publish(reply_to, reply).await;
                });
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Requests of other nodes about tasks this one runs: cancels and answers,
/// handed to the core, which replies once it has acted.
async fn requests(link: Arc<Link>, stop: CancellationToken) {
    let busy = encode_reply(&Err(Refusal::Unavailable {
        retry_after: Duration::from_millis(500),
    }));
    let inputs = link.inputs.clone();
    answer_requests(link, "req", busy, stop, move |payload| {
        let inputs = inputs.clone();
        async move {
            let result = match decode_request(&payload) {
                Some((task_id, request)) => {
                    let (tx, rx) = oneshot::channel();
                    let _ = inputs
                        .send(Input::Forwarded {
                            task_id,
                            request,
                            reply: tx,
                        })
                        .await;
                    rx.await.unwrap_or(Err(Refusal::NotOwner))
                }
                None => Err(Refusal::NotFound),
            };
            encode_reply(&result)
        }
    })
    .await;
}

fn decode_request(bytes: &[u8]) -> Option<(TaskId, Forwarded)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let task_id = value.get("task_id")?.as_str()?.parse().ok()?;
    if let Some(reason) = value.get("cancel").and_then(|r| r.as_str()) {
        let reason = match reason {
            "disconnect" => CancelReason::Disconnect,
            "shutdown" => CancelReason::Shutdown,
            _ => CancelReason::Client,
        };
        return Some((task_id, Forwarded::Cancel(reason)));
    }
    let question_id = value.get("question_id")?.as_str()?.to_owned();
    let answer = value.get("value")?.clone();
    Some((
        task_id,
        Forwarded::Answer {
            question_id,
            value: answer,
        },
    ))
}

fn encode_reply(result: &Result<(), Refusal>) -> Bytes {
    let code = match result {
        Ok(()) => "ok",
        Err(Refusal::NotOwner) => "not_owner",
        Err(Refusal::NoSuchQuestion) => "no_such_question",
        Err(Refusal::AlreadyAnswered) => "already_answered",
        Err(Refusal::AlreadyFinished) => "already_finished",
        Err(Refusal::InvalidAnswer(_)) => "invalid_answer",
        Err(Refusal::NotFound) => "not_found",
        Err(_) => "unavailable",
    };
    let message = match result {
        Err(Refusal::InvalidAnswer(invalid)) => serde_json::json!({
            "code": code, "path": invalid.path, "reason": invalid.reason,
        }),
        _ => serde_json::json!({ "code": code }),
    };
    Bytes::from(message.to_string())
}

pub(super) fn decode_reply(bytes: &[u8]) -> Result<(), Refusal> {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("code").and_then(|c| c.as_str()).unwrap_or("") {
        "ok" => Ok(()),
        "not_owner" => Err(Refusal::NotOwner),
        "no_such_question" => Err(Refusal::NoSuchQuestion),
        "already_answered" => Err(Refusal::AlreadyAnswered),
        "already_finished" => Err(Refusal::AlreadyFinished),
        "not_found" => Err(Refusal::NotFound),
        "invalid_answer" => Err(Refusal::InvalidAnswer(crate::catalog::InvalidInput::new(
            value
                .get("path")
                .and_then(|p| p.as_str())
                .unwrap_or("$.value"),
            value
                .get("reason")
                .and_then(|p| p.as_str())
                .unwrap_or("invalid answer"),
        ))),
        _ => Err(Refusal::Unavailable {
            retry_after: Duration::from_millis(500),
        }),
    }
}

/// The registry of nodes: this node's entry, renewed; every node's, watched.
async fn registry(link: Arc<Link>, stop: CancellationToken) {
    let Some(ready) = link.ready.get() else {
        return;
    };
    let mut known: BTreeMap<String, (codec::Entry, SystemTime, bool)> = BTreeMap::new();
    let every = link.lease / 3;
    let mut tick = tokio::time::interval(every);
    let mut watch = ready.nodes.watch_all().await.ok();
    loop {
        let update = tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => None,
            entry = next_entry(&mut watch) => Some(entry),
        };
        match update {
            None => {
                link.publish_entry().await;
                if watch.is_none() {
                    watch = ready.nodes.watch_all().await.ok();
                }
            }
            Some(None) => watch = None,
            Some(Some(entry)) => match entry.operation {
                kv::Operation::Put => {
                    if let Ok(decoded) = codec::decode_entry(&entry.value) {
                        known.insert(entry.key.clone(), (decoded, SystemTime::now(), false));
                    }
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    if let Some(known) = known.get_mut(&entry.key) {
                        known.2 = true;
                    }
                }
            },
        }
        let now = SystemTime::now();
        // A node not heard of for a lease is gone; gone ones are shown for
        // an hour.
        known.retain(|_, (_, seen, _)| {
            now.duration_since(*seen).unwrap_or_default() < Duration::from_secs(3600)
        });
        let views: Vec<NodeView> = known
            .values()
            .map(|(entry, seen, left)| {
                let silent = now.duration_since(*seen).unwrap_or_default() > link.lease;
                NodeView {
                    name: Arc::from(entry.node.as_str()),
                    state: if *left || silent {
                        NodeState::Gone
                    } else if entry.draining {
                        NodeState::Draining
                    } else {
                        NodeState::Up
                    },
                    workers: entry.workers(),
                    tasks: entry.tasks(),
                    started_at: codec::time(entry.started_at_ms),
                    seen_at: *seen,
                }
            })
            .collect();
        let peers = views
            .iter()
            .filter(|view| view.state != NodeState::Gone && view.name != link.node)
            .map(|view| Arc::clone(&view.name))
            .collect();
        *link.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers;
        if link.inputs.send(Input::Nodes(views)).await.is_err() {
            return;
        }
    }
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(watch) => watch.next().await.and_then(Result::ok),
        None => std::future::pending().await,
    }
}
