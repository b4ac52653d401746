//! Test helpers: an observer, package checks (§5) and a reader that turns `content.xml` back
//! into an outline of headings, paragraphs and header tables.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use serde_json::Value;

use crate::booklet::{Booklet, BuildError, Observer, Progress, build};

/// Records progress and cancels after `cancel_after` reports.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) reports: Vec<Progress>,
    pub(super) cancel_after: Option<usize>,
}

impl Observer for Recorder {
    fn progress(&mut self, p: Progress) {
        self.reports.push(p);
    }

    fn cancelled(&self) -> bool {
        self.cancel_after.is_some_and(|n| self.reports.len() >= n)
    }
}

pub(super) fn try_build(input: &str) -> Result<Booklet, BuildError> {
    build(input, &mut Recorder::default())
}

pub(super) fn build_ok(input: &Value) -> Booklet {
    match try_build(&input.to_string()) {
        Ok(booklet) => booklet,
        Err(e) => panic!("build failed: {e}"),
    }
}

/// The sample events live in shared/, beside the crate (also beside taskwire's).
pub(super) fn sample(name: &str) -> Value {
    let dir = std::env::var("TASKWIRE_EXAMPLES_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data").to_owned());
    let path = format!("{dir}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// The entries of a package, in order.
pub(super) fn unzip(odt: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(odt)).unwrap();
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        entries.push((file.name().unwrap().into_owned(), bytes));
    }
    entries
}

/// Checks §5: the first 77 bytes, the entries, the manifest, every XML part well-formed.
/// Returns `content.xml`.
pub(super) fn check_package(odt: &[u8]) -> String {
    let media = b"application/vnd.oasis.opendocument.text";
    assert_eq!(&odt[0..4], b"PK\x03\x04");
    assert_eq!(
        &odt[6..8],
        [0, 0],
        "general purpose flags (no data descriptor)"
    );
    assert_eq!(&odt[8..10], [0, 0], "mimetype must be stored");
    assert_eq!(&odt[26..28], [8, 0], "name length");
    assert_eq!(&odt[28..30], [0, 0], "no extra field");
    assert_eq!(&odt[30..38], b"mimetype");
    assert_eq!(&odt[38..77], media);
    let entries = unzip(odt);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "mimetype",
            "content.xml",
            "styles.xml",
            "meta.xml",
            "META-INF/manifest.xml"
        ]
    );
    let mut content = String::new();
    for (name, bytes) in &entries {
        if name == "mimetype" {
            assert_eq!(bytes.as_slice(), media);
            continue;
        }
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
            "{name}"
        );
        well_formed(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "content.xml" {
            content = text.to_owned();
        }
        if name != "META-INF/manifest.xml" {
            assert!(text.contains("office:version=\"1.3\""), "{name}");
        }
    }
    let manifest = &entries[4].1;
    let manifest = std::str::from_utf8(manifest).unwrap();
    assert!(manifest.contains("manifest:full-path=\"/\" manifest:version=\"1.3\" manifest:media-type=\"application/vnd.oasis.opendocument.text\""));
    for part in ["content.xml", "styles.xml", "meta.xml"] {
        assert_eq!(
            manifest.matches(&format!("full-path=\"{part}\"")).count(),
            1
        );
    }
    assert!(!manifest.contains("full-path=\"mimetype\""));
    assert!(!manifest.contains("manifest.xml\""));
    content
}

/// Reads every event; quick-xml checks that end tags match.
pub(super) fn well_formed(text: &str) -> Result<(), quick_xml::Error> {
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(_) => depth += 1,
            Event::End(_) => depth -= 1,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    Ok(())
}

/// One item of the body of `content.xml`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Item {
    Heading {
        level: u8,
        style: String,
        text: String,
    },
    Para {
        style: String,
        text: String,
        bold: Vec<String>,
    },
    Table {
        name: String,
        cells: Vec<String>,
    },
}

impl Item {
    pub(super) fn text(&self) -> &str {
        match self {
            Item::Heading { text, .. } | Item::Para { text, .. } => text,
            Item::Table { .. } => "",
        }
    }
}

/// A paragraph of the pre-filled table of contents.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct TocEntry {
    pub(super) style: String,
    /// The text before the tab (the whole text for the title).
    pub(super) text: String,
    /// The link target, `#<bookmark>`.
    pub(super) href: String,
    /// The bookmark whose page the entry's page field shows (`text:bookmark-ref`, format
    /// `page`), with nothing but a tab between the text and the field.
    pub(super) page_of: Option<String>,
}

/// A table-of-contents mark in the body: its level and the entry text it gives.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mark {
    pub(super) level: u8,
    pub(super) text: String,
    /// The bookmark the mark sits in.
    pub(super) bookmark: String,
}

/// `content.xml` read back: table-of-contents entries, the marks they come from, and the
/// body. Paragraph styles are named styles: an automatic style is read as its parent.
#[derive(Debug, Default)]
pub(in crate::booklet) struct Doc {
    pub(super) toc: Vec<TocEntry>,
    pub(super) marks: Vec<Mark>,
    pub(super) body: Vec<Item>,
    /// Every bookmark in the body, in order.
    pub(super) bookmarks: Vec<String>,
}

impl Doc {
    pub(super) fn headings(&self, level: u8) -> Vec<&str> {
        self.body
            .iter()
            .filter_map(|item| match item {
                Item::Heading { level: l, text, .. } if *l == level => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn paragraphs(&self, style: &str) -> Vec<&str> {
        self.body
            .iter()
            .filter_map(|item| match item {
                Item::Para { style: s, text, .. } if s == style => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All text of the body, white space removed, for presence checks.
    pub(super) fn squashed(&self) -> String {
        let mut all = String::new();
        for item in &self.body {
            match item {
                Item::Table { cells, .. } => cells.iter().for_each(|c| all.push_str(c)),
                other => all.push_str(other.text()),
            }
        }
        squash(&all)
    }
}

pub(super) fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn attribute(e: &BytesStart<'_>, name: &str) -> String {
    e.try_get_attribute(name)
        .unwrap()
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::default())
                .unwrap()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Parses `content.xml` into a [`Doc`].
pub(super) fn outline(content: &str) -> Doc {
    let mut reader = Reader::from_str(content);
    let mut doc = Doc::default();
    let mut in_toc = false;
    let mut open: Option<Open> = None;
    let mut table: Option<(String, Vec<String>)> = None;
    // Automatic paragraph styles and their parents.
    let mut parents: std::collections::HashMap<String, String> = Default::default();
    let named = |parents: &std::collections::HashMap<String, String>, style: String| {
        parents.get(&style).cloned().unwrap_or(style)
    };
    // The bookmark the reader is in, and the open range mark (level, where its text starts
    // in the paragraph's text).
    let mut bookmark = String::new();
    let mut range: Option<(u8, usize)> = None;
    loop {
        let event = reader.read_event().unwrap();
        match event {
            Event::Eof => break,
            Event::Start(e) => match e.name().as_ref() {
                "style:style" => {
                    let parent = attribute(&e, "style:parent-style-name");
                    if !parent.is_empty() {
                        parents.insert(attribute(&e, "style:name"), parent);
                    }
                }
                "text:table-of-content" => in_toc = true,
                "text:a" if in_toc => {
                    if let Some(p) = open.as_mut() {
                        p.href = attribute(&e, "xlink:href");
                    }
                }
                "text:bookmark-ref" if in_toc => {
                    if let Some(p) = open.as_mut() {
                        assert_eq!(attribute(&e, "text:reference-format"), "page");
                        assert!(p.text.ends_with('\t'), "a tab before the page field");
                        p.text.pop();
                        p.page_of = Some(attribute(&e, "text:ref-name"));
                    }
                }
                "text:h" | "text:p" => {
                    let level = attribute(&e, "text:outline-level").parse().unwrap_or(0);
                    let style = named(&parents, attribute(&e, "text:style-name"));
                    open = Some(Open {
                        heading: e.name().as_ref() == "text:h",
                        level,
                        style,
                        ..Open::default()
                    });
                }
                "text:span" => {
                    if let Some(p) = open.as_mut() {
                        p.in_bold = attribute(&e, "text:style-name") == "AB_20_Speakers";
                        if p.in_bold {
                            p.bold.push(String::new());
                        }
                    }
                }
                "table:table" => table = Some((attribute(&e, "table:name"), Vec::new())),
                _ => {}
            },
            Event::Empty(e) => {
                match e.name().as_ref() {
                    "style:style" => {
                        let parent = attribute(&e, "style:parent-style-name");
                        if !parent.is_empty() {
                            parents.insert(attribute(&e, "style:name"), parent);
                        }
                    }
                    "text:bookmark-start" => {
                        bookmark = attribute(&e, "text:name");
                        doc.bookmarks.push(bookmark.clone());
                    }
                    "text:toc-mark" => doc.marks.push(Mark {
                        level: attribute(&e, "text:outline-level").parse().unwrap(),
                        text: attribute(&e, "text:string-value"),
                        bookmark: bookmark.clone(),
                    }),
                    "text:toc-mark-start" => {
                        let level = attribute(&e, "text:outline-level").parse().unwrap();
                        let from = open.as_ref().map(|p| p.text.len()).unwrap_or(0);
                        range = Some((level, from));
                    }
                    "text:toc-mark-end" => {
                        if let (Some((level, from)), Some(p)) = (range.take(), open.as_ref()) {
                            doc.marks.push(Mark {
                                level,
                                text: p.text[from..].to_owned(),
                                bookmark: bookmark.clone(),
                            });
                        }
                    }
                    _ => {}
                }
                let Some(p) = open.as_mut() else {
                    if e.name().as_ref() == "text:p" && !in_toc {
                        let style = named(&parents, attribute(&e, "text:style-name"));
                        doc.body.push(Item::Para {
                            style,
                            text: String::new(),
                            bold: Vec::new(),
                        });
                    }
                    continue;
                };
                let add = match e.name().as_ref() {
                    "text:s" => " ".repeat(attribute(&e, "text:c").parse().unwrap_or(1)),
                    "text:tab" => "\t".to_owned(),
                    _ => String::new(),
                };
                push_text(p, &add);
            }
            Event::Text(t) => {
                if let Some(p) = open.as_mut() {
                    push_text(p, &t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => resolve_predefined_entity(&r).unwrap().to_owned(),
                };
                if let Some(p) = open.as_mut() {
                    push_text(p, &resolved);
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "text:table-of-content" => in_toc = false,
                "text:span" => {
                    if let Some(p) = open.as_mut() {
                        p.in_bold = false;
                    }
                }
                "text:h" | "text:p" => {
                    let Some(Open {
                        heading,
                        level,
                        style,
                        text,
                        bold,
                        href,
                        page_of,
                        ..
                    }) = open.take()
                    else {
                        continue;
                    };
                    if in_toc {
                        doc.toc.push(TocEntry {
                            style,
                            text,
                            href,
                            page_of,
                        });
                    } else if let Some((_, cells)) = table.as_mut() {
                        cells.push(text);
                    } else if heading {
                        doc.body.push(Item::Heading { level, style, text });
                    } else {
                        doc.body.push(Item::Para { style, text, bold });
                    }
                }
                "table:table" => {
                    if let Some((name, cells)) = table.take() {
                        doc.body.push(Item::Table { name, cells });
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    doc
}

/// The paragraph or heading being read.
#[derive(Default)]
struct Open {
    heading: bool,
    level: u8,
    style: String,
    text: String,
    /// Text of each `AB Speakers` span.
    bold: Vec<String>,
    in_bold: bool,
    /// In the table of contents: the link target and the bookmark of the page field.
    href: String,
    page_of: Option<String>,
}

fn push_text(p: &mut Open, text: &str) {
    p.text.push_str(text);
    if p.in_bold
        && let Some(last) = p.bold.last_mut()
    {
        last.push_str(text);
    }
}

/// Contributions of an input in any shape, for test-side expectations: (block index or
/// `None` for outside, contribution object).
pub(super) fn contributions_of(input: &Value) -> Vec<(Option<usize>, &Value)> {
    let mut event = &input["event"];
    if event["results"].is_array() && event.get("title").is_none() {
        event = &event["results"][0];
    }
    let mut all = Vec::new();
    for (b, block) in event["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for c in block["contributions"].as_array().into_iter().flatten() {
            all.push((Some(b), c));
        }
    }
    for c in event["contributions"].as_array().into_iter().flatten() {
        all.push((None, c));
    }
    all
}

/// Text as the booklet prints it, white space removed: control characters XML forbids gone.
pub(super) fn expected_text(s: &str) -> String {
    squash(
        &s.chars()
            .filter(|&c| !(c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}'))
            .collect::<String>(),
    )
}
