//! One fixture per rule of BOOKLET.md: sorting, text handling, settings, person lists, empty
//! and malformed events, refused input.

use serde_json::{Value, json};

use super::support::*;
use super::{D, at, check_booklet, contribution, para, table};
use crate::booklet::{BuildError, check, generate};

#[test]
fn blocks_and_contributions_follow_the_sort_rules() {
    let z = "Europe/Zurich";
    let input = json!({"event": {"id": "1", "title": "Sorting", "timezone": z, "sessions": [
        {"id": 3, "code": "", "title": "Late", "session": {"code": "B"}, "startDate": at("2026-09-15", "09:00", z),
         "contributions": []},
        {"id": 2, "code": "Z", "title": "Unscheduled block", "startDate": null, "contributions": []},
        {"id": 1, "code": "A", "title": "Early", "startDate": at("2026-09-14", "09:00", z), "contributions": [
            contribution("10", "PL120", "pl120", at("2026-09-14", "09:00", z)),
            contribution("11", "PL8", "pl8", at("2026-09-14", "09:00", z)),
            contribution("12", "PL50", "pl50", at("2026-09-14", "09:00", z)),
            contribution("13", "", "no code", at("2026-09-14", "09:00", z)),
            contribution("14", "AAA", "later, by instant", at("2026-09-14", "07:30", "UTC")),
            contribution("15", "ZZZ", "earlier, by instant", at("2026-09-14", "06:30", "UTC")),
            contribution("17", "X", "unscheduled 17", Value::Null),
            contribution("16", "X", "unscheduled 16", Value::Null),
        ]},
        {"id": 4, "code": "A", "title": "Same start, same code, higher id", "startDate": at("2026-09-14", "09:00", z), "contributions": []},
    ], "contributions": [
        contribution("21", "", "outside unscheduled", Value::Null),
        contribution("20", "", "outside scheduled", at("2026-09-16", "09:00", z)),
    ]}});
    let doc = check_booklet(&input);
    assert_eq!(
        doc.headings(1),
        [
            "A - Early",
            "A - Same start, same code, higher id",
            "B - Late",
            "Z - Unscheduled block",
            "Contributions outside sessions"
        ]
    );
    assert_eq!(
        doc.headings(3),
        [
            "earlier, by instant",
            "pl8",
            "pl50",
            "pl120",
            "no code",
            "later, by instant",
            "unscheduled 16",
            "unscheduled 17",
            "outside scheduled",
            "outside unscheduled"
        ]
    );
    // 07:30 UTC is 09:30 in Zurich; a missing session end leaves `{end}` empty, and its
    // separator goes with it.
    assert!(doc.body.contains(&table(6, &["AAA", "/", "09:30"])));
    assert_eq!(
        doc.paragraphs("AB_20_Heading_20_2")[0],
        "14 September 2026 09:00"
    );
}

#[test]
fn text_is_kept_literal_and_clean() {
    let mut c = contribution(
        "1",
        "C1",
        "Gantries <b>&amp; \"quoted\"</b> 𝜇\u{F06D} \u{202B}قياس\u{202C}\u{7}",
        Value::Null,
    );
    c["description"] =
        json!("one\r\ntwo\rthree\nfour\u{2028}five\n\n  indented\tand  doubled \u{0}\n");
    c["speakers"] = json!([{"id": "s", "first_name": "Tab\tbed", "last_name": "Line\nBreak"}]);
    let input = json!({"event": {"id": "x", "title": "", "sessions": [], "contributions": [c]}});
    let booklet = build_ok(&input);
    let content = check_package(&booklet.odt);
    assert!(content.contains(
        "Gantries &lt;b&gt;&amp;amp; \"quoted\"&lt;/b&gt; 𝜇\u{F06D} \u{202B}قياس\u{202C}"
    ));
    assert!(!content.contains('\u{7}') && !content.contains('\u{0}'));
    assert!(
        content.contains("<text:s text:c=\"2\"/>indented<text:tab/>and <text:s/>doubled<text:s/>")
    );
    let doc = outline(&content);
    assert_eq!(
        doc.paragraphs(D),
        [
            "",
            "",
            "one",
            "two",
            "three",
            "four",
            "five",
            "",
            "  indented\tand  doubled ",
        ]
    );
    assert_eq!(doc.paragraphs("AB_20_Authors"), ["Tab\tbed Line Break."]);
    let warnings = booklet.result["warnings"].as_array().unwrap();
    let paths: Vec<&str> = warnings
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/event/contributions/0/title",
            "/event/contributions/0/description"
        ]
    );
    assert_eq!(booklet.filename, "x_Untitled_event_abstract_booklet.odt");
    assert_eq!(booklet.result["event_title"], "");
    let meta = &unzip(&booklet.odt)[3].1;
    assert!(
        std::str::from_utf8(meta)
            .unwrap()
            .contains("<dc:title>Untitled event</dc:title>")
    );
    assert!(content.contains("outside sessions"));
}

#[test]
fn settings_change_headings_and_fields() {
    let mut c = contribution(
        "1",
        "TU01",
        "A {start} title",
        at("2026-09-14", "09:00", "UTC"),
    );
    c["end_dt"] = at("2026-09-14", "09:20", "UTC");
    c["field_values"] = json!([
        {"id": 7, "name": "Renamed", "value": "by id\nsecond line"},
        {"id": 8, "name": "Funding", "value": ""},
        {"name": "Comments", "value": "by name"},
    ]);
    let mut poster = contribution("2", "TUP01", "Poster", at("2026-09-14", "16:00", "UTC"));
    poster["endDate"] = at("2026-09-14", "18:00", "UTC");
    let input = json!({"event": {"id": "1", "title": "T", "timezone": "UTC", "sessions": [
        {"id": 1, "code": "TU", "title": "Talks", "startDate": at("2026-09-14", "09:00", "UTC"),
         "endDate": at("2026-09-15", "10:00", "UTC"), "contributions": [c]},
        {"id": 2, "code": "TUP", "title": "Posters", "session": {"isPoster": true}, "contributions": [poster]},
    ]}, "settings": {
        "ab_session_h1": "{title} [{code}] {unknown}",
        "ab_session_h2": "from {start} to {end}",
        "ab_contribution_h1": "{code} at {start}",
        "ab_contribution_h2": "| {code} | | {end} |",
        "ab_outside_h1": "Elsewhere",
        "ab_toc_title": "Contents",
        "custom_fields": [{"id": 7, "name": "Footnotes"}, "Funding", {"name": "Comments"}],
        "timezone": "Asia/Tokyo",
    }});
    let doc = check_booklet(&input);
    assert_eq!(
        doc.headings(1),
        ["Talks [TU] {unknown}", "Posters [TUP] {unknown}"]
    );
    assert_eq!(
        doc.paragraphs("AB_20_Heading_20_2"),
        ["from 14 September 2026 09:00 to 15 September 2026 10:00"]
    );
    assert_eq!(doc.headings(2), ["TU01 at 09:00"]);
    assert!(doc.body.contains(&table(2, &["TUP01", "", "18:00"])));
    assert_eq!(doc.headings(3), ["A {start} title", "Poster"]);
    assert_eq!(
        doc.paragraphs("AB_20_Footnotes"),
        ["by id", "second line", "", "by name"]
    );
    assert_eq!(doc.toc[0].text, "Contents");
}

#[test]
fn people_are_grouped_sorted_and_bold_when_speaking() {
    let person = |id: Option<&str>, first: &str, last: &str, affiliations: &[&str]| {
        let mut p = json!({"first_name": first, "last_name": last, "affiliation": affiliations.first().copied().unwrap_or(""),
            "multiple_affiliations": if affiliations.len() > 1 { json!(affiliations) } else { json!([]) }});
        if let Some(id) = id {
            p["id"] = json!(id);
        }
        p
    };
    let mut c = contribution("1", "X1", "Grouping", Value::Null);
    c["primary_authors"] = json!([
        person(Some("z"), "Zed", "A", &["Lab1"]),
        person(Some("b"), "Bob", "B", &["Lab2"]),
        person(Some("a"), "Amy", "C", &["Lab1"]),
        person(Some("b"), "Bob", "B", &["Lab2"]),
        person(Some("c"), "Carl", "D", &["Lab1", "Lab3"]),
    ]);
    c["coauthors"] = json!([
        person(Some("y"), "yves", "Y", &["Lab2"]),
        person(None, "Anna", "Z", &["Lab2"]),
        person(None, "émile", "X", &[]),
    ]);
    c["speakers"] = json!([
        person(Some("a"), "Amy", "C", &["Lab1"]),
        person(None, "émile", "X", &[]),
        person(Some("w"), "Li", "Wei", &["Lab4"]),
        person(Some("v"), "Ana", "Vaz", &["Lab4"]),
    ]);
    let chair =
        json!({"id": 5, "firstName": "Ines", "familyName": "Keller", "affiliation": "Lab C"});
    let input = json!({"event": {"id": "1", "title": "People", "sessions": [
        {"id": 1, "code": "P", "title": "People", "conveners": [chair, chair], "contributions": [c]}]}});
    let doc = check_booklet(&input);
    assert_eq!(
        doc.paragraphs("AB_20_Heading_20_2"),
        ["Chair: Ines Keller (Lab C)"]
    );
    assert_eq!(
        doc.body[5..8],
        [
            para(
                "AB_20_Authors",
                "Zed A, Amy C (Lab1), Bob B (Lab2), Carl D (Lab1; Lab3).",
                &["Amy C"]
            ),
            para(
                "AB_20_Coauthors",
                "Anna Z, yves Y (Lab2), émile X.",
                &["émile X"]
            ),
            para(
                "AB_20_Authors",
                "Presented by: Ana Vaz, Li Wei (Lab4).",
                &["Ana Vaz", "Li Wei"]
            ),
        ]
    );
}

#[test]
fn an_event_without_contributions_still_gives_a_booklet() {
    let doc = check_booklet(&json!({"event": {"id": "5", "title": "Empty", "sessions": [
        {"id": 1, "title": "Nobody yet", "contributions": []}]}}));
    // No code: the heading is the title alone, without the template's " - ".
    assert_eq!(doc.headings(1), ["Nobody yet"]);
    assert_eq!(
        doc.paragraphs(D).last(),
        Some(&"This event has no contributions.")
    );
    let doc = check_booklet(&json!({"event": {"sessions": []}}));
    assert_eq!(doc.paragraphs(D), ["This event has no contributions."]);
}

#[test]
fn malformed_items_are_skipped_with_warnings() {
    let mut good = contribution("1", "A1", "", Value::Null);
    good["title"] = json!(42);
    good["speakers"] = json!([7, {"id": "n"}, {"fullName": "Only, Full"}]);
    let mut bad_date = contribution("2", "A2", "", at("2026-02-30", "09:00", "Europe/Nowhere"));
    bad_date["title"] = Value::Null;
    let mut bad_zone = contribution(
        "3",
        "A3",
        "zone",
        at("2026-02-03", "09:00", "Europe/Nowhere"),
    );
    bad_zone["endDate"] = json!("2026-02-03T10:00:00+01:00");
    let input = json!({"event": {"id": "9", "title": "Messy", "timezone": "Mars/Base", "sessions": [
        "not a block",
        {"id": 1, "code": "A", "title": "Block", "contributions": [good, "not a contribution", bad_date, bad_zone, contribution("1", "A1", "again", Value::Null)]},
    ], "contributions": [contribution("3", "A3", "zone again", Value::Null)]}});
    let booklet = build_ok(&input);
    let doc = outline(&check_package(&booklet.odt));
    assert_eq!(doc.headings(3), ["zone", "42", "(untitled contribution)"]);
    assert!(doc.squashed().contains("Only,Full."));
    let warnings: Vec<(String, String)> = booklet.result["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["path"].as_str().unwrap().to_owned(),
                w["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let paths: Vec<&str> = warnings.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/event/timezone",
            "/event/sessions/0",
            "/event/sessions/1/contributions/0/speakers/0",
            "/event/sessions/1/contributions/0/speakers/1",
            "/event/sessions/1/contributions/1",
            "/event/sessions/1/contributions/2/startDate",
            "/event/sessions/1/contributions/2/title",
            "/event/sessions/1/contributions/3/startDate/tz",
            "/event/sessions/1/contributions/4",
        ],
        "{warnings:?}"
    );
    assert_eq!(booklet.result["contributions"], 3);
    assert_eq!(booklet.result["contributions_outside_sessions"], 0);
}

#[test]
fn a_contributions_export_prints_everything_outside() {
    let input = json!({"event": {"id": "1", "title": "Flat", "contributions": [
        contribution("1", "B", "second", Value::Null), contribution("2", "A", "first", Value::Null)]}});
    let booklet = build_ok(&input);
    let doc = outline(&check_package(&booklet.odt));
    assert_eq!(doc.headings(1), ["Contributions outside sessions"]);
    assert_eq!(doc.headings(3), ["first", "second"]);
    assert!(
        booklet.result["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("detail=sessions")
    );
}

#[test]
fn repeated_keys_keep_the_last_value() {
    let input = r#"{"event": {"id": "1", "title": "first", "title": "Dup", "contributions": [
        {"id": "1", "title": "a", "title": "b"}]}}"#;
    let booklet = try_build(input).unwrap();
    assert_eq!(booklet.result["event_title"], "Dup");
    assert_eq!(outline(&check_package(&booklet.odt)).headings(3), ["b"]);
}

#[test]
fn refused_input_names_the_path() {
    let cases = [
        (r#""""#, "", "input must be a JSON object"),
        ("[]", "", "input must be a JSON object"),
        ("{}", "/event", "required"),
        (r#"{"event": []}"#, "/event", "must be an object, got array"),
        (
            r#"{"event": null}"#,
            "/event",
            "must be an object, got null",
        ),
        (
            r#"{"event": {"_type": "HTTPAPIResult", "results": {}}}"#,
            "/event/results",
            "must be an array, got object",
        ),
        (
            r#"{"event": {"results": []}}"#,
            "/event/results",
            "is empty; it must hold exactly one event",
        ),
        (
            r#"{"event": {"results": [{}, {}]}}"#,
            "/event/results",
            "holds 2 items; it must hold exactly one event",
        ),
        (
            r#"{"event": {"results": [3]}}"#,
            "/event/results/0",
            "must be an object, got number",
        ),
        (
            r#"{"event": {"results": [{"title": "x"}]}}"#,
            "/event/results/0",
            "no sessions or contributions; export the event with detail=sessions",
        ),
        (
            r#"{"event": {"title": "x"}}"#,
            "/event",
            "no sessions or contributions; export the event with detail=sessions",
        ),
        (
            r#"{"event": {"sessions": {}}}"#,
            "/event/sessions",
            "must be an array, got object",
        ),
        (
            r#"{"event": {"contributions": "x"}}"#,
            "/event/contributions",
            "must be an array, got string",
        ),
        (
            r#"{"event": {"sessions": []}, "settings": []}"#,
            "/settings",
            "must be an object or null, got array",
        ),
        (
            r#"{"event": {"sessions": []}, "settings": {"ab_session_h1": 1}}"#,
            "/settings/ab_session_h1",
            "must be a string, got number",
        ),
        (
            r#"{"event": {"sessions": []}, "settings": {"custom_fields": {}}}"#,
            "/settings/custom_fields",
            "must be an array, got object",
        ),
        (
            r#"{"event": {"sessions": []}, "settings": {"custom_fields": [1]}}"#,
            "/settings/custom_fields/0",
            "must be a string or an object with a name, got number",
        ),
        (
            "{",
            "",
            "invalid JSON: EOF while parsing an object at line 1 column 1",
        ),
    ];
    for (input, path, reason) in cases {
        let err = check(input).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.reason.as_str()),
            (path, reason),
            "{input}"
        );
        match try_build(input) {
            Err(BuildError::InvalidInput(e)) => assert_eq!(e, err),
            other => panic!("{input}: {other:?}"),
        }
    }
    assert!(
        check(r#"{"event": {"sessions": []}, "settings": null, "cookies": {"a": "b"}}"#).is_ok()
    );
    assert!(check(&generate::event(2, 20).to_string()).is_ok());
}
