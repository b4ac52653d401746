//! `[[schedules]]`: what the config file says, checked once at startup,
//! and when each schedule fires next.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Zoned;
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::admission::RequestedOptions;
use crate::config::{KeyConfig, KeyRole};
use crate::task::Priority;

/// Shortest `every` period.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// One `[[schedules]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSchedule {
    name: String,
    cron: Option<String>,
    every: Option<String>,
    timezone: Option<String>,
    task: String,
    input: Option<toml::Value>,
    input_file: Option<PathBuf>,
    key: String,
    priority: Option<String>,
    timeout_s: Option<f64>,
    concurrency_key: Option<String>,
    overlap: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    catch_up: Option<String>,
}

fn yes() -> bool {
    true
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum When {
    /// A cron expression (5 fields, or 6 with seconds first) in a zone.
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
        zone: TimeZone,
    },
    /// Every period, counted from startup.
    Every(Duration),
}

impl When {
    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        match self {
            When::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&after.with_time_zone(zone.clone()), false)
                .ok(),
            When::Every(period) => {
                let span = jiff::SignedDuration::try_from(*period).ok()?;
                after.checked_add(span).ok()
            }
        }
    }

    /// The last occurrence at or before `at` (for `catch_up = "last"`).
    pub fn last_at_or_before(&self, at: &Zoned) -> Option<Zoned> {
        match self {
            When::Cron { cron, zone, .. } => cron
                .find_previous_occurrence(&at.with_time_zone(zone.clone()), true)
                .ok(),
            When::Every(_) => None,
        }
    }

    /// As the monitoring page shows it.
    pub fn describe(&self) -> String {
        match self {
            When::Cron {
                expression, zone, ..
            } => format!("cron {expression} ({})", zone.iana_name().unwrap_or("UTC")),
            When::Every(period) => {
                let span = jiff::SignedDuration::try_from(*period).unwrap_or_default();
                format!("every {span:#}")
            }
        }
    }
}

/// What a run does when the previous one has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// It is skipped (and shown as skipped).
    Skip,
    /// It is queued behind the previous one.
    Queue,
}

/// What happens to occurrences missed while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    None,
    /// The latest missed occurrence runs at startup.
    Last,
}

/// One schedule, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: Arc<str>,
    pub when: When,
    pub task: String,
    pub input: Box<RawValue>,
    /// The name of the key it runs as.
    pub key: String,
    pub admin: bool,
    pub options: RequestedOptions,
    pub overlap: Overlap,
    pub enabled: bool,
    pub catch_up: CatchUp,
}

/// Checks every `[[schedules]]` entry; each problem names the schedule and
/// the field.
pub fn parse(
    entries: Vec<FileSchedule>,
    keys: &[KeyConfig],
    problems: &mut Vec<String>,
) -> Vec<Schedule> {
    let mut out: Vec<Schedule> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = |field: &str| format!("schedules[{i}] ({:?}).{field}", entry.name);
        let before = problems.len();
        if entry.name.is_empty()
            || entry.name.len() > 64
            || !entry
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problems.push(format!(
                "{}: 1 to 64 letters, digits, `-` or `_`",
                at("name")
            ));
        }
        if out.iter().any(|s| *s.name == *entry.name) {
            problems.push(format!("{}: another schedule has this name", at("name")));
        }
        let zone = match &entry.timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).unwrap_or_else(|e| {
                problems.push(format!("{}: {e}", at("timezone")));
                TimeZone::UTC
            }),
        };
        let when = match (&entry.cron, &entry.every) {
            (Some(expression), None) => {
                let parser = croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build();
                match parser.parse(expression) {
                    Ok(cron) => Some(When::Cron {
                        expression: expression.clone(),
                        cron: Box::new(cron),
                        zone,
                    }),
                    Err(e) => {
                        problems.push(format!("{}: `{expression}`: {e}", at("cron")));
                        None
                    }
                }
            }
            (None, Some(every)) => match every.parse::<jiff::SignedDuration>() {
                Ok(d) if d.is_positive() => {
                    let period = d.unsigned_abs();
                    if period < MIN_EVERY {
                        problems.push(format!("{}: at least 1s", at("every")));
                    }
                    Some(When::Every(period))
                }
                Ok(_) => {
                    problems.push(format!("{}: must be positive", at("every")));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "{}: `{every}` is not a duration like 15m or 1h30m ({e})",
                        at("every")
                    ));
                    None
                }
            },
            (Some(_), Some(_)) => {
                problems.push(format!("{}: give cron or every, not both", at("cron")));
                None
            }
            (None, None) => {
                problems.push(format!("{}: give cron or every", at("cron")));
                None
            }
        };
        let input = match (entry.input, &entry.input_file) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{}: give input or input_file, not both",
                    at("input")
                ));
                None
            }
            (Some(value), None) => serde_json::value::to_raw_value(&value)
                .map_err(|e| problems.push(format!("{}: {e}", at("input"))))
                .ok(),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) => RawValue::from_string(text)
                    .map_err(|e| problems.push(format!("{}: not JSON: {e}", at("input_file"))))
                    .ok(),
                Err(e) => {
                    problems.push(format!("{}: {}: {e}", at("input_file"), path.display()));
                    None
                }
            },
            (None, None) => RawValue::from_string("{}".to_owned()).ok(),
        };
        let admin = match keys.iter().find(|k| k.name == entry.key) {
            Some(key) if key.role == KeyRole::Worker => {
                problems.push(format!(
                    "{}: {:?} is a worker key, which cannot submit tasks",
                    at("key"),
                    entry.key
                ));
                false
            }
            Some(key) => key.role == KeyRole::Admin,
            None => {
                problems.push(format!(
                    "{}: no [[api_keys]] entry is named {:?}",
                    at("key"),
                    entry.key
                ));
                false
            }
        };
        let priority = match entry.priority.as_deref() {
            None | Some("normal") => Some(Priority::Normal),
            Some("high") => Some(Priority::High),
            Some("low") => Some(Priority::Low),
            Some(other) => {
                problems.push(format!(
                    "{}: `{other}` is not high, normal or low",
                    at("priority")
                ));
                None
            }
        };
        let overlap = match entry.overlap.as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("queue") => Overlap::Queue,
            Some(other) => {
                problems.push(format!("{}: `{other}` is not skip or queue", at("overlap")));
                Overlap::Skip
            }
        };
        let catch_up = match entry.catch_up.as_deref() {
            None | Some("none") => CatchUp::None,
            Some("last") => CatchUp::Last,
            Some(other) => {
                problems.push(format!("{}: `{other}` is not none or last", at("catch_up")));
                CatchUp::None
            }
        };
        if catch_up == CatchUp::Last && matches!(when, Some(When::Every(_))) {
            problems.push(format!(
                "{}: catch_up = \"last\" needs a cron schedule",
                at("catch_up")
            ));
        }
        if let Some(t) = entry.timeout_s
            && !(t.is_finite() && t > 0.0)
        {
            problems.push(format!("{}: a positive number", at("timeout_s")));
        }
        if problems.len() > before {
            continue;
        }
        let (Some(when), Some(input)) = (when, input) else {
            continue;
        };
        out.push(Schedule {
            name: Arc::from(entry.name),
            when,
            task: entry.task,
            input,
            key: entry.key,
            admin,
            options: RequestedOptions {
                timeout_s: entry.timeout_s,
                priority,
                concurrency_key: entry.concurrency_key,
                ..RequestedOptions::default()
            },
            overlap,
            enabled: entry.enabled,
            catch_up,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<KeyConfig> {
        vec![KeyConfig {
            name: "ops".to_owned(),
            digest: [0; 32],
            role: KeyRole::Client,
            source: crate::config::KeySource::File,
        }]
    }

    fn entries(text: &str) -> Vec<FileSchedule> {
        #[derive(Deserialize)]
        struct File {
            schedules: Vec<FileSchedule>,
        }
        toml::from_str::<File>(text).expect("toml").schedules
    }

    #[test]
    fn a_good_schedule_and_its_next_runs() {
        let mut problems = Vec::new();
        let parsed = parse(
            entries(
                r#"
                [[schedules]]
                name = "sync"
                cron = "30 2 * * *"
                timezone = "Europe/Zurich"
                task = "echo"
                input = { device = "17" }
                key = "ops"

                [[schedules]]
                name = "often"
                every = "1h30m"
                task = "echo"
                key = "ops"
                overlap = "queue"
                "#,
            ),
            &keys(),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let start: Zoned = "2026-06-10T12:00:00+02:00[Europe/Zurich]"
            .parse()
            .expect("time");
        let next = parsed[0].when.next_after(&start).expect("next");
        assert_eq!(next.to_string(), "2026-06-11T02:30:00+02:00[Europe/Zurich]");
        let after = parsed[1].when.next_after(&start).expect("next");
        assert_eq!(after.duration_since(&start).as_secs(), 5400);
        assert_eq!(parsed[0].input.get(), r#"{"device":"17"}"#);
        assert_eq!(parsed[1].overlap, Overlap::Queue);
        let last = parsed[0].when.last_at_or_before(&start).expect("last");
        assert_eq!(last.to_string(), "2026-06-10T02:30:00+02:00[Europe/Zurich]");
    }

    #[test]
    fn problems_name_the_schedule_and_the_field() {
        let mut problems = Vec::new();
        let parsed = parse(
            entries(
                r#"
                [[schedules]]
                name = "bad-cron"
                cron = "61 * * * *"
                task = "echo"
                key = "ops"

                [[schedules]]
                name = "bad-every"
                every = "soon"
                task = "echo"
                key = "ghost"

                [[schedules]]
                name = "both"
                cron = "* * * * *"
                every = "1m"
                task = "echo"
                key = "ops"
                overlap = "pile"
                "#,
            ),
            &keys(),
            &mut problems,
        );
        assert!(parsed.is_empty());
        let text = problems.join("\n");
        assert!(
            text.contains(r#"schedules[0] ("bad-cron").cron: `61 * * * *`"#),
            "{text}"
        );
        assert!(
            text.contains(r#"schedules[1] ("bad-every").every: `soon`"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"schedules[1] ("bad-every").key: no [[api_keys]] entry is named "ghost""#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"schedules[2] ("both").cron: give cron or every, not both"#),
            "{text}"
        );
        assert!(
            text.contains(r#"schedules[2] ("both").overlap: `pile`"#),
            "{text}"
        );
    }
}
