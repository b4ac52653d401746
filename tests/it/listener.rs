//! The listener's bounds with raw TCP sockets: header-read and idle
//! timeouts, the open-connection caps (total and per peer address).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{ALICE, DEADLINE, TestServer, eventually};

/// A socket to `server` from the loopback address `from` (127.0.0.x: every
/// address of 127/8 is this machine, so each stands for another peer).
async fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset); panics if
/// it is still open at the deadline. Returns what was read before.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the server kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0) | Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// One `GET /healthz` on an open socket (keep-alive); the response's head.
async fn healthz_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

async fn healthz(server: &TestServer) -> u16 {
    TestServer::http()
        .get(server.url("/healthz"))
        .timeout(DEADLINE)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn short_header_timeout(config: &mut taskwire::config::Config) {
    config.http.header_read_timeout = Duration::from_secs(1);
}

#[tokio::test]
async fn silent_and_half_sent_heads_are_dropped_at_the_header_timeout() {
    let server = TestServer::with(short_header_timeout).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // A WebSocket upgrade request that stops before its blank line.
    let mut upgrade = TcpStream::connect(server.addr).await.unwrap();
    upgrade
        .write_all(
            b"GET /v1/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        .await
        .unwrap();
    for stream in [&mut silent, &mut half, &mut upgrade] {
        let seen = until_closed(stream).await;
        // Nothing was answered: the head never ended.
        assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    }
    assert_eq!(healthz(&server).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_head_does_not_extend_the_header_timeout() {
    let server = TestServer::with(short_header_timeout).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buffer = [0u8; 1024];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    write.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // One header byte every 50 ms, for ever: slowloris.
    for byte in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
        if closed.is_finished() || write.write_all(&[*byte]).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a trickled head kept the connection open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // the attacker's pace
    }
    tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("closed")
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = TestServer::with(short_header_timeout).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Kept alive, then nothing more: closed once the next head is overdue.
    until_closed(&mut stream).await;
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_dropped_at_the_idle_timeout() {
    let server = TestServer::with(|c| {
        c.http.header_read_timeout = Duration::from_secs(60);
        c.http.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"task\": \"echo\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body stops there: no byte moves, so the connection goes.
    // (hyper may still write a 400 for the broken body on its way out.)
    let seen = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    assert!(!seen.starts_with("HTTP/1.1 202"), "{seen}");
    server.stop().await;
}

#[tokio::test]
async fn a_peer_over_its_cap_is_closed_at_once_and_others_get_through() {
    let server = TestServer::with(|c| {
        // Longer than DEADLINE: a close seen here is the cap, not a timeout.
        c.http.header_read_timeout = Duration::from_secs(60);
        c.http.max_connections_per_ip = 3;
    })
    .await;
    let peer = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from(peer, server.addr).await;
        assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut over = connect_from(peer, server.addr).await;
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert!(
        until_closed(&mut over).await.is_empty(),
        "answered over the cap"
    );
    // Everyone else still gets in.
    assert_eq!(healthz(&server).await, 200);
    let mut other = connect_from([127, 0, 0, 3], server.addr).await;
    assert!(healthz_on(&mut other).await.starts_with("HTTP/1.1 200"));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("taskwire_connections_refused_total{limit=\"per_ip\"} 1"),
        "{metrics}"
    );
    // A closed connection gives its place back.
    drop(held.pop());
    let addr = server.addr;
    eventually("the peer has a free place again", || async move {
        let mut stream = connect_from(peer, addr).await;
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut buffer = [0u8; 64];
        matches!(stream.read(&mut buffer).await, Ok(n) if n > 0)
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn over_the_total_cap_new_connections_are_closed_at_once() {
    let server = TestServer::with(|c| {
        c.http.header_read_timeout = Duration::from_secs(60);
        c.http.max_http_connections = 4;
        c.http.max_connections_per_ip = 4;
    })
    .await;
    let mut held = Vec::new();
    for last in 2..6 {
        let mut stream = connect_from([127, 0, 0, last], server.addr).await;
        assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    let mut over = connect_from([127, 0, 0, 6], server.addr).await;
    assert!(until_closed(&mut over).await.is_empty());
    held.clear();
    let url = server.url("/healthz");
    eventually("the closed connections gave their places back", || {
        let url = url.clone();
        async move {
            TestServer::http()
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    server.stop().await;
}

/// The real binary with its open-file limit at 64 (soft and hard, so it
/// cannot raise it): 80 idle sockets from one address take at most their
/// per-address share, and `/healthz` answers everyone else at once.
#[tokio::test]
async fn with_a_low_fd_limit_idle_sockets_do_not_lock_healthz_out() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_taskwire"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "1",
        ])
        .args([
            "--header-read-timeout-s",
            "60",
            "--max-connections-per-ip",
            "8",
        ])
        .env("TASKWIRE_API_KEY", ALICE)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually("the server is up", || {
        let url = url.clone();
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(connect_from([127, 0, 0, 2], addr).await);
    }
    let answered = TestServer::http()
        .get(&url)
        .timeout(DEADLINE)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(answered.ok(), Some(200), "/healthz is locked out");
    // Accepted in order, so every idle socket has been either held or closed
    // by now (its FIN is already here): at most 8 are held.
    let mut held = 0;
    for stream in idle.drain(..) {
        let mut stream = stream.into_std().unwrap();
        match std::io::Read::read(&mut stream, &mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Ok(0) | Err(_) => {}
            Ok(_) => panic!("an idle socket was answered"),
        }
    }
    assert_eq!(held, 8, "idle sockets from one address held");
    drop(idle);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("file descriptor limit"), "{logs}");
    assert!(logs.contains("hard=64"), "{logs}");
    assert!(logs.contains("in_force=32"), "{logs}");
}

#[tokio::test]
async fn an_oversized_head_is_refused_with_431() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
    // Over the 100-header limit, yet small enough to be read whole (so the
    // close is not a reset that could discard the answer).
    for i in 0..150 {
        head.extend_from_slice(format!("X-Filler-{i}: a\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await.unwrap();
    let seen = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    assert!(seen.starts_with("HTTP/1.1 431"), "{seen}");
    server.stop().await;
}
