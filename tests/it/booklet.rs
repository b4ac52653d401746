//! `abstract_booklet` as a task: the sample event in, a valid `.odt` out.

use std::io::Read;

use serde_json::{Value, json};

use crate::support::{ALICE, TestServer};

fn sample(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
}

#[tokio::test]
async fn the_sample_event_becomes_an_odt_link() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    for name in ["event-small.json", "event-small.purr.json"] {
        let event = sample(name);
        let input = if event.get("event").is_some() {
            event
        } else {
            json!({"event": event})
        };
        let id = ws.submit_ok("abstract_booklet", input).await;
        let events = ws.events_until_end(&id).await;
        let progress: Vec<f64> = events
            .iter()
            .filter(|e| e["type"] == "progress")
            .filter_map(|e| e["progress"].as_f64())
            .collect();
        assert!(progress.len() >= 3, "progress per phase: {progress:?}");
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        let done = events.last().unwrap();
        assert_eq!(done["type"], "completed", "{done}");
        assert!(
            done["result"]["contributions"].as_u64().unwrap() > 0,
            "{}",
            done["result"]
        );
        let file = &done["files"][0];
        assert_eq!(
            file["content_type"],
            "application/vnd.oasis.opendocument.text"
        );
        assert!(file["name"].as_str().unwrap().ends_with(".odt"));
        let bytes = reqwest::get(server.url(file["url"].as_str().unwrap()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap());
        // Package rules: mimetype first, stored.
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        assert_eq!(&bytes[30..38], b"mimetype");
        assert_eq!(&bytes[38..77], b"application/vnd.oasis.opendocument.text");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        let mut content = String::new();
        zip.by_name("content.xml")
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert!(content.contains("office:document-content"));
    }
    server.stop().await;
}

#[tokio::test]
async fn unusable_input_is_rejected_before_queueing() {
    let server = TestServer::start().await;
    let mut ws = server.ws(ALICE).await;
    for input in [json!([1, 2]), json!({"no_event": 1}), json!({"event": 7})] {
        let reply = ws
            .submit("abstract_booklet", input.clone(), json!({}))
            .await;
        assert_eq!(reply["type"], "rejected", "{input} -> {reply}");
        assert_eq!(reply["error"]["code"], "invalid_input");
        assert!(reply["error"]["details"]["path"].is_string());
        assert!(reply["error"]["details"]["reason"].is_string());
    }
    server.stop().await;
}
