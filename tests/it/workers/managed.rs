//! Managed workers: the supervisor with real child processes.

use std::path::Path;

use super::{Serve, alive, gone, here, node, pids, toml_str};
use crate::support::eventually;

/// A `[[workers]]` block running `behave.mjs` with these env entries.
fn group(name: &str, node: &Path, env: &[(&str, String)], extra: &str) -> String {
    let env: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("{k} = {}", toml_str(v)))
        .collect();
    format!(
        "[[workers]]\nname = {}\ncommand = [{}, {}]\nenv = {{ {} }}\n{extra}\n",
        toml_str(name),
        toml_str(&node.to_string_lossy()),
        toml_str(&here("behave.mjs")),
        env.join(", "),
    )
}

#[tokio::test]
async fn a_worker_that_never_says_hello_is_killed_and_restarted() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let config = group(
        "quiet",
        &node,
        &[
            ("BEHAVE_HELLO", "never".to_owned()),
            ("BEHAVE_PIDFILE", pidfile.to_string_lossy().into_owned()),
        ],
        "startup_timeout_s = 1",
    );
    let serve = Serve::start(&config);
    eventually("readyz answers", || async { serve.readyz().await.0 != 0 }).await;
    let (status, body) = serve.readyz().await;
    assert_eq!(status, 503);
    assert!(body.contains("quiet"), "{body}");
    eventually("a second process was started", || async {
        pids(&pidfile).len() >= 2
    })
    .await;
    let first = pids(&pidfile)[0];
    gone(first, "the silent process is killed").await;
    let line = serve
        .logged(&["sent no hello in time; killed", "quiet-1"])
        .await;
    assert!(line.contains("startup_timeout_s=1"), "{line}");
    serve.logged(&["restarting worker", "quiet-1"]).await;
    serve
        .logged(&["worker killed by signal", "quiet-1", "signal=9"])
        .await;
}

#[tokio::test]
async fn crashes_at_start_are_logged_and_restarted_with_backoff() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let config = group(
        "crashy",
        &node,
        &[
            ("BEHAVE_HELLO", "exit".to_owned()),
            ("BEHAVE_PIDFILE", pidfile.to_string_lossy().into_owned()),
            (
                "BEHAVE_STDERR",
                "initialisation failed: no licence".to_owned(),
            ),
        ],
        "instances = 1",
    );
    let serve = Serve::start(&config);
    eventually("three starts", || async { pids(&pidfile).len() >= 3 }).await;
    serve.logged(&["worker started", "crashy-1", "pid="]).await;
    serve.logged(&["worker exited", "crashy-1", "code=3"]).await;
    serve
        .logged(&["crashy-1", "initialisation failed: no licence"])
        .await;
    // The delays grow: 0.5 s, 1 s, 2 s (±20 %).
    let log = serve.log();
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("restarting worker"))
        .filter_map(|l| {
            l.split("delay_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(delays.len() >= 2, "{log}");
    assert!(delays[1] > delays[0], "{delays:?}");
    assert!((400..=600).contains(&delays[0]), "{delays:?}");
}

#[tokio::test]
async fn sigkill_of_serve_takes_its_workers_along() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let children = dir.path().join("children");
    let config = group(
        "orphan",
        &node,
        &[
            ("BEHAVE_HELLO", "never".to_owned()),
            ("BEHAVE_STUBBORN", "1".to_owned()),
            ("BEHAVE_PIDFILE", pidfile.to_string_lossy().into_owned()),
            (
                "BEHAVE_CHILD_PIDFILE",
                children.to_string_lossy().into_owned(),
            ),
        ],
        "instances = 2\nstartup_timeout_s = 600",
    );
    let mut serve = Serve::start(&config);
    eventually("both processes run", || async { pids(&pidfile).len() == 2 }).await;
    eventually("both started a child", || async {
        pids(&children).len() == 2
    })
    .await;
    let (workers, children) = (pids(&pidfile), pids(&children));
    assert!(workers.iter().chain(&children).all(|pid| alive(*pid)));
    serve.signal("KILL");
    serve.exited().await;
    for pid in workers {
        gone(pid, "a worker of a SIGKILLed serve dies too").await;
    }
    for pid in children {
        gone(pid, "what a worker started dies with it").await;
    }
}

#[tokio::test]
async fn sigterm_of_serve_stops_its_workers_and_exits_zero() {
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let config = group(
        "term",
        &node,
        &[
            ("BEHAVE_HELLO", "never".to_owned()),
            ("BEHAVE_STUBBORN", "1".to_owned()),
            ("BEHAVE_PIDFILE", pidfile.to_string_lossy().into_owned()),
        ],
        "startup_timeout_s = 600",
    );
    let mut serve = Serve::start(&config);
    eventually("the process runs", || async { pids(&pidfile).len() == 1 }).await;
    let pid = pids(&pidfile)[0];
    serve.signal("TERM");
    assert_eq!(serve.exited().await, Some(0));
    assert!(!alive(pid), "no worker outlives serve");
    assert_eq!(
        pids(&pidfile).len(),
        1,
        "nothing was restarted during shutdown"
    );
}

#[tokio::test]
async fn sigterm_with_running_external_tasks_drains_them_and_leaves_no_child() {
    use serde_json::json;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let config = group(
        "busy",
        &node,
        &[("BEHAVE_PIDFILE", pidfile.to_string_lossy().into_owned())],
        "",
    );
    let mut serve = Serve::start(&config);
    eventually("serve is ready (the group said hello)", || async {
        serve.readyz().await.0 == 200
    })
    .await;
    let mut request = format!("ws://127.0.0.1:{}/v1/ws", serve.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", super::KEY)).unwrap(),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = crate::support::Ws {
        stream,
        protocol: None,
    };
    assert_eq!(ws.next().await["type"], "welcome");
    let task = ws
        .submit_ok("w_sleep", json!({"ms": 60000, "steps": 600}))
        .await;
    ws.until(|e| e["task_id"] == task.as_str() && e["type"] == "progress")
        .await;
    let pid = pids(&pidfile)[0];
    serve.signal("TERM");
    let end = ws.terminal(&task).await;
    assert_eq!(end["type"], "cancelled", "{end}");
    assert_eq!(end["reason"], "shutdown");
    assert_eq!(ws.closed().await, Some(1001));
    assert_eq!(serve.exited().await, Some(0));
    assert!(!alive(pid), "the worker is gone with serve");
    serve.logged(&["worker exited", "busy-1"]).await;
}
