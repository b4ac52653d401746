//! External workers: processes that run tasks for the server, speaking the
//! worker protocol (`docs/protocol.md` Part II), either started and
//! supervised by `taskwire serve` (managed, over stdio) or dialling in to
//! `GET /v1/worker` (remote, over a WebSocket; `server/worker_ws.rs`).
//!
//! - [`session`]: one worker's protocol as a state machine without IO.
//! - [`stdio`]: drives a session over a child's stdin/stdout.
//! - [`supervisor`]: the `[[workers]]` groups: spawn, watch, restart,
//!   recycle, drain, kill.
//! - [`board`]: what the monitoring page and `/metrics` show of workers.
//! - [`config`]: the `[[workers]]` and `[[tasks]]` sections and knobs.
//! - [`schema`]: JSON Schemas of declared tasks, compiled.
//!
//! **Architecture Invariant:** workers reach the scheduler only through
//! `exec` (an `ExecutorSpec` registered, `Order`s in, `Report`s out); they
//! never see a client, a key or another worker's attempts.

pub mod config;
pub mod schema;
pub mod session;
