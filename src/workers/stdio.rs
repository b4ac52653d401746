//! The managed transport: JSON lines on a child's stdin and stdout, its
//! stderr forwarded to our log under the worker's name.
//!
//! One loop per process owns the session ([`Driver`]) and `select!`s over
//! stdout lines, the scheduler's orders, the session's next deadline, the
//! process's exit and the server's shutdown. Writes go through a bounded
//! queue to a writer task, so a worker that stops reading its stdin can
//! never stall this loop (a full queue means the worker is hung).

use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::Driver;
use super::session::Phase;
use crate::exec::LostCause;

/// Longest stderr line kept in the log; the rest of it is cut.
pub const MAX_LOG_LINE: usize = 8 * 1024;
/// Stderr lines kept per second and process; the others are counted.
pub const MAX_LOG_LINES_PER_S: u32 = 100;
/// Frames waiting for a worker's stdin.
const WRITE_QUEUE: usize = 1024;
/// After stdout closed, how long we wait for the exit status.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How a process's session ended.
#[derive(Debug)]
pub struct ProcessEnd {
    /// Set when the process exited (or was killed) while we watched.
    pub status: Option<ExitStatus>,
    /// Why the process must be killed now, if it must.
    pub kill: Option<LostCause>,
    /// Attempts it ended (for `max_tasks`).
    pub tasks: u64,
    /// It said hello (a failed start is one that did not).
    pub was_ready: bool,
}

/// Runs one process's session until it ends. `max_tasks` recycles it.
pub async fn run(
    child: &mut Child,
    mut driver: Driver,
    max_message_bytes: usize,
    max_tasks: Option<u64>,
    stop: CancellationToken,
) -> ProcessEnd {
    let name = driver
        .session
        .name()
        .map_or_else(|| "worker".to_owned(), ToString::to_string);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        tracing::error!(worker = %name, "worker started without its pipes");
        return ProcessEnd {
            status: None,
            kill: Some(LostCause::Hung),
            tasks: 0,
            was_ready: false,
        };
    };
    let (writes, queue) = mpsc::channel::<String>(WRITE_QUEUE);
    let writer = tokio::spawn(write_lines(stdin, queue));
    let logger = tokio::spawn(forward_stderr(stderr, name.clone()));
    let mut lines = LineReader::new(BufReader::new(stdout), max_message_bytes);
    let mut status: Option<ExitStatus> = None;
    let mut stopping = false;
    let mut recycling = false;
    let mut was_ready = false;
    loop {
        for frame in driver.take_outgoing() {
            if writes.try_send(frame).is_err() {
                tracing::warn!(worker = %name, "worker does not read its stdin; treating it as hung");
                driver.closed(Some(LostCause::Hung)).await;
                break;
            }
        }
        was_ready |= driver.executor().is_some();
        if driver.end().is_some() || driver.session.phase() == Phase::Closed {
            break;
        }
        let done = driver.session.stats.done + driver.session.stats.failed;
        if !recycling && max_tasks.is_some_and(|max| done >= max) {
            recycling = true;
            tracing::info!(worker = %name, tasks = done, "worker reached max_tasks; recycling it");
            driver.drain().await;
            continue;
        }
        if (recycling || stopping) && driver.session.idle_draining() {
            driver.shutdown().await;
            continue;
        }
        let deadline = driver.session.next_deadline();
        tokio::select! {
            line = lines.next() => match line {
                Line::Text(text) => driver.frame(&text).await,
                Line::TooLong => driver.oversize().await,
                Line::Closed => {
                    // stdout closed: the process is ending; wait for its status.
                    status = tokio::time::timeout(EXIT_WAIT, child.wait()).await.ok().and_then(Result::ok);
                    driver.closed(Some(exit_cause(status))).await;
                }
            },
            order = driver.next_order() => match order {
                Some(order) => driver.order(order).await,
                None => driver.orders_closed().await,
            },
            () = sleep_until(deadline) => driver.tick().await,
            exited = child.wait(), if status.is_none() => {
                status = exited.ok();
                // Lines written before the exit are still in the pipe.
                while let Ok(Line::Text(text)) = tokio::time::timeout(Duration::from_millis(200), lines.next()).await {
                    driver.frame(&text).await;
                }
                driver.closed(Some(exit_cause(status))).await;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                driver.drain().await;
                if driver.session.phase() != Phase::Draining {
                    // Not serving (no hello yet): nothing to wait for.
                    driver.shutdown().await;
                }
            }
        }
    }
    for frame in driver.take_outgoing() {
        let _ = writes.try_send(frame);
    }
    drop(writes);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    logger.abort();
    let kill = driver.end().and_then(|(_, cause)| cause.clone());
    ProcessEnd {
        status,
        kill,
        tasks: driver.session.stats.done + driver.session.stats.failed,
        was_ready,
    }
}

fn exit_cause(status: Option<ExitStatus>) -> LostCause {
    use std::os::unix::process::ExitStatusExt;
    LostCause::Exit {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes queued frames as lines, flushing once per burst.
async fn write_lines(stdin: ChildStdin, mut queue: mpsc::Receiver<String>) {
    let mut stdin = tokio::io::BufWriter::new(stdin);
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(frame) = next {
            if stdin.write_all(frame.as_bytes()).await.is_err()
                || stdin.write_all(b"\n").await.is_err()
            {
                return;
            }
            next = queue.try_recv().ok();
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
    // Our side is done: closing stdin tells the worker to exit.
    let _ = stdin.shutdown().await;
}

/// The child's stderr, line by line, into our log under its name; long
/// lines cut, at most [`MAX_LOG_LINES_PER_S`] a second.
async fn forward_stderr(stderr: ChildStderr, name: String) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_LOG_LINE);
    let mut window = tokio::time::Instant::now();
    let mut kept = 0u32;
    let mut dropped = 0u64;
    loop {
        let line = lines.next().await;
        let now = tokio::time::Instant::now();
        if now.duration_since(window) >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(worker = %name, dropped, "worker stderr lines dropped (more than 100 a second)");
            }
            window = now;
            kept = 0;
            dropped = 0;
        }
        let text = match line {
            Line::Closed => return,
            Line::Text(text) => text,
            Line::TooLong => format!("{}…", String::from_utf8_lossy(&lines.cut_prefix)),
        };
        if kept >= MAX_LOG_LINES_PER_S {
            dropped += 1;
            continue;
        }
        kept += 1;
        tracing::info!(worker = %name, "{}", text.trim_end());
    }
}

/// What [`LineReader::next`] read.
#[derive(Debug)]
pub enum Line {
    Text(String),
    /// A line over the limit (skipped up to its newline).
    TooLong,
    Closed,
}

/// Newline-separated frames with a length limit; unlike a codec, a long
/// line does not end the stream: it is skipped and reported.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: R,
    max: usize,
    buffer: Vec<u8>,
    /// Inside a line that is too long, up to its newline.
    skipping: bool,
    /// The first bytes of the last line that was too long.
    pub cut_prefix: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(reader: R, max: usize) -> LineReader<R> {
        LineReader {
            reader,
            max,
            buffer: Vec::new(),
            skipping: false,
            cut_prefix: Vec::new(),
        }
    }

    /// The next line, without its newline (cancel safe: a partial line
    /// stays buffered).
    pub async fn next(&mut self) -> Line {
        loop {
            let available = match self.reader.fill_buf().await {
                Ok([]) | Err(_) => {
                    return if self.buffer.is_empty() || self.skipping {
                        Line::Closed
                    } else {
                        Line::Text(self.take())
                    };
                }
                Ok(available) => available,
            };
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            let used = chunk.len() + usize::from(found);
            if !self.skipping {
                if self.buffer.len() + chunk.len() > self.max {
                    let keep = self.max.saturating_sub(self.buffer.len()).min(chunk.len());
                    self.buffer.extend_from_slice(&chunk[..keep]);
                    self.cut_prefix = std::mem::take(&mut self.buffer);
                    self.skipping = true;
                } else {
                    self.buffer.extend_from_slice(chunk);
                }
            }
            self.reader.consume(used);
            if found {
                if self.skipping {
                    self.skipping = false;
                    return Line::TooLong;
                }
                return Line::Text(self.take());
            }
        }
    }

    fn take(&mut self) -> String {
        let bytes = std::mem::take(&mut self.buffer);
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_long_lines_and_the_end() {
        let input: &[u8] = b"{\"a\":1}\nxxxxxxxxxxxxxxxxxxxx\nshort\r\nlast";
        let mut reader = LineReader::new(BufReader::with_capacity(4, input), 10);
        assert!(matches!(reader.next().await, Line::Text(t) if t == "{\"a\":1}"));
        assert!(matches!(reader.next().await, Line::TooLong));
        assert_eq!(reader.cut_prefix, b"xxxxxxxxxx");
        assert!(matches!(reader.next().await, Line::Text(t) if t == "short\r"));
        assert!(matches!(reader.next().await, Line::Text(t) if t == "last"));
        assert!(matches!(reader.next().await, Line::Closed));
    }
}
