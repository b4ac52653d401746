//! Domain types to wire JSON: events, snapshots, monitoring views.
//!
//! An event shared by several subscribers is encoded once
//! ([`EventRecord::encoded`]); only private copies (carrying a `ref` or
//! `duplicate`) are encoded again.

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;

use crate::exec::ExecutorKind;
use crate::protocol::WireError;
use crate::protocol::admin::{
    AdminMessage, AdminTasks, Outcomes, Stats as StatsBody, Summary, Worker,
};
use crate::protocol::server::{
    Choice, EventBody, EventHead, FileObject, OpenQuestion, Snapshot, event_json,
};
use crate::scheduler::{Stats, TaskView, WorkerView};
use crate::task::{EventRecord, PublishedFile, QuestionSpec, TaskEvent, TaskFailure};

/// Formats a time as RFC 3339 UTC with milliseconds
/// (`2026-11-23T10:05:00.123Z`). Hand-written: it runs for every event.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    let (year, month, day) = (t.year(), u8::from(t.month()), t.day());
    let mut out = String::with_capacity(24);
    let two = |out: &mut String, n: u8, sep: char| {
        out.push(char::from(b'0' + n / 10));
        out.push(char::from(b'0' + n % 10));
        out.push(sep);
    };
    if (0..=9999).contains(&year) {
        let y = year.unsigned_abs();
        for d in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10] {
            out.push(char::from(b'0' + d as u8));
        }
        out.push('-');
    } else {
        out.push_str(&format!("{year:04}-"));
    }
    two(&mut out, month, '-');
    two(&mut out, day, 'T');
    two(&mut out, t.hour(), ':');
    two(&mut out, t.minute(), ':');
    two(&mut out, t.second(), '.');
    let ms = t.millisecond();
    for d in [ms / 100, ms / 10 % 10, ms % 10] {
        out.push(char::from(b'0' + d as u8));
    }
    out.push('Z');
    out
}

/// How file links are written: a path, or absolute under `public_url`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub public_url: Option<String>,
}

impl Links {
    pub(crate) fn file_url(&self, file: &PublishedFile) -> String {
        let base = self.public_url.as_deref().unwrap_or("");
        format!("{base}/files/{}/{}", file.token, percent_encode(&file.name))
    }

    pub(crate) fn files<'a>(
        &self,
        files: &'a [PublishedFile],
        expires: &'a [String],
    ) -> Vec<FileObject<'a>> {
        files
            .iter()
            .zip(expires)
            .map(|(f, expires_at)| FileObject {
                name: &f.name,
                size: f.size,
                content_type: &f.content_type,
                sha256: &f.sha256,
                url: self.file_url(f),
                expires_at,
            })
            .collect()
    }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
pub(crate) fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn failure(failure: &TaskFailure) -> WireError {
    let mut error = WireError::new(
        super::error::failure_code(failure.kind),
        failure.message.clone(),
    );
    error.details.clone_from(&failure.details);
    error
}

/// Encodes a task event; `reference` and `duplicate` only on private copies.
pub(crate) fn event(
    record: &EventRecord,
    reference: Option<&str>,
    duplicate: bool,
    links: &Links,
) -> Bytes {
    let at = rfc3339(record.at);
    let task_id = record.task_id.hex();
    let head = EventHead {
        reference,
        task_id: task_id.as_str(),
        seq: record.seq,
        at: &at,
    };
    let json = match &record.event {
        TaskEvent::Accepted { position } => event_json(
            &head,
            &EventBody::Accepted {
                position: *position,
                duplicate,
            },
        ),
        TaskEvent::Started { worker, attempt } => event_json(
            &head,
            &EventBody::Started {
                worker,
                attempt: *attempt,
            },
        ),
        TaskEvent::Question {
            question,
            expires_at,
        } => {
            let expires = rfc3339(*expires_at);
            event_json(
                &head,
                &EventBody::Question {
                    question_id: &question.question_id,
                    prompt: &question.prompt,
                    choices: choices(question),
                    schema: question.schema.as_ref(),
                    default: question.default.as_ref(),
                    expires_at: &expires,
                },
            )
        }
        TaskEvent::Answered(answer) => event_json(
            &head,
            &EventBody::Answered {
                question_id: &answer.question_id,
                outcome: answer.outcome.as_str(),
                value: answer.value.as_ref(),
            },
        ),
        TaskEvent::Requeued { attempt, failure } => event_json(
            &head,
            &EventBody::Requeued {
                attempt: *attempt,
                reason: super::error::failure_code(failure.kind).as_str(),
                message: &failure.message,
                details: failure.details.as_ref(),
            },
        ),
        TaskEvent::Progress(p) => event_json(
            &head,
            &EventBody::Progress {
                progress: p
                    .fraction
                    .filter(|f| f.is_finite())
                    .map(|f| f.clamp(0.0, 1.0)),
                message: p.message.as_deref(),
                data: p.data.as_deref(),
            },
        ),
        TaskEvent::Completed {
            result,
            files,
            duration,
        } => {
            let expires: Vec<String> = files.iter().map(|f| rfc3339(f.expires_at)).collect();
            let objects = links.files(files, &expires);
            event_json(
                &head,
                &EventBody::Completed {
                    result,
                    files: &objects,
                    duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                },
            )
        }
        TaskEvent::Failed(f) => event_json(&head, &EventBody::Failed { error: &failure(f) }),
        TaskEvent::Cancelled(reason) => event_json(
            &head,
            &EventBody::Cancelled {
                reason: reason.as_str(),
            },
        ),
    };
    Bytes::from(json)
}

fn choices(question: &QuestionSpec) -> Option<Vec<Choice<'_>>> {
    question.choices.as_ref().map(|choices| {
        choices
            .iter()
            .map(|c| Choice {
                value: &c.value,
                label: c.label.as_deref(),
            })
            .collect()
    })
}

/// The shared encoding of an event (made once per event).
pub(crate) fn shared_event(record: &EventRecord, links: &Links) -> Bytes {
    record.encoded(|r| event(r, None, false, links))
}

/// The REST snapshot of a task.
pub(crate) fn snapshot(view: &TaskView, links: &Links) -> String {
    let task_id = view.task_id.hex();
    let created = rfc3339(view.created_at);
    let started = view.started_at.map(rfc3339);
    let finished = view.finished_at.map(rfc3339);
    let terminal = view.terminal.as_deref().map(|r| &r.event);
    let (result, files, error, reason) = match terminal {
        Some(TaskEvent::Completed { result, files, .. }) => {
            (Some(&**result), Some(files), None, None)
        }
        Some(TaskEvent::Failed(f)) => (None, None, Some(failure(f)), None),
        Some(TaskEvent::Cancelled(r)) => (None, None, None, Some(r.as_str())),
        _ => (None, None, None, None),
    };
    let question_expires = view.question.as_ref().map(|(_, at)| rfc3339(*at));
    let question =
        view.question
            .as_ref()
            .zip(question_expires.as_deref())
            .map(|((q, _), expires_at)| OpenQuestion {
                question_id: &q.question_id,
                prompt: &q.prompt,
                choices: choices(q),
                schema: q.schema.as_ref(),
                default: q.default.as_ref(),
                expires_at,
            });
    let expires: Vec<String> = files
        .map(|f| f.iter().map(|f| rfc3339(f.expires_at)).collect())
        .unwrap_or_default();
    let objects = files.map(|f| links.files(f, &expires));
    let snapshot = Snapshot {
        task_id: task_id.as_str(),
        task: &view.task,
        state: view.state.as_str(),
        attempt: (view.attempt > 0).then_some(view.attempt),
        position: view.position,
        progress: view.progress,
        message: view.message.as_deref(),
        question,
        result,
        error: error.as_ref(),
        reason,
        files: objects.as_deref(),
        created_at: &created,
        started_at: started.as_deref(),
        finished_at: finished.as_deref(),
        last_seq: view.last_seq,
    };
    serde_json::to_string(&snapshot).unwrap_or_default()
}

/// A task as the monitoring page sees it (`docs/protocol.md`, Summary).
pub(crate) fn summary<'a>(view: &'a TaskView, task_id: &'a str) -> Summary<'a> {
    let terminal = view.terminal.as_deref().map(|r| &r.event);
    let duration_ms = view
        .started_at
        .zip(view.finished_at)
        .and_then(|(s, f)| f.duration_since(s).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Summary {
        task_id,
        task: &view.task,
        client: view.owner.client.as_str(),
        state: view.state.as_str(),
        attempt: (view.attempt > 0).then_some(view.attempt),
        position: view.position,
        progress: view.progress,
        message: view.message.as_deref(),
        question: view.question.as_ref().map(|(q, _)| q.prompt.as_str()),
        worker: view.worker.as_deref(),
        error: match terminal {
            Some(TaskEvent::Failed(f)) => Some(failure(f)),
            _ => None,
        },
        reason: match terminal {
            Some(TaskEvent::Cancelled(r)) => Some(r.as_str()),
            _ => None,
        },
        created_at: rfc3339(view.created_at),
        started_at: view.started_at.map(rfc3339),
        finished_at: view.finished_at.map(rfc3339),
        duration_ms,
        subscribers: view.subscribers as u64,
        schedule: view.schedule.as_deref(),
    }
}

/// Task ids as text, for summaries that borrow them.
fn ids(tasks: &[TaskView]) -> Vec<String> {
    tasks.iter().map(|t| t.task_id.to_string()).collect()
}

fn summaries<'a>(tasks: &'a [TaskView], ids: &'a [String]) -> Vec<Summary<'a>> {
    tasks
        .iter()
        .zip(ids)
        .map(|(t, id)| summary(t, id))
        .collect()
}

/// An executor as the monitoring page sees it (`docs/protocol.md`, Worker).
pub(crate) fn worker(view: &WorkerView) -> Worker<'_> {
    let (kind, group, pid, peer) = match &view.kind {
        ExecutorKind::Builtin => ("builtin", None, None, None),
        ExecutorKind::Managed { group, pid } => ("managed", Some(&**group), *pid, None),
        ExecutorKind::Remote { peer } => ("remote", None, None, Some(peer.as_str())),
    };
    Worker {
        id: view.id.to_string(),
        name: &view.name,
        group,
        kind,
        pid,
        peer,
        tasks: view.tasks.iter().map(|t| &**t).collect(),
        slots: view.slots as u64,
        busy: view.running.len() as u64,
        running: view.running.iter().map(ToString::to_string).collect(),
        state: view.state.as_str(),
        connected_at: rfc3339(view.connected_at),
        last_heartbeat_at: None,
        done: view.done,
        failed: view.failed,
        restarts: None,
    }
}

pub(crate) fn stats(stats: &Stats) -> StatsBody<'_> {
    StatsBody {
        workers: stats.workers,
        workers_busy: stats.workers_busy,
        queued: stats.queued,
        running: stats.running,
        connections: stats.connections,
        tasks: stats
            .tasks
            .iter()
            .map(|(name, [completed, failed, cancelled])| {
                (
                    &**name,
                    Outcomes {
                        completed: *completed,
                        failed: *failed,
                        cancelled: *cancelled,
                    },
                )
            })
            .collect(),
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The admin `watching` reply.
pub(crate) fn watching(
    reference: Option<&str>,
    tasks: &[TaskView],
    workers: &[WorkerView],
    s: &Stats,
) -> String {
    let ids = ids(tasks);
    to_json(&AdminMessage::Watching {
        reference,
        tasks: summaries(tasks, &ids),
        workers: workers.iter().map(worker).collect(),
        stats: stats(s),
    })
}

pub(crate) fn task_update(view: &TaskView) -> String {
    let id = view.task_id.to_string();
    to_json(&AdminMessage::TaskUpdate {
        task: summary(view, &id),
    })
}

pub(crate) fn worker_update(view: &WorkerView) -> String {
    to_json(&AdminMessage::WorkerUpdate {
        worker: worker(view),
    })
}

pub(crate) fn stats_message(s: &Stats) -> String {
    to_json(&AdminMessage::Stats { stats: stats(s) })
}

/// `GET /v1/admin/tasks`.
pub(crate) fn admin_list(tasks: &[TaskView], s: &Stats) -> String {
    let ids = ids(tasks);
    to_json(&AdminTasks {
        tasks: summaries(tasks, &ids),
        stats: stats(s),
    })
}

/// `GET /v1/admin/nodes`: every node of the cluster (none in local mode).
pub(crate) fn admin_nodes(nodes: &[crate::scheduler::NodeSummary]) -> String {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": &*n.name,
                "state": n.state.as_str(),
                "this": n.this,
                "started_at": rfc3339(n.started_at),
                "seen_at": rfc3339(n.seen_at),
                "workers": n.workers,
                "slots": n.slots,
                "busy": n.running,
            })
        })
        .collect();
    serde_json::json!({ "nodes": nodes }).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::rfc3339;
    use crate::protocol::server::{EventBody, EventHead, event_json};

    #[test]
    fn rfc3339_matches_the_time_crate() {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        for secs in [0u64, 1, 59, 951_782_400, 1_795_000_000, 4_102_444_799] {
            for ms in [0u64, 7, 999] {
                let at = SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
                let expected = time::OffsetDateTime::from(at)
                    .format(&format)
                    .unwrap_or_default();
                assert_eq!(rfc3339(at), expected);
            }
        }
    }

    #[test]
    fn events_are_one_flat_object() {
        let head = EventHead {
            reference: Some("r\"1"),
            task_id: "00ff",
            seq: 3,
            at: "2026-01-01T00:00:00.000Z",
        };
        let json = event_json(
            &head,
            &EventBody::Started {
                worker: "local-1",
                attempt: 1,
            },
        );
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({"type": "started", "ref": "r\"1", "task_id": "00ff", "seq": 3,
                "at": "2026-01-01T00:00:00.000Z", "worker": "local-1", "attempt": 1})
        );
        let json = event_json(
            &EventHead {
                reference: None,
                ..head
            },
            &EventBody::Progress {
                progress: None,
                message: None,
                data: None,
            },
        );
        assert_eq!(
            std::str::from_utf8(&json).unwrap_or_default(),
            r#"{"type":"progress","task_id":"00ff","seq":3,"at":"2026-01-01T00:00:00.000Z"}"#
        );
    }
}
