//! Person lists (§3.4) and the speaker rules (§3.3 step 4).
//!
//! People are grouped by identical affiliation set, groups in order of first occurrence,
//! names in a group sorted by (first, last) ignoring case; the first primary author stays
//! first. Speakers are shown in bold wherever they appear.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io;

use crate::booklet::input::Person;
use crate::booklet::styles::SPEAKERS;
use crate::booklet::text::caseless_cmp;
use crate::booklet::xml::Xml;

/// How a list is ordered and which names are bold.
#[derive(Clone, Copy)]
pub(crate) enum Order {
    /// Primary authors: the first-listed author stays first.
    KeepFirst,
    /// Co-authors and speakers: every group sorted.
    Sorted,
}

/// Whether `person` is one of `speakers`: same `id`, or same name for a speaker without one.
pub(crate) fn is_speaker(person: &Person<'_>, speakers: &[Person<'_>]) -> bool {
    speakers.iter().any(|s| is_same(s, person))
}

/// Speaker `speaker` is `person`: by `id` when the speaker has one, else by first and last name.
pub(crate) fn is_same(speaker: &Person<'_>, person: &Person<'_>) -> bool {
    match (&speaker.id, &person.id) {
        (Some(x), Some(y)) => x == y,
        (Some(_), None) => false,
        (None, _) => speaker.first == person.first && speaker.last == person.last,
    }
}

fn by_name(a: &Person<'_>, b: &Person<'_>) -> Ordering {
    caseless_cmp(&a.first, &b.first).then_with(|| caseless_cmp(&a.last, &b.last))
}

/// Writes `people` as `A, B (Aff1; Aff2), C (Aff3).` into an open paragraph. `bold` decides,
/// per person, whether the name is in the `AB Speakers` span.
pub(crate) fn write_list(
    xml: &mut Xml,
    people: &[&Person<'_>],
    order: Order,
    bold: &dyn Fn(&Person<'_>) -> bool,
) -> io::Result<()> {
    // Group by affiliation set; a map only pays off for long lists.
    let mut groups: Vec<(&[_], Vec<&Person<'_>>)> = Vec::new();
    let mut index: HashMap<&[_], usize> = HashMap::new();
    for &person in people {
        let key = person.affiliations.as_slice();
        let found = if people.len() > 16 {
            index.get(key).copied()
        } else {
            groups.iter().position(|(k, _)| *k == key)
        };
        match found {
            Some(g) => groups[g].1.push(person),
            None => {
                if people.len() > 16 {
                    index.insert(key, groups.len());
                }
                groups.push((key, vec![person]));
            }
        }
    }
    for (g, (affiliations, members)) in groups.iter_mut().enumerate() {
        let skip = match order {
            Order::KeepFirst if g == 0 => 1,
            _ => 0,
        };
        members[skip..].sort_by(|a, b| by_name(a, b));
        if g > 0 {
            xml.text(", ")?;
        }
        for (m, person) in members.iter().enumerate() {
            if m > 0 {
                xml.text(", ")?;
            }
            if bold(person) {
                xml.start("text:span", &[("text:style-name", SPEAKERS)])?;
                write_name(xml, person)?;
                xml.end("text:span")?;
            } else {
                write_name(xml, person)?;
            }
        }
        write_affiliations(xml, affiliations)?;
    }
    xml.text(".")
}

/// `First Last`, leaving out an empty part.
pub(crate) fn write_name(xml: &mut Xml, person: &Person<'_>) -> io::Result<()> {
    xml.text(&person.first)?;
    if !person.first.is_empty() && !person.last.is_empty() {
        xml.text(" ")?;
    }
    xml.text(&person.last)
}

/// ` (Aff1; Aff2)`, or nothing for an empty set. Institution names hold commas
/// (`Magyar Gyorsító Kutatóintézet, Debrecen`), so a semicolon separates them.
pub(crate) fn write_affiliations(
    xml: &mut Xml,
    affiliations: &[std::borrow::Cow<'_, str>],
) -> io::Result<()> {
    if affiliations.is_empty() {
        return Ok(());
    }
    xml.text(" (")?;
    for (i, affiliation) in affiliations.iter().enumerate() {
        if i > 0 {
            xml.text("; ")?;
        }
        xml.text(affiliation)?;
    }
    xml.text(")")
}
