//! A running task's staging area: its own directory, created on the first
//! file, removed with everything in it unless the task completes and its
//! files are published.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tempfile::TempDir;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::Quota;

/// Longest file name kept, in bytes (cut at a character boundary).
pub const MAX_NAME_BYTES: usize = 200;

/// Every file counts at least this much against `max_temp_bytes`, so the
/// number of files (and of their tombstones) is bounded too.
pub(super) const MIN_FILE_CHARGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("temporary storage is full ({max} bytes)")]
    StorageFull { max: u64 },
    #[error("cannot write the file: {0}")]
    Io(#[from] io::Error),
}

/// A finished, closed file waiting for its task to complete.
#[derive(Debug)]
pub(super) struct StagedEntry {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) content_type: String,
    pub(super) size: u64,
    pub(super) sha256: [u8; 32],
    /// Bytes reserved in the quota for it.
    pub(super) charged: u64,
}

/// One task's staged files. Dropping it removes the directory and gives the
/// quota back for every file not published.
#[derive(Debug)]
pub struct Stage {
    pub(super) parent: PathBuf,
    pub(super) quota: Arc<Quota>,
    pub(super) dir: Option<TempDir>,
    pub(super) entries: Vec<StagedEntry>,
    next_file: u32,
}

impl Stage {
    pub(super) fn new(parent: PathBuf, quota: Arc<Quota>) -> Stage {
        Stage {
            parent,
            quota,
            dir: None,
            entries: Vec::new(),
            next_file: 0,
        }
    }

    /// The last finished file's name, size and SHA-256 (lowercase hex).
    pub fn last_file(&self) -> Option<(String, u64, String)> {
        self.entries
            .last()
            .map(|e| (e.name.clone(), e.size, crate::auth::hex(&e.sha256)))
    }

    /// The names of the finished files, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Whether any file was finished here.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Opens a new file; blocking IO. The name is cleaned (see [`clean_name`]).
    pub fn create_file(
        &mut self,
        name: &str,
        content_type: &str,
    ) -> Result<StagedFile, StageError> {
        self.quota.reserve(MIN_FILE_CHARGE)?;
        let opened = self.open_next();
        let (path, file) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.quota.release(MIN_FILE_CHARGE);
                return Err(e.into());
            }
        };
        Ok(StagedFile {
            path,
            file,
            name: clean_name(name),
            content_type: clean_content_type(content_type),
            size: 0,
            charged: MIN_FILE_CHARGE,
            hasher: Sha256::new(),
            quota: Arc::clone(&self.quota),
            done: false,
        })
    }

    /// The path of the next file of this stage (its directory made on
    /// first use); blocking IO.
    pub(super) fn next_path(&mut self) -> io::Result<PathBuf> {
        let dir = match &self.dir {
            Some(dir) => dir.path().to_owned(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("task-")
                    .tempdir_in(&self.parent)?;
                let path = dir.path().to_owned();
                self.dir = Some(dir);
                path
            }
        };
        self.next_file += 1;
        Ok(dir.join(format!("f{}", self.next_file)))
    }

    fn open_next(&mut self) -> io::Result<(PathBuf, File)> {
        let path = self.next_path()?;
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((path, file))
    }

    /// Adds a finished file.
    pub fn add(&mut self, file: StagedFile) -> Result<(), StageError> {
        let entry = file.finish()?;
        self.entries.push(entry);
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let charged: u64 = self.entries.iter().map(|e| e.charged).sum();
        self.quota.release(charged);
        // TempDir's own drop removes the directory and what is left in it.
    }
}

/// A file being written by a task. Counts its bytes against the quota as it
/// goes and hashes them; not visible to anyone until its task completes.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    file: File,
    name: String,
    content_type: String,
    size: u64,
    charged: u64,
    hasher: Sha256,
    quota: Arc<Quota>,
    done: bool,
}

impl StagedFile {
    /// The cleaned name it will be published under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn finish(mut self) -> Result<StagedEntry, StageError> {
        self.file.flush()?;
        self.done = true;
        Ok(StagedEntry {
            path: self.path.clone(),
            name: std::mem::take(&mut self.name),
            content_type: std::mem::take(&mut self.content_type),
            size: self.size,
            sha256: self.hasher.clone().finalize().into(),
            charged: self.charged,
        })
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let after = self.size + buf.len() as u64;
        if after > self.charged {
            let more = after - self.charged;
            self.quota.reserve(more).map_err(io::Error::other)?;
            self.charged += more;
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned: its bytes go back to the quota; the directory's
            // removal deletes the file.
            self.quota.release(self.charged);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether an IO error from [`StagedFile`]'s `write` means the quota is full.
pub fn is_storage_full(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<StageError>())
}

/// A file name safe to serve and to show: no `/`, `\` or control
/// characters, no Unicode format characters (category Cf: bidi controls such
/// as U+202E, zero-width spaces and joiners, the BOM...); line and paragraph
/// separators (U+2028, U+2029) become spaces; no leading dots or spaces, at
/// most [`MAX_NAME_BYTES`] bytes of UTF-8; never empty.
pub fn clean_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter_map(|c| match c.general_category() {
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => Some(' '),
            GeneralCategory::Format | GeneralCategory::Control => None,
            _ if matches!(c, '/' | '\\') => None,
            _ => Some(c),
        })
        .collect();
    let trimmed = kept.trim_start_matches(['.', ' ']).trim_end_matches(' ');
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let cut = trimmed[..end].trim_end_matches(' ');
    if cut.is_empty() {
        "file".to_owned()
    } else {
        cut.to_owned()
    }
}

/// A content type safe for a header; anything odd becomes
/// `application/octet-stream`.
pub(super) fn clean_content_type(content_type: &str) -> String {
    let ok = !content_type.is_empty()
        && content_type.len() <= 200
        && content_type.contains('/')
        && content_type
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        content_type.to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned() {
        let cases = [
            ("report.odt", "report.odt"),
            ("../../etc/passwd", "etcpasswd"),
            ("a\\b/c", "abc"),
            ("..hidden", "hidden"),
            ("tab\there\u{7}", "tabhere"),
            ("", "file"),
            ("...", "file"),
            ("Zürich – 𝜇.odt", "Zürich – 𝜇.odt"),
            // Bidi overrides: shown as "exe.png" if kept.
            ("\u{202e}gnp.exe", "gnp.exe"),
            ("a\u{2066}b\u{2069}\u{200f}.txt", "ab.txt"),
            // Zero-width characters, BOM, word joiner, soft hyphen.
            (
                "in\u{200b}vis\u{200d}ible\u{feff}\u{2060}\u{ad}.txt",
                "invisible.txt",
            ),
            // Tag characters (plane 14) and the Arabic number sign.
            ("x\u{e0041}\u{600}.txt", "x.txt"),
            // Line and paragraph separators become spaces, then are trimmed.
            ("a\u{2028}b\u{2029}", "a b"),
            ("\u{2028}\u{202e}", "file"),
            ("\u{85}next", "next"),
        ];
        for (raw, clean) in cases {
            assert_eq!(clean_name(raw), clean, "{raw:?}");
        }
        let long = "é".repeat(150);
        let cleaned = clean_name(&long);
        assert!(cleaned.len() <= MAX_NAME_BYTES);
        assert!(cleaned.chars().all(|c| c == 'é'));
    }

    #[test]
    fn content_types() {
        assert_eq!(clean_content_type("text/plain"), "text/plain");
        assert_eq!(clean_content_type("x\r\ny"), "application/octet-stream");
        assert_eq!(clean_content_type(""), "application/octet-stream");
    }
}
