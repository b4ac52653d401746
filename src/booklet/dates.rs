//! Dates (§2 "Dates"): wall times in a named zone, converted to the event's display zone.
//!
//! Uses jiff's bundled tz database only, so a build never reads the host's zoneinfo. A repeated
//! wall time takes the earlier instant and one in a gap is shifted past it (jiff's
//! "compatible" disambiguation, as Python's `fold=0`).

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

use crate::booklet::input::{DateParts, RawDate};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// An instant, with its wall time in the display zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    pub(crate) instant: Timestamp,
    pub(crate) local: DateTime,
}

impl Moment {
    /// `21 August 2028 08:30`.
    pub(crate) fn long(&self) -> String {
        let d = self.local;
        format!(
            "{:02} {} {} {:02}:{:02}",
            d.day(),
            MONTHS[usize::try_from(d.month() - 1).unwrap_or(0)],
            d.year(),
            d.hour(),
            d.minute()
        )
    }

    /// `08:30`.
    pub(crate) fn short(&self) -> String {
        format!("{:02}:{:02}", self.local.hour(), self.local.minute())
    }
}

/// What went wrong with one date; the date is still usable or counts as null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateProblem {
    /// Not a date: counts as null.
    Malformed,
    /// The `tz` is not a known zone: the wall time was read in the display zone.
    UnknownZone,
}

/// The display zone and a cache of the zones dates name (most events use one or two).
pub(crate) struct Zones {
    display: TimeZone,
    cache: HashMap<String, Option<TimeZone>>,
}

impl Zones {
    pub(crate) fn new(display: TimeZone) -> Self {
        Zones {
            display,
            cache: HashMap::new(),
        }
    }

    /// The zone called `name`, if the bundled database knows it.
    pub(crate) fn lookup(&mut self, name: &str) -> Option<TimeZone> {
        if let Some(zone) = self.cache.get(name) {
            return zone.clone();
        }
        let zone = TimeZone::get(name).ok();
        self.cache.insert(name.to_owned(), zone.clone());
        zone
    }

    /// Reads a date: `None` is null or absent (or malformed, with the problem said).
    pub(crate) fn resolve(&mut self, raw: &RawDate<'_>) -> (Option<Moment>, Option<DateProblem>) {
        match raw {
            RawDate::Missing | RawDate::Null => (None, None),
            RawDate::Malformed => (None, Some(DateProblem::Malformed)),
            RawDate::Text(text) => match self.read_text(text) {
                Some(instant) => (Some(self.moment(instant)), None),
                None => (None, Some(DateProblem::Malformed)),
            },
            RawDate::Parts(parts) => self.read_parts(parts),
        }
    }

    fn read_parts(&mut self, parts: &DateParts<'_>) -> (Option<Moment>, Option<DateProblem>) {
        let date = parts
            .date
            .text()
            .and_then(|d| d.trim().parse::<Date>().ok());
        let time = parts
            .time
            .text()
            .and_then(|t| t.trim().parse::<Time>().ok());
        let (Some(date), Some(time)) = (date, time) else {
            return (None, Some(DateProblem::Malformed));
        };
        let (zone, problem) = match parts.tz.non_empty() {
            None => (self.display.clone(), None),
            Some(name) => match self.lookup(name.trim()) {
                Some(zone) => (zone, None),
                None => (self.display.clone(), Some(DateProblem::UnknownZone)),
            },
        };
        match zone
            .to_ambiguous_timestamp(date.to_datetime(time))
            .compatible()
        {
            Ok(instant) => (Some(self.moment(instant)), problem),
            Err(_) => (None, Some(DateProblem::Malformed)),
        }
    }

    /// RFC 3339 (with an offset), else a civil date-time read in the display zone.
    fn read_text(&self, text: &str) -> Option<Timestamp> {
        let text = text.trim();
        if let Ok(instant) = text.parse::<Timestamp>() {
            return Some(instant);
        }
        let civil = text.parse::<DateTime>().ok()?;
        self.display.to_ambiguous_timestamp(civil).compatible().ok()
    }

    fn moment(&self, instant: Timestamp) -> Moment {
        Moment {
            instant,
            local: self.display.to_datetime(instant),
        }
    }
}

/// A session's `{end}`: `HH:MM`, or the long form when it falls on a later day than the start
/// (or there is no start).
pub(crate) fn session_end(start: Option<&Moment>, end: &Moment) -> String {
    match start {
        Some(start) if start.local.date() >= end.local.date() => end.short(),
        _ => end.long(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::booklet::json::Scalar;
    use std::borrow::Cow;

    fn parts<'a>(date: &'a str, time: &'a str, tz: &'a str) -> RawDate<'a> {
        RawDate::Parts(DateParts {
            date: Scalar::Str(Cow::Borrowed(date)),
            time: Scalar::Str(Cow::Borrowed(time)),
            tz: Scalar::Str(Cow::Borrowed(tz)),
        })
    }

    #[test]
    fn converts_to_display_zone_and_formats() {
        let mut zones = Zones::new(TimeZone::get("Europe/Zurich").unwrap());
        let (m, p) = zones.resolve(&parts("2026-09-14", "07:00:00.123456", "UTC"));
        let m = m.unwrap();
        assert_eq!(p, None);
        assert_eq!(m.long(), "14 September 2026 09:00");
        assert_eq!(m.short(), "09:00");
        let (m2, _) = zones.resolve(&parts("2026-09-15", "10:30", "Europe/Zurich"));
        assert_eq!(
            session_end(Some(&m), &m2.unwrap()),
            "15 September 2026 10:30"
        );
        let (m3, p) = zones.resolve(&parts("2026-09-01", "08:05", "Mars/Olympus"));
        assert_eq!(p, Some(DateProblem::UnknownZone));
        assert_eq!(m3.unwrap().long(), "01 September 2026 08:05");
        let (m4, p) = zones.resolve(&RawDate::Text(Cow::Borrowed("2026-09-14T16:00:00Z")));
        assert_eq!((m4.unwrap().short(), p), ("18:00".to_owned(), None));
        let (m5, p) = zones.resolve(&parts("2026-13-01", "08:00", "UTC"));
        assert_eq!((m5, p), (None, Some(DateProblem::Malformed)));
    }

    #[test]
    fn gaps_and_folds() {
        let mut zones = Zones::new(TimeZone::get("Europe/Berlin").unwrap());
        // 02:30 does not exist on 2026-03-29: shifted past the gap.
        let (m, _) = zones.resolve(&parts("2026-03-29", "02:30", "Europe/Berlin"));
        assert_eq!(m.unwrap().short(), "03:30");
        // 02:30 happens twice on 2026-10-25: the earlier one (CEST, 00:30 UTC).
        let (m, _) = zones.resolve(&parts("2026-10-25", "02:30", "Europe/Berlin"));
        assert_eq!(m.unwrap().instant.to_string(), "2026-10-25T00:30:00Z");
    }
}
