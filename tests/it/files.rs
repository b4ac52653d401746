//! File outputs: links, headers, ranges, expiry, quota, stream delivery
//! (PROTOCOL.md "File", "Downloads", "Stream delivery"; issue 4).
//!
//! Every test runs its own server with its own temp area: published files
//! in `<temp>/area/files/`, running tasks' files in `<temp>/area/staging/`.
//! Files are real, written by the built-in `blob` task, and fetched with a
//! plain HTTP client that never sends an API key (the token is the
//! capability).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use taskwire::auth::hex;

use crate::support::{ALICE, Frame, TestServer, Ws, eventually};

/// Published files of `server`.
fn published_dir(server: &TestServer) -> PathBuf {
    server.temp.path().join("area").join("files")
}

/// Files of running tasks of `server`.
fn staging_dir(server: &TestServer) -> PathBuf {
    server.temp.path().join("area").join("staging")
}

/// The names in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    hex(&digest)
}

/// Submits `blob` with `options`; returns the task id.
async fn submit_blob(ws: &mut Ws, size: u64, name: &str, options: Value) -> String {
    let reply = ws
        .submit("blob", json!({"size": size, "name": name}), options)
        .await;
    assert_eq!(reply["type"], "accepted", "{reply}");
    reply["task_id"].as_str().unwrap().to_owned()
}

/// Runs `blob` to its end; returns the terminal event.
async fn blob(ws: &mut Ws, size: u64, name: &str, options: Value) -> Value {
    let task_id = submit_blob(ws, size, name, options).await;
    ws.terminal(&task_id).await
}

/// Runs `blob`, which must complete; returns its one File object.
async fn blob_file(ws: &mut Ws, size: u64, name: &str) -> Value {
    let end = blob(ws, size, name, json!({})).await;
    only_file(&end)
}

/// The one file of a `completed` event.
fn only_file(completed: &Value) -> Value {
    assert_eq!(completed["type"], "completed", "{completed}");
    let files = completed["files"]
        .as_array()
        .expect("completed.files is a list");
    assert_eq!(files.len(), 1, "{completed}");
    files[0].clone()
}

fn url_of(file: &Value) -> &str {
    file["url"].as_str().expect("file.url is a string")
}

/// The token in a link `.../files/{token}/{name}`.
fn token_of(url: &str) -> String {
    let (_, rest) = url.split_once("/files/").expect("a /files/ link");
    let (token, _) = rest.split_once('/').expect("/files/{token}/{name}");
    token.to_owned()
}

/// A request with the given extra headers; never an API key.
async fn fetch(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = TestServer::http().request(method, server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn get(server: &TestServer, path: &str) -> Response {
    fetch(server, reqwest::Method::GET, path, &[]).await
}

async fn get_status(server: &TestServer, path: &str) -> StatusCode {
    get(server, path).await.status()
}

fn header_text(response: &Response, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The headers that make every answer of the download route safe.
fn assert_safe_headers(response: &Response) {
    assert_eq!(
        header_text(response, header::CACHE_CONTROL),
        "private, no-store"
    );
    assert_eq!(
        header_text(response, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
    assert_eq!(
        header_text(response, header::CONTENT_SECURITY_POLICY),
        "sandbox"
    );
}

/// `taskwire_temp_bytes` from `GET /metrics`.
async fn temp_bytes(server: &TestServer) -> u64 {
    let text = server.metrics().await;
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("taskwire_temp_bytes "))
        .unwrap_or_else(|| panic!("no taskwire_temp_bytes in /metrics:\n{text}"));
    line.trim().parse().unwrap()
}

/// Decodes `%XX` escapes (RFC 8187 `value-chars`).
fn percent_decode(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let pair = std::str::from_utf8(&tail[..2]).unwrap();
            bytes.push(u8::from_str_radix(pair, 16).unwrap());
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).unwrap()
}

fn parse_time(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

#[tokio::test]
async fn completed_lists_the_file_and_its_bytes_match() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let size = 300_000u64;
    let task_id = submit_blob(&mut ws, size, "data.bin", json!({})).await;
    let completed = ws.terminal(&task_id).await;
    assert_eq!(completed["result"], json!({"size": size}), "{completed}");
    let file = only_file(&completed);

    assert_eq!(file["name"], "data.bin");
    assert_eq!(file["size"], size);
    assert_eq!(file["content_type"], "application/octet-stream");
    let sha = file["sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64
            && sha
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{sha}"
    );
    let url = url_of(&file);
    let token = token_of(url);
    assert_eq!(
        url,
        format!("/files/{token}/data.bin"),
        "a path without public_url"
    );
    assert!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "128 bits: {token}"
    );
    let left = parse_time(file["expires_at"].as_str().unwrap()) - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(59) && left <= time::Duration::hours(1),
        "expires_at about file_ttl (1 h) from now, not {left}"
    );

    // Published on disk under its token, not its name.
    assert_eq!(entries(&published_dir(&server)), vec![token.clone()]);
    assert_eq!(
        std::fs::metadata(published_dir(&server).join(&token))
            .unwrap()
            .len(),
        size
    );

    // The REST snapshot lists the same file.
    let (status, snapshot) = server
        .get_json(ALICE, &format!("/v1/tasks/{task_id}"))
        .await;
    assert_eq!(status, 200, "{snapshot}");
    assert_eq!(snapshot["files"], json!([file]), "{snapshot}");

    // No API key: the token is the capability.
    let response = get(&server, url).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(sha256_hex(&bytes), sha, "sha256 of the downloaded bytes");

    // Same input, same bytes; a new file, a new token.
    let again = blob_file(&mut ws, size, "data.bin").await;
    assert_eq!(again["sha256"], sha);
    assert_ne!(token_of(url_of(&again)), token);
    server.stop().await;
}

#[tokio::test]
async fn download_headers() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let name = "Zürich – 会議.bin";
    let file = blob_file(&mut ws, 1000, name).await;
    assert_eq!(file["name"], name, "a UTF-8 name is kept");
    let url = url_of(&file);
    assert!(url.is_ascii(), "the link is percent-encoded: {url}");

    let response = get(&server, url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_text(&response, header::CONTENT_LENGTH), "1000");
    assert_eq!(
        header_text(&response, header::CONTENT_TYPE),
        "application/octet-stream"
    );
    assert_eq!(header_text(&response, header::ACCEPT_RANGES), "bytes");
    assert_safe_headers(&response);
    let etag = header_text(&response, header::ETAG).to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );

    // RFC 6266: attachment, an ASCII fallback and the exact UTF-8 name.
    let disposition = header_text(&response, header::CONTENT_DISPOSITION).to_owned();
    let params: Vec<&str> = disposition.split("; ").collect();
    assert_eq!(params.first(), Some(&"attachment"), "{disposition}");
    let fallback = params
        .iter()
        .find_map(|p| p.strip_prefix("filename="))
        .unwrap_or_else(|| panic!("no filename in {disposition}"));
    assert!(
        fallback.len() > 2 && fallback.starts_with('"') && fallback.ends_with('"'),
        "{disposition}"
    );
    let inner = &fallback[1..fallback.len() - 1];
    assert!(
        inner
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'),
        "{disposition}"
    );
    assert!(inner.ends_with(".bin"), "{disposition}");
    let encoded = params
        .iter()
        .find_map(|p| p.strip_prefix("filename*=UTF-8''"))
        .unwrap_or_else(|| panic!("no filename* in {disposition}"));
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%!#$&+-.^_`|~".contains(&b)),
        "filename* is attr-chars and %XX only: {encoded}"
    );
    assert_eq!(percent_decode(encoded), name);
    assert_eq!(response.bytes().await.unwrap().len(), 1000);

    // HEAD: the same headers, no body.
    let head = fetch(&server, reqwest::Method::HEAD, url, &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header_text(&head, header::CONTENT_LENGTH), "1000");
    assert_eq!(
        header_text(&head, header::CONTENT_TYPE),
        "application/octet-stream"
    );
    assert_eq!(header_text(&head, header::CONTENT_DISPOSITION), disposition);
    assert_eq!(header_text(&head, header::ACCEPT_RANGES), "bytes");
    assert_eq!(header_text(&head, header::ETAG), etag);
    assert_safe_headers(&head);
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");

    // If-None-Match with the ETag: 304, no body; with another: 200.
    let cached = fetch(
        &server,
        reqwest::Method::GET,
        url,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_safe_headers(&cached);
    assert!(cached.bytes().await.unwrap().is_empty(), "304 has no body");
    let other = fetch(
        &server,
        reqwest::Method::GET,
        url,
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(other.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn ranges() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let size = 300_000usize;
    let file = blob_file(&mut ws, size as u64, "ranged.bin").await;
    let url = url_of(&file);
    let whole = get(&server, url).await.bytes().await.unwrap();
    assert_eq!(whole.len(), size);

    let cases = [
        ("bytes=0-99", 0, 100),                  // start
        ("bytes=-100", size - 100, size),        // suffix
        ("bytes=100-", 100, size),               // open-ended
        ("bytes=299990-", size - 10, size),      // open-ended, near the end
        ("bytes=1000-1999", 1000, 2000),         // middle
        ("bytes=299999-400000", size - 1, size), // past the end: cut at it
    ];
    for (range, start, end) in cases {
        let response = fetch(&server, reqwest::Method::GET, url, &[("range", range)]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_text(&response, header::CONTENT_RANGE),
            format!("bytes {start}-{}/{size}", end - 1),
            "{range}"
        );
        assert_eq!(
            header_text(&response, header::CONTENT_LENGTH),
            (end - start).to_string(),
            "{range}"
        );
        assert_safe_headers(&response);
        let body = response.bytes().await.unwrap();
        assert!(body[..] == whole[start..end], "{range}: wrong bytes");
    }

    let response = fetch(
        &server,
        reqwest::Method::GET,
        url,
        &[("range", "bytes=999999999-")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header_text(&response, header::CONTENT_RANGE),
        format!("bytes */{size}")
    );
    assert_safe_headers(&response);
    server.stop().await;
}

#[tokio::test]
async fn forged_links_are_not_found() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let file = blob_file(&mut ws, 1000, "real.bin").await;
    let token = token_of(url_of(&file));
    assert_eq!(get_status(&server, url_of(&file)).await, StatusCode::OK);

    let random = sha256_hex(b"not a token")[..32].to_owned();
    let forged = [
        format!("/files/{random}/real.bin"),              // random 32 hex
        format!("/files/{token}/other.bin"),              // real token, wrong name
        format!("/files/{token}/REAL.bin"),               // names are exact
        format!("/files/{token}/..%2F..%2Fetc%2Fpasswd"), // a path as the name
        format!("/files/{}/real.bin", "zz".repeat(16)),   // not hex
        format!("/files/{}/real.bin", &token[..30]),      // too short
        format!("/files/{token}0/real.bin"),              // too long
        format!("/files/{}/real.bin", "é".repeat(16)),    // 32 bytes, not hex
        "/files/..%2Fstaging/real.bin".to_owned(),        // a path as the token
    ];
    for path in forged {
        let response = get(&server, &path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The real link still works, with or without a (wrong) API key.
    let response = TestServer::http()
        .get(server.url(url_of(&file)))
        .bearer_auth("tw_wrong_key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn client_names_never_become_paths() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let file = blob_file(&mut ws, 100, "../../escape\u{7}.bin").await;
    assert_eq!(file["name"], "escape.bin", "the name is cleaned");
    let token = token_of(url_of(&file));
    assert_eq!(entries(&published_dir(&server)), vec![token]);
    assert!(!server.temp.path().join("escape.bin").exists());
    assert!(!server.temp.path().join("area").join("escape.bin").exists());
    assert_eq!(get_status(&server, url_of(&file)).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn symlinks_in_the_served_area_are_not_followed() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await; // the area is ready once the server answers
    let secret = server.temp.path().join("secret.txt");
    std::fs::write(&secret, "not for download").unwrap();

    // A link planted under a token nobody was given.
    let planted = sha256_hex(b"planted")[..32].to_owned();
    std::os::unix::fs::symlink(&secret, published_dir(&server).join(&planted)).unwrap();
    let response = get(&server, &format!("/files/{planted}/secret.txt")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A published file swapped for a link: its link must not serve the target.
    let file = blob_file(&mut ws, 100, "swapped.bin").await;
    let on_disk = published_dir(&server).join(token_of(url_of(&file)));
    std::fs::remove_file(&on_disk).unwrap();
    std::os::unix::fs::symlink(&secret, &on_disk).unwrap();
    // Each answer: (method, status, whether the target's bytes came back).
    let mut answers = Vec::new();
    for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
        let response = fetch(&server, method.clone(), url_of(&file), &[]).await;
        let status = response.status();
        let body = response.bytes().await.unwrap();
        let leaked = body.windows(16).any(|w| w == b"not for download");
        answers.push((method, status, leaked));
    }
    assert!(
        answers.iter().all(|(_, _, leaked)| !leaked),
        "a symlink's target was served: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(_, status, _)| *status == StatusCode::NOT_FOUND || *status == StatusCode::GONE),
        "SERVER BUG: a published file replaced by a symlink must answer 404 or 410, got \
         {answers:?}; NoFollow::open (src/server/files.rs) passes the O_NOFOLLOW error \
         (ELOOP) to ServeDir, which answers 500 for anything but NotFound/PermissionDenied"
    );
    server.stop().await;
}

#[tokio::test]
async fn public_url_makes_links_absolute() {
    let server =
        TestServer::with(|config| config.files.public_url = Some("http://example.test".into()))
            .await;
    let mut ws = server.ws(ALICE).await;
    let task_id = submit_blob(&mut ws, 100, "a b.bin", json!({})).await;
    let file = only_file(&ws.terminal(&task_id).await);
    let url = url_of(&file);
    let token = token_of(url);
    assert_eq!(url, format!("http://example.test/files/{token}/a%20b.bin"));
    let (_, snapshot) = server
        .get_json(ALICE, &format!("/v1/tasks/{task_id}"))
        .await;
    assert_eq!(snapshot["files"][0]["url"], url, "{snapshot}");

    // The path part is the real link.
    let path = url.strip_prefix("http://example.test").unwrap();
    let response = get(&server, path).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn expired_links_answer_410_and_the_bytes_are_gone() {
    let server = TestServer::with(|config| config.files.file_ttl = Duration::from_secs(1)).await;
    let mut ws = server.ws(ALICE).await;
    let file = blob_file(&mut ws, 10_000, "short.bin").await;
    let url = url_of(&file).to_owned();
    let on_disk = published_dir(&server).join(token_of(&url));
    let left = parse_time(file["expires_at"].as_str().unwrap()) - time::OffsetDateTime::now_utc();
    assert!(
        left <= time::Duration::seconds(1),
        "expires_at is file_ttl after completion: {left}"
    );
    assert!(on_disk.is_file());
    assert_eq!(
        get_status(&server, &url).await,
        StatusCode::OK,
        "before expires_at"
    );

    eventually("the expired link to answer 410", || async {
        let status = get_status(&server, &url).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::GONE,
            "an expiring link answered {status}"
        );
        status == StatusCode::GONE
    })
    .await;
    eventually("the expired file to leave the disk", || async {
        !on_disk.exists()
    })
    .await;
    assert!(entries(&published_dir(&server)).is_empty());
    assert!(entries(&staging_dir(&server)).is_empty());

    // Another file_ttl later the tombstone is forgotten: 404.
    eventually("the tombstone to be forgotten", || async {
        get_status(&server, &url).await == StatusCode::NOT_FOUND
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn temp_bytes_metric_follows_the_area() {
    let server = TestServer::with(|config| config.files.file_ttl = Duration::from_secs(1)).await;
    assert_eq!(temp_bytes(&server).await, 0);
    let mut ws = server.ws(ALICE).await;
    blob_file(&mut ws, 300_000, "counted.bin").await;
    assert_eq!(
        temp_bytes(&server).await,
        300_000,
        "a published file counts"
    );
    eventually("temp_bytes to drop after expiry", || async {
        temp_bytes(&server).await == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn timed_out_task_leaves_no_file() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let end = blob(
        &mut ws,
        1_000_000_000,
        "slow.bin",
        json!({"timeout_s": 0.05}),
    )
    .await;
    assert_eq!(end["type"], "failed", "{end}");
    assert_eq!(end["error"]["code"], "timeout", "{end}");
    assert_area_empty(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn cancelled_task_leaves_no_file() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let task_id = submit_blob(&mut ws, 500_000_000, "big.bin", json!({})).await;
    // The first progress comes after several MiB are on disk.
    let progress = ws
        .until(|m| m["task_id"] == task_id.as_str() && m["type"] == "progress")
        .await;
    assert!(progress["progress"].as_f64().unwrap() < 1.0, "{progress}");
    assert!(
        !entries(&staging_dir(&server)).is_empty(),
        "the task writes in its staging dir"
    );
    ws.send(json!({"type": "cancel", "task_id": task_id})).await;
    let end = ws.terminal(&task_id).await;
    assert_eq!(end["type"], "cancelled", "{end}");
    assert_eq!(end["reason"], "client", "{end}");
    assert_area_empty(&server).await;
    server.stop().await;
}

/// Waits until nothing is staged, published or counted.
async fn assert_area_empty(server: &TestServer) {
    let staging = staging_dir(server);
    eventually("the staging dir to be empty", || async {
        entries(&staging).is_empty()
    })
    .await;
    assert!(staging.is_dir(), "the staging dir itself stays");
    assert!(
        entries(&published_dir(server)).is_empty(),
        "nothing was published"
    );
    eventually("temp_bytes to return to 0", || async {
        temp_bytes(server).await == 0
    })
    .await;
}

#[tokio::test]
async fn storage_full() {
    const MIB: u64 = 1024 * 1024;
    let server = TestServer::with(|config| config.files.max_temp_bytes = MIB).await;
    let mut ws = server.ws(ALICE).await;

    // Larger than the whole area: refused up front.
    let reply = ws
        .submit(
            "blob",
            json!({"size": MIB + 1, "name": "huge.bin"}),
            json!({}),
        )
        .await;
    assert_eq!(reply["type"], "rejected", "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");

    // The first fits; the second would pass the quota.
    let first = blob_file(&mut ws, 600_000, "first.bin").await;
    let first_token = token_of(url_of(&first));
    let end = blob(&mut ws, 600_000, "second.bin", json!({})).await;
    assert_eq!(end["type"], "failed", "{end}");
    assert_eq!(end["error"]["code"], "storage_full", "{end}");

    // Its partial file is gone and its bytes are given back.
    let staging = staging_dir(&server);
    eventually("the partial file to be removed", || async {
        entries(&staging).is_empty()
    })
    .await;
    assert_eq!(entries(&published_dir(&server)), vec![first_token]);
    eventually("temp_bytes to count only the first file", || async {
        temp_bytes(&server).await == 600_000
    })
    .await;
    // What is left still fits.
    let third = blob_file(&mut ws, 400_000, "third.bin").await;
    assert_eq!(get_status(&server, url_of(&third)).await, StatusCode::OK);
    assert_eq!(get_status(&server, url_of(&first)).await, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn stream_delivery_is_byte_exact() {
    const SIZE: usize = 5_000_000;
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let task_id = submit_blob(
        &mut ws,
        SIZE as u64,
        "streamed.bin",
        json!({"delivery": "stream"}),
    )
    .await;

    let mut begin: Option<Value> = None;
    let mut end: Option<Value> = None;
    let mut streamed = Vec::with_capacity(SIZE);
    let mut n_frames = 0usize;
    let completed = loop {
        match ws.frame().await {
            Frame::Json(message) => {
                if message["task_id"] != task_id.as_str() {
                    continue;
                }
                match message["type"].as_str().unwrap() {
                    "stream_begin" => {
                        assert!(begin.is_none(), "one file, one stream_begin: {message}");
                        begin = Some(message);
                    }
                    "stream_end" => {
                        assert!(
                            begin.is_some() && end.is_none(),
                            "stream_end after stream_begin: {message}"
                        );
                        end = Some(message);
                    }
                    "completed" | "failed" | "cancelled" => break message,
                    _ => assert!(begin.is_none(), "no task event inside a stream: {message}"),
                }
            }
            Frame::Binary(data) => {
                let begin = begin
                    .as_ref()
                    .expect("binary frames only after stream_begin");
                assert!(end.is_none(), "no binary frame after stream_end");
                assert!(
                    data.len() > 4,
                    "a binary frame carries bytes ({} bytes)",
                    data.len()
                );
                let stream = u32::from_be_bytes(data[..4].try_into().unwrap());
                assert_eq!(
                    u64::from(stream),
                    begin["stream"].as_u64().unwrap(),
                    "stream number"
                );
                assert!(
                    data.len() - 4 <= 64 * 1024,
                    "payload {} bytes > 64 KiB",
                    data.len() - 4
                );
                streamed.extend_from_slice(&data[4..]);
                n_frames += 1;
            }
            Frame::Closed(code) => panic!("socket closed ({code:?}) during stream delivery"),
        }
    };
    let begin = begin.expect("a stream_begin");
    let end = end.expect("a stream_end before completed");
    assert_eq!(begin["name"], "streamed.bin", "{begin}");
    assert_eq!(begin["size"], SIZE, "{begin}");
    assert_eq!(begin["content_type"], "application/octet-stream", "{begin}");
    assert_eq!(end["stream"], begin["stream"], "{end}");
    assert_eq!(streamed.len(), SIZE);
    assert!(n_frames >= SIZE.div_ceil(64 * 1024));
    let sha = sha256_hex(&streamed);
    assert_eq!(
        end["sha256"],
        sha.as_str(),
        "stream_end.sha256 of the streamed bytes"
    );

    // `completed` still lists the file, and its link serves the same bytes.
    let file = only_file(&completed);
    assert_eq!(file["sha256"], sha.as_str());
    assert_eq!(file["size"], SIZE);
    let response = get(&server, url_of(&file)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let downloaded = response.bytes().await.unwrap();
    assert!(
        downloaded[..] == streamed[..],
        "downloaded bytes differ from the streamed ones"
    );

    // The socket is still in order afterwards.
    ws.send(json!({"type": "ping", "ref": "after"})).await;
    let pong = ws.until(|m| m["ref"] == "after").await;
    assert_eq!(pong["type"], "pong", "{pong}");
    server.stop().await;
}

#[tokio::test]
async fn a_download_in_progress_finishes_after_expiry() {
    const SIZE: usize = 20_000_000;
    let server = TestServer::with(|config| config.files.file_ttl = Duration::from_secs(1)).await;
    let mut ws = server.ws(ALICE).await;
    let file = blob_file(&mut ws, SIZE as u64, "long.bin").await;
    let url = url_of(&file).to_owned();
    let mut download = get(&server, &url).await;
    assert_eq!(download.status(), StatusCode::OK);
    let mut received = download
        .chunk()
        .await
        .unwrap()
        .expect("a first chunk")
        .to_vec();

    eventually("the link to expire", || async {
        get_status(&server, &url).await == StatusCode::GONE
    })
    .await;
    let on_disk = published_dir(&server).join(token_of(&url));
    eventually("the file to leave the disk", || async { !on_disk.exists() }).await;

    while let Some(chunk) = download.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), SIZE, "the started download got every byte");
    assert_eq!(file["sha256"], sha256_hex(&received).as_str());
    server.stop().await;
}

#[tokio::test]
async fn leftovers_of_a_crashed_run_are_removed_and_the_area_at_exit() {
    let mut server = TestServer::with(|config| {
        let area = config.files.temp_dir.clone().unwrap();
        std::fs::create_dir_all(area.join("files")).unwrap();
        std::fs::create_dir_all(area.join("staging").join("task-old")).unwrap();
        std::fs::write(area.join("files").join("0".repeat(32)), "old").unwrap();
        std::fs::write(area.join("staging").join("task-old").join("f1"), "old").unwrap();
        std::fs::write(area.join("mine.txt"), "not ours to delete").unwrap();
    })
    .await;
    let mut ws = server.ws(ALICE).await;
    assert!(
        entries(&published_dir(&server)).is_empty(),
        "old published files are removed"
    );
    assert!(
        entries(&staging_dir(&server)).is_empty(),
        "old staged files are removed"
    );
    assert_eq!(temp_bytes(&server).await, 0);
    let old = format!("/files/{}/x", "0".repeat(32));
    assert_eq!(get_status(&server, &old).await, StatusCode::NOT_FOUND);

    blob_file(&mut ws, 100, "new.bin").await;
    drop(ws);
    let area = server.temp.path().join("area");
    tokio::time::timeout(Duration::from_secs(30), server.begin_stop())
        .await
        .expect("the server stops")
        .unwrap();
    assert!(
        !published_dir(&server).exists(),
        "files/ is removed at exit"
    );
    assert!(
        !staging_dir(&server).exists(),
        "staging/ is removed at exit"
    );
    assert_eq!(
        std::fs::read_to_string(area.join("mine.txt")).unwrap(),
        "not ours to delete",
        "a given temp_dir is used as is"
    );
}

#[tokio::test]
async fn an_empty_file() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let file = blob_file(&mut ws, 0, "empty.bin").await;
    assert_eq!(file["size"], 0);
    assert_eq!(file["sha256"], sha256_hex(b"").as_str());
    let response = get(&server, url_of(&file)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_text(&response, header::CONTENT_LENGTH), "0");
    assert!(response.bytes().await.unwrap().is_empty());
    let ranged = fetch(
        &server,
        reqwest::Method::GET,
        url_of(&file),
        &[("range", "bytes=0-")],
    )
    .await;
    // RFC 9110 calls any range of an empty file unsatisfiable (416);
    // tower-http answers 206 with `bytes 0-0/0`. Either way, no bytes.
    let status = ranged.status();
    assert!(
        status == StatusCode::RANGE_NOT_SATISFIABLE || status == StatusCode::PARTIAL_CONTENT,
        "{status}"
    );
    assert!(ranged.bytes().await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn names_with_reserved_characters_round_trip_through_the_link() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    for name in [
        "100% sure?.bin",
        "a#b&c=d+e.bin",
        "%2F%2e%2e.bin",
        "日本語 ファイル.txt",
    ] {
        let file = blob_file(&mut ws, 10, name).await;
        assert_eq!(file["name"], name);
        let url = url_of(&file);
        let segment = url.rsplit('/').next().unwrap();
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b)),
            "{name:?} is percent-encoded in {url}"
        );
        assert_eq!(percent_decode(segment), name);
        let response = get(&server, url).await;
        assert_eq!(response.status(), StatusCode::OK, "{name:?} via {url}");
        let disposition = header_text(&response, header::CONTENT_DISPOSITION);
        let encoded = disposition.split("filename*=UTF-8''").nth(1).unwrap();
        assert_eq!(percent_decode(encoded), name, "{disposition}");
    }
    server.stop().await;
}

/// What one socket received for streamed tasks, by stream number.
#[derive(Default)]
struct Streams {
    begins: std::collections::HashMap<u32, Value>,
    ends: std::collections::HashMap<u32, Value>,
    bytes: std::collections::HashMap<u32, Vec<u8>>,
    completed: std::collections::HashMap<String, Value>,
}

impl Streams {
    /// Reads `ws` until every task in `task_ids` reached its terminal event.
    async fn collect(ws: &mut Ws, task_ids: &[&str]) -> Streams {
        let mut streams = Streams::default();
        while streams.completed.len() < task_ids.len() {
            match ws.frame().await {
                Frame::Json(message) => {
                    let Some(task_id) = message["task_id"].as_str() else {
                        continue;
                    };
                    if !task_ids.contains(&task_id) {
                        continue;
                    }
                    let stream = message["stream"]
                        .as_u64()
                        .map(|s| u32::try_from(s).unwrap());
                    match (message["type"].as_str().unwrap(), stream) {
                        ("stream_begin", Some(stream)) => {
                            assert!(
                                streams.begins.insert(stream, message).is_none(),
                                "stream {stream} begun twice"
                            );
                        }
                        ("stream_end", Some(stream)) => {
                            assert!(streams.begins.contains_key(&stream), "{message}");
                            assert!(
                                streams.ends.insert(stream, message).is_none(),
                                "ended twice"
                            );
                        }
                        ("completed" | "failed" | "cancelled", _) => {
                            streams.completed.insert(task_id.to_owned(), message);
                        }
                        _ => {}
                    }
                }
                Frame::Binary(data) => {
                    assert!(data.len() > 4, "a binary frame carries bytes");
                    assert!(data.len() - 4 <= 64 * 1024, "payload over 64 KiB");
                    let stream = u32::from_be_bytes(data[..4].try_into().unwrap());
                    assert!(
                        streams.begins.contains_key(&stream) && !streams.ends.contains_key(&stream),
                        "bytes for stream {stream} outside its begin/end"
                    );
                    streams
                        .bytes
                        .entry(stream)
                        .or_default()
                        .extend_from_slice(&data[4..]);
                }
                Frame::Closed(code) => panic!("socket closed ({code:?}) during stream delivery"),
            }
        }
        streams
    }
}

#[tokio::test]
async fn two_streams_on_one_socket_stay_apart() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let stream = json!({"delivery": "stream"});
    let first = submit_blob(&mut ws, 1_500_000, "one.bin", stream.clone()).await;
    let second = submit_blob(&mut ws, 700_001, "two.bin", stream).await;
    let streams = Streams::collect(&mut ws, &[&first, &second]).await;

    assert_eq!(streams.begins.len(), 2, "one stream per file");
    let numbers: std::collections::HashSet<_> = streams.begins.keys().collect();
    assert_eq!(numbers.len(), 2, "distinct stream numbers");
    for (task_id, size, name) in [
        (&first, 1_500_000, "one.bin"),
        (&second, 700_001, "two.bin"),
    ] {
        let (number, begin) = streams
            .begins
            .iter()
            .find(|(_, begin)| begin["task_id"] == task_id.as_str())
            .unwrap_or_else(|| panic!("no stream_begin for {task_id}"));
        assert_eq!(begin["name"], name);
        assert_eq!(begin["size"], size);
        let bytes = &streams.bytes[number];
        assert_eq!(bytes.len(), size, "{name}");
        let sha = sha256_hex(bytes);
        assert_eq!(streams.ends[number]["sha256"], sha.as_str(), "{name}");
        let file = only_file(&streams.completed[task_id.as_str()]);
        assert_eq!(file["sha256"], sha.as_str(), "{name}");
        let downloaded = get(&server, url_of(&file)).await.bytes().await.unwrap();
        assert!(
            downloaded[..] == bytes[..],
            "{name}: link and stream differ"
        );
    }
    server.stop().await;
}
