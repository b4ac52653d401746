//! `pdf_check`: checks papers' PDFs before publication (page size, page
//! count, fonts embedded or not, encryption, PDF version), one report per
//! file and a CSV of them all.
//!
//! Each entry of `files` is a file the server fetches as part of the work
//! (`{url, headers?, name?}`: an unreachable or refused URL fails that
//! entry only), an upload (`{"$upload": …}`) or a URL input (`{"$url": …}`,
//! fetched before the task runs: its failure fails the task, like any URL
//! input). A file that is not a PDF or cannot be read fails its entry too;
//! the task completes with every entry's report.
//!
//! PDFs are read with `lopdf` (pure Rust, lenient with damaged files, with
//! a bound on stream decompression) off the async threads, at most
//! [`MAX_PDF_BYTES`] each.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use futures::future::BoxFuture;
use lopdf::{Dictionary, Document, Object, ObjectId};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{FileWriter, InvalidInput, TaskCtx, TaskError, TaskHandler, TaskOutput, decode_input};
use crate::inputs::{InputFile, url_request};
use crate::task::Progress;

pub(super) struct PdfCheck;

/// Most files one task checks.
const MAX_FILES: usize = 1000;
/// Largest PDF read, in bytes.
const MAX_PDF_BYTES: u64 = 128 * 1024 * 1024;
/// Pages listed by name in a page-size problem.
const LISTED_PAGES: usize = 5;
/// Deepest nesting of form XObjects searched for fonts.
const MAX_FORM_DEPTH: usize = 8;

const MM_PER_POINT: f64 = 25.4 / 72.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    files: Vec<Value>,
    page_size: PageSize,
    #[serde(default = "default_tolerance")]
    tolerance_mm: f64,
    min_pages: Option<u32>,
    max_pages: Option<u32>,
    max_version: Option<String>,
    #[serde(default = "yes")]
    require_embedded_fonts: bool,
    #[serde(default)]
    allow_encrypted: bool,
}

fn default_tolerance() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PageSize {
    Named(String),
    Mm { width_mm: f64, height_mm: f64 },
}

/// What every file is checked against.
#[derive(Clone, Debug)]
struct Spec {
    /// Expected (width, height) in mm; compared either way round.
    size: (f64, f64),
    tolerance: f64,
    min_pages: Option<u32>,
    max_pages: Option<u32>,
    max_version: Option<(u32, u32)>,
    require_embedded_fonts: bool,
    allow_encrypted: bool,
}

fn named_size(name: &str) -> Option<(f64, f64)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "a3" => (297.0, 420.0),
        "a4" => (210.0, 297.0),
        "a5" => (148.0, 210.0),
        "letter" => (215.9, 279.4),
        "legal" => (215.9, 355.6),
        _ => return None,
    })
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// One entry of `files`.
enum Entry {
    /// Fetched by the task: `{url, headers?, name?}`.
    Fetch {
        url: String,
        headers: Option<serde_json::Map<String, Value>>,
        name: Option<String>,
    },
    /// An upload or a URL input, resolved by the server.
    Reference,
}

fn entry(value: &Value, i: usize) -> Result<Entry, InvalidInput> {
    let path = format!("$.files[{i}]");
    let Value::Object(map) = value else {
        return Err(InvalidInput::new(
            path,
            "an entry is {url, headers?, name?} or a file reference",
        ));
    };
    if map.contains_key("$upload") || map.contains_key("$url") {
        return Ok(Entry::Reference);
    }
    if let Some(other) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "url" | "headers" | "name"))
    {
        let shown: String = other.chars().take(64).collect();
        return Err(InvalidInput::new(
            path,
            format!("an entry has only url, headers and name, not `{shown}`"),
        ));
    }
    let Some(Value::String(url)) = map.get("url") else {
        return Err(InvalidInput::new(
            format!("{path}.url"),
            "must be a URL (a string)",
        ));
    };
    let headers = match map.get("headers") {
        None | Some(Value::Null) => None,
        Some(Value::Object(h)) => Some(h.clone()),
        Some(_) => {
            return Err(InvalidInput::new(
                format!("{path}.headers"),
                "must be an object of header names to string values",
            ));
        }
    };
    let name = match map.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.len() <= 1024 => Some(n.clone()),
        Some(_) => {
            return Err(InvalidInput::new(
                format!("{path}.name"),
                "must be a string of at most 1024 bytes",
            ));
        }
    };
    // Checks the URL and the headers now, so a bad one is refused before
    // the task is queued (the message never shows a header's value).
    url_request(url, headers.as_ref(), name.clone())
        .map_err(|why| InvalidInput::new(path.clone(), why))?;
    Ok(Entry::Fetch {
        url: url.clone(),
        headers,
        name,
    })
}

fn parse(input: &RawValue) -> Result<(Vec<Entry>, Spec), InvalidInput> {
    let input: Input = decode_input(input)?;
    if input.files.is_empty() || input.files.len() > MAX_FILES {
        return Err(InvalidInput::new(
            "$.files",
            format!("from 1 to {MAX_FILES} files"),
        ));
    }
    let entries = input
        .files
        .iter()
        .enumerate()
        .map(|(i, v)| entry(v, i))
        .collect::<Result<Vec<_>, _>>()?;
    let size = match &input.page_size {
        PageSize::Named(name) => named_size(name).ok_or_else(|| {
            InvalidInput::new(
                "$.page_size",
                "A3, A4, A5, letter, legal, or {width_mm, height_mm}",
            )
        })?,
        PageSize::Mm {
            width_mm,
            height_mm,
        } => {
            let ok = |v: f64| v.is_finite() && v > 0.0 && v <= 5000.0;
            if !ok(*width_mm) || !ok(*height_mm) {
                return Err(InvalidInput::new(
                    "$.page_size",
                    "width_mm and height_mm from 0 to 5000",
                ));
            }
            (*width_mm, *height_mm)
        }
    };
    if !(input.tolerance_mm.is_finite() && (0.0..=50.0).contains(&input.tolerance_mm)) {
        return Err(InvalidInput::new("$.tolerance_mm", "from 0 to 50"));
    }
    let max_version = match &input.max_version {
        None => None,
        Some(text) => Some(
            parse_version(text)
                .ok_or_else(|| InvalidInput::new("$.max_version", "a version like \"1.7\""))?,
        ),
    };
    Ok((
        entries,
        Spec {
            size,
            tolerance: input.tolerance_mm,
            min_pages: input.min_pages,
            max_pages: input.max_pages,
            max_version,
            require_embedded_fonts: input.require_embedded_fonts,
            allow_encrypted: input.allow_encrypted,
        },
    ))
}

/// One problem of a file.
#[derive(Debug)]
struct Problem {
    check: &'static str,
    message: String,
}

/// What was found in one file.
#[derive(Debug, Default)]
struct Report {
    name: String,
    /// Set when the file could not be checked at all.
    error: Option<String>,
    http_status: Option<u16>,
    pages: Option<usize>,
    version: Option<String>,
    encrypted: Option<bool>,
    /// The first page's size, in mm.
    first_page_mm: Option<(f64, f64)>,
    fonts: Vec<(String, String, bool)>,
    problems: Vec<Problem>,
}

impl Report {
    fn failed(name: String, error: String) -> Report {
        Report {
            name,
            error: Some(error),
            ..Report::default()
        }
    }

    fn status(&self) -> &'static str {
        if self.error.is_some() {
            "error"
        } else if self.problems.is_empty() {
            "ok"
        } else {
            "problems"
        }
    }

    fn json(&self) -> Value {
        let mut report = json!({
            "name": self.name,
            "status": self.status(),
        });
        if let Some(error) = &self.error {
            report["error"] = json!(error);
            if let Some(status) = self.http_status {
                report["http_status"] = json!(status);
            }
            return report;
        }
        report["pages"] = json!(self.pages);
        report["version"] = json!(self.version);
        report["encrypted"] = json!(self.encrypted);
        if let Some((w, h)) = self.first_page_mm {
            report["page_size_mm"] = json!({"width": round1(w), "height": round1(h)});
        }
        report["fonts"] = self
            .fonts
            .iter()
            .map(|(name, kind, embedded)| json!({"name": name, "type": kind, "embedded": embedded}))
            .collect();
        report["problems"] = self
            .problems
            .iter()
            .map(|p| json!({"check": p.check, "message": p.message}))
            .collect();
        report
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Checks one PDF on disk (blocking).
fn check_file(path: &Path, name: String, spec: &Spec) -> Report {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => return Report::failed(name, format!("cannot read the file: {e}")),
    };
    if size > MAX_PDF_BYTES {
        return Report::failed(name, format!("larger than {MAX_PDF_BYTES} bytes"));
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return Report::failed(name, format!("cannot read the file: {e}")),
    };
    check_bytes(&bytes, name, spec)
}

fn check_bytes(bytes: &[u8], name: String, spec: &Spec) -> Report {
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Report::failed(name, "not a PDF (no %PDF- header)".to_owned());
    }
    let doc = match Document::load_mem(bytes) {
        Ok(doc) => doc,
        Err(e) => return Report::failed(name, format!("the PDF is damaged: {e}")),
    };
    let mut report = Report {
        name,
        ..Report::default()
    };
    let version = document_version(&doc);
    report.version = Some(version.clone());
    if let (Some(max), Some(found)) = (spec.max_version, parse_version(&version))
        && found > max
    {
        report.problems.push(Problem {
            check: "version",
            message: format!("PDF {version} is newer than {}.{}", max.0, max.1),
        });
    }
    let encrypted = doc.is_encrypted() || doc.was_encrypted();
    report.encrypted = Some(encrypted);
    if doc.is_encrypted() {
        // Still encrypted after the load: it needs a password to open, and
        // nothing inside it can be read.
        report.problems.push(Problem {
            check: "encryption",
            message: "the file is encrypted with a password: its pages could not be checked"
                .to_owned(),
        });
        return report;
    }
    if encrypted && !spec.allow_encrypted {
        report.problems.push(Problem {
            check: "encryption",
            message: "the file is encrypted (it opens without a password, with restrictions)"
                .to_owned(),
        });
    }
    let pages = doc.get_pages();
    report.pages = Some(pages.len());
    if pages.is_empty() {
        report.problems.push(Problem {
            check: "page_count",
            message: "the file has no pages".to_owned(),
        });
    }
    if let Some(min) = spec.min_pages
        && pages.len() < min as usize
    {
        report.problems.push(Problem {
            check: "page_count",
            message: format!("{} pages, fewer than {min}", pages.len()),
        });
    }
    if let Some(max) = spec.max_pages
        && pages.len() > max as usize
    {
        report.problems.push(Problem {
            check: "page_count",
            message: format!("{} pages, more than {max}", pages.len()),
        });
    }
    check_page_sizes(&doc, &pages, spec, &mut report);
    check_fonts(&doc, &pages, spec, &mut report);
    report
}

/// The header's version, or the catalog's `/Version` when it is later.
fn document_version(doc: &Document) -> String {
    let header = doc.version.clone();
    let catalog = doc
        .catalog()
        .ok()
        .and_then(|c| c.get(b"Version").ok())
        .and_then(|v| v.as_name().ok())
        .map(|v| String::from_utf8_lossy(v).into_owned());
    match catalog {
        Some(catalog) if parse_version(&catalog) > parse_version(&header) => catalog,
        _ => header,
    }
}

fn number(doc: &Document, object: &Object) -> Option<f64> {
    match doc.dereference(object).ok()?.1 {
        Object::Integer(i) => Some(*i as f64),
        Object::Real(r) => Some(f64::from(*r)),
        _ => None,
    }
}

/// A page attribute, inherited through `/Parent` (ISO 32000-1, 7.7.3.4).
fn inherited<'a>(doc: &'a Document, page: ObjectId, key: &[u8]) -> Option<&'a Object> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..64 {
        if let Ok(value) = node.get(key) {
            return Some(value);
        }
        let parent = node.get(b"Parent").and_then(Object::as_reference).ok()?;
        node = doc.get_dictionary(parent).ok()?;
    }
    None
}

/// The visible page size in mm (the crop box, else the media box, times
/// `/UserUnit`).
fn page_size_mm(doc: &Document, page: ObjectId) -> Option<(f64, f64)> {
    let rect = inherited(doc, page, b"CropBox").or_else(|| inherited(doc, page, b"MediaBox"))?;
    let rect = doc.dereference(rect).ok()?.1.as_array().ok()?;
    if rect.len() != 4 {
        return None;
    }
    let values: Vec<f64> = rect.iter().filter_map(|v| number(doc, v)).collect();
    let [x0, y0, x1, y1] = values.as_slice() else {
        return None;
    };
    let unit = doc
        .get_dictionary(page)
        .ok()
        .and_then(|p| p.get(b"UserUnit").ok())
        .and_then(|u| number(doc, u))
        .filter(|u| *u > 0.0)
        .unwrap_or(1.0);
    Some((
        (x1 - x0).abs() * unit * MM_PER_POINT,
        (y1 - y0).abs() * unit * MM_PER_POINT,
    ))
}

fn check_page_sizes(
    doc: &Document,
    pages: &BTreeMap<u32, ObjectId>,
    spec: &Spec,
    report: &mut Report,
) {
    let (ew, eh) = spec.size;
    let (e_small, e_large) = (ew.min(eh), ew.max(eh));
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for (number, id) in pages {
        match page_size_mm(doc, *id) {
            None => unknown.push(*number),
            Some((w, h)) => {
                if report.first_page_mm.is_none() {
                    report.first_page_mm = Some((w, h));
                }
                let (small, large) = (w.min(h), w.max(h));
                if (small - e_small).abs() > spec.tolerance
                    || (large - e_large).abs() > spec.tolerance
                {
                    wrong.push((*number, w, h));
                }
            }
        }
    }
    if !wrong.is_empty() {
        let mut message = format!(
            "{} of {} pages are not {} × {} mm (± {}):",
            wrong.len(),
            pages.len(),
            round1(ew),
            round1(eh),
            spec.tolerance
        );
        for (number, w, h) in wrong.iter().take(LISTED_PAGES) {
            let _ = write!(
                message,
                " page {number} is {} × {} mm;",
                round1(*w),
                round1(*h)
            );
        }
        if wrong.len() > LISTED_PAGES {
            let _ = write!(message, " and {} more", wrong.len() - LISTED_PAGES);
        }
        report.problems.push(Problem {
            check: "page_size",
            message: message.trim_end_matches(';').to_owned(),
        });
    }
    if !unknown.is_empty() {
        report.problems.push(Problem {
            check: "page_size",
            message: format!("{} pages have no readable page box", unknown.len()),
        });
    }
}

/// Every font the pages use (their resources and the form XObjects in
/// them): `(name, type, embedded)`, each name once.
fn check_fonts(doc: &Document, pages: &BTreeMap<u32, ObjectId>, spec: &Spec, report: &mut Report) {
    let mut fonts: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut seen_forms = std::collections::HashSet::new();
    for id in pages.values() {
        let Ok((direct, ids)) = doc.get_page_resources(*id) else {
            continue;
        };
        let mut all: Vec<&Dictionary> = direct.into_iter().collect();
        all.extend(ids.iter().filter_map(|id| doc.get_dictionary(*id).ok()));
        for resources in all {
            collect_fonts(doc, resources, 0, &mut seen_forms, &mut fonts);
        }
    }
    report.fonts = fonts
        .into_iter()
        .map(|(name, (kind, embedded))| (name, kind, embedded))
        .collect();
    let missing: Vec<&str> = report
        .fonts
        .iter()
        .filter(|(_, _, embedded)| !embedded)
        .map(|(name, _, _)| name.as_str())
        .collect();
    if spec.require_embedded_fonts && !missing.is_empty() {
        report.problems.push(Problem {
            check: "fonts",
            message: format!("fonts not embedded: {}", missing.join(", ")),
        });
    }
}

fn dict<'a>(doc: &'a Document, object: &'a Object) -> Option<&'a Dictionary> {
    doc.dereference(object).ok()?.1.as_dict().ok()
}

fn collect_fonts(
    doc: &Document,
    resources: &Dictionary,
    depth: usize,
    seen_forms: &mut std::collections::HashSet<ObjectId>,
    fonts: &mut BTreeMap<String, (String, bool)>,
) {
    if let Some(font_dict) = resources.get(b"Font").ok().and_then(|f| dict(doc, f)) {
        for (_, font) in font_dict.iter() {
            if let Some(font) = dict(doc, font) {
                let (name, kind, embedded) = font_info(doc, font);
                let entry = fonts.entry(name).or_insert((kind, embedded));
                // A font embedded in one place and not another counts as not.
                entry.1 &= embedded;
            }
        }
    }
    if depth >= MAX_FORM_DEPTH {
        return;
    }
    let Some(xobjects) = resources.get(b"XObject").ok().and_then(|x| dict(doc, x)) else {
        return;
    };
    for (_, xobject) in xobjects.iter() {
        let Ok(id) = xobject.as_reference() else {
            continue;
        };
        if !seen_forms.insert(id) {
            continue;
        }
        let Ok(Object::Stream(stream)) = doc.get_object(id) else {
            continue;
        };
        let is_form = stream
            .dict
            .get(b"Subtype")
            .and_then(Object::as_name)
            .is_ok_and(|s| s == b"Form");
        if let Some(inner) = is_form
            .then(|| {
                stream
                    .dict
                    .get(b"Resources")
                    .ok()
                    .and_then(|r| dict(doc, r))
            })
            .flatten()
        {
            collect_fonts(doc, inner, depth + 1, seen_forms, fonts);
        }
    }
}

/// A font's name, type and whether its program is in the file.
fn font_info(doc: &Document, font: &Dictionary) -> (String, String, bool) {
    let name_of = |d: &Dictionary, key: &[u8]| {
        d.get(key)
            .ok()
            .and_then(|v| doc.dereference(v).ok())
            .and_then(|(_, v)| v.as_name().ok())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let kind = name_of(font, b"Subtype").unwrap_or_else(|| "unknown".to_owned());
    let name = name_of(font, b"BaseFont").unwrap_or_else(|| format!("(unnamed {kind})"));
    if kind == "Type3" {
        // Its glyphs are drawn by the file itself.
        return (name, kind, true);
    }
    let described = if kind == "Type0" {
        font.get(b"DescendantFonts")
            .ok()
            .and_then(|d| doc.dereference(d).ok())
            .and_then(|(_, d)| d.as_array().ok())
            .and_then(|a| a.first())
            .and_then(|d| dict(doc, d))
    } else {
        Some(font)
    };
    let embedded = described
        .and_then(|d| d.get(b"FontDescriptor").ok())
        .and_then(|d| dict(doc, d))
        .is_some_and(|d| d.has(b"FontFile") || d.has(b"FontFile2") || d.has(b"FontFile3"));
    (name, kind, embedded)
}

/// A CSV cell: quoted when needed, and never read as a formula by a
/// spreadsheet (a leading `=`, `+`, `-`, `@` gets a `'`).
fn cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv(reports: &[Report]) -> String {
    let mut out = String::from(
        "name,status,pages,version,encrypted,page_width_mm,page_height_mm,fonts_not_embedded,problems,error\r\n",
    );
    for r in reports {
        let (w, h) = r
            .first_page_mm
            .map_or((String::new(), String::new()), |(w, h)| {
                (round1(w).to_string(), round1(h).to_string())
            });
        let missing: Vec<&str> = r
            .fonts
            .iter()
            .filter(|f| !f.2)
            .map(|f| f.0.as_str())
            .collect();
        let problems: Vec<String> = r
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.check, p.message))
            .collect();
        let row = [
            cell(&r.name),
            r.status().to_owned(),
            r.pages.map(|p| p.to_string()).unwrap_or_default(),
            cell(r.version.as_deref().unwrap_or("")),
            r.encrypted.map(|e| e.to_string()).unwrap_or_default(),
            w,
            h,
            cell(&missing.join("; ")),
            cell(&problems.join("; ")),
            cell(r.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

async fn run(ctx: TaskCtx, input: Box<RawValue>) -> Result<TaskOutput, TaskError> {
    let (entries, spec) = parse(&input).map_err(|e| TaskError::invalid_input(&e))?;
    let total = entries.len();
    let mut reports = Vec::with_capacity(total);
    for (i, entry) in entries.into_iter().enumerate() {
        if ctx.is_cancelled() {
            return Err(TaskError::task("cancelled"));
        }
        let label = format!("$.files[{i}]");
        let report = match entry {
            Entry::Fetch { url, headers, name } => {
                let shown = name.clone().unwrap_or_else(|| format!("file {}", i + 1));
                match url_request(&url, headers.as_ref(), name) {
                    Err(why) => Report::failed(shown, why),
                    Ok(request) => match ctx.fetch(&request, &label).await {
                        Ok(file) => check_input(&ctx, file, &spec).await?,
                        Err(e) => {
                            let mut report = Report::failed(shown, format!("cannot fetch it: {e}"));
                            report.http_status = e.status();
                            report
                        }
                    },
                }
            }
            Entry::Reference => match ctx.input_file(&label) {
                Some(file) => check_input(&ctx, file.clone(), &spec).await?,
                None => {
                    Report::failed(format!("file {}", i + 1), "the input is missing".to_owned())
                }
            },
        };
        ctx.progress(Progress {
            fraction: Some((i + 1) as f64 / total as f64),
            message: Some(format!("checked {} of {total}", i + 1)),
            data: serde_json::value::to_raw_value(
                &json!({"file": report.name, "status": report.status()}),
            )
            .ok(),
        })
        .await;
        reports.push(report);
    }
    let table = csv(&reports);
    let writer = ctx.clone();
    ctx.spawn_blocking(move || -> Result<(), TaskError> {
        let mut file = writer.create_file("pdf_check.csv", "text/csv; charset=utf-8")?;
        file.write_all(table.as_bytes())
            .map_err(|e| FileWriter::write_error(&e))?;
        file.finish()
    })
    .await??;
    let count = |status: &str| reports.iter().filter(|r| r.status() == status).count();
    TaskOutput::json(&json!({
        "summary": {"files": total, "ok": count("ok"), "problems": count("problems"), "errors": count("error")},
        "files": reports.iter().map(Report::json).collect::<Vec<_>>(),
    }))
}

async fn check_input(ctx: &TaskCtx, file: InputFile, spec: &Spec) -> Result<Report, TaskError> {
    let spec = spec.clone();
    ctx.spawn_blocking(move || check_file(&file.disk_path(), file.name().to_owned(), &spec))
        .await
}

impl TaskHandler for PdfCheck {
    fn name(&self) -> &'static str {
        "pdf_check"
    }

    fn description(&self) -> &'static str {
        "Checks PDFs (page size, page count, embedded fonts, encryption, version): a report per file and a CSV."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["files", "page_size"],
            "properties": {
                "files": {"type": "array", "minItems": 1, "maxItems": MAX_FILES, "items": {"type": "object",
                    "description": "{url, headers?, name?} (fetched by the task: a failure fails that entry), {\"$upload\": id}, or {\"$url\": …}"}},
                "page_size": {"oneOf": [
                    {"enum": ["A3", "A4", "A5", "letter", "legal"]},
                    {"type": "object", "required": ["width_mm", "height_mm"],
                     "properties": {"width_mm": {"type": "number"}, "height_mm": {"type": "number"}}}]},
                "tolerance_mm": {"type": "number", "minimum": 0, "maximum": 50, "default": 1},
                "min_pages": {"type": "integer", "minimum": 0},
                "max_pages": {"type": "integer", "minimum": 0},
                "max_version": {"type": "string", "examples": ["1.7"]},
                "require_embedded_fonts": {"type": "boolean", "default": true},
                "allow_encrypted": {"type": "boolean", "default": false}
            }
        })
    }

    fn validate(&self, input: &RawValue) -> Result<(), InvalidInput> {
        parse(input).map(|_| ())
    }

    fn run(
        &self,
        input: Box<RawValue>,
        ctx: TaskCtx,
    ) -> BoxFuture<'static, Result<TaskOutput, TaskError>> {
        Box::pin(run(ctx, input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(cell("plain.pdf"), "plain.pdf");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "'-1");
    }

    #[test]
    fn versions_compare() {
        assert!(parse_version("1.7") > parse_version("1.4"));
        assert!(parse_version("2.0") > parse_version("1.7"));
        assert_eq!(parse_version("x"), None);
    }
}
