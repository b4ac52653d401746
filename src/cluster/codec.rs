//! What the cluster writes into NATS: queue messages (a task's spec with
//! its input), events (one task event with its `seq`, time and writer) and
//! registry entries. Serialization lives here, at the edge, like the wire
//! protocol's; the core passes Rust types.
//!
//! These formats are between nodes of one version; `v` lets a later one
//! refuse what it cannot read instead of misreading it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::exec::{ExecutorId, ExecutorKind, TaskDecl};
use crate::inputs::StoredUpload;
use crate::scheduler::cluster::{AcceptedInfo, Applied, NodeEntry};
use crate::scheduler::{WorkerState, WorkerView};
use crate::task::{
    Answer, AnswerOutcome, CancelReason, Choice, ClientId, Delivery, EventRecord, FailureKind,
    Owner, Priority, Progress, PublishedFile, QuestionSpec, TaskEvent, TaskFailure, TaskId,
    TaskOptions, TaskSpec,
};

/// The format version of every message below.
const V: u32 = 1;
/// The format of an event message that carries several events of one task
/// (`then`): nodes that only know [`V`] refuse it instead of missing them.
const V_THEN: u32 = 2;

pub(crate) fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read a cluster message: {0}")]
pub(crate) struct DecodeError(String);

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

fn priority_of(text: &str) -> Priority {
    match text {
        "high" => Priority::High,
        "low" => Priority::Low,
        _ => Priority::Normal,
    }
}

/// A task's spec as the queue carries it (and its `accepted` without input).
#[derive(Serialize, Deserialize)]
struct Spec<I> {
    v: u32,
    id: String,
    task: String,
    client: String,
    token: Option<u64>,
    priority: String,
    timeout_ms: u64,
    idempotency_key: Option<String>,
    concurrency_key: Option<String>,
    stream: bool,
    cancel_on_disconnect: bool,
    interactive: bool,
    retry_safe: bool,
    input_bytes: u64,
    /// The schedule that submitted it (queue messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    /// Its uploads, copied into the cluster's store (queue messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uploads: Vec<StoredUpload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<I>,
}

fn spec_of<'a>(id: &str, info: &AcceptedInfo, input: Option<&'a RawValue>) -> Spec<&'a RawValue> {
    Spec {
        v: V,
        id: id.to_owned(),
        task: info.name.to_string(),
        client: info.owner.client.to_string(),
        token: info.owner.token,
        priority: priority_str(info.priority).to_owned(),
        timeout_ms: u64::try_from(info.timeout.as_millis()).unwrap_or(u64::MAX),
        idempotency_key: info.idempotency_key.clone(),
        concurrency_key: info.concurrency_key.clone(),
        stream: info.delivery == Delivery::Stream,
        cancel_on_disconnect: info.cancel_on_disconnect,
        interactive: info.interactive,
        retry_safe: info.retry_safe,
        input_bytes: info.input_bytes,
        tag: None,
        uploads: Vec::new(),
        input,
    }
}

fn info_of<I>(spec: &Spec<I>) -> AcceptedInfo {
    AcceptedInfo {
        name: Arc::from(spec.task.as_str()),
        owner: Owner {
            client: ClientId::new(&spec.client),
            token: spec.token,
        },
        priority: priority_of(&spec.priority),
        timeout: Duration::from_millis(spec.timeout_ms),
        idempotency_key: spec.idempotency_key.clone(),
        concurrency_key: spec.concurrency_key.clone(),
        interactive: spec.interactive,
        retry_safe: spec.retry_safe,
        delivery: if spec.stream {
            Delivery::Stream
        } else {
            Delivery::Link
        },
        cancel_on_disconnect: spec.cancel_on_disconnect,
        input_bytes: spec.input_bytes,
    }
}

/// A node's ask about an upload another node may have (subject
/// `tw.node.<node>.upload`), for a caller known by its client and the one
/// browser token it is limited to, if any.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UploadAsk {
    pub upload: String,
    pub client: String,
    pub only_token: Option<u64>,
    #[serde(flatten)]
    pub op: UploadOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum UploadOp {
    /// Store it in `tw_inputs` as `object` (a submit received elsewhere).
    Store { object: String },
    /// What it is (`GET /v1/uploads/{id}` received elsewhere).
    Info,
    /// Forget it (`DELETE /v1/uploads/{id}` received elsewhere).
    Delete,
}

/// The answer to an [`UploadAsk`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub(super) enum UploadAnswer {
    /// Stored as asked, or (`Info`) what it is.
    Found {
        name: String,
        size: u64,
        sha256: String,
        content_type: String,
        expires_ms: u64,
    },
    Deleted,
    /// Not here, or not the caller's.
    Absent,
    /// Here, but it could not be stored.
    Failed {
        reason: String,
    },
}

/// Object names an [`UploadAsk`] may ask for: the uploads of tasks only.
pub(super) fn is_input_object(name: &str) -> bool {
    name.starts_with("in-")
        && name.len() <= 96
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The queue message of a task.
pub(crate) fn encode_queued(spec: &TaskSpec, uploads: Vec<StoredUpload>) -> Vec<u8> {
    let id = spec.id.hex();
    let info = AcceptedInfo::of(spec);
    let mut queued = spec_of(id.as_str(), &info, Some(&spec.input));
    queued.tag = spec.tag.as_deref().map(str::to_owned);
    queued.uploads = uploads;
    serde_json::to_vec(&queued).unwrap_or_default()
}

/// A queue message back into a spec.
pub(crate) fn decode_queued(bytes: &[u8]) -> Result<TaskSpec, DecodeError> {
    let spec: Spec<Box<RawValue>> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if spec.v != V {
        return Err(DecodeError(format!("format version {}", spec.v)));
    }
    let id: TaskId = spec
        .id
        .parse()
        .map_err(|_| DecodeError("bad task id".to_owned()))?;
    let info = info_of(&spec);
    let input = spec
        .input
        .ok_or_else(|| DecodeError("no input".to_owned()))?;
    // File inputs are read back from the input (URL references) and the
    // stored uploads; the node running the task fetches them.
    let inputs = crate::inputs::queued_inputs(&input, &spec.uploads)
        .ok_or_else(|| DecodeError("an upload reference without its stored copy".to_owned()))?;
    Ok(TaskSpec {
        id,
        name: info.name,
        input,
        options: TaskOptions {
            timeout: info.timeout,
            priority: info.priority,
            idempotency_key: info.idempotency_key,
            concurrency_key: info.concurrency_key,
            delivery: info.delivery,
            cancel_on_disconnect: info.cancel_on_disconnect,
            interactive: info.interactive,
        },
        owner: info.owner,
        retry_safe: info.retry_safe,
        tag: spec.tag.map(|t| Arc::from(t.as_str())),
        inputs,
    })
}

#[derive(Serialize, Deserialize)]
struct Failure {
    kind: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
}

fn failure_of(f: &TaskFailure) -> Failure {
    let kind = match f.kind {
        FailureKind::Timeout => "timeout",
        FailureKind::TaskError => "task_error",
        FailureKind::InvalidInput => "invalid_input",
        FailureKind::StorageFull => "storage_full",
        FailureKind::Internal => "internal",
        FailureKind::WorkerLost => "worker_lost",
        FailureKind::NoWorker => "no_worker",
        FailureKind::InputFetchFailed => "input_fetch_failed",
    };
    Failure {
        kind: kind.to_owned(),
        message: f.message.clone(),
        details: f.details.clone(),
    }
}

fn failure_from(f: Failure) -> TaskFailure {
    let kind = match f.kind.as_str() {
        "timeout" => FailureKind::Timeout,
        "task_error" => FailureKind::TaskError,
        "invalid_input" => FailureKind::InvalidInput,
        "storage_full" => FailureKind::StorageFull,
        "worker_lost" => FailureKind::WorkerLost,
        "no_worker" => FailureKind::NoWorker,
        "input_fetch_failed" => FailureKind::InputFetchFailed,
        _ => FailureKind::Internal,
    };
    TaskFailure {
        kind,
        message: f.message,
        details: f.details,
    }
}

#[derive(Serialize, Deserialize)]
struct File {
    name: String,
    size: u64,
    content_type: String,
    sha256: String,
    token: String,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct WireChoice {
    value: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Body {
    Accepted {
        position: u64,
        spec: serde_json::Value,
    },
    Started {
        worker: String,
        attempt: u32,
    },
    Progress {
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Box<RawValue>>,
    },
    Question {
        question_id: String,
        prompt: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        choices: Option<Vec<WireChoice>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        schema: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        expires_at_ms: u64,
    },
    Answered {
        question_id: String,
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
    Requeued {
        attempt: u32,
        failure: Failure,
    },
    Completed {
        result: Box<RawValue>,
        files: Vec<File>,
        duration_ms: u64,
    },
    Failed {
        failure: Failure,
    },
    Cancelled {
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Event {
    v: u32,
    seq: u64,
    at_ms: u64,
    node: String,
    event: Body,
    /// The events that follow it in the same message (same writer, next
    /// `seq`s), committed with it or not at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    then: Vec<Later>,
}

#[derive(Serialize, Deserialize)]
struct Later {
    seq: u64,
    at_ms: u64,
    event: Body,
}

/// One message of a task's stream: `record`, and the events that follow it
/// (`then`, numbered after it) written with it.
pub(crate) fn encode_event(
    record: &EventRecord,
    then: &[Arc<EventRecord>],
    node: &str,
    info: Option<&AcceptedInfo>,
) -> Vec<u8> {
    let later = then
        .iter()
        .map(|r| Later {
            seq: r.seq,
            at_ms: ms(r.at),
            event: body_of(r, None),
        })
        .collect::<Vec<_>>();
    serde_json::to_vec(&Event {
        v: if later.is_empty() { V } else { V_THEN },
        seq: record.seq,
        at_ms: ms(record.at),
        node: node.to_owned(),
        event: body_of(record, info),
        then: later,
    })
    .unwrap_or_default()
}

/// A message of a task's stream to write: its first event, the ones after
/// it, the bytes.
pub(crate) type EventMessage = (Arc<EventRecord>, Vec<Arc<EventRecord>>, Vec<u8>);

/// The messages that carry `record` and `then`: one, unless it would be
/// longer than `max` bytes; then one per event (each event must fit NATS's
/// `max_payload` on its own, as ever).
pub(crate) fn event_messages(
    record: Arc<EventRecord>,
    then: Vec<Arc<EventRecord>>,
    node: &str,
    info: Option<&AcceptedInfo>,
    max: usize,
) -> Vec<EventMessage> {
    let bytes = encode_event(&record, &then, node, info);
    if then.is_empty() || bytes.len() <= max {
        return vec![(record, then, bytes)];
    }
    std::iter::once(record)
        .chain(then)
        .enumerate()
        .map(|(i, record)| {
            let info = info.filter(|_| i == 0);
            let bytes = encode_event(&record, &[], node, info);
            (record, Vec::new(), bytes)
        })
        .collect()
}

fn body_of(record: &EventRecord, info: Option<&AcceptedInfo>) -> Body {
    match &record.event {
        TaskEvent::Accepted { position } => {
            let id = record.task_id.hex();
            let spec = info
                .map(|info| serde_json::to_value(spec_of(id.as_str(), info, None)))
                .and_then(Result::ok)
                .unwrap_or(serde_json::Value::Null);
            Body::Accepted {
                position: *position,
                spec,
            }
        }
        TaskEvent::Started { worker, attempt } => Body::Started {
            worker: worker.to_string(),
            attempt: *attempt,
        },
        TaskEvent::Progress(p) => Body::Progress {
            progress: p.fraction,
            message: p.message.clone(),
            data: p.data.clone(),
        },
        TaskEvent::Question {
            question,
            expires_at,
        } => Body::Question {
            question_id: question.question_id.clone(),
            prompt: question.prompt.clone(),
            choices: question.choices.as_ref().map(|choices| {
                choices
                    .iter()
                    .map(|c| WireChoice {
                        value: c.value.clone(),
                        label: c.label.clone(),
                    })
                    .collect()
            }),
            schema: question.schema.clone(),
            default: question.default.clone(),
            timeout_ms: question
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            expires_at_ms: ms(*expires_at),
        },
        TaskEvent::Answered(a) => Body::Answered {
            question_id: a.question_id.clone(),
            outcome: a.outcome.as_str().to_owned(),
            value: a.value.clone(),
        },
        TaskEvent::Requeued { attempt, failure } => Body::Requeued {
            attempt: *attempt,
            failure: failure_of(failure),
        },
        TaskEvent::Completed {
            result,
            files,
            duration,
        } => Body::Completed {
            result: result.clone(),
            files: files
                .iter()
                .map(|f| File {
                    name: f.name.clone(),
                    size: f.size,
                    content_type: f.content_type.clone(),
                    sha256: f.sha256.clone(),
                    token: f.token.clone(),
                    expires_at_ms: ms(f.expires_at),
                })
                .collect(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        },
        TaskEvent::Failed(f) => Body::Failed {
            failure: failure_of(f),
        },
        TaskEvent::Cancelled(reason) => Body::Cancelled {
            reason: reason.as_str().to_owned(),
        },
    }
}

/// The events of one message of a task's stream at `stream_seq`, in order.
pub(crate) fn decode_event(
    task_id: TaskId,
    stream_seq: u64,
    bytes: &[u8],
) -> Result<Vec<Applied>, DecodeError> {
    let event: Event = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if event.v != V && event.v != V_THEN {
        return Err(DecodeError(format!("format version {}", event.v)));
    }
    let writer: Arc<str> = Arc::from(event.node);
    let first = Later {
        seq: event.seq,
        at_ms: event.at_ms,
        event: event.event,
    };
    let mut applied = Vec::with_capacity(1 + event.then.len());
    for later in std::iter::once(first).chain(event.then) {
        let mut info = None;
        let task_event = event_of(later.event, &mut info)?;
        applied.push(Applied {
            record: Arc::new(EventRecord::with_time(
                task_id,
                later.seq,
                time(later.at_ms),
                task_event,
            )),
            stream_seq,
            writer: Arc::clone(&writer),
            info,
        });
    }
    Ok(applied)
}

fn event_of(body: Body, info: &mut Option<AcceptedInfo>) -> Result<TaskEvent, DecodeError> {
    Ok(match body {
        Body::Accepted { position, spec } => {
            let spec: Spec<Box<RawValue>> =
                serde_json::from_value(spec).map_err(|e| DecodeError(e.to_string()))?;
            *info = Some(info_of(&spec));
            TaskEvent::Accepted { position }
        }
        Body::Started { worker, attempt } => TaskEvent::Started {
            worker: Arc::from(worker),
            attempt,
        },
        Body::Progress {
            progress,
            message,
            data,
        } => TaskEvent::Progress(Progress {
            fraction: progress,
            message,
            data,
        }),
        Body::Question {
            question_id,
            prompt,
            choices,
            schema,
            default,
            timeout_ms,
            expires_at_ms,
        } => TaskEvent::Question {
            question: QuestionSpec {
                question_id,
                prompt,
                choices: choices.map(|choices| {
                    choices
                        .into_iter()
                        .map(|c| Choice {
                            value: c.value,
                            label: c.label,
                        })
                        .collect()
                }),
                schema,
                default,
                timeout: timeout_ms.map(Duration::from_millis),
            },
            expires_at: time(expires_at_ms),
        },
        Body::Answered {
            question_id,
            outcome,
            value,
        } => TaskEvent::Answered(Answer {
            question_id,
            outcome: match outcome.as_str() {
                "timed_out" => AnswerOutcome::TimedOut,
                "cancelled" => AnswerOutcome::Cancelled,
                "not_interactive" => AnswerOutcome::NotInteractive,
                _ => AnswerOutcome::Answered,
            },
            value,
        }),
        Body::Requeued { attempt, failure } => TaskEvent::Requeued {
            attempt,
            failure: failure_from(failure),
        },
        Body::Completed {
            result,
            files,
            duration_ms,
        } => TaskEvent::Completed {
            result,
            files: files
                .into_iter()
                .map(|f| PublishedFile {
                    name: f.name,
                    size: f.size,
                    content_type: f.content_type,
                    sha256: f.sha256,
                    token: f.token,
                    expires_at: time(f.expires_at_ms),
                })
                .collect(),
            duration: Duration::from_millis(duration_ms),
        },
        Body::Failed { failure } => TaskEvent::Failed(failure_from(failure)),
        Body::Cancelled { reason } => TaskEvent::Cancelled(match reason.as_str() {
            "disconnect" => CancelReason::Disconnect,
            "shutdown" => CancelReason::Shutdown,
            _ => CancelReason::Client,
        }),
    })
}

#[derive(Serialize, Deserialize)]
struct Worker {
    id: u64,
    name: String,
    kind: String,
    tasks: Vec<String>,
    slots: usize,
    running: Vec<String>,
    state: String,
    connected_at_ms: u64,
    done: u64,
    failed: u64,
}

#[derive(Serialize, Deserialize)]
struct Decl {
    name: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_schema: Option<serde_json::Value>,
    retry_safe: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// A node's registry entry.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    v: u32,
    pub(crate) node: String,
    pub(crate) draining: bool,
    pub(crate) started_at_ms: u64,
    workers: Vec<Worker>,
    tasks: Vec<Decl>,
}

pub(crate) fn encode_entry(node: &str, started_at: SystemTime, entry: &NodeEntry) -> Vec<u8> {
    let workers = entry
        .workers
        .iter()
        .map(|w| Worker {
            id: w.id.0,
            name: w.name.to_string(),
            kind: match w.kind {
                ExecutorKind::Builtin => "builtin",
                ExecutorKind::Managed { .. } => "managed",
                ExecutorKind::Remote { .. } => "remote",
            }
            .to_owned(),
            tasks: w.tasks.iter().map(|t| t.to_string()).collect(),
            slots: w.slots,
            running: w.running.iter().map(|id| id.to_string()).collect(),
            state: w.state.as_str().to_owned(),
            connected_at_ms: ms(w.connected_at),
            done: w.done,
            failed: w.failed,
        })
        .collect();
    let tasks = entry
        .tasks
        .iter()
        .map(|d| Decl {
            name: d.name.to_string(),
            description: d.description.clone(),
            input_schema: d.input_schema.clone(),
            retry_safe: d.retry_safe,
            timeout_ms: d
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        })
        .collect();
    serde_json::to_vec(&Entry {
        v: V,
        node: node.to_owned(),
        draining: entry.draining,
        started_at_ms: ms(started_at),
        workers,
        tasks,
    })
    .unwrap_or_default()
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if entry.v != V {
        return Err(DecodeError(format!("format version {}", entry.v)));
    }
    Ok(entry)
}

impl Entry {
    /// Its workers as the monitoring page shows them (`<node>/<name>`).
    pub(crate) fn workers(&self) -> Vec<WorkerView> {
        let node: Arc<str> = Arc::from(self.node.as_str());
        self.workers
            .iter()
            .map(|w| WorkerView {
                id: ExecutorId(w.id),
                node: Some(Arc::clone(&node)),
                name: Arc::from(format!("{}/{}", self.node, w.name)),
                kind: match w.kind.as_str() {
                    "managed" => ExecutorKind::Managed {
                        group: Arc::from(""),
                        pid: None,
                    },
                    "remote" => ExecutorKind::Remote {
                        peer: String::new(),
                    },
                    _ => ExecutorKind::Builtin,
                },
                tasks: w.tasks.iter().map(|t| Arc::from(t.as_str())).collect(),
                slots: w.slots,
                running: w.running.iter().filter_map(|id| id.parse().ok()).collect(),
                state: match w.state.as_str() {
                    "draining" => WorkerState::Draining,
                    "gone" => WorkerState::Gone,
                    _ => WorkerState::Ready,
                },
                connected_at: time(w.connected_at_ms),
                done: w.done,
                failed: w.failed,
            })
            .collect()
    }

    pub(crate) fn tasks(&self) -> Vec<TaskDecl> {
        self.tasks
            .iter()
            .map(|d| TaskDecl {
                name: Arc::from(d.name.as_str()),
                description: d.description.clone(),
                input_schema: d.input_schema.clone(),
                retry_safe: d.retry_safe,
                timeout: d.timeout_ms.map(Duration::from_millis),
            })
            .collect()
    }
}

/// A subject token for a task name: the name itself when it is plain
/// (letters, digits, `_`, at most 48), else `-` and a digest of it.
pub(crate) fn lane_token(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        name.to_owned()
    } else {
        let digest = crate::auth::digest(name);
        format!("-{}", &crate::auth::hex(&digest)[..40])
    }
}

pub(crate) fn priority_token(p: Priority) -> &'static str {
    match p {
        Priority::High => "0",
        Priority::Normal => "1",
        Priority::Low => "2",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TaskId {
        "0123456789abcdef0123456789abcdef".parse().expect("hex")
    }

    fn info() -> AcceptedInfo {
        AcceptedInfo {
            name: Arc::from("echo"),
            owner: Owner {
                client: ClientId::new("a"),
                token: Some(7),
            },
            priority: Priority::High,
            timeout: Duration::from_secs(5),
            idempotency_key: Some("k".to_owned()),
            concurrency_key: None,
            interactive: true,
            retry_safe: true,
            delivery: Delivery::Stream,
            cancel_on_disconnect: false,
            input_bytes: 12,
        }
    }

    #[test]
    fn events_round_trip() {
        let info = info();
        let record = EventRecord::new(id(), 1, TaskEvent::Accepted { position: 3 });
        let bytes = encode_event(&record, &[], "node-a", Some(&info));
        let [applied] = &decode_event(id(), 9, &bytes).expect("decodes")[..] else {
            panic!("one event");
        };
        assert_eq!(applied.record.seq, 1);
        assert_eq!(applied.stream_seq, 9);
        assert_eq!(&*applied.writer, "node-a");
        let back = applied.info.as_ref().expect("info");
        assert_eq!(back.owner.token, Some(7));
        assert_eq!(back.priority, Priority::High);
        assert_eq!(back.delivery, Delivery::Stream);

        let failed = EventRecord::new(
            id(),
            4,
            TaskEvent::Failed(TaskFailure::new(FailureKind::WorkerLost, "gone")),
        );
        let applied = decode_event(id(), 10, &encode_event(&failed, &[], "b", None)).expect("ok");
        match &applied[0].record.event {
            TaskEvent::Failed(f) => assert_eq!(f.kind, FailureKind::WorkerLost),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_message_carries_the_events_written_together() {
        let accepted = EventRecord::new(id(), 1, TaskEvent::Accepted { position: 0 });
        let started = Arc::new(EventRecord::new(
            id(),
            2,
            TaskEvent::Started {
                worker: Arc::from("a/pool-1"),
                attempt: 1,
            },
        ));
        let bytes = encode_event(&accepted, &[started], "a", Some(&info()));
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(text.starts_with(r#"{"v":2,"#), "{text}");
        let applied = decode_event(id(), 5, &bytes).expect("decodes");
        let seqs: Vec<_> = applied
            .iter()
            .map(|a| (a.record.seq, a.stream_seq))
            .collect();
        assert_eq!(seqs, [(1, 5), (2, 5)]);
        assert!(applied[0].info.is_some() && applied[1].info.is_none());
        assert!(applied.iter().all(|a| &*a.writer == "a"));
        assert!(matches!(
            &applied[1].record.event,
            TaskEvent::Started { attempt: 1, worker } if &**worker == "a/pool-1"
        ));
        // A lone event keeps the first format, which every node reads.
        let alone = encode_event(&accepted, &[], "a", Some(&info()));
        assert!(alone.starts_with(br#"{"v":1,"#));
    }

    #[test]
    fn events_too_long_together_go_one_per_message() {
        let accepted = Arc::new(EventRecord::new(
            id(),
            1,
            TaskEvent::Accepted { position: 0 },
        ));
        let started = Arc::new(EventRecord::new(
            id(),
            2,
            TaskEvent::Started {
                worker: Arc::from("a/pool-1"),
                attempt: 1,
            },
        ));
        let info = info();
        let together = event_messages(
            Arc::clone(&accepted),
            vec![Arc::clone(&started)],
            "a",
            Some(&info),
            1 << 20,
        );
        let [(first, then, bytes)] = &together[..] else {
            panic!("one message");
        };
        assert_eq!((first.seq, then.len()), (1, 1));
        let max = bytes.len() - 1;
        let apart = event_messages(accepted, vec![started], "a", Some(&info), max);
        let seqs: Vec<(u64, usize)> = apart.iter().map(|(r, t, _)| (r.seq, t.len())).collect();
        assert_eq!(seqs, [(1, 0), (2, 0)]);
        // The spec goes with the `accepted` only, and each message reads back.
        let back = decode_event(id(), 3, &apart[0].2).expect("decodes");
        assert!(back[0].info.is_some());
        let back = decode_event(id(), 4, &apart[1].2).expect("decodes");
        assert_eq!(back[0].record.seq, 2);
    }

    fn queued(input: &str) -> TaskSpec {
        TaskSpec::for_test(id(), "pdf_check", input)
    }

    #[test]
    fn a_queued_task_brings_its_url_inputs_and_stored_uploads() {
        let spec = queued(
            r#"{"files": [{"$url": "https://example.org/a.pdf", "headers": {"Authorization": "Bearer x"}}, {"url": "plain"}]}"#,
        );
        let back = decode_queued(&encode_queued(&spec, Vec::new())).expect("decodes");
        let paths: Vec<&str> = back.inputs.iter().map(|s| s.json_path()).collect();
        assert_eq!(paths.len(), 1, "{paths:?}");
        assert!(paths[0].contains("files"), "{paths:?}");
        assert!(matches!(
            back.inputs.iter().next(),
            Some(crate::inputs::InputSource::Url { .. })
        ));
        let plain = decode_queued(&encode_queued(&queued(r#"{"x": 1}"#), Vec::new())).expect("ok");
        assert!(plain.inputs.is_empty());
        // An upload comes with its stored copy, or the message is unusable.
        let upload = queued(r#"{"files": [{"$upload": "up_0123456789abcdef0123456789abcdef"}]}"#);
        assert!(decode_queued(&encode_queued(&upload, Vec::new())).is_err());
        let path = match crate::inputs::find_references(&upload.input)
            .expect("refs")
            .pop()
        {
            Some(crate::inputs::Reference::Upload { json_path, .. }) => json_path,
            other => panic!("{other:?}"),
        };
        let stored = StoredUpload {
            path,
            object: "in-x-0".to_owned(),
            name: "paper.pdf".to_owned(),
            size: 3,
            sha256: "ab".to_owned(),
            content_type: "application/pdf".to_owned(),
        };
        let back = decode_queued(&encode_queued(&upload, vec![stored])).expect("decodes");
        match back.inputs.iter().next() {
            Some(crate::inputs::InputSource::Stored(upload)) => {
                assert_eq!(upload.object, "in-x-0");
                assert_eq!(upload.size, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lanes_are_subject_safe() {
        assert_eq!(lane_token("abstract_booklet"), "abstract_booklet");
        let odd = lane_token("sync.warehouse 3");
        assert!(odd.starts_with('-') && !odd.contains('.') && !odd.contains(' '));
    }
}
