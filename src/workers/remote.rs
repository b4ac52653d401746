//! Remote workers' sessions, apart from their connections.
//!
//! A connection (`server/worker_ws.rs`) only pumps frames between its
//! socket and a [`Link`]; the session runs in its own task and outlives
//! the connection for `reconnect_grace_s` when attempts are running. While
//! it waits it is *parked* under its name (`<key name>/<worker name>`): a
//! new connection of the same key whose `hello` carries that name takes it
//! over, so the registration, its attempts and what was sent meanwhile go
//! on over the new socket (`Session::reattach`). After the grace the
//! session ends and its attempts are lost.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Workers;
use super::board::WorkerView;
use super::driver::{Driver, Files};
use super::session::{Phase, Session};
use crate::exec::ExecutorKind;
use crate::protocol::worker::{self as wire, WorkerCloseCode, WorkerMessage};

/// What a connection hands its session.
#[derive(Debug)]
pub enum LinkIn {
    Frame(String),
    /// A frame that was not text (a binary message).
    Unreadable(&'static str),
    Oversize,
}

/// What a session asks of its connection.
#[derive(Debug)]
pub enum LinkOut {
    Frame(String),
    Close(WorkerCloseCode),
}

/// One connection's side of a session: frames in, frames out. Dropping
/// `incoming`'s sender means the connection closed.
#[derive(Debug)]
pub struct Link {
    pub incoming: mpsc::Receiver<LinkIn>,
    pub outgoing: mpsc::Sender<LinkOut>,
    pub peer: String,
}

/// Frames waiting for a connection's socket; a worker that reads slower
/// than this is treated as disconnected.
pub const LINK_QUEUE: usize = 4096;

/// A new connection for a parked session, with its first frame (the hello).
type Handover = (Link, String);

/// Parked sessions by name, each with the way to hand it a new link.
#[derive(Clone, Debug, Default)]
pub struct Parking {
    parked: Arc<DashMap<Arc<str>, mpsc::Sender<Handover>>>,
}

impl Parking {
    /// Hands `link` (whose first frame was `hello`) to the parked session of
    /// `name`; gives it back when there is none.
    pub fn take_over(&self, name: &str, link: Link, hello: String) -> Result<(), (Link, String)> {
        let Some((_, session)) = self.parked.remove(name) else {
            return Err((link, hello));
        };
        session.try_send((link, hello)).map_err(|e| e.into_inner())
    }
}

/// The name a `hello` text gives a remote worker of key `owner`.
pub fn hello_name(owner: &str, text: &str) -> Option<String> {
    match wire::decode(text) {
        Ok(wire::WorkerRequest {
            message: WorkerMessage::Hello(hello),
            ..
        }) => Some(format!("{owner}/{}", hello.worker.name)),
        _ => None,
    }
}

/// Runs a remote worker's session from its first frame until it ends.
pub async fn run(
    workers: Workers,
    owner: Arc<str>,
    link: Link,
    first: String,
    drained: CancellationToken,
) {
    let entry = workers.board().join(
        WorkerView {
            id: None,
            name: Arc::clone(&owner),
            group: Some(Arc::clone(&owner)),
            kind: "remote",
            pid: None,
            peer: Some(link.peer.clone()),
            tasks: Vec::new(),
            slots: 0,
            running: Vec::new(),
            state: "starting",
            connected_at: std::time::SystemTime::now(),
            last_heartbeat_at: None,
            done: 0,
            failed: 0,
            restarts: None,
        },
        Arc::clone(&owner),
    );
    let session = Session::new(
        workers.settings(None),
        ExecutorKind::Remote {
            peer: link.peer.clone(),
        },
        None,
        Instant::now(),
    )
    .with_name_prefix(&owner);
    let mut driver = Driver::new(
        session,
        workers.scheduler().clone(),
        workers.artifacts().clone(),
        Files::Uploads {
            uploads: workers.uploads().clone(),
            base_url: format!("{}/v1/worker/uploads", workers.public_url()),
            owner: Arc::clone(&owner),
        },
        workers.max_file_bytes(),
        entry,
    );
    let parking = workers.parking().clone();
    let (handover_tx, mut handover) = mpsc::channel::<Handover>(1);
    let mut link = Some(link);
    let mut parked_as: Option<Arc<str>> = None;
    driver.frame(&first).await;
    loop {
        if let Some(current) = &link {
            for frame in driver.take_outgoing() {
                if current.outgoing.try_send(LinkOut::Frame(frame)).is_err() {
                    tracing::warn!(client = %owner, "remote worker reads too slowly; disconnecting it");
                    link = None;
                    driver.closed(None).await;
                    break;
                }
            }
        }
        if let Some((code, _)) = driver.end().cloned() {
            if let Some(current) = &link {
                let _ = current.outgoing.try_send(LinkOut::Close(code));
            }
            break;
        }
        if driver.session.phase() == Phase::Closed {
            break;
        }
        // Parked while disconnected, under the name its hello gave it.
        if matches!(driver.session.phase(), Phase::Disconnected { .. })
            && parked_as.is_none()
            && let Some(name) = driver.session.name().cloned()
        {
            parking
                .parked
                .insert(Arc::clone(&name), handover_tx.clone());
            parked_as = Some(name);
        }
        let deadline = driver.session.next_deadline();
        tokio::select! {
            incoming = recv(&mut link) => match incoming {
                Some(LinkIn::Frame(text)) => driver.frame(&text).await,
                Some(LinkIn::Unreadable(why)) => driver.unreadable(why).await,
                Some(LinkIn::Oversize) => driver.oversize().await,
                None => {
                    link = None;
                    driver.closed(None).await;
                }
            },
            Some((new_link, hello)) = handover.recv() => {
                parked_as = None;
                link = Some(new_link);
                driver.reattach(&hello).await;
            }
            order = driver.next_order() => match order {
                Some(order) => driver.order(order).await,
                None => driver.orders_closed().await,
            },
            () = sleep_until(deadline) => driver.tick().await,
            () = drained.cancelled() => driver.shutdown().await,
        }
    }
    if let Some(name) = parked_as {
        parking
            .parked
            .remove_if(&name, |_, tx| tx.same_channel(&handover_tx));
    }
}

async fn recv(link: &mut Option<Link>) -> Option<LinkIn> {
    match link {
        Some(link) => link.incoming.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
