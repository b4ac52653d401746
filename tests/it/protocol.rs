//! The WebSocket protocol: auth, envelope, errors, close codes.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{ADMIN, ALICE, DEADLINE, Frame, TestServer};

#[tokio::test]
async fn header_auth_gets_welcome_with_tasks_and_limits() {
    let server = TestServer::start().await;
    let mut ws = server.ws_raw(Some(ALICE), None).await.unwrap();
    let welcome = ws.next().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["server"]["name"], "taskwire");
    let names: Vec<&str> = welcome["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in ["echo", "sleep", "blob", "abstract_booklet"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for task in welcome["tasks"].as_array().unwrap() {
        assert!(task["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(task["input_schema"].is_object());
    }
    let limits = &welcome["limits"];
    for field in [
        "max_message_bytes",
        "queue_capacity",
        "workers",
        "max_timeout_s",
        "file_ttl_s",
    ] {
        assert!(limits[field].is_u64(), "limits.{field}: {limits}");
    }
    assert_eq!(limits["max_message_bytes"], 64 * 1024 * 1024);
    server.stop().await;
}

#[tokio::test]
async fn subprotocol_is_selected_when_offered() {
    let server = TestServer::start().await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("taskwire.v1"),
    );
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {ALICE}")).unwrap(),
    );
    let (_stream, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "taskwire.v1"
    );
    let plain = server.ws_raw(Some(ALICE), None).await.unwrap();
    assert_eq!(plain.protocol, None);
    server.stop().await;
}

#[tokio::test]
async fn wrong_header_key_is_401_before_upgrade() {
    let server = TestServer::start().await;
    let Err(error) = server.ws_raw(Some("tw_wrong"), None).await else {
        panic!("upgrade with a wrong key succeeded");
    };
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected HTTP 401, got {other}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn first_message_auth_and_unauthorized_before_it() {
    let server = TestServer::start().await;
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.send(json!({"type": "ping", "ref": "p1"})).await;
    let reply = ws.next().await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["ref"], "p1");
    assert_eq!(reply["error"]["code"], "unauthorized");
    ws.send(json!({"type": "submit", "ref": "s1", "task": "echo", "input": 1}))
        .await;
    let reply = ws.next().await;
    assert_eq!(reply["error"]["code"], "unauthorized");
    ws.send(json!({"type": "auth", "key": ALICE})).await;
    assert_eq!(ws.next().await["type"], "welcome");
    ws.send(json!({"type": "ping", "ref": "p2"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong", "ref": "p2"}));
    server.stop().await;
}

#[tokio::test]
async fn wrong_auth_message_closes_4401() {
    let server = TestServer::start().await;
    let mut ws = server.ws_raw(None, None).await.unwrap();
    ws.send(json!({"type": "auth", "key": "tw_not_a_key"}))
        .await;
    assert_eq!(ws.closed().await, Some(4401));
    server.stop().await;
}

#[tokio::test]
async fn no_auth_in_time_closes_4408() {
    let server = TestServer::with(|c| c.security.auth_timeout = Duration::from_millis(300)).await;
    let mut ws = server.ws_raw(None, None).await.unwrap();
    assert_eq!(ws.closed().await, Some(4408));
    server.stop().await;
}

#[tokio::test]
async fn origin_must_be_allowed() {
    let server = TestServer::with(|c| {
        c.security.allowed_origins = vec!["https://indico.example.org".to_owned()]
    })
    .await;
    let own = format!("http://{}", server.addr);
    let mut ws = server.ws_raw(Some(ALICE), Some(&own)).await.unwrap();
    assert_eq!(ws.next().await["type"], "welcome");
    let mut ws = server
        .ws_raw(Some(ALICE), Some("https://indico.example.org"))
        .await
        .unwrap();
    assert_eq!(ws.next().await["type"], "welcome");
    match server
        .ws_raw(Some(ALICE), Some("https://evil.example.com"))
        .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(other) => panic!("expected 403, got {other}"),
        Ok(_) => panic!("a foreign origin was let in"),
    }
    // No Origin header at all (a program, not a browser): allowed.
    let mut ws = server.ws_raw(Some(ALICE), None).await.unwrap();
    assert_eq!(ws.next().await["type"], "welcome");
    server.stop().await;
}

#[tokio::test]
async fn bad_messages_get_bad_message_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let cases = [
        (r#"{"type":"#.to_owned(), None),
        ("[1,2]".to_owned(), None),
        (r#""just a string""#.to_owned(), None),
        (r#"{"ref":"a"}"#.to_owned(), Some("a")),
        (r#"{"type":"launch","ref":"b"}"#.to_owned(), Some("b")),
        (r#"{"type":7,"ref":"c"}"#.to_owned(), Some("c")),
        (r#"{"type":"cancel","ref":"d"}"#.to_owned(), Some("d")),
        (r#"{"type":"submit","ref":"e","input":{}}"#.to_owned(), Some("e")),
        (r#"{"type":"submit","ref":"f","task":"echo"}"#.to_owned(), Some("f")),
        (r#"{"type":"subscribe","ref":"g","task_id":"x","after_seq":"1"}"#.to_owned(), Some("g")),
        (r#"{"type":"submit","ref":"h","task":"echo","input":1,"options":{"priority":"urgent"}}"#.to_owned(), Some("h")),
        (r#"{"type":"submit","ref":"i","task":"echo","input":1,"options":{"timeout_s":-1}}"#.to_owned(), Some("i")),
        (r#"{"type":"auth","ref":"j","key":"x"}"#.to_owned(), Some("j")),
    ];
    for (text, reference) in cases {
        ws.send_text(&text).await;
        let reply = ws.next().await;
        assert_eq!(reply["error"]["code"], "bad_message", "{text} -> {reply}");
        assert!(
            reply["type"] == "error" || reply["type"] == "rejected",
            "{reply}"
        );
        if let Some(reference) = reference {
            assert_eq!(reply["ref"], reference, "{text} -> {reply}");
        }
    }
    ws.stream.send_binary().await;
    assert_eq!(ws.next().await["error"]["code"], "bad_message");
    ws.send(json!({"type": "ping", "ref": "still-here", "extra": {"unknown": [1, 2]}}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"type": "pong", "ref": "still-here"})
    );
    server.stop().await;
}

trait SendBinary {
    async fn send_binary(&mut self);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_binary(&mut self) {
        use futures::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn unknown_task_and_invalid_input_are_rejected_with_details() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    let reply = ws.submit("nope", json!({}), json!({})).await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["error"]["code"], "unknown_task");
    let reply = ws.submit("sleep", json!({"ms": "soon"}), json!({})).await;
    assert_eq!(reply["type"], "rejected");
    assert_eq!(reply["error"]["code"], "invalid_input");
    assert_eq!(reply["error"]["details"]["path"], "$.ms");
    assert!(reply["error"]["details"]["reason"].is_string());
    let reply = ws
        .submit("sleep", json!({"ms": 10, "steps": 0}), json!({}))
        .await;
    assert_eq!(reply["error"]["details"]["path"], "$.steps");
    let reply = ws.submit("blob", json!({"size": 1}), json!({})).await;
    assert_eq!(reply["error"]["code"], "invalid_input");
    assert!(
        server
            .metrics()
            .await
            .contains("taskwire_rejections_total{code=\"invalid_input\"} 3")
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let server = TestServer::with(|c| c.limits.max_message_bytes = 1024).await;
    let mut ws = server.ws(ALICE).await;
    let big = format!(
        r#"{{"type":"submit","task":"echo","input":"{}"}}"#,
        "x".repeat(4000)
    );
    ws.send_text(&big).await;
    assert_eq!(ws.closed().await, Some(1009));
    // The server is fine: a new connection works.
    let mut ws = server.ws(ALICE).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn too_many_connections_close_4429() {
    let server = TestServer::with(|c| c.limits.max_connections = 2).await;
    let _a = server.ws(ALICE).await;
    let _b = server.ws(ALICE).await;
    let mut c = server.ws_raw(Some(ALICE), None).await.unwrap();
    assert_eq!(c.closed().await, Some(4429));
    drop(_a);
    // The slot comes back once the first connection is gone.
    crate::support::eventually("a slot frees up", || async {
        let mut d = server.ws_raw(Some(ALICE), None).await.unwrap();
        matches!(d.frame().await, Frame::Json(v) if v["type"] == "welcome")
    })
    .await;
    server.stop().await;
}

/// A hand-made client for frames a real client library refuses to send.
struct RawSocket {
    stream: tokio::net::TcpStream,
}

impl RawSocket {
    async fn connect(server: &TestServer) -> RawSocket {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {ALICE}\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawSocket { stream }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![0x80 | opcode];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let len = u8::try_from(payload.len()).unwrap();
        assert!(len < 126);
        frame.push(if masked { 0x80 | len } else { len });
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads server frames until a close; returns its code.
    async fn close_code(&mut self) -> Option<u16> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let mut head = [0u8; 2];
                if self.stream.read_exact(&mut head).await.is_err() {
                    return None;
                }
                let mut len = u64::from(head[1] & 0x7f);
                if len == 126 {
                    let mut ext = [0u8; 2];
                    self.stream.read_exact(&mut ext).await.ok()?;
                    len = u64::from(u16::from_be_bytes(ext));
                } else if len == 127 {
                    let mut ext = [0u8; 8];
                    self.stream.read_exact(&mut ext).await.ok()?;
                    len = u64::from_be_bytes(ext);
                }
                let mut payload = vec![0u8; usize::try_from(len).unwrap()];
                self.stream.read_exact(&mut payload).await.ok()?;
                if head[0] & 0x0f == 0x8 {
                    return (payload.len() >= 2)
                        .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                }
            }
        })
        .await
        .expect("no close before the deadline")
    }
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let server = TestServer::start().await;
    let mut raw = RawSocket::connect(&server).await;
    raw.send_frame(0x1, b"{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}", true)
        .await;
    assert_eq!(raw.close_code().await, Some(1007));
    server.stop().await;
}

#[tokio::test]
async fn unmasked_frame_closes_1002() {
    let server = TestServer::start().await;
    let mut raw = RawSocket::connect(&server).await;
    raw.send_frame(0x1, br#"{"type":"ping"}"#, false).await;
    assert_eq!(raw.close_code().await, Some(1002));
    server.stop().await;
}

#[tokio::test]
async fn reserved_opcode_closes_1002() {
    let server = TestServer::start().await;
    let mut raw = RawSocket::connect(&server).await;
    raw.send_frame(0x3, b"", true).await;
    assert_eq!(raw.close_code().await, Some(1002));
    server.stop().await;
}

#[tokio::test]
async fn admin_watch_needs_an_admin_key() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    ws.send(json!({"type": "watch", "ref": "w"})).await;
    let reply = ws.next().await;
    assert_eq!(reply["error"]["code"], "unauthorized");
    assert_eq!(reply["ref"], "w");
    let id = ws.submit_ok("sleep", json!({"ms": 5000})).await;
    let mut admin = server.ws(ADMIN).await;
    admin.send(json!({"type": "watch", "ref": "w"})).await;
    let watching = admin.next().await;
    assert_eq!(watching["type"], "watching");
    assert!(
        watching["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == id.as_str() && t["client"] == "alice")
    );
    assert_eq!(watching["stats"]["workers"], 2);
    // Admins may cancel anyone's task; the watcher sees the update.
    admin
        .send(json!({"type": "cancel", "task_id": id, "ref": "c"}))
        .await;
    let update = admin
        .until(|v| {
            v["type"] == "task_update"
                && v["task"]["task_id"] == id.as_str()
                && v["task"]["state"] == "cancelled"
        })
        .await;
    assert_eq!(update["task"]["reason"], "client");
    assert_eq!(ws.terminal(&id).await["type"], "cancelled");
    let (status, _) = server.get_json(ALICE, "/v1/admin/tasks").await;
    assert_eq!(status, 403);
    let (status, body) = server.get_json(ADMIN, "/v1/admin/tasks").await;
    assert_eq!(status, 200);
    assert!(
        body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == id.as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn client_close_is_answered_1000() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    futures::SinkExt::send(
        &mut ws.stream,
        tokio_tungstenite::tungstenite::Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )),
    )
    .await
    .unwrap();
    assert_eq!(ws.closed().await, Some(1000));
    server.stop().await;
}
