//! The task input as read from JSON: every spelling of every field, nothing interpreted yet.
//!
//! Fields of both shapes live side by side (`startDate` next to `start_dt`), so mixed input
//! works; serde's `alias` is not used because one object may carry both spellings (Indico
//! conveners have `first_name` and `firstName`). Every field is lenient (see `json.rs`), so
//! deserialization fails only on invalid JSON or a key repeated inside one object.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::booklet::json::{Kind, KindOnly, List, Obj, Scalar};

/// The whole task input: `{"event": ..., "settings": ...}`; other keys are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawInput<'a> {
    #[serde(borrow)]
    pub(crate) event: Obj<RawEvent<'a>>,
    pub(crate) settings: Option<serde_json::Value>,
}

/// An event, or the export envelope around one (`results`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow, rename = "_type")]
    pub(crate) type_name: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) title: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) timezone: Scalar<'a>,
    #[serde(borrow, rename = "startDate")]
    pub(crate) start_date: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) start_dt: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) end_dt: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) sessions: List<Obj<RawBlock<'a>>>,
    #[serde(borrow)]
    pub(crate) contributions: List<Obj<RawContribution<'a>>>,
    #[serde(borrow)]
    pub(crate) results: List<Obj<RawEvent<'a>>>,
}

/// One session block (Indico's `SessionSlot`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawBlock<'a> {
    #[serde(borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) code: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) title: Scalar<'a>,
    #[serde(borrow, rename = "startDate")]
    pub(crate) start_date: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) start_dt: RawDate<'a>,
    #[serde(borrow, rename = "endDate")]
    pub(crate) end_date: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) end_dt: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) conveners: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) session: Obj<RawSession<'a>>,
    #[serde(borrow)]
    pub(crate) contributions: List<Obj<RawContribution<'a>>>,
}

/// The session a block belongs to.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawSession<'a> {
    #[serde(borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) code: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) title: Scalar<'a>,
    #[serde(borrow, rename = "isPoster")]
    pub(crate) is_poster_camel: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) is_poster: Scalar<'a>,
    #[serde(borrow, rename = "sessionConveners")]
    pub(crate) conveners_camel: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) session_conveners: List<Obj<Person<'a>>>,
}

/// One contribution.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawContribution<'a> {
    #[serde(borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) db_id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) friendly_id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) code: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) title: Scalar<'a>,
    #[serde(borrow, rename = "startDate")]
    pub(crate) start_date: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) start_dt: RawDate<'a>,
    #[serde(borrow, rename = "endDate")]
    pub(crate) end_date: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) end_dt: RawDate<'a>,
    #[serde(borrow)]
    pub(crate) description: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) speakers: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) primaryauthors: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) primary_authors: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) coauthors: List<Obj<Person<'a>>>,
    #[serde(borrow)]
    pub(crate) field_values: List<Obj<RawFieldValue<'a>>>,
}

/// One entry of a contribution's `field_values`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawFieldValue<'a> {
    #[serde(borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) name: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) value: Scalar<'a>,
}

/// A person as read: the name fields of both shapes, kept compact because an event holds
/// tens of thousands of them (see [`Person`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPerson<'a> {
    #[serde(borrow)]
    id: Scalar<'a>,
    #[serde(borrow)]
    first_name: Scalar<'a>,
    #[serde(borrow)]
    last_name: Scalar<'a>,
    #[serde(borrow, rename = "firstName")]
    first_name_camel: Scalar<'a>,
    #[serde(borrow, rename = "familyName")]
    family_name: Scalar<'a>,
    #[serde(borrow, rename = "fullName")]
    full_name: Scalar<'a>,
    #[serde(borrow)]
    affiliation: Scalar<'a>,
    #[serde(borrow)]
    multiple_affiliations: List<Scalar<'a>>,
}

/// A person reduced to what the booklet prints: id, first and last name, affiliation set.
///
/// Built while deserializing, so the raw person (eight fields) never outlives its object.
/// `first` and `last` are not cleaned yet; both empty means "no name" (skipped later).
#[derive(Debug, Default, Clone)]
pub(crate) struct Person<'a> {
    pub(crate) id: Option<Cow<'a, str>>,
    pub(crate) first: Cow<'a, str>,
    pub(crate) last: Cow<'a, str>,
    pub(crate) affiliations: Vec<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Person<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RawPerson::deserialize(deserializer).map(Person::from)
    }
}

impl<'a> From<RawPerson<'a>> for Person<'a> {
    fn from(raw: RawPerson<'a>) -> Self {
        let pick = |a: Scalar<'a>, b: Scalar<'a>| match (a.into_text(), b.into_text()) {
            (Some(a), _) if !a.is_empty() => a,
            (_, Some(b)) => b,
            _ => Cow::Borrowed(""),
        };
        let mut first = pick(raw.first_name, raw.first_name_camel);
        let mut last = pick(raw.last_name, raw.family_name);
        if first.trim().is_empty() && last.trim().is_empty() {
            first = Cow::Borrowed("");
            last = raw.full_name.into_text().unwrap_or_default();
        }
        let listed: Vec<Cow<'a, str>> = raw
            .multiple_affiliations
            .into_items()
            .into_iter()
            .filter_map(Scalar::into_text)
            .collect();
        let affiliations = if !listed.is_empty() && listed.iter().all(|a| !a.trim().is_empty()) {
            listed
        } else {
            raw.affiliation
                .into_text()
                .filter(|a| !a.trim().is_empty())
                .into_iter()
                .collect()
        };
        Person {
            id: raw.id.into_text(),
            first,
            last,
            affiliations,
        }
    }
}

/// A date as sent: `{"date", "time", "tz"}`, a string (RFC 3339), null, or something else.
#[derive(Debug, Default, Clone)]
pub(crate) enum RawDate<'a> {
    #[default]
    Missing,
    Null,
    Parts(DateParts<'a>),
    Text(Cow<'a, str>),
    Malformed,
}

impl RawDate<'_> {
    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, RawDate::Missing)
    }
}

/// The members of a date object.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct DateParts<'a> {
    #[serde(borrow)]
    pub(crate) date: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) time: Scalar<'a>,
    #[serde(borrow)]
    pub(crate) tz: Scalar<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawDate<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DateVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for DateVisitor<'a> {
            type Value = RawDate<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a date")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                DateParts::deserialize(MapAccessDeserializer::new(map)).map(RawDate::Parts)
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(RawDate::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawDate::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawDate::Null)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawDate::Null)
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RawDate::Malformed)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RawDate::Malformed)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RawDate::Malformed)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RawDate::Malformed)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawDate::Malformed)
            }
        }
        deserializer.deserialize_any(DateVisitor(PhantomData))
    }
}

/// The input as `check` reads it: only the shape, so a 19 MB event is scanned, not built.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ShapeInput<'a> {
    #[serde(borrow)]
    pub(crate) event: Obj<ShapeEvent<'a>>,
    pub(crate) settings: Option<serde_json::Value>,
}

/// An event's shape: what detection and the submit-time checks need.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ShapeEvent<'a> {
    #[serde(borrow, rename = "_type")]
    pub(crate) type_name: Scalar<'a>,
    pub(crate) title: KindOnly,
    pub(crate) sessions: KindOnly,
    pub(crate) contributions: KindOnly,
    #[serde(borrow)]
    pub(crate) results: List<Obj<ShapeEvent<'a>>>,
}

/// What detection and the submit-time checks read from an event object, so that `check`
/// (on [`ShapeEvent`]) and `build` (on [`RawEvent`]) share one set of rules.
pub(crate) trait EventShape: Sized {
    fn type_name(&self) -> &Scalar<'_>;
    fn title_kind(&self) -> Option<Kind>;
    fn sessions_kind(&self) -> Option<Kind>;
    fn contributions_kind(&self) -> Option<Kind>;
    fn results(&self) -> &List<Obj<Self>>;

    /// The export envelope: `_type` says so, or `results` is an array and there is no title
    /// (§2 "Detection").
    fn is_envelope(&self) -> bool {
        let has_title = self.title_kind().is_some_and(|k| k != Kind::Null);
        self.type_name().text() == Some("HTTPAPIResult")
            || (self.results().kind() == Some(Kind::Array) && !has_title)
    }
}

impl EventShape for ShapeEvent<'_> {
    fn type_name(&self) -> &Scalar<'_> {
        &self.type_name
    }
    fn title_kind(&self) -> Option<Kind> {
        self.title.0
    }
    fn sessions_kind(&self) -> Option<Kind> {
        self.sessions.0
    }
    fn contributions_kind(&self) -> Option<Kind> {
        self.contributions.0
    }
    fn results(&self) -> &List<Obj<Self>> {
        &self.results
    }
}

impl EventShape for RawEvent<'_> {
    fn type_name(&self) -> &Scalar<'_> {
        &self.type_name
    }
    fn title_kind(&self) -> Option<Kind> {
        self.title.kind()
    }
    fn sessions_kind(&self) -> Option<Kind> {
        self.sessions.kind()
    }
    fn contributions_kind(&self) -> Option<Kind> {
        self.contributions.kind()
    }
    fn results(&self) -> &List<Obj<Self>> {
        &self.results
    }
}
