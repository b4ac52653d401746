//! Throughput of file inputs on loopback: uploads (REST and WebSocket
//! binary frames), URL inputs fetched by the server, and `pdf_check` per
//! file.
//!
//! `cargo run --release --example inputs_bench [-- --runs N --mib M --pdfs K --pdf PATH]`
//! starts a taskwire server in this process on `127.0.0.1:0` (2 built-in
//! slots, `fetch_allow = 127.0.0.1/32`) and a plain HTTP origin beside it
//! that serves M MiB (default 64) and the PDF, then prints one JSON line per
//! measurement, each the median of N runs (default 5) after one warm-up:
//!
//! - `upload_rest`: `POST /v1/uploads` of M MiB from memory, until the `201`;
//! - `upload_ws`: the same as `upload_begin`, 1 MiB binary frames,
//!   `upload_end`, until `uploaded`;
//! - `fetch_url`: an `echo` task whose input is `{"$url": origin}` (M MiB),
//!   from the submit to `completed` (the fetch into the temp area, hashed,
//!   is nearly all of it);
//! - `pdf_check_upload`, `pdf_check_url`: one `pdf_check` task over K PDFs
//!   (default 50; uploads, or `{url}` entries the task fetches from the
//!   origin), from the submit to `completed`, divided by K.
//!
//! The PDF is generated (12 A4 pages of text, an embedded font program of
//! 100 KiB) unless `--pdf` names one. Client, origin and server share the
//! machine's cores: the numbers are for the whole loop, not the server alone.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark tool: it prints, and any failure is fatal"
)]

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use serde_json::{Value, json};
use taskwire::auth::digest;
use taskwire::config::{Config, KeyConfig, KeyRole, KeySource};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const KEY: &str = "tw_bench_0123456789abcdef0123456789abcdef";
const MIB: usize = 1024 * 1024;

struct Args {
    runs: usize,
    mib: usize,
    pdfs: usize,
    pdf: Option<String>,
}

fn args() -> Args {
    let mut parsed = Args {
        runs: 5,
        mib: 64,
        pdfs: 50,
        pdf: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |default: usize| {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(default)
                .max(1)
        };
        match arg.as_str() {
            "--runs" => parsed.runs = number(parsed.runs),
            "--mib" => parsed.mib = number(parsed.mib),
            "--pdfs" => parsed.pdfs = number(parsed.pdfs),
            "--pdf" => parsed.pdf = args.next(),
            _ => {}
        }
    }
    parsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `runs` runs of `f` after one warm-up; the median, in ms.
async fn timed<F, Fut>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    median(times)
}

/// 12 A4 pages of text with an embedded TrueType font program.
fn generated_pdf() -> Vec<u8> {
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let program: Vec<u8> = (0..100 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let program = doc.add_object(Stream::new(dictionary! {}, program));
    let descriptor = doc.add_object(dictionary! {
        "Type" => "FontDescriptor", "FontName" => "PaperSans", "FontFile2" => program,
        "Flags" => 32, "ItalicAngle" => 0, "Ascent" => 800, "Descent" => -200,
        "CapHeight" => 700, "StemV" => 80,
        "FontBBox" => vec![0.into(), 0.into(), 1000.into(), 1000.into()],
    });
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "TrueType", "BaseFont" => "PaperSans",
        "FontDescriptor" => descriptor,
    });
    let resources = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font } });
    let mut kids = Vec::new();
    for page in 0..12 {
        let mut operations = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 10.into()]),
            Operation::new("Td", vec![72.into(), 770.into()]),
        ];
        for line in 0..60 {
            operations.push(Operation::new(
                "Tj",
                vec![Object::string_literal(format!(
                    "page {page} line {line}: the quick brown fox jumps over the lazy dog"
                ))],
            ));
            operations.push(Operation::new("Td", vec![0.into(), (-12).into()]));
        }
        operations.push(Operation::new("ET", vec![]));
        let mut stream = Stream::new(
            dictionary! {},
            Content { operations }.encode().expect("content"),
        );
        let _ = stream.compress();
        let content = doc.add_object(stream);
        kids.push(
            doc.add_object(dictionary! {
                "Type" => "Page", "Parent" => pages_id, "Contents" => content,
            })
            .into(),
        );
    }
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => 12, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 595.276.into(), 841.89.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut out = Vec::new();
    doc.save_to(&mut out).expect("save");
    out
}

async fn origin(blob: Bytes, pdf: Bytes) -> SocketAddr {
    let app = Router::new()
        .route("/blob", get(move || std::future::ready(blob.clone())))
        .route("/paper.pdf", get(move || std::future::ready(pdf.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn server(mib: usize) -> SocketAddr {
    let mut config = Config::with_keys(vec![KeyConfig {
        name: "bench".to_owned(),
        digest: digest(KEY),
        role: KeyRole::Client,
        source: KeySource::File,
    }]);
    config.limits.workers = 2;
    config.limits.max_message_bytes = 2 * MIB;
    let bound = (4 * mib * MIB) as u64;
    config.inputs.max_upload_bytes = bound;
    config.inputs.max_fetch_bytes = bound;
    config.files.max_temp_bytes = 16 * bound;
    config.inputs.fetch_allow = vec!["127.0.0.1/32".parse().unwrap()];
    let catalog = taskwire::catalog::Catalog::builtin(config.files.max_temp_bytes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        taskwire::serve_with(listener, config, catalog, std::future::pending())
            .await
            .expect("server");
    });
    addr
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    until(&mut ws, |m| m["type"] == "welcome").await;
    ws
}

async fn until(ws: &mut Ws, mut wanted: impl FnMut(&Value) -> bool) -> Value {
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message.unwrap() {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "error" || value["type"] == "rejected" {
                panic!("{value}");
            }
            if wanted(&value) {
                return value;
            }
        }
    }
    panic!("the socket closed");
}

/// Submits and waits for the terminal event; panics unless `completed`.
async fn run_task(ws: &mut Ws, task: &str, input: &Value) -> Value {
    let submit = json!({"type": "submit", "ref": "b", "task": task, "input": input});
    ws.send(Message::text(submit.to_string())).await.unwrap();
    let accepted = until(ws, |m| m["type"] == "accepted").await;
    let id = accepted["task_id"].clone();
    let end = until(ws, |m| {
        m["task_id"] == id
            && matches!(
                m["type"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
    })
    .await;
    assert_eq!(end["type"], "completed", "{end}");
    end
}

async fn upload_rest(http: &reqwest::Client, addr: SocketAddr, name: &str, bytes: Bytes) -> String {
    let response = http
        .post(format!("http://{addr}/v1/uploads?name={name}"))
        .bearer_auth(KEY)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["upload_id"].as_str().unwrap().to_owned()
}

async fn delete_upload(http: &reqwest::Client, addr: SocketAddr, id: &str) {
    let response = http
        .delete(format!("http://{addr}/v1/uploads/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

fn line(what: &str, fields: Value) {
    let mut out = json!({ "what": what });
    if let (Some(out), Some(fields)) = (out.as_object_mut(), fields.as_object()) {
        out.extend(fields.clone());
    }
    println!("{out}");
}

#[tokio::main]
async fn main() {
    let args = args();
    let blob = Bytes::from(
        (0..args.mib * MIB)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let pdf = Bytes::from(match &args.pdf {
        Some(path) => std::fs::read(path).expect("the --pdf file"),
        None => generated_pdf(),
    });
    let origin = origin(blob.clone(), pdf.clone()).await;
    let addr = server(args.mib).await;
    let http = reqwest::Client::new();
    let mib = args.mib as f64;
    let rate = |ms: f64| (mib / (ms / 1000.0) * 10.0).round() / 10.0;

    let ms = timed(args.runs, || {
        let (http, blob) = (http.clone(), blob.clone());
        async move {
            let id = upload_rest(&http, addr, "blob.bin", blob).await;
            delete_upload(&http, addr, &id).await;
        }
    })
    .await;
    line(
        "upload_rest",
        json!({"mib": args.mib, "runs": args.runs, "median_ms": ms.round(), "mib_per_s": rate(ms)}),
    );

    let mut socket = ws(addr).await;
    let mut stream = 0u32;
    let mut ws_times = Vec::new();
    for round in 0..=args.runs {
        stream += 1;
        let started = Instant::now();
        let begin = json!({"type": "upload_begin", "stream": stream, "name": "blob.bin", "size": blob.len()});
        socket.send(Message::text(begin.to_string())).await.unwrap();
        for chunk in blob.chunks(MIB) {
            let mut frame = Vec::with_capacity(4 + chunk.len());
            frame.extend_from_slice(&stream.to_be_bytes());
            frame.extend_from_slice(chunk);
            socket.feed(Message::binary(frame)).await.unwrap();
        }
        let end = json!({"type": "upload_end", "stream": stream});
        socket.send(Message::text(end.to_string())).await.unwrap();
        let done = until(&mut socket, |m| m["type"] == "uploaded").await;
        if round > 0 {
            ws_times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        delete_upload(&http, addr, done["upload_id"].as_str().unwrap()).await;
    }
    let ms = median(ws_times);
    line(
        "upload_ws",
        json!({"mib": args.mib, "runs": args.runs, "median_ms": ms.round(), "mib_per_s": rate(ms)}),
    );

    let input = json!({"file": {"$url": format!("http://{origin}/blob")}});
    let mut fetch_times = Vec::new();
    for round in 0..=args.runs {
        let started = Instant::now();
        run_task(&mut socket, "echo", &input).await;
        if round > 0 {
            fetch_times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let ms = median(fetch_times);
    line(
        "fetch_url",
        json!({"mib": args.mib, "runs": args.runs, "median_ms": ms.round(), "mib_per_s": rate(ms)}),
    );

    let mut ids = Vec::with_capacity(args.pdfs);
    for i in 0..args.pdfs {
        ids.push(upload_rest(&http, addr, &format!("paper-{i}.pdf"), pdf.clone()).await);
    }
    let uploads: Vec<Value> = ids.iter().map(|id| json!({"$upload": id})).collect();
    let urls: Vec<Value> = (0..args.pdfs)
        .map(|i| json!({"url": format!("http://{origin}/paper.pdf"), "name": format!("paper-{i}.pdf")}))
        .collect();
    for (what, files) in [("pdf_check_upload", uploads), ("pdf_check_url", urls)] {
        let input = json!({"files": files, "page_size": "A4"});
        let mut per_file = Vec::new();
        for round in 0..=args.runs {
            let started = Instant::now();
            let end = run_task(&mut socket, "pdf_check", &input).await;
            let elapsed = started.elapsed();
            let reports = end["result"]["files"].as_array().map_or(0, Vec::len);
            assert_eq!(reports, args.pdfs, "{}", end["result"]);
            if round > 0 {
                per_file.push(elapsed.as_secs_f64() * 1000.0 / args.pdfs as f64);
            }
        }
        line(
            what,
            json!({"pdfs": args.pdfs, "pdf_bytes": pdf.len(), "runs": args.runs,
                   "median_ms_per_file": (median(per_file) * 100.0).round() / 100.0}),
        );
    }
}
