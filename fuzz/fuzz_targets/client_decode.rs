//! The WebSocket client message decoder and the REST submit body decoder
//! (`taskwire_protocol::client`), on any text.
//!
//! Besides "never panics": a decoded `ref` is within its bound, a decoded
//! `input` is JSON, and an error message stays short whatever the client sent
//! (it is echoed back in `bad_message`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskwire_protocol::MAX_REF_BYTES;
use taskwire_protocol::client::{ClientMessage, DecodeError, decode, decode_submit};

/// Longest error message a client's text may produce.
const MAX_ERROR_BYTES: usize = 1024;

fn check_error(e: &DecodeError) {
    assert!(
        e.message.len() <= MAX_ERROR_BYTES,
        "error message of {} bytes",
        e.message.len()
    );
    if let Some(reference) = &e.reference {
        assert!(reference.len() <= MAX_REF_BYTES);
    }
}

fn check_input(input: &serde_json::value::RawValue) {
    assert!(serde_json::from_str::<Box<serde_json::value::RawValue>>(input.get()).is_ok());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode(text) {
        Ok(request) => {
            if let Some(reference) = &request.reference {
                assert!(reference.len() <= MAX_REF_BYTES);
            }
            if let ClientMessage::Submit(submit) = &request.message {
                check_input(submit.input);
            }
        }
        Err(e) => check_error(&e),
    }
    match decode_submit(text) {
        Ok((reference, submit)) => {
            assert!(reference.is_none_or(|r| r.len() <= MAX_REF_BYTES));
            check_input(submit.input);
        }
        Err(e) => check_error(&e),
    }
});
