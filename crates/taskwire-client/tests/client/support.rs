//! A real server on port 0, and a TCP proxy whose connections a test cuts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskwire::auth::digest;
use taskwire::config::{Config, KeyConfig, KeyRole, KeySource};
use taskwire_client::{Client, Reconnect};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// How long any single expected thing may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const ALICE: &str = "tw_alice_0123456789abcdef0123456789abcdef";
pub const ADMIN: &str = "tw_admin_0123456789abcdef0123456789abcdef";

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    _temp: tempfile::TempDir,
}

fn key(name: &str, secret: &str, admin: bool) -> KeyConfig {
    KeyConfig {
        name: name.to_owned(),
        digest: digest(secret),
        role: if admin {
            KeyRole::Admin
        } else {
            KeyRole::Client
        },
        source: KeySource::File,
    }
}

impl Server {
    pub async fn start(workers: usize) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let mut config =
            Config::with_keys(vec![key("alice", ALICE, false), key("ops", ADMIN, true)]);
        config.limits.workers = workers;
        config.limits.shutdown_grace = Duration::from_millis(200);
        config.files.temp_dir = Some(temp.path().join("area"));
        let catalog = taskwire::catalog::Catalog::builtin(config.files.max_temp_bytes);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            taskwire::serve_with(listener, config, catalog, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Server {
            addr,
            stop: Some(stop),
            handle: Some(handle),
            _temp: temp,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.url(), key).unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// Forwards TCP connections to a target; [`Proxy::cut`] drops every
/// connection open now (the listener stays, so clients can reconnect).
pub struct Proxy {
    pub addr: SocketAddr,
    open: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&open);
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let pipe = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                registry.lock().unwrap().push(pipe.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            open,
            accepting,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client through the proxy that reconnects quickly.
    pub fn client(&self, key: &str) -> Client {
        Client::builder(&self.url(), key)
            .reconnect(Reconnect {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                give_up_after: Some(DEADLINE),
            })
            .build()
            .unwrap()
    }

    /// Drops every connection open now; returns how many.
    pub fn cut(&self) -> usize {
        let mut open = self.open.lock().unwrap();
        let n = open.len();
        for pipe in open.drain(..) {
            pipe.abort();
        }
        n
    }

    /// Connections accepted since the last cut.
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// Polls `check` until it holds, or fails the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
