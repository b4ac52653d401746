//! Smoke runs of every mode with tiny counts against a real `taskwire
//! serve` child process, checking the JSON each prints. Fast (a few
//! seconds): the real benchmark is `bench/run.sh`, never the test command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KEY: &str = "bench-smoke-test-key";
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The server binary: `TASKWIRE_BIN`, else `taskwire` beside this test's
/// own target directory (`cargo test --workspace` builds it), else built
/// now with the cargo that runs the tests.
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TASKWIRE_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/smoke-<hash> -> target/debug/taskwire
    let exe = std::env::current_exe().unwrap();
    let beside = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("taskwire"));
    if let Some(path) = beside.filter(|p| p.exists()) {
        return path;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-p", "taskwire", "--bin", "taskwire"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p taskwire failed");
    root.join("target/debug/taskwire")
}

/// `taskwire serve` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!("taskwire-bench-smoke-{port}.log"));
        let child = Command::new(server_binary())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("TASKWIRE_API_KEY", KEY)
            .env_remove("TASKWIRE_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start taskwire serve");
        let mut server = Server { child, port };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("taskwire serve exited early: {status}");
            }
            if self.readyz() == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no 200 from /readyz within {READY_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20)); // poll with a deadline
        }
    }

    fn readyz(&self) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the load generator; returns its exit success and its one JSON line.
fn bench(args: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskwire-bench"))
        .args(["--timeout-s", "60"])
        .args(args)
        .env("TASKWIRE_API_KEY", KEY)
        .output()
        .expect("run taskwire-bench");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line expected, got {stdout:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.success(),
        serde_json::from_str(lines[0]).unwrap(),
    )
}

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {report}"))
}

#[test]
fn tasks_reports_throughput_latency_and_cpu() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "tasks",
        "--url",
        &server.ws_url(),
        "--connections",
        "2",
        "--in-flight",
        "8",
        "--count",
        "203",
        "--task",
        "echo",
        "--input",
        r#"{"n":1}"#,
        "--server-pid",
        &server.pid(),
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["mode"], "tasks");
    assert_eq!(report["completed"], 203);
    assert_eq!(report["failures"], 0);
    assert!(number(&report, "/tasks_per_s") > 0.0);
    assert!(number(&report, "/wall_s") > 0.0);
    assert_eq!(number(&report, "/latency_us/samples"), 203.0);
    let p = |q: &str| number(&report, &format!("/latency_us/{q}"));
    assert!(
        p("p50") >= 1.0 && p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p99_9")
    );
    assert!(number(&report, "/client_cpu_s") >= 0.0);
    assert!(number(&report, "/server_cpu_s") >= 0.0);
}

#[test]
fn tasks_in_flight_one_is_sequential_latency() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "tasks",
        "--url",
        &server.ws_url(),
        "--connections",
        "1",
        "--in-flight",
        "1",
        "--count",
        "25",
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["completed"], 25);
    assert_eq!(report["in_flight"], 1);
    assert!(
        report["server_cpu_s"].is_null(),
        "no --server-pid, no server CPU"
    );
}

#[test]
fn tasks_back_off_on_queue_full_and_finish_all() {
    // One worker and one queue place: most submits are refused at first.
    let server = Server::start(&["--workers", "1", "--queue-capacity", "1"]);
    let (ok, report) = bench(&[
        "tasks",
        "--url",
        &server.ws_url(),
        "--connections",
        "1",
        "--in-flight",
        "6",
        "--count",
        "12",
        "--task",
        "sleep",
        "--input",
        r#"{"ms":5}"#,
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["completed"], 12);
    assert_eq!(report["failures"], 0);
    assert!(number(&report, "/queue_full_retries") > 0.0, "{report}");
}

#[test]
fn tasks_count_failures_of_failing_tasks() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "tasks",
        "--url",
        &server.ws_url(),
        "--connections",
        "1",
        "--in-flight",
        "2",
        "--count",
        "4",
        "--task",
        "sleep",
        "--input",
        r#"{"ms":1,"fail":true}"#,
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["completed"], 0);
    assert_eq!(report["failures"], 4);
    assert!(
        report["first_error"]
            .as_str()
            .unwrap()
            .starts_with("failed"),
        "{report}"
    );
}

#[test]
fn conns_reports_server_memory_per_connection() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "conns",
        "--url",
        &server.ws_url(),
        "--count",
        "40",
        "--server-pid",
        &server.pid(),
        "--settle-ms",
        "50",
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["mode"], "conns");
    assert_eq!(report["opened"], 40);
    assert!(number(&report, "/server_rss_before_bytes") > 0.0);
    assert!(number(&report, "/server_rss_open_bytes") > 0.0);
    number(&report, "/server_bytes_per_connection");
    number(&report, "/server_kib_per_connection");
}

#[test]
fn download_reports_throughput_of_the_link() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "download",
        "--url",
        &format!("http://127.0.0.1:{}", server.port),
        "--size",
        "300000",
        "--count",
        "3",
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["mode"], "download");
    assert_eq!(report["size_bytes"], 300_000);
    assert_eq!(report["mb_per_s"]["samples"].as_array().unwrap().len(), 3);
    assert!(number(&report, "/mb_per_s/median") > 0.0);
    assert!(number(&report, "/seconds/min") > 0.0);
}

#[test]
fn booklet_reports_each_run() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "booklet",
        "--url",
        &server.ws_url(),
        "--contributions",
        "12",
        "--runs",
        "2",
    ]);
    assert!(ok, "{report}");
    assert_eq!(report["mode"], "booklet");
    assert!(number(&report, "/input_bytes") > 1000.0);
    assert_eq!(report["completed"], 2, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    assert_eq!(report["seconds"]["samples"].as_array().unwrap().len(), 2);
    assert!(number(&report, "/seconds/median") > 0.0);
    assert_eq!(report["file"]["has_link"], true, "{report}");
    assert!(
        report["file"]["name"].as_str().unwrap().ends_with(".odt"),
        "{report}"
    );
}

#[test]
fn a_wrong_key_is_a_json_error_and_a_failure_exit() {
    let server = Server::start(&[]);
    let (ok, report) = bench(&[
        "tasks",
        "--url",
        &server.ws_url(),
        "--key",
        "not-the-key",
        "--count",
        "1",
    ]);
    assert!(!ok);
    assert_eq!(report["mode"], "tasks");
    assert!(
        report["error"].as_str().unwrap().contains("401"),
        "{report}"
    );
}
