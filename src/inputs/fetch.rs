//! Fetching URL inputs: reqwest over rustls, behind the SSRF guard.
//!
//! - Only `http` and `https`; no proxy from the environment (a proxy would
//!   resolve names itself, past the guard).
//! - Names are resolved by [`GuardedResolver`]: once per connection, and the
//!   connection goes only to addresses the guard allows. URLs with an
//!   address for a host are checked here before each request.
//! - Redirects are followed here, at most [`MAX_REDIRECTS`], each target
//!   checked like the first URL. The reference's headers go only to the
//!   origin (scheme, host, port) the reference named: a redirect elsewhere
//!   is followed without them.
//! - No content decoding (no `Accept-Encoding`): the bytes are stored as
//!   sent, at most `max_fetch_bytes`, counted in `max_temp_bytes` as they
//!   arrive, hashed on the way.
//! - The whole fetch (connecting, every redirect, the body) has
//!   `fetch_timeout`.
//!
//! Errors never carry the URL (its query may hold a token) or a header.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::guard::{ForbiddenHost, Guard, GuardedResolver};
use super::uploads::clean_content_type;
use super::{HeldFile, InputFile, InputsError, UrlRequest, disk_name, fetch_failure};
use crate::artifacts::{MIN_FILE_CHARGE, Quota, clean_name};
use crate::auth::hex;
use crate::config::InputsConfig;
use crate::task::{FailureKind, TaskFailure};

/// Most redirects one fetch follows.
pub const MAX_REDIRECTS: u32 = 5;
/// Longest time to open a connection (within `fetch_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL input could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or a redirect target is not allowed (scheme, address).
    #[error("{0}")]
    Refused(String),
    #[error("the server answered {status} {text}")]
    Status { status: u16, text: &'static str },
    #[error("the file is larger than max_fetch_bytes ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("no complete answer within fetch_timeout_s ({secs} s)")]
    Timeout { secs: u64 },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("a redirect without a usable Location")]
    BadRedirect,
    #[error("{0}")]
    Network(String),
    #[error("the temporary area is full (max_temp_bytes = {max})")]
    StorageFull { max: u64 },
    #[error("cannot store the file: {0}")]
    Io(#[from] std::io::Error),
}

impl FetchError {
    /// The HTTP status the server answered, if that is why.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The task's failure: `storage_full` when the quota ran out,
    /// `input_fetch_failed` otherwise (`details: {path, reason, status?}`).
    pub fn failure(&self, json_path: &str) -> TaskFailure {
        let kind = match self {
            FetchError::StorageFull { .. } => FailureKind::StorageFull,
            _ => FailureKind::InputFetchFailed,
        };
        fetch_failure(json_path, self.status(), &self.to_string(), kind)
    }
}

/// Fetches URL inputs into `temp_dir/inputs/`; cheap to clone.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Guard,
    max_bytes: u64,
    timeout: Duration,
    dir: PathBuf,
    quota: Arc<Quota>,
}

impl Fetcher {
    pub(super) fn new(
        config: &InputsConfig,
        dir: PathBuf,
        quota: Arc<Quota>,
    ) -> Result<Fetcher, InputsError> {
        let guard = Guard::new(config.fetch_allow.clone());
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(GuardedResolver {
                guard: guard.clone(),
            })
            .connect_timeout(CONNECT_TIMEOUT.min(config.fetch_timeout))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("taskwire/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| InputsError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            guard,
            max_bytes: config.max_fetch_bytes,
            timeout: config.fetch_timeout,
            dir,
            quota,
        })
    }

    /// Fetches one URL input into the area.
    pub async fn fetch(
        &self,
        request: &UrlRequest,
        json_path: &str,
    ) -> Result<InputFile, FetchError> {
        let secs = self.timeout.as_secs();
        match tokio::time::timeout(self.timeout, self.fetch_now(request)).await {
            Ok(Ok((file, name))) => Ok(InputFile {
                json_path: json_path.to_owned(),
                name,
                file: Arc::new(file),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FetchError::Timeout { secs }),
        }
    }

    async fn fetch_now(&self, request: &UrlRequest) -> Result<(HeldFile, String), FetchError> {
        let mut url = request.url.clone();
        let origin = url.origin();
        let mut redirects = 0;
        loop {
            self.check(&url)?;
            let mut get = self.client.get(url.clone());
            if url.origin() == origin {
                get = get.headers(request.headers.clone());
            }
            let response = get.send().await.map_err(network_error)?;
            let status = response.status();
            if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects);
                }
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(FetchError::BadRedirect)?;
                url = url.join(location).map_err(|_| FetchError::BadRedirect)?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    text: status.canonical_reason().unwrap_or(""),
                });
            }
            if response
                .content_length()
                .is_some_and(|n| n > self.max_bytes)
            {
                return Err(FetchError::TooLarge {
                    max: self.max_bytes,
                });
            }
            let name = request
                .name
                .as_deref()
                .map(clean_name)
                .unwrap_or_else(|| name_from_url(&url));
            let file = self.store(response).await?;
            return Ok((file, name));
        }
    }

    /// The scheme, and the host when it is an address.
    fn check(&self, url: &reqwest::Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused(
                "only http and https URLs are fetched".to_owned(),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| FetchError::Refused("the URL has no host".to_owned()))?;
        // The URL parser writes address hosts canonically (`[::1]`, and
        // `127.0.0.1` for `2130706433`); names go to the resolver.
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        else {
            return Ok(());
        };
        match self.guard.refuses(ip) {
            None => Ok(()),
            Some(why) => Err(FetchError::Refused(format!(
                "the host is {why}, which URL inputs may not reach"
            ))),
        }
    }

    /// Streams the body into a new file of the area.
    async fn store(&self, response: reqwest::Response) -> Result<HeldFile, FetchError> {
        let content_type = clean_content_type(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let body = response.bytes_stream().map(|c| c.map_err(network_error));
        self.store_stream(body, content_type, self.max_bytes).await
    }

    /// Copies `reader` (an upload kept in the cluster's store) into a new
    /// file of the area, at most `max` bytes (past it: `TooLarge`).
    pub(super) async fn store_reader(
        &self,
        reader: crate::artifacts::SharedReader,
        content_type: String,
        max: u64,
    ) -> Result<HeldFile, FetchError> {
        let body = tokio_util::io::ReaderStream::new(reader).map(|c| c.map_err(FetchError::Io));
        self.store_stream(body, content_type, max).await
    }

    /// Writes `body` into a new file of the area: charged to the quota as
    /// it arrives, hashed on the way, at most `max` bytes.
    async fn store_stream(
        &self,
        body: impl futures::Stream<Item = Result<bytes::Bytes, FetchError>>,
        content_type: String,
        max: u64,
    ) -> Result<HeldFile, FetchError> {
        let storage_full = || FetchError::StorageFull {
            max: self.quota.max(),
        };
        self.quota
            .reserve(MIN_FILE_CHARGE)
            .map_err(|_| storage_full())?;
        let mut partial = Partial {
            path: None,
            quota: Arc::clone(&self.quota),
            charged: MIN_FILE_CHARGE,
        };
        let disk = disk_name("f-")?;
        let path = self.dir.join(&disk);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        partial.path = Some(path);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > max {
                return Err(FetchError::TooLarge { max });
            }
            if size > partial.charged {
                let more = size - partial.charged;
                self.quota.reserve(more).map_err(|_| storage_full())?;
                partial.charged += more;
            }
            file.write_all(&chunk).await?;
            hasher.update(&chunk);
        }
        file.flush().await?;
        let charged = partial.disarm();
        Ok(HeldFile {
            dir: self.dir.clone(),
            disk_name: disk,
            size,
            sha256: hex(&hasher.finalize()),
            content_type,
            charged,
            quota: Arc::clone(&self.quota),
        })
    }
}

/// A file being fetched: removed, and its charge given back, unless it
/// became a [`HeldFile`] (a failed, cancelled or timed-out fetch leaves
/// nothing behind).
struct Partial {
    path: Option<PathBuf>,
    quota: Arc<Quota>,
    charged: u64,
}

impl Partial {
    fn disarm(&mut self) -> u64 {
        self.path = None;
        std::mem::take(&mut self.charged)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let path = self.path.take();
        let quota = Arc::clone(&self.quota);
        let charged = self.charged;
        let remove = move || {
            if let Some(path) = path {
                let _ = std::fs::remove_file(path);
            }
            quota.release(charged);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// A reqwest error as a reason a client may read: without the URL, with
/// the causes (the guard's refusal among them).
fn network_error(error: reqwest::Error) -> FetchError {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = error.source();
    while let Some(cause) = source {
        if let Some(forbidden) = cause.downcast_ref::<ForbiddenHost>() {
            return FetchError::Refused(forbidden.to_string());
        }
        source = cause.source();
    }
    let timeout = error.is_timeout();
    let connect = error.is_connect();
    let error = error.without_url();
    let mut text = if connect {
        "cannot connect to the host".to_owned()
    } else if timeout {
        "the connection timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source: Option<&(dyn Error + 'static)> = error.source();
    let mut depth = 0;
    while let Some(cause) = source
        && depth < 4
    {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
        depth += 1;
    }
    FetchError::Network(text)
}

/// The URL's last path segment, decoded and cleaned, or `download`.
fn name_from_url(url: &reqwest::Url) -> String {
    let segment = url
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(percent_decode)
        .unwrap_or_default();
    if segment.is_empty() {
        "download".to_owned()
    } else {
        clean_name(&segment)
    }
}

/// `%XX` escapes decoded; invalid UTF-8 replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        let name = |u: &str| name_from_url(&reqwest::Url::parse(u).expect("url"));
        assert_eq!(name("https://h/papers/MOPB001.pdf"), "MOPB001.pdf");
        assert_eq!(name("https://h/a/b/"), "b");
        assert_eq!(name("https://h/"), "download");
        assert_eq!(
            name("https://h/Z%C3%BCrich%20paper.pdf?x=1"),
            "Zürich paper.pdf"
        );
        assert_eq!(name("https://h/..%2F..%2Fetc%2Fpasswd"), "etcpasswd");
    }
}
