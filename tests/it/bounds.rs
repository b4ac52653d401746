//! Memory bounds, measured on the real binary: a flood of large submits
//! from one key is refused while another key still gets through, and the
//! server's memory stays under the bound plus a margin.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::eventually;

const FLOODER: &str = "tw_flooder_0123456789abcdef0123456789abcdef";
const OTHER: &str = "tw_other_0123456789abcdef0123456789abcdef";
const MIB: u64 = 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_flood_of_large_submits_is_refused_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let digest = |key: &str| taskwire::auth::hex(&taskwire::auth::digest(key));
    let config = format!(
        "max_queued_input_bytes = {}\nmax_queued_input_bytes_per_client = {}\n\
         [[api_keys]]\nname = \"flooder\"\nsha256 = \"{}\"\n\
         [[api_keys]]\nname = \"other\"\nsha256 = \"{}\"\n",
        64 * MIB,
        32 * MIB,
        digest(FLOODER),
        digest(OTHER)
    );
    let path = dir.path().join("taskwire.toml");
    std::fs::write(&path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
        ])
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    eventually("the server is ready", || async {
        reqwest::get(url("/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let http = reqwest::Client::new();
    // The one worker is busy: everything else queues.
    let busy = http
        .post(url("/v1/tasks"))
        .bearer_auth(FLOODER)
        .json(&json!({"task": "sleep", "input": {"ms": 60_000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 202);
    let big = json!({"task": "echo", "input": "x".repeat(4 * MIB as usize)}).to_string();
    let mut accepted = 0;
    let mut refused = 0;
    let mut peak = 0;
    // 40 submits of 4 MiB (160 MiB), 8 at a time.
    for _ in 0..5 {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                http.post(url("/v1/tasks"))
                    .bearer_auth(FLOODER)
                    .header("content-type", "application/json")
                    .body(big.clone())
                    .send()
            })
            .collect();
        for response in futures::future::join_all(batch).await {
            let response = response.unwrap();
            match response.status().as_u16() {
                202 => accepted += 1,
                429 => {
                    let body: Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "queue_full");
                    assert_eq!(
                        body["error"]["details"]["bound"],
                        "max_queued_input_bytes_per_client"
                    );
                    assert!(body["error"]["retry_after_ms"].is_u64());
                    refused += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        peak = peak.max(rss_bytes(child.id()));
    }
    // 32 MiB of share holds 7 inputs of 4 MiB (+ JSON quotes).
    assert_eq!(accepted, 7, "refused {refused}");
    // Another client still gets through.
    let other = http
        .post(url("/v1/tasks"))
        .bearer_auth(OTHER)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 202);
    peak = peak.max(rss_bytes(child.id()));
    // Queued inputs are bounded by 64 MiB; allow the runtime, the bodies
    // being read (8 × 4 MiB) and allocator slack on top.
    assert!(peak < 64 * MIB + 112 * MIB, "peak RSS {} MiB", peak / MIB);
    let _ = child.kill();
    let _ = child.wait();
}
