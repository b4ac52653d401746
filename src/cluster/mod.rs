//! Cluster mode: several `taskwire serve` nodes sharing one queue on NATS
//! JetStream. See `docs/cluster.md` for the guarantees and how each is
//! achieved.
//!
//! The decisions live in the scheduler's core (`scheduler/cluster.rs`,
//! `mirror.rs`, `claims.rs`); this module is the IO: `link.rs` carries out
//! the core's effects, `serve.rs` runs the loops (connection, feed of
//! committed events, renewals, registry of nodes, requests between nodes),
//! `codec.rs` is what goes over NATS.
//!
//! **Architecture Invariant:** nothing here changes a task; it reports to
//! the core, which decides. Without `[cluster]` nothing here runs.

mod codec;
pub mod config;
mod link;
mod serve;
mod shares;

pub use serve::{Cluster, ClusterError, Shares, start};
