//! The fixed parts of the package: `styles.xml`, `meta.xml`, `META-INF/manifest.xml`, and the
//! names of the styles `content.xml` refers to (§3.7, §5).
//!
//! Style names are NCNames with spaces encoded as `_20_`, as LibreOffice writes them; the
//! display names are the ones MEOW's templates and macros expect and must not change.

use std::io;

use crate::booklet::xml::Xml;

/// The media type, also the content of the `mimetype` entry.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.oasis.opendocument.text";

pub(crate) const HEADING_1: &str = "AB_20_Heading_20_1";
pub(crate) const HEADING_2: &str = "AB_20_Heading_20_2";
pub(crate) const HEADING_3: &str = "AB_20_Heading_20_3";
pub(crate) const TITLE: &str = "AB_20_Title";
pub(crate) const AUTHORS: &str = "AB_20_Authors";
pub(crate) const COAUTHORS: &str = "AB_20_Coauthors";
pub(crate) const DESCRIPTION: &str = "AB_20_Description";
pub(crate) const FOOTNOTES: &str = "AB_20_Footnotes";
pub(crate) const INDEX_TITLE: &str = "AB_20_Index_20_Title";
pub(crate) const INDEX_LEVELS: [&str; 3] = [
    "AB_20_Index_20_level_20_1",
    "AB_20_Index_20_level_20_2",
    "AB_20_Index_20_level_20_3",
];
pub(crate) const SPEAKERS: &str = "AB_20_Speakers";
/// Text style of the table-of-contents links (black, not underlined, as LibreOffice's own).
pub(crate) const INDEX_LINK: &str = "AB_20_Index_20_Link";
/// Automatic paragraph styles in `content.xml`: `AB Heading 1` without its page break, and
/// `AB Description` and `AB Footnotes` kept with the next paragraph.
pub(crate) const HEADING_1_FLOW: &str = "AB_Heading_1_Flow";
pub(crate) const DESCRIPTION_KEEP: &str = "AB_Description_Keep";
pub(crate) const FOOTNOTES_KEEP: &str = "AB_Footnotes_Keep";
/// Automatic table style in `content.xml`.
pub(crate) const TABLE: &str = "AB_20_Table";
const ROOT: &str = "AB_20_Root";

/// Namespaces declared on every root element.
pub(crate) const NAMESPACES: [(&str, &str); 9] = [
    (
        "xmlns:office",
        "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    ),
    (
        "xmlns:style",
        "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
    ),
    (
        "xmlns:text",
        "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    ),
    (
        "xmlns:table",
        "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    ),
    (
        "xmlns:fo",
        "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0",
    ),
    (
        "xmlns:meta",
        "urn:oasis:names:tc:opendocument:xmlns:meta:1.0",
    ),
    ("xmlns:xlink", "http://www.w3.org/1999/xlink"),
    ("xmlns:dc", "http://purl.org/dc/elements/1.1/"),
    (
        "xmlns:manifest",
        "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0",
    ),
];

/// Opens a root element with every namespace and `office:version="1.3"`.
pub(crate) fn open_root(xml: &mut Xml, name: &str) -> io::Result<()> {
    let mut attributes: Vec<(&str, &str)> = NAMESPACES
        .iter()
        .copied()
        .filter(|(key, _)| *key != "xmlns:manifest")
        .collect();
    attributes.push(("office:version", "1.3"));
    xml.declaration()?;
    xml.start(name, &attributes)
}

/// A paragraph style of `office:styles`: display name, properties, text properties.
struct ParagraphStyle {
    name: &'static str,
    display: &'static str,
    paragraph: &'static [(&'static str, &'static str)],
    text: &'static [(&'static str, &'static str)],
}

const KEEP: (&str, &str) = ("fo:keep-with-next", "always");
const BOLD: (&str, &str) = ("fo:font-weight", "bold");
const RED: (&str, &str) = ("fo:color", "#ff0000");
const PT12: (&str, &str) = ("fo:font-size", "12pt");
const ITALIC: (&str, &str) = ("fo:font-style", "italic");
const SPACE_AFTER: (&str, &str) = ("fo:margin-bottom", "0.1cm");

const PARAGRAPH_STYLES: &[ParagraphStyle] = &[
    ParagraphStyle {
        name: HEADING_1,
        display: "AB Heading 1",
        paragraph: &[
            ("fo:break-before", "page"),
            KEEP,
            ("fo:margin-bottom", "0.3cm"),
        ],
        text: &[("fo:font-size", "16pt"), BOLD, RED],
    },
    ParagraphStyle {
        name: HEADING_2,
        display: "AB Heading 2",
        paragraph: &[KEEP, SPACE_AFTER],
        text: &[("fo:font-size", "14pt"), BOLD, RED],
    },
    ParagraphStyle {
        name: HEADING_3,
        display: "AB Heading 3",
        paragraph: &[KEEP],
        text: &[PT12, BOLD, RED],
    },
    ParagraphStyle {
        name: TITLE,
        display: "AB Title",
        paragraph: &[KEEP, ("fo:margin-top", "0.2cm"), SPACE_AFTER],
        text: &[PT12, BOLD],
    },
    // The keep chain ends at the title: a page may end after the names. Keeping the names
    // with the description too made LibreOffice's first layout break such chains anyway and
    // its next layout move them (page numbers shifted on Update Index), and it cost about 5 %
    // more pages (docs/booklet.md).
    ParagraphStyle {
        name: AUTHORS,
        display: "AB Authors",
        paragraph: &[SPACE_AFTER],
        text: &[PT12, ITALIC],
    },
    ParagraphStyle {
        name: COAUTHORS,
        display: "AB Coauthors",
        paragraph: &[SPACE_AFTER],
        text: &[PT12, ITALIC],
    },
    // Ragged right: justified lines stretched word gaps wherever a long token (a formula, a
    // URL, a word in another language) did not fit, and hyphenation cannot be relied on, as
    // it depends on the dictionaries of the editor's LibreOffice and on a language the
    // abstracts do not declare (they mix languages).
    ParagraphStyle {
        name: DESCRIPTION,
        display: "AB Description",
        paragraph: &[("fo:text-align", "start")],
        text: &[PT12],
    },
    ParagraphStyle {
        name: FOOTNOTES,
        display: "AB Footnotes",
        paragraph: &[],
        text: &[PT12],
    },
    ParagraphStyle {
        name: INDEX_TITLE,
        display: "AB Index Title",
        paragraph: &[("fo:margin-bottom", "0.4cm")],
        text: &[("fo:font-size", "16pt"), BOLD],
    },
    ParagraphStyle {
        name: INDEX_LEVELS[0],
        display: "AB Index level 1",
        paragraph: &[("fo:margin-top", "0.2cm")],
        text: &[PT12, BOLD],
    },
    ParagraphStyle {
        name: INDEX_LEVELS[1],
        display: "AB Index level 2",
        paragraph: &[("fo:margin-left", "0.5cm")],
        text: &[("fo:font-size", "10pt")],
    },
    ParagraphStyle {
        name: INDEX_LEVELS[2],
        display: "AB Index level 3",
        paragraph: &[("fo:margin-left", "0.5cm")],
        text: &[("fo:font-size", "10pt")],
    },
];

/// The right edge of the text area of an A4 page with 2 cm margins, for index tab stops.
const TEXT_WIDTH: &str = "17cm";

/// `styles.xml`.
pub(crate) fn styles_xml() -> io::Result<Vec<u8>> {
    let mut xml = Xml::with_capacity(8 * 1024);
    open_root(&mut xml, "office:document-styles")?;
    xml.start("office:styles", &[])?;

    xml.start("style:default-style", &[("style:family", "paragraph")])?;
    xml.empty(
        "style:paragraph-properties",
        &[("fo:orphans", "2"), ("fo:widows", "2")],
    )?;
    xml.empty(
        "style:text-properties",
        &[
            ("fo:font-family", "Arial"),
            PT12,
            ("fo:language", "en"),
            ("fo:country", "GB"),
        ],
    )?;
    xml.end("style:default-style")?;
    xml.start("style:default-style", &[("style:family", "table")])?;
    xml.empty(
        "style:table-properties",
        &[("table:border-model", "collapsing")],
    )?;
    xml.end("style:default-style")?;

    xml.start(
        "style:style",
        &[
            ("style:name", ROOT),
            ("style:display-name", "AB Root"),
            ("style:family", "paragraph"),
        ],
    )?;
    xml.empty(
        "style:text-properties",
        &[("fo:font-family", "Arial"), PT12],
    )?;
    xml.end("style:style")?;

    for style in PARAGRAPH_STYLES {
        xml.start(
            "style:style",
            &[
                ("style:name", style.name),
                ("style:display-name", style.display),
                ("style:family", "paragraph"),
                ("style:parent-style-name", ROOT),
            ],
        )?;
        let is_index = INDEX_LEVELS.contains(&style.name);
        if is_index {
            xml.start("style:paragraph-properties", style.paragraph)?;
            xml.start("style:tab-stops", &[])?;
            xml.empty(
                "style:tab-stop",
                &[
                    ("style:position", TEXT_WIDTH),
                    ("style:type", "right"),
                    ("style:leader-style", "dotted"),
                    ("style:leader-text", "."),
                ],
            )?;
            xml.end("style:tab-stops")?;
            xml.end("style:paragraph-properties")?;
        } else if !style.paragraph.is_empty() {
            xml.empty("style:paragraph-properties", style.paragraph)?;
        }
        xml.empty("style:text-properties", style.text)?;
        xml.end("style:style")?;
    }

    xml.start(
        "style:style",
        &[
            ("style:name", SPEAKERS),
            ("style:display-name", "AB Speakers"),
            ("style:family", "text"),
        ],
    )?;
    xml.empty("style:text-properties", &[BOLD])?;
    xml.end("style:style")?;
    xml.start(
        "style:style",
        &[
            ("style:name", INDEX_LINK),
            ("style:display-name", "AB Index Link"),
            ("style:family", "text"),
        ],
    )?;
    xml.empty(
        "style:text-properties",
        &[
            ("fo:color", "#000000"),
            ("style:text-underline-style", "none"),
        ],
    )?;
    xml.end("style:style")?;
    xml.end("office:styles")?;

    xml.start("office:automatic-styles", &[])?;
    xml.start("style:page-layout", &[("style:name", "AB_Page")])?;
    xml.empty(
        "style:page-layout-properties",
        &[
            ("fo:page-width", "21cm"),
            ("fo:page-height", "29.7cm"),
            ("style:print-orientation", "portrait"),
            ("fo:margin-top", "2cm"),
            ("fo:margin-bottom", "2cm"),
            ("fo:margin-left", "2cm"),
            ("fo:margin-right", "2cm"),
        ],
    )?;
    xml.end("style:page-layout")?;
    xml.end("office:automatic-styles")?;

    xml.start("office:master-styles", &[])?;
    xml.empty(
        "style:master-page",
        &[
            ("style:name", "Standard"),
            ("style:page-layout-name", "AB_Page"),
        ],
    )?;
    xml.end("office:master-styles")?;
    xml.end("office:document-styles")?;
    Ok(xml.into_bytes())
}

/// `meta.xml`: generator and title only, so the same input gives the same bytes.
pub(crate) fn meta_xml(title: &str) -> io::Result<Vec<u8>> {
    let mut xml = Xml::with_capacity(1024);
    open_root(&mut xml, "office:document-meta")?;
    xml.start("office:meta", &[])?;
    let generator = concat!("taskwire/", env!("CARGO_PKG_VERSION"));
    xml.element("meta:generator", &[], generator)?;
    xml.element("dc:title", &[], title)?;
    xml.end("office:meta")?;
    xml.end("office:document-meta")?;
    Ok(xml.into_bytes())
}

/// `META-INF/manifest.xml` listing `parts` (never `mimetype` or the manifest itself).
pub(crate) fn manifest_xml(parts: &[&str]) -> io::Result<Vec<u8>> {
    let mut xml = Xml::with_capacity(1024);
    xml.declaration()?;
    xml.start(
        "manifest:manifest",
        &[NAMESPACES[8], ("manifest:version", "1.3")],
    )?;
    xml.empty(
        "manifest:file-entry",
        &[
            ("manifest:full-path", "/"),
            ("manifest:version", "1.3"),
            ("manifest:media-type", MEDIA_TYPE),
        ],
    )?;
    for part in parts {
        xml.empty(
            "manifest:file-entry",
            &[
                ("manifest:full-path", part),
                ("manifest:media-type", "text/xml"),
            ],
        )?;
    }
    xml.end("manifest:manifest")?;
    Ok(xml.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_names_encode_display_names() {
        for style in PARAGRAPH_STYLES {
            assert_eq!(style.name, style.display.replace(' ', "_20_"));
        }
        assert_eq!(SPEAKERS, "AB Speakers".replace(' ', "_20_"));
        assert_eq!(TABLE, "AB Table".replace(' ', "_20_"));
        assert_eq!(INDEX_LINK, "AB Index Link".replace(' ', "_20_"));
    }
}
