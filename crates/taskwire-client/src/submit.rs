//! [`Submit`]: a task and its options, ready to send over either transport.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use taskwire_protocol::client::{Delivery, Priority, SubmitOptions};
use taskwire_protocol::outgoing;

use crate::{Error, Result};

/// A task to submit: its name, its self-contained input, and the options
/// of the protocol (all optional; the server's defaults apply).
///
/// ```
/// use std::time::Duration;
/// use taskwire_client::{Priority, Submit};
///
/// let submit = Submit::new("sleep", &serde_json::json!({"ms": 100}))?
///     .priority(Priority::High)
///     .timeout(Duration::from_secs(30))
///     .idempotency_key("nightly-2026-11-23");
/// assert_eq!(submit.task(), "sleep");
/// # Ok::<(), taskwire_client::Error>(())
/// ```
#[derive(Debug)]
pub struct Submit {
    task: String,
    input: Box<RawValue>,
    options: SubmitOptions,
}

impl Clone for Submit {
    fn clone(&self) -> Submit {
        let SubmitOptions {
            timeout_s,
            priority,
            idempotency_key,
            concurrency_key,
            delivery,
            cancel_on_disconnect,
            interactive,
        } = &self.options;
        Submit {
            task: self.task.clone(),
            input: self.input.clone(),
            options: SubmitOptions {
                timeout_s: *timeout_s,
                priority: *priority,
                idempotency_key: idempotency_key.clone(),
                concurrency_key: concurrency_key.clone(),
                delivery: *delivery,
                cancel_on_disconnect: *cancel_on_disconnect,
                interactive: *interactive,
            },
        }
    }
}

impl Submit {
    /// A task whose input is any serializable value.
    pub fn new(task: impl Into<String>, input: &impl Serialize) -> Result<Submit> {
        let input = serde_json::value::to_raw_value(input)
            .map_err(|e| Error::usage("the task input cannot be written as JSON").with(e))?;
        Ok(Submit::with_raw(task, input))
    }

    /// A task whose input is JSON text (checked, then sent as written).
    pub fn json(task: impl Into<String>, input: impl Into<String>) -> Result<Submit> {
        let input = RawValue::from_string(input.into())
            .map_err(|e| Error::usage("the task input is not JSON").with(e))?;
        Ok(Submit::with_raw(task, input))
    }

    pub fn with_raw(task: impl Into<String>, input: Box<RawValue>) -> Submit {
        Submit {
            task: task.into(),
            input,
            options: SubmitOptions::default(),
        }
    }

    /// Fails the task with `timeout` this long after it started (capped
    /// by the server's `max_timeout_s`).
    pub fn timeout(mut self, timeout: Duration) -> Submit {
        self.options.timeout_s = Some(timeout.as_secs_f64());
        self
    }

    pub fn priority(mut self, priority: Priority) -> Submit {
        self.options.priority = Some(priority);
        self
    }

    /// A repeat submit with the same key (same API key, same task name)
    /// gets the first task instead of a new one.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Submit {
        self.options.idempotency_key = Some(key.into());
        self
    }

    /// Tasks of one API key sharing this key never run at the same time.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Submit {
        self.options.concurrency_key = Some(key.into());
        self
    }

    /// `Stream` sends the files on the submitting WebSocket before
    /// `completed` ([`Connection`](crate::Connection) returns them as
    /// [`Frame::Binary`](crate::Frame::Binary)); links are listed either way.
    pub fn delivery(mut self, delivery: Delivery) -> Submit {
        self.options.delivery = Some(delivery);
        self
    }

    /// Cancel the task when the submitting connection closes (default:
    /// the task outlives it).
    pub fn cancel_on_disconnect(mut self, yes: bool) -> Submit {
        self.options.cancel_on_disconnect = Some(yes);
        self
    }

    /// `false`: the task may not ask questions; each gets its default (or
    /// "nobody answered") at once. Default: it may.
    pub fn interactive(mut self, yes: bool) -> Submit {
        self.options.interactive = Some(yes);
        self
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    /// The input as JSON text.
    pub fn input(&self) -> &RawValue {
        &self.input
    }

    pub fn options(&self) -> &SubmitOptions {
        &self.options
    }

    /// The WebSocket `submit` message with this `ref`.
    pub fn message<'a>(&'a self, reference: Option<&'a str>) -> outgoing::Message<'a> {
        outgoing::Message::Submit {
            reference,
            task: &self.task,
            input: &self.input,
            options: &self.options,
        }
    }

    /// The body of `POST /v1/tasks`.
    pub(crate) fn body(&self) -> String {
        serde_json::to_string(&outgoing::SubmitBody {
            task: &self.task,
            input: &self.input,
            options: &self.options,
        })
        .unwrap_or_default()
    }
}
