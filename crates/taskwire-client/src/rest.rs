//! REST: submit, status snapshot, cancel, answer, the admin list, and the
//! Server-Sent Events of one task ([`SseEvents`]), which resumes with
//! `Last-Event-ID` when its HTTP stream breaks.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use taskwire_protocol::incoming::{
    self, AdminList, AdminNodes, AdminWorkers, AnswerReply, Event, Message, Schedule, ScheduleList,
    ScheduleStarted, Snapshot, Submitted, TaskId,
};
use taskwire_protocol::outgoing;

use crate::{Client, Error, Result, Submit};

/// Longest SSE line accepted (one event's JSON).
const MAX_SSE_LINE: usize = 256 * 1024 * 1024;
/// Reconnects of one SSE stream in a row without an event in between.
const SSE_RETRIES: u32 = 5;

impl Client {
    /// `POST /v1/tasks`.
    pub async fn submit(&self, submit: &Submit) -> Result<Submitted> {
        let response = self
            .request(reqwest::Method::POST, "/v1/tasks")
            .header("content-type", "application/json")
            .body(submit.body())
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// `GET /v1/tasks/{id}`: the status snapshot.
    pub async fn status(&self, task_id: &TaskId) -> Result<Snapshot> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/tasks/{}", segment(task_id)),
            )
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// `DELETE /v1/tasks/{id}`: returns once the task is cancelled;
    /// `already_finished` if it had ended.
    pub async fn cancel(&self, task_id: &TaskId) -> Result<()> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &format!("/v1/tasks/{}", segment(task_id)),
            )
            .send()
            .await
            .map_err(transport)?;
        json::<serde_json::Value>(response).await.map(|_| ())
    }

    /// `POST /v1/tasks/{id}/questions/{qid}/answer`: answers a task's open
    /// question (`invalid_input` when the value does not fit,
    /// `already_answered`, `not_found` when no such question is open).
    pub async fn answer(
        &self,
        task_id: &TaskId,
        question_id: &str,
        value: &impl Serialize,
    ) -> Result<AnswerReply> {
        let value = serde_json::value::to_raw_value(value)
            .map_err(|e| Error::usage("the answer cannot be written as JSON").with(e))?;
        let body = serde_json::to_string(&outgoing::AnswerBody { value: &value })
            .map_err(|e| Error::usage("the answer cannot be written as JSON").with(e))?;
        let path = format!(
            "/v1/tasks/{}/questions/{}/answer",
            segment(task_id),
            percent(question_id)
        );
        let response = self
            .request(reqwest::Method::POST, &path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// Admin: `GET /v1/schedules`: every schedule, its next and last runs.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        let response = self
            .request(reqwest::Method::GET, "/v1/schedules")
            .send()
            .await
            .map_err(transport)?;
        json::<ScheduleList>(response).await.map(|l| l.schedules)
    }

    /// Admin: `POST /v1/schedules/{name}/run`: a run now, outside the timer.
    pub async fn run_schedule(&self, name: &str) -> Result<ScheduleStarted> {
        let path = format!("/v1/schedules/{}/run", percent(name));
        let response = self
            .request(reqwest::Method::POST, &path)
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// Admin: pauses (`true`) or resumes (`false`) a schedule.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<Schedule> {
        let verb = if paused { "pause" } else { "resume" };
        let path = format!("/v1/schedules/{}/{verb}", percent(name));
        let response = self
            .request(reqwest::Method::POST, &path)
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// Admin: `GET /v1/admin/workers`: every worker and what it runs.
    pub async fn admin_workers(&self) -> Result<AdminWorkers> {
        let response = self
            .request(reqwest::Method::GET, "/v1/admin/workers")
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// Admin: `GET /v1/admin/nodes`: every node of the cluster and its
    /// state (empty outside a cluster).
    pub async fn admin_nodes(&self) -> Result<AdminNodes> {
        let response = self
            .request(reqwest::Method::GET, "/v1/admin/nodes")
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// Admin: `GET /v1/admin/tasks` (every queued and running task, the
    /// most recently finished ones, and the counters).
    pub async fn admin_tasks(&self) -> Result<AdminList> {
        let response = self
            .request(reqwest::Method::GET, "/v1/admin/tasks")
            .send()
            .await
            .map_err(transport)?;
        json(response).await
    }

    /// `GET /v1/tasks/{id}/events`: the task's events with `seq >
    /// after_seq` as Server-Sent Events, ending after the terminal event.
    pub fn events(&self, task_id: &TaskId, after_seq: u64) -> SseEvents {
        SseEvents {
            client: self.clone(),
            task_id: task_id.clone(),
            last_seq: after_seq,
            body: None,
            connecting: None,
            buffer: BytesMut::new(),
            data: String::new(),
            ready: VecDeque::new(),
            retries: 0,
            done: false,
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.inner.http.request(method, self.url(path));
        let mut bearer =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.bearer()))
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        bearer.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, bearer);
        request
    }
}

/// A task id as a path segment (ids are hex; anything else is escaped).
fn segment(task_id: &TaskId) -> String {
    percent(task_id.as_str())
}

fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn transport(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::timeout("the HTTP request").with(e.without_url())
    } else {
        Error::connect("the HTTP request failed").with(e.without_url())
    }
}

/// Reads a JSON answer, or the protocol's error body.
pub(crate) async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| {
            Error::decode("the server's answer")
                .with(e)
                .with_status(status.as_u16())
        });
    }
    Err(error_of(status.as_u16(), &body))
}

pub(crate) fn error_of(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<incoming::ErrorBody>(body) {
        Ok(body) => Error::server(body.error).with_status(status),
        Err(_) if status == 401 => Error::auth("the key was refused").with_status(status),
        Err(_) => Error::http(status),
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
type Connecting = Pin<Box<dyn Future<Output = Result<reqwest::Response>> + Send>>;

/// One task's events over Server-Sent Events ([`Client::events`]). A
/// broken stream is opened again with `Last-Event-ID` = the last `seq`
/// read (five times in a row at most), so no event is lost or doubled.
pub struct SseEvents {
    client: Client,
    task_id: TaskId,
    last_seq: u64,
    body: Option<Body>,
    connecting: Option<Connecting>,
    buffer: BytesMut,
    /// The `data:` lines of the event being read.
    data: String,
    ready: VecDeque<Event>,
    retries: u32,
    done: bool,
}

impl std::fmt::Debug for SseEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseEvents")
            .field("task_id", &self.task_id)
            .field("last_seq", &self.last_seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SseEvents {
    /// The next event; `None` after the terminal event.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        StreamExt::next(self).await
    }

    fn open(&self) -> Connecting {
        let mut request = self.client.request(
            reqwest::Method::GET,
            &format!("/v1/tasks/{}/events", segment(&self.task_id)),
        );
        request = request.header("accept", "text/event-stream");
        if self.last_seq > 0 {
            request = request.header("last-event-id", self.last_seq.to_string());
        }
        Box::pin(async move {
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let body = response.bytes().await.map_err(transport)?;
            Err(error_of(status.as_u16(), &body))
        })
    }

    /// Splits what has arrived into lines and events.
    fn parse(&mut self) -> Result<()> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            let line = &line[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .map_err(|e| Error::decode("an event stream line is not UTF-8").with(e))?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data);
                    let message =
                        incoming::decode(&data).map_err(|e| Error::decode("an event").with(e))?;
                    if let Message::Event(event) = message {
                        self.ready.push_back(event);
                    }
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            if field == "data" {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
        }
        if self.buffer.len() > MAX_SSE_LINE {
            return Err(Error::decode("an event stream line over 256 MiB"));
        }
        Ok(())
    }
}

impl Stream for SseEvents {
    type Item = Result<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                if event.seq <= this.last_seq {
                    continue;
                }
                this.last_seq = event.seq;
                this.retries = 0;
                if event.is_terminal() {
                    this.done = true;
                    this.ready.clear();
                    this.body = None;
                }
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(body) = this.body.as_mut() {
                match body.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        this.buffer.extend_from_slice(&chunk);
                        if let Err(e) = this.parse() {
                            this.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.body = None;
                        this.retries += 1;
                        if this.retries > SSE_RETRIES {
                            this.done = true;
                            return Poll::Ready(Some(Err(transport(e))));
                        }
                        continue;
                    }
                    Poll::Ready(None) => {
                        // The server ends the stream after the terminal
                        // event, or at once when nothing is left to send.
                        this.body = None;
                        this.done = true;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if this.connecting.is_none() {
                this.buffer.clear();
                this.data.clear();
                this.connecting = Some(this.open());
            }
            if let Some(connecting) = this.connecting.as_mut() {
                match connecting.as_mut().poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        this.connecting = None;
                        this.body = Some(Box::pin(response.bytes_stream()));
                    }
                    Poll::Ready(Err(e)) => {
                        this.connecting = None;
                        this.retries += 1;
                        if !e.is_connect() || this.retries > SSE_RETRIES {
                            this.done = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }
}
