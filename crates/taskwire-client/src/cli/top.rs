//! `top`: a live terminal view of the admin `watch` feed: the workers,
//! running, queued and recently failed tasks, and totals per task name.
//! With `--json`, the feed itself as JSON lines instead.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use serde_json::json;

use super::output::Out;
use super::tasks::detail;
use super::{Failure, Target, exit};
use crate::{Stats, Summary, TaskId, WatchUpdate, Worker};

/// How often keys are read and the screen redrawn.
const TICK: Duration = Duration::from_millis(200);

/// What the view knows: the feed applied to the last snapshot.
#[derive(Debug, Default)]
struct View {
    url: String,
    tasks: HashMap<TaskId, Summary>,
    workers: HashMap<String, Worker>,
    stats: Stats,
    recent: usize,
    reconnects: u64,
}

impl View {
    fn apply(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Snapshot {
                tasks,
                workers,
                stats,
            } => {
                if !self.tasks.is_empty() {
                    self.reconnects += 1;
                }
                self.tasks = tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect();
                self.workers = workers.into_iter().map(|w| (w.id.clone(), w)).collect();
                self.stats = stats;
            }
            WatchUpdate::Worker(worker) => {
                if worker.state == "gone" {
                    self.workers.remove(&worker.id);
                } else {
                    self.workers.insert(worker.id.clone(), *worker);
                }
            }
            WatchUpdate::Task(task) => {
                self.tasks.insert(task.task_id.clone(), *task);
                self.forget_old();
            }
            WatchUpdate::Stats(stats) => self.stats = *stats,
        }
    }

    /// Keeps the finished tasks bounded (the server sends every change).
    fn forget_old(&mut self) {
        let keep = self.recent.max(200);
        let mut finished: Vec<(String, TaskId)> = self
            .tasks
            .values()
            .filter(|t| t.finished_at.is_some())
            .map(|t| (t.finished_at.clone().unwrap_or_default(), t.task_id.clone()))
            .collect();
        if finished.len() <= keep {
            return;
        }
        finished.sort();
        let excess = finished.len() - keep;
        for (_, id) in finished.into_iter().take(excess) {
            self.tasks.remove(&id);
        }
    }

    fn in_state(&self, state: &str) -> Vec<&Summary> {
        let mut tasks: Vec<&Summary> = self.tasks.values().filter(|t| t.state == state).collect();
        tasks.sort_by(|a, b| (a.position, &a.created_at).cmp(&(b.position, &b.created_at)));
        tasks
    }

    fn failed(&self) -> Vec<&Summary> {
        let mut tasks: Vec<&Summary> = self
            .tasks
            .values()
            .filter(|t| t.state == "failed")
            .collect();
        tasks.sort_by(|a, b| b.finished_at.cmp(&a.finished_at));
        tasks.truncate(self.recent);
        tasks
    }
}

pub(crate) async fn run(target: &Target, recent: usize) -> Result<u8, Failure> {
    let out = Out::new(target.json);
    let client = target.client()?;
    let session = client.connect().await?;
    let mut feed = session.watch().await?;
    if out.json {
        while let Some(update) = feed.next().await {
            let update = update?;
            out.json(&match update {
                WatchUpdate::Snapshot {
                    tasks,
                    workers,
                    stats,
                } => {
                    json!({"type": "watching", "tasks": tasks, "workers": workers, "stats": stats})
                }
                WatchUpdate::Task(task) => json!({"type": "task_update", "task": task}),
                WatchUpdate::Worker(worker) => json!({"type": "worker_update", "worker": worker}),
                WatchUpdate::Stats(stats) => json!({"type": "stats", "stats": stats}),
            });
        }
        return Ok(exit::CONNECTION);
    }
    if !std::io::stdout().is_terminal() {
        return Err(Failure::usage(
            "top draws on a terminal; use `taskwire top --json` for a pipe",
        ));
    }
    let mut view = View {
        url: client.base_url().to_string(),
        recent,
        ..View::default()
    };
    let mut terminal = ratatui::init();
    let outcome = screen(&mut terminal, &mut view, &mut feed).await;
    ratatui::restore();
    session.close().await;
    outcome
}

async fn screen(
    terminal: &mut DefaultTerminal,
    view: &mut View,
    feed: &mut crate::WatchFeed,
) -> Result<u8, Failure> {
    let mut tick = tokio::time::interval(TICK);
    let mut dirty = true;
    loop {
        tokio::select! {
            update = feed.next() => match update {
                Some(Ok(update)) => {
                    view.apply(update);
                    dirty = true;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(Failure::quiet(exit::CONNECTION)),
            },
            _ = tick.tick() => {
                while event::poll(Duration::ZERO).unwrap_or(false) {
                    if let Ok(TermEvent::Key(key)) = event::read()
                        && key.kind == KeyEventKind::Press
                    {
                        let ctrl_c = key.code == KeyCode::Char('c')
                            && key.modifiers.contains(KeyModifiers::CONTROL);
                        if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                            return Ok(exit::COMPLETED);
                        }
                    }
                    dirty = true;
                }
                if dirty {
                    terminal
                        .draw(|frame| draw(frame, view))
                        .map_err(|e| Failure { code: exit::CONNECTION, message: format!("cannot draw: {e}") })?;
                    dirty = false;
                }
            }
        }
    }
}

fn short(id: &TaskId) -> String {
    id.to_string()
}

/// `HH:MM:SS` of an RFC 3339 time.
fn clock(at: &str) -> &str {
    at.get(11..19).unwrap_or(at)
}

fn draw(frame: &mut Frame<'_>, view: &View) {
    let mut running = view.in_state("running");
    running.extend(view.in_state("waiting"));
    let queued = view.in_state("queued");
    let failed = view.failed();
    let s = &view.stats;
    let mut workers: Vec<&Worker> = view.workers.values().collect();
    workers.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    let n_workers = workers.len();
    let [
        head,
        workers_area,
        running_area,
        queued_area,
        failed_area,
        totals_area,
    ] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::try_from(n_workers.min(16)).unwrap_or(16) + 2),
        Constraint::Min(4),
        Constraint::Min(4),
        Constraint::Min(4),
        Constraint::Length(u16::try_from(s.tasks.len().min(8)).unwrap_or(8) + 3),
    ])
    .areas(frame.area());

    let bold = Style::default().add_modifier(Modifier::BOLD);
    let header = Line::from(vec![
        Span::styled("taskwire top ", bold),
        Span::raw(format!("{}  ", view.url)),
        Span::raw(format!(
            "workers {}/{} busy  running {}  queued {}  connections {}",
            s.workers_busy, s.workers, s.running, s.queued, s.connections
        )),
        Span::raw(if view.reconnects > 0 {
            format!("  reconnected {}x", view.reconnects)
        } else {
            String::new()
        }),
        Span::styled("  (q quits)", Style::default().fg(Color::DarkGray)),
    ]);
    frame.render_widget(Paragraph::new(header), head);

    // Workers: each one, its load, and what it runs.
    let rows = workers.iter().map(|w| {
        let task = w.running.first().and_then(|id| view.tasks.get(id));
        let state = if w.busy > 0 { "busy" } else { w.state.as_str() };
        Row::new(vec![
            w.name.clone(),
            w.kind.clone(),
            state.to_owned(),
            format!("{}/{}", w.busy, w.slots),
            task.map(|t| t.task.clone()).unwrap_or_default(),
            w.running.first().map(short).unwrap_or_default(),
            task.map(percent).unwrap_or_default(),
            task.and_then(|t| t.message.clone()).unwrap_or_default(),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(18),
                Constraint::Length(33),
                Constraint::Length(5),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(vec![
                "WORKER", "KIND", "STATE", "LOAD", "TASK", "TASK_ID", "", "",
            ])
            .style(bold),
        )
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Workers ({n_workers}) ")),
        ),
        workers_area,
    );

    let widths = [
        Constraint::Length(33),
        Constraint::Length(18),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Min(10),
    ];
    let header_row = |cells: [&'static str; 5]| Row::new(cells.to_vec()).style(bold);
    let running_rows = running.iter().map(|t| {
        Row::new(vec![
            short(&t.task_id),
            t.task.clone(),
            t.client.clone(),
            percent(t),
            format!(
                "{}  since {}",
                detail(t),
                t.started_at.as_deref().map(clock).unwrap_or("")
            ),
        ])
    });
    frame.render_widget(
        Table::new(running_rows, widths)
            .header(header_row([
                "TASK_ID", "TASK", "CLIENT", "PROGRESS", "DETAIL",
            ]))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" Running ({}) ", running.len())),
            ),
        running_area,
    );
    let queued_rows = queued.iter().map(|t| {
        Row::new(vec![
            short(&t.task_id),
            t.task.clone(),
            t.client.clone(),
            t.position.map(|p| p.to_string()).unwrap_or_default(),
            format!("since {}", clock(&t.created_at)),
        ])
    });
    frame.render_widget(
        Table::new(queued_rows, widths)
            .header(header_row([
                "TASK_ID", "TASK", "CLIENT", "POSITION", "DETAIL",
            ]))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" Queued ({}) ", queued.len())),
            ),
        queued_area,
    );
    let failed_rows = failed.iter().map(|t| {
        Row::new(vec![
            short(&t.task_id),
            t.task.clone(),
            t.client.clone(),
            t.finished_at.as_deref().map(clock).unwrap_or("").to_owned(),
            detail(t),
        ])
        .style(Style::default().fg(Color::Red))
    });
    frame.render_widget(
        Table::new(failed_rows, widths)
            .header(header_row(["TASK_ID", "TASK", "CLIENT", "AT", "ERROR"]))
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" Recently failed ({}) ", failed.len())),
            ),
        failed_area,
    );
    let totals = s.tasks.iter().map(|(name, o)| {
        Row::new(vec![
            name.clone(),
            o.completed.to_string(),
            o.failed.to_string(),
            o.cancelled.to_string(),
        ])
    });
    frame.render_widget(
        Table::new(
            totals,
            [
                Constraint::Length(20),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(10),
            ],
        )
        .header(Row::new(vec!["TASK", "COMPLETED", "FAILED", "CANCELLED"]).style(bold))
        .block(Block::default().borders(Borders::ALL).title(" Totals ")),
        totals_area,
    );
}

fn percent(task: &Summary) -> String {
    task.progress
        .map(|p| format!("{:.0}%", p * 100.0))
        .unwrap_or_default()
}
