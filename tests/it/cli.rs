//! The client subcommands of the real `taskwire` binary against a real
//! server: every subcommand, exit codes, `--json`, stdin and file input,
//! downloads checked against their sha256, and `top` in a real terminal
//! (tmux).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::support::{ADMIN, ALICE, DEADLINE, TestServer, eventually};

const COMPLETED: i32 = 0;
const FAILED: i32 = 1;
const USAGE: i32 = 2;
const CANCELLED: i32 = 3;
const CONNECTION: i32 = 4;
const REFUSED: i32 = 5;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

fn taskwire(server: &TestServer, key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskwire"));
    command
        .env("TASKWIRE_URL", server.url(""))
        .env("TASKWIRE_KEY", key)
        .env_remove("TASKWIRE_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command, args: &[&str]) -> Run {
    command.args(args);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the command ended in time")
        .expect("the binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn tw(server: &TestServer, key: &str, args: &[&str]) -> Run {
    run(taskwire(server, key), args).await
}

#[tokio::test]
async fn submit_prints_the_id_the_result_or_the_events() {
    let server = TestServer::start().await;
    let id = tw(&server, ALICE, &["submit", "echo", r#"{"a":1}"#]).await;
    assert_eq!(id.code, COMPLETED, "{}", id.stderr);
    assert_eq!(
        id.stdout.trim().len(),
        32,
        "only the task id: {}",
        id.stdout
    );

    let wait = tw(
        &server,
        ALICE,
        &["submit", "echo", r#"{"a": [1, 2]}"#, "--wait"],
    )
    .await;
    assert_eq!(wait.code, COMPLETED, "{}", wait.stderr);
    assert_eq!(
        wait.stdout.trim(),
        r#"{"a": [1, 2]}"#,
        "the result as the task wrote it"
    );

    let follow = tw(
        &server,
        ALICE,
        &[
            "submit",
            "sleep",
            r#"{"ms":100,"steps":2}"#,
            "--follow",
            "--priority",
            "high",
        ],
    )
    .await;
    assert_eq!(follow.code, COMPLETED, "{}", follow.stderr);
    let kinds: Vec<&str> = follow
        .stdout
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["accepted", "started", "progress", "progress", "completed"]
    );

    let json = tw(
        &server,
        ALICE,
        &[
            "submit",
            "sleep",
            r#"{"ms":1}"#,
            "--follow",
            "--json",
            "--timeout",
            "5",
        ],
    )
    .await;
    let lines = json.json_lines();
    assert_eq!(lines[0]["type"], "accepted");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines.last().unwrap()["type"], "completed");
    assert_eq!(lines.last().unwrap()["result"]["slept_ms"], 1);
    server.stop().await;
}

#[tokio::test]
async fn input_comes_from_stdin_or_a_file() {
    let server = TestServer::start().await;
    let mut command = taskwire(&server, ALICE);
    command
        .args(["submit", "echo", "-", "--wait", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(br#"{"from": "stdin"}"#).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(COMPLETED));
    let event: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(event["type"], "completed");
    assert_eq!(event["result"], serde_json::json!({"from": "stdin"}));

    let file = server.temp.path().join("input.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let at = format!("@{}", file.display());
    let run = tw(&server, ALICE, &["submit", "echo", &at, "--wait"]).await;
    assert_eq!(run.stdout.trim(), r#"{"from": "file"}"#);
    server.stop().await;
}

#[tokio::test]
async fn exit_codes_say_how_it_ended() {
    let server = TestServer::start().await;
    let failed = tw(
        &server,
        ALICE,
        &["submit", "sleep", r#"{"ms":1,"fail":true}"#, "--wait"],
    )
    .await;
    assert_eq!(failed.code, FAILED, "{}", failed.stderr);
    assert!(failed.stderr.contains("task_error"), "{}", failed.stderr);

    let bad_json = tw(&server, ALICE, &["submit", "echo", "{nope"]).await;
    assert_eq!(bad_json.code, USAGE);
    let bad_flag = tw(&server, ALICE, &["submit", "echo", "--priority", "urgent"]).await;
    assert_eq!(bad_flag.code, USAGE);
    let no_key = tw(&server, "", &["status", "00"]).await;
    assert_eq!(no_key.code, USAGE);
    assert!(no_key.stderr.contains("TASKWIRE_KEY"), "{}", no_key.stderr);
    let bad_timeout = tw(&server, ALICE, &["submit", "echo", "--timeout", "-1"]).await;
    assert_eq!(bad_timeout.code, USAGE);

    let unknown = tw(&server, ALICE, &["submit", "no_such_task"]).await;
    assert_eq!(unknown.code, REFUSED);
    assert!(
        unknown.stderr.contains("unknown_task"),
        "{}",
        unknown.stderr
    );
    let missing = tw(
        &server,
        ALICE,
        &["status", "0123456789abcdef0123456789abcdef"],
    )
    .await;
    assert_eq!(missing.code, REFUSED);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);

    let wrong = "tw_wrong_key_that_must_never_be_printed";
    let refused = tw(&server, wrong, &["submit", "echo", "--wait"]).await;
    assert_eq!(refused.code, REFUSED, "{}", refused.stderr);
    assert!(!refused.stderr.contains(wrong) && !refused.stdout.contains(wrong));

    let nowhere = run(
        {
            let mut c = taskwire(&server, ALICE);
            c.env("TASKWIRE_URL", "http://127.0.0.1:9");
            c
        },
        &["status", "00"],
    )
    .await;
    assert_eq!(nowhere.code, CONNECTION, "{}", nowhere.stderr);

    let help = tw(&server, ALICE, &["submit", "--help"]).await;
    assert_eq!(help.code, COMPLETED);
    assert!(help.stdout.contains("TASKWIRE_KEY") && !help.stdout.contains(ALICE));
    server.stop().await;
}

#[tokio::test]
async fn status_events_cancel_answer() {
    let server = TestServer::start().await;
    let submitted = tw(&server, ALICE, &["submit", "sleep", r#"{"ms":60000}"#]).await;
    let id = submitted.stdout.trim().to_owned();
    let mut events = taskwire(&server, ALICE);
    events
        .args(["events", &id, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let events = events.spawn().unwrap();
    let server_ref = &server;
    eventually("the task to run", || async {
        let status = tw(server_ref, ALICE, &["status", &id, "--json"]).await;
        serde_json::from_str::<Value>(&status.stdout).is_ok_and(|s| s["state"] == "running")
    })
    .await;
    let status = tw(&server, ALICE, &["status", &id]).await;
    assert_eq!(status.code, COMPLETED);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("running"))
    );

    let cancel = tw(&server, ALICE, &["cancel", &id]).await;
    assert_eq!(cancel.code, COMPLETED, "{}", cancel.stderr);
    let again = tw(&server, ALICE, &["cancel", &id]).await;
    assert_eq!(again.code, REFUSED);
    assert!(
        again.stderr.contains("already_finished"),
        "{}",
        again.stderr
    );

    let output = tokio::time::timeout(DEADLINE, events.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(CANCELLED));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["accepted", "started", "cancelled"]);

    let after = tw(&server, ALICE, &["events", &id, "--after", "2"]).await;
    assert_eq!(after.code, CANCELLED);
    assert_eq!(after.stdout.trim(), "3 cancelled reason=client");

    let gone = tw(&server, ALICE, &["answer", &id, "q1", "yes"]).await;
    assert_eq!(gone.code, REFUSED, "no open question: {}", gone.stderr);
    assert!(gone.stderr.contains("not_found"), "{}", gone.stderr);
    server.stop().await;
}

/// A task that asks: the waiting command says how to answer, `answer`
/// answers, the task completes with the answer.
#[tokio::test]
async fn answer_answers_a_waiting_task() {
    let server = TestServer::start().await;
    let id = tw(
        &server,
        ALICE,
        &["submit", "approval", r#"{"prompt":"Ship it?"}"#],
    )
    .await;
    let id = id.stdout.trim().to_owned();
    let mut waiting = taskwire(&server, ALICE);
    waiting
        .args(["events", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().unwrap();
    let server_ref = &server;
    eventually("the task to wait for an answer", || async {
        let status = tw(server_ref, ALICE, &["status", &id, "--json"]).await;
        serde_json::from_str::<Value>(&status.stdout).is_ok_and(|s| s["state"] == "waiting")
    })
    .await;
    let status = tw(&server, ALICE, &["status", &id, "--json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["question"]["question_id"], "approval");
    let wrong = tw(&server, ALICE, &["answer", &id, "approval", "maybe"]).await;
    assert_eq!(wrong.code, REFUSED);
    assert!(wrong.stderr.contains("invalid_input"), "{}", wrong.stderr);
    let answer = tw(
        &server,
        ALICE,
        &["answer", &id, "approval", "approve", "--json"],
    )
    .await;
    assert_eq!(answer.code, COMPLETED, "{}", answer.stderr);
    let reply: Value = serde_json::from_str(&answer.stdout).unwrap();
    assert_eq!(reply["outcome"], "answered");
    assert_eq!(reply["value"], "approve");
    let output = tokio::time::timeout(DEADLINE, waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(COMPLETED));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("question question_id=approval Ship it?")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("answered question_id=approval outcome=answered")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("taskwire answer {id} approval VALUE")),
        "{stderr}"
    );
    let again = tw(&server, ALICE, &["answer", &id, "approval", "reject"]).await;
    assert_eq!(again.code, REFUSED);
    server.stop().await;
}

#[tokio::test]
async fn downloads_land_in_the_directory_with_their_sha256() {
    let server = TestServer::start().await;
    let dir = server.temp.path().join("downloads");
    let dir_text = dir.display().to_string();
    let run = tw(
        &server,
        ALICE,
        &[
            "submit",
            "blob",
            r#"{"size":200000,"name":"data.bin"}"#,
            "--download",
            &dir_text,
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, COMPLETED, "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines[0]["type"], "completed");
    let announced = lines[0]["files"][0]["sha256"].as_str().unwrap();
    assert_eq!(lines[1]["type"], "downloaded");
    let bytes = std::fs::read(dir.join("data.bin")).unwrap();
    assert_eq!(bytes.len(), 200_000);
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, announced);
    assert_eq!(lines[1]["sha256"], announced);

    let plain = tw(
        &server,
        ALICE,
        &[
            "submit",
            "blob",
            r#"{"size":10,"name":"small.bin"}"#,
            "--download",
            &dir_text,
        ],
    )
    .await;
    assert_eq!(
        plain.stdout.trim(),
        dir.join("small.bin").display().to_string()
    );
    server.stop().await;
}

#[tokio::test]
async fn tasks_lists_and_filters_for_admins() {
    let server = TestServer::start().await;
    let long = tw(&server, ALICE, &["submit", "sleep", r#"{"ms":60000}"#]).await;
    let long = long.stdout.trim().to_owned();
    tw(&server, ALICE, &["submit", "echo", "{}", "--wait"]).await;
    tw(
        &server,
        ALICE,
        &["submit", "sleep", r#"{"ms":1,"fail":true}"#, "--wait"],
    )
    .await;

    let all = tw(&server, ADMIN, &["tasks", "--json"]).await;
    assert_eq!(all.code, COMPLETED, "{}", all.stderr);
    assert_eq!(all.json_lines().len(), 3);
    let failed = tw(&server, ADMIN, &["tasks", "--json", "--state", "failed"]).await;
    let failed = failed.json_lines();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"]["code"], "task_error");
    let sleeping = tw(
        &server,
        ADMIN,
        &["tasks", "--task", "sleep", "--client", "alice"],
    )
    .await;
    assert_eq!(
        sleeping.stdout.lines().count(),
        3,
        "header and two rows: {}",
        sleeping.stdout
    );
    let running = tw(
        &server,
        ADMIN,
        &["tasks", "--state", "running", "--state", "queued"],
    )
    .await;
    assert!(running.stdout.contains(&long), "{}", running.stdout);
    let nobody = tw(&server, ADMIN, &["tasks", "--json", "--client", "bob"]).await;
    assert!(nobody.stdout.is_empty());
    let not_admin = tw(&server, ALICE, &["tasks"]).await;
    assert_eq!(not_admin.code, REFUSED);
    tw(&server, ALICE, &["cancel", &long]).await;

    // `nodes` outside a cluster: none, and it says why (a cluster's are
    // listed in the cluster tests).
    let nodes = tw(&server, ADMIN, &["nodes"]).await;
    assert_eq!(nodes.code, COMPLETED, "{}", nodes.stderr);
    assert!(nodes.stdout.is_empty(), "{}", nodes.stdout);
    assert!(nodes.stderr.contains("local mode"), "{}", nodes.stderr);
    assert!(
        tw(&server, ADMIN, &["nodes", "--json"])
            .await
            .stdout
            .is_empty()
    );
    assert_eq!(tw(&server, ALICE, &["nodes"]).await.code, REFUSED);
    server.stop().await;
}

/// `top` in a real terminal: tmux runs it, capture-pane reads the screen.
#[tokio::test]
async fn top_shows_a_running_task_in_a_terminal() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("TASKWIRE_TEST_ALL").is_none(),
            "tmux is missing, and the full test command needs it"
        );
        eprintln!("skipped: top_shows_a_running_task_in_a_terminal needs tmux");
        return;
    }
    let server = TestServer::start().await;
    let id = tw(
        &server,
        ALICE,
        &["submit", "sleep", r#"{"ms":60000,"steps":600}"#],
    )
    .await;
    let id = id.stdout.trim().to_owned();
    let failed = tw(
        &server,
        ALICE,
        &["submit", "sleep", r#"{"ms":1,"fail":true}"#],
    )
    .await;
    let failed = failed.stdout.trim().to_owned();
    let tmux_dir = tempfile::tempdir().unwrap();
    let socket = tmux_dir.path().join("tmux.sock");
    let socket = socket.to_str().unwrap().to_owned();
    let tmux = |args: &[&str]| {
        let mut command = std::process::Command::new("tmux");
        command.args(["-S", &socket]).args(args);
        command
    };
    let shell = format!(
        "TASKWIRE_URL={} TASKWIRE_KEY={ADMIN} {} top; echo top-exited-$?; sleep 30",
        server.url(""),
        env!("CARGO_BIN_EXE_taskwire")
    );
    /// Ends the tmux server (and `top` in it) even when the test fails.
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::process::Command::new("tmux")
                .args(["-S", &self.0, "kill-server"])
                .status();
        }
    }
    let guard = Guard(socket.clone());
    let started = tmux(&["new-session", "-d", "-x", "160", "-y", "50", &shell])
        .status()
        .unwrap();
    assert!(started.success());
    let screen = || {
        let out = tmux(&["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shows = |screen: &str| {
        screen.contains("taskwire top")
            && screen
                .lines()
                .any(|l| l.contains(&id) && l.contains("sleep") && l.contains("alice"))
            && screen.contains("Running (1)")
            && screen
                .lines()
                .any(|l| l.contains(&failed) && l.contains("task_error"))
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last = String::new();
    while !shows(&last) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "top never showed the running task; the screen:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll the tmux screen with a deadline
        last = screen();
    }
    assert!(
        last.lines()
            .any(|l| l.contains("local-1") && l.contains("busy")),
        "{last}"
    );
    tmux(&["send-keys", "q"]).status().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !screen().contains("top-exited-0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "top did not quit on q"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
    drop(guard);
    tw(&server, ALICE, &["cancel", &id]).await;
    server.stop().await;
}

#[tokio::test]
async fn schedules_list_run_pause_resume() {
    #[derive(serde::Deserialize)]
    struct File {
        schedules: Vec<taskwire::schedules::FileSchedule>,
    }
    let server = TestServer::with(|c| {
        let file: File = toml::from_str(
            r#"
            [[schedules]]
            name = "nightly"
            every = "1h"
            task = "echo"
            input = { from = "schedule" }
            key = "alice"
            "#,
        )
        .unwrap();
        let mut problems = Vec::new();
        c.schedules =
            taskwire::schedules::spec::parse(file.schedules, &c.security.api_keys, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    })
    .await;
    let list = tw(&server, ADMIN, &["schedules", "--json"]).await;
    assert_eq!(list.code, COMPLETED, "{}", list.stderr);
    let schedules = list.json_lines();
    assert_eq!(schedules[0]["name"], "nightly");
    assert_eq!(schedules[0]["paused"], false);

    let run = tw(&server, ADMIN, &["schedules", "run", "nightly"]).await;
    assert_eq!(run.code, COMPLETED, "{}", run.stderr);
    let id = run.stdout.trim().to_owned();
    assert_eq!(id.len(), 32, "{}", run.stdout);
    let events = tw(&server, ALICE, &["events", &id, "--json"]).await;
    assert_eq!(
        events.code, COMPLETED,
        "the run is alice's task: {}",
        events.stderr
    );
    assert_eq!(
        events.json_lines().last().unwrap()["result"]["from"],
        "schedule"
    );

    let paused = tw(&server, ADMIN, &["schedules", "pause", "nightly"]).await;
    assert_eq!(paused.stdout.trim(), "paused nightly");
    let table = tw(&server, ADMIN, &["schedules"]).await;
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("nightly"))
        .unwrap()
        .to_owned();
    assert!(row.contains(" yes "), "{row}");
    let resumed = tw(
        &server,
        ADMIN,
        &["schedules", "resume", "nightly", "--json"],
    )
    .await;
    assert_eq!(resumed.json_lines()[0]["paused"], false);

    let missing = tw(&server, ADMIN, &["schedules", "run", "nope"]).await;
    assert_eq!(missing.code, REFUSED);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);
    let not_admin = tw(&server, ALICE, &["schedules"]).await;
    assert_eq!(not_admin.code, REFUSED);
    server.stop().await;
}
