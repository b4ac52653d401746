//! What the nodes share besides tasks: browser tokens and files.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{KEY, Nats, Node};
use crate::support::{Frame, Ws, eventually};

fn sha256_hex(bytes: &[u8]) -> String {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    taskwire::auth::hex(&digest)
}

async fn post_as(node: &Node, secret: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(path))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_as(node: &Node, secret: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(node.url(path))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_minted_on_a_works_on_b_until_revoked_on_b() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--workers", "1"]);
    let b = Node::start("b", &url, &["--workers", "1"]);
    a.ready().await;
    b.ready().await;
    let (status, minted) = a
        .post("/v1/tokens", json!({"tasks": ["echo"], "ttl_s": 600}))
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();

    // At once on B: REST submit and status, with the token.
    let (status, body) = post_as(
        &b,
        &token,
        "/v1/tasks",
        json!({"task": "echo", "input": {"via": "token"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    assert_eq!(get_as(&b, &token, &format!("/v1/tasks/{id}")).await, 200);
    // Its scope holds on B too: only `echo`.
    let (status, body) = post_as(
        &b,
        &token,
        "/v1/tasks",
        json!({"task": "sleep", "input": {"ms": 1}}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    // A WebSocket on B authenticated by the token's `auth` message.
    let request = format!("ws://127.0.0.1:{}/v1/ws", b.port)
        .into_client_request()
        .unwrap();
    let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut ws = Ws {
        stream,
        protocol: None,
    };
    ws.send(json!({"type": "auth", "key": token})).await;
    assert_eq!(ws.next().await["type"], "welcome");

    // Revoked on B: B's socket closes, and A refuses it too.
    let status = reqwest::Client::new()
        .delete(b.url(&format!("/v1/tokens/{token}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 204);
    assert_eq!(ws.closed().await, Some(4401));
    eventually("A refuses the token revoked on B", || async {
        get_as(&a, &token, &format!("/v1/tasks/{id}")).await == 401
    })
    .await;
}

#[tokio::test]
async fn a_file_made_on_b_downloads_from_a_and_outlives_b() {
    const SIZE: u64 = 300_000;
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let ttl = ["--file-ttl-s", "8"];
    let a = Node::start("a", &url, &["--cluster-pool-tasks", "none", ttl[0], ttl[1]]);
    let mut b = Node::start("b", &url, &["--workers", "1", ttl[0], ttl[1]]);
    a.ready().await;
    b.ready().await;
    a.sees_workers("b").await;
    let mut on_a = a.ws().await;

    // Stream delivery to a submitter on A of a file made on B.
    let reply = on_a
        .submit(
            "blob",
            json!({"size": SIZE, "name": "streamed.bin"}),
            json!({"delivery": "stream"}),
        )
        .await;
    assert_eq!(reply["type"], "accepted", "{reply}");
    let streamed_id = reply["task_id"].as_str().unwrap().to_owned();
    let mut streamed = Vec::new();
    let mut ended = None;
    let completed = loop {
        match on_a.frame().await {
            Frame::Json(m) if m["task_id"] == streamed_id.as_str() => {
                match m["type"].as_str().unwrap_or("") {
                    "stream_end" => ended = Some(m),
                    "completed" | "failed" | "cancelled" => break m,
                    _ => {}
                }
            }
            Frame::Binary(data) => streamed.extend_from_slice(&data[4..]),
            Frame::Json(_) => {}
            Frame::Closed(code) => panic!("closed {code:?}"),
        }
    };
    assert_eq!(completed["type"], "completed", "{completed}");
    let ended = ended.expect("the file was streamed");
    assert_eq!(streamed.len() as u64, SIZE);
    assert_eq!(ended["sha256"], sha256_hex(&streamed).as_str());

    // A link made on B, downloaded from A: whole, and a range.
    let done = on_a
        .submit_ok("blob", json!({"size": SIZE, "name": "report.bin"}))
        .await;
    let end = on_a.terminal(&done).await;
    assert_eq!(end["type"], "completed", "{end}");
    let file = end["files"][0].clone();
    let link = file["url"].as_str().unwrap().to_owned();
    let response = reqwest::get(a.url(&link)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, SIZE);
    assert_eq!(file["sha256"], sha256_hex(&bytes).as_str());
    let ranged = reqwest::Client::new()
        .get(a.url(&link))
        .header("range", "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(ranged.bytes().await.unwrap()[..], bytes[1000..1100]);
    // A wrong name under a right token is no file.
    let wrong = link.rsplit_once('/').unwrap().0.to_owned() + "/other.bin";
    assert_eq!(reqwest::get(a.url(&wrong)).await.unwrap().status(), 404);

    // B dies: a node that never saw the file serves it.
    b.kill9();
    let c = Node::start("c", &url, &["--cluster-pool-tasks", "none", ttl[0], ttl[1]]);
    c.ready().await;
    let response = reqwest::get(c.url(&link)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.bytes().await.unwrap(), bytes);
    // After file_ttl_s, 410 on every node.
    eventually("the link expires on C", || async {
        reqwest::get(c.url(&link)).await.unwrap().status().as_u16() == 410
    })
    .await;
    assert_eq!(reqwest::get(a.url(&link)).await.unwrap().status(), 410);
}

/// An upload made on A is used by a REST submit received by C (a client
/// behind a load balancer), and the task runs on B: C asks the other nodes
/// and A stores the upload for the task. Another token's upload and an
/// unknown id are `not_found`, as on one node.
#[tokio::test]
async fn an_upload_made_on_a_is_used_by_a_submit_on_c() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let none = ["--cluster-pool-tasks", "none"];
    let a = Node::start("a", &url, &none);
    let b = Node::start("b", &url, &["--workers", "1"]);
    let c = Node::start("c", &url, &none);
    for node in [&a, &b, &c] {
        node.ready().await;
    }
    c.sees_workers("b").await;
    eventually("C lists A up", || async {
        let (_, nodes) = c.get("/v1/admin/nodes").await;
        nodes["nodes"]
            .as_array()
            .is_some_and(|list| list.iter().any(|n| n["name"] == "a" && n["state"] == "up"))
    })
    .await;
    let mint = || async {
        let (status, minted) = a
            .post("/v1/tokens", json!({"tasks": ["pdf_check"], "ttl_s": 600}))
            .await;
        assert_eq!(status, 201, "{minted}");
        minted["token"].as_str().unwrap().to_owned()
    };
    let (mine, other) = (mint().await, mint().await);
    let upload = super::upload_pdf(&a, &mine).await;
    let submit = |upload_id: &Value| json!({"task": "pdf_check", "input": {"page_size": "A4", "files": [{"$upload": upload_id}]}});

    // Not the other token's (scope "own"), on C as on A.
    for node in [&c, &a] {
        let (status, body) = post_as(node, &other, "/v1/tasks", submit(&upload["upload_id"])).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert_eq!(body["error"]["details"]["path"], "$.files[0]", "{body}");
    }
    // No such upload anywhere.
    let unknown = json!(format!("up_{}", "0".repeat(32)));
    let (status, body) = c.post("/v1/tasks", submit(&unknown)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["details"]["path"], "$.files[0]", "{body}");

    // Its own token's, and the key's (which sees its tokens' uploads), on C.
    for secret in [mine.as_str(), KEY] {
        let (status, body) = post_as(&c, secret, "/v1/tasks", submit(&upload["upload_id"])).await;
        assert_eq!(status, 202, "{body}");
        let id = body["task_id"].as_str().unwrap().to_owned();
        let events = super::history(&c, &id).await;
        super::assert_one_terminal(&events);
        let started = events.iter().find(|e| e["type"] == "started").unwrap();
        assert!(
            started["worker"]
                .as_str()
                .is_some_and(|w| w.starts_with("b/")),
            "{started}"
        );
        let done = events.last().unwrap();
        assert_eq!(done["type"], "completed", "{done}");
        let report = &done["result"]["files"][0];
        assert_eq!(report["status"], "ok", "{done}");
        assert_eq!(report["name"], "paper.pdf", "{done}");
    }
    // `GET` and `DELETE` of it on other nodes: its own, not another token's.
    let path = format!("/v1/uploads/{}", upload["upload_id"].as_str().unwrap());
    let response = reqwest::Client::new()
        .get(c.url(&path))
        .bearer_auth(&mine)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let seen: Value = response.json().await.unwrap();
    for field in ["upload_id", "name", "size", "sha256", "content_type"] {
        assert_eq!(
            seen[field], upload[field],
            "{field}: {seen} against {upload}"
        );
    }
    assert_eq!(get_as(&c, &other, &path).await, 404);
    let delete = |node: &Node, secret: &str| {
        reqwest::Client::new()
            .delete(node.url(&path))
            .bearer_auth(secret)
            .send()
    };
    assert_eq!(delete(&b, &other).await.unwrap().status().as_u16(), 404);
    assert_eq!(delete(&b, &mine).await.unwrap().status().as_u16(), 204);
    assert_eq!(get_as(&a, &mine, &path).await, 404, "forgotten on A");
    assert_eq!(get_as(&c, &mine, &path).await, 404);
    let (status, body) = post_as(&c, &mine, "/v1/tasks", submit(&upload["upload_id"])).await;
    assert_eq!(status, 404, "{body}");

    // The copies stored for the two tasks go with their ends.
    super::stored_uploads_all_deleted(&url).await;
}

/// A node answers the requests other nodes send it, unreadable ones
/// included, and holds at most 256 open at once: one more is told at once
/// that it is busy instead of waiting its turn.
#[tokio::test]
async fn a_node_answers_other_nodes_requests_within_its_bound() {
    let Some(nats) = Nats::start() else {
        return;
    };
    nats.listening().await;
    let url = nats.url();
    let a = Node::start("a", &url, &["--cluster-pool-tasks", "none"]);
    a.ready().await;
    let upload = super::upload_pdf(&a, KEY).await;
    let nats_client = async_nats::connect(url.as_str()).await.unwrap();
    let ask = |subject: &'static str, body: String| {
        let nats_client = nats_client.clone();
        async move {
            let reply = nats_client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };

    // Ready means its request subjects are subscribed: a request now is
    // answered (NATS says "no responders" otherwise).
    for subject in ["tw.node.a.req", "tw.node.a.upload"] {
        let answered = nats_client.request(subject, "{}".into()).await;
        assert!(answered.is_ok(), "{subject}: {answered:?}");
    }
    // Unreadable requests get their refusal, on both subjects.
    let reply = ask("tw.node.a.req", "{not json".to_owned()).await;
    assert_eq!(reply["code"], "not_found", "{reply}");
    let reply = ask("tw.node.a.upload", "{not json".to_owned()).await;
    assert_eq!(reply["answer"], "failed", "{reply}");
    assert_eq!(reply["reason"], "unreadable ask", "{reply}");

    // 1,000 copies asked at once: the node stores 8 at a time and holds at
    // most 256 asks open, so the first 256 are stored and some of the rest
    // are turned away at once.
    let asks = (0..1000).map(|n| {
        let body = json!({"upload": upload["upload_id"], "client": "tester",
            "only_token": null, "op": "store", "object": format!("in-bound-{n}")});
        ask("tw.node.a.upload", body.to_string())
    });
    let answers = futures::future::join_all(asks).await;
    let found = answers.iter().filter(|a| a["answer"] == "found").count();
    let busy = answers
        .iter()
        .filter(|a| a["answer"] == "failed" && a["reason"] == "too many asks about uploads at once")
        .count();
    assert_eq!(
        found + busy,
        1000,
        "{:?}",
        answers.iter().find(|a| a["answer"] != "found")
    );
    assert!(found >= 256, "{found} stored");
    assert!(busy >= 1, "none turned away");
    for a in &answers[..3] {
        assert_eq!(a["answer"], "found", "{a}");
        assert_eq!(a["sha256"], upload["sha256"], "{a}");
    }

    // And it carries on: its own upload is still there, and asked again it
    // is stored.
    let (status, info) = a
        .get(&format!(
            "/v1/uploads/{}",
            upload["upload_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{info}");
    let body = json!({"upload": upload["upload_id"], "client": "tester",
        "only_token": null, "op": "store", "object": "in-bound-again"});
    let reply = ask("tw.node.a.upload", body.to_string()).await;
    assert_eq!(reply["answer"], "found", "{reply}");
}
