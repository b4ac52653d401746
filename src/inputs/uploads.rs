//! Uploads: files a client sends before the submit that uses them.
//!
//! An upload streams into `temp_dir/uploads/` (counted in `max_temp_bytes`
//! as it arrives, at most `max_upload_bytes`, hashed with SHA-256 on the
//! way) and gets an id (`up_` and 128 random bits). It belongs to its
//! client (a browser token's upload: to that token only, unless the token
//! has the key's scope), like a task. It expires `upload_ttl` after it was
//! made: its id is forgotten then; a task that pinned it (by naming it in
//! its input) keeps the bytes until the task ends.
//!
//! Bounds: each upload counts at least 4 KiB against `max_temp_bytes`, which
//! also bounds how many there can be.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{HeldFile, disk_name};
use crate::artifacts::{MIN_FILE_CHARGE, Quota, clean_name};
use crate::auth::{Principal, hex, random_bytes};
use crate::config::InputsConfig;
use crate::task::{ClientId, Owner};

/// An upload's id: `up_` and 32 lowercase hex digits (128 random bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId([u8; 16]);

impl UploadId {
    fn generate() -> std::io::Result<UploadId> {
        random_bytes::<16>()
            .map(UploadId)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// One spelling only; anything else names no upload.
    pub fn parse(text: &str) -> Option<UploadId> {
        let hex_part = text.strip_prefix("up_")?;
        super::parse_token(hex_part).map(UploadId)
    }

    pub fn to_text(self) -> String {
        format!("up_{}", hex(&self.0))
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An id is a capability of sorts: only its owner may use it, but it
        // stays out of logs all the same.
        f.write_str("UploadId(<redacted>)")
    }
}

/// What a client is told about an upload.
#[derive(Clone, Debug)]
pub struct UploadInfo {
    pub id: UploadId,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    pub expires_at: SystemTime,
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than max_upload_bytes ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("the temporary area is full (max_temp_bytes = {max})")]
    StorageFull { max: u64 },
    #[error("the upload declared {declared} bytes and sent {sent}")]
    SizeMismatch { declared: u64, sent: u64 },
    #[error("cannot store the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// Handle to the upload store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Uploads {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    quota: Arc<Quota>,
    max_bytes: u64,
    ttl: Duration,
    entries: DashMap<UploadId, Entry>,
    expiry: mpsc::Sender<(Instant, UploadId)>,
}

#[derive(Debug)]
struct Entry {
    owner: Owner,
    name: String,
    file: Arc<HeldFile>,
    expires: Instant,
    expires_at: SystemTime,
}

/// Expiry deadlines waiting for the loop; a full queue means the loop is
/// behind, and the upload expires with the next one that gets through (its
/// id is refused from its deadline on anyway, see [`Uploads::pin`]).
const EXPIRY_QUEUE: usize = 4096;

impl Uploads {
    pub(crate) fn start(
        dir: PathBuf,
        quota: Arc<Quota>,
        config: &InputsConfig,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Uploads {
        let (tx, rx) = mpsc::channel(EXPIRY_QUEUE);
        let uploads = Uploads {
            inner: Arc::new(Inner {
                dir,
                quota,
                max_bytes: config.max_upload_bytes,
                ttl: config.upload_ttl,
                entries: DashMap::new(),
                expiry: tx,
            }),
        };
        tracker.spawn(expire(Arc::downgrade(&uploads.inner), rx, stop));
        uploads
    }

    /// The largest upload accepted.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Begins an upload for `owner`. `declared` is the size the client
    /// announced (a `Content-Length`, `upload_begin.size`): over the bound,
    /// it is refused before any byte is stored.
    pub async fn begin(
        &self,
        owner: Owner,
        name: &str,
        content_type: Option<&str>,
        declared: Option<u64>,
    ) -> Result<UploadWriter, UploadError> {
        let max = self.inner.max_bytes;
        if declared.is_some_and(|size| size > max) {
            return Err(UploadError::TooLarge { max });
        }
        let quota = Arc::clone(&self.inner.quota);
        quota
            .reserve(MIN_FILE_CHARGE)
            .map_err(|_| UploadError::StorageFull {
                max: quota_max(&quota),
            })?;
        let disk = match disk_name("u-") {
            Ok(disk) => disk,
            Err(e) => {
                quota.release(MIN_FILE_CHARGE);
                return Err(e.into());
            }
        };
        let path = self.inner.dir.join(&disk);
        let file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(file) => file,
            Err(e) => {
                quota.release(MIN_FILE_CHARGE);
                return Err(e.into());
            }
        };
        Ok(UploadWriter {
            uploads: self.clone(),
            file: Some(file),
            disk,
            owner,
            name: clean_name(name),
            content_type: clean_content_type(content_type),
            declared,
            size: 0,
            charged: MIN_FILE_CHARGE,
            hasher: Sha256::new(),
            done: false,
        })
    }

    /// The upload `id` names, if `principal` may use it.
    pub fn info(&self, id: &str, principal: &Principal) -> Option<UploadInfo> {
        let id = UploadId::parse(id)?;
        self.info_for(id, &principal.client, principal.only_token())
    }

    /// Pins an upload for a task: its name and its bytes, which stay until
    /// the task lets go, whatever the upload's expiry.
    pub(crate) fn pin(&self, id: &str, principal: &Principal) -> Option<(String, Arc<HeldFile>)> {
        let id = UploadId::parse(id)?;
        self.pin_for(id, &principal.client, principal.only_token())
            .map(|(info, file)| (info.name, file))
    }

    /// Deletes an upload now (tasks that pinned it keep their copy).
    pub fn delete(&self, id: &str, principal: &Principal) -> bool {
        UploadId::parse(id)
            .is_some_and(|id| self.delete_for(id, &principal.client, principal.only_token()))
    }

    // The same three for a caller known by its client and the one browser
    // token it is limited to, if any (a request received by another node).

    pub(crate) fn info_for(
        &self,
        id: UploadId,
        client: &ClientId,
        only_token: Option<u64>,
    ) -> Option<UploadInfo> {
        let entry = self.inner.entries.get(&id)?;
        usable(&entry, client, only_token).then(|| info(id, &entry))
    }

    pub(crate) fn pin_for(
        &self,
        id: UploadId,
        client: &ClientId,
        only_token: Option<u64>,
    ) -> Option<(UploadInfo, Arc<HeldFile>)> {
        let entry = self.inner.entries.get(&id)?;
        usable(&entry, client, only_token).then(|| (info(id, &entry), Arc::clone(&entry.file)))
    }

    pub(crate) fn delete_for(
        &self,
        id: UploadId,
        client: &ClientId,
        only_token: Option<u64>,
    ) -> bool {
        self.inner
            .entries
            .remove_if(&id, |_, entry| visible(entry, client, only_token))
            .is_some()
    }

    /// Uploads held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }
}

fn visible(entry: &Entry, client: &ClientId, only_token: Option<u64>) -> bool {
    entry.owner.client == *client && only_token.is_none_or(|t| entry.owner.token == Some(t))
}

/// Visible, and not expired (an expired id is refused from its deadline on,
/// even before the expiry loop has forgotten it).
fn usable(entry: &Entry, client: &ClientId, only_token: Option<u64>) -> bool {
    visible(entry, client, only_token) && entry.expires > Instant::now()
}

fn info(id: UploadId, entry: &Entry) -> UploadInfo {
    UploadInfo {
        id,
        name: entry.name.clone(),
        size: entry.file.size,
        sha256: entry.file.sha256.clone(),
        content_type: entry.file.content_type.clone(),
        expires_at: entry.expires_at,
    }
}

fn quota_max(quota: &Quota) -> u64 {
    quota.max()
}

/// A content type safe to hand on; anything odd is `application/octet-stream`.
pub(super) fn clean_content_type(content_type: Option<&str>) -> String {
    match content_type.map(str::trim) {
        Some(t)
            if !t.is_empty()
                && t.len() <= 200
                && t.contains('/')
                && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            t.to_owned()
        }
        _ => "application/octet-stream".to_owned(),
    }
}

/// An upload being received: [`UploadWriter::write`] each piece, then
/// [`UploadWriter::finish`]. Dropped before `finish`, it leaves nothing
/// behind (its file is deleted, its bytes given back).
pub struct UploadWriter {
    uploads: Uploads,
    file: Option<tokio::fs::File>,
    disk: String,
    owner: Owner,
    name: String,
    content_type: String,
    declared: Option<u64>,
    size: u64,
    charged: u64,
    hasher: Sha256,
    done: bool,
}

impl fmt::Debug for UploadWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadWriter")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl UploadWriter {
    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Stores one piece.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), UploadError> {
        let max = self.uploads.inner.max_bytes;
        let after = self.size + bytes.len() as u64;
        if after > max || self.declared.is_some_and(|d| after > d) {
            return match self.declared {
                Some(declared) if after > declared && declared <= max => {
                    Err(UploadError::SizeMismatch {
                        declared,
                        sent: after,
                    })
                }
                _ => Err(UploadError::TooLarge { max }),
            };
        }
        if after > self.charged {
            let more = after - self.charged;
            let quota = &self.uploads.inner.quota;
            quota
                .reserve(more)
                .map_err(|_| UploadError::StorageFull { max: quota.max() })?;
            self.charged += more;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the upload is finished"))?;
        file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.size = after;
        Ok(())
    }

    /// Ends the upload: it is stored and has an id.
    pub async fn finish(mut self) -> Result<UploadInfo, UploadError> {
        if let Some(declared) = self.declared
            && declared != self.size
        {
            return Err(UploadError::SizeMismatch {
                declared,
                sent: self.size,
            });
        }
        // Flushed, not synced: the area is wiped at every start, so an
        // fsync would buy no durability anything relies on, only latency.
        if let Some(mut file) = self.file.take() {
            file.flush().await?;
        }
        let id = UploadId::generate()?;
        let inner = &self.uploads.inner;
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        let file = Arc::new(HeldFile {
            dir: inner.dir.clone(),
            disk_name: std::mem::take(&mut self.disk),
            size: self.size,
            sha256,
            content_type: std::mem::take(&mut self.content_type),
            charged: self.charged,
            quota: Arc::clone(&inner.quota),
        });
        // The held file owns the bytes and the charge from here on.
        self.done = true;
        let expires = Instant::now() + inner.ttl;
        let entry = Entry {
            owner: self.owner.clone(),
            name: std::mem::take(&mut self.name),
            file,
            expires,
            expires_at: SystemTime::now() + inner.ttl,
        };
        let shown = info(id, &entry);
        inner.entries.insert(id, entry);
        if inner.expiry.try_send((expires, id)).is_err() {
            tracing::warn!("upload expiry queue full; an upload expires with a later one");
        }
        Ok(shown)
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        drop(self.file.take());
        let path = self.uploads.inner.dir.join(&self.disk);
        let quota = Arc::clone(&self.uploads.inner.quota);
        let charged = self.charged;
        let remove = move || {
            let _ = std::fs::remove_file(&path);
            quota.release(charged);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Forgets uploads at their deadline (never a periodic scan). Holds only a
/// weak reference, so it never keeps the store alive.
async fn expire(
    inner: Weak<Inner>,
    mut incoming: mpsc::Receiver<(Instant, UploadId)>,
    stop: CancellationToken,
) {
    let mut heap: BinaryHeap<Reverse<(Instant, UploadId)>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            () = stop.cancelled() => break,
            item = incoming.recv() => match item {
                Some(item) => heap.push(Reverse(item)),
                None => break,
            },
            () = sleep_until_some(next) => {
                let Some(inner) = inner.upgrade() else { break };
                let now = Instant::now();
                while let Some(Reverse((at, id))) = heap.peek().copied() {
                    if at > now {
                        break;
                    }
                    heap.pop();
                    // The held file goes when its last pin does.
                    inner.entries.remove_if(&id, |_, entry| entry.expires <= now);
                }
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_spelling() {
        let id = UploadId::generate().expect("random");
        let text = id.to_text();
        assert!(text.starts_with("up_") && text.len() == 35);
        assert_eq!(UploadId::parse(&text), Some(id));
        assert_eq!(UploadId::parse(&text.to_uppercase()), None);
        assert_eq!(UploadId::parse(&text[3..]), None);
        assert_eq!(UploadId::parse("up_"), None);
    }

    #[test]
    fn content_types_are_cleaned() {
        assert_eq!(
            clean_content_type(Some("application/zip")),
            "application/zip"
        );
        assert_eq!(
            clean_content_type(Some("x\r\ny")),
            "application/octet-stream"
        );
        assert_eq!(clean_content_type(None), "application/octet-stream");
    }
}
