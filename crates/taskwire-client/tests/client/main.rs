//! The client crate against a real server (`taskwire::serve_with` on port 0).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

mod rest;
mod session;
