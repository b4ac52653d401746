//! How the client subcommands print: human lines, plain lines when piped,
//! JSON lines with `--json`, and a progress bar on stderr on a terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::{Event, EventKind};

/// Where output goes and in which form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub json: bool,
    /// stderr is a terminal: draw a progress bar.
    pub bar: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Out {
        Out {
            json,
            bar: !json && std::io::stderr().is_terminal(),
        }
    }

    /// One line on stdout (a closed pipe is not an error worth a message).
    pub(crate) fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    /// One JSON object on one line.
    pub(crate) fn json(&self, value: &impl Serialize) {
        match serde_json::to_string(value) {
            Ok(text) => self.line(&text),
            Err(e) => eprintln!("taskwire: cannot write JSON: {e}"),
        }
    }

    /// A progress bar for a task (hidden when stderr is not a terminal).
    pub(crate) fn progress(&self) -> Progress {
        let bar = if self.bar {
            let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }
}

/// The progress bar of one task.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn update(&self, event: &Event) {
        match &event.kind {
            EventKind::Accepted { position, .. } => {
                self.bar
                    .set_message(format!("queued (position {position})"));
            }
            EventKind::Started { worker, .. } => {
                self.bar.set_message(format!("running on {worker}"));
            }
            EventKind::Requeued { reason, .. } => {
                self.bar.set_position(0);
                self.bar.set_message(format!("queued again ({reason})"));
            }
            EventKind::Progress {
                progress, message, ..
            } => {
                if let Some(fraction) = progress {
                    self.bar
                        .set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
                }
                if let Some(message) = message {
                    self.bar.set_message(message.clone());
                }
            }
            EventKind::Question(q) => self.bar.set_message(format!("waiting: {}", q.prompt)),
            _ => {}
        }
    }

    /// Prints a line above the bar (or plainly when there is no bar).
    pub(crate) fn println(&self, out: &Out, text: &str) {
        if self.bar.is_hidden() {
            out.line(text);
        } else {
            self.bar.suspend(|| out.line(text));
        }
    }

    /// Hides the bar while the terminal is used for something else.
    pub(crate) fn pause(&self) {
        if !self.bar.is_hidden() {
            self.bar.disable_steady_tick();
            self.bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    pub(crate) fn resume(&self, out: &Out) {
        if out.bar {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `seq type details` for a human or a `grep`.
pub(crate) fn describe(event: &Event) -> String {
    let head = format!("{} {}", event.seq, event.kind.name());
    let rest = match &event.kind {
        EventKind::Accepted {
            position,
            duplicate,
        } => {
            let dup = if *duplicate { " duplicate" } else { "" };
            format!("position={position}{dup}")
        }
        EventKind::Started { worker, attempt } => format!("worker={worker} attempt={attempt}"),
        EventKind::Requeued {
            attempt,
            reason,
            message,
            ..
        } => format!("attempt={attempt} reason={reason} {message}"),
        EventKind::Progress {
            progress, message, ..
        } => {
            let mut parts = Vec::new();
            if let Some(p) = progress {
                parts.push(format!("{:.0}%", p * 100.0));
            }
            if let Some(m) = message {
                parts.push(m.clone());
            }
            parts.join(" ")
        }
        EventKind::Completed {
            result,
            files,
            duration_ms,
        } => {
            let mut text = format!("duration_ms={duration_ms} result={}", result.get());
            for file in files {
                text.push_str(&format!(" file={} ({} bytes)", file.name, file.size));
            }
            text
        }
        EventKind::Failed { error } => format!("{}: {}", error.code.as_str(), error.message),
        EventKind::Cancelled { reason } => format!("reason={reason}"),
        EventKind::Question(q) => {
            let mut text = format!("question_id={} {}", q.question_id, q.prompt);
            if let Some(choices) = &q.choices {
                let values: Vec<&str> = choices.iter().map(|c| c.value.get()).collect();
                text.push_str(&format!(" choices={}", values.join(",")));
            }
            text
        }
        EventKind::Answered {
            question_id,
            outcome,
            value,
        } => {
            let value = value.as_ref().map_or("", |v| v.get());
            format!("question_id={question_id} outcome={outcome} {value}")
        }
    };
    if rest.is_empty() {
        head
    } else {
        format!("{head} {rest}")
    }
}
