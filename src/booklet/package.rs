//! The ODT package (§5): a ZIP whose first entry is `mimetype`, stored, with no extra field and
//! no data descriptor, then the XML parts, deflated at level 6.
//!
//! Written into an in-memory `Cursor`: the `zip` crate only adds data descriptors when it
//! cannot seek. Every entry has the same fixed timestamp (1980-01-01), so the same input gives
//! the same bytes.

use std::io::{Cursor, Write};

use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::booklet::styles::MEDIA_TYPE;

/// Deflate level. Against level 1, level 6 makes the file 41 % smaller (3,000 contributions:
/// 883 KB to 517 KB) for 25–35 ms more CPU at 3,000 contributions and 130 ms at 10,000
/// (BENCHMARKS.md); levels above 6 save 1–4 % more at up to twice the time.
const DEFLATE_LEVEL: i64 = 6;

/// One part of the package, as a list of byte slices stored one after the other.
pub(crate) struct Part<'p> {
    pub(crate) path: &'static str,
    pub(crate) pieces: &'p [&'p [u8]],
}

/// Builds the package from `parts`, after the `mimetype` entry.
pub(crate) fn zip(parts: &[Part<'_>], capacity: usize) -> Result<Vec<u8>, ZipError> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(capacity)));
    let stored = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::DEFAULT);
    zip.start_file("mimetype", stored)?;
    zip.write_all(MEDIA_TYPE.as_bytes())?;
    let deflated = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        .last_modified_time(DateTime::DEFAULT);
    for part in parts {
        zip.start_file(part.path, deflated)?;
        for piece in part.pieces {
            zip.write_all(piece)?;
        }
    }
    Ok(zip.finish()?.into_inner())
}
