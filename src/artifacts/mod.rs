//! The expiring temporary area for task file outputs.
//!
//! Layout under `temp_dir`: `staging/task-*/` (one directory per running task
//! that writes files, see [`Stage`]), `files/<token>` (published files,
//! flat, named by their download token), `uploads/` and `inputs/` (uploads
//! and fetched URL inputs, owned by `crate::inputs`). A task's files are published only
//! when it completes, by `rename` within one filesystem, so a half-written
//! file is never visible. Each published file expires `file_ttl` later: the
//! expiry loop ([`expiry`]) unlinks it and leaves a tombstone so its link
//! answers `410` for another `file_ttl`, then forgets it (`404`).
//!
//! **Architecture Invariant:** nothing outside `temp_dir` is ever served or
//! deleted; names from clients never become paths (files on disk are named
//! by token); download tokens never reach a log.
//!
//! Bounds: `max_temp_bytes` over staged and published bytes (every file
//! counts at least 4 KiB, which also bounds the number of files and
//! tombstones); writes past it fail the task with `storage_full`.

mod adopt;
mod expiry;
mod stage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use adopt::{AdoptError, ListedFile, OutputDir};
pub(crate) use stage::MIN_FILE_CHARGE;
pub(crate) use stage::{Stage, StageError, StagedFile, clean_name, is_storage_full};

use crate::auth::{hex, random_bytes};
use crate::config::FilesConfig;
use crate::task::PublishedFile;

/// A download token: 128 random bits, the capability in a file's link.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DownloadToken([u8; 16]);

impl DownloadToken {
    fn generate() -> std::io::Result<DownloadToken> {
        random_bytes::<16>()
            .map(DownloadToken)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Parses the token part of a link; anything else is not a token.
    pub(crate) fn parse(text: &str) -> Option<DownloadToken> {
        // One spelling only: 32 lowercase hex digits.
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(DownloadToken(bytes))
    }

    pub(crate) fn to_text(self) -> String {
        hex(&self.0)
    }
}

impl std::fmt::Debug for DownloadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadToken(<redacted>)")
    }
}

/// The running total of staged and published bytes against `max_temp_bytes`.
#[derive(Debug)]
pub(crate) struct Quota {
    used: AtomicU64,
    max: u64,
}

impl Quota {
    pub(crate) fn reserve(&self, bytes: u64) -> Result<(), StageError> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|after| *after <= self.max)
            })
            .map(|_| ())
            .map_err(|_| StageError::StorageFull { max: self.max })
    }

    /// The bound (`max_temp_bytes`).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A published file as another node describes it (cluster mode).
#[derive(Clone, Debug)]
pub struct SharedFile {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub expires_at: SystemTime,
}

/// A reader over a shared file's bytes.
pub(crate) type SharedReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A shared file's description, and its bytes unless it has expired;
/// `None`: there is no such file.
pub(crate) type SharedFound = Option<(SharedFile, Option<SharedReader>)>;

/// Where published files are also kept so that every node can serve them
/// (cluster mode: the cluster's file store). Without one, files live on
/// this node only.
pub trait FileShare: Send + Sync + std::fmt::Debug {
    /// Stores a file this node published (before its task's terminal event
    /// is written, so a link handed out works on every node).
    fn put(
        &self,
        file: PublishedFile,
        path: PathBuf,
    ) -> futures::future::BoxFuture<'static, Result<(), String>>;
    /// A file published on another node: its description, and its bytes
    /// unless it has expired. `Ok(None)`: there is no such file.
    fn get(
        &self,
        token: String,
    ) -> futures::future::BoxFuture<'static, Result<SharedFound, String>>;
}

/// What a download link points at now.
#[derive(Debug)]
pub enum Lookup {
    Found(ServedFile),
    /// It existed and expired (`410`).
    Expired,
    /// Never existed, or expired long ago (`404`).
    Missing,
}

/// A published file, as the download route needs it.
#[derive(Clone, Debug)]
pub struct ServedFile {
    /// The file's name on disk, relative to [`Artifacts::served_dir`].
    pub disk_name: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

#[derive(Debug)]
enum Entry {
    Live {
        file: ServedFile,
        charged: u64,
        path: PathBuf,
    },
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("cannot prepare the temp dir {path}: {source}")]
    Setup {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Handle to the temporary area; cheap to clone.
#[derive(Clone, Debug)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    staging: PathBuf,
    served: PathBuf,
    /// Uploads and fetched URL inputs (`crate::inputs`), flat, named at random.
    uploads: PathBuf,
    inputs: PathBuf,
    quota: Arc<Quota>,
    ttl: Duration,
    /// Lookups by the download route (many readers, short writes, no await
    /// while held: a sharded map fits).
    entries: DashMap<DownloadToken, Entry>,
    expiry: mpsc::Sender<(Instant, DownloadToken)>,
    /// The directory we made ourselves, removed when the last handle drops.
    _owned_root: Option<TempDir>,
    /// A given `temp_dir`: our subdirectories in it are removed at exit.
    given_root: Option<PathBuf>,
    /// Cluster mode: where published files are shared.
    share: std::sync::OnceLock<Arc<dyn FileShare>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.given_root.is_some() {
            let _ = std::fs::remove_dir_all(&self.staging);
            let _ = std::fs::remove_dir_all(&self.served);
            let _ = std::fs::remove_dir_all(&self.uploads);
            let _ = std::fs::remove_dir_all(&self.inputs);
        }
    }
}

impl Artifacts {
    /// Prepares the area and starts its expiry loop (tracked, ending with
    /// `stop`). Leftovers of a crashed run in a given `temp_dir` are removed.
    pub fn start(
        config: &FilesConfig,
        tracker: &TaskTracker,
        stop: CancellationToken,
        metrics: crate::telemetry::Metrics,
    ) -> Result<Artifacts, ArtifactsError> {
        let setup = |path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactsError::Setup { path, source }
        };
        let (owned_root, root) = match &config.temp_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(setup(dir))?;
                (None, dir.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("taskwire-")
                    .tempdir()
                    .map_err(setup(&std::env::temp_dir()))?;
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let staging = root.join("staging");
        let served = root.join("files");
        let uploads = root.join("uploads");
        let inputs = root.join("inputs");
        for dir in [&staging, &served, &uploads, &inputs] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(setup(dir)(e)),
            }
            std::fs::create_dir_all(dir).map_err(setup(dir))?;
        }
        let (expiry_tx, expiry_rx) = mpsc::channel(1024);
        let artifacts = Artifacts {
            inner: Arc::new(Inner {
                staging,
                served,
                uploads,
                inputs,
                quota: Arc::new(Quota {
                    used: AtomicU64::new(0),
                    max: config.max_temp_bytes,
                }),
                ttl: config.file_ttl,
                entries: DashMap::new(),
                expiry: expiry_tx,
                given_root: owned_root.is_none().then_some(root),
                _owned_root: owned_root,
                share: std::sync::OnceLock::new(),
            }),
        };
        tracker.spawn(expiry::run(
            Arc::downgrade(&artifacts.inner),
            expiry_rx,
            stop,
            metrics,
        ));
        Ok(artifacts)
    }

    /// Shares every file published from now on (cluster mode), and serves
    /// files published elsewhere.
    pub fn share_with(&self, share: Arc<dyn FileShare>) {
        let _ = self.inner.share.set(share);
    }

    /// A new, empty stage for one task (no IO until its first file).
    pub fn stage(&self) -> Stage {
        Stage::new(self.inner.staging.clone(), Arc::clone(&self.inner.quota))
    }

    /// The quota every file in the area counts against (uploads and
    /// fetched inputs too).
    pub(crate) fn quota(&self) -> Arc<Quota> {
        Arc::clone(&self.inner.quota)
    }

    /// Where uploads are kept.
    pub(crate) fn uploads_dir(&self) -> &Path {
        &self.inner.uploads
    }

    /// Where fetched URL inputs are kept.
    pub(crate) fn inputs_dir(&self) -> &Path {
        &self.inner.inputs
    }

    /// Where published files live.
    pub fn served_dir(&self) -> &Path {
        &self.inner.served
    }

    /// Bytes of staged and published files now.
    pub fn used_bytes(&self) -> u64 {
        self.inner.quota.used.load(Ordering::Acquire)
    }

    /// Publishes every finished file of a completed task: blocking renames,
    /// then the links go live. On error nothing is published.
    pub async fn publish(&self, mut stage: Stage) -> std::io::Result<Vec<PublishedFile>> {
        if stage.is_empty() {
            return Ok(Vec::new());
        }
        let served = self.inner.served.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let mut moved = Vec::with_capacity(stage.entries.len());
            for entry in &stage.entries {
                let token = DownloadToken::generate()?;
                let target = served.join(token.to_text());
                if let Err(e) = std::fs::rename(&entry.path, &target) {
                    for (_, path) in &moved {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e);
                }
                moved.push((token, target));
            }
            // The quota charge moves from the stage to the published entries.
            let entries = std::mem::take(&mut stage.entries);
            Ok((entries, moved))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;

        let (entries, moved) = moved;
        let now = Instant::now();
        let expires_at = SystemTime::now() + self.inner.ttl;
        let mut published = Vec::with_capacity(entries.len());
        for (entry, (token, path)) in entries.into_iter().zip(moved) {
            let token_text = token.to_text();
            let file = ServedFile {
                disk_name: token_text.clone(),
                name: entry.name.clone(),
                content_type: entry.content_type.clone(),
                size: entry.size,
            };
            self.inner.entries.insert(
                token,
                Entry::Live {
                    file,
                    charged: entry.charged,
                    path: path.clone(),
                },
            );
            // The loop only ends at shutdown, when nothing needs expiring.
            let _ = self.inner.expiry.send((now + self.inner.ttl, token)).await;
            let file = PublishedFile {
                name: entry.name,
                size: entry.size,
                content_type: entry.content_type,
                sha256: hex(&entry.sha256),
                token: token_text,
                expires_at,
            };
            if let Some(share) = self.inner.share.get()
                && let Err(e) = share.put(file.clone(), path).await
            {
                // The file is still served here; other nodes answer 404.
                tracing::warn!(error = %e, "a published file could not be shared with the cluster");
            }
            published.push(file);
        }
        Ok(published)
    }

    /// What the link `token` points at, looking in the cluster's store if
    /// this node has no such file: a file found there is copied here (and
    /// charged to `max_temp_bytes`) until it expires, then served like one
    /// published here.
    pub async fn find(&self, token: &str, name: &str) -> Lookup {
        match self.lookup(token, name) {
            Lookup::Missing => {}
            found => return found,
        }
        let (Some(share), Some(parsed)) = (self.inner.share.get(), DownloadToken::parse(token))
        else {
            return Lookup::Missing;
        };
        let (file, reader) = match share.get(token.to_owned()).await {
            Ok(Some(found)) => found,
            Ok(None) => return Lookup::Missing,
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's file store cannot be read");
                return Lookup::Missing;
            }
        };
        if file.name != name {
            return Lookup::Missing;
        }
        let left = file
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let Some(mut reader) = reader.filter(|_| !left.is_zero()) else {
            return Lookup::Expired;
        };
        let deadline = Instant::now() + left;
        let charged = file.size.max(4096);
        if self.inner.quota.reserve(charged).is_err() {
            tracing::warn!("a shared file cannot be copied here: max_temp_bytes is reached");
            return Lookup::Missing;
        }
        // Written beside the served files, then renamed: never half-visible.
        let part = self.inner.served.join(format!("{}.part", token));
        let target = self.inner.served.join(token);
        let copied = async {
            let mut out = tokio::fs::File::create(&part).await?;
            let n = tokio::io::copy(&mut reader, &mut out).await?;
            out.sync_data().await?;
            if n != file.size {
                return Err(std::io::Error::other("the shared file was cut short"));
            }
            tokio::fs::rename(&part, &target).await
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&part).await;
            self.inner.quota.release(charged);
            tracing::warn!(error = %e, "copying a shared file failed");
            return Lookup::Missing;
        }
        let served = ServedFile {
            disk_name: token.to_owned(),
            name: file.name.clone(),
            content_type: file.content_type.clone(),
            size: file.size,
        };
        match self.inner.entries.entry(parsed) {
            dashmap::mapref::entry::Entry::Occupied(_) => {
                // Another download copied it meanwhile (same bytes).
                self.inner.quota.release(charged);
            }
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(Entry::Live {
                    file: served,
                    charged,
                    path: target,
                });
                let _ = self.inner.expiry.send((deadline, parsed)).await;
            }
        }
        self.lookup(token, name)
    }

    /// Expires published files now, off this thread (their task ended some
    /// other way in the same instant, e.g. cancelled while publishing). Never
    /// waits: if the expiry loop is swamped, they expire at their deadline.
    pub fn discard(&self, files: &[PublishedFile]) {
        for file in files {
            if let Some(token) = DownloadToken::parse(&file.token)
                && self.inner.expiry.try_send((Instant::now(), token)).is_err()
            {
                tracing::warn!("expiry queue full; a discarded file waits for its deadline");
            }
        }
    }

    /// Where a published file's bytes are (for stream delivery), if the
    /// token is one; the file may have expired meanwhile.
    pub fn published_path(&self, token: &str) -> Option<PathBuf> {
        DownloadToken::parse(token).map(|t| self.inner.served.join(t.to_text()))
    }

    /// What the link `token` points at.
    pub fn lookup(&self, token: &str, name: &str) -> Lookup {
        let Some(token) = DownloadToken::parse(token) else {
            return Lookup::Missing;
        };
        match self.inner.entries.get(&token).as_deref() {
            Some(Entry::Live { file, .. }) if file.name == name => Lookup::Found(file.clone()),
            Some(Entry::Expired) => Lookup::Expired,
            Some(Entry::Live { .. }) | None => Lookup::Missing,
        }
    }

    /// Unlinks a live file and leaves a tombstone; blocking IO.
    fn expire(&self, token: DownloadToken) {
        if let Some(Entry::Live { charged, path, .. }) =
            self.inner.entries.insert(token, Entry::Expired)
        {
            // Unlinking does not disturb downloads already reading it.
            let _ = std::fs::remove_file(&path);
            self.inner.quota.release(charged);
        }
    }

    /// Drops a tombstone: the link now answers `404`.
    fn forget(&self, token: DownloadToken) {
        self.inner
            .entries
            .remove_if(&token, |_, entry| matches!(entry, Entry::Expired));
    }
}
