//! File inputs: what a task needs that is bytes, not JSON.
//!
//! A submit's input refers to files with **references** (`docs/protocol.md`
//! §8.5): `{"$upload": "up_…"}` names an upload the same client made earlier
//! (`POST /v1/uploads` or WebSocket binary frames, [`uploads`]), and
//! `{"$url": "https://…", "headers": {…}}` names a resource the server
//! fetches for the task ([`fetch`], behind the SSRF [`guard`]).
//!
//! The life of an input:
//! 1. **Admission** ([`Inputs::resolve`]) finds the references in the input
//!    ([`refs`]), checks each upload belongs to the caller and pins it: the
//!    task holds the upload's [`HeldFile`] from then on, so the upload's
//!    expiry cannot take the bytes from under it. URL references are checked
//!    for form only (scheme, headers). In a cluster, an upload this node
//!    does not have becomes [`InputSource::Remote`]: the submit asks the
//!    other nodes for it before the task is queued.
//! 2. **Before the attempt runs** ([`Inputs::prepare`], called by whoever
//!    runs it: the built-in pool, a worker session), URL inputs are fetched
//!    into `temp_dir/inputs/`, with progress events saying so. A fetch that
//!    fails fails the task with `input_fetch_failed`. In a cluster, the node
//!    that admitted the task (or, for a remote upload, the node that has it)
//!    has copied its uploads into the cluster's store, and the node that runs it copies them back here the same way
//!    ([`InputSource::Stored`], through the [`InputShare`]).
//! 3. **The task** sees every input as an [`InputFile`]: its JSON path in the
//!    input, name, size, sha256, and a file on disk (built-in tasks through
//!    `TaskCtx`; external workers through a per-attempt download link,
//!    [`Inputs::share`]).
//! 4. A file is deleted, and its bytes given back to `max_temp_bytes`, when
//!    the last holder lets go: the upload's own entry (until its TTL), the
//!    tasks that pinned it (until they end), the attempt that reads it.
//!
//! **Architecture Invariant:** header values of URL inputs, upload names and
//! input bytes never reach a log; client-chosen names never become paths
//! (files on disk are named at random).

pub mod archive;
pub mod guard;

mod fetch;
mod refs;
mod uploads;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fetch::{FetchError, Fetcher, MAX_REDIRECTS};
pub use refs::{MAX_REFERENCES, Reference, find_references, url_request};
pub use uploads::{UploadError, UploadId, UploadInfo, UploadWriter, Uploads};

use crate::artifacts::{Artifacts, Quota};
use crate::auth::{Principal, hex, random_bytes};
use crate::catalog::InvalidInput;
use crate::config::InputsConfig;
use crate::exec::{Report, Reporter};
use crate::task::{FailureKind, Progress, TaskFailure, TaskId};

/// A file in the temporary area that belongs to no published output: an
/// upload, or a fetched URL input. Deleted (off the async threads when a
/// runtime is there) and its bytes given back to the quota when the last
/// handle drops.
pub struct HeldFile {
    dir: PathBuf,
    /// The file's name in `dir`: random, never a client's name.
    disk_name: String,
    size: u64,
    sha256: String,
    content_type: String,
    charged: u64,
    quota: Arc<Quota>,
}

impl HeldFile {
    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(&self.disk_name)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn content_type(&self) -> &str {
        &self.content_type
    }
}

impl fmt::Debug for HeldFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldFile")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        let path = self.disk_path();
        let quota = Arc::clone(&self.quota);
        let charged = self.charged;
        let remove = move || {
            let _ = std::fs::remove_file(&path);
            quota.release(charged);
        };
        // Dropped on the scheduler's thread or a connection's: the unlink
        // must not hold it up.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// A name for a new file in the area: 128 random bits.
fn disk_name(prefix: &str) -> std::io::Result<String> {
    random_bytes::<16>()
        .map(|bytes| format!("{prefix}{}", hex(&bytes)))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A URL input as its submit named it. The headers are the client's
/// secrets (an auth token, typically): never logged, never shown.
pub struct UrlRequest {
    pub url: reqwest::Url,
    pub(crate) headers: reqwest::header::HeaderMap,
    /// The file name the task sees (else the URL's last path segment).
    pub name: Option<String>,
}

impl UrlRequest {
    /// A request for `url` with `headers` (names and values already valid).
    pub fn new(
        url: reqwest::Url,
        headers: reqwest::header::HeaderMap,
        name: Option<String>,
    ) -> UrlRequest {
        UrlRequest { url, headers, name }
    }
}

impl fmt::Debug for UrlRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the URL (its query may carry a token) nor the headers.
        f.debug_struct("UrlRequest")
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// One file input of a task, as admission found it.
#[derive(Debug)]
pub enum InputSource {
    /// An upload, pinned: the task holds its bytes.
    Upload {
        /// Where the reference is in the input (`$.files[0]`).
        json_path: String,
        name: String,
        file: Arc<HeldFile>,
    },
    /// A resource the server fetches before the task runs.
    Url {
        json_path: String,
        request: Arc<UrlRequest>,
    },
    /// Cluster mode: an upload made on the node that admitted the task,
    /// copied into the cluster's store; the node that runs the task copies
    /// it back into its own area before the attempt.
    Stored(StoredUpload),
    /// Cluster mode, at admission: an upload this node does not have,
    /// perhaps made on another node. The submit asks the other nodes for
    /// it before the task is queued (the one that has it, and finds it the
    /// caller's, stores it: it becomes [`InputSource::Stored`]), or is
    /// refused `not_found` like any unknown upload.
    Remote {
        json_path: String,
        id: UploadId,
        /// The one browser token whose uploads the caller may use, if it
        /// is limited to its own ([`Principal::only_token`]).
        only_token: Option<u64>,
    },
}

/// An upload as the cluster's store keeps it for one task.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredUpload {
    /// Where the reference is in the input.
    pub path: String,
    /// Its object in the store.
    pub object: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
}

/// What another node answered about one of its uploads.
#[derive(Debug)]
pub enum RemoteUpload {
    Found(UploadInfo),
    Deleted,
}

/// Where uploads are kept so that the node running a task can read them
/// (cluster mode: the cluster's object store). Without one, uploads are
/// on this node only.
pub trait InputShare: Send + Sync + fmt::Debug {
    /// An upload another node has, if it is the caller's (`GET` of it), or
    /// (`delete`) forgotten there (`DELETE`). `Err`: the answer is unknown
    /// (a node did not answer).
    fn ask_upload(
        &self,
        id: UploadId,
        client: crate::task::ClientId,
        only_token: Option<u64>,
        delete: bool,
    ) -> futures::future::BoxFuture<'static, Result<Option<RemoteUpload>, String>>;

    /// Reads a stored upload; `None`: it is not (or no longer) there.
    fn get(
        &self,
        object: String,
    ) -> futures::future::BoxFuture<'static, Result<Option<crate::artifacts::SharedReader>, String>>;
}

impl InputSource {
    pub fn json_path(&self) -> &str {
        match self {
            InputSource::Upload { json_path, .. }
            | InputSource::Url { json_path, .. }
            | InputSource::Remote { json_path, .. } => json_path,
            InputSource::Stored(upload) => &upload.path,
        }
    }
}

/// The file inputs of one task, in path order (array items in order,
/// object keys sorted).
/// Cheap to clone; holding it keeps its uploads' bytes.
#[derive(Clone, Debug, Default)]
pub struct TaskInputs(Option<Arc<[InputSource]>>);

impl TaskInputs {
    pub fn new(sources: Vec<InputSource>) -> TaskInputs {
        if sources.is_empty() {
            TaskInputs(None)
        } else {
            TaskInputs(Some(sources.into()))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    pub fn iter(&self) -> impl Iterator<Item = &InputSource> {
        self.0.iter().flat_map(|s| s.iter())
    }
}

/// The file inputs of a task read back from its queued input, on whichever
/// node takes it (cluster mode): a URL reference is the request itself, so
/// the node that runs the task fetches it; an upload is found in `stored`
/// (copied into the cluster's store by the node that admitted it). `None`
/// if an upload reference has no stored copy.
pub fn queued_inputs(
    input: &serde_json::value::RawValue,
    stored: &[StoredUpload],
) -> Option<TaskInputs> {
    let references = find_references(input).ok()?;
    let mut sources = Vec::with_capacity(references.len());
    for reference in references {
        match reference {
            Reference::Url { json_path, request } => sources.push(InputSource::Url {
                json_path,
                request: Arc::new(request),
            }),
            Reference::Upload { json_path, .. } => {
                let upload = stored.iter().find(|u| u.path == json_path)?;
                sources.push(InputSource::Stored(upload.clone()));
            }
        }
    }
    Some(TaskInputs::new(sources))
}

/// An input file ready for a running task: its place in the input, its
/// name, and its bytes on disk.
#[derive(Clone, Debug)]
pub struct InputFile {
    json_path: String,
    name: String,
    file: Arc<HeldFile>,
}

impl InputFile {
    /// Where its reference is in the task's input, e.g. `$.files[0]`.
    pub fn json_path(&self) -> &str {
        &self.json_path
    }

    /// The file's name (the upload's, the reference's `name`, or the URL's
    /// last path segment), cleaned like output names.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.file.size
    }

    /// Lowercase hex of its SHA-256.
    pub fn sha256(&self) -> &str {
        &self.file.sha256
    }

    pub fn content_type(&self) -> &str {
        &self.file.content_type
    }

    /// The file on disk; read it, never write or move it.
    pub fn disk_path(&self) -> PathBuf {
        self.file.disk_path()
    }

    /// Opens the file for reading (blocking IO).
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.disk_path())
    }
}

/// Why a submit's references were refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No upload of that id that this caller may use (never another
    /// client's, never an expired one).
    #[error("{path}: no such upload")]
    NoSuchUpload { path: String },
    #[error("invalid input: {0}")]
    Invalid(InvalidInput),
}

#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("cannot make the HTTP client for URL inputs: {0}")]
    Client(String),
}

/// Handle to uploads, the fetcher and input links; cheap to clone.
#[derive(Clone, Debug)]
pub struct Inputs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    uploads: Uploads,
    fetcher: Fetcher,
    /// `temp_dir/inputs`: fetched files and unpacked archives.
    dir: PathBuf,
    quota: Arc<Quota>,
    /// Per-attempt download links of input files for external workers.
    links: DashMap<[u8; 16], Shared>,
    /// Cluster mode: where uploads of tasks admitted elsewhere are read.
    share: std::sync::OnceLock<Arc<dyn InputShare>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    file: Arc<HeldFile>,
}

/// A shared input file, as the download route needs it.
#[derive(Debug)]
pub struct SharedFile {
    pub dir: PathBuf,
    pub disk_name: String,
    pub name: String,
    pub content_type: String,
}

impl Inputs {
    /// Starts the upload store (its expiry loop is tracked and ends with
    /// `stop`) and makes the fetcher.
    pub fn start(
        config: &InputsConfig,
        artifacts: &Artifacts,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Inputs, InputsError> {
        let uploads = Uploads::start(
            artifacts.uploads_dir().to_owned(),
            artifacts.quota(),
            config,
            tracker,
            stop,
        );
        let fetcher = Fetcher::new(config, artifacts.inputs_dir().to_owned(), artifacts.quota())?;
        Ok(Inputs {
            inner: Arc::new(Inner {
                uploads,
                fetcher,
                dir: artifacts.inputs_dir().to_owned(),
                quota: artifacts.quota(),
                links: DashMap::new(),
                share: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Cluster mode: uploads of tasks admitted on other nodes are read
    /// from `share`. Set once; later calls change nothing.
    pub fn share_with(&self, share: Arc<dyn InputShare>) {
        let _ = self.inner.share.set(share);
    }

    pub fn uploads(&self) -> &Uploads {
        &self.inner.uploads
    }

    /// `GET /v1/uploads/{id}`: the upload, here or (cluster mode) on
    /// another node. `Err`: unknown (a node did not answer).
    pub async fn upload_info(
        &self,
        id: &str,
        principal: &Principal,
    ) -> Result<Option<UploadInfo>, String> {
        if let Some(info) = self.inner.uploads.info(id, principal) {
            return Ok(Some(info));
        }
        Ok(match self.ask_others(id, principal, false).await? {
            Some(RemoteUpload::Found(info)) => Some(info),
            _ => None,
        })
    }

    /// `DELETE /v1/uploads/{id}`: forgets the upload, here or (cluster
    /// mode) on the node that has it. `Err`: unknown.
    pub async fn delete_upload(&self, id: &str, principal: &Principal) -> Result<bool, String> {
        if self.inner.uploads.delete(id, principal) {
            return Ok(true);
        }
        Ok(matches!(
            self.ask_others(id, principal, true).await?,
            Some(RemoteUpload::Deleted)
        ))
    }

    async fn ask_others(
        &self,
        id: &str,
        principal: &Principal,
        delete: bool,
    ) -> Result<Option<RemoteUpload>, String> {
        match (UploadId::parse(id), self.inner.share.get()) {
            (Some(id), Some(share)) => {
                share
                    .ask_upload(id, principal.client.clone(), principal.only_token(), delete)
                    .await
            }
            _ => Ok(None),
        }
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.inner.fetcher
    }

    /// Admission's side: pins the uploads `references` name (found by
    /// [`find_references`]) for a task of `principal`.
    pub fn resolve(
        &self,
        principal: &Principal,
        references: Vec<Reference>,
    ) -> Result<TaskInputs, ResolveError> {
        let mut sources = Vec::with_capacity(references.len());
        for reference in references {
            match reference {
                Reference::Upload { json_path, id } => {
                    if let Some((name, file)) = self.inner.uploads.pin(&id, principal) {
                        sources.push(InputSource::Upload {
                            json_path,
                            name,
                            file,
                        });
                        continue;
                    }
                    // Cluster mode: another node may have it.
                    match (UploadId::parse(&id), self.inner.share.get()) {
                        (Some(id), Some(_)) => sources.push(InputSource::Remote {
                            json_path,
                            id,
                            only_token: principal.only_token(),
                        }),
                        _ => return Err(ResolveError::NoSuchUpload { path: json_path }),
                    }
                }
                Reference::Url { json_path, request } => sources.push(InputSource::Url {
                    json_path,
                    request: Arc::new(request),
                }),
            }
        }
        Ok(TaskInputs::new(sources))
    }

    /// Before an attempt runs: every input as a file, fetching URL inputs
    /// and copying uploads stored by another node now (each announced by a
    /// progress event). A fetch that fails fails
    /// the task: `input_fetch_failed` with `details: {path, status?,
    /// reason}`, or `storage_full`.
    pub async fn prepare(
        &self,
        task_id: TaskId,
        attempt: u32,
        inputs: &TaskInputs,
        reporter: &Reporter,
    ) -> Result<Vec<InputFile>, TaskFailure> {
        let to_fetch = inputs
            .iter()
            .filter(|s| !matches!(s, InputSource::Upload { .. }))
            .count();
        let mut files = Vec::with_capacity(inputs.len());
        let mut fetched = 0;
        for source in inputs.iter() {
            if !matches!(source, InputSource::Upload { .. }) {
                fetched += 1;
                let progress = Progress {
                    fraction: None,
                    message: Some(format!("fetching input {fetched} of {to_fetch}")),
                    data: serde_json::value::to_raw_value(
                        &serde_json::json!({"input": source.json_path(), "phase": "fetch"}),
                    )
                    .ok(),
                };
                let report = Report::Progress {
                    task_id,
                    attempt,
                    progress,
                };
                let _ = reporter.send(report).await;
            }
            match source {
                InputSource::Upload {
                    json_path,
                    name,
                    file,
                } => files.push(InputFile {
                    json_path: json_path.clone(),
                    name: name.clone(),
                    file: Arc::clone(file),
                }),
                InputSource::Url { json_path, request } => {
                    let file = self
                        .inner
                        .fetcher
                        .fetch(request, json_path)
                        .await
                        .map_err(|e| e.failure(json_path))?;
                    files.push(file);
                }
                InputSource::Stored(upload) => files.push(self.copy_stored(upload).await?),
                // Resolved into `Stored` before the task is queued; a task
                // never runs from its admission's spec in cluster mode.
                InputSource::Remote { json_path, .. } => {
                    return Err(fetch_failure(
                        json_path,
                        None,
                        "the upload was not found on any node",
                        FailureKind::InputFetchFailed,
                    ));
                }
            }
        }
        Ok(files)
    }

    /// An upload from the cluster's store into this node's area, checked
    /// against the size and digest it had when it was admitted (never
    /// more bytes than that size).
    async fn copy_stored(&self, upload: &StoredUpload) -> Result<InputFile, TaskFailure> {
        let json_path = upload.path.as_str();
        let failed =
            |reason: &str| fetch_failure(json_path, None, reason, FailureKind::InputFetchFailed);
        let mismatch = "the stored upload does not match the one submitted";
        let Some(share) = self.inner.share.get() else {
            return Err(failed("uploads are not shared on this node"));
        };
        let reader = match share.get(upload.object.clone()).await {
            Ok(Some(reader)) => reader,
            Ok(None) => return Err(failed("the upload is no longer in the cluster's store")),
            Err(e) => return Err(failed(&format!("the cluster's store cannot be read: {e}"))),
        };
        let file = self
            .inner
            .fetcher
            .store_reader(reader, upload.content_type.clone(), upload.size)
            .await
            .map_err(|e| match e {
                FetchError::StorageFull { .. } => {
                    fetch_failure(json_path, None, &e.to_string(), FailureKind::StorageFull)
                }
                FetchError::TooLarge { .. } => failed(mismatch),
                other => failed(&other.to_string()),
            })?;
        if file.size() != upload.size || file.sha256() != upload.sha256 {
            return Err(failed(mismatch));
        }
        Ok(InputFile {
            json_path: upload.path.clone(),
            name: upload.name.clone(),
            file: Arc::new(file),
        })
    }

    /// Unpacks a zip input into a fresh directory of the area, under
    /// `limits` and the quota (blocking IO: call it from blocking work).
    /// The directory and its files go when the returned value drops.
    pub fn unpack_zip(
        &self,
        file: &InputFile,
        limits: &archive::ArchiveLimits,
    ) -> Result<UnpackedDir, archive::ArchiveError> {
        let dir = tempfile::Builder::new()
            .prefix("x-")
            .tempdir_in(&self.inner.dir)?;
        let mut unpacked = UnpackedDir {
            dir: Some(dir),
            charged: 0,
            quota: Arc::clone(&self.inner.quota),
            files: Vec::new(),
        };
        let quota = Arc::clone(&self.inner.quota);
        let mut charged = 0u64;
        let result = archive::unpack(&file.disk_path(), unpacked.path(), limits, &mut |bytes| {
            let ok = quota.reserve(bytes).is_ok();
            if ok {
                charged += bytes;
            }
            ok
        });
        unpacked.charged = charged;
        unpacked.files = result?;
        Ok(unpacked)
    }

    /// Shares input files as download links for an external worker's
    /// attempt (`GET /v1/inputs/{token}`); the links die with the returned
    /// value (drop it when the attempt ends).
    pub fn share(&self, files: &[InputFile]) -> Result<SharedInputs, std::io::Error> {
        let mut shared = Vec::with_capacity(files.len());
        for file in files {
            let token = random_bytes::<16>().map_err(|e| std::io::Error::other(e.to_string()))?;
            self.inner.links.insert(
                token,
                Shared {
                    name: file.name.clone(),
                    file: Arc::clone(&file.file),
                },
            );
            shared.push((token, file.clone()));
        }
        Ok(SharedInputs {
            inputs: self.clone(),
            shared,
        })
    }

    /// The file a link's token points at, while its attempt runs.
    pub fn shared(&self, token: &str) -> Option<SharedFile> {
        let token = parse_token(token)?;
        let entry = self.inner.links.get(&token)?;
        Some(SharedFile {
            dir: entry.file.dir.clone(),
            disk_name: entry.file.disk_name.clone(),
            name: entry.name.clone(),
            content_type: entry.file.content_type.clone(),
        })
    }
}

fn parse_token(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// The input files of one external worker's attempt, shared as links.
/// Dropping it revokes the links.
pub struct SharedInputs {
    inputs: Inputs,
    shared: Vec<([u8; 16], InputFile)>,
}

/// An unpacked archive: its directory and files, removed (and their bytes
/// given back to the quota) on drop.
pub struct UnpackedDir {
    dir: Option<tempfile::TempDir>,
    charged: u64,
    quota: Arc<Quota>,
    files: Vec<archive::Unpacked>,
}

impl UnpackedDir {
    pub fn path(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .map_or(std::path::Path::new(""), tempfile::TempDir::path)
    }

    /// The files, in archive order.
    pub fn files(&self) -> &[archive::Unpacked] {
        &self.files
    }
}

impl fmt::Debug for UnpackedDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnpackedDir")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl Drop for UnpackedDir {
    fn drop(&mut self) {
        let dir = self.dir.take();
        let quota = Arc::clone(&self.quota);
        let charged = self.charged;
        let remove = move || {
            drop(dir);
            quota.release(charged);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// One entry of `assign.inputs` (`docs/protocol.md` §19), owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedEntry {
    pub json_path: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    /// `/v1/inputs/<token>` (absolute when `public_url` is set).
    pub url: String,
    /// The file on the server's disk, for managed workers (same host).
    pub local_path: PathBuf,
}

impl SharedInputs {
    /// The entries of `assign.inputs`; `base` is `public_url` or "".
    pub fn entries(&self, base: &str) -> Vec<SharedEntry> {
        self.shared
            .iter()
            .map(|(token, file)| SharedEntry {
                json_path: file.json_path.clone(),
                name: file.name.clone(),
                size: file.size(),
                sha256: file.sha256().to_owned(),
                content_type: file.content_type().to_owned(),
                url: format!("{base}/v1/inputs/{}", hex(token)),
                local_path: file.disk_path(),
            })
            .collect()
    }
}

impl fmt::Debug for SharedInputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedInputs")
            .field("files", &self.shared.len())
            .finish_non_exhaustive()
    }
}

impl Drop for SharedInputs {
    fn drop(&mut self) {
        for (token, _) in &self.shared {
            self.inputs.inner.links.remove(token);
        }
    }
}

/// The failure of a task whose input could not be fetched.
pub(crate) fn fetch_failure(
    json_path: &str,
    status: Option<u16>,
    reason: &str,
    kind: FailureKind,
) -> TaskFailure {
    let mut failure = TaskFailure::new(
        kind,
        format!("the input at {json_path} could not be fetched: {reason}"),
    );
    let mut details = serde_json::json!({"path": json_path, "reason": reason});
    if let Some(status) = status {
        details["status"] = serde_json::json!(status);
    }
    failure.details = Some(details);
    failure
}
