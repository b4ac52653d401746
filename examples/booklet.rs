//! Builds a booklet from a JSON file: `cargo run --release --example booklet -- in.json out.odt`.
//!
//! The file may be the task input (`{"event": ..., "settings": ...}`) or an event in any of the
//! three accepted shapes, which is then wrapped as `{"event": <file>}`. `generated:SEED:SIZE`
//! instead of a file uses `booklet::generate::event(SEED, SIZE)`; with an `OUT.json` it writes
//! that generated input instead of a booklet. Progress goes to stderr, the
//! result JSON to stdout.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its result")]

use std::process::ExitCode;

use taskwire::booklet::{self, Observer, Progress};

struct Stderr;

impl Observer for Stderr {
    fn progress(&mut self, p: Progress) {
        eprintln!("{:>5.1}% {}", p.fraction * 100.0, p.message);
    }

    fn cancelled(&self) -> bool {
        false
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input_path, output_path] = args.as_slice() else {
        eprintln!("usage: booklet IN.json OUT.odt");
        return ExitCode::from(2);
    };
    if let Some(spec) = input_path.strip_prefix("generated:") {
        let numbers: Vec<u64> = spec.split(':').filter_map(|n| n.parse().ok()).collect();
        let [seed, size] = numbers.as_slice() else {
            eprintln!("expected generated:SEED:SIZE");
            return ExitCode::from(2);
        };
        let input = booklet::generate::event(*seed, *size as usize).to_string();
        // `generated:SEED:SIZE OUT.json` writes the generated input itself
        // (to time and measure `booklet IN.json OUT.odt` on it).
        if output_path.ends_with(".json") {
            return match std::fs::write(output_path, input) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write {output_path}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        return run(&input, output_path);
    }
    let text = match std::fs::read_to_string(input_path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {input_path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Only look for an `event` key: parsing the whole file into a Value would cost more than
    // the build itself.
    #[derive(serde::Deserialize)]
    struct Probe {
        event: Option<serde::de::IgnoredAny>,
    }
    let input = match serde_json::from_str::<Probe>(&text) {
        Ok(Probe { event: Some(_) }) => text,
        Ok(_) => format!("{{\"event\":{text}}}"),
        Err(e) => {
            eprintln!("{input_path} is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    run(&input, output_path)
}

fn run(input: &str, output_path: &str) -> ExitCode {
    match booklet::build(input, &mut Stderr) {
        Ok(built) => {
            if let Err(e) = std::fs::write(output_path, &built.odt) {
                eprintln!("cannot write {output_path}: {e}");
                return ExitCode::FAILURE;
            }
            println!("{}", built.result);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
