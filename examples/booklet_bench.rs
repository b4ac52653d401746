//! Times `booklet::build` on generated events of 300, 3,000 and 10,000 contributions.
//!
//! `cargo run --release --example booklet_bench [-- SIZES...] [--runs N]` prints one JSON line
//! per size: `{contributions, input_bytes, build_ms, cpu_ms, odt_bytes}`, `build_ms` being the
//! median wall time of the runs (5 by default) after one warm-up run, and `cpu_ms` the median
//! time the building thread spent on a CPU (Linux's `/proc/thread-self/schedstat`; `null`
//! where that is missing), which stays meaningful when other processes share the cores.
//!
//! With `--levels`, each size then also gets one line per deflate level 1–9:
//! `{contributions, level, content_bytes, deflated_bytes, deflate_ms, deflate_cpu_ms}`, the
//! booklet's `content.xml` compressed alone as the package does (medians of the runs), to
//! choose the package's level.

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
    let mut levels = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--levels" {
            levels = true;
        } else if arg == "--runs" {
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
        let mut odt = Vec::new();
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
            odt = built.odt;
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
                "odt_bytes": odt.len(),
            })
        );
        if levels && let Err(e) = deflate_levels(size, &odt, runs) {
            eprintln!("deflate levels for {size} contributions: {e}");
            std::process::exit(1);
        }
    }
}

/// Deflates the package's `content.xml` alone at levels 1–9 and prints one line per level.
fn deflate_levels(size: usize, odt: &[u8], runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{Cursor, Read, Write};
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipArchive, ZipWriter};

    let mut content = Vec::new();
    ZipArchive::new(Cursor::new(odt))?
        .by_name("content.xml")?
        .read_to_end(&mut content)?;
    for level in 1..=9 {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(level));
        let (mut times, mut cpu_times, mut bytes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            let cpu_before = thread_cpu_ns();
            let started = Instant::now();
            let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(content.len() / 4)));
            zip.start_file("content.xml", options)?;
            zip.write_all(&content)?;
            bytes = zip.finish()?.into_inner().len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if let (Some(before), Some(after)) = (cpu_before, thread_cpu_ns()) {
                cpu_times.push(after.saturating_sub(before) as f64 / 1e6);
            }
        }
        let cpu = (!cpu_times.is_empty()).then(|| median_of(&mut cpu_times));
        println!(
            "{}",
            serde_json::json!({
                "contributions": size,
                "level": level,
                "content_bytes": content.len(),
                "deflated_bytes": bytes,
                "deflate_ms": (median_of(&mut times) * 10.0).round() / 10.0,
                "deflate_cpu_ms": cpu.map(|m| (m * 10.0).round() / 10.0),
            })
        );
    }
    Ok(())
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
