//! Times `booklet::build` on generated events of 300, 3,000 and 10,000 contributions.
//!
//! `cargo run --release --example booklet_bench [-- SIZES...] [--runs N]` prints one JSON line
//! per size: `{contributions, input_bytes, build_ms, cpu_ms, odt_bytes}`, `build_ms` being the
//! median wall time of the runs (5 by default) after one warm-up run, and `cpu_ms` the median
//! time the building thread spent on a CPU (Linux's `/proc/thread-self/schedstat`; `null`
//! where that is missing), which stays meaningful when other processes share the cores.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its result")]

use std::time::Instant;

use taskwire::booklet::{self, Observer, Progress};

struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: Progress) {}

    fn cancelled(&self) -> bool {
        false
    }
}

fn main() {
    let mut sizes = Vec::new();
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            runs = args
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(runs)
                .max(1);
        } else if let Ok(size) = arg.parse::<usize>() {
            sizes.push(size);
        }
    }
    if sizes.is_empty() {
        sizes = vec![300, 3_000, 10_000];
    }
    for size in sizes {
        // Seed 0 is the Indico shape, the largest JSON per contribution.
        let input = booklet::generate::event(0, size).to_string();
        let mut times = Vec::with_capacity(runs);
        let mut cpu_times = Vec::with_capacity(runs);
        let mut odt_bytes = 0;
        for run in 0..=runs {
            let cpu_before = thread_cpu_ns();
            let started = Instant::now();
            let built = match booklet::build(&input, &mut Quiet) {
                Ok(built) => built,
                Err(e) => {
                    eprintln!("build failed for {size} contributions: {e}");
                    std::process::exit(1);
                }
            };
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            let cpu = cpu_before
                .zip(thread_cpu_ns())
                .map(|(before, after)| after.saturating_sub(before) as f64 / 1e6);
            odt_bytes = built.odt.len();
            if run > 0 {
                times.push(elapsed);
                cpu_times.extend(cpu);
            }
        }
        let median = median_of(&mut times);
        let cpu_median = (!cpu_times.is_empty()).then(|| median_of(&mut cpu_times));
        println!(
            "{}",
            serde_json::json!({
                "contributions": size,
                "input_bytes": input.len(),
                "build_ms": (median * 10.0).round() / 10.0,
                "cpu_ms": cpu_median.map(|m| (m * 10.0).round() / 10.0),
                "odt_bytes": odt_bytes,
            })
        );
    }
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nanoseconds this thread has spent on a CPU, from the first field of
/// `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}
