//! `worker`: a remote worker on `GET /v1/worker` that serves a no-op task
//! (every `assign` is answered `complete` with a `null` result at once), so
//! `tasks` can measure what an external task costs the server. Runs until
//! the server closes the connection (or the process is stopped).

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::BenchError;

#[derive(Debug)]
pub struct WorkerArgs {
    pub url: String,
    pub key: String,
    pub name: String,
    pub task: String,
    pub slots: u32,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    task_id: Option<&'a str>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    heartbeat_interval_s: Option<f64>,
}

pub async fn run(args: WorkerArgs) -> Result<Value, BenchError> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| BenchError::new(format!("bad url: {e}")))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", args.key))
        .map_err(|_| BenchError::new("the key is not a valid header value"))?;
    request.headers_mut().insert("authorization", bearer);
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("taskwire.worker.v1"),
    );
    let uri = request.uri();
    let host = uri.host().unwrap_or("127.0.0.1").to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(BenchError::io)?;
    stream.set_nodelay(true).map_err(BenchError::io)?;
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| BenchError::new(format!("worker handshake: {e}")))?;
    let hello = json!({"type": "hello", "protocol": 1, "worker": {"name": args.name, "sdk": "taskwire-bench"},
                       "slots": args.slots, "tasks": [{"name": args.task, "retry_safe": true}]});
    socket
        .send(Message::text(hello.to_string()))
        .await
        .map_err(|e| BenchError::new(e.to_string()))?;
    let mut served: u64 = 0;
    let mut beat = tokio::time::interval(std::time::Duration::from_secs(3600));
    beat.tick().await;
    loop {
        tokio::select! {
            next = socket.next() => {
                let Some(Ok(message)) = next else { break };
                let Message::Text(text) = message else { continue };
                let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else { continue };
                match frame.kind {
                    "welcome" => {
                        let every = frame.heartbeat_interval_s.unwrap_or(5.0).max(0.5);
                        beat = tokio::time::interval(std::time::Duration::from_secs_f64(every));
                        beat.tick().await;
                    }
                    "assign" => {
                        let reply = json!({"type": "complete", "task_id": frame.task_id,
                                           "attempt": frame.attempt, "result": null});
                        // Fed now, flushed once the burst of assigns is answered.
                        socket.feed(Message::text(reply.to_string())).await
                            .map_err(|e| BenchError::new(e.to_string()))?;
                        served += 1;
                        socket.flush().await.map_err(|e| BenchError::new(e.to_string()))?;
                    }
                    _ => {}
                }
            }
            _ = beat.tick() => {
                socket.send(Message::text(r#"{"type":"heartbeat"}"#)).await
                    .map_err(|e| BenchError::new(e.to_string()))?;
            }
        }
    }
    Ok(json!({"mode": "worker", "served": served}))
}
