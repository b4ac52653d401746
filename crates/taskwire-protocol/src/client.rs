//! Client-to-server messages and their decoding.
//!
//! Decoding is one pass over the frame into borrowed raw fields, then each
//! field the message type needs is decoded on its own. That way `ref` is
//! known even when the rest is wrong (so `bad_message` can echo it), unknown
//! fields are ignored whatever their type, and a task's `input` stays the
//! client's JSON text ([`RawValue`]): it is never built into a tree here,
//! only its handler decodes it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::value::RawValue;

use super::MAX_REF_BYTES;

/// One decoded client message with the `ref` it carried.
#[derive(Debug)]
pub struct Request<'a> {
    pub reference: Option<String>,
    pub message: ClientMessage<'a>,
}

/// Every client message type of PROTOCOL.md.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Auth {
        key: String,
    },
    Submit(Submit<'a>),
    Cancel {
        task_id: String,
    },
    Subscribe {
        task_id: String,
        after_seq: u64,
    },
    Unsubscribe {
        task_id: String,
    },
    /// The answer to a task's open question.
    Answer {
        task_id: String,
        question_id: String,
        value: Box<RawValue>,
    },
    Ping,
    /// Admin extension (`docs/protocol.md`): follow every task.
    Watch,
    Unwatch,
}

impl ClientMessage<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Auth { .. } => "auth",
            ClientMessage::Submit(_) => "submit",
            ClientMessage::Cancel { .. } => "cancel",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::Answer { .. } => "answer",
            ClientMessage::Ping => "ping",
            ClientMessage::Watch => "watch",
            ClientMessage::Unwatch => "unwatch",
        }
    }
}

/// `submit` (and the body of `POST /v1/tasks`).
#[derive(Debug)]
pub struct Submit<'a> {
    pub task: String,
    /// The task input exactly as the client wrote it.
    pub input: &'a RawValue,
    pub options: SubmitOptions,
}

/// `submit.options`; every field optional, unknown ones ignored.
#[derive(Debug, Default, Deserialize)]
pub struct SubmitOptions {
    pub timeout_s: Option<f64>,
    pub priority: Option<Priority>,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub delivery: Option<Delivery>,
    pub cancel_on_disconnect: Option<bool>,
    pub interactive: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    Normal,
    Low,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Link,
    Stream,
}

/// Why a frame is not a valid message: answered with `bad_message`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The message's `ref`, when it could be read.
    pub reference: Option<String>,
    /// The message type, when it could be read (for metrics and logs).
    pub kind: Option<&'static str>,
    pub message: String,
}

/// The raw fields of any message; one pass over the frame.
#[derive(Deserialize)]
struct RawFields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    key: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    task: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    input: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    options: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    task_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    after_seq: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    question_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
}

/// serde would read a JSON array into a struct field by field; a message
/// must be an object.
fn not_an_object(text: &str, kind: Option<&'static str>) -> Result<(), DecodeError> {
    match text.trim_start().as_bytes().first() {
        Some(b'{') | None => Ok(()),
        Some(b'[') => Err(DecodeError {
            reference: None,
            kind,
            message: "a message must be a JSON object".to_owned(),
        }),
        Some(_) => Ok(()),
    }
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<Request<'_>, DecodeError> {
    not_an_object(text, None)?;
    let raw: RawFields<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        reference: None,
        kind: None,
        message: if e.is_data() {
            "a message must be a JSON object".to_owned()
        } else {
            format!("malformed JSON: {e}")
        },
    })?;
    let reference = decode_ref(raw.reference)?;
    let fail = |kind: Option<&'static str>, message: String| DecodeError {
        reference: reference.clone(),
        kind,
        message,
    };
    let Some(kind_raw) = raw.kind else {
        return Err(fail(None, "missing field `type`".to_owned()));
    };
    let kind: Cow<'_, str> = serde_json::from_str(kind_raw.get())
        .map_err(|_| fail(None, "field `type` must be a string".to_owned()))?;
    let message = match &*kind {
        "auth" => ClientMessage::Auth {
            key: required(raw.key, "auth", "key").map_err(|m| fail(Some("auth"), m))?,
        },
        "submit" => ClientMessage::Submit(
            decode_submit_fields(raw.task, raw.input, raw.options)
                .map_err(|m| fail(Some("submit"), m))?,
        ),
        "cancel" => ClientMessage::Cancel {
            task_id: required(raw.task_id, "cancel", "task_id")
                .map_err(|m| fail(Some("cancel"), m))?,
        },
        "subscribe" => ClientMessage::Subscribe {
            task_id: required(raw.task_id, "subscribe", "task_id")
                .map_err(|m| fail(Some("subscribe"), m))?,
            after_seq: optional(raw.after_seq, "subscribe", "after_seq")
                .map_err(|m| fail(Some("subscribe"), m))?
                .unwrap_or(0),
        },
        "unsubscribe" => ClientMessage::Unsubscribe {
            task_id: required(raw.task_id, "unsubscribe", "task_id")
                .map_err(|m| fail(Some("unsubscribe"), m))?,
        },
        "answer" => ClientMessage::Answer {
            task_id: required(raw.task_id, "answer", "task_id")
                .map_err(|m| fail(Some("answer"), m))?,
            question_id: required(raw.question_id, "answer", "question_id")
                .map_err(|m| fail(Some("answer"), m))?,
            value: raw
                .value
                .map(RawValue::to_owned)
                .ok_or_else(|| fail(Some("answer"), "answer: missing field `value`".to_owned()))?,
        },
        "ping" => ClientMessage::Ping,
        "watch" => ClientMessage::Watch,
        "unwatch" => ClientMessage::Unwatch,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(fail(None, format!("unknown message type `{shown}`")));
        }
    };
    Ok(Request { reference, message })
}

/// Decodes the body of `POST /v1/tasks`: a `submit` message without `type`.
pub fn decode_submit(text: &str) -> Result<(Option<String>, Submit<'_>), DecodeError> {
    not_an_object(text, Some("submit"))?;
    let raw: RawFields<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        reference: None,
        kind: Some("submit"),
        message: if e.is_data() {
            "the body must be a JSON object".to_owned()
        } else {
            format!("malformed JSON: {e}")
        },
    })?;
    let reference = decode_ref(raw.reference)?;
    let submit =
        decode_submit_fields(raw.task, raw.input, raw.options).map_err(|message| DecodeError {
            reference: reference.clone(),
            kind: Some("submit"),
            message,
        })?;
    Ok((reference, submit))
}

fn decode_submit_fields<'a>(
    task: Option<&'a RawValue>,
    input: Option<&'a RawValue>,
    options: Option<&'a RawValue>,
) -> Result<Submit<'a>, String> {
    let task = required(task, "submit", "task")?;
    let input = input.ok_or_else(|| "submit: missing field `input`".to_owned())?;
    let options = match options {
        None => SubmitOptions::default(),
        Some(raw) if raw.get() == "null" => SubmitOptions::default(),
        Some(raw) => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                format!(
                    "submit: options.{}: {}",
                    e.path(),
                    shorten(&e.inner().to_string())
                )
            })?
        }
    };
    Ok(Submit {
        task,
        input,
        options,
    })
}

fn decode_ref(raw: Option<&RawValue>) -> Result<Option<String>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = |message: &str| DecodeError {
        reference: None,
        kind: None,
        message: message.to_owned(),
    };
    let reference: String =
        serde_json::from_str(raw.get()).map_err(|_| bad("field `ref` must be a string"))?;
    if reference.len() > MAX_REF_BYTES {
        return Err(bad("field `ref` is longer than 128 bytes"));
    }
    Ok(Some(reference))
}

fn required<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    kind: &str,
    field: &str,
) -> Result<T, String> {
    optional(raw, kind, field)?.ok_or_else(|| format!("{kind}: missing field `{field}`"))
}

fn optional<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    kind: &str,
    field: &str,
) -> Result<Option<T>, String> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| format!("{kind}: field `{field}`: {}", strip_position(&e))),
    }
}

/// serde_json appends " at line 1 column 9", which points into the field,
/// not into the message; leave it out.
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => shorten(&text[..at]),
        None => shorten(&text),
    }
}

/// Longest serde error text kept in a `bad_message`, in bytes. serde quotes
/// the offending value (`invalid type: string "…"`, `unknown variant `…``),
/// which a client can make as long as a whole message.
const MAX_ERROR_DETAIL_BYTES: usize = 200;

/// `text`, cut to [`MAX_ERROR_DETAIL_BYTES`] at a character boundary, with
/// `…` when cut.
fn shorten(text: &str) -> String {
    if text.len() <= MAX_ERROR_DETAIL_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_DETAIL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> DecodeError {
        match decode(text) {
            Ok(request) => panic!("decoded {text} as {request:?}"),
            Err(e) => e,
        }
    }

    /// Seen while writing the `client_decode` fuzz target's bound (error
    /// messages at most 1024 bytes; its runs never made strings that long):
    /// serde echoed a client's string whole into `bad_message`.
    #[test]
    fn error_messages_stay_short_whatever_the_client_sent() {
        let long = "é".repeat(5000);
        let cases = [
            format!(
                r#"{{"type":"submit","task":"echo","input":1,"options":{{"priority":"{long}"}}}}"#
            ),
            format!(
                r#"{{"type":"submit","task":"echo","input":1,"options":{{"timeout_s":"{long}"}}}}"#
            ),
            format!(r#"{{"type":"subscribe","task_id":"t","after_seq":"{long}"}}"#),
            format!(r#"{{"type":"cancel","task_id":{{"{long}":1}}}}"#),
            format!(r#"{{"type":"{long}"}}"#),
        ];
        for text in &cases {
            let e = bad(text);
            assert!(
                e.message.len() <= 300,
                "{} bytes: {}",
                e.message.len(),
                e.message
            );
        }
        let e = bad(&cases[0]);
        assert!(
            e.message
                .starts_with("submit: options.priority: unknown variant"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with('…'), "{}", e.message);
        let body = format!(r#"{{"task":"echo","input":1,"options":{{"delivery":"{long}"}}}}"#);
        assert!(decode_submit(&body).is_err_and(|e| e.message.len() <= 300));
    }

    #[test]
    fn decodes_every_type() {
        let cases = [
            (r#"{"type":"auth","key":"k"}"#, "auth"),
            (r#"{"type":"submit","task":"echo","input":null}"#, "submit"),
            (r#"{"type":"cancel","task_id":"x"}"#, "cancel"),
            (
                r#"{"type":"subscribe","task_id":"x","after_seq":3}"#,
                "subscribe",
            ),
            (r#"{"type":"unsubscribe","task_id":"x"}"#, "unsubscribe"),
            (r#"{"type":"ping","ref":"r1"}"#, "ping"),
        ];
        for (text, kind) in cases {
            let request = decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(request.message.kind(), kind);
        }
    }

    #[test]
    fn input_is_kept_verbatim_and_null_counts_as_present() {
        let request =
            decode(r#"{"type":"submit","task":"echo","input": {"a" : [1, 2]}}"#).expect("valid");
        let ClientMessage::Submit(submit) = request.message else {
            panic!("not a submit")
        };
        assert_eq!(submit.input.get(), r#"{"a" : [1, 2]}"#);
        assert!(decode(r#"{"type":"submit","task":"echo"}"#).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_whatever_their_type() {
        let request = decode(r#"{"type":"ping","task_id":5,"extra":{"x":[]}}"#).expect("valid");
        assert!(matches!(request.message, ClientMessage::Ping));
    }

    #[test]
    fn errors_keep_the_ref_when_it_is_readable() {
        let e = bad(r#"{"type":"nope","ref":"r7"}"#);
        assert_eq!(e.reference.as_deref(), Some("r7"));
        assert!(e.message.contains("unknown message type"), "{}", e.message);
        let e = bad(r#"{"type":"cancel","ref":"r8"}"#);
        assert_eq!(e.reference.as_deref(), Some("r8"));
        assert_eq!(e.message, "cancel: missing field `task_id`");
        let e = bad(r#"{"type":"subscribe","task_id":"t","after_seq":"x","ref":"r9"}"#);
        assert!(
            e.message.starts_with("subscribe: field `after_seq`"),
            "{}",
            e.message
        );
        let e = bad(r#"{"type":"submit","task":"echo","input":1,"options":{"priority":"urgent"}}"#);
        assert!(
            e.message.starts_with("submit: options.priority"),
            "{}",
            e.message
        );
    }

    #[test]
    fn malformed_frames() {
        assert!(bad("{").message.starts_with("malformed JSON"));
        assert_eq!(bad("[1]").message, "a message must be a JSON object");
        assert_eq!(bad(r#"{"ref":"x"}"#).message, "missing field `type`");
        assert_eq!(
            bad(r#"{"type":7}"#).message,
            "field `type` must be a string"
        );
        let long = "r".repeat(129);
        let e = bad(&format!(r#"{{"type":"ping","ref":"{long}"}}"#));
        assert!(e.reference.is_none());
    }
}
