//! Integration tests: one binary, real servers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod booklet;
mod cli;
mod files;
mod process;
mod protocol;
mod rest;
mod tasks;
