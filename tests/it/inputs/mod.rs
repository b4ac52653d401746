//! File inputs: uploads, URL inputs behind the SSRF guard, archives,
//! `pdf_check` and the sync flow. URL inputs are fetched from real HTTP
//! servers on loopback ([`Origin`]); the servers under test allow
//! `127.0.0.1/32` through `fetch_allow` unless a test says otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod archives;
mod fetch;
pub(crate) mod pdf;
mod sync;
mod uploads;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support::{ALICE, DEADLINE, TestServer};

/// A web server on loopback that URL inputs are fetched from.
pub struct Origin {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Deterministic bytes: byte `i` is `i % 251`.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    taskwire::auth::hex(&sha2::Sha256::digest(bytes))
}

#[derive(serde::Deserialize)]
struct To {
    to: String,
}

impl Origin {
    /// Routes:
    /// - `/file/{n}`: `n` pattern bytes, with a length;
    /// - `/chunked/{n}`: the same without a length, in 64 KiB chunks;
    /// - `/auth`: `401` unless `Authorization: Bearer letmein`;
    /// - `/redirect?to=URL`: `302` to URL; `/loop/{n}`: redirects forever;
    /// - `/slow`: the headers, one byte, then nothing;
    /// - `/headers`: the request's header names, one a line;
    /// - `/status/{code}`; `/pdf/{name}`: a PDF from [`pdf::fixture`].
    pub async fn start() -> Origin {
        let app = Router::new()
            .route(
                "/file/{n}",
                get(|Path(n): Path<usize>| async move { pattern(n) }),
            )
            .route(
                "/chunked/{n}",
                get(|Path(n): Path<usize>| async move {
                    let data = pattern(n);
                    let chunks: Vec<Result<Bytes, std::io::Error>> = data
                        .chunks(64 * 1024)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect();
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/auth",
                get(|headers: HeaderMap| async move {
                    match headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                    {
                        Some("Bearer letmein") => (StatusCode::OK, "secret paper").into_response(),
                        _ => (StatusCode::UNAUTHORIZED, "who are you").into_response(),
                    }
                }),
            )
            .route(
                "/redirect",
                get(|Query(to): Query<To>| async move {
                    (StatusCode::FOUND, [(header::LOCATION, to.to)]).into_response()
                }),
            )
            .route(
                "/loop/{n}",
                get(|Path(n): Path<u32>| async move {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, format!("/loop/{}", n + 1))],
                    )
                        .into_response()
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    let first = futures::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
                    });
                    Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
                }),
            )
            .route(
                "/headers",
                get(|headers: HeaderMap| async move {
                    let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
                    names.sort_unstable();
                    names.join("\n")
                }),
            )
            .route(
                "/status/{code}",
                get(|Path(code): Path<u16>| async move {
                    StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
                }),
            )
            .route(
                "/pdf/{name}",
                get(|Path(name): Path<String>| async move {
                    match pdf::fixture(name.trim_end_matches(".pdf")) {
                        Some(bytes) => {
                            ([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Origin {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The server under test, allowed to fetch from loopback.
pub async fn server(change: impl FnOnce(&mut taskwire::config::Config)) -> TestServer {
    TestServer::with_tasks(
        |config| {
            config.inputs.fetch_allow = vec!["127.0.0.1/32".parse().unwrap()];
            change(config);
        },
        vec![
            Arc::new(InputsEcho),
            Arc::new(taskwire::catalog::sync_example::SyncExample),
        ],
    )
    .await
}

/// Uploads `bytes` as `name` over REST.
pub async fn upload(
    server: &TestServer,
    key: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    TestServer::http()
        .post(server.url(&format!("/v1/uploads?name={name}")))
        .bearer_auth(key)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Uploads and returns the upload's id.
pub async fn upload_ok(server: &TestServer, key: &str, name: &str, bytes: Vec<u8>) -> String {
    let response = upload(server, key, name, bytes).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["upload_id"].as_str().unwrap().to_owned()
}

/// Submits over the WebSocket and returns every event to the terminal one.
pub async fn run(server: &TestServer, task: &str, input: Value) -> Vec<Value> {
    let mut ws = server.ws(ALICE).await;
    let reply = ws.submit(task, input, json!({})).await;
    assert_eq!(reply["type"], "accepted", "{reply}");
    let id = reply["task_id"].as_str().unwrap().to_owned();
    tokio::time::timeout(DEADLINE * 3, ws.events_until_end(&id))
        .await
        .expect("the task ended in time")
}

/// Files left in the server's input and upload areas.
pub fn left_behind(server: &TestServer) -> Vec<String> {
    let mut left = Vec::new();
    for dir in ["inputs", "uploads"] {
        let path = server.temp.path().join("area").join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten() {
                left.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    left
}

/// Waits until nothing is left in the input and upload areas.
pub async fn nothing_left(server: &TestServer) {
    crate::support::eventually("nothing left in the input areas", || async {
        left_behind(server).is_empty()
    })
    .await;
}

/// The `taskwire_temp_bytes` gauge.
pub async fn temp_bytes(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find(|l| l.starts_with("taskwire_temp_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A test task: completes with what it sees of its input files.
pub struct InputsEcho;

impl taskwire::catalog::TaskHandler for InputsEcho {
    fn name(&self) -> &'static str {
        "inputs_echo"
    }
    fn description(&self) -> &'static str {
        "test task: lists its input files"
    }
    fn input_schema(&self) -> Value {
        json!({})
    }
    fn validate(
        &self,
        _input: &serde_json::value::RawValue,
    ) -> Result<(), taskwire::catalog::InvalidInput> {
        Ok(())
    }
    fn run(
        &self,
        _input: Box<serde_json::value::RawValue>,
        ctx: taskwire::catalog::TaskCtx,
    ) -> futures::future::BoxFuture<
        'static,
        Result<taskwire::catalog::TaskOutput, taskwire::catalog::TaskError>,
    > {
        Box::pin(async move {
            let files = ctx.inputs().to_vec();
            let listed = ctx
                .spawn_blocking(move || {
                    files
                        .iter()
                        .map(|f| {
                            let bytes = std::fs::read(f.disk_path()).unwrap_or_default();
                            json!({
                                "path": f.json_path(), "name": f.name(), "size": f.size(),
                                "sha256": f.sha256(), "content_type": f.content_type(),
                                "read": bytes.len(), "read_sha256": sha256_hex(&bytes),
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .await?;
            taskwire::catalog::TaskOutput::json(&json!({ "inputs": listed }))
        })
    }
}

/// A duration for short fetch timeouts in tests.
pub const SHORT: Duration = Duration::from_secs(1);
