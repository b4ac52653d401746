//! The worker-protocol decoder (`taskwire_protocol::worker::decode`): every
//! frame a worker sends, over stdio or WebSocket, goes through it.
//!
//! Besides "never panics": a decoded or echoed `ref` is within its bound, and
//! an error message stays short whatever the worker sent (it goes back to the
//! worker in `error` and into the server's log).
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskwire_protocol::MAX_REF_BYTES;
use taskwire_protocol::worker::decode;

/// Longest error message a worker's text may produce.
const MAX_ERROR_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode(text) {
        Ok(request) => {
            if let Some(reference) = &request.reference {
                assert!(reference.len() <= MAX_REF_BYTES);
            }
        }
        Err(e) => {
            assert!(
                e.message.len() <= MAX_ERROR_BYTES,
                "error message of {} bytes",
                e.message.len()
            );
            if let Some(reference) = &e.reference {
                assert!(reference.len() <= MAX_REF_BYTES);
            }
        }
    }
});
