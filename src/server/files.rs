//! `GET|HEAD /files/{token}/{name}`: downloads of published files.
//!
//! The token is the capability (no API key). The file on disk is named by
//! its token, so the URL's name never becomes a path; tower-http's
//! `ServeDir` does ranges, `ETag` and `If-None-Match`, over a backend that
//! refuses symlinks (`O_NOFOLLOW`, `lstat`). This module adds the headers
//! that make a download safe to open from any page.

use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, File as BackendFile};

use super::AppState;
use crate::artifacts::Lookup;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/files/{token}/{name}", get(download))
}

async fn download(
    State(state): State<AppState>,
    Path((token, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let file = match state.artifacts.find(&token, &name).await {
        Lookup::Found(file) => file,
        Lookup::Expired => return (StatusCode::GONE, "this link has expired\n").into_response(),
        Lookup::Missing => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    serve_file(
        state.artifacts.served_dir(),
        &file.disk_name,
        &file.name,
        &file.content_type,
        request,
    )
    .await
}

/// Serves `dir/disk_name` as a download named `name` (ranges, `ETag`,
/// `304`, no symlink, the safe headers). A file gone meanwhile is `410`.
pub(super) async fn serve_file(
    dir: &std::path::Path,
    disk_name: &str,
    name: &str,
    content_type: &str,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(uri) = Uri::builder()
        .path_and_query(format!("/{disk_name}"))
        .build()
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    parts.uri = uri;
    let serve = ServeDir::with_backend(dir, NoFollow)
        .append_index_html_on_directories(false)
        .redirect_to_trailing_slash(false);
    let response = match serve.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    if parts.status == StatusCode::NOT_FOUND {
        // Expired between the lookup and the open.
        return (StatusCode::GONE, "this link has expired\n").into_response();
    }
    let headers = &mut parts.headers;
    if parts.status.is_success() || parts.status == StatusCode::NOT_MODIFIED {
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let Ok(value) = HeaderValue::from_str(&content_disposition(name)) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Response::from_parts(parts, Body::new(body))
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<encoded>`
/// (RFC 6266 and RFC 8187).
pub(super) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        super::encode::percent_encode(name)
    )
}

/// Opens a file for reading without following a symlink (blocking).
pub(super) fn open_no_follow(path: &std::path::Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(symlink_is_missing)
}

/// `O_NOFOLLOW` on a symlink fails with `ELOOP`: to a client, that file
/// does not exist.
fn symlink_is_missing(error: io::Error) -> io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(io::ErrorKind::NotFound, "symlinks are not served")
    } else {
        error
    }
}

/// A `ServeDir` backend that never follows a symlink.
#[derive(Clone, Debug)]
struct NoFollow;

#[derive(Debug)]
struct NoFollowFile(tokio::fs::File);

impl Backend for NoFollow {
    type File = NoFollowFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Pin<Box<dyn Future<Output = io::Result<NoFollowFile>> + Send>>;
    type MetadataFuture = Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        Box::pin(async move {
            let file = tokio::task::spawn_blocking(move || open_no_follow(&path))
                .await
                .map_err(io::Error::other)??;
            Ok(NoFollowFile(tokio::fs::File::from_std(file)))
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        Box::pin(async move {
            let metadata = tokio::fs::symlink_metadata(&path).await?;
            if metadata.file_type().is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "symlinks are not served",
                ));
            }
            Ok(metadata)
        })
    }
}

impl AsyncRead for NoFollowFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncSeek for NoFollowFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.0).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.0).poll_complete(cx)
    }
}

impl BackendFile for NoFollowFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> =
        Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send + 'a>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        Box::pin(async move { self.0.metadata().await })
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn disposition_has_ascii_fallback_and_utf8() {
        let value = content_disposition("Bücher \"neu\".odt");
        assert_eq!(
            value,
            "attachment; filename=\"B_cher _neu_.odt\"; filename*=UTF-8''B%C3%BCcher%20%22neu%22.odt"
        );
    }
}
