//! The link: carries out the core's cluster [`Effect`]s on NATS and sends
//! the outcomes back as [`Input`]s. It decides nothing about tasks; what it
//! owns is the life of the queue messages it claimed (acked only after the
//! task's terminal event is in the stream, given back after `requeued`,
//! never touched once its lease may have lapsed) and of concurrency locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{OnceCell, mpsc};
use tokio::time::Instant;

use super::codec;
use crate::scheduler::Refusal;
use crate::scheduler::cluster::{
    Applied, ClaimedTask, Effect, Forwarded, Input, NodeEntry, Settle, SubmitOk,
};
use crate::task::{EventRecord, TaskEvent, TaskId, TaskSpec};

pub(super) const QUEUE_STREAM: &str = "TW_QUEUE";
pub(super) const EVENTS_STREAM: &str = "TW_EVENTS";
pub(super) const IDEM_BUCKET: &str = "tw_idem";
pub(super) const LOCK_BUCKET: &str = "tw_locks";
pub(super) const NODE_BUCKET: &str = "tw_nodes";
pub(super) const TOKEN_BUCKET: &str = "tw_tokens";
pub(super) const FILE_BUCKET: &str = "tw_files";
pub(super) const INPUT_BUCKET: &str = "tw_inputs";

/// How long a refused-for-now submit tells the client to wait.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long one request between nodes may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the node that has an upload may take to store it for a submit
/// received elsewhere (it copies the whole upload into `tw_inputs` first);
/// asks that copy nothing (`GET`, `DELETE`) wait `FORWARD_TIMEOUT`.
const UPLOAD_STORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one claim (its fetches, lane after lane) may wait for NATS.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a submit's own fetch waits in NATS for a message of its lane:
/// it goes out with the queue publish, and NATS may see it first. A fetch
/// still empty then leaves the task to the next claim. A refused submit
/// is answered at once; its fetch finishes on its own.
const SUBMIT_FETCH_WAIT: Duration = Duration::from_millis(100);

/// The fetch a submit sends with its queue publish, for an idle executor.
enum SubmitFetch<'a> {
    /// The submit ended before its publish: no fetch went out.
    Unsent,
    /// What it brought.
    Done(Vec<ClaimedTask>),
    /// Still waiting in NATS when the publish was refused.
    Out(BoxFuture<'a, Vec<ClaimedTask>>),
}

/// Attempts at a publish whose answer did not come (same message id: a
/// repeat that got through is recognised as a duplicate).
const PUBLISH_TRIES: u32 = 3;

/// What exists once NATS answered and the streams are set up.
pub(super) struct Ready {
    pub(super) js: jetstream::Context,
    pub(super) queue: stream::Stream,
    pub(super) events: stream::Stream,
    pub(super) idem: kv::Store,
    pub(super) locks: kv::Store,
    pub(super) nodes: kv::Store,
    /// Browser tokens' grants, by digest (age limit: `max_token_ttl_s`).
    pub(super) tokens: kv::Store,
    /// Published files, by download token (age limit: 2 × `file_ttl_s`).
    pub(super) files: jetstream::object_store::ObjectStore,
    /// Uploads of tasks not ended yet, `in-<task id>-<n>-<nonce>` (deleted
    /// when the task ends; the events' age limit is the backstop).
    pub(super) inputs: jetstream::object_store::ObjectStore,
}

/// How one message of a task's stream ended.
enum Appended {
    /// Stored at this stream sequence.
    Committed(u64),
    /// Another writer's came first (`finished`: the task's last event is
    /// terminal).
    Lost { finished: bool },
}

/// A queue message this node holds for a task it claimed.
struct Held {
    message: jetstream::Message,
    /// When the hold was last known good: the fetch that delivered it, then
    /// each confirmed renewal.
    renewed: Instant,
}

/// A concurrency lock this node holds for a task.
struct Lock {
    key: String,
    revision: u64,
    renewed: Instant,
}

pub(super) struct Link {
    pub(super) client: async_nats::Client,
    pub(super) node: Arc<str>,
    pub(super) lease: Duration,
    pub(super) ready: OnceCell<Ready>,
    pub(super) inputs: mpsc::Sender<Input>,
    consumers: Mutex<HashMap<String, consumer::PullConsumer>>,
    held: Mutex<HashMap<TaskId, Held>>,
    locks: Mutex<HashMap<TaskId, Lock>>,
    /// The stored uploads of tasks this node queued or took, deleted from
    /// the store when their terminal event comes through the feed.
    stored: Mutex<HashMap<TaskId, Vec<String>>>,
    /// The other nodes not gone, from the registry: asked for uploads this
    /// node does not have.
    pub(super) peers: Mutex<Vec<Arc<str>>>,
    /// This node's latest registry entry.
    pub(super) entry: Mutex<Option<NodeEntry>>,
    pub(super) started_at: SystemTime,
    /// Numbers this node's proposals' message ids (from a random start, so
    /// a restarted node never repeats one).
    pub(super) proposals: AtomicU64,
    /// How many of this node's request subjects (`tw.node.<node>.*`) are
    /// subscribed now: the node is ready only once all are.
    pub(super) answering: AtomicUsize,
    /// Grows at every reconnection: the feed starts over from where it was,
    /// and a claim waiting on the old connection gives up.
    pub(super) reconnects: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Why a task's uploads could not be stored before it is queued.
#[derive(Debug)]
enum StoreError {
    /// No node has an upload of that id that is the caller's (its path in
    /// the input).
    NoSuchUpload(String),
    /// NATS, the disk or a node failed: the answer is unknown.
    Failed(String),
}

/// Where this node's proposal ids start: random, else the clock.
fn first_nonce() -> u64 {
    crate::auth::random_bytes::<8>().map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        },
        u64::from_le_bytes,
    )
}

/// Whether a stored message is the one published with `msg_id`.
fn is_proposal(message: &jetstream::message::StreamMessage, msg_id: &str) -> bool {
    message
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .is_some_and(|v| v.as_str() == msg_id)
}

pub(super) fn event_subject(id: TaskId) -> String {
    format!("tw.ev.{}", id.hex().as_str())
}

fn queue_subject(spec: &TaskSpec) -> String {
    format!(
        "tw.q.{}.{}.{}",
        codec::priority_token(spec.options.priority),
        codec::lane_token(&spec.name),
        spec.id.hex().as_str()
    )
}

/// `work`, unless the deadline passes or the connection is replaced first
/// (then why it gave up).
async fn within<T>(
    deadline: Instant,
    reconnected: &mut tokio::sync::watch::Receiver<u64>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, &'static str> {
    tokio::select! {
        done = work => Ok(done),
        () = tokio::time::sleep_until(deadline) => Err("no answer in time"),
        _ = reconnected.changed() => Err("the connection was replaced"),
    }
}

fn gave_up(lane: &str, why: &str) {
    tracing::warn!(
        lane,
        why,
        timeout_ms = CLAIM_TIMEOUT.as_millis() as u64,
        "a claim of queued tasks gave up waiting for NATS"
    );
}

/// The durable queue consumer of one lane (task name and priority).
fn durable_name(name: &str, priority: crate::task::Priority) -> String {
    format!(
        "q{}_{}",
        codec::priority_token(priority),
        codec::lane_token(name)
    )
}

fn lock_key(client: &str, key: &str) -> String {
    let digest = crate::auth::digest(&format!("{client}\u{0}{key}"));
    format!("ck_{}", &crate::auth::hex(&digest)[..40])
}

fn idem_key(client: &str, name: &str, key: &str) -> String {
    let digest = crate::auth::digest(&format!("{client}\u{0}{name}\u{0}{key}"));
    format!("ik_{}", &crate::auth::hex(&digest)[..40])
}

/// Which queue bound a refused publish hit, if that is why it was refused.
fn bound_hit(error: &dyn std::error::Error) -> Option<&'static str> {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    if text.contains("maximum messages") {
        Some("queue_capacity")
    } else if text.contains("maximum bytes") {
        Some("max_queued_input_bytes")
    } else {
        None
    }
}

impl Link {
    pub(super) fn new(
        client: async_nats::Client,
        node: Arc<str>,
        lease: Duration,
        inputs: mpsc::Sender<Input>,
    ) -> Link {
        Link {
            client,
            node,
            lease,
            ready: OnceCell::new(),
            inputs,
            consumers: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            peers: Mutex::new(Vec::new()),
            entry: Mutex::new(None),
            started_at: SystemTime::now(),
            proposals: AtomicU64::new(first_nonce()),
            answering: AtomicUsize::new(0),
            reconnects: tokio::sync::watch::Sender::new(0),
        }
    }

    async fn input(&self, input: Input) {
        let _ = self.inputs.send(input).await;
    }

    /// Waits until the streams are set up.
    pub(super) async fn ready(&self) -> &Ready {
        loop {
            if let Some(ready) = self.ready.get() {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Carries out one effect. Each kind of effect is its own boxed
    /// future: one future for all of them would be as large as the largest
    /// (15 KB), copied at every spawn.
    pub(super) fn handle(self: Arc<Self>, effect: Effect) -> BoxFuture<'static, ()> {
        match effect {
            Effect::Submit {
                spec,
                accepted,
                info,
                claim,
            } => Box::pin(async move {
                let task_id = spec.id;
                let mut fetch = SubmitFetch::Unsent;
                let result = self
                    .submit(spec, accepted, info, claim.map(|_| &mut fetch))
                    .await;
                let Some(executor) = claim else {
                    return self
                        .input(Input::SubmitDone {
                            task_id,
                            result,
                            claimed: None,
                        })
                        .await;
                };
                match fetch {
                    SubmitFetch::Unsent => {
                        let claimed = Some((executor, None));
                        self.input(Input::SubmitDone {
                            task_id,
                            result,
                            claimed,
                        })
                        .await;
                    }
                    SubmitFetch::Done(tasks) => {
                        let claimed = Some((executor, Some(tasks)));
                        self.input(Input::SubmitDone {
                            task_id,
                            result,
                            claimed,
                        })
                        .await;
                    }
                    SubmitFetch::Out(rest) => {
                        // Refused while its fetch still waits in NATS: the
                        // submitter hears now, and what the fetch brings
                        // goes to the executor as any claim's would (its
                        // slot stays promised until then).
                        self.input(Input::SubmitDone {
                            task_id,
                            result,
                            claimed: None,
                        })
                        .await;
                        let tasks = rest.await;
                        let executors = vec![(executor, 1)];
                        self.input(Input::Claimed { executors, tasks }).await;
                    }
                }
            }),
            Effect::Propose {
                record,
                then,
                expected,
                info,
            } => Box::pin(async move { self.propose(record, then, expected, info).await }),
            Effect::Claim {
                executors,
                lanes,
                n,
            } => Box::pin(async move {
                tracing::trace!(
                    executors = executors.len(),
                    n,
                    lanes = lanes.len(),
                    "a claim starts"
                );
                let tasks = self.claim(&lanes, n, None).await;
                tracing::trace!(n, got = tasks.len(), "a claim ends");
                self.input(Input::Claimed { executors, tasks }).await;
            }),
            Effect::Settle { task_id, settle } => {
                Box::pin(async move { self.settle(task_id, settle).await })
            }
            Effect::Abandon { task_id } => Box::pin(async move {
                self.drop_hold(task_id);
                self.unlock(task_id).await;
            }),
            Effect::Reclaim { task_id, executor } => {
                Box::pin(async move { self.reclaim(task_id, executor).await })
            }
            Effect::Lookup { task_id } => Box::pin(async move {
                let records = self.load(task_id).await;
                self.input(Input::Loaded { task_id, records }).await;
            }),
            Effect::Forward {
                id,
                node,
                task_id,
                request,
            } => Box::pin(async move {
                let result = self.forward(&node, task_id, request).await;
                self.input(Input::ForwardDone { id, result }).await;
            }),
            Effect::Forget {
                task_id,
                idempotency,
            } => Box::pin(async move { self.forget(task_id, idempotency).await }),
            Effect::Executors(entry) => Box::pin(async move {
                *self.entry.lock().unwrap_or_else(PoisonError::into_inner) = Some(entry);
                self.publish_entry().await;
            }),
        }
    }

    /// A finished task's history and idempotency key go.
    async fn forget(
        &self,
        task_id: TaskId,
        idempotency: Option<(crate::task::ClientId, Arc<str>, Box<str>)>,
    ) {
        let Some(ready) = self.ready.get() else {
            return;
        };
        let _ = ready.events.purge().filter(event_subject(task_id)).await;
        if let Some((client, name, key)) = idempotency {
            let key = idem_key(client.as_str(), &name, &key);
            if let Ok(Some(entry)) = ready.idem.entry(&key).await
                && entry.value == task_id.hex().as_str().as_bytes()
            {
                let _ = ready
                    .idem
                    .delete_expect_revision(&key, Some(entry.revision))
                    .await;
            }
        }
    }

    /// Copies a task's uploads into the cluster's store, as
    /// `in-<id>-<n>-<nonce>` (the nonce: a re-submit under the id of a
    /// first submit that died half-way never overwrites that one's
    /// objects). An upload made on another node is stored by that node,
    /// asked first.
    async fn store_uploads(
        &self,
        ready: &Ready,
        spec: &TaskSpec,
    ) -> Result<Vec<crate::inputs::StoredUpload>, StoreError> {
        use crate::inputs::{InputSource, StoredUpload};
        let mut stored = Vec::new();
        let nonce = crate::auth::random_bytes::<4>()
            .map(|b| crate::auth::hex(&b))
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        let hex = spec.id.hex();
        for source in spec.inputs.iter() {
            let object = || format!("in-{}-{}-{nonce}", hex.as_str(), stored.len());
            match source {
                InputSource::Upload {
                    json_path,
                    name,
                    file,
                } => {
                    let object = object();
                    self.remember_stored(spec.id, &object);
                    let mut reader = tokio::fs::File::open(file.disk_path())
                        .await
                        .map_err(|e| StoreError::Failed(e.to_string()))?;
                    ready
                        .inputs
                        .put(object.as_str(), &mut reader)
                        .await
                        .map_err(|e| StoreError::Failed(e.to_string()))?;
                    stored.push(StoredUpload {
                        path: json_path.clone(),
                        object,
                        name: name.clone(),
                        size: file.size(),
                        sha256: file.sha256().to_owned(),
                        content_type: file.content_type().to_owned(),
                    });
                }
                InputSource::Remote {
                    json_path,
                    id,
                    only_token,
                } => {
                    let object = object();
                    self.remember_stored(spec.id, &object);
                    let ask = codec::UploadAsk {
                        upload: id.to_text(),
                        client: spec.owner.client.as_str().to_owned(),
                        only_token: *only_token,
                        op: codec::UploadOp::Store {
                            object: object.clone(),
                        },
                    };
                    let found = self.ask_peers(&ask).await.map_err(StoreError::Failed)?;
                    let Some(codec::UploadAnswer::Found {
                        name,
                        size,
                        sha256,
                        content_type,
                        ..
                    }) = found
                    else {
                        return Err(StoreError::NoSuchUpload(json_path.clone()));
                    };
                    stored.push(StoredUpload {
                        path: json_path.clone(),
                        object,
                        name,
                        size,
                        sha256,
                        content_type,
                    });
                }
                InputSource::Url { .. } | InputSource::Stored(_) => {}
            }
        }
        Ok(stored)
    }

    /// Asks every other node at once about an upload; the first answer
    /// other than `Absent` is the one (only the node that has it, and finds
    /// it the caller's, acts on it). `None`: every node answered that it
    /// has none such (a node with nothing listening, dead or not up yet,
    /// has none). A node that does not answer in time, or fails, makes the
    /// answer unknown.
    pub(super) async fn ask_peers(
        &self,
        ask: &codec::UploadAsk,
    ) -> Result<Option<codec::UploadAnswer>, String> {
        use async_nats::client::RequestErrorKind;
        use futures::stream::FuturesUnordered;
        let peers = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let payload = Bytes::from(serde_json::to_vec(ask).map_err(|e| e.to_string())?);
        let timeout = match ask.op {
            codec::UploadOp::Store { .. } => UPLOAD_STORE_TIMEOUT,
            codec::UploadOp::Info | codec::UploadOp::Delete => FORWARD_TIMEOUT,
        };
        let mut answers: FuturesUnordered<_> = peers
            .iter()
            .map(|peer| {
                let request = async_nats::Request::new()
                    .payload(payload.clone())
                    .timeout(Some(timeout));
                self.client
                    .send_request(format!("tw.node.{peer}.upload"), request)
            })
            .collect();
        let mut unknown = None;
        while let Some(answer) = answers.next().await {
            match answer.map(|m| serde_json::from_slice::<codec::UploadAnswer>(&m.payload)) {
                Ok(Ok(codec::UploadAnswer::Absent)) => {}
                Ok(Ok(codec::UploadAnswer::Failed { reason })) => unknown = Some(reason),
                Ok(Ok(answer)) => return Ok(Some(answer)),
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {}
                Ok(Err(e)) => unknown = Some(e.to_string()),
                Err(e) => unknown = Some(e.to_string()),
            }
        }
        match unknown {
            Some(reason) => Err(reason),
            None => Ok(None),
        }
    }

    fn remember_stored(&self, id: TaskId, object: &str) {
        let mut stored = self.stored.lock().unwrap_or_else(PoisonError::into_inner);
        let objects = stored.entry(id).or_default();
        if !objects.iter().any(|o| o == object) {
            objects.push(object.to_owned());
        }
    }

    /// A task's terminal event came through the feed: the uploads this node
    /// stored or took for it go (whichever node wrote the end).
    pub(super) fn task_ended(self: &Arc<Self>, id: TaskId) {
        let known = self
            .stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id);
        if !known {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(ready) = link.ready.get() {
                link.delete_stored(ready, id).await;
            }
        });
    }

    /// Deletes the stored uploads of a task this node queued or took.
    async fn delete_stored(&self, ready: &Ready, id: TaskId) {
        let objects = self
            .stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        for object in objects.into_iter().flatten() {
            if let Err(e) = ready.inputs.delete(object.as_str()).await {
                tracing::debug!(error = %e, task_id = %id, "a stored upload was not deleted; the store's age limit will");
            }
        }
    }

    /// Publishes with a message id, trying again when the answer is lost.
    async fn publish(
        &self,
        js: &jetstream::Context,
        subject: String,
        payload: Bytes,
        msg_id: &str,
        expected: Option<u64>,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(msg_id);
            if let Some(expected) = expected {
                publish = publish.expected_last_subject_sequence(expected);
            }
            let result = match js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if tries < PUBLISH_TRIES
                        && matches!(
                            e.kind(),
                            jetstream::context::PublishErrorKind::TimedOut
                                | jetstream::context::PublishErrorKind::BrokenPipe
                                | jetstream::context::PublishErrorKind::StreamNotFound
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    /// Queues a task, then writes its `accepted`. With `fetch`, a claim of
    /// one task from its lane goes out with the queue publish (into
    /// `fetch`); when it brings this task, `accepted` is left to the core,
    /// which writes it with `started` (`SubmitOk::claimed_here`).
    async fn submit<'a>(
        &'a self,
        mut spec: TaskSpec,
        mut accepted: Arc<EventRecord>,
        info: crate::scheduler::cluster::AcceptedInfo,
        fetch: Option<&mut SubmitFetch<'a>>,
    ) -> Result<SubmitOk, Refusal> {
        let unavailable = Refusal::Unavailable {
            retry_after: RETRY_AFTER,
        };
        let Some(ready) = self.ready.get() else {
            return Err(unavailable);
        };
        let mut duplicate = false;
        let mut made_key = None;
        if let Some(key) = &spec.options.idempotency_key {
            let key = idem_key(spec.owner.client.as_str(), &spec.name, key);
            let id = spec.id.hex();
            match ready
                .idem
                .create(&key, Bytes::copy_from_slice(id.as_str().as_bytes()))
                .await
            {
                Ok(_) => made_key = Some(key),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let existing = ready
                        .idem
                        .get(&key)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<TaskId>().ok());
                    let Some(existing) = existing else {
                        return Err(unavailable);
                    };
                    duplicate = true;
                    let records = Box::pin(self.load(existing)).await;
                    if !records.is_empty() {
                        return Ok(SubmitOk {
                            task_id: existing,
                            duplicate,
                            records,
                            claimed_here: false,
                        });
                    }
                    // The first submit is on its way (or died half-way):
                    // this one queues under its id, which the stream
                    // de-duplicates.
                    spec.id = existing;
                    accepted = Arc::new(EventRecord::new(
                        existing,
                        1,
                        TaskEvent::Accepted { position: 0 },
                    ));
                }
                Err(_) => return Err(unavailable),
            }
        }
        let id = spec.id;
        let hex = id.hex();
        // Its uploads go to the store first: the node that takes the task
        // reads them from there. Boxed, and only for a task with file
        // inputs (most have none): inline, it would make every submit's
        // future that large.
        let stored = if spec.inputs.is_empty() {
            Ok(Vec::new())
        } else {
            Box::pin(self.store_uploads(ready, &spec)).await
        };
        let uploads = match stored {
            Ok(uploads) => uploads,
            Err(e) => {
                if let Some(key) = made_key {
                    let _ = ready.idem.delete(&key).await;
                }
                self.delete_stored(ready, id).await;
                return Err(match e {
                    StoreError::NoSuchUpload(path) => Refusal::NoSuchUpload { path },
                    StoreError::Failed(e) => {
                        tracing::warn!(error = %e, task_id = %id, "storing a task's uploads on NATS failed");
                        unavailable
                    }
                });
            }
        };
        let queued = Bytes::from(codec::encode_queued(&spec, uploads));
        let event = Bytes::from(codec::encode_event(&accepted, &[], &self.node, Some(&info)));
        let event_id = format!("{}-1", hex.as_str());
        // The queue first: once a node sees `accepted`, it can claim it.
        let queue = self.publish(&ready.js, queue_subject(&spec), queued, hex.as_str(), None);
        let queue_ack = match fetch {
            Some(fetch) => {
                // The fetch waits in NATS for the lane's next message, so
                // it may go out before the publish is stored.
                let lane = vec![(Arc::clone(&spec.name), spec.options.priority)];
                let mut claim: BoxFuture<'a, Vec<ClaimedTask>> =
                    Box::pin(async move { self.claim(&lane, 1, Some(SUBMIT_FETCH_WAIT)).await });
                let mut queue = std::pin::pin!(queue);
                let (ack, tasks) = tokio::select! {
                    tasks = &mut claim => (queue.await, Some(tasks)),
                    ack = &mut queue => (ack, None),
                };
                let tasks = match (tasks, &ack) {
                    (Some(tasks), _) => tasks,
                    // Whether it brought this task decides who writes
                    // `accepted`.
                    (None, Ok(_)) => claim.await,
                    // Refused: the fetch is left to finish on its own.
                    (None, Err(_)) => {
                        *fetch = SubmitFetch::Out(claim);
                        Vec::new()
                    }
                };
                let here = !duplicate && ack.is_ok() && tasks.iter().any(|t| t.spec.id == id);
                if !matches!(fetch, SubmitFetch::Out(_)) {
                    *fetch = SubmitFetch::Done(tasks);
                }
                if here {
                    return Ok(SubmitOk {
                        task_id: id,
                        duplicate,
                        records: Vec::new(),
                        claimed_here: true,
                    });
                }
                ack
            }
            None => queue.await,
        };
        if let Err(e) = queue_ack {
            if let Some(key) = made_key {
                let _ = ready.idem.delete(&key).await;
            }
            self.delete_stored(ready, id).await;
            let retry_after = RETRY_AFTER;
            return Err(match bound_hit(&e) {
                Some("queue_capacity") => Refusal::QueueFull {
                    capacity: 0,
                    retry_after,
                },
                Some(_) => Refusal::QueuedBytesFull {
                    max: 0,
                    retry_after,
                },
                None => {
                    tracing::warn!(error = %e, "queueing a task on NATS failed");
                    unavailable
                }
            });
        }
        let event_ack = self
            .publish(&ready.js, event_subject(id), event, &event_id, Some(0))
            .await;
        let records = match event_ack {
            Ok(ack) => vec![Applied {
                record: accepted,
                stream_seq: ack.sequence,
                writer: Arc::clone(&self.node),
                info: Some(info),
            }],
            // Written by the node that took it from the queue first, or
            // unknown: read it back.
            Err(_) => Box::pin(self.load(id)).await,
        };
        Ok(SubmitOk {
            task_id: id,
            duplicate,
            records,
            claimed_here: false,
        })
    }

    /// Appends a proposed event (and the ones after it, `then`, in the
    /// same message), fenced on the task's last stream sequence. Events
    /// that would not fit one message together go one per message, each
    /// fenced on the one before: the core hears of one commit either way.
    async fn propose(
        &self,
        record: Arc<EventRecord>,
        then: Vec<Arc<EventRecord>>,
        expected: u64,
        info: Option<crate::scheduler::cluster::AcceptedInfo>,
    ) {
        let ready = self.ready().await;
        let id = record.task_id;
        let last = then.last().map_or_else(|| Arc::clone(&record), Arc::clone);
        let first = record.seq;
        let max = self.max_event_bytes();
        let parts = codec::event_messages(record, then, &self.node, info.as_ref(), max);
        let mut stream_seq = expected;
        for (record, then, payload) in parts {
            let payload = Bytes::from(payload);
            match self
                .append(ready, &record, &then, payload, stream_seq)
                .await
            {
                Appended::Committed(at) => stream_seq = at,
                Appended::Lost { finished } => {
                    return self.lost_race(id, first, finished).await;
                }
            }
        }
        self.committed(ready, &last, stream_seq).await;
    }

    /// The largest event message this node writes: NATS's `max_payload`,
    /// less room for the headers.
    fn max_event_bytes(&self) -> usize {
        self.client.server_info().max_payload.saturating_sub(4096)
    }

    /// One message of a task's stream, fenced on `expected`, tried until
    /// JetStream stores it or refuses it for another writer's.
    async fn append(
        &self,
        ready: &Ready,
        record: &EventRecord,
        then: &[Arc<EventRecord>],
        payload: Bytes,
        expected: u64,
    ) -> Appended {
        let id = record.task_id;
        // One id per proposal: JetStream de-duplicates by message id before
        // it checks the expected sequence, so an id that another writer
        // (or this node's earlier proposal of the same `seq`) may also use
        // would make a lost race look like a commit. Only a lone `accepted`
        // keeps `<id>-1`: whoever writes it writes the same event (the
        // submitter, or a node that took the task from the queue first).
        // One that carries `started` too is this node's claim on the task,
        // as unique as any other.
        let msg_id = if record.seq == 1 && then.is_empty() {
            format!("{}-1", id.hex().as_str())
        } else {
            let nonce = self.proposals.fetch_add(1, Ordering::Relaxed);
            format!("{}-{}-{nonce:016x}", id.hex().as_str(), record.seq)
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self
                .publish(
                    &ready.js,
                    event_subject(id),
                    payload.clone(),
                    &msg_id,
                    Some(expected),
                )
                .await;
            match result {
                // A repeat of a try that went through: the stream says so
                // only if the message there is this proposal's.
                Ok(ack) if ack.duplicate => match ready.events.direct_get(ack.sequence).await {
                    Ok(m) if is_proposal(&m, &msg_id) => return Appended::Committed(ack.sequence),
                    Ok(_) => {
                        tracing::warn!(task_id = %id, "an event's message id was taken by another message; the task is read again");
                        return Appended::Lost { finished: false };
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, task_id = %id, "checking a repeated event failed; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                },
                Ok(ack) => return Appended::Committed(ack.sequence),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    let last = ready
                        .events
                        .direct_get_last_for_subject(event_subject(id))
                        .await
                        .ok();
                    // A try whose answer was lost went through: the event
                    // there is this very proposal.
                    if let Some(last) = &last
                        && is_proposal(last, &msg_id)
                    {
                        return Appended::Committed(last.sequence);
                    }
                    let last =
                        last.and_then(|m| codec::decode_event(id, m.sequence, &m.payload).ok());
                    let finished = last
                        .as_deref()
                        .and_then(<[Applied]>::last)
                        .is_some_and(|a| a.record.event.is_terminal());
                    return Appended::Lost { finished };
                }
                Err(e) => {
                    // NATS is away: the event waits (the core holds the
                    // next ones) and is written when it comes back.
                    tracing::debug!(error = %e, task_id = %id, "writing an event failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A proposal is in the stream at `stream_seq`: the core hears of it,
    /// and the queue message follows.
    async fn committed(&self, ready: &Ready, last: &EventRecord, stream_seq: u64) {
        self.input(Input::Committed {
            task_id: last.task_id,
            seq: last.seq,
            stream_seq,
        })
        .await;
        self.after_commit(ready, last.task_id, &last.event).await;
    }

    /// The queue message of a task follows its committed events.
    async fn after_commit(&self, ready: &Ready, id: TaskId, event: &TaskEvent) {
        let terminal = event.is_terminal();
        let requeued = matches!(event, TaskEvent::Requeued { .. });
        if !terminal && !requeued {
            return;
        }
        let held = self.take_hold(id);
        match held {
            Some(message) => {
                let kind = if terminal {
                    AckKind::Ack
                } else {
                    AckKind::Nak(None)
                };
                let _ = message.ack_with(kind).await;
            }
            None if terminal => {
                // Nobody here holds it (a cancel or `no_worker` of a queued
                // task): the queue forgets it now.
                let _ = ready
                    .queue
                    .purge()
                    .filter(format!("tw.q.*.*.{}", id.hex().as_str()))
                    .await;
            }
            None => {}
        }
        self.unlock(id).await;
    }

    /// A proposal lost: the core hears of the conflict, and a held message
    /// is dropped from the queue if the task is finished. Otherwise the hold
    /// and the lock stay: the core answers the conflict with an `Abandon`
    /// (let them go untouched) or a `Reclaim` (decide again, still holding).
    async fn lost_race(&self, id: TaskId, seq: u64, finished: bool) {
        self.input(Input::Conflict { task_id: id, seq }).await;
        if finished && let Some(message) = self.take_hold(id) {
            let _ = message.ack().await;
        }
    }

    /// The held message, if its hold is still good (else it is let go:
    /// acting on a message whose lease may have lapsed could touch another
    /// node's delivery, nats-server#4786).
    fn take_hold(&self, id: TaskId) -> Option<jetstream::Message> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)?;
        (held.renewed.elapsed() < self.safe_hold()).then_some(held.message)
    }

    fn drop_hold(&self, id: TaskId) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// How long after its last confirmed renewal a hold is surely still
    /// this node's.
    fn safe_hold(&self) -> Duration {
        self.lease - self.lease / 4
    }

    async fn settle(&self, id: TaskId, settle: Settle) {
        if let Some(message) = self.take_hold(id) {
            let kind = match settle {
                Settle::Drop => AckKind::Ack,
                Settle::Retry(delay) if delay.is_zero() => AckKind::Nak(None),
                Settle::Retry(delay) => AckKind::Nak(Some(delay)),
            };
            let _ = message.ack_with(kind).await;
        }
        self.unlock(id).await;
    }

    /// The lane's consumer if this node has set it up already.
    fn cached_consumer(
        &self,
        name: &str,
        priority: crate::task::Priority,
    ) -> Option<consumer::PullConsumer> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&durable_name(name, priority))
            .cloned()
    }

    async fn consumer(
        &self,
        ready: &Ready,
        name: &str,
        priority: crate::task::Priority,
    ) -> Option<consumer::PullConsumer> {
        let lane = codec::lane_token(name);
        let p = codec::priority_token(priority);
        let durable = durable_name(name, priority);
        if let Some(found) = self.cached_consumer(name, priority) {
            return Some(found);
        }
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: format!("tw.q.{p}.{lane}.*"),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.lease,
            max_deliver: -1,
            max_ack_pending: 100_000,
            ..Default::default()
        };
        let made = match ready
            .queue
            .get_or_create_consumer(&durable, config.clone())
            .await
        {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up a queue consumer");
                return None;
            }
        };
        // Every node uses the same lease: the consumer follows the config.
        if made.cached_info().config.ack_wait != self.lease {
            let _ = ready.queue.update_consumer(config).await;
        }
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(durable, made.clone());
        Some(made)
    }

    /// Up to `n` queued tasks from the first lanes that have some; with
    /// `wait`, a lane with none is waited on that long for its next one.
    async fn claim(
        &self,
        lanes: &[(Arc<str>, crate::task::Priority)],
        n: usize,
        wait: Option<Duration>,
    ) -> Vec<ClaimedTask> {
        let Some(ready) = self.ready.get() else {
            return Vec::new();
        };
        let mut got = Vec::new();
        // A fetch whose request or answer is lost (its server restarted or
        // died) is never answered: without a bound the claim, and the
        // executor's free slots with it, would wait for ever. It gives up at
        // a deadline, or at once when the connection is replaced. A message
        // the server delivers after that is redelivered when its lease (the
        // consumer's ack wait) runs out.
        let deadline = Instant::now() + CLAIM_TIMEOUT;
        let mut reconnected = self.reconnects.subscribe();
        reconnected.mark_unchanged();
        'lanes: for (name, priority) in lanes {
            if got.len() >= n {
                break;
            }
            // Boxed: setting a consumer up is rare and its future large
            // (kept inline, it would make every claim's future that large).
            let cached = self.cached_consumer(name, *priority);
            let found = match cached {
                Some(consumer) => Ok(Some(consumer)),
                None => {
                    within(
                        deadline,
                        &mut reconnected,
                        Box::pin(self.consumer(ready, name, *priority)),
                    )
                    .await
                }
            };
            let consumer = match found {
                Ok(Some(consumer)) => consumer,
                Ok(None) => continue,
                Err(why) => {
                    gave_up(name, why);
                    break;
                }
            };
            let asked = Instant::now();
            let want = n - got.len();
            let fetch: BoxFuture<'_, Result<consumer::pull::Batch, consumer::pull::BatchError>> =
                match wait {
                    None => Box::pin(consumer.fetch().max_messages(want).messages()),
                    Some(wait) => {
                        Box::pin(consumer.batch().max_messages(want).expires(wait).messages())
                    }
                };
            let mut batch = match within(deadline, &mut reconnected, fetch).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, lane = %name, "a claim's fetch failed");
                    self.forget_consumer(name, *priority);
                    continue;
                }
                Err(why) => {
                    gave_up(name, why);
                    self.forget_consumer(name, *priority);
                    break;
                }
            };
            loop {
                let message = match within(deadline, &mut reconnected, batch.next()).await {
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(e))) => {
                        tracing::debug!(error = %e, lane = %name, "a claim's fetch ended");
                        break;
                    }
                    Ok(None) => break,
                    Err(why) => {
                        gave_up(name, why);
                        self.forget_consumer(name, *priority);
                        break 'lanes;
                    }
                };
                let delivered = message.info().map_or(1, |i| i.delivered.max(1) as u64);
                let spec = match codec::decode_queued(&message.payload) {
                    Ok(spec) => spec,
                    Err(e) => {
                        tracing::error!(error = %e, "a queue message cannot be read; it is dropped");
                        let _ = Box::pin(message.ack_with(AckKind::Term)).await;
                        continue;
                    }
                };
                if let Some(key) = &spec.options.concurrency_key
                    && !Box::pin(self.lock(ready, spec.id, spec.owner.client.as_str(), key)).await
                {
                    let busy = AckKind::Nak(Some(crate::scheduler::cluster::BUSY_RETRY));
                    let _ = Box::pin(message.ack_with(busy)).await;
                    continue;
                }
                self.held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        spec.id,
                        Held {
                            message,
                            renewed: asked,
                        },
                    );
                for source in spec.inputs.iter() {
                    if let crate::inputs::InputSource::Stored(upload) = source {
                        self.remember_stored(spec.id, &upload.object);
                    }
                }
                got.push(ClaimedTask { spec, delivered });
            }
        }
        tracing::debug!(asked = n, got = got.len(), "claimed");
        got
    }

    /// A task adopted here whose submitter's `accepted` came first: while
    /// this node still holds its queue message, the core gets the task
    /// back with its history as the stream has it now.
    async fn reclaim(&self, id: TaskId, executor: crate::exec::ExecutorId) {
        let payload = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|held| {
                let delivered = held.message.info().map_or(1, |i| i.delivered.max(1) as u64);
                (held.message.payload.clone(), delivered)
            });
        let Some((payload, delivered)) = payload else {
            // The hold lapsed (or the task ended): its redelivery decides.
            self.unlock(id).await;
            return;
        };
        let records = self.load(id).await;
        match codec::decode_queued(&payload) {
            Ok(spec) if !records.is_empty() => {
                let claimed = ClaimedTask { spec, delivered };
                self.input(Input::Reclaimed {
                    executor,
                    claimed,
                    records,
                })
                .await;
            }
            // Its history cannot be read now: let the message go back at
            // its lease, as before the reclaim.
            _ => {
                self.drop_hold(id);
                self.unlock(id).await;
            }
        }
    }

    /// Drops a lane's cached consumer: the next claim looks it up again
    /// (a server that restarted may have lost or moved it).
    fn forget_consumer(&self, name: &str, priority: crate::task::Priority) {
        let durable = durable_name(name, priority);
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&durable);
    }

    /// Takes a task's concurrency lock; false if another task holds it.
    async fn lock(&self, ready: &Ready, id: TaskId, client: &str, key: &str) -> bool {
        let key = lock_key(client, key);
        let value = Bytes::copy_from_slice(id.hex().as_str().as_bytes());
        let revision = match ready.locks.create(&key, value.clone()).await {
            Ok(revision) => revision,
            Err(_) => match ready.locks.entry(&key).await {
                // Held for this very task (a claim after a lapse).
                Ok(Some(entry))
                    if entry.value == value && entry.operation == kv::Operation::Put =>
                {
                    entry.revision
                }
                _ => return false,
            },
        };
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                Lock {
                    key,
                    revision,
                    renewed: Instant::now(),
                },
            );
        true
    }

    async fn unlock(&self, id: TaskId) {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let (Some(lock), Some(ready)) = (lock, self.ready.get()) {
            let _ = ready
                .locks
                .delete_expect_revision(&lock.key, Some(lock.revision))
                .await;
        }
    }

    /// Renews every hold and lock; reports those that could not be renewed
    /// in time (the node stops their attempts).
    pub(super) async fn renew(&self) {
        let Some(ready) = self.ready.get() else {
            return;
        };
        let safe = self.safe_hold();
        let held: Vec<(TaskId, jetstream::Message)> = {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.iter()
                .map(|(id, h)| (*id, h.message.clone()))
                .collect()
        };
        let renewals = held.into_iter().map(|(id, message)| async move {
            let sent = Instant::now();
            let ok = message.double_ack_with(AckKind::Progress).await.is_ok();
            (id, sent, ok)
        });
        for (id, sent, ok) in futures::future::join_all(renewals).await {
            let lost = {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                match held.get_mut(&id) {
                    Some(h) if ok && sent.duration_since(h.renewed) < safe => {
                        h.renewed = sent;
                        false
                    }
                    Some(h) => {
                        let lapsed = h.renewed.elapsed() >= safe;
                        if lapsed {
                            held.remove(&id);
                        }
                        lapsed
                    }
                    None => false,
                }
            };
            if lost {
                self.input(Input::LeaseLost { task_id: id }).await;
            }
        }
        let locks: Vec<(TaskId, String, u64)> = {
            let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks
                .iter()
                .map(|(id, l)| (*id, l.key.clone(), l.revision))
                .collect()
        };
        for (id, key, revision) in locks {
            let sent = Instant::now();
            let value = Bytes::copy_from_slice(id.hex().as_str().as_bytes());
            let result = ready.locks.update(&key, value, revision).await;
            let lost = {
                let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
                match (locks.get_mut(&id), result) {
                    (Some(lock), Ok(revision)) if sent.duration_since(lock.renewed) < safe => {
                        lock.revision = revision;
                        lock.renewed = sent;
                        false
                    }
                    (Some(lock), _) => {
                        let lapsed = lock.renewed.elapsed() >= safe;
                        if lapsed {
                            locks.remove(&id);
                        }
                        lapsed
                    }
                    (None, _) => false,
                }
            };
            if lost {
                self.input(Input::LeaseLost { task_id: id }).await;
            }
        }
    }

    /// A task's whole history, in order.
    pub(super) async fn load(&self, id: TaskId) -> Vec<Applied> {
        let ready = self.ready().await;
        let subject = event_subject(id);
        let mut records = Vec::new();
        let mut from = 0u64;
        loop {
            let next = ready
                .events
                .direct_get_next_for_subject(subject.clone(), Some(from + 1))
                .await;
            let Ok(message) = next else { break };
            from = message.sequence;
            match codec::decode_event(id, message.sequence, &message.payload) {
                Ok(events) => records.extend(events),
                Err(e) => {
                    tracing::error!(error = %e, task_id = %id, "an event cannot be read");
                    break;
                }
            }
            if records.len() > 100_000 {
                break;
            }
        }
        records
    }

    async fn forward(&self, node: &str, id: TaskId, request: Forwarded) -> Result<(), Refusal> {
        let body = match &request {
            Forwarded::Cancel(reason) => serde_json::json!({
                "task_id": id.to_string(), "cancel": reason.as_str(),
            }),
            Forwarded::Answer { question_id, value } => serde_json::json!({
                "task_id": id.to_string(), "question_id": question_id, "value": value,
            }),
        };
        let subject = format!("tw.node.{node}.req");
        let payload = Bytes::from(body.to_string());
        let answer =
            tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(subject, payload)).await;
        let Ok(Ok(message)) = answer else {
            return Err(Refusal::Unavailable {
                retry_after: RETRY_AFTER,
            });
        };
        super::serve::decode_reply(&message.payload)
    }

    /// Writes this node's registry entry.
    pub(super) async fn publish_entry(&self) {
        let Some(ready) = self.ready.get() else {
            return;
        };
        let entry = self
            .entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let entry = entry.unwrap_or(NodeEntry {
            draining: false,
            workers: Vec::new(),
            tasks: Vec::new(),
        });
        let bytes = codec::encode_entry(&self.node, self.started_at, &entry);
        if let Err(e) = ready.nodes.put(&*self.node, Bytes::from(bytes)).await {
            tracing::debug!(error = %e, "writing this node's registry entry failed");
        }
    }

    /// Deletes this node's registry entry (clean shutdown).
    pub(super) async fn leave(&self) {
        if let Some(ready) = self.ready.get() {
            let _ = ready.nodes.delete(&*self.node).await;
        }
    }
}
