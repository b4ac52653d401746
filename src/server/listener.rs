//! The accept loop: TCP connections in, HTTP/1.1 (with upgrades) served by
//! hyper on each, under the bounds a public listener needs before any request
//! is routed or authenticated (`config::HttpConfig`, README's knob table):
//!
//! - **header read timeout**: from a connection's opening, or from the end of
//!   its previous response, to the end of the next request head (hyper's own
//!   timer). A socket that sends nothing, sends half a head, trickles a head
//!   byte by byte or sits idle between keep-alive requests is closed then.
//! - **idle timeout**: a connection on which no byte moves either way for this
//!   long is closed, in any state: a stalled body, a download nobody reads, a
//!   WebSocket whose peer went away and whose send buffer is full ([`Watched`]).
//! - **open connections** and **per peer address** (IPv6 per /64): past
//!   either, a new connection is closed at once, before a byte is read. A
//!   connection counts from accept to close, after a WebSocket upgrade too.
//!   The total is lowered to fit the process's file descriptor limit, whose
//!   soft value is first raised to the hard one ([`raise_fd_limit`]), so
//!   `accept` never fails for want of descriptors while old sockets idle out.
//!
//! HTTP/1.1 only, as before (`hyper::server::conn::http1`; hyper-util's
//! auto builder would add HTTP/2, which this server does not speak). At
//! shutdown (`drained`) no new connection is accepted and every open one
//! finishes its request in flight and closes; upgraded sockets belong to
//! their WebSocket tasks by then.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::telemetry::Metrics;

/// Descriptors kept free of connections: the listener, the runtime, files
/// being written or served, log output.
const FD_HEADROOM: u64 = 32;

/// Pause after an `accept` error that is not about one connection (e.g. no
/// descriptors left), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `drained` is cancelled, then lets the
/// open connections finish their requests and returns when they have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    metrics: Metrics,
    drained: CancellationToken,
) -> io::Result<()> {
    let limit = raise_fd_limit();
    let caps = Caps::new(&config, limit, &metrics);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = drained.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::select! {
                    () = drained.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = caps.take(peer.ip()) else {
            // Closed at once: nothing is read, nothing is answered.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(Watched::new(tcp, config.idle_timeout, slot));
        // The peer's address reaches handlers as axum's `ConnectInfo` (the
        // worker routes show it on the monitoring page).
        let service = TowerToHyperService::new(router.clone().map_request(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let http = Arc::clone(&http);
        let drained = drained.clone();
        connections.spawn(async move {
            let connection = http.serve_connection(io, service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = drained.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors that concern one connection only (the peer went away while it
/// was being accepted); the loop goes on at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Raises the soft limit on open files to the hard one, logs both, and
/// returns the soft limit now in force (`None`: unlimited or unknown).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let mut after = before;
    if before.current != before.maximum {
        after.current = before.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, after) {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit");
            after = before;
        }
    }
    let shown = |n: Option<u64>| n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    tracing::info!(
        soft_before = %shown(before.current),
        soft = %shown(after.current),
        hard = %shown(after.maximum),
        "file descriptor limit"
    );
    after.current
}

/// The open-connection cap in force: the configured one, lowered to leave
/// [`FD_HEADROOM`] descriptors under `fd_limit`.
pub fn effective_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let room = usize::try_from(limit.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// The address a per-peer count is kept under: IPv4 as is (IPv4-mapped IPv6
/// too), IPv6 by its /64, which one subscriber usually holds whole.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// The two connection caps and their counts.
#[derive(Debug)]
struct Caps {
    total: usize,
    per_peer: usize,
    /// Open connections per peer key, and their sum. A std mutex: a map
    /// update per accept and per close, never held across an `.await`.
    open: Mutex<Open>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

impl Caps {
    fn new(config: &HttpConfig, fd_limit: Option<u64>, metrics: &Metrics) -> Arc<Caps> {
        let total = effective_cap(config.max_http_connections, fd_limit);
        if total < config.max_http_connections {
            tracing::warn!(
                max_http_connections = config.max_http_connections,
                in_force = total,
                "max_http_connections lowered to fit the file descriptor limit"
            );
        }
        Arc::new(Caps {
            total,
            per_peer: config.max_connections_per_ip.min(total),
            open: Mutex::default(),
            metrics: metrics.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, if both caps allow one.
    fn take(self: &Arc<Caps>, ip: IpAddr) -> Option<Slot> {
        let key = peer_key(ip);
        let refused = {
            let mut open = self.lock();
            let from_peer = open.by_peer.get(&key).copied().unwrap_or(0);
            if open.total >= self.total {
                Some("total")
            } else if from_peer >= self.per_peer {
                Some("per_ip")
            } else {
                open.total += 1;
                *open.by_peer.entry(key).or_insert(0) += 1;
                None
            }
        };
        if let Some(limit) = refused {
            self.metrics.connection_refused(limit);
            tracing::debug!(limit, "connection refused: too many open connections");
            return None;
        }
        self.metrics.http_connections.inc();
        Some(Slot {
            caps: Arc::clone(self),
            key,
        })
    }
}

/// One open connection's place under the caps, given back on drop.
#[derive(Debug)]
struct Slot {
    caps: Arc<Caps>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_peer.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.by_peer.remove(&self.key);
            }
        }
        drop(open);
        self.caps.metrics.http_connections.dec();
    }
}

/// A TCP stream that fails with `TimedOut` once no byte has moved either way
/// for `idle`, and holds its [`Slot`] until it is dropped (after an upgrade,
/// when the WebSocket closes). Read and write sides have a timer each, so a
/// reader and a writer polling from two tasks are both woken.
#[derive(Debug)]
struct Watched {
    io: TcpStream,
    idle: Duration,
    last: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Watched {
    fn new(io: TcpStream, idle: Duration, slot: Slot) -> Watched {
        let now = Instant::now();
        Watched {
            io,
            idle,
            last: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            write_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    /// Called when a read or write would wait: `Pending` (this side's timer
    /// will wake it), or the idle error once the deadline has passed with no
    /// progress since.
    fn expired(&mut self, cx: &mut Context<'_>, write: bool) -> Poll<io::Error> {
        let deadline = self.last + self.idle;
        let timer = if write {
            &mut self.write_timer
        } else {
            &mut self.read_timer
        };
        loop {
            // The timer is only moved when it fires early (progress since it
            // was set), so a busy connection costs no timer updates.
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            timer.as_mut().reset(deadline);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expired(cx, false).map(Err),
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expired(cx, true).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|n| *n > 0) {
                    this.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expired(cx, true).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        assert_eq!(effective_cap(16_384, None), 16_384);
        assert_eq!(effective_cap(16_384, Some(1_048_576)), 16_384);
        assert_eq!(effective_cap(16_384, Some(1024)), 1024 - 32);
        assert_eq!(effective_cap(16_384, Some(64)), 32);
        assert_eq!(effective_cap(16_384, Some(8)), 1);
    }

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(peer_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(peer_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(peer_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            peer_key(ip("2001:db8:1:2:ffff::1")),
            peer_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:3::1")),
            peer_key(ip("2001:db8:1:2::1"))
        );
    }
}
