//! A safe unpack of zip archives a task was given (an upload, a fetched
//! URL): into a directory of its own, refusing what could write outside it
//! or fill the disk.
//!
//! Refused, each with its own error: absolute names, `..`, backslashes,
//! drive letters, NUL and control characters in names; symlinks; encrypted
//! entries; more than `max_entries` entries; more than `max_total_bytes`
//! unpacked (the bytes actually inflated are counted, not what the headers
//! say); an entry that inflates more than `max_ratio` times its compressed
//! size (past the first MiB: small files compress well legitimately); two
//! entries with one name. Every byte written is also charged to the
//! caller (the temporary area's quota) as it is written.
//!
//! Blocking IO: run it off the async threads.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bounds of one unpack.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveLimits {
    pub max_entries: usize,
    pub max_total_bytes: u64,
    /// Largest inflated/compressed ratio of an entry past its first MiB.
    pub max_ratio: u64,
}

impl Default for ArchiveLimits {
    fn default() -> ArchiveLimits {
        ArchiveLimits {
            max_entries: 10_000,
            max_total_bytes: 1024 * 1024 * 1024,
            max_ratio: 100,
        }
    }
}

/// Entries smaller than this are not held to `max_ratio`.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// Why an archive was not unpacked. Names are the archive's, cut short.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a zip archive: {0}")]
    NotAZip(String),
    #[error("the archive has more than {max} entries")]
    TooManyEntries { max: usize },
    #[error("entry {name:?}: {why}")]
    UnsafeName { name: String, why: &'static str },
    #[error("entry {name:?} is a symbolic link, which is not unpacked")]
    Symlink { name: String },
    #[error("entry {name:?} is encrypted")]
    Encrypted { name: String },
    #[error("entry {name:?} appears twice")]
    Duplicate { name: String },
    #[error("the archive unpacks to more than {max} bytes")]
    TooLarge { max: u64 },
    #[error("entry {name:?} inflates more than {max} times its compressed size")]
    RatioTooHigh { name: String, max: u64 },
    #[error("entry {name:?} is larger than its header says")]
    SizeMismatch { name: String },
    #[error("entry {name:?} is damaged: {why}")]
    Corrupt { name: String, why: String },
    #[error("the temporary area is full")]
    StorageFull,
    #[error("cannot write an entry: {0}")]
    Io(#[from] io::Error),
}

/// One unpacked file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// Its name in the archive (`/`-separated, checked).
    pub name: String,
    /// Where it is now.
    pub path: PathBuf,
    pub size: u64,
}

/// Unpacks the zip at `archive` into `dest` (an empty directory). `charge`
/// is called with every count of bytes before they are written and may
/// refuse them (false: [`ArchiveError::StorageFull`]).
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &ArchiveLimits,
    charge: &mut dyn FnMut(u64) -> bool,
) -> Result<Vec<Unpacked>, ArchiveError> {
    let file = std::fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| ArchiveError::NotAZip(e.to_string()))?;
    if zip.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            max: limits.max_entries,
        });
    }
    let mut total = 0u64;
    let mut out = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| ArchiveError::Corrupt {
            name: format!("#{index}"),
            why: e.to_string(),
        })?;
        let raw_name = entry
            .name()
            .map_err(|e| ArchiveError::Corrupt {
                name: format!("#{index}"),
                why: e.to_string(),
            })?
            .into_owned();
        let shown: String = raw_name.chars().take(100).collect();
        if entry.is_symlink() {
            return Err(ArchiveError::Symlink { name: shown });
        }
        if entry.encrypted() {
            return Err(ArchiveError::Encrypted { name: shown });
        }
        let relative = check_name(&raw_name).map_err(|why| ArchiveError::UnsafeName {
            name: shown.clone(),
            why,
        })?;
        let target = dest.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        let declared = entry.size();
        let compressed = entry.compressed_size().max(1);
        if declared > RATIO_FLOOR && declared / compressed > limits.max_ratio {
            return Err(ArchiveError::RatioTooHigh {
                name: shown,
                max: limits.max_ratio,
            });
        }
        if total.saturating_add(declared) > limits.max_total_bytes {
            return Err(ArchiveError::TooLarge {
                max: limits.max_total_bytes,
            });
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut written = match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ArchiveError::Duplicate { name: shown });
            }
            Err(e) => return Err(e.into()),
        };
        let mut size = 0u64;
        loop {
            let n = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ArchiveError::Corrupt {
                        name: shown,
                        why: e.to_string(),
                    });
                }
            };
            size += n as u64;
            total += n as u64;
            // Headers can lie: what is inflated is what counts.
            if size > declared {
                return Err(ArchiveError::SizeMismatch { name: shown });
            }
            if total > limits.max_total_bytes {
                return Err(ArchiveError::TooLarge {
                    max: limits.max_total_bytes,
                });
            }
            if size > RATIO_FLOOR && size / compressed > limits.max_ratio {
                return Err(ArchiveError::RatioTooHigh {
                    name: shown,
                    max: limits.max_ratio,
                });
            }
            if !charge(n as u64) {
                return Err(ArchiveError::StorageFull);
            }
            written.write_all(&buffer[..n])?;
        }
        out.push(Unpacked {
            name: relative.to_string_lossy().replace('\\', "/"),
            path: target,
            size,
        });
    }
    Ok(out)
}

/// A name safe to join under the destination, or why not.
fn check_name(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.chars().any(|c| c == '\0' || c.is_control()) {
        return Err("the name has control characters");
    }
    if name.contains('\\') {
        return Err("the name has a backslash");
    }
    if name.starts_with('/') {
        return Err("the name is an absolute path");
    }
    let first = name.split('/').next().unwrap_or("");
    if first.len() >= 2 && first.as_bytes()[1] == b':' {
        return Err("the name starts with a drive letter");
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the name has a `..` component"),
            part => path.push(part),
        }
    }
    if path.as_os_str().is_empty() {
        return Err("the name is empty");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, ok) in [
            ("a.xml", Some("a.xml")),
            ("logs/2026/x.csv", Some("logs/2026/x.csv")),
            ("./a//b", Some("a/b")),
            ("dir/", Some("dir")),
            ("../evil", None),
            ("a/../../evil", None),
            ("a/..", None),
            ("/etc/passwd", None),
            ("C:/x", None),
            ("c:x", None),
            ("a\\..\\b", None),
            ("a\0b", None),
            ("", None),
            ("./", None),
        ] {
            assert_eq!(
                check_name(name)
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned()),
                ok.map(str::to_owned),
                "{name:?}"
            );
        }
    }
}
