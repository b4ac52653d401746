//! The safe unpack: zip bombs, path traversal, symlinks, limits.

use std::io::{Cursor, Write};

use serde_json::json;
use taskwire::inputs::archive::{ArchiveError, ArchiveLimits, unpack};
use zip::write::SimpleFileOptions;

use super::{nothing_left, run, server, upload_ok};
use crate::support::ALICE;

/// A zip of `(name, bytes)` entries, deflated.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn with_symlink() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    zip.start_file("ok.txt", options).unwrap();
    zip.write_all(b"fine").unwrap();
    zip.add_symlink("passwd", "/etc/passwd", options).unwrap();
    zip.finish().unwrap().into_inner()
}

fn unpack_bytes(bytes: &[u8], limits: &ArchiveLimits) -> Result<Vec<String>, ArchiveError> {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("in.zip");
    std::fs::write(&archive, bytes).unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let mut charged = 0u64;
    let result = unpack(&archive, &dest, limits, &mut |n| {
        charged += n;
        true
    });
    // Nothing is ever written outside the destination.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "in.zip" && n != "out")
        .collect();
    assert!(outside.is_empty(), "written outside: {outside:?}");
    result.map(|files| files.into_iter().map(|f| f.name).collect())
}

#[test]
fn a_well_formed_archive_unpacks() {
    let bytes = zip_of(&[("a.xml", b"<a/>"), ("logs/2026/b.csv", b"x,y\n1,2\n")]);
    let names = unpack_bytes(&bytes, &ArchiveLimits::default()).unwrap();
    assert_eq!(names, ["a.xml", "logs/2026/b.csv"]);
}

#[test]
fn dangerous_archives_are_refused_with_a_clear_error() {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let bomb = zip_of(&[("zeros.bin", &zeros)]);
    assert!(bomb.len() < 100_000, "a real bomb: {} bytes", bomb.len());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bomb, "inflates more than 100 times"),
        (zip_of(&[("../evil.txt", b"x")]), "`..`"),
        (zip_of(&[("a/../../evil.txt", b"x")]), "`..`"),
        (zip_of(&[("/etc/cron.d/x", b"x")]), "absolute"),
        (zip_of(&[("C:/x.txt", b"x")]), "drive letter"),
        (zip_of(&[("a\\..\\b", b"x")]), "backslash"),
        (with_symlink(), "symbolic link"),
        (
            zip_of(&[("a/./same.txt", b"1"), ("a/same.txt", b"2")]),
            "appears twice",
        ),
        (b"PK\x03\x04 not really".to_vec(), "not a zip"),
    ];
    for (bytes, expected) in cases {
        let error = unpack_bytes(&bytes, &ArchiveLimits::default()).expect_err(expected);
        assert!(error.to_string().contains(expected), "{expected}: {error}");
    }
}

#[test]
fn entry_count_and_total_size_are_bounded() {
    let entries: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i}"), vec![b'x'; 100]))
        .collect();
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let bytes = zip_of(&refs);
    let few = ArchiveLimits {
        max_entries: 10,
        ..ArchiveLimits::default()
    };
    assert!(matches!(
        unpack_bytes(&bytes, &few),
        Err(ArchiveError::TooManyEntries { max: 10 })
    ));
    let small = ArchiveLimits {
        max_total_bytes: 1000,
        ..ArchiveLimits::default()
    };
    assert!(matches!(
        unpack_bytes(&bytes, &small),
        Err(ArchiveError::TooLarge { max: 1000 })
    ));
    assert_eq!(
        unpack_bytes(&bytes, &ArchiveLimits::default())
            .unwrap()
            .len(),
        20
    );
}

#[test]
fn a_refused_charge_stops_the_unpack() {
    let bytes = zip_of(&[("a", &[b'x'; 10_000])]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("in.zip");
    std::fs::write(&archive, &bytes).unwrap();
    let result = unpack(&archive, dir.path(), &ArchiveLimits::default(), &mut |_| {
        false
    });
    assert!(matches!(result, Err(ArchiveError::StorageFull)));
}

#[tokio::test]
async fn a_task_given_a_bad_archive_fails_with_invalid_input_and_leaves_nothing() {
    let server = server(|_| {}).await;
    let zeros = vec![0u8; 8 * 1024 * 1024];
    for (bytes, reason) in [
        (zip_of(&[("zeros.bin", &zeros)]), "inflates"),
        (zip_of(&[("../../x.xml", b"<x/>")]), "`..`"),
    ] {
        let id = upload_ok(&server, ALICE, "device.zip", bytes).await;
        let events = run(
            &server,
            "sync",
            json!({"device": "7", "package": {"$upload": id}}),
        )
        .await;
        let end = events.last().unwrap();
        assert_eq!(end["type"], "failed", "{end}");
        assert_eq!(end["error"]["code"], "invalid_input");
        assert_eq!(end["error"]["details"]["path"], "$.package");
        assert!(
            end["error"]["details"]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{end}"
        );
        let client = crate::support::TestServer::http();
        client
            .delete(server.url(&format!("/v1/uploads/{id}")))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
    }
    nothing_left(&server).await;
    server.stop().await;
}
