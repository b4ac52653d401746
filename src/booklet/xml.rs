//! A thin layer over quick-xml's writer: elements with attributes, and paragraph text that
//! follows ODF's white-space rules (§4 "Whitespace").
//!
//! quick-xml does all escaping (`&`, `<`, `>` in text; quotes too in attributes). This layer
//! only decides which spaces must become `<text:s/>` and turns TAB into `<text:tab/>`. Text
//! reaching it is already free of line breaks and characters XML forbids.

use std::io;

use quick_xml::Writer;
use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// An XML document being written into memory.
pub(crate) struct Xml {
    writer: Writer<Vec<u8>>,
    /// No character has been written in the current paragraph yet.
    at_start: bool,
    /// The last thing written in the paragraph was white space.
    after_space: bool,
    /// Spaces seen at the end of the last text run, written once we know what follows.
    pending: usize,
}

impl Xml {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Xml {
            writer: Writer::new(Vec::with_capacity(capacity)),
            at_start: true,
            after_space: false,
            pending: 0,
        }
    }

    /// `<?xml version="1.0" encoding="UTF-8"?>`.
    pub(crate) fn declaration(&mut self) -> io::Result<()> {
        self.writer
            .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
    }

    pub(crate) fn start(&mut self, name: &str, attributes: &[(&str, &str)]) -> io::Result<()> {
        self.flush_pending(false)?;
        let element = BytesStart::new(name).with_attributes(attributes.iter().copied());
        self.writer.write_event(Event::Start(element))
    }

    pub(crate) fn end(&mut self, name: &str) -> io::Result<()> {
        self.writer.write_event(Event::End(BytesEnd::new(name)))
    }

    pub(crate) fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) -> io::Result<()> {
        self.flush_pending(false)?;
        let element = BytesStart::new(name).with_attributes(attributes.iter().copied());
        self.writer.write_event(Event::Empty(element))
    }

    /// An element holding only text, outside paragraphs (metadata, templates).
    pub(crate) fn element(
        &mut self,
        name: &str,
        attributes: &[(&str, &str)],
        text: &str,
    ) -> io::Result<()> {
        self.start(name, attributes)?;
        self.writer
            .write_event(Event::Text(BytesText::from_escaped(partial_escape(text))))?;
        self.end(name)
    }

    /// Opens a paragraph-like element (`text:p`, `text:h`, `text:span` is not one).
    pub(crate) fn open_paragraph(
        &mut self,
        name: &str,
        attributes: &[(&str, &str)],
    ) -> io::Result<()> {
        self.start(name, attributes)?;
        self.at_start = true;
        self.after_space = false;
        self.pending = 0;
        Ok(())
    }

    /// Closes a paragraph; spaces still pending are trailing.
    pub(crate) fn close_paragraph(&mut self, name: &str) -> io::Result<()> {
        self.flush_pending(true)?;
        self.end(name)
    }

    /// A paragraph holding `text` only.
    pub(crate) fn paragraph(&mut self, name: &str, style: &str, text: &str) -> io::Result<()> {
        self.open_paragraph(name, &[("text:style-name", style)])?;
        self.text(text)?;
        self.close_paragraph(name)
    }

    /// A `text:h` at outline `level` holding `text`.
    pub(crate) fn heading(&mut self, style: &str, level: usize, text: &str) -> io::Result<()> {
        let level = level.to_string();
        self.open_paragraph(
            "text:h",
            &[("text:style-name", style), ("text:outline-level", &level)],
        )?;
        self.text(text)?;
        self.close_paragraph("text:h")
    }

    /// An empty paragraph.
    pub(crate) fn empty_paragraph(&mut self, style: &str) -> io::Result<()> {
        self.empty("text:p", &[("text:style-name", style)])
    }

    /// Text inside an open paragraph. Single spaces between words stay literal; a space that
    /// is leading, trailing or follows white space becomes `<text:s/>`; TAB is `<text:tab/>`.
    pub(crate) fn text(&mut self, text: &str) -> io::Result<()> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut run = 0;
        while i < bytes.len() {
            match bytes[i] {
                b' ' => {
                    let spaces = bytes[i..].iter().take_while(|&&b| b == b' ').count();
                    let next = i + spaces;
                    let simple = spaces == 1
                        && i > run
                        && next < bytes.len()
                        && bytes[next] != b'\t'
                        && self.pending == 0;
                    if simple {
                        // One space between two visible characters: keep it in the run.
                        i = next;
                        continue;
                    }
                    self.write_run(&text[run..i])?;
                    self.pending += spaces;
                    i = next;
                    run = i;
                }
                b'\t' => {
                    self.write_run(&text[run..i])?;
                    self.flush_pending(false)?;
                    self.writer
                        .write_event(Event::Empty(BytesStart::new("text:tab")))?;
                    self.at_start = false;
                    self.after_space = true;
                    i += 1;
                    run = i;
                }
                _ => i += 1,
            }
        }
        self.write_run(&text[run..])
    }

    /// Visible text (no spaces at its ends, no TAB); writes pending spaces before it.
    fn write_run(&mut self, run: &str) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        self.flush_pending(false)?;
        self.writer
            .write_event(Event::Text(BytesText::from_escaped(partial_escape(run))))?;
        self.at_start = false;
        self.after_space = false;
        Ok(())
    }

    /// Writes pending spaces: the first literally when it separates two visible characters,
    /// the rest (or all, when leading or trailing) as `<text:s/>`.
    fn flush_pending(&mut self, trailing: bool) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut count = self.pending;
        self.pending = 0;
        if !(trailing || self.at_start || self.after_space) {
            self.writer
                .write_event(Event::Text(BytesText::from_escaped(" ")))?;
            count -= 1;
        }
        if count == 1 {
            self.writer
                .write_event(Event::Empty(BytesStart::new("text:s")))?;
        } else if count > 1 {
            let count = count.to_string();
            let element = BytesStart::new("text:s").with_attributes([("text:c", count.as_str())]);
            self.writer.write_event(Event::Empty(element))?;
        }
        self.at_start = false;
        self.after_space = true;
        Ok(())
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn para(pieces: &[&str]) -> String {
        let mut xml = Xml::with_capacity(64);
        xml.open_paragraph("p", &[]).unwrap();
        for piece in pieces {
            xml.text(piece).unwrap();
        }
        xml.close_paragraph("p").unwrap();
        String::from_utf8(xml.into_bytes()).unwrap()
    }

    #[test]
    fn spaces_and_tabs() {
        assert_eq!(para(&["a b"]), "<p>a b</p>");
        assert_eq!(
            para(&[" a  b   "]),
            "<p><text:s/>a <text:s/>b<text:s text:c=\"3\"/></p>"
        );
        assert_eq!(para(&["a\t b"]), "<p>a<text:tab/><text:s/>b</p>");
        assert_eq!(para(&["a ", "b"]), "<p>a b</p>");
        assert_eq!(para(&["a ", " b"]), "<p>a <text:s/>b</p>");
        assert_eq!(para(&["", " "]), "<p><text:s/></p>");
    }

    #[test]
    fn markup_is_literal() {
        assert_eq!(
            para(&["Gantries <b>&amp; \"quoted\"</b>"]),
            "<p>Gantries &lt;b&gt;&amp;amp; \"quoted\"&lt;/b&gt;</p>"
        );
        let mut xml = Xml::with_capacity(64);
        xml.empty("x", &[("a", "\"<&>")]).unwrap();
        assert_eq!(
            String::from_utf8(xml.into_bytes()).unwrap(),
            "<x a=\"&quot;&lt;&amp;&gt;\"/>"
        );
    }
}
