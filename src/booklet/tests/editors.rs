//! What editors see when they open the booklet in LibreOffice: a table of contents with one
//! line per contribution and page numbers, nothing printed for an empty code, affiliations that
//! cannot run together, days outside sessions, and the typesetting rules.

use serde_json::{Value, json};

use super::support::*;
use super::{at, check_booklet, contribution, spec_example};
use crate::booklet::styles::{
    DESCRIPTION_KEEP, FOOTNOTES_KEEP, HEADING_1, HEADING_1_FLOW, INDEX_LEVELS,
};

const GAP: char = '\u{2002}';

#[test]
fn contents_list_code_and_title_on_one_line_with_a_page_field() {
    let booklet = build_ok(&spec_example());
    let content = check_package(&booklet.odt);
    let doc = outline(&content);
    // Entries come from marks, so LibreOffice's own update writes the same lines.
    assert!(content.contains(
        r#"<text:table-of-content-source text:outline-level="2" text:use-outline-level="false" text:use-index-marks="true">"#
    ));
    assert_eq!(
        doc.marks,
        [
            mark(1, "MOA - Opening", "ab_s1"),
            mark(
                2,
                &format!("MOA01{GAP}Status of the DW Light Source"),
                "ab_c1"
            ),
            mark(1, "MOP - Posters", "ab_s2"),
            mark(2, &format!("MOP01{GAP}Beam <loss> & halo studies"), "ab_c2"),
            mark(1, "Contributions outside sessions", "ab_s3"),
            mark(2, "Closing remarks", "ab_c3"),
        ]
    );
    assert_toc_matches_marks(&doc);
    // Each entry: link, text, tab, page field (LibreOffice fills it in as it lays out).
    assert!(content.contains(
        "<text:a xlink:type=\"simple\" xlink:href=\"#ab_c1\" text:style-name=\"AB_20_Index_20_Link\" \
         text:visited-style-name=\"AB_20_Index_20_Link\">MOA01\u{2002}Status of the DW Light Source\
         <text:tab/><text:bookmark-ref text:reference-format=\"page\" text:ref-name=\"ab_c1\">\
         </text:bookmark-ref></text:a>"
    ));
}

fn mark(level: u8, text: &str, bookmark: &str) -> Mark {
    Mark {
        level,
        text: text.to_owned(),
        bookmark: bookmark.to_owned(),
    }
}

/// The pre-filled entries are the marks, in order, at their level, each linking to and
/// showing the page of the mark's bookmark.
pub(super) fn assert_toc_matches_marks(doc: &Doc) {
    let entries = &doc.toc[1..];
    assert_eq!(entries.len(), doc.marks.len());
    let bookmarks: std::collections::HashSet<&str> =
        doc.bookmarks.iter().map(String::as_str).collect();
    for (entry, mark) in entries.iter().zip(&doc.marks) {
        assert_eq!(entry.style, INDEX_LEVELS[usize::from(mark.level) - 1]);
        assert_eq!(entry.text, mark.text);
        assert_eq!(entry.href, format!("#{}", mark.bookmark));
        assert_eq!(entry.page_of.as_deref(), Some(mark.bookmark.as_str()));
        assert!(
            bookmarks.contains(mark.bookmark.as_str()),
            "{}",
            mark.bookmark
        );
        assert!(!entry.text.starts_with("- ") && !entry.text.is_empty());
        assert!(!entry.text.contains('\t'), "a TAB before the page field");
    }
}

#[test]
fn empty_codes_leave_no_dash_no_empty_cell_and_no_empty_heading() {
    let z = "Europe/Zurich";
    let mut with_end = contribution("2", "OP02", "With a code", at("2026-09-14", "09:20", z));
    with_end["endDate"] = at("2026-09-14", "09:40", z);
    let input = json!({"event": {"id": "1", "title": "Codes", "timezone": z, "sessions": [
    {"id": 1, "code": "", "title": "Opening", "session": {"code": ""},
     "startDate": at("2026-09-14", "09:00", z), "endDate": at("2026-09-14", "10:00", z),
     "contributions": [
        contribution("1", "", "Without a code", at("2026-09-14", "09:00", z)),
        with_end,
        contribution("3", "", "Neither code nor time", Value::Null),
     ]}]}});
    let doc = check_booklet(&input);
    let content = check_package(&build_ok(&input).odt);
    assert_eq!(doc.headings(1), ["Opening"]);
    let tables: Vec<&Item> = doc
        .body
        .iter()
        .filter(|i| matches!(i, Item::Table { .. }))
        .collect();
    assert_eq!(
        tables,
        [
            &Item::Table {
                name: "AB_Contribution_1".into(),
                cells: vec!["09:00".into()]
            },
            &Item::Table {
                name: "AB_Contribution_2".into(),
                cells: vec!["OP02".into(), "/".into(), "09:20".into()]
            },
        ]
    );
    // Only a kept code cell is a heading: no empty level-2 heading.
    assert_eq!(content.matches("text:outline-level=\"2\">").count(), 1);
    assert!(content.contains("text:outline-level=\"2\">OP02</text:h>"));
    let toc: Vec<&str> = doc.toc.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        toc[1..],
        [
            "Opening",
            "Without a code",
            &format!("OP02{GAP}With a code"),
            "Neither code nor time"
        ]
    );

    // A line template loses its separator too.
    let mut input = input;
    input["settings"] = json!({"ab_contribution_h1": "{code} - {start}", "ab_session_h2": "{start} / {end} ({code})"});
    let doc = check_booklet(&input);
    assert_eq!(doc.headings(2), ["09:00", "OP02 - 09:20"]);
    assert_eq!(
        doc.paragraphs("AB_20_Heading_20_2"),
        ["14 September 2026 09:00 / 10:00"]
    );
}

#[test]
fn several_affiliations_are_separated_by_semicolons() {
    let lab = "Magyar Gyorsító Kutatóintézet, Debrecen";
    let person = json!({"id": "a", "first_name": "Ana", "last_name": "Silva", "affiliation": lab,
        "multiple_affiliations": [lab, "Universidad Autónoma de Cádiz"]});
    let mut c = contribution("1", "A1", "Two institutions", Value::Null);
    c["primary_authors"] = json!([person]);
    let input = json!({"event": {"id": "1", "title": "Affiliations", "sessions": [
        {"id": 1, "code": "A", "title": "Block", "conveners": [person], "contributions": [c]}]}});
    let doc = check_booklet(&input);
    let both = format!("({lab}; Universidad Autónoma de Cádiz)");
    assert_eq!(
        doc.paragraphs("AB_20_Heading_20_2"),
        [format!("Chair: Ana Silva {both}")]
    );
    assert_eq!(
        doc.paragraphs("AB_20_Authors"),
        [format!("Ana Silva {both}.")]
    );
}

#[test]
fn contributions_outside_sessions_show_their_day() {
    let z = "Europe/Zurich";
    let mut later = contribution("11", "FR01", "Friday talk", at("2026-09-18", "17:30", z));
    later["endDate"] = at("2026-09-18", "17:50", z);
    let mut overnight = contribution("12", "", "Night shift", at("2026-09-15", "23:00", z));
    overnight["endDate"] = at("2026-09-16", "01:00", z);
    let input = json!({"event": {"id": "1", "title": "Days", "timezone": z, "sessions": [
        {"id": 1, "code": "MO", "title": "Monday", "startDate": at("2026-09-14", "09:00", z),
         "contributions": [contribution("1", "MO01", "In a block", at("2026-09-14", "09:00", z))]}],
        "contributions": [later, overnight]}});
    let doc = check_booklet(&input);
    let cells = |doc: &Doc| -> Vec<Vec<String>> {
        doc.body
            .iter()
            .filter_map(|i| match i {
                Item::Table { cells, .. } => Some(cells.clone()),
                _ => None,
            })
            .collect()
    };
    // In a block the session heading gives the day; outside, the header does.
    assert_eq!(
        cells(&doc),
        [
            vec!["MO01", "/", "09:00"],
            vec!["15 September 2026 23:00"],
            vec!["FR01", "/", "18 September 2026 17:30"],
        ]
    );
    let mut input = input;
    input["settings"] = json!({"ab_contribution_h1": "{start} – {end}"});
    let doc = check_booklet(&input);
    assert_eq!(
        doc.headings(2),
        [
            "09:00",
            "15 September 2026 23:00 – 16 September 2026 01:00",
            "18 September 2026 17:30 – 17:50"
        ]
    );
}

#[test]
fn abstracts_are_ragged_right_and_keep_only_what_must_stay_together() {
    let booklet = build_ok(&spec_example());
    let entries = unzip(&booklet.odt);
    let styles = std::str::from_utf8(&entries[2].1).unwrap();
    let style = |name: &str| {
        let start = styles
            .find(&format!("style:name=\"{name}\""))
            .unwrap_or_else(|| panic!("{name}"));
        let end = start + styles[start..].find("</style:style>").unwrap();
        styles[start..end].to_owned()
    };
    let description = style("AB_20_Description");
    assert!(
        description.contains("fo:text-align=\"start\""),
        "{description}"
    );
    assert!(!description.contains("justify"));
    // Header row, title: kept with what follows. Names: not (see styles.rs).
    for (name, keeps) in [
        ("AB_20_Heading_20_3", true),
        ("AB_20_Title", true),
        ("AB_20_Authors", false),
        ("AB_20_Coauthors", false),
        ("AB_20_Description", false),
    ] {
        assert_eq!(
            style(name).contains("fo:keep-with-next=\"always\""),
            keeps,
            "{name}"
        );
    }
    // Custom fields keep with the end of the description, so no field line is carried
    // alone onto a page.
    let mut c = contribution("1", "A1", "Fields", Value::Null);
    c["description"] = json!("First.\nLast.");
    c["field_values"] =
        json!([{"name": "Footnotes", "value": "one\ntwo"}, {"name": "Funding", "value": "three"}]);
    let input = json!({"event": {"id": "1", "title": "T", "contributions": [c]},
        "settings": {"custom_fields": ["Footnotes", "Funding"]}});
    let content = check_package(&build_ok(&input).odt);
    let p = |style: &str, text: &str| {
        if text.is_empty() {
            format!("<text:p text:style-name=\"{style}\"/>")
        } else {
            format!("<text:p text:style-name=\"{style}\">{text}</text:p>")
        }
    };
    let (d, dk, f, fk) = (
        "AB_20_Description",
        DESCRIPTION_KEEP,
        "AB_20_Footnotes",
        FOOTNOTES_KEEP,
    );
    let expected = [
        p(d, ""),
        p(d, "First."),
        p(dk, "Last."),
        p(dk, ""),
        p(fk, "one"),
        p(fk, "two"),
        p(fk, ""),
        p(f, "three"),
    ]
    .concat();
    assert!(content.contains(&expected), "{content}");
    for (name, parent) in [(dk, d), (fk, f)] {
        assert!(content.contains(&format!(
            "<style:style style:name=\"{name}\" style:family=\"paragraph\" \
             style:parent-style-name=\"{parent}\"><style:paragraph-properties \
             fo:keep-with-next=\"always\"/></style:style>"
        )));
    }
    // Widows and orphans: at least two lines of a paragraph on either side of a break.
    assert!(styles.contains(
        "<style:default-style style:family=\"paragraph\"><style:paragraph-properties fo:orphans=\"2\" fo:widows=\"2\"/>"
    ));
}

#[test]
fn nothing_empty_is_left_before_a_page_break() {
    // Each section ends with text, never with an empty paragraph that could take a page of
    // its own before the next section's page break; the document ends the same way.
    for input in [spec_example(), crate::booklet::generate::event(0, 300)] {
        let doc = check_booklet(&input);
        let empty = |i: &Item| matches!(i, Item::Para { text, .. } if text.is_empty());
        for pair in doc.body.windows(2) {
            if matches!(pair[1], Item::Heading { level: 1, .. }) {
                assert!(!empty(&pair[0]), "{pair:?}");
            }
        }
        assert!(!empty(doc.body.last().unwrap()));
    }
}

#[test]
fn a_block_without_contributions_takes_no_page_of_its_own() {
    let z = "Europe/Zurich";
    let block = |id: u64, code: &str, day: &str, contributions: Value| {
        json!({"id": id, "code": code, "title": code, "startDate": at(day, "09:00", z),
            "conveners": [{"first_name": "Ines", "last_name": "Keller"}], "contributions": contributions})
    };
    let input = json!({"event": {"id": "1", "title": "Empty blocks", "timezone": z, "sessions": [
        block(1, "A", "2026-09-14", json!([])),
        block(2, "B", "2026-09-15", json!([contribution("1", "B1", "Talk", at("2026-09-15", "09:00", z))])),
        block(3, "C", "2026-09-16", json!([])),
        block(4, "D", "2026-09-17", json!([contribution("2", "D1", "Talk", at("2026-09-17", "09:00", z))])),
    ]}});
    let booklet = build_ok(&input);
    let content = check_package(&booklet.odt);
    let h1 = |style: &str, text: &str| {
        format!(
            "<text:h text:style-name=\"{style}\" text:outline-level=\"1\"><text:bookmark-start text:name=\"ab_s{n}\"/><text:toc-mark-start text:id=\"ab_s{n}\" text:outline-level=\"1\"/>{text}",
            n = (text.as_bytes()[0] - b'A' + 1)
        )
    };
    // The first section starts after the table of contents on a page of its own, empty or
    // not; a later empty block follows the previous section on its page.
    for (style, text) in [
        (HEADING_1, "A - A"),
        (HEADING_1, "B - B"),
        (HEADING_1_FLOW, "C - C"),
        (HEADING_1, "D - D"),
    ] {
        assert!(content.contains(&h1(style, text)), "{text}");
    }
    assert!(content.contains(&format!(
        "<style:style style:name=\"{HEADING_1_FLOW}\" style:family=\"paragraph\" \
         style:parent-style-name=\"{HEADING_1}\"><style:paragraph-properties \
         fo:break-before=\"auto\" fo:margin-top=\"0.8cm\"/></style:style>"
    )));
    assert_eq!(outline(&content).headings(1).len(), 4);
}

#[test]
fn the_package_is_deflated_at_level_6() {
    // content.xml of a generated event shrinks to about 5.5 % at level 6, 9 % at level 1.
    let booklet = build_ok(&crate::booklet::generate::event(0, 300));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&booklet.odt)).unwrap();
    let content = archive.by_name("content.xml").unwrap();
    let ratio = content.compressed_size() as f64 / content.size() as f64;
    assert!(
        ratio < 0.07,
        "content.xml deflated to {:.1} %",
        ratio * 100.0
    );
}
