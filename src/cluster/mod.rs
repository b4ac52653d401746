//! Cluster mode: several `taskwire serve` nodes sharing one queue on NATS
//! JetStream. See `docs/cluster.md` for the guarantees and how each is
//! achieved.

pub mod config;
