//! Settings (§2 "Settings") and the heading templates they hold.
//!
//! Unknown keys are ignored, and no setting's value ever reaches a result, a warning or an
//! error message: PURR sends API keys in the same object.

use std::borrow::Cow;

use serde_json::Value;

use crate::booklet::InputError;
use crate::booklet::json::Kind;
use crate::booklet::text;

/// The settings a booklet is built with, defaults applied.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) session_h1: Template,
    pub(crate) session_h2: Template,
    pub(crate) contribution_h1: Header,
    pub(crate) contribution_h2: Header,
    pub(crate) custom_fields: Vec<CustomField>,
    pub(crate) outside_h1: String,
    pub(crate) toc_title: String,
}

/// A contribution field to print, matched by `id` when both sides have one, else by `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomField {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
}

const DEFAULT_SESSION_H1: &str = "{code} - {title}";
const DEFAULT_SESSION_H2: &str = "{start} / {end}";
const DEFAULT_CONTRIBUTION_H: &str = "| {code} | / | {start} |";
const DEFAULT_OUTSIDE_H1: &str = "Contributions outside sessions";
const DEFAULT_TOC_TITLE: &str = "Table of Contents";

/// Reads `settings` (absent and null are the same). `warn` gets (path, message) pairs.
pub(crate) fn parse(
    settings: Option<&Value>,
    warn: &mut dyn FnMut(String, &'static str),
) -> Result<Settings, InputError> {
    let empty = serde_json::Map::new();
    let map = match settings {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(InputError::new(
                "/settings",
                format!("must be an object or null, got {}", kind_of(other).name()),
            ));
        }
    };
    let mut string = |key: &str, default: &str| -> Result<String, InputError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(default.to_owned()),
            Some(Value::String(s)) => {
                let cleaned = text::single_line(Cow::Borrowed(s));
                if cleaned.removed_illegal {
                    warn(format!("/settings/{key}"), ILLEGAL_REMOVED);
                }
                Ok(cleaned.text.into_owned())
            }
            Some(other) => Err(InputError::new(
                format!("/settings/{key}"),
                format!("must be a string, got {}", kind_of(other).name()),
            )),
        }
    };
    Ok(Settings {
        session_h1: Template::parse(&string("ab_session_h1", DEFAULT_SESSION_H1)?),
        session_h2: Template::parse(&string("ab_session_h2", DEFAULT_SESSION_H2)?),
        contribution_h1: Header::parse(&string("ab_contribution_h1", DEFAULT_CONTRIBUTION_H)?),
        contribution_h2: Header::parse(&string("ab_contribution_h2", DEFAULT_CONTRIBUTION_H)?),
        outside_h1: string("ab_outside_h1", DEFAULT_OUTSIDE_H1)?,
        toc_title: string("ab_toc_title", DEFAULT_TOC_TITLE)?,
        custom_fields: custom_fields(map.get("custom_fields"))?,
    })
}

/// The warning for a field that lost characters XML 1.0 forbids.
pub(crate) const ILLEGAL_REMOVED: &str = "removed control characters that XML 1.0 forbids";

fn custom_fields(value: Option<&Value>) -> Result<Vec<CustomField>, InputError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(InputError::new(
                "/settings/custom_fields",
                format!("must be an array, got {}", kind_of(other).name()),
            ));
        }
    };
    let mut fields = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |rest: &str| format!("/settings/custom_fields/{i}{rest}");
        let field = match item {
            Value::String(name) => CustomField {
                id: None,
                name: name.trim().to_owned(),
            },
            Value::Object(entry) => {
                let name = match entry.get("name") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(name)) => name.trim().to_owned(),
                    Some(other) => {
                        let got = kind_of(other).name();
                        return Err(InputError::new(
                            at("/name"),
                            format!("must be a string, got {got}"),
                        ));
                    }
                };
                let id = match entry.get("id") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(id)) => Some(id.trim().to_owned()),
                    Some(Value::Number(id)) => Some(id.to_string()),
                    Some(other) => {
                        let got = kind_of(other).name();
                        return Err(InputError::new(
                            at("/id"),
                            format!("must be a string or number, got {got}"),
                        ));
                    }
                };
                CustomField { id, name }
            }
            other => {
                return Err(InputError::new(
                    at(""),
                    format!(
                        "must be a string or an object with a name, got {}",
                        kind_of(other).name()
                    ),
                ));
            }
        };
        if !field.name.is_empty() || field.id.is_some() {
            fields.push(field);
        }
    }
    Ok(fields)
}

pub(crate) fn kind_of(value: &Value) -> Kind {
    match value {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::String,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

/// The values a template's placeholders stand for.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Values<'v> {
    pub(crate) code: &'v str,
    pub(crate) title: &'v str,
    pub(crate) start: &'v str,
    pub(crate) end: &'v str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Code,
    Title,
    Start,
    End,
}

/// A parsed template: literal text and the placeholders `{code}`, `{title}`, `{start}`,
/// `{end}`. Parsing first means a value is never rescanned for placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

/// A template filled in.
#[derive(Debug)]
pub(crate) struct Expanded {
    /// The text, trimmed of spaces at both ends.
    pub(crate) text: String,
    placeholders: usize,
    filled: usize,
}

impl Expanded {
    /// The template has placeholders and every one of them was empty.
    pub(crate) fn blank(&self) -> bool {
        self.placeholders > 0 && self.filled == 0
    }

    /// Like [`Expanded::blank`] for the cells of one header row taken together.
    pub(crate) fn all_blank(cells: &[Expanded]) -> bool {
        let placeholders: usize = cells.iter().map(|c| c.placeholders).sum();
        placeholders > 0 && cells.iter().all(|c| c.filled == 0)
    }
}

impl Template {
    pub(crate) fn parse(template: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let found = [
                ("{code}", Piece::Code),
                ("{title}", Piece::Title),
                ("{start}", Piece::Start),
                ("{end}", Piece::End),
            ]
            .into_iter()
            .find(|(name, _)| after.starts_with(name));
            match found {
                Some((name, piece)) => {
                    literal.push_str(&rest[..open]);
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    rest = &after[name.len()..];
                }
                None => {
                    literal.push_str(&rest[..=open]);
                    rest = &after[1..];
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Template { pieces }
    }

    /// Fills the placeholders in; an empty value takes its separator with it (see [`kept`]).
    pub(crate) fn expand(&self, values: &Values<'_>) -> Expanded {
        let text_of = |piece: &'_ Piece| -> &str {
            match piece {
                Piece::Text(_) => "",
                Piece::Code => values.code,
                Piece::Title => values.title,
                Piece::Start => values.start,
                Piece::End => values.end,
            }
        };
        let slot_of = |piece: &Piece| match piece {
            Piece::Text(_) => Slot::Literal,
            other if text_of(other).is_empty() => Slot::Empty,
            _ => Slot::Filled,
        };
        let texts = self.pieces.iter().map(|piece| match piece {
            Piece::Text(literal) => literal.as_str(),
            other => text_of(other),
        });
        let mut text = String::new();
        let (mut placeholders, mut filled) = (0, 0);
        for piece in &self.pieces {
            match slot_of(piece) {
                Slot::Literal => {}
                Slot::Filled => (placeholders, filled) = (placeholders + 1, filled + 1),
                Slot::Empty => placeholders += 1,
            }
        }
        if placeholders == filled {
            // The common case: every value is there, so every piece is printed.
            texts.for_each(|t| text.push_str(t));
        } else {
            let slots: Vec<Slot> = self.pieces.iter().map(slot_of).collect();
            for (t, keep) in texts.zip(kept(&slots)) {
                if keep {
                    text.push_str(t);
                }
            }
        }
        let trimmed = text.trim_matches(' ');
        if trimmed.len() != text.len() {
            text = trimmed.to_owned();
        }
        Expanded {
            text,
            placeholders,
            filled,
        }
    }
}

/// A piece of a template, or a cell of a header row, once filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Literal text: a label or a separator.
    Literal,
    /// A placeholder (or a cell holding placeholders) with a value.
    Filled,
    /// A placeholder (or a cell whose placeholders all are) without a value.
    Empty,
}

impl Slot {
    /// The slot of a header cell, from its expansion.
    pub(crate) fn of_cell(cell: &Expanded) -> Slot {
        match (cell.placeholders, cell.filled) {
            (0, _) => Slot::Literal,
            (_, 0) => Slot::Empty,
            _ => Slot::Filled,
        }
    }
}

/// Which slots to print, so that an empty value takes its separator with it: `{code} - {title}`
/// without a code is `Title`, not `- Title`. A run of literals is kept when it stands between
/// two kept values (for values left out between them, the run that followed the earlier value
/// is used), before the first value when no empty placeholder precedes it, or after the last
/// value when no empty placeholder follows it. A template without placeholders is kept whole.
pub(crate) fn kept(slots: &[Slot]) -> Vec<bool> {
    let mut keep = vec![false; slots.len()];
    if slots.iter().all(|s| *s == Slot::Literal) {
        keep.fill(true);
        return keep;
    }
    // Literals since the last placeholder.
    let mut run: Vec<usize> = Vec::new();
    // The run that followed the last kept value, when empty values came after it.
    let mut gap: Option<Vec<usize>> = None;
    let mut written = false;
    let mut seen_placeholder = false;
    let mut last_filled = false;
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            Slot::Literal => run.push(i),
            Slot::Filled => {
                let separator = match gap.take() {
                    Some(gap) if !gap.is_empty() => gap,
                    _ if written || !seen_placeholder => std::mem::take(&mut run),
                    _ => Vec::new(),
                };
                for j in separator {
                    keep[j] = true;
                }
                keep[i] = true;
                written = true;
                seen_placeholder = true;
                last_filled = true;
                run.clear();
            }
            Slot::Empty => {
                if written && last_filled {
                    gap = Some(std::mem::take(&mut run));
                }
                seen_placeholder = true;
                last_filled = false;
                run.clear();
            }
        }
    }
    if last_filled {
        for j in run {
            keep[j] = true;
        }
    }
    keep
}

/// A contribution header: a one-row table when the template is `| a | b | c |`, else a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    Table(Vec<Template>),
    Line(Template),
}

impl Header {
    pub(crate) fn parse(template: &str) -> Header {
        let trimmed = template.trim_matches(' ');
        match trimmed
            .strip_prefix('|')
            .and_then(|inner| inner.strip_suffix('|'))
        {
            Some(inner) => Header::Table(
                inner
                    .split('|')
                    .map(|cell| Template::parse(cell.trim_matches(' ')))
                    .collect(),
            ),
            None => Header::Line(Template::parse(template)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn values() -> Values<'static> {
        Values {
            code: "MOA01",
            title: "A {start} title",
            start: "09:00",
            end: "",
        }
    }

    #[test]
    fn expands_in_one_pass() {
        let t = Template::parse("{code}: {title} {nope} {start}{");
        let e = t.expand(&values());
        assert_eq!(e.text, "MOA01: A {start} title {nope} 09:00{");
        assert!(!e.blank());
        let e = Template::parse("{end}").expand(&values());
        assert!(e.blank());
        assert!(!Template::parse("literal").expand(&values()).blank());
    }

    #[test]
    fn empty_values_take_their_separators_with_them() {
        let cases = [
            // (template, code, start, end, expected)
            ("{code} - {title}", "", "", "", "T"),
            ("{code} - {title}", "C", "", "", "C - T"),
            ("{start} / {end}", "", "S", "", "S"),
            ("{start} / {end}", "", "", "E", "E"),
            ("{code} - {start} - {title}", "C", "", "", "C - T"),
            ("{code}{start} | {title}", "C", "", "", "C | T"),
            ("Session {code}: {title}", "", "", "", "T"),
            ("Session {code}: {title}", "C", "", "", "Session C: T"),
            ("{title} [{code}] {unknown}", "", "", "", "T"),
            ("{title} (poster)", "", "", "", "T (poster)"),
            ("{code} at {start}", "", "", "", ""),
            ("only literal", "", "", "", "only literal"),
        ];
        for (template, code, start, end, expected) in cases {
            let values = Values {
                code,
                title: "T",
                start,
                end,
            };
            let got = Template::parse(template).expand(&values).text;
            assert_eq!(got, expected, "{template:?} with {values:?}");
        }
        use Slot::{Empty as E, Filled as F, Literal as L};
        let rows: [(&[Slot], &[bool]); 5] = [
            (&[E, L, F], &[false, false, true]),
            (&[F, L, E], &[true, false, false]),
            (&[F, L, L, F], &[true, true, true, true]),
            (&[F, L, E, L, F], &[true, true, false, false, true]),
            (&[L, L], &[true, true]),
        ];
        for (slots, expected) in rows {
            assert_eq!(kept(slots), expected, "{slots:?}");
        }
    }

    #[test]
    fn headers() {
        let Header::Table(cells) = Header::parse(" | {code} | / | | {start} | ") else {
            panic!("table expected");
        };
        let texts: Vec<String> = cells.iter().map(|c| c.expand(&values()).text).collect();
        assert_eq!(texts, ["MOA01", "/", "", "09:00"]);
        assert!(matches!(
            Header::parse("{code} at {start}"),
            Header::Line(_)
        ));
        assert!(matches!(Header::parse("|"), Header::Line(_)));
    }

    #[test]
    fn settings_defaults_and_errors() {
        let mut warnings = Vec::new();
        let mut warn = |p: String, m: &'static str| warnings.push((p, m));
        let s = parse(
            Some(&json!({"ab_session_h1": "  ", "api_key": "secret", "custom_fields": ["Footnotes", {"id": 7, "name": "Funding"}]})),
            &mut warn,
        )
        .unwrap();
        assert_eq!(s.session_h1, Template::parse(DEFAULT_SESSION_H1));
        assert_eq!(s.custom_fields.len(), 2);
        assert_eq!(s.custom_fields[1].id.as_deref(), Some("7"));
        let err = parse(Some(&json!({"ab_toc_title": 3})), &mut warn).unwrap_err();
        assert_eq!(err.path, "/settings/ab_toc_title");
        let err = parse(Some(&json!({"custom_fields": "x"})), &mut warn).unwrap_err();
        assert_eq!(err.path, "/settings/custom_fields");
        let err = parse(Some(&json!([])), &mut warn).unwrap_err();
        assert_eq!(err.path, "/settings");
        assert!(parse(Some(&Value::Null), &mut warn).is_ok());
    }
}
