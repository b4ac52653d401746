//! `pdf_check` on generated PDFs with known properties.

use lopdf::content::{Content, Operation};
use lopdf::encryption::{EncryptionState, EncryptionVersion, Permissions};
use lopdf::{Document, Object, Stream, dictionary};
use serde_json::{Value, json};

use super::{Origin, server, upload_ok};
use crate::support::{ALICE, DEADLINE, TestServer};

const A4: (f32, f32) = (595.276, 841.89);
const LETTER: (f32, f32) = (612.0, 792.0);

/// How a generated PDF's font is.
#[derive(Clone, Copy)]
enum Font {
    /// A TrueType font with its program (`FontFile2`).
    Embedded,
    /// Helvetica, not in the file.
    Missing,
    /// A Type0 font whose descendant has its program; plus, in a form
    /// XObject, an unembedded one.
    NestedMissing,
}

/// A PDF of `pages` pages of `size` points.
fn build(version: &str, pages: usize, size: (f32, f32), font: Font) -> Document {
    let mut doc = Document::with_version(version);
    let pages_id = doc.new_object_id();
    let font_id = match font {
        Font::Embedded | Font::NestedMissing => {
            let program = doc.add_object(Stream::new(
                dictionary! {},
                b"not really a font program".to_vec(),
            ));
            let descriptor = doc.add_object(dictionary! {
                "Type" => "FontDescriptor", "FontName" => "PaperSans", "FontFile2" => program,
                "Flags" => 32, "ItalicAngle" => 0, "Ascent" => 800, "Descent" => -200,
                "CapHeight" => 700, "StemV" => 80,
                "FontBBox" => vec![0.into(), 0.into(), 1000.into(), 1000.into()],
            });
            if matches!(font, Font::NestedMissing) {
                let cid = doc.add_object(dictionary! {
                    "Type" => "Font", "Subtype" => "CIDFontType2", "BaseFont" => "PaperSans",
                    "FontDescriptor" => descriptor,
                });
                doc.add_object(dictionary! {
                    "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "PaperSans",
                    "Encoding" => "Identity-H", "DescendantFonts" => vec![cid.into()],
                })
            } else {
                doc.add_object(dictionary! {
                    "Type" => "Font", "Subtype" => "TrueType", "BaseFont" => "PaperSans",
                    "FontDescriptor" => descriptor,
                })
            }
        }
        Font::Missing => doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
        }),
    };
    let mut resources = dictionary! { "Font" => dictionary! { "F1" => font_id } };
    if matches!(font, Font::NestedMissing) {
        let helvetica = doc.add_object(dictionary! {
            "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica-Oblique",
        });
        let form = doc.add_object(Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Form",
                "BBox" => vec![0.into(), 0.into(), 100.into(), 100.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "F9" => helvetica } },
            },
            b"BT /F9 10 Tf (logo) Tj ET".to_vec(),
        ));
        resources.set("XObject", dictionary! { "Logo" => form });
    }
    let resources_id = doc.add_object(resources);
    let mut kids = Vec::new();
    for n in 0..pages {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 12.into()]),
                Operation::new("Td", vec![72.into(), 720.into()]),
                Operation::new(
                    "Tj",
                    vec![Object::string_literal(format!("page {}", n + 1))],
                ),
                Operation::new("ET", vec![]),
            ],
        };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        kids.push(page.into());
    }
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => pages as i64,
            "Resources" => resources_id,
            // Inherited by every page.
            "MediaBox" => vec![0.into(), 0.into(), size.0.into(), size.1.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let id = Object::string_literal(b"0123456789abcdef".to_vec());
    doc.trailer.set("ID", vec![id.clone(), id]);
    doc
}

fn encrypted(user_password: &str) -> Vec<u8> {
    let mut doc = build("1.7", 1, A4, Font::Embedded);
    let state = EncryptionState::try_from(EncryptionVersion::V2 {
        document: &doc,
        owner_password: "owner",
        user_password,
        key_length: 128,
        permissions: Permissions::PRINTABLE,
    })
    .unwrap();
    doc.encrypt(&state).unwrap();
    save(doc)
}

fn save(mut doc: Document) -> Vec<u8> {
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// The PDFs the tests serve, by name.
pub fn fixture(name: &str) -> Option<Vec<u8>> {
    Some(match name {
        "good" => save(build("1.7", 3, A4, Font::Embedded)),
        "letter" => save(build("1.7", 2, LETTER, Font::Embedded)),
        "unembedded" => save(build("1.4", 1, A4, Font::Missing)),
        "nested" => save(build("1.6", 1, A4, Font::NestedMissing)),
        // Opens without a password (the usual "restrictions only" kind).
        "encrypted" => encrypted(""),
        // Needs a password to open.
        "locked" => encrypted("user"),
        "version2" => save(build("2.0", 1, A4, Font::Embedded)),
        "corrupt" => {
            let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
            bytes.extend(std::iter::repeat_n(b'#', 5000));
            bytes
        }
        "truncated" => {
            let good = save(build("1.7", 3, A4, Font::Embedded));
            good[..good.len() / 3].to_vec()
        }
        "notpdf" => b"<html><body>Sign in to see this paper</body></html>".to_vec(),
        _ => return None,
    })
}

/// The version in a fixture's header (lopdf may raise it when it saves).
fn version_of(name: &str) -> String {
    let bytes = fixture(name).unwrap();
    String::from_utf8_lossy(&bytes[5..8]).into_owned()
}

fn report<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no report for {name}: {result}"))
}

fn checks(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| p["check"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn pdf_check_reports_each_file_and_one_bad_entry_fails_only_itself() {
    let origin = Origin::start().await;
    let server = server(|_| {}).await;
    let uploaded = upload_ok(&server, ALICE, "uploaded.pdf", fixture("good").unwrap()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = |name: &str| origin.url(&format!("/pdf/{name}.pdf"));
    let input = json!({
        "page_size": "A4", "tolerance_mm": 2, "max_version": "1.7",
        "files": [
            {"url": url("good"), "name": "good.pdf"},
            {"url": url("letter"), "name": "letter.pdf"},
            {"url": url("unembedded"), "name": "unembedded.pdf"},
            {"url": url("nested"), "name": "nested.pdf"},
            {"url": url("encrypted"), "name": "encrypted.pdf"},
            {"url": url("locked"), "name": "locked.pdf"},
            {"url": url("version2"), "name": "version2.pdf"},
            {"url": url("corrupt"), "name": "corrupt.pdf"},
            {"url": url("truncated"), "name": "truncated.pdf"},
            {"url": url("notpdf"), "name": "notpdf.pdf"},
            {"url": origin.url("/auth"), "headers": {"Authorization": "Bearer wrong"}, "name": "private.pdf"},
            {"url": format!("http://127.0.0.1:{dead_port}/x.pdf"), "name": "unreachable.pdf"},
            {"$upload": uploaded},
        ]
    });
    let mut ws = server.ws(ALICE).await;
    let id = ws.submit_ok("pdf_check", input).await;
    let events = tokio::time::timeout(DEADLINE * 3, ws.events_until_end(&id))
        .await
        .unwrap();
    let progress: Vec<&Value> = events.iter().filter(|e| e["type"] == "progress").collect();
    assert_eq!(progress.len(), 13, "one progress per file");
    assert_eq!(progress[12]["message"], "checked 13 of 13");
    assert_eq!(progress[0]["data"]["file"], "good.pdf");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    let result = &done["result"];

    let good = report(result, "good.pdf");
    assert_eq!(good["status"], "ok", "{good}");
    assert_eq!(good["pages"], 3);
    assert_eq!(good["version"], version_of("good"));
    assert_eq!(good["encrypted"], false);
    assert_eq!(
        good["page_size_mm"],
        json!({"width": 210.0, "height": 297.0})
    );
    assert_eq!(
        good["fonts"],
        json!([{"name": "PaperSans", "type": "TrueType", "embedded": true}])
    );

    let letter = report(result, "letter.pdf");
    assert_eq!(checks(letter), ["page_size"], "{letter}");
    let message = letter["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("2 of 2 pages") && message.contains("215.9 × 279.4"),
        "{message}"
    );

    let unembedded = report(result, "unembedded.pdf");
    assert_eq!(checks(unembedded), ["fonts"]);
    assert!(
        unembedded["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Helvetica")
    );
    assert_eq!(unembedded["version"], version_of("unembedded"));

    let nested = report(result, "nested.pdf");
    assert_eq!(checks(nested), ["fonts"], "{nested}");
    let fonts = nested["fonts"].as_array().unwrap();
    assert!(
        fonts.contains(&json!({"name": "PaperSans", "type": "Type0", "embedded": true})),
        "{nested}"
    );
    assert!(
        fonts.contains(&json!({"name": "Helvetica-Oblique", "type": "Type1", "embedded": false}))
    );

    let encrypted = report(result, "encrypted.pdf");
    assert_eq!(encrypted["encrypted"], true, "{encrypted}");
    assert_eq!(checks(encrypted), ["encryption"], "{encrypted}");
    assert_eq!(encrypted["pages"], 1);
    let locked = report(result, "locked.pdf");
    assert_eq!(locked["encrypted"], true, "{locked}");
    assert_eq!(checks(locked), ["encryption"], "{locked}");
    assert!(
        locked["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("password")
    );
    assert_eq!(locked["pages"], Value::Null);

    assert_eq!(checks(report(result, "version2.pdf")), ["version"]);

    for (name, reason) in [
        ("corrupt.pdf", "damaged"),
        ("truncated.pdf", "damaged"),
        ("notpdf.pdf", "not a PDF"),
        ("private.pdf", "401"),
        ("unreachable.pdf", "connect"),
    ] {
        let entry = report(result, name);
        assert_eq!(entry["status"], "error", "{entry}");
        assert!(
            entry["error"].as_str().unwrap().contains(reason),
            "{name}: {entry}"
        );
    }
    assert_eq!(report(result, "private.pdf")["http_status"], 401);
    assert_eq!(report(result, "uploaded.pdf")["status"], "ok");
    assert_eq!(
        result["summary"],
        json!({"files": 13, "ok": 2, "problems": 6, "errors": 5})
    );

    // The CSV: a header and a row per file.
    let csv_file = &done["files"][0];
    assert_eq!(csv_file["name"], "pdf_check.csv");
    let csv = TestServer::http()
        .get(server.url(csv_file["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 14, "{csv}");
    assert!(lines[0].starts_with("name,status,pages,version"));
    let row = format!("good.pdf,ok,3,{},false,210,297,", version_of("good"));
    assert!(lines[1].starts_with(&row), "{}", lines[1]);
    server.stop().await;
}

#[tokio::test]
async fn pdf_check_refuses_bad_input_before_queueing() {
    let server = server(|_| {}).await;
    let mut ws = server.ws(ALICE).await;
    for (input, path) in [
        (json!({"files": [], "page_size": "A4"}), "$.files"),
        (
            json!({"files": [{"url": "https://x.example/a.pdf"}], "page_size": "B7"}),
            "$.page_size",
        ),
        (
            json!({"files": [{"url": "gopher://x/"}], "page_size": "A4"}),
            "$.files[0]",
        ),
        (
            json!({"files": [{"url": "https://x/", "method": "POST"}], "page_size": "A4"}),
            "$.files[0]",
        ),
        (
            json!({"files": [{"url": "https://x/"}], "page_size": "A4", "tolerance_mm": -1}),
            "$.tolerance_mm",
        ),
    ] {
        let reply = ws.submit("pdf_check", input, json!({})).await;
        assert_eq!(reply["error"]["code"], "invalid_input", "{reply}");
        assert_eq!(reply["error"]["details"]["path"], path, "{reply}");
    }
    server.stop().await;
}
