//! What the nodes share besides tasks: browser tokens' grants (KV
//! `tw_tokens`, by the token's digest), published files (object store
//! `tw_files`, by the digest of the download token) and the uploads of
//! queued tasks (object store `tw_inputs`, written by `Link::submit`, or
//! here for a submit another node received that names an upload of this
//! node's: the asks on `tw.node.<node>.upload`, which also answer `GET` and
//! `DELETE` of an upload received elsewhere).
//!
//! A grant is written before `POST /v1/tokens` answers and every node
//! follows the bucket, so a token minted on one node is accepted on all;
//! a node asked about a token it has not heard of yet reads the bucket
//! once. A file is stored before its task's terminal event is written, so
//! its link works on every node and outlives the node that made it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::object_store::ObjectMetadata;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::codec::{UploadAnswer, UploadAsk, UploadOp, is_input_object};
use super::link::Link;
use super::serve::Cluster;
use crate::artifacts::{FileShare, SharedFile, SharedFound, SharedReader};
use crate::auth::{SharedGrant, Tokens};
use crate::inputs::{RemoteUpload, UploadId, Uploads};
use crate::task::PublishedFile;

/// How long one read or write of a grant may take before the caller is
/// told the cluster is unavailable.
const GRANT_TIMEOUT: Duration = Duration::from_secs(3);

impl Cluster {
    /// Shares a grant minted on this node (waits for JetStream's ack).
    pub async fn share_token(&self, key: &str, grant: &SharedGrant) -> Result<(), String> {
        let link = self.link();
        let Some(ready) = link.ready.get() else {
            return Err("the cluster is not reachable".to_owned());
        };
        let bytes = serde_json::to_vec(grant).map_err(|e| e.to_string())?;
        match tokio::time::timeout(GRANT_TIMEOUT, ready.tokens.put(key, Bytes::from(bytes))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the cluster did not answer in time".to_owned()),
        }
    }

    /// Withdraws a revoked grant from every node.
    pub async fn unshare_token(&self, key: &str) {
        let link = self.link();
        if let Some(ready) = link.ready.get()
            && let Err(e) = ready.tokens.delete(key).await
        {
            tracing::warn!(error = %e, "a revocation could not be shared with the cluster");
        }
    }

    /// A grant another node minted, read from the bucket (a token used
    /// here before this node's follower has seen it).
    pub async fn fetch_token(&self, key: &str) -> Option<SharedGrant> {
        let link = self.link();
        let ready = link.ready.get()?;
        let bytes = tokio::time::timeout(GRANT_TIMEOUT, ready.tokens.get(key))
            .await
            .ok()?
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Answers other nodes' asks for this node's uploads (a submit received
    /// elsewhere that names one) until `stop`.
    pub fn serve_uploads(
        &self,
        uploads: Uploads,
        tracker: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) {
        tracker.spawn(answer_upload_asks(self.link(), uploads, stop));
    }

    /// Follows the grants of every node into `tokens` until `stop`.
    pub fn follow_tokens(
        &self,
        tokens: Arc<Tokens>,
        tracker: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) {
        tracker.spawn(follow(self.link(), tokens, stop));
    }
}

async fn follow(link: Arc<Link>, tokens: Arc<Tokens>, stop: CancellationToken) {
    let ready = tokio::select! {
        () = stop.cancelled() => return,
        ready = link.ready() => ready,
    };
    loop {
        // The last entry of every key first (deletes included), then changes:
        // after a reconnection the whole state is read again.
        if let Ok(mut watch) = ready.tokens.watch_with_history(">").await {
            loop {
                let entry = tokio::select! {
                    () = stop.cancelled() => return,
                    entry = watch.next() => entry,
                };
                let Some(Ok(entry)) = entry else { break };
                match entry.operation {
                    kv::Operation::Put => {
                        if let Ok(grant) = serde_json::from_slice::<SharedGrant>(&entry.value) {
                            tokens.adopt(&entry.key, &grant);
                        }
                    }
                    kv::Operation::Delete | kv::Operation::Purge => tokens.forget(&entry.key),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Uploads stored for other nodes at once; further asks wait their turn
/// (at most [`super::serve::REQUESTS_AT_ONCE`] open: one more is answered
/// `Failed`, and the asking node refuses its submit `unavailable`, with
/// `retry_after_ms`).
const UPLOAD_COPIES: usize = 8;

async fn answer_upload_asks(link: Arc<Link>, uploads: Uploads, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => return,
        _ = link.ready() => {}
    }
    let copies = Arc::new(tokio::sync::Semaphore::new(UPLOAD_COPIES));
    let busy = encode(&UploadAnswer::Failed {
        reason: "too many asks about uploads at once".to_owned(),
    });
    let asker = Arc::clone(&link);
    super::serve::answer_requests(link, "upload", busy, stop, move |ask| {
        let (link, uploads, copies) = (Arc::clone(&asker), uploads.clone(), Arc::clone(&copies));
        async move { encode(&answer_ask(link.ready().await, &uploads, &copies, &ask).await) }
    })
    .await;
}

fn encode(answer: &UploadAnswer) -> Bytes {
    Bytes::from(serde_json::to_vec(answer).unwrap_or_default())
}

/// Answers another node's ask about one of this node's uploads: stores it
/// in `tw_inputs` for a submit received there, or tells what it is, or
/// forgets it; `Absent` unless it is here and the caller's.
async fn answer_ask(
    ready: &super::link::Ready,
    uploads: &Uploads,
    copies: &tokio::sync::Semaphore,
    ask: &[u8],
) -> UploadAnswer {
    let Ok(ask) = serde_json::from_slice::<UploadAsk>(ask) else {
        return UploadAnswer::Failed {
            reason: "unreadable ask".to_owned(),
        };
    };
    let Some(id) = UploadId::parse(&ask.upload) else {
        return UploadAnswer::Absent;
    };
    let client = crate::task::ClientId::new(&ask.client);
    let object = match ask.op {
        UploadOp::Store { object } if is_input_object(&object) => object,
        UploadOp::Store { .. } => {
            return UploadAnswer::Failed {
                reason: "not an input object".to_owned(),
            };
        }
        UploadOp::Info => {
            return uploads
                .info_for(id, &client, ask.only_token)
                .map_or(UploadAnswer::Absent, found);
        }
        UploadOp::Delete => {
            return if uploads.delete_for(id, &client, ask.only_token) {
                UploadAnswer::Deleted
            } else {
                UploadAnswer::Absent
            };
        }
    };
    let Some((info, file)) = uploads.pin_for(id, &client, ask.only_token) else {
        return UploadAnswer::Absent;
    };
    let Ok(_copy) = copies.acquire().await else {
        return UploadAnswer::Failed {
            reason: "shutting down".to_owned(),
        };
    };
    let stored = async {
        let mut reader = tokio::fs::File::open(file.disk_path())
            .await
            .map_err(|e| e.to_string())?;
        ready
            .inputs
            .put(object.as_str(), &mut reader)
            .await
            .map_err(|e| e.to_string())
    };
    match stored.await {
        Ok(_) => found(info),
        Err(reason) => {
            tracing::warn!(error = %reason, "an upload could not be stored for another node");
            UploadAnswer::Failed { reason }
        }
    }
}

fn found(info: crate::inputs::UploadInfo) -> UploadAnswer {
    UploadAnswer::Found {
        name: info.name,
        size: info.size,
        sha256: info.sha256,
        content_type: info.content_type,
        expires_ms: super::codec::ms(info.expires_at),
    }
}

/// The object name of a file: the digest of its download token (the token
/// itself, the capability, is not written to NATS).
fn object_name(token: &str) -> String {
    crate::auth::token_key(token)
}

fn expires_ms(file: &PublishedFile) -> u64 {
    super::codec::ms(file.expires_at)
}

impl FileShare for Cluster {
    fn put(&self, file: PublishedFile, path: PathBuf) -> BoxFuture<'static, Result<(), String>> {
        let link = self.link();
        Box::pin(async move {
            let Some(ready) = link.ready.get() else {
                return Err("the cluster is not reachable".to_owned());
            };
            let mut reader = tokio::fs::File::open(&path)
                .await
                .map_err(|e| e.to_string())?;
            let metadata = HashMap::from([
                ("file".to_owned(), file.name.clone()),
                ("type".to_owned(), file.content_type.clone()),
                ("expires_ms".to_owned(), expires_ms(&file).to_string()),
            ]);
            let meta = ObjectMetadata {
                name: object_name(&file.token),
                metadata,
                ..Default::default()
            };
            ready
                .files
                .put(meta, &mut reader)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn get(&self, token: String) -> BoxFuture<'static, Result<SharedFound, String>> {
        use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind};
        let link = self.link();
        Box::pin(async move {
            let Some(ready) = link.ready.get() else {
                return Err("the cluster is not reachable".to_owned());
            };
            let name = object_name(&token);
            let info = match ready.files.info(&name).await {
                Ok(info) if !info.deleted => info,
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == InfoErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let field = |key: &str| info.metadata.get(key).cloned().unwrap_or_default();
            let expires_ms: u64 = field("expires_ms").parse().unwrap_or(0);
            let file = SharedFile {
                name: field("file"),
                content_type: field("type"),
                size: info.size as u64,
                expires_at: super::codec::time(expires_ms),
            };
            if file.expires_at <= std::time::SystemTime::now() {
                return Ok(Some((file, None)));
            }
            match ready.files.get(&name).await {
                Ok(object) => Ok(Some((file, Some(Box::new(object) as SharedReader)))),
                Err(e) if e.kind() == GetErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

impl crate::inputs::InputShare for Cluster {
    fn ask_upload(
        &self,
        id: UploadId,
        client: crate::task::ClientId,
        only_token: Option<u64>,
        delete: bool,
    ) -> BoxFuture<'static, Result<Option<RemoteUpload>, String>> {
        let link = self.link();
        Box::pin(async move {
            let ask = UploadAsk {
                upload: id.to_text(),
                client: client.as_str().to_owned(),
                only_token,
                op: if delete {
                    UploadOp::Delete
                } else {
                    UploadOp::Info
                },
            };
            Ok(match link.ask_peers(&ask).await? {
                Some(UploadAnswer::Found {
                    name,
                    size,
                    sha256,
                    content_type,
                    expires_ms,
                }) => Some(RemoteUpload::Found(crate::inputs::UploadInfo {
                    id,
                    name,
                    size,
                    sha256,
                    content_type,
                    expires_at: super::codec::time(expires_ms),
                })),
                Some(UploadAnswer::Deleted) => Some(RemoteUpload::Deleted),
                _ => None,
            })
        })
    }

    fn get(&self, object: String) -> BoxFuture<'static, Result<Option<SharedReader>, String>> {
        use async_nats::jetstream::object_store::GetErrorKind;
        let link = self.link();
        Box::pin(async move {
            let Some(ready) = link.ready.get() else {
                return Err("the cluster is not reachable".to_owned());
            };
            match ready.inputs.get(&object).await {
                Ok(object) => Ok(Some(Box::new(object) as SharedReader)),
                Err(e) if e.kind() == GetErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
