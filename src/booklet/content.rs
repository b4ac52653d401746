//! `content.xml`: the table of contents, one section per block, the outside section (§3).
//!
//! One pass over the sorted model writes two buffers: the head with the table of contents
//! (its entries are known only as headings are written) and the body. The package stores
//! them one after the other, so the document is never copied to be assembled.

use std::borrow::Cow;
use std::io;

use crate::booklet::dates::{Moment, session_end};
use crate::booklet::input::Person;
use crate::booklet::model::{Block, Contribution, Event};
use crate::booklet::people::{self, Order, is_same, is_speaker};
use crate::booklet::settings::{Expanded, Header, Settings, Slot, Values, kept};
use crate::booklet::styles::{self, INDEX_LEVELS};
use crate::booklet::text::lines;
use crate::booklet::xml::Xml;

/// `content.xml` in two pieces, to be stored one after the other.
pub(crate) struct Content {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

/// Between a contribution's code and its title in its table-of-contents entry: an en space,
/// wider than the spaces inside the title.
const TOC_CODE_GAP: char = '\u{2002}';

/// Where a contribution is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    InBlock,
    Outside,
}

/// The heading of a block without contributions after another section: no page of its own
/// for a heading, a time line and a chair line, but some room above it.
const HEADING_1_FLOW_PROPERTIES: [(&str, &str); 2] =
    [("fo:break-before", "auto"), ("fo:margin-top", "0.8cm")];

/// The description's last paragraph and the custom fields but the last line.
const KEEP_WITH_NEXT: [(&str, &str); 1] = [("fo:keep-with-next", "always")];

/// Written when the event has no contribution at all.
const NO_CONTRIBUTIONS: &str = "This event has no contributions.";

/// Writes the document. `tick(done)` runs after each contribution and may stop the work.
pub(crate) fn write<E: From<io::Error>>(
    event: &Event<'_>,
    settings: &Settings,
    capacity: usize,
    tick: &mut dyn FnMut(usize) -> Result<(), E>,
) -> Result<Content, E> {
    let mut doc = Document {
        toc: Xml::with_capacity(capacity / 16 + 4096),
        body: Xml::with_capacity(capacity),
        settings,
        sections: 0,
        contributions: 0,
        spacer: None,
    };
    doc.open(&settings.toc_title)?;
    for block in &event.blocks {
        doc.block(block)?;
        for c in &block.contributions {
            let header = if block.poster {
                &settings.contribution_h2
            } else {
                &settings.contribution_h1
            };
            doc.contribution(c, header, Place::InBlock)?;
            tick(doc.contributions)?;
        }
    }
    if !event.outside.is_empty() {
        doc.section_heading(&settings.outside_h1, styles::HEADING_1)?;
        doc.spacer = Some(styles::DESCRIPTION);
        for c in &event.outside {
            doc.contribution(c, &settings.contribution_h1, Place::Outside)?;
            tick(doc.contributions)?;
        }
    }
    if doc.contributions == 0 {
        if let Some(spacer) = doc.spacer.take() {
            doc.body.empty_paragraph(spacer)?;
        }
        doc.body
            .paragraph("text:p", styles::DESCRIPTION, NO_CONTRIBUTIONS)?;
    }
    Ok(doc.close()?)
}

struct Document<'s> {
    /// Head of `content.xml` through the table of contents.
    toc: Xml,
    /// The rest of `content.xml`.
    body: Xml,
    settings: &'s Settings,
    /// Level-1 headings written (bookmarks `ab_s<n>`).
    sections: usize,
    /// Contributions written (bookmarks `ab_c<n>`, tables `AB_Contribution_<n>`).
    contributions: usize,
    /// The empty paragraph that closes a section's heading lines or the last contribution,
    /// in this style. It is written only when a contribution follows in the same section:
    /// before a page break it would only risk a page of its own.
    spacer: Option<&'static str>,
}

impl Document<'_> {
    fn open(&mut self, toc_title: &str) -> io::Result<()> {
        let toc = &mut self.toc;
        styles::open_root(toc, "office:document-content")?;
        toc.start("office:automatic-styles", &[])?;
        toc.start(
            "style:style",
            &[
                ("style:name", styles::TABLE),
                ("style:display-name", "AB Table"),
                ("style:family", "table"),
            ],
        )?;
        toc.empty(
            "style:table-properties",
            &[
                ("style:width", "17cm"),
                ("table:align", "left"),
                ("fo:keep-with-next", "always"),
            ],
        )?;
        toc.end("style:style")?;
        // Variants of named styles, which LibreOffice shows as the named styles.
        for (name, parent, properties) in [
            (
                styles::HEADING_1_FLOW,
                styles::HEADING_1,
                &HEADING_1_FLOW_PROPERTIES[..],
            ),
            (
                styles::DESCRIPTION_KEEP,
                styles::DESCRIPTION,
                &KEEP_WITH_NEXT[..],
            ),
            (
                styles::FOOTNOTES_KEEP,
                styles::FOOTNOTES,
                &KEEP_WITH_NEXT[..],
            ),
        ] {
            toc.start(
                "style:style",
                &[
                    ("style:name", name),
                    ("style:family", "paragraph"),
                    ("style:parent-style-name", parent),
                ],
            )?;
            toc.empty("style:paragraph-properties", properties)?;
            toc.end("style:style")?;
        }
        toc.end("office:automatic-styles")?;
        toc.start("office:body", &[])?;
        toc.start("office:text", &[])?;
        toc.start(
            "text:table-of-content",
            &[
                ("text:name", "Table of Contents"),
                ("text:protected", "true"),
            ],
        )?;
        // Entries come from index marks, not from the outline: a contribution's mark holds its
        // code and title on one line, which no heading does (the code is in the header row).
        toc.start(
            "text:table-of-content-source",
            &[
                ("text:outline-level", "2"),
                ("text:use-outline-level", "false"),
                ("text:use-index-marks", "true"),
            ],
        )?;
        toc.element(
            "text:index-title-template",
            &[("text:style-name", styles::INDEX_TITLE)],
            toc_title,
        )?;
        for (level, style) in ["1", "2"].into_iter().zip(INDEX_LEVELS) {
            toc.start(
                "text:table-of-content-entry-template",
                &[("text:outline-level", level), ("text:style-name", style)],
            )?;
            toc.empty(
                "text:index-entry-link-start",
                &[("text:style-name", styles::INDEX_LINK)],
            )?;
            toc.empty("text:index-entry-text", &[])?;
            toc.empty(
                "text:index-entry-tab-stop",
                &[("style:type", "right"), ("style:leader-char", ".")],
            )?;
            toc.empty("text:index-entry-page-number", &[])?;
            toc.empty("text:index-entry-link-end", &[])?;
            toc.end("text:table-of-content-entry-template")?;
        }
        toc.end("text:table-of-content-source")?;
        toc.start("text:index-body", &[])?;
        toc.start(
            "text:index-title",
            &[("text:name", "Table of Contents Heading")],
        )?;
        toc.paragraph("text:p", styles::INDEX_TITLE, toc_title)?;
        toc.end("text:index-title")
    }

    fn close(mut self) -> io::Result<Content> {
        self.toc.end("text:index-body")?;
        self.toc.end("text:table-of-content")?;
        self.body.end("office:text")?;
        self.body.end("office:body")?;
        self.body.end("office:document-content")?;
        Ok(Content {
            head: self.toc.into_bytes(),
            body: self.body.into_bytes(),
        })
    }

    /// A pre-filled table-of-contents entry: `text`, a tab to the dotted right tab stop and
    /// the page of `bookmark`, all linking to it. The page is a reference field, which
    /// LibreOffice fills in as it lays the document out, so the table shows page numbers as
    /// soon as the file is opened; *Update Index* later writes the same entry from the mark.
    /// An empty `text` gets no entry, as LibreOffice drops empty marks when it updates.
    fn toc_entry(&mut self, level: usize, bookmark: &str, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let style = INDEX_LEVELS[level - 1];
        let href = format!("#{bookmark}");
        let toc = &mut self.toc;
        toc.start("text:p", &[("text:style-name", style)])?;
        toc.open_paragraph(
            "text:a",
            &[
                ("xlink:type", "simple"),
                ("xlink:href", &href),
                ("text:style-name", styles::INDEX_LINK),
                ("text:visited-style-name", styles::INDEX_LINK),
            ],
        )?;
        toc.text(text)?;
        toc.empty("text:tab", &[])?;
        toc.start(
            "text:bookmark-ref",
            &[
                ("text:reference-format", "page"),
                ("text:ref-name", bookmark),
            ],
        )?;
        toc.end("text:bookmark-ref")?;
        toc.close_paragraph("text:a")?;
        toc.end("text:p")
    }

    /// A level-1 heading: its text in a bookmark and in a table-of-contents mark (a range, so
    /// an edited heading gives an edited entry), with its pre-filled entry.
    fn section_heading(&mut self, text: &str, style: &str) -> io::Result<()> {
        self.spacer = None;
        self.sections += 1;
        let bookmark = format!("ab_s{}", self.sections);
        let body = &mut self.body;
        body.open_paragraph(
            "text:h",
            &[("text:style-name", style), ("text:outline-level", "1")],
        )?;
        body.empty("text:bookmark-start", &[("text:name", &bookmark)])?;
        let entry = entry_text(text);
        if matches!(entry, Cow::Owned(_)) {
            // A TAB would be a tab stop in the entry: the mark holds the text with spaces.
            body.empty(
                "text:toc-mark",
                &[("text:string-value", &entry), ("text:outline-level", "1")],
            )?;
            body.text(text)?;
        } else if !text.is_empty() {
            let mark = [("text:id", bookmark.as_str())];
            body.empty(
                "text:toc-mark-start",
                &[mark[0], ("text:outline-level", "1")],
            )?;
            body.text(text)?;
            body.empty("text:toc-mark-end", &mark)?;
        }
        body.empty("text:bookmark-end", &[("text:name", &bookmark)])?;
        body.close_paragraph("text:h")?;
        self.toc_entry(1, &bookmark, &entry)
    }

    /// A contribution's title heading: the title in a bookmark, and a table-of-contents mark
    /// holding `entry` (code and title), with its pre-filled entry.
    fn title_heading(&mut self, bookmark: &str, title: &str, entry: &str) -> io::Result<()> {
        let body = &mut self.body;
        body.open_paragraph(
            "text:h",
            &[
                ("text:style-name", styles::TITLE),
                ("text:outline-level", "3"),
            ],
        )?;
        body.empty("text:bookmark-start", &[("text:name", bookmark)])?;
        body.empty(
            "text:toc-mark",
            &[("text:string-value", entry), ("text:outline-level", "2")],
        )?;
        body.text(title)?;
        body.empty("text:bookmark-end", &[("text:name", bookmark)])?;
        body.close_paragraph("text:h")?;
        self.toc_entry(2, bookmark, entry)
    }

    fn block(&mut self, block: &Block<'_>) -> io::Result<()> {
        let start = block.start.as_ref().map(Moment::long).unwrap_or_default();
        let end = block
            .end
            .as_ref()
            .map(|end| session_end(block.start.as_ref(), end))
            .unwrap_or_default();
        let values = Values {
            code: &block.code,
            title: &block.title,
            start: &start,
            end: &end,
        };
        let heading = self.settings.session_h1.expand(&values);
        // The first section always starts on a new page, after the table of contents.
        let style = if block.contributions.is_empty() && self.sections > 0 {
            styles::HEADING_1_FLOW
        } else {
            styles::HEADING_1
        };
        self.section_heading(&heading.text, style)?;
        let times = self.settings.session_h2.expand(&values);
        if !times.blank() {
            self.body
                .paragraph("text:p", styles::HEADING_2, &times.text)?;
        }
        if !block.chairs.is_empty() {
            let body = &mut self.body;
            body.open_paragraph("text:p", &[("text:style-name", styles::HEADING_2)])?;
            body.text(if block.chairs.len() == 1 {
                "Chair: "
            } else {
                "Chairs: "
            })?;
            for (i, chair) in block.chairs.iter().enumerate() {
                if i > 0 {
                    body.text(", ")?;
                }
                people::write_name(body, chair)?;
                people::write_affiliations(body, &chair.affiliations)?;
            }
            body.close_paragraph("text:p")?;
        }
        self.spacer = Some(styles::DESCRIPTION);
        Ok(())
    }

    /// A contribution: header, title, people, description, custom fields. `place` says
    /// whether it is in a block, whose heading gives the day, or outside every block.
    fn contribution(
        &mut self,
        c: &Contribution<'_>,
        header: &Header,
        place: Place,
    ) -> io::Result<()> {
        if let Some(spacer) = self.spacer.take() {
            self.body.empty_paragraph(spacer)?;
        }
        self.contributions += 1;
        let n = self.contributions;
        let bookmark = format!("ab_c{n}");
        let (start, end) = match place {
            Place::InBlock => (
                c.start.as_ref().map(Moment::short).unwrap_or_default(),
                c.end.as_ref().map(Moment::short).unwrap_or_default(),
            ),
            // No session heading gives the day: the start has its date, and so has an end on
            // a later day.
            Place::Outside => (
                c.start.as_ref().map(Moment::long).unwrap_or_default(),
                c.end
                    .as_ref()
                    .map(|end| session_end(c.start.as_ref(), end))
                    .unwrap_or_default(),
            ),
        };
        let values = Values {
            code: &c.code,
            title: &c.title,
            start: &start,
            end: &end,
        };
        match header {
            Header::Table(cells) => {
                let cells: Vec<Expanded> = cells.iter().map(|t| t.expand(&values)).collect();
                if !Expanded::all_blank(&cells) {
                    self.header_table(n, &cells)?;
                }
            }
            Header::Line(template) => {
                let line = template.expand(&values);
                if !line.blank() && !line.text.is_empty() {
                    self.body.heading(styles::HEADING_3, 2, &line.text)?;
                }
            }
        }
        let title = entry_text(&c.title);
        let entry = if c.code.is_empty() {
            title
        } else {
            Cow::Owned(format!("{}{TOC_CODE_GAP}{title}", entry_text(&c.code)))
        };
        self.title_heading(&bookmark, &c.title, &entry)?;
        self.people(c)?;
        let body = &mut self.body;
        // Custom fields are short lines after the description: they keep with the end of it
        // (and with each other), so none is carried alone onto a page of its own.
        let fields = !c.fields.is_empty();
        let mut description = lines(&c.description).peekable();
        if description.peek().is_some() {
            body.empty_paragraph(styles::DESCRIPTION)?;
            while let Some(line) = description.next() {
                let last = description.peek().is_none();
                let style = if last && fields {
                    styles::DESCRIPTION_KEEP
                } else {
                    styles::DESCRIPTION
                };
                line_paragraph(body, style, line)?;
            }
        }
        let mut spacer = styles::DESCRIPTION_KEEP;
        for (i, field) in c.fields.iter().enumerate() {
            body.empty_paragraph(spacer)?;
            let mut field_lines = lines(field).peekable();
            while let Some(line) = field_lines.next() {
                let last = i + 1 == c.fields.len() && field_lines.peek().is_none();
                let style = if last {
                    styles::FOOTNOTES
                } else {
                    styles::FOOTNOTES_KEEP
                };
                line_paragraph(body, style, line)?;
            }
            spacer = styles::FOOTNOTES_KEEP;
        }
        self.spacer = Some(if fields {
            styles::FOOTNOTES
        } else {
            styles::DESCRIPTION
        });
        Ok(())
    }

    /// The header row: the cells [`kept`] keeps (a cell whose values are all empty goes, with
    /// the separator cells next to it). The template's first cell, when kept, is a heading.
    fn header_table(&mut self, n: usize, cells: &[Expanded]) -> io::Result<()> {
        let slots: Vec<Slot> = cells.iter().map(Slot::of_cell).collect();
        let keep = kept(&slots);
        let name = format!("AB_Contribution_{n}");
        let body = &mut self.body;
        body.start(
            "table:table",
            &[("table:name", &name), ("table:style-name", styles::TABLE)],
        )?;
        for _ in keep.iter().filter(|k| **k) {
            body.empty("table:table-column", &[])?;
        }
        body.start("table:table-row", &[])?;
        for (i, cell) in cells.iter().enumerate().filter(|(i, _)| keep[*i]) {
            body.start("table:table-cell", &[("office:value-type", "string")])?;
            if i == 0 {
                body.heading(styles::HEADING_3, 2, &cell.text)?;
            } else {
                body.paragraph("text:p", styles::HEADING_3, &cell.text)?;
            }
            body.end("table:table-cell")?;
        }
        body.end("table:table-row")?;
        body.end("table:table")
    }

    /// Authors, co-authors, and the speakers the author lists do not already show.
    fn people(&mut self, c: &Contribution<'_>) -> io::Result<()> {
        let speaking = |p: &Person<'_>| is_speaker(p, &c.speakers);
        let authors: Vec<&Person<'_>> = c.authors.iter().collect();
        let coauthors: Vec<&Person<'_>> = c.coauthors.iter().collect();
        let body = &mut self.body;
        list_paragraph(
            body,
            styles::AUTHORS,
            "",
            &authors,
            Order::KeepFirst,
            &speaking,
        )?;
        list_paragraph(
            body,
            styles::COAUTHORS,
            "",
            &coauthors,
            Order::Sorted,
            &speaking,
        )?;
        let (prefix, speakers): (&str, Vec<&Person<'_>>) = if authors.is_empty()
            && coauthors.is_empty()
        {
            ("", c.speakers.iter().collect())
        } else {
            let listed = |s: &&Person<'_>| authors.iter().chain(&coauthors).any(|p| is_same(s, p));
            (
                "Presented by: ",
                c.speakers.iter().filter(|s| !listed(s)).collect(),
            )
        };
        list_paragraph(
            body,
            styles::AUTHORS,
            prefix,
            &speakers,
            Order::Sorted,
            &|_| true,
        )
    }
}

/// A paragraph holding `prefix` and a person list; nothing for an empty list.
fn list_paragraph(
    xml: &mut Xml,
    style: &str,
    prefix: &str,
    people: &[&Person<'_>],
    order: Order,
    bold: &dyn Fn(&Person<'_>) -> bool,
) -> io::Result<()> {
    if people.is_empty() {
        return Ok(());
    }
    xml.open_paragraph("text:p", &[("text:style-name", style)])?;
    xml.text(prefix)?;
    people::write_list(xml, people, order, bold)?;
    xml.close_paragraph("text:p")
}

/// Text for a table-of-contents entry: a TAB becomes a space, as the entry's own tab leads to
/// the page number (and a mark's `text:string-value`, an attribute, cannot hold a TAB).
fn entry_text(text: &str) -> Cow<'_, str> {
    if text.contains('\t') {
        Cow::Owned(text.replace('\t', " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// One line of a multi-line field as a paragraph (an empty line stays an empty paragraph).
fn line_paragraph(xml: &mut Xml, style: &str, line: &str) -> io::Result<()> {
    if line.is_empty() {
        xml.empty_paragraph(style)
    } else {
        xml.paragraph("text:p", style, line)
    }
}
