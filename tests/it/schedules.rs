//! Schedules: fired by a timer, on demand, paused, overlapping; a bad one
//! refused at startup.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN, ALICE, TestServer, eventually};

/// Schedules from `[[schedules]]` TOML, checked like the config file does.
fn schedules(config: &taskwire::config::Config, text: &str) -> Vec<taskwire::schedules::Schedule> {
    #[derive(serde::Deserialize)]
    struct File {
        schedules: Vec<taskwire::schedules::FileSchedule>,
    }
    let file: File = toml::from_str(text).unwrap();
    let mut problems = Vec::new();
    let parsed =
        taskwire::schedules::spec::parse(file.schedules, &config.security.api_keys, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    parsed
}

async fn start(text: &'static str, workers: usize) -> TestServer {
    TestServer::with(move |c| {
        c.limits.workers = workers;
        c.schedules = schedules(c, text);
    })
    .await
}

async fn list(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.get_json(ADMIN, "/v1/schedules").await;
    assert_eq!(status, 200, "{body}");
    body["schedules"].as_array().unwrap().clone()
}

async fn runs(server: &TestServer, name: &str) -> Vec<Value> {
    list(server)
        .await
        .into_iter()
        .find(|s| s["name"] == name)
        .map(|s| s["runs"].as_array().unwrap().clone())
        .unwrap_or_default()
}

async fn post(server: &TestServer, path: &str) -> (u16, Value) {
    let response = TestServer::http()
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_schedule_fires_on_time_and_its_runs_are_tasks_tagged_with_it() {
    let server = start(
        r#"
        [[schedules]]
        name = "tick"
        every = "1s"
        task = "echo"
        input = { hello = "world" }
        key = "alice"
        "#,
        2,
    )
    .await;
    eventually("two runs completed", || async {
        runs(&server, "tick")
            .await
            .iter()
            .filter(|r| r["state"] == "completed")
            .count()
            >= 2
    })
    .await;
    let runs = runs(&server, "tick").await;
    assert_eq!(runs[0]["trigger"], "timer");
    let id = runs
        .iter()
        .find(|r| r["state"] == "completed")
        .and_then(|r| r["task_id"].as_str())
        .unwrap()
        .to_owned();
    // An ordinary task of the schedule's key, with its result.
    let (status, snapshot) = server.get_json(ALICE, &format!("/v1/tasks/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(snapshot["result"], json!({"hello": "world"}));
    let (_, admin) = server.get_json(ADMIN, "/v1/admin/tasks").await;
    let tagged = admin["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id.as_str())
        .unwrap();
    assert_eq!(tagged["schedule"], "tick");
    assert_eq!(tagged["client"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_cron_schedule_with_seconds_fires() {
    let server = start(
        r#"
        [[schedules]]
        name = "every-second"
        cron = "* * * * * *"
        timezone = "Europe/Zurich"
        task = "echo"
        key = "alice"
        "#,
        2,
    )
    .await;
    let first = list(&server).await;
    assert!(
        first[0]["when"]
            .as_str()
            .unwrap()
            .starts_with("cron * * * * * *")
    );
    assert!(first[0]["next_run_at"].is_string());
    eventually("a cron run completed", || async {
        runs(&server, "every-second")
            .await
            .iter()
            .any(|r| r["state"] == "completed")
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_overlapping_run_is_skipped_and_shown_as_skipped() {
    let server = start(
        r#"
        [[schedules]]
        name = "slow"
        every = "1s"
        task = "sleep"
        input = { ms = 2500 }
        key = "alice"
        "#,
        2,
    )
    .await;
    eventually("a skipped run", || async {
        runs(&server, "slow")
            .await
            .iter()
            .any(|r| r["state"] == "skipped")
    })
    .await;
    let runs = runs(&server, "slow").await;
    let skipped = runs.iter().find(|r| r["state"] == "skipped").unwrap();
    assert!(skipped["task_id"].is_null());
    assert_eq!(skipped["note"], "the previous run had not ended");
    // Never two at once.
    let active = runs
        .iter()
        .filter(|r| matches!(r["state"].as_str(), Some("running" | "queued")))
        .count();
    assert!(active <= 1, "{runs:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_overlapping_run_is_queued_when_the_schedule_says_so() {
    let server = start(
        r#"
        [[schedules]]
        name = "pile"
        every = "1s"
        task = "sleep"
        input = { ms = 2500 }
        key = "alice"
        overlap = "queue"
        concurrency_key = "one-at-a-time"
        "#,
        2,
    )
    .await;
    eventually("one running and one queued", || async {
        let runs = runs(&server, "pile").await;
        runs.iter().any(|r| r["state"] == "running") && runs.iter().any(|r| r["state"] == "queued")
    })
    .await;
    assert!(
        runs(&server, "pile")
            .await
            .iter()
            .all(|r| r["state"] != "skipped")
    );
    server.stop().await;
}

#[tokio::test]
async fn run_now_pause_and_resume() {
    let server = start(
        r#"
        [[schedules]]
        name = "nightly"
        cron = "0 3 * * *"
        task = "sleep"
        input = { ms = 10, fail = true }
        key = "alice"
        "#,
        2,
    )
    .await;
    let (status, body) = post(&server, "/v1/schedules/nightly/run").await;
    assert_eq!(status, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    // The failed run shows the error a maintainer needs.
    eventually("the run failed", || async {
        runs(&server, "nightly")
            .await
            .iter()
            .any(|r| r["state"] == "failed")
    })
    .await;
    let run = runs(&server, "nightly").await.into_iter().next().unwrap();
    assert_eq!(run["task_id"], id.as_str());
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["error"]["code"], "task_error");
    assert!(run["duration_ms"].is_u64());
    let (status, paused) = post(&server, "/v1/schedules/nightly/pause").await;
    assert_eq!(status, 200);
    assert_eq!(paused["paused"], true);
    assert!(paused["next_run_at"].is_null());
    // Run now still works while paused.
    assert_eq!(post(&server, "/v1/schedules/nightly/run").await.0, 202);
    let (_, resumed) = post(&server, "/v1/schedules/nightly/resume").await;
    assert_eq!(resumed["paused"], false);
    assert!(
        resumed["next_run_at"]
            .as_str()
            .unwrap()
            .contains("T03:00:00")
    );
    assert_eq!(post(&server, "/v1/schedules/nope/run").await.0, 404);
    // Admin only.
    let (status, _) = server.get_json(ALICE, "/v1/schedules").await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_schedule_does_not_fire() {
    let server = start(
        r#"
        [[schedules]]
        name = "tick"
        every = "1s"
        task = "echo"
        key = "alice"
        "#,
        2,
    )
    .await;
    eventually("a first run", || async {
        !runs(&server, "tick").await.is_empty()
    })
    .await;
    assert_eq!(post(&server, "/v1/schedules/tick/pause").await.0, 200);
    let before = runs(&server, "tick").await.len();
    // The paused clock moves ten periods on.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(runs(&server, "tick").await.len(), before);
    assert_eq!(post(&server, "/v1/schedules/tick/resume").await.0, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually("runs again", || async {
        runs(&server, "tick").await.len() > before
    })
    .await;
    server.stop().await;
}

#[test]
fn a_bad_schedule_stops_startup_naming_the_schedule_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskwire.toml");
    std::fs::write(
        &path,
        format!(
            "[[api_keys]]\nname = \"ops\"\nsha256 = \"{}\"\n\n\
             [[schedules]]\nname = \"sync\"\ncron = \"*/5 25 * * *\"\ntask = \"echo\"\nkey = \"ops\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_taskwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"schedules[0] ("sync").cron: `*/5 25 * * *`"#),
        "{stderr}"
    );
}
