//! External workers get their tasks' input files: `assign.inputs` with a
//! per-attempt download link (and the local path for managed workers); URL
//! inputs are fetched by the server before the `assign`, and a failed or
//! cancelled fetch never reaches the worker.

use serde_json::{Value, json};

use super::{Origin, pattern, server, sha256_hex, upload_ok};
use crate::support::{ALICE, TestServer, WORKER, Ws};
use crate::workers::remote::{connect, hello};

/// A remote worker serving `w_files`, welcomed.
async fn worker(server: &TestServer) -> Ws {
    let mut ws = connect(server, WORKER).await;
    ws.send(hello("files-1", 1, &["w_files"], &[])).await;
    assert_eq!(ws.next().await["type"], "welcome");
    ws
}

/// The worker's next `assign` (heartbeats and the like skipped).
async fn assigned(ws: &mut Ws) -> Value {
    ws.until(|m| m["type"] == "assign").await
}

async fn complete(ws: &mut Ws, assign: &Value, result: Value) {
    ws.send(
        json!({"type": "complete", "ref": "c", "task_id": assign["task_id"],
                   "attempt": assign["attempt"], "result": result}),
    )
    .await;
    assert_eq!(ws.until(|m| m["ref"] == "c").await["type"], "ok");
}

#[tokio::test]
async fn a_remote_worker_downloads_its_inputs_through_links_that_die_with_the_attempt() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let mut worker = worker(&server).await;
    let zip = pattern(300_000);
    let upload = upload_ok(&server, ALICE, "device-17.zip", zip.clone()).await;
    let url = origin.url("/file/200000");

    let mut client = server.ws(ALICE).await;
    let task = client
        .submit_ok(
            "w_files",
            json!({"package": {"$upload": upload}, "extra": [{"$url": url, "name": "extra.bin"}]}),
        )
        .await;
    let assign = assigned(&mut worker).await;
    assert_eq!(assign["task_id"], task.as_str());
    // The input is the client's, references and all.
    assert_eq!(assign["input"]["package"]["$upload"], upload.as_str());
    let inputs = assign["inputs"].as_array().expect("assign.inputs");
    assert_eq!(inputs.len(), 2, "{assign}");
    // Path order: `$.extra[0]` before `$.package`.
    assert_eq!(inputs[0]["path"], "$.extra[0]");
    assert_eq!(inputs[0]["name"], "extra.bin");
    assert_eq!(inputs[0]["size"], 200_000);
    assert_eq!(inputs[1]["path"], "$.package");
    assert_eq!(inputs[1]["name"], "device-17.zip");
    assert_eq!(inputs[1]["sha256"], sha256_hex(&zip));
    for input in inputs {
        assert!(
            input.get("local_path").is_none(),
            "a remote worker is not on our disk: {input}"
        );
    }

    // The links need no key; a Range works as on downloads.
    let link = inputs[1]["url"].as_str().unwrap().to_owned();
    assert!(link.starts_with("/v1/inputs/"), "{link}");
    let http = TestServer::http();
    let bytes = http
        .get(server.url(&link))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&zip));
    let fetched = http
        .get(server.url(inputs[0]["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(fetched.to_vec(), pattern(200_000));
    let part = http
        .get(server.url(&link))
        .header("Range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().to_vec(), zip[..10].to_vec());
    let forged = format!("/v1/inputs/{}", "0".repeat(32));
    assert_eq!(
        http.get(server.url(&forged)).send().await.unwrap().status(),
        404
    );

    complete(&mut worker, &assign, json!({"read": bytes.len()})).await;
    let end = client.terminal(&task).await;
    assert_eq!(end["type"], "completed", "{end}");
    assert_eq!(
        http.get(server.url(&link)).send().await.unwrap().status(),
        404,
        "the link died with the attempt"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_failed_fetch_fails_the_task_and_the_worker_never_hears_of_it() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let mut worker = worker(&server).await;
    let mut client = server.ws(ALICE).await;

    let refused = client
        .submit_ok("w_files", json!({"paper": {"$url": origin.url("/auth")}}))
        .await;
    let end = client.terminal(&refused).await;
    assert_eq!(end["type"], "failed", "{end}");
    assert_eq!(end["error"]["code"], "input_fetch_failed");
    assert_eq!(end["error"]["details"]["status"], 401);
    assert_eq!(end["error"]["details"]["path"], "$.paper");

    // The worker's slot is free and its next assign is the next task.
    let next = client
        .submit_ok(
            "w_files",
            json!({"paper": {"$url": origin.url("/file/10")}}),
        )
        .await;
    let assign = assigned(&mut worker).await;
    assert_eq!(assign["task_id"], next.as_str(), "{assign}");
    complete(&mut worker, &assign, json!(null)).await;
    assert_eq!(client.terminal(&next).await["type"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn a_task_cancelled_while_its_input_is_fetched_is_never_assigned() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let mut worker = worker(&server).await;
    let mut client = server.ws(ALICE).await;

    let slow = client
        .submit_ok("w_files", json!({"paper": {"$url": origin.url("/slow")}}))
        .await;
    let fetching = client
        .until(|m| m["task_id"] == slow.as_str() && m["type"] == "progress")
        .await;
    assert_eq!(fetching["data"]["phase"], "fetch", "{fetching}");
    client
        .send(json!({"type": "cancel", "ref": "x", "task_id": slow}))
        .await;
    let end = client.terminal(&slow).await;
    assert_eq!(end["type"], "cancelled", "{end}");

    let next = client.submit_ok("w_files", json!({"n": 1})).await;
    let assign = assigned(&mut worker).await;
    assert_eq!(assign["task_id"], next.as_str(), "{assign}");
    assert!(assign.get("inputs").is_none(), "no files, no inputs field");
    complete(&mut worker, &assign, json!(null)).await;
    assert_eq!(client.terminal(&next).await["type"], "completed");
    server.stop().await;
}
