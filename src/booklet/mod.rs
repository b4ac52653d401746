//! Task `abstract_booklet`: an Indico event in, an OpenDocument booklet out (BOOKLET.md).
//!
//! Owns the whole task and nothing else: reading the event (`input`, `json`, `model`), laying
//! it out (`content`, `people`, `settings`, `text`, `dates`) and packaging it (`styles`,
//! `xml`, `package`). It does no IO, spawns nothing and never blocks: [`build`] is a pure
//! function of its input, reporting through an [`Observer`] that can also cancel it. Callers
//! run it on a blocking thread. `generate` makes test events and is used by no other part.
//!
//! The flow is [`check`] (cheap, at submit) then [`build`]: parse (borrowing strings from the
//! input) → model (clean, convert dates, drop duplicates, sort) → `content.xml` in one pass →
//! ZIP. Memory stays near the input size: people are reduced while they are parsed, and the
//! table of contents and the body are written into two buffers stored back to back.
//!
//! Errors name a JSON Pointer into the task input (`/event/results`, `""` for the input
//! itself), as `details.path` of an `invalid_input` rejection (BOOKLET.md §7).
//!
//! Choices where BOOKLET.md is silent, or where it is changed for editors (docs/booklet.md
//! shows the pages before and after):
//! * a template's placeholders are filled in, then an empty value takes its separator with
//!   it (`{code} - {title}` without a code is the title alone, `{start} / {end}` without an
//!   end is the start alone), and the result is trimmed of spaces; in a header row the same
//!   goes for whole cells (no empty code cell, no dangling `/`), and only the template's first
//!   cell, when kept, is a heading; a session time line or header whose placeholders are all
//!   empty is left out;
//! * the table of contents is built from index marks (`text:toc-mark-start`/`-end` around a
//!   section heading, a `text:toc-mark` holding `CODE<en space>Title` in a contribution's
//!   title), not from the outline, so a contribution is one line with its code; the pre-filled
//!   entries end with a tab and a `text:bookmark-ref` to the heading's page, which LibreOffice
//!   fills in when it lays the file out, so page numbers show on opening, and *Update Index*
//!   writes the same entries (`scripts/booklet-render.sh` with `RENDER_UPDATE_INDEX=1` checks
//!   it). A contribution's entry keeps the title it was built with if the title is edited;
//!   a section's follows its heading. The entries link to the headings' bookmarks through the
//!   text style `AB Index Link` (black, not underlined, like LibreOffice's own index links);
//! * several affiliations are separated by `; `, as institution names hold commas;
//! * outside sessions no session heading gives the day, so a contribution's `{start}` there
//!   is the long form (`16 September 2026 09:00`) and its `{end}` is `HH:MM` on the same day,
//!   else long;
//! * typesetting: descriptions are ragged right (justified lines stretched word gaps, and
//!   hyphenation depends on the editor's dictionaries and on languages the abstracts do not
//!   declare); the keep-with-next chain runs from the header row to the title and stops
//!   there (see `styles.rs`); custom fields keep with the description's last paragraph
//!   (automatic styles over `AB Description` and `AB Footnotes`), so no field line is
//!   carried alone onto a page; the empty paragraph that closed a contribution is written only
//!   when another contribution follows in the section, so none is left before a page break
//!   to take a page of its own; a block without contributions after the first section
//!   follows on the previous page (an automatic style over `AB Heading 1` without the page
//!   break);
//! * chairs repeated with the same `id` are listed once; a block without any title prints
//!   `(untitled session)`;
//! * a contribution listed both in a block and in `event.contributions` is printed in the
//!   block without a warning (the documented merge); one listed twice elsewhere warns;
//! * the empty paragraphs around descriptions and after headings use `AB Description`, a
//!   contribution without a description gets no empty paragraph for it, and a boolean custom
//!   field value prints as `Yes` or `No`.

mod content;
mod dates;
pub mod generate;
mod input;
mod json;
mod model;
mod package;
mod people;
mod settings;
mod styles;
mod text;
mod xml;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::booklet::input::{EventShape, RawInput, ShapeInput};
use crate::booklet::json::{Kind, List, Obj};

/// One sentence for the task catalogue.
pub const DESCRIPTION: &str = "Builds the abstract booklet of an Indico event as an OpenDocument \
     text (.odt): a table of contents, then every session block in time order with each \
     contribution's code, time, title, authors and abstract.";

/// Media type of the file [`build`] returns.
pub const CONTENT_TYPE: &str = styles::MEDIA_TYPE;

/// JSON Schema of the task input: `event` (an object, inner structure open) is required,
/// `settings` is an object or null.
pub fn input_schema() -> Value {
    let template = json!({"type": ["string", "null"]});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": {
                "type": "object",
                "description": "An Indico event export (detail=sessions), its HTTPAPIResult envelope, or the PURR plugin's event"
            },
            "settings": {
                "type": ["object", "null"],
                "properties": {
                    "ab_session_h1": template,
                    "ab_session_h2": template,
                    "ab_contribution_h1": template,
                    "ab_contribution_h2": template,
                    "ab_outside_h1": template,
                    "ab_toc_title": template,
                    "custom_fields": {
                        "type": ["array", "null"],
                        "items": {
                            "anyOf": [
                                {"type": "string"},
                                {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": ["string", "integer", "null"]},
                                        "name": {"type": ["string", "null"]}
                                    }
                                }
                            ]
                        }
                    }
                }
            }
        }
    })
}

/// Input the task refuses, with a JSON Pointer into the input (`""` for the input itself),
/// e.g. `/event/results` or `/settings/custom_fields`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InputError {
    pub path: String,
    pub reason: String,
}

impl InputError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        InputError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Why [`build`] gave no booklet.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The input is not a usable event (the same cases [`check`] refuses).
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InputError),
    /// The observer asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// Writing XML into memory failed (a bug: memory writes do not fail).
    #[error("could not write the document")]
    Write(#[from] std::io::Error),
    /// The ZIP writer failed (a bug for an in-memory package).
    #[error("could not write the package")]
    Package(#[from] zip::result::ZipError),
}

/// A progress report: `fraction` in 0..=1 never decreases; `data` holds `phase` and the
/// phase's counters (BOOKLET.md §6).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub fraction: f64,
    pub message: String,
    pub data: Value,
}

/// Receives progress and tells [`build`] when to stop.
pub trait Observer {
    fn progress(&mut self, p: Progress);
    fn cancelled(&self) -> bool;
}

/// The built booklet.
pub struct Booklet {
    /// `<id>_<slug>_abstract_booklet.odt`, matching `^[A-Za-z0-9_-]+\.odt$`.
    pub filename: String,
    /// The package, of type [`CONTENT_TYPE`].
    pub odt: Vec<u8>,
    /// The task result (§6): counts, `input_shape`, `warnings`.
    pub result: Value,
}

impl fmt::Debug for Booklet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Booklet")
            .field("filename", &self.filename)
            .field("odt_bytes", &self.odt.len())
            .field("result", &self.result)
            .finish()
    }
}

/// Which of the three accepted shapes the input had (§2 "Detection").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Indico,
    IndicoEnvelope,
    Plugin,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Indico => "indico",
            Shape::IndicoEnvelope => "indico_envelope",
            Shape::Plugin => "plugin",
        }
    }
}

/// At most this many warnings are listed; the rest are counted.
const MAX_WARNINGS: usize = 100;

/// Tolerated problems, each with a JSON Pointer into the input.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    list: Vec<(String, &'static str)>,
    truncated: usize,
}

impl Warnings {
    /// Adds a warning; `path` is only built while the list has room.
    pub(crate) fn push(&mut self, path: impl FnOnce() -> String, message: &'static str) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push((path(), message));
        } else {
            self.truncated += 1;
        }
    }
}

/// Checks the raw task input at submit time, without building anything: it must be an object
/// whose `event` is an event (or an envelope holding exactly one) with a `sessions` or
/// `contributions` array, and whose `settings` are valid.
pub fn check(input: &str) -> Result<(), InputError> {
    let mut backup = String::new();
    let parsed: Obj<ShapeInput<'_>> = parse_json(input, &mut backup)?;
    let Obj::Object(parsed) = parsed else {
        return Err(InputError::new("", "input must be a JSON object"));
    };
    check_event(&parsed.event)?;
    settings::parse(parsed.settings.as_ref(), &mut |_, _| {})?;
    Ok(())
}

/// The checks of §7 on `event`, shared by [`check`] and [`build`].
fn check_event<E: EventShape>(event: &Obj<E>) -> Result<(), InputError> {
    let event = match event {
        Obj::Missing => return Err(InputError::new("/event", "required")),
        Obj::Other(kind) => return Err(not_object("/event", *kind)),
        Obj::Object(event) => event,
    };
    let (event, path) = if event.is_envelope() {
        let results = match event.results() {
            List::Items(results) => results.as_slice(),
            List::Missing => return Err(InputError::new("/event/results", "required")),
            List::Other(kind) => {
                let reason = format!("must be an array, got {}", kind.name());
                return Err(InputError::new("/event/results", reason));
            }
        };
        match results {
            [Obj::Object(inner)] => (inner, "/event/results/0"),
            [Obj::Other(kind)] => return Err(not_object("/event/results/0", *kind)),
            _ => {
                let reason = match results.len() {
                    0 => "is empty; it must hold exactly one event".to_owned(),
                    n => format!("holds {n} items; it must hold exactly one event"),
                };
                return Err(InputError::new("/event/results", reason));
            }
        }
    } else {
        (event, "/event")
    };
    let (sessions, contributions) = (event.sessions_kind(), event.contributions_kind());
    if sessions.is_none() && contributions.is_none() {
        return Err(InputError::new(
            path,
            "no sessions or contributions; export the event with detail=sessions",
        ));
    }
    for (key, kind) in [("sessions", sessions), ("contributions", contributions)] {
        if let Some(kind) = kind.filter(|&k| k != Kind::Array) {
            let reason = format!("must be an array, got {}", kind.name());
            return Err(InputError::new(format!("{path}/{key}"), reason));
        }
    }
    Ok(())
}

fn not_object(path: &str, kind: Kind) -> InputError {
    InputError::new(path, format!("must be an object, got {}", kind.name()))
}

/// Parses `text`, borrowing its strings. A key repeated inside one object makes serde's
/// derived readers fail; such input is normalized once (the last value wins, as in most JSON
/// readers) into `backup` and parsed from there.
fn parse_json<'a, T: Deserialize<'a>>(
    text: &'a str,
    backup: &'a mut String,
) -> Result<T, InputError> {
    let invalid = |e: serde_json::Error| InputError::new("", format!("invalid JSON: {e}"));
    match serde_json::from_str(text) {
        Ok(parsed) => Ok(parsed),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            let value: Value = serde_json::from_str(text).map_err(invalid)?;
            *backup = value.to_string();
            let backup: &'a String = backup;
            serde_json::from_str(backup).map_err(invalid)
        }
        Err(e) => Err(invalid(e)),
    }
}

/// Builds the booklet. Pure: no IO, no threads; reports progress per phase and checks for
/// cancellation between phases and between contributions.
pub fn build(input: &str, observer: &mut dyn Observer) -> Result<Booklet, BuildError> {
    observer.progress(Progress {
        fraction: 0.0,
        message: "Reading the event".to_owned(),
        data: json!({"phase": "parse"}),
    });
    let mut backup = String::new();
    let parsed: Obj<RawInput<'_>> = parse_json(input, &mut backup)?;
    let Obj::Object(parsed) = parsed else {
        return Err(InputError::new("", "input must be a JSON object").into());
    };
    check_event(&parsed.event)?;
    stop_if_cancelled(observer)?;
    let mut warnings = Warnings::default();
    let settings = settings::parse(parsed.settings.as_ref(), &mut |path, message| {
        warnings.push(|| path, message)
    })?;
    let event = model::build(parsed.event, &settings, &mut warnings)?;
    stop_if_cancelled(observer)?;

    let in_sessions: usize = event.blocks.iter().map(|b| b.contributions.len()).sum();
    let total = in_sessions + event.outside.len();
    observer.progress(Progress {
        fraction: 0.1,
        message: format!(
            "Read {} session blocks and {total} contributions",
            event.blocks.len()
        ),
        data: json!({"phase": "parse", "sessions": event.blocks.len(), "contributions": total}),
    });

    let mut reported = 0;
    // content.xml is about half to two thirds of the input; reserving more costs only address
    // space (untouched pages are not resident) and saves copying a 10 MB buffer when it grows.
    let content = content::write(&event, &settings, input.len() / 4 * 3, &mut |done| {
        if observer.cancelled() {
            return Err(BuildError::Cancelled);
        }
        // At most one report per 5 % of the phase.
        let step = done * 20 / total.max(1);
        if step > reported {
            reported = step;
            observer.progress(Progress {
                fraction: 0.1 + 0.7 * done as f64 / total.max(1) as f64,
                message: format!("Laid out {done} of {total} contributions"),
                data: json!({"phase": "build", "done": done, "total": total}),
            });
        }
        Ok(())
    })?;
    stop_if_cancelled(observer)?;

    // The model is no longer needed: keep what the result says and free it before zipping.
    let title = event.shown_title().to_owned();
    let filename = filename(&event.id, &title);
    let result = result(&event, &filename, &warnings);
    drop(event);

    observer.progress(Progress {
        fraction: 0.85,
        message: "Writing the .odt".to_owned(),
        data: json!({"phase": "write"}),
    });
    let odt = package(content, &title)?;
    observer.progress(Progress {
        fraction: 0.95,
        message: format!("Wrote {} bytes", odt.len()),
        data: json!({"phase": "write", "bytes": odt.len()}),
    });
    Ok(Booklet {
        filename,
        odt,
        result,
    })
}

/// The ODT package around `content`.
fn package(content: content::Content, title: &str) -> Result<Vec<u8>, BuildError> {
    let styles = styles::styles_xml()?;
    let meta = styles::meta_xml(title)?;
    let manifest = styles::manifest_xml(&["content.xml", "styles.xml", "meta.xml"])?;
    let content_len = content.head.len() + content.body.len();
    let part = |path, pieces| package::Part { path, pieces };
    Ok(package::zip(
        &[
            part("content.xml", &[&content.head, &content.body]),
            part("styles.xml", &[&styles]),
            part("meta.xml", &[&meta]),
            part("META-INF/manifest.xml", &[&manifest]),
        ],
        content_len / 4 + 16 * 1024,
    )?)
}

/// The task result (§6).
fn result(event: &model::Event<'_>, filename: &str, warnings: &Warnings) -> Value {
    let in_sessions: usize = event.blocks.iter().map(|b| b.contributions.len()).sum();
    let all = || {
        event
            .blocks
            .iter()
            .flat_map(|b| &b.contributions)
            .chain(&event.outside)
    };
    let warning_list: Vec<Value> = warnings
        .list
        .iter()
        .map(|(path, message)| json!({"path": path, "message": message}))
        .collect();
    json!({
        "filename": filename,
        "event_id": event.id,
        "event_title": event.title,
        "input_shape": event.shape.name(),
        "sessions": event.blocks.len(),
        "distinct_sessions": event.distinct_sessions,
        "contributions": all().count(),
        "contributions_in_sessions": in_sessions,
        "contributions_outside_sessions": event.outside.len(),
        "unscheduled_contributions": all().filter(|c| c.start.is_none()).count(),
        "pages": null,
        "warnings": warning_list,
        "warnings_truncated": warnings.truncated,
    })
}

fn stop_if_cancelled(observer: &dyn Observer) -> Result<(), BuildError> {
    if observer.cancelled() {
        Err(BuildError::Cancelled)
    } else {
        Ok(())
    }
}

/// `<id>_<slug>_abstract_booklet.odt` (§6).
fn filename(id: &str, title: &str) -> String {
    let id = text::slug(id);
    let id = if id.is_empty() { "event" } else { &id };
    let slug = text::slug(title);
    if slug.is_empty() {
        format!("{id}_abstract_booklet.odt")
    } else {
        format!("{id}_{slug}_abstract_booklet.odt")
    }
}
