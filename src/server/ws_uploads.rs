//! Uploads on a WebSocket: the reverse of stream delivery
//! (`docs/protocol.md` §8.4).
//!
//! The client picks a stream number, sends `upload_begin`, then binary
//! frames whose first 4 bytes are the stream number (big-endian u32)
//! followed by the file's bytes, then `upload_end`. Several uploads may be
//! open at once (at most [`MAX_OPEN`]); each must keep moving (a frame at
//! least every `body_timeout_s`) or it is dropped. After an upload failed,
//! its stream's later frames are dropped quietly until its `upload_end` or
//! `upload_abort` (a client that streams ahead gets one error, not one per
//! frame). Closing the socket drops every open upload, leaving nothing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::Principal;
use crate::inputs::{UploadError, UploadInfo, UploadWriter, Uploads};
use crate::protocol::{ErrorCode, WireError};

/// Uploads open at once on one connection.
pub(super) const MAX_OPEN: usize = 4;
/// Most file bytes in one binary frame (after the 4-byte stream number).
pub(super) const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Failed streams remembered (their late frames dropped quietly).
const FAILED_KEPT: usize = 16;

struct Open {
    writer: UploadWriter,
    /// Dropped if no frame comes by then.
    idle_until: Instant,
}

/// One connection's uploads.
#[derive(Default)]
pub(super) struct WsUploads {
    open: HashMap<u32, Open>,
    failed: VecDeque<u32>,
}

impl std::fmt::Debug for WsUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsUploads")
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

/// An error about one stream, with the stream in its details.
pub(super) fn stream_error(stream: u32, code: ErrorCode, message: String) -> WireError {
    WireError::new(code, message).with_details(serde_json::json!({ "stream": stream }))
}

fn upload_error(stream: u32, error: &UploadError) -> WireError {
    let message = error.to_string();
    match error {
        UploadError::TooLarge { max } => WireError::new(ErrorCode::BadMessage, message)
            .with_details(
                serde_json::json!({"stream": stream, "bound": "max_upload_bytes", "max": max}),
            ),
        UploadError::SizeMismatch { .. } => stream_error(stream, ErrorCode::BadMessage, message),
        UploadError::StorageFull { .. } => stream_error(stream, ErrorCode::StorageFull, message),
        UploadError::Io(e) => {
            tracing::error!(error = %e, "storing an upload failed");
            stream_error(
                stream,
                ErrorCode::Internal,
                "cannot store the upload".to_owned(),
            )
        }
    }
}

/// What an `upload_begin` asks for.
#[derive(Debug)]
pub(super) struct Begin<'a> {
    pub(super) stream: u32,
    pub(super) name: &'a str,
    pub(super) size: Option<u64>,
    pub(super) content_type: Option<&'a str>,
}

impl WsUploads {
    fn fail(&mut self, stream: u32) {
        self.open.remove(&stream);
        if !self.failed.contains(&stream) {
            if self.failed.len() >= FAILED_KEPT {
                self.failed.pop_front();
            }
            self.failed.push_back(stream);
        }
    }

    pub(super) async fn begin(
        &mut self,
        uploads: &Uploads,
        principal: &Principal,
        begin: Begin<'_>,
        idle: Duration,
    ) -> Result<(), WireError> {
        let Begin {
            stream,
            name,
            size,
            content_type,
        } = begin;
        if self.open.contains_key(&stream) {
            return Err(stream_error(
                stream,
                ErrorCode::BadMessage,
                format!("stream {stream} is already open"),
            ));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(stream_error(
                stream,
                ErrorCode::RateLimited,
                format!("at most {MAX_OPEN} uploads at once on one connection"),
            ));
        }
        self.failed.retain(|s| *s != stream);
        match uploads
            .begin(principal.owner(), name, content_type, size)
            .await
        {
            Ok(writer) => {
                self.open.insert(
                    stream,
                    Open {
                        writer,
                        idle_until: Instant::now() + idle,
                    },
                );
                Ok(())
            }
            Err(e) => {
                self.fail(stream);
                Err(upload_error(stream, &e))
            }
        }
    }

    /// One binary frame; `Some` is an error to send (the upload is dropped).
    pub(super) async fn data(&mut self, frame: &[u8], idle: Duration) -> Option<WireError> {
        let Some((head, bytes)) = frame.split_first_chunk::<4>() else {
            return Some(WireError::new(
                ErrorCode::BadMessage,
                "a binary frame starts with its 4-byte stream number",
            ));
        };
        let stream = u32::from_be_bytes(*head);
        if bytes.len() > MAX_FRAME_BYTES {
            self.fail(stream);
            return Some(stream_error(
                stream,
                ErrorCode::BadMessage,
                format!("a binary frame carries at most {MAX_FRAME_BYTES} bytes"),
            ));
        }
        let Some(open) = self.open.get_mut(&stream) else {
            if self.failed.contains(&stream) {
                return None;
            }
            return Some(stream_error(
                stream,
                ErrorCode::BadMessage,
                format!("no upload is open on stream {stream}"),
            ));
        };
        match open.writer.write(bytes).await {
            Ok(()) => {
                open.idle_until = Instant::now() + idle;
                None
            }
            Err(e) => {
                self.fail(stream);
                Some(upload_error(stream, &e))
            }
        }
    }

    pub(super) async fn end(&mut self, stream: u32) -> Result<UploadInfo, WireError> {
        let Some(open) = self.open.remove(&stream) else {
            let was_failed = self.failed.contains(&stream);
            self.failed.retain(|s| *s != stream);
            let message = if was_failed {
                format!("the upload on stream {stream} had failed")
            } else {
                format!("no upload is open on stream {stream}")
            };
            return Err(stream_error(stream, ErrorCode::BadMessage, message));
        };
        open.writer
            .finish()
            .await
            .map_err(|e| upload_error(stream, &e))
    }

    /// Drops an upload; whether one was open (or had failed).
    pub(super) fn abort(&mut self, stream: u32) -> bool {
        let failed = self.failed.contains(&stream);
        self.failed.retain(|s| *s != stream);
        self.open.remove(&stream).is_some() || failed
    }

    /// When the next idle upload must be dropped.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.idle_until).min()
    }

    /// Drops uploads idle past their deadline; an error for each.
    pub(super) fn expire(&mut self, now: Instant, idle: Duration) -> Vec<WireError> {
        let late: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, o)| o.idle_until <= now)
            .map(|(s, _)| *s)
            .collect();
        late.into_iter()
            .map(|stream| {
                self.fail(stream);
                stream_error(
                    stream,
                    ErrorCode::BadMessage,
                    format!(
                        "the upload on stream {stream} got no frame for {} s and was dropped",
                        idle.as_secs()
                    ),
                )
            })
            .collect()
    }
}
