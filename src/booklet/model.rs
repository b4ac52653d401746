//! The event as the booklet prints it: fields chosen among spellings, text cleaned, dates
//! converted, duplicates dropped, blocks and contributions sorted (§2, §3.6, §7).
//!
//! Every tolerated problem becomes a warning with a JSON Pointer into the task input; nothing
//! here fails except an input that `check` would have refused. Strings stay borrowed from the
//! input unless cleaning changed them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;

use jiff::tz::TimeZone;

use crate::booklet::dates::{DateProblem, Moment, Zones};
use crate::booklet::input::{
    EventShape, Person, RawBlock, RawContribution, RawDate, RawEvent, RawFieldValue,
};
use crate::booklet::json::{List, Obj, Scalar};
use crate::booklet::settings::{CustomField, ILLEGAL_REMOVED, Settings};
use crate::booklet::text::{self, natural_cmp};
use crate::booklet::{InputError, Shape, Warnings};

/// The event, ready to print.
#[derive(Debug)]
pub(crate) struct Event<'a> {
    /// `id` cleaned, or `event`.
    pub(crate) id: String,
    /// `title` cleaned; may be empty (see [`Event::shown_title`]).
    pub(crate) title: String,
    pub(crate) shape: Shape,
    /// Sorted blocks; each one's contributions sorted.
    pub(crate) blocks: Vec<Block<'a>>,
    /// Contributions outside every block, sorted.
    pub(crate) outside: Vec<Contribution<'a>>,
    /// Sessions the blocks belong to.
    pub(crate) distinct_sessions: usize,
}

impl Event<'_> {
    /// The title for the file name and `meta.xml`: `Untitled event` when there is none (§2).
    pub(crate) fn shown_title(&self) -> &str {
        if self.title.is_empty() {
            "Untitled event"
        } else {
            &self.title
        }
    }
}

/// A session block.
#[derive(Debug)]
pub(crate) struct Block<'a> {
    id: Cow<'a, str>,
    /// Identifies the session the block belongs to, for `distinct_sessions`.
    session: String,
    pub(crate) code: Cow<'a, str>,
    pub(crate) title: Cow<'a, str>,
    pub(crate) start: Option<Moment>,
    pub(crate) end: Option<Moment>,
    pub(crate) chairs: Vec<Person<'a>>,
    pub(crate) poster: bool,
    pub(crate) contributions: Vec<Contribution<'a>>,
}

/// A contribution.
#[derive(Debug)]
pub(crate) struct Contribution<'a> {
    id: Option<Cow<'a, str>>,
    friendly_id: Option<Cow<'a, str>>,
    pub(crate) code: Cow<'a, str>,
    pub(crate) title: Cow<'a, str>,
    pub(crate) start: Option<Moment>,
    pub(crate) end: Option<Moment>,
    /// Multi-line; split into paragraphs when written.
    pub(crate) description: Cow<'a, str>,
    pub(crate) speakers: Vec<Person<'a>>,
    pub(crate) authors: Vec<Person<'a>>,
    pub(crate) coauthors: Vec<Person<'a>>,
    /// Values of `settings.custom_fields` in that order, empty ones left out; multi-line.
    pub(crate) fields: Vec<Cow<'a, str>>,
}

/// The placeholder for a contribution without a title (§7).
const UNTITLED_CONTRIBUTION: &str = "(untitled contribution)";
const UNTITLED_SESSION: &str = "(untitled session)";

/// Builds the model from the parsed event, which `check_event` has already accepted.
pub(crate) fn build<'a>(
    raw: Obj<RawEvent<'a>>,
    settings: &Settings,
    warnings: &mut Warnings,
) -> Result<Event<'a>, InputError> {
    let Obj::Object(mut event) = raw else {
        return Err(InputError::new("/event", "must be an object"));
    };
    let mut prefix = String::from("/event");
    let mut shape = Shape::Indico;
    if event.is_envelope() {
        let mut results = std::mem::take(&mut event.results).into_items();
        if results.len() != 1 {
            return Err(InputError::new(
                "/event/results",
                "must hold exactly one event",
            ));
        }
        match results.pop() {
            Some(Obj::Object(inner)) => event = inner,
            _ => return Err(InputError::new("/event/results/0", "must be an object")),
        }
        prefix.push_str("/results/0");
        shape = Shape::IndicoEnvelope;
    }
    if is_plugin(&event) {
        shape = Shape::Plugin;
    }

    let mut zones = Zones::new(display_zone(&event, &prefix, warnings));
    let mut reader = Reader {
        zones: &mut zones,
        warnings,
        custom_fields: &settings.custom_fields,
    };
    let id = event
        .id
        .text()
        .map(|id| text::single_line(Cow::Borrowed(id)).text.into_owned())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| "event".to_owned());
    let title = match event.title.text() {
        Some(title) => reader.single(Cow::Borrowed(title), || format!("{prefix}/title")),
        None => Cow::Borrowed(""),
    };
    let title = title.into_owned();

    let mut seen = HashSet::new();
    let mut blocks = Vec::new();
    if matches!(event.sessions, List::Missing) {
        reader.warnings.push(
            || prefix.clone(),
            "the export has no sessions, so every contribution is printed outside sessions; \
             export the event with detail=sessions",
        );
    }
    for (i, block) in event.sessions.into_items().into_iter().enumerate() {
        let path = format!("{prefix}/sessions/{i}");
        match block {
            Obj::Object(block) => blocks.push(reader.block(block, &path, &mut seen)),
            _ => reader.warnings.push(|| path, "not an object; skipped"),
        }
    }
    // From here `seen` tracks the outside list only.
    let in_blocks = std::mem::take(&mut seen);
    let mut outside = Vec::new();
    for (i, item) in event.contributions.into_items().into_iter().enumerate() {
        let path = format!("{prefix}/contributions/{i}");
        let Obj::Object(raw) = item else {
            reader.warnings.push(|| path, "not an object; skipped");
            continue;
        };
        // A contribution listed in a block and again here is printed once, in the block.
        if identity(&raw).is_some_and(|key| in_blocks.contains(&key)) {
            continue;
        }
        if let Some(c) = reader.contribution(raw, &path, &mut seen) {
            outside.push(c);
        }
    }

    let distinct_sessions = blocks
        .iter()
        .map(|b| b.session.as_str())
        .collect::<HashSet<_>>()
        .len();
    blocks.sort_by(|a, b| {
        by_start(a.start, b.start)
            .then_with(|| by_code(&a.code, &b.code))
            .then_with(|| natural_cmp(&a.id, &b.id))
    });
    outside.sort_by(by_contribution);
    Ok(Event {
        id,
        title,
        shape,
        blocks,
        outside,
        distinct_sessions,
    })
}

fn is_plugin(event: &RawEvent<'_>) -> bool {
    let contribution = |c: &Obj<RawContribution<'_>>| {
        c.as_object().is_some_and(|c| {
            !c.start_dt.is_missing() || !c.end_dt.is_missing() || c.primary_authors.kind().is_some()
        })
    };
    !event.start_dt.is_missing()
        || !event.end_dt.is_missing()
        || event.contributions.items().iter().any(contribution)
        || event.sessions.items().iter().any(|b| {
            b.as_object().is_some_and(|b| {
                !b.start_dt.is_missing()
                    || !b.end_dt.is_missing()
                    || b.contributions.items().iter().any(contribution)
            })
        })
}

/// `timezone` if known, else the zone of the event's start date, else UTC.
fn display_zone(event: &RawEvent<'_>, prefix: &str, warnings: &mut Warnings) -> TimeZone {
    if let Some(name) = event.timezone.non_empty() {
        if let Ok(zone) = TimeZone::get(name.trim()) {
            return zone;
        }
        warnings.push(
            || format!("{prefix}/timezone"),
            "unknown time zone; dates are shown in the zone of the event's start date",
        );
    }
    let start = if event.start_dt.is_missing() {
        &event.start_date
    } else {
        &event.start_dt
    };
    if let RawDate::Parts(parts) = start
        && let Some(zone) = parts
            .tz
            .non_empty()
            .and_then(|n| TimeZone::get(n.trim()).ok())
    {
        return zone;
    }
    TimeZone::UTC
}

/// The de-duplication identity of a contribution: `id`, else `db_id`, else `friendly_id`.
fn identity(c: &RawContribution<'_>) -> Option<String> {
    [
        ("id", &c.id),
        ("db_id", &c.db_id),
        ("friendly_id", &c.friendly_id),
    ]
    .into_iter()
    .find_map(|(key, value)| value.non_empty().map(|v| format!("{key}:{}", v.trim())))
}

fn by_start(a: Option<Moment>, b: Option<Moment>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.instant.cmp(&b.instant),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Natural order, empty last.
fn by_code(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (false, false) => natural_cmp(a, b),
        (a_empty, b_empty) => a_empty.cmp(&b_empty),
    }
}

fn by_optional(a: Option<&str>, b: Option<&str>) -> Ordering {
    by_code(a.unwrap_or(""), b.unwrap_or(""))
}

/// Start (unscheduled last), code (empty last), `friendly_id`, `id` (§3.6).
fn by_contribution(a: &Contribution<'_>, b: &Contribution<'_>) -> Ordering {
    by_start(a.start, b.start)
        .then_with(|| by_code(&a.code, &b.code))
        .then_with(|| by_optional(a.friendly_id.as_deref(), b.friendly_id.as_deref()))
        .then_with(|| by_optional(a.id.as_deref(), b.id.as_deref()))
}

/// Reads blocks, contributions and people, warning about what it tolerates.
struct Reader<'r> {
    zones: &'r mut Zones,
    warnings: &'r mut Warnings,
    custom_fields: &'r [CustomField],
}

impl<'r> Reader<'r> {
    fn single<'a>(&mut self, s: Cow<'a, str>, path: impl FnOnce() -> String) -> Cow<'a, str> {
        let cleaned = text::single_line(s);
        if cleaned.removed_illegal {
            self.warnings.push(path, ILLEGAL_REMOVED);
        }
        cleaned.text
    }

    fn multi<'a>(&mut self, s: Cow<'a, str>, path: impl FnOnce() -> String) -> Cow<'a, str> {
        let cleaned = text::multi_line(s);
        if cleaned.removed_illegal {
            self.warnings.push(path, ILLEGAL_REMOVED);
        }
        cleaned.text
    }

    /// A scalar as single-line text; anything but a string or number reads as empty.
    fn scalar<'a>(&mut self, value: Scalar<'a>, path: impl FnOnce() -> String) -> Cow<'a, str> {
        match value.into_text() {
            Some(s) => self.single(s, path),
            None => Cow::Borrowed(""),
        }
    }

    /// The date under `camel` (Indico) or `snake` (plugin), whichever is present.
    fn date(
        &mut self,
        camel: &RawDate<'_>,
        snake: &RawDate<'_>,
        path: &str,
        keys: [&str; 2],
    ) -> Option<Moment> {
        let (raw, key) = if snake.is_missing() {
            (camel, keys[0])
        } else {
            (snake, keys[1])
        };
        let (moment, problem) = self.zones.resolve(raw);
        match problem {
            None => {}
            Some(DateProblem::Malformed) => self.warnings.push(
                || format!("{path}/{key}"),
                "malformed date; treated as unscheduled",
            ),
            Some(DateProblem::UnknownZone) => self.warnings.push(
                || format!("{path}/{key}/tz"),
                "unknown time zone; read in the event's zone",
            ),
        }
        moment
    }

    fn block<'a>(
        &mut self,
        raw: RawBlock<'a>,
        path: &str,
        seen: &mut HashSet<String>,
    ) -> Block<'a> {
        let start = self.date(
            &raw.start_date,
            &raw.start_dt,
            path,
            ["startDate", "start_dt"],
        );
        let end = self.date(&raw.end_date, &raw.end_dt, path, ["endDate", "end_dt"]);
        let session = match raw.session {
            Obj::Object(session) => session,
            _ => Default::default(),
        };
        let session_key = match (session.id.non_empty(), session.code.non_empty()) {
            (Some(id), _) => format!("id:{id}"),
            (None, Some(code)) => format!("code:{code}"),
            (None, None) => format!("block:{}", raw.title.text().unwrap_or_default()),
        };
        let code = match raw.code.into_text().filter(|c| !c.trim().is_empty()) {
            Some(code) => self.single(code, || format!("{path}/code")),
            None => self.scalar(session.code, || format!("{path}/session/code")),
        };
        let mut title = match raw.title.into_text().filter(|t| !t.trim().is_empty()) {
            Some(title) => self.single(title, || format!("{path}/title")),
            None => self.scalar(session.title, || format!("{path}/session/title")),
        };
        if title.is_empty() {
            self.warnings
                .push(|| format!("{path}/title"), "block without a title");
            title = Cow::Borrowed(UNTITLED_SESSION);
        }
        let chairs = if !raw.conveners.items().is_empty() {
            self.people(raw.conveners, &format!("{path}/conveners"))
        } else if !session.conveners_camel.items().is_empty() {
            self.people(
                session.conveners_camel,
                &format!("{path}/session/sessionConveners"),
            )
        } else {
            self.people(
                session.session_conveners,
                &format!("{path}/session/session_conveners"),
            )
        };
        let poster = matches!(session.is_poster_camel, Scalar::Bool(true))
            || matches!(session.is_poster, Scalar::Bool(true));
        let mut contributions = Vec::new();
        for (i, item) in raw.contributions.into_items().into_iter().enumerate() {
            let path = format!("{path}/contributions/{i}");
            match item {
                Obj::Object(c) => contributions.extend(self.contribution(c, &path, seen)),
                _ => self.warnings.push(|| path, "not an object; skipped"),
            }
        }
        contributions.sort_by(by_contribution);
        Block {
            id: raw.id.into_text().unwrap_or_default(),
            session: session_key,
            code,
            title,
            start,
            end,
            chairs,
            poster,
            contributions,
        }
    }

    /// `None` when the same contribution was already read.
    fn contribution<'a>(
        &mut self,
        raw: RawContribution<'a>,
        path: &str,
        seen: &mut HashSet<String>,
    ) -> Option<Contribution<'a>> {
        if let Some(key) = identity(&raw)
            && !seen.insert(key)
        {
            self.warnings.push(
                || path.to_owned(),
                "contribution listed twice; printed once",
            );
            return None;
        }
        let start = self.date(
            &raw.start_date,
            &raw.start_dt,
            path,
            ["startDate", "start_dt"],
        );
        let end = self.date(&raw.end_date, &raw.end_dt, path, ["endDate", "end_dt"]);
        let code = self.scalar(raw.code, || format!("{path}/code"));
        let mut title = self.scalar(raw.title, || format!("{path}/title"));
        if title.is_empty() {
            self.warnings.push(
                || format!("{path}/title"),
                "missing or empty title; printed as (untitled contribution)",
            );
            title = Cow::Borrowed(UNTITLED_CONTRIBUTION);
        }
        let description = match raw.description.into_text() {
            Some(d) => self.multi(d, || format!("{path}/description")),
            None => Cow::Borrowed(""),
        };
        let (authors, authors_key) = if raw.primary_authors.items().is_empty() {
            (raw.primaryauthors, "primaryauthors")
        } else {
            (raw.primary_authors, "primary_authors")
        };
        let fields = self.fields(&raw.field_values, path);
        Some(Contribution {
            id: raw.id.into_text(),
            friendly_id: raw.friendly_id.into_text(),
            code,
            title,
            start,
            end,
            description,
            speakers: self.people(raw.speakers, &format!("{path}/speakers")),
            authors: self.people(authors, &format!("{path}/{authors_key}")),
            coauthors: self.people(raw.coauthors, &format!("{path}/coauthors")),
            fields,
        })
    }

    /// The values of the configured custom fields, in the configured order.
    fn fields<'a>(
        &mut self,
        values: &List<Obj<RawFieldValue<'a>>>,
        path: &str,
    ) -> Vec<Cow<'a, str>> {
        let mut out = Vec::new();
        for wanted in self.custom_fields {
            let found = values.items().iter().enumerate().find_map(|(i, v)| {
                let v = v.as_object()?;
                let by_id = match (&wanted.id, v.id.non_empty()) {
                    (Some(want), Some(have)) => want == have.trim(),
                    _ => false,
                };
                let by_name = v.name.text().is_some_and(|n| n.trim() == wanted.name);
                (by_id || by_name).then_some((i, v))
            });
            let Some((i, value)) = found else { continue };
            let text = match &value.value {
                Scalar::Str(s) => s.clone(),
                Scalar::Num(n) => Cow::Owned(n.clone()),
                Scalar::Bool(b) => Cow::Borrowed(if *b { "Yes" } else { "No" }),
                Scalar::Missing | Scalar::Other(crate::booklet::json::Kind::Null) => continue,
                Scalar::Other(_) => {
                    self.warnings.push(
                        || format!("{path}/field_values/{i}/value"),
                        "custom field value is not text; skipped",
                    );
                    continue;
                }
            };
            let text = self.multi(text, || format!("{path}/field_values/{i}/value"));
            if !text.trim().is_empty() {
                out.push(text);
            }
        }
        out
    }

    /// A person list: non-objects and nameless people skipped with a warning, names and
    /// affiliations cleaned, the same `id` twice kept once.
    fn people<'a>(&mut self, list: List<Obj<Person<'a>>>, path: &str) -> Vec<Person<'a>> {
        let items = list.into_items();
        let mut people: Vec<Person<'a>> = Vec::with_capacity(items.len());
        let mut ids: HashSet<Cow<'a, str>> = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let Obj::Object(mut person) = item else {
                self.warnings
                    .push(|| format!("{path}/{i}"), "not an object; skipped");
                continue;
            };
            let at = || format!("{path}/{i}");
            person.first = self.single(std::mem::take(&mut person.first), at);
            person.last = self.single(std::mem::take(&mut person.last), at);
            if person.first.is_empty() && person.last.is_empty() {
                self.warnings.push(at, "person without a name; skipped");
                continue;
            }
            for affiliation in &mut person.affiliations {
                *affiliation = self.single(std::mem::take(affiliation), at);
            }
            person.affiliations.retain(|a| !a.is_empty());
            if person.id.as_ref().is_some_and(|id| id.trim().is_empty()) {
                person.id = None;
            }
            // The same id twice prints once; a set only pays off for long lists.
            if let Some(id) = &person.id {
                let repeated = if people.len() < 16 {
                    people.iter().any(|p| p.id.as_ref() == Some(id))
                } else {
                    if ids.is_empty() {
                        ids.extend(people.iter().filter_map(|p| p.id.clone()));
                    }
                    !ids.insert(id.clone())
                };
                if repeated {
                    continue;
                }
            }
            people.push(person);
        }
        people
    }
}
