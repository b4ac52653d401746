//! `content.xml`: the table of contents, one section per block, the outside section (§3).
//!
//! One pass over the sorted model writes two buffers: the head with the table of contents
//! (its entries are known only as headings are written) and the body. The package stores
//! them one after the other, so the document is never copied to be assembled.

use std::io;

use crate::booklet::dates::{Moment, session_end};
use crate::booklet::input::Person;
use crate::booklet::model::{Block, Contribution, Event};
use crate::booklet::people::{self, Order, is_same, is_speaker};
use crate::booklet::settings::{Expanded, Header, Settings, Values};
use crate::booklet::styles::{self, INDEX_LEVELS};
use crate::booklet::text::lines;
use crate::booklet::xml::Xml;

/// `content.xml` in two pieces, to be stored one after the other.
pub(crate) struct Content {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Vec<u8>,
}

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
            doc.contribution(c, header)?;
            tick(doc.contributions)?;
        }
    }
    if !event.outside.is_empty() {
        doc.section_heading(&settings.outside_h1)?;
        doc.body.empty_paragraph(styles::DESCRIPTION)?;
        for c in &event.outside {
            doc.contribution(c, &settings.contribution_h1)?;
            tick(doc.contributions)?;
        }
    }
    if doc.contributions == 0 {
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
        toc.start(
            "text:table-of-content-source",
            &[("text:outline-level", "3")],
        )?;
        toc.element(
            "text:index-title-template",
            &[("text:style-name", styles::INDEX_TITLE)],
            toc_title,
        )?;
        for (level, style) in ["1", "2", "3"].into_iter().zip(INDEX_LEVELS) {
            toc.start(
                "text:table-of-content-entry-template",
                &[("text:outline-level", level), ("text:style-name", style)],
            )?;
            toc.empty(
                "text:index-entry-link-start",
                &[("text:style-name", styles::INDEX_LINK)],
            )?;
            toc.empty("text:index-entry-text", &[])?;
            if level != "2" {
                toc.empty(
                    "text:index-entry-tab-stop",
                    &[("style:type", "right"), ("style:leader-char", ".")],
                )?;
                toc.empty("text:index-entry-page-number", &[])?;
            }
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

    /// A table-of-contents entry linking to `bookmark`. An empty heading (a header whose
    /// first cell is empty) gets none, as LibreOffice leaves empty headings out when it
    /// updates the table.
    fn toc_entry(&mut self, level: usize, bookmark: &str, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let style = INDEX_LEVELS[level - 1];
        let href = format!("#{bookmark}");
        self.toc.start("text:p", &[("text:style-name", style)])?;
        self.toc.open_paragraph(
            "text:a",
            &[
                ("xlink:type", "simple"),
                ("xlink:href", &href),
                ("text:style-name", styles::INDEX_LINK),
                ("text:visited-style-name", styles::INDEX_LINK),
            ],
        )?;
        self.toc.text(text)?;
        self.toc.close_paragraph("text:a")?;
        self.toc.end("text:p")
    }

    /// A `text:h` whose text sits in a bookmark, with its table-of-contents entry.
    fn bookmarked_heading(
        &mut self,
        level: usize,
        style: &str,
        bookmark: &str,
        text: &str,
    ) -> io::Result<()> {
        let level_text = level.to_string();
        self.body.open_paragraph(
            "text:h",
            &[
                ("text:style-name", style),
                ("text:outline-level", &level_text),
            ],
        )?;
        self.body
            .empty("text:bookmark-start", &[("text:name", bookmark)])?;
        self.body.text(text)?;
        self.body
            .empty("text:bookmark-end", &[("text:name", bookmark)])?;
        self.body.close_paragraph("text:h")?;
        self.toc_entry(level, bookmark, text)
    }

    fn section_heading(&mut self, text: &str) -> io::Result<()> {
        self.sections += 1;
        let bookmark = format!("ab_s{}", self.sections);
        self.bookmarked_heading(1, styles::HEADING_1, &bookmark, text)
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
        self.section_heading(&heading.text)?;
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
        self.body.empty_paragraph(styles::DESCRIPTION)
    }

    fn contribution(&mut self, c: &Contribution<'_>, header: &Header) -> io::Result<()> {
        self.contributions += 1;
        let n = self.contributions;
        let bookmark = format!("ab_c{n}");
        let start = c.start.as_ref().map(Moment::short).unwrap_or_default();
        let end = c.end.as_ref().map(Moment::short).unwrap_or_default();
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
                    self.header_table(n, &bookmark, &cells)?;
                }
            }
            Header::Line(template) => {
                let line = template.expand(&values);
                if !line.blank() {
                    self.body.heading(styles::HEADING_3, 2, &line.text)?;
                    self.toc_entry(2, &bookmark, &line.text)?;
                }
            }
        }
        self.bookmarked_heading(3, styles::TITLE, &bookmark, &c.title)?;
        self.people(c)?;
        let body = &mut self.body;
        body.empty_paragraph(styles::DESCRIPTION)?;
        for line in lines(&c.description) {
            line_paragraph(body, styles::DESCRIPTION, line)?;
        }
        body.empty_paragraph(styles::DESCRIPTION)?;
        for field in &c.fields {
            for line in lines(field) {
                line_paragraph(body, styles::FOOTNOTES, line)?;
            }
            body.empty_paragraph(styles::FOOTNOTES)?;
        }
        Ok(())
    }

    fn header_table(&mut self, n: usize, bookmark: &str, cells: &[Expanded]) -> io::Result<()> {
        let name = format!("AB_Contribution_{n}");
        let body = &mut self.body;
        body.start(
            "table:table",
            &[("table:name", &name), ("table:style-name", styles::TABLE)],
        )?;
        for _ in cells {
            body.empty("table:table-column", &[])?;
        }
        body.start("table:table-row", &[])?;
        for (i, cell) in cells.iter().enumerate() {
            body.start("table:table-cell", &[("office:value-type", "string")])?;
            if i == 0 {
                body.heading(styles::HEADING_3, 2, &cell.text)?;
            } else {
                body.paragraph("text:p", styles::HEADING_3, &cell.text)?;
            }
            body.end("table:table-cell")?;
        }
        body.end("table:table-row")?;
        body.end("table:table")?;
        match cells.first() {
            Some(first) => self.toc_entry(2, bookmark, &first.text),
            None => Ok(()),
        }
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

/// One line of a multi-line field as a paragraph (an empty line stays an empty paragraph).
fn line_paragraph(xml: &mut Xml, style: &str, line: &str) -> io::Result<()> {
    if line.is_empty() {
        xml.empty_paragraph(style)
    } else {
        xml.paragraph("text:p", style, line)
    }
}
