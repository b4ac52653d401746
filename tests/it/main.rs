//! Integration tests: one binary, real servers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod booklet;
mod bounds;
mod cli;
mod cluster;
mod files;
mod hardening;
mod inputs;
mod listener;
mod process;
mod protocol;
mod questions;
mod rest;
mod schedules;
mod tasks;
mod workers;
