//! Booklet tests: the samples in tests/data (copies of shared/examples), the example of BOOKLET.md §9, generated
//! events of every shape and size, and one fixture per rule.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod editors;
mod rules;
mod support;

use std::collections::HashMap;

use serde_json::{Value, json};

use self::support::*;
use crate::booklet::{BuildError, build, generate};

/// The event of BOOKLET.md §9.
pub(super) fn spec_example() -> Value {
    json!({"event": {"_type": "Conference", "id": "77", "title": "Demo Workshop 2026 (DW26)", "timezone": "Europe/Zurich",
     "sessions": [
      {"id": 12, "code": "", "title": "Posters", "conveners": [], "session": {"code": "MOP", "isPoster": true},
       "startDate": {"date": "2026-09-14", "time": "16:00:00", "tz": "Europe/Zurich"},
       "endDate": {"date": "2026-09-14", "time": "18:00:00", "tz": "Europe/Zurich"},
       "contributions": [{"_type": "Contribution", "id": "3", "friendly_id": 3, "code": "MOP01",
         "title": "Beam <loss> & halo studies", "description": "Losses stay below 1 W/m.\nSee <i>Fig. 2</i>.",
         "startDate": {"date": "2026-09-14", "time": "16:00:00", "tz": "Europe/Zurich"}, "endDate": null,
         "speakers": [{"id": "p7", "first_name": "Li", "last_name": "Wei", "affiliation": "Lab D"}], "coauthors": [],
         "primaryauthors": [{"id": "p6", "first_name": "Sam", "last_name": "Novak", "affiliation": "Lab D"}]}]},
      {"id": 11, "code": "MOA", "title": "Opening", "session": {"code": "MOA", "isPoster": false},
       "conveners": [{"id": 501, "first_name": "Ines", "last_name": "Keller", "affiliation": "Lab C"}],
       "startDate": {"date": "2026-09-14", "time": "09:00:00", "tz": "Europe/Zurich"},
       "endDate": {"date": "2026-09-14", "time": "09:30:00", "tz": "Europe/Zurich"},
       "contributions": [{"_type": "Contribution", "id": "1", "friendly_id": 1, "code": "MOA01",
         "title": "Status of the DW Light Source", "description": "First paragraph.\r\nSecond paragraph.",
         "startDate": {"date": "2026-09-14", "time": "09:00:00", "tz": "Europe/Zurich"}, "endDate": null,
         "speakers": [{"id": "p1", "first_name": "Ana", "last_name": "Silva", "affiliation": "Lab A"}],
         "primaryauthors": [{"id": "p1", "first_name": "Ana", "last_name": "Silva", "affiliation": "Lab A"},
           {"id": "p2", "first_name": "", "last_name": "Okafor", "affiliation": "Lab A"},
           {"id": "p3", "first_name": "Ben", "last_name": "Wu", "affiliation": "Lab B"}],
         "coauthors": [{"id": "p4", "first_name": "Chloé", "last_name": "Martin", "affiliation": "Lab B"}]}]}],
     "contributions": [{"_type": "Contribution", "id": "4", "friendly_id": 4, "code": "", "title": "Closing remarks",
       "startDate": null, "endDate": null, "description": "", "primaryauthors": [], "coauthors": [],
       "speakers": [{"id": "p9", "first_name": "Eva", "last_name": "Berg", "affiliation": ""}]}]}})
}

fn para(style: &str, text: &str, bold: &[&str]) -> Item {
    Item::Para {
        style: style.to_owned(),
        text: text.to_owned(),
        bold: bold.iter().map(|b| (*b).to_owned()).collect(),
    }
}

fn heading(level: u8, style: &str, text: &str) -> Item {
    Item::Heading {
        level,
        style: style.to_owned(),
        text: text.to_owned(),
    }
}

fn table(n: usize, cells: &[&str]) -> Item {
    Item::Table {
        name: format!("AB_Contribution_{n}"),
        cells: cells.iter().map(|c| (*c).to_owned()).collect(),
    }
}

const D: &str = "AB_20_Description";

#[test]
fn spec_example_gives_the_documented_outline() {
    let booklet = build_ok(&spec_example());
    let content = check_package(&booklet.odt);
    let doc = outline(&content);
    let h1 = "AB_20_Heading_20_1";
    let h2 = "AB_20_Heading_20_2";
    let title = "AB_20_Title";
    let expected = vec![
        heading(1, h1, "MOA - Opening"),
        para(h2, "14 September 2026 09:00 / 09:30", &[]),
        para(h2, "Chair: Ines Keller (Lab C)", &[]),
        para(D, "", &[]),
        table(1, &["MOA01", "/", "09:00"]),
        heading(3, title, "Status of the DW Light Source"),
        para(
            "AB_20_Authors",
            "Ana Silva, Okafor (Lab A), Ben Wu (Lab B).",
            &["Ana Silva"],
        ),
        para("AB_20_Coauthors", "Chloé Martin (Lab B).", &[]),
        para(D, "", &[]),
        para(D, "First paragraph.", &[]),
        para(D, "Second paragraph.", &[]),
        heading(1, h1, "MOP - Posters"),
        para(h2, "14 September 2026 16:00 / 18:00", &[]),
        para(D, "", &[]),
        table(2, &["MOP01", "/", "16:00"]),
        heading(3, title, "Beam <loss> & halo studies"),
        para("AB_20_Authors", "Sam Novak (Lab D).", &[]),
        para(
            "AB_20_Authors",
            "Presented by: Li Wei (Lab D).",
            &["Li Wei"],
        ),
        para(D, "", &[]),
        para(D, "Losses stay below 1 W/m.", &[]),
        para(D, "See <i>Fig. 2</i>.", &[]),
        heading(1, h1, "Contributions outside sessions"),
        para(D, "", &[]),
        heading(3, title, "Closing remarks"),
        para("AB_20_Authors", "Eva Berg.", &["Eva Berg"]),
    ];
    assert_eq!(doc.body, expected);
    let toc: Vec<&str> = doc.toc.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        toc,
        [
            "Table of Contents",
            "MOA - Opening",
            "MOA01\u{2002}Status of the DW Light Source",
            "MOP - Posters",
            "MOP01\u{2002}Beam <loss> & halo studies",
            "Contributions outside sessions",
            "Closing remarks"
        ]
    );
    assert!(content.contains("Beam &lt;loss&gt; &amp; halo studies"));
    let r = &booklet.result;
    assert_eq!(
        booklet.filename,
        "77_Demo_Workshop_2026_DW26_abstract_booklet.odt"
    );
    assert_eq!(r["filename"], json!(booklet.filename));
    assert_eq!(r["event_id"], "77");
    assert_eq!(r["input_shape"], "indico");
    assert_eq!(
        (
            r["sessions"].clone(),
            r["distinct_sessions"].clone(),
            r["contributions"].clone()
        ),
        (json!(2), json!(2), json!(3))
    );
    assert_eq!(r["contributions_in_sessions"], 2);
    assert_eq!(r["contributions_outside_sessions"], 1);
    assert_eq!(r["unscheduled_contributions"], 1);
    assert_eq!(r["pages"], Value::Null);
    assert_eq!(r["warnings"], json!([]));
    assert_eq!(r["warnings_truncated"], 0);
}

/// Checks what every booklet must satisfy, given its input: the package, every title and
/// every speaker's last name, counts, no `null` text, no echoed secret.
pub(super) fn check_booklet(input: &Value) -> Doc {
    let booklet = build_ok(input);
    let content = check_package(&booklet.odt);
    let doc = outline(&content);
    // Each contribution's section (title to next title), keyed by its title, so that the
    // checks stay linear for thousands of contributions.
    let mut sections: HashMap<String, Vec<String>> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for item in &doc.body {
        match item {
            Item::Heading {
                level: 1 | 3, text, ..
            } => {
                if let Some((title, body)) = current.take() {
                    sections.entry(title).or_default().push(body);
                }
                if matches!(item, Item::Heading { level: 3, .. }) {
                    current = Some((squash(text), String::new()));
                }
            }
            other => {
                if let Some((_, body)) = current.as_mut() {
                    body.push_str(&squash(other.text()));
                }
            }
        }
    }
    if let Some((title, body)) = current.take() {
        sections.entry(title).or_default().push(body);
    }
    let contributions = contributions_of(input);
    let mut ids = std::collections::HashSet::new();
    for (_, c) in &contributions {
        let title = c["title"].as_str().unwrap_or("");
        let expected = expected_text(title);
        let expected = if expected.is_empty() {
            "(untitledcontribution)".to_owned()
        } else {
            expected
        };
        let Some(bodies) = sections.get(&expected) else {
            panic!("title {title:?} missing");
        };
        for s in c["speakers"].as_array().into_iter().flatten() {
            let last = expected_text(s["last_name"].as_str().unwrap_or(""));
            assert!(
                bodies.iter().any(|b| b.contains(&last)),
                "speaker {last:?} of {title:?} missing"
            );
        }
        ids.insert(c["id"].to_string());
    }
    assert_eq!(booklet.result["contributions"], json!(ids.len()));
    assert_eq!(doc.headings(3).len(), ids.len());
    // One table-of-contents entry per section and contribution, each with its page field.
    editors::assert_toc_matches_marks(&doc);
    assert_eq!(
        doc.marks.len(),
        doc.headings(1).len() + ids.len(),
        "one mark per section and contribution"
    );
    // Nothing empty is printed as a heading or a header cell (the default header templates).
    for item in &doc.body {
        match item {
            Item::Heading { text, .. } => assert!(!text.is_empty(), "empty heading"),
            Item::Table { cells, .. } if input["settings"]["ab_contribution_h1"].is_null() => {
                assert!(cells.iter().all(|c| !c.is_empty()), "{cells:?}");
                assert_ne!(cells.first().map(String::as_str), Some("/"));
                assert_ne!(cells.last().map(String::as_str), Some("/"));
            }
            _ => {}
        }
    }
    let mut result = booklet.result.clone();
    assert_eq!(result["pages"], Value::Null);
    result.as_object_mut().unwrap().remove("pages");
    for word in ["null", "None", "secret"] {
        assert!(!content.contains(word), "{word} in content.xml");
        assert!(!result.to_string().contains(word), "{word} in result");
    }
    assert!(booklet.filename.ends_with(".odt"));
    assert!(
        booklet.filename[..booklet.filename.len() - 4]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    doc
}

#[test]
fn sample_events_build_the_same_outline() {
    let indico = json!({"event": sample("event-small.json")});
    let plugin = json!({"event": sample("event-small.purr.json"),
        "settings": {"custom_fields": [{"name": "Footnotes"}, {"name": "Funding Agency"}]}});
    let a = check_booklet(&indico);
    let b = check_booklet(&plugin);
    let expected_h1 = [
        "MOA - Opening and Facility Reports",
        "MOPA - Poster Session: Circular Colliders",
        "TUA1 - Linear Colliders: Slot 1",
        "TUA2 - Linear Colliders: Slot 2",
        "TUA - Linear Colliders: Slot 3",
        "Contributions outside sessions",
    ];
    assert_eq!(a.headings(1), expected_h1);
    assert_eq!(b.headings(1), expected_h1);
    assert_eq!(a.headings(3), b.headings(3));
    let codes = |doc: &Doc| -> Vec<String> {
        doc.body
            .iter()
            .filter_map(|i| match i {
                Item::Table { cells, .. } => Some(cells.join(" ")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(codes(&a), codes(&b));
    // Posters share one start time, so they are in (natural) code order, empty codes last.
    let posters: Vec<String> = codes(&a)
        .into_iter()
        .filter(|c| c.contains("16:00"))
        .collect();
    assert_eq!(posters.first().map(String::as_str), Some("MOPA001 / 16:00"));
    // A poster without a code: no empty code cell, no dangling separator.
    assert_eq!(posters.last().map(String::as_str), Some("16:00"));
    // The two unscheduled contributions outside sessions close the booklet, by friendly_id.
    assert_eq!(
        a.headings(3)[20..],
        [
            "A Novel Approach to Beam Position Monitors with µ-Precision",
            "Status of Space-Charge Compensation (Phase II)"
        ]
    );
    // CRLF in a description splits paragraphs; the non-BMP 𝛽 is kept.
    assert!(
        a.paragraphs(D)
            .iter()
            .any(|p| p.starts_with("* β-functions"))
    );
    assert!(a.squashed().contains('𝛽'));
    // Custom fields only where configured, one paragraph per line, Footnotes first.
    let foot = b.paragraphs("AB_20_Footnotes");
    assert!(foot.contains(&"† now at another laboratory"));
    assert!(foot.iter().any(|p| p.starts_with("Gefördert")));
    assert!(a.paragraphs("AB_20_Footnotes").is_empty());
}

#[test]
fn samples_report_shape_and_counts() {
    let booklet = build_ok(&json!({"event": sample("event-small.purr.json")}));
    let r = &booklet.result;
    assert_eq!(r["input_shape"], "plugin");
    assert_eq!(r["sessions"], 5);
    assert_eq!(r["distinct_sessions"], 3);
    assert_eq!(r["contributions"], 22);
    assert_eq!(r["contributions_outside_sessions"], 2);
    assert_eq!(r["unscheduled_contributions"], 2);
    assert_eq!(
        booklet.filename,
        "1443_6th_Workshop_on_Free-Electron_Lasers_and_Bright_Sources_abstract_booklet.odt"
    );
    let envelope = json!({"event": {"_type": "HTTPAPIResult", "count": 1, "complete": true,
        "results": [sample("event-small.json")]}});
    assert_eq!(build_ok(&envelope).result["input_shape"], "indico_envelope");
}

/// Indico escapes `/` and every non-ASCII character (surrogate pairs beyond the BMP).
fn indico_escaped(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out
}

#[test]
fn generated_events_of_every_shape_are_valid() {
    for (seed, size) in [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 14),
        (4, 15),
        (5, 16),
        (6, 40),
        (7, 120),
        (8, 300),
    ] {
        let input = generate::event(seed, size);
        let doc = check_booklet(&input);
        let booklet = build_ok(&input);
        let shape = ["indico", "indico_envelope", "plugin"][(seed % 3) as usize];
        assert_eq!(booklet.result["input_shape"], shape, "seed {seed}");
        // Within a block, header times never go back.
        let mut last = String::new();
        for item in &doc.body {
            match item {
                Item::Heading { level: 1, .. } => last.clear(),
                Item::Table { cells, .. } => {
                    let time = cells.last().unwrap();
                    if !time.is_empty() {
                        assert!(*time >= last, "seed {seed}: {time} after {last}");
                        last = time.clone();
                    }
                }
                _ => {}
            }
        }
        if size >= 13 {
            let warnings = booklet.result["warnings"].to_string();
            for expected in [
                "removed control characters",
                "untitled",
                "malformed date",
                "without a name",
                "not an object",
            ] {
                assert!(
                    warnings.contains(expected),
                    "seed {seed}: no {expected:?} warning"
                );
            }
            assert!(!doc.paragraphs("AB_20_Footnotes").is_empty());
        }
        // The same event escaped as Indico does gives the same file.
        let escaped = try_build(&indico_escaped(&input)).unwrap();
        assert_eq!(escaped.odt, booklet.odt, "seed {seed}");
    }
}

#[test]
fn a_large_generated_event_is_valid() {
    let input = generate::event(11, 3000);
    let doc = check_booklet(&input);
    assert_eq!(doc.headings(3).len(), 3000);
    assert!(doc.headings(1).len() > 50);
}

#[test]
fn generator_is_deterministic() {
    assert_eq!(generate::event(5, 50), generate::event(5, 50));
    assert_ne!(generate::event(5, 50), generate::event(6, 50));
    assert_eq!(contributions_of(&generate::event(9, 0)).len(), 1);
    let a = build_ok(&generate::event(5, 50));
    let b = build_ok(&generate::event(5, 50));
    assert_eq!(a.odt, b.odt, "same input, same bytes");
}

pub(super) fn contribution(id: &str, code: &str, title: &str, start: Value) -> Value {
    json!({"id": id, "friendly_id": id.parse::<u64>().unwrap_or(0), "code": code, "title": title,
        "startDate": start, "endDate": null, "description": "", "speakers": [],
        "primaryauthors": [], "coauthors": []})
}

pub(super) fn at(date: &str, time: &str, tz: &str) -> Value {
    json!({"date": date, "time": time, "tz": tz})
}

#[test]
fn progress_rises_by_phase_and_cancellation_stops() {
    let input = generate::event(1, 300).to_string();
    let mut recorder = Recorder::default();
    build(&input, &mut recorder).unwrap();
    let fractions: Vec<f64> = recorder.reports.iter().map(|p| p.fraction).collect();
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert_eq!(fractions.first(), Some(&0.0));
    assert_eq!(fractions.last(), Some(&0.95));
    assert!(
        recorder.reports.len() <= 25,
        "{} reports",
        recorder.reports.len()
    );
    let phases: Vec<&str> = recorder
        .reports
        .iter()
        .map(|p| p.data["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.iter().filter(|p| **p == "build").count(), 20);
    assert_eq!(recorder.reports[1].data["contributions"], 300);
    assert!(
        recorder.reports.last().unwrap().data["bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    for cancel_after in [0, 1, 2, 5, 21, 22] {
        let mut recorder = Recorder {
            cancel_after: Some(cancel_after),
            ..Default::default()
        };
        assert!(
            matches!(build(&input, &mut recorder), Err(BuildError::Cancelled)),
            "after {cancel_after}"
        );
        assert!(recorder.reports.len() <= cancel_after.max(1) + 1);
    }
}

#[test]
fn describes_itself() {
    let schema = crate::booklet::input_schema();
    assert_eq!(schema["required"], json!(["event"]));
    assert_eq!(schema["properties"]["event"]["type"], "object");
    assert_eq!(
        schema["properties"]["settings"]["type"],
        json!(["object", "null"])
    );
    assert!(crate::booklet::DESCRIPTION.ends_with('.'));
}
