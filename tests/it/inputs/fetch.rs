//! URL inputs: fetched before the task runs, behind the SSRF guard.

use serde_json::{Value, json};

use super::{Origin, SHORT, nothing_left, pattern, run, server, sha256_hex, temp_bytes};
use crate::support::TestServer;

fn failed(events: &[Value]) -> &Value {
    let last = events.last().unwrap();
    assert_eq!(last["type"], "failed", "{last}");
    &last["error"]
}

#[tokio::test]
async fn a_url_input_is_fetched_before_the_task_runs_and_progress_says_so() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let events = run(
        &server,
        "inputs_echo",
        json!({"papers": [{"$url": origin.url("/file/300000"), "name": "paper.pdf"},
                          {"$url": origin.url("/chunked/70000")}]}),
    )
    .await;
    let progress: Vec<&Value> = events.iter().filter(|e| e["type"] == "progress").collect();
    assert_eq!(progress.len(), 2, "{events:?}");
    assert_eq!(progress[0]["message"], "fetching input 1 of 2");
    assert_eq!(progress[0]["data"]["input"], "$.papers[0]");
    assert_eq!(progress[1]["data"]["input"], "$.papers[1]");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    let inputs = &done["result"]["inputs"];
    assert_eq!(inputs[0]["name"], "paper.pdf");
    assert_eq!(inputs[0]["size"], 300_000);
    assert_eq!(inputs[0]["sha256"], sha256_hex(&pattern(300_000)));
    assert_eq!(inputs[0]["read_sha256"], inputs[0]["sha256"]);
    // Without a name: the URL's last segment.
    assert_eq!(inputs[1]["name"], "70000");
    assert_eq!(inputs[1]["size"], 70_000);
    nothing_left(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_401_without_the_header_and_a_200_with_it() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/auth")}}),
    )
    .await;
    let error = failed(&events);
    assert_eq!(error["code"], "input_fetch_failed", "{error}");
    assert_eq!(error["details"]["status"], 401);
    assert_eq!(error["details"]["path"], "$.f");
    assert!(
        !error.to_string().contains(&origin.url("")),
        "the URL is not echoed: {error}"
    );

    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/auth"), "headers": {"Authorization": "Bearer letmein"}}}),
    )
    .await;
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    assert_eq!(done["result"]["inputs"][0]["size"], "secret paper".len());
    server.stop().await;
}

#[tokio::test]
async fn redirects_to_forbidden_addresses_are_refused() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:192.168.0.1]/",
        // 169.254.169.254, spelled as one number.
        "http://2852039166/",
        "http://0.0.0.0/",
    ] {
        let url = origin.url(&format!("/redirect?to={}", urlencode(target)));
        let events = run(&server, "inputs_echo", json!({"f": {"$url": url}})).await;
        let error = failed(&events);
        assert_eq!(error["code"], "input_fetch_failed", "{target}: {error}");
        let reason = error["details"]["reason"].as_str().unwrap();
        assert!(reason.contains("may not reach"), "{target}: {reason}");
    }
    // A redirect to another scheme.
    let url = origin.url(&format!("/redirect?to={}", urlencode("file:///etc/passwd")));
    let events = run(&server, "inputs_echo", json!({"f": {"$url": url}})).await;
    assert!(
        failed(&events)["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("only http")
    );
    server.stop().await;
}

#[tokio::test]
async fn names_are_vetted_after_resolution_and_the_allow_list_is_needed_for_loopback() {
    let origin = Origin::start().await;
    // No allow-list: loopback is refused, by address and by name.
    let server = TestServer::with_tasks(|_| {}, vec![std::sync::Arc::new(super::InputsEcho)]).await;
    for url in [
        origin.url("/file/10"),
        format!("http://localhost:{}/file/10", origin.addr.port()),
    ] {
        let events = run(&server, "inputs_echo", json!({"f": {"$url": url}})).await;
        let error = failed(&events);
        let reason = error["details"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("loopback") && reason.contains("forbidden")
                || reason.contains("may not reach"),
            "{url}: {reason}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let origin = Origin::start().await;
    let server = server(|c| c.inputs.fetch_timeout = SHORT).await;
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/slow")}}),
    )
    .await;
    let error = failed(&events);
    assert_eq!(error["code"], "input_fetch_failed");
    assert!(
        error["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("fetch_timeout_s"),
        "{error}"
    );
    nothing_left(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_or_without_a_length() {
    let origin = Origin::start().await;
    let server = server(|c| c.inputs.max_fetch_bytes = 100_000).await;
    for path in ["/file/100001", "/chunked/200000"] {
        let events = run(
            &server,
            "inputs_echo",
            json!({"f": {"$url": origin.url(path)}}),
        )
        .await;
        let error = failed(&events);
        assert!(
            error["details"]["reason"]
                .as_str()
                .unwrap()
                .contains("max_fetch_bytes"),
            "{path}: {error}"
        );
    }
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/file/100000")}}),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "completed");
    nothing_left(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn too_many_redirects_and_error_statuses() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/loop/0")}}),
    )
    .await;
    assert!(
        failed(&events)["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("redirects")
    );
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": origin.url("/status/503")}}),
    )
    .await;
    assert_eq!(failed(&events)["details"]["status"], 503);
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": format!("http://127.0.0.1:{port}/")}}),
    )
    .await;
    assert!(
        failed(&events)["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    server.stop().await;
}

#[tokio::test]
async fn headers_go_only_to_the_origin_the_reference_named() {
    let first = Origin::start().await;
    let second = Origin::start().await;
    let server = server(|_| {}).await;
    let headers = json!({"Authorization": "Bearer letmein", "X-Paper": "1"});
    // Same origin: the headers go along.
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": first.url("/headers"), "headers": headers}}),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "completed");
    // Another origin after a redirect: they do not.
    let url = first.url(&format!("/redirect?to={}", urlencode(&second.url("/auth"))));
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": url, "headers": headers}}),
    )
    .await;
    assert_eq!(failed(&events)["details"]["status"], 401);
    // The same origin after a redirect: they do.
    let url = first.url(&format!("/redirect?to={}", urlencode("/auth")));
    let events = run(
        &server,
        "inputs_echo",
        json!({"f": {"$url": url, "headers": headers}}),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn quota_exhaustion_mid_fetch_leaves_nothing_behind() {
    let origin = Origin::start().await;
    let server = server(|c| c.files.max_temp_bytes = 512 * 1024).await;
    let events = run(
        &server,
        "inputs_echo",
        json!({"a": {"$url": origin.url("/chunked/100000")}, "b": {"$url": origin.url("/chunked/2000000")}}),
    )
    .await;
    let error = failed(&events);
    assert_eq!(error["code"], "storage_full", "{error}");
    assert_eq!(error["details"]["path"], "$.b");
    nothing_left(&server).await;
    crate::support::eventually("the quota is given back", || async {
        temp_bytes(&server).await == 0
    })
    .await;
    // The next task gets the space.
    let events = run(
        &server,
        "inputs_echo",
        json!({"a": {"$url": origin.url("/chunked/400000")}}),
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn a_cancelled_fetch_leaves_nothing_behind() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let mut ws = server.ws(crate::support::ALICE).await;
    let id = ws
        .submit_ok("inputs_echo", json!({"f": {"$url": origin.url("/slow")}}))
        .await;
    ws.until(|v| v["type"] == "progress" && v["task_id"] == id.as_str())
        .await;
    crate::support::eventually("the fetch has begun writing", || async {
        !super::left_behind(&server).is_empty()
    })
    .await;
    ws.send(json!({"type": "cancel", "task_id": id})).await;
    assert_eq!(ws.terminal(&id).await["type"], "cancelled");
    nothing_left(&server).await;
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
