//! The ODT builder on structurally valid events whose strings are anything:
//! a generated event (`taskwire::booklet::generate`, any of the three shapes)
//! with fuzzer-chosen text put into its string fields and into the heading
//! templates, then the package read back.
//!
//! The package must be a ZIP whose first entry is `mimetype` (stored), whose
//! XML parts are well-formed and hold no character XML 1.0 forbids.
#![no_main]

use std::io::{Cursor, Read};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use taskwire::booklet::{CONTENT_TYPE, Observer, Progress, build, generate};

#[derive(Arbitrary, Debug)]
struct Case {
    seed: u8,
    contributions: u8,
    /// (which string field, counted in document order modulo their number; new text)
    strings: Vec<(u16, String)>,
    templates: Vec<(Template, Option<String>)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Template {
    SessionH1,
    SessionH2,
    ContributionH1,
    ContributionH2,
    OutsideH1,
    TocTitle,
}

impl Template {
    fn key(self) -> &'static str {
        match self {
            Template::SessionH1 => "ab_session_h1",
            Template::SessionH2 => "ab_session_h2",
            Template::ContributionH1 => "ab_contribution_h1",
            Template::ContributionH2 => "ab_contribution_h2",
            Template::OutsideH1 => "ab_outside_h1",
            Template::TocTitle => "ab_toc_title",
        }
    }
}

struct Quiet;

impl Observer for Quiet {
    fn progress(&mut self, _: Progress) {}
    fn cancelled(&self) -> bool {
        false
    }
}

fn strings_mut<'a>(value: &'a mut Value, out: &mut Vec<&'a mut String>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter_mut().for_each(|v| strings_mut(v, out)),
        Value::Object(map) => map.values_mut().for_each(|v| strings_mut(v, out)),
        _ => {}
    }
}

fn forbidden_in_xml(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

fn check_xml(name: &str, text: &str) {
    if let Some(bad) = text.chars().find(|&c| forbidden_in_xml(c)) {
        panic!("{name} holds U+{:04X}", u32::from(bad));
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!("{name} is not well-formed at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "{name} leaves elements open");
}

fuzz_target!(|case: Case| {
    let mut input = generate::event(u64::from(case.seed), usize::from(case.contributions % 3) + 1);
    {
        let mut fields = Vec::new();
        strings_mut(&mut input["event"], &mut fields);
        let n = fields.len();
        if n > 0 {
            for (at, text) in &case.strings {
                *fields[usize::from(*at) % n] = text.clone();
            }
        }
    }
    for (template, text) in &case.templates {
        input["settings"][template.key()] = text.clone().map_or(Value::Null, Value::String);
    }
    let text = input.to_string();
    let Ok(booklet) = build(&text, &mut Quiet) else {
        // A changed `_type` or date can make it another (refused) shape.
        assert!(taskwire::booklet::check(&text).is_err(), "build refused what check accepts");
        return;
    };
    let mut zip = zip::ZipArchive::new(Cursor::new(&booklet.odt)).expect("a ZIP");
    {
        let mut first = zip.by_index(0).expect("an entry");
        assert_eq!(first.name().expect("a name"), "mimetype");
        assert_eq!(first.compression(), zip::CompressionMethod::Stored);
        let mut media = String::new();
        first.read_to_string(&mut media).expect("mimetype");
        assert_eq!(media, CONTENT_TYPE);
    }
    for i in 1..zip.len() {
        let mut part = zip.by_index(i).expect("an entry");
        let name = part.name().expect("a name").into_owned();
        if name == "styles.xml" {
            continue; // the same for every input (the unit tests check it)
        }
        let mut xml = String::new();
        part.read_to_string(&mut xml).expect("UTF-8 XML");
        check_xml(&name, &xml);
    }
});
