//! Client messages as a client writes them.
//!
//! The server decodes client messages in [`client`](crate::client) (one
//! pass into borrowed raw fields); this module is the other direction:
//! borrowed `Serialize` types, so encoding a `submit` copies the caller's
//! input JSON text once into the frame. The option types are the server's
//! own ([`SubmitOptions`], [`Priority`], [`Delivery`]), so both sides agree
//! on every field; their `Serialize` impls live here.

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::value::RawValue;

use crate::client::{Delivery, Priority, SubmitOptions};

/// Every message a client sends on the WebSocket.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message<'a> {
    Auth {
        key: &'a str,
    },
    Submit {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task: &'a str,
        input: &'a RawValue,
        #[serde(skip_serializing_if = "is_default")]
        options: &'a SubmitOptions,
    },
    Cancel {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task_id: &'a str,
    },
    Subscribe {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task_id: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        after_seq: u64,
    },
    Unsubscribe {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task_id: &'a str,
    },
    Ping {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// Admin extension: follow every task.
    Watch {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    Unwatch {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
    },
    /// Answers a task's question: the reply is the task's `answered` event
    /// (carrying the `ref`) or an `error`.
    Answer {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a str>,
        task_id: &'a str,
        question_id: &'a str,
        value: &'a RawValue,
    },
}

impl Message<'_> {
    /// The message as one JSON text frame.
    pub fn to_json(&self) -> String {
        // Cannot fail: string keys, and the only float (timeout_s) is
        // written by serde_json as `null` when it is not finite.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The body of `POST /v1/tasks`: a `submit` without `type`.
#[derive(Debug, Serialize)]
pub struct SubmitBody<'a> {
    pub task: &'a str,
    pub input: &'a RawValue,
    #[serde(skip_serializing_if = "is_default")]
    pub options: &'a SubmitOptions,
}

/// The body of `POST /v1/tasks/{id}/questions/{qid}/answer`.
#[derive(Debug, Serialize)]
pub struct AnswerBody<'a> {
    pub value: &'a RawValue,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_default(options: &&SubmitOptions) -> bool {
    let SubmitOptions {
        timeout_s,
        priority,
        idempotency_key,
        concurrency_key,
        delivery,
        cancel_on_disconnect,
        interactive,
    } = options;
    timeout_s.is_none()
        && priority.is_none()
        && idempotency_key.is_none()
        && concurrency_key.is_none()
        && delivery.is_none()
        && cancel_on_disconnect.is_none()
        && interactive.is_none()
}

impl Serialize for SubmitOptions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Destructured so a new option cannot be forgotten here.
        let SubmitOptions {
            timeout_s,
            priority,
            idempotency_key,
            concurrency_key,
            delivery,
            cancel_on_disconnect,
            interactive,
        } = self;
        let mut s = serializer.serialize_struct("SubmitOptions", 7)?;
        if let Some(v) = timeout_s {
            s.serialize_field("timeout_s", v)?;
        }
        if let Some(v) = priority {
            s.serialize_field("priority", v)?;
        }
        if let Some(v) = idempotency_key {
            s.serialize_field("idempotency_key", v)?;
        }
        if let Some(v) = concurrency_key {
            s.serialize_field("concurrency_key", v)?;
        }
        if let Some(v) = delivery {
            s.serialize_field("delivery", v)?;
        }
        if let Some(v) = cancel_on_disconnect {
            s.serialize_field("cancel_on_disconnect", v)?;
        }
        if let Some(v) = interactive {
            s.serialize_field("interactive", v)?;
        }
        s.end()
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        })
    }
}

impl Serialize for Delivery {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Delivery::Link => "link",
            Delivery::Stream => "stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientMessage, decode};

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// What a client writes, the server reads back field for field.
    #[test]
    fn the_server_decodes_what_a_client_encodes() {
        let input = raw(r#"{"ms": 5}"#);
        let options = SubmitOptions {
            timeout_s: Some(2.5),
            priority: Some(Priority::High),
            idempotency_key: Some("k\"1".to_owned()),
            concurrency_key: Some("c".to_owned()),
            delivery: Some(Delivery::Stream),
            cancel_on_disconnect: Some(true),
            interactive: Some(false),
        };
        let text = Message::Submit {
            reference: Some("r1"),
            task: "sleep",
            input: &input,
            options: &options,
        }
        .to_json();
        let request = decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(request.reference.as_deref(), Some("r1"));
        let ClientMessage::Submit(submit) = request.message else {
            panic!("not a submit: {text}")
        };
        assert_eq!(submit.task, "sleep");
        assert_eq!(submit.input.get(), r#"{"ms": 5}"#);
        assert_eq!(submit.options.timeout_s, Some(2.5));
        assert_eq!(submit.options.priority, Some(Priority::High));
        assert_eq!(submit.options.idempotency_key.as_deref(), Some("k\"1"));
        assert_eq!(submit.options.concurrency_key.as_deref(), Some("c"));
        assert_eq!(submit.options.delivery, Some(Delivery::Stream));
        assert_eq!(submit.options.cancel_on_disconnect, Some(true));
        assert_eq!(submit.options.interactive, Some(false));

        let text = Message::Submit {
            reference: None,
            task: "echo",
            input: &raw("null"),
            options: &SubmitOptions::default(),
        }
        .to_json();
        assert_eq!(text, r#"{"type":"submit","task":"echo","input":null}"#);
    }

    #[test]
    fn subscribe_cancel_ping_watch() {
        let cases = [
            (
                Message::Subscribe {
                    reference: None,
                    task_id: "ab",
                    after_seq: 4,
                },
                r#"{"type":"subscribe","task_id":"ab","after_seq":4}"#,
            ),
            (
                Message::Subscribe {
                    reference: Some("x"),
                    task_id: "ab",
                    after_seq: 0,
                },
                r#"{"type":"subscribe","ref":"x","task_id":"ab"}"#,
            ),
            (
                Message::Cancel {
                    reference: Some("c"),
                    task_id: "ab",
                },
                r#"{"type":"cancel","ref":"c","task_id":"ab"}"#,
            ),
            (Message::Ping { reference: None }, r#"{"type":"ping"}"#),
            (Message::Watch { reference: None }, r#"{"type":"watch"}"#),
        ];
        for (message, expected) in cases {
            let text = message.to_json();
            assert_eq!(text, expected);
            assert!(decode(&text).is_ok(), "{text}");
        }
    }
}
