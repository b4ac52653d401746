//! Files a managed worker wrote itself: a fresh output directory per
//! attempt ([`OutputDir`], inside `staging/`, so publishing stays a rename
//! within one filesystem), and [`Artifacts::adopt`], which turns the files
//! a `complete` lists into a [`Stage`] ready to publish.
//!
//! Each listed path is walked from the output directory one component at
//! a time with `O_NOFOLLOW` (no symlink anywhere on the way, no `..`, no
//! absolute path), must end at a regular file, is counted in
//! `max_temp_bytes` and hashed from the descriptor that was checked, then
//! moved into the attempt's stage under a name of ours, so a later change
//! of the worker's tree cannot swap what is published.
//!
//! Making a directory writes metadata (slow on a busy disk: milliseconds),
//! so a worker's directories are reused: one per slot, made once; after an
//! attempt, a directory that is empty again ([`OutputDir::is_empty`], a
//! cached read) goes back to the pool, any other is removed off the async
//! threads.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

use super::stage::{MIN_FILE_CHARGE, StagedEntry};
use super::{Artifacts, Stage, StageError, clean_name};

/// One attempt's output directory; removed (with what is left in it) on
/// drop, which is blocking IO unless [`OutputDir::remove_if_empty`] did it.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    removed: bool,
}

impl OutputDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether nothing is left in it (a directory read, cheap when cached).
    pub fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.path).is_ok_and(|mut entries| entries.next().is_none())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A file a worker listed in `complete.files`.
#[derive(Debug, Clone)]
pub struct ListedFile {
    /// The name it is published under (cleaned like every file name).
    pub name: String,
    /// Relative to the output directory.
    pub path: String,
    pub content_type: Option<String>,
}

/// Why the listed files cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// `files[index]` is not a regular file inside the output directory.
    #[error("files[{index}]: {reason}")]
    Invalid { index: usize, reason: &'static str },
    /// `files[index]` is larger than `max_file_bytes`.
    #[error("files[{index}]: larger than {max} bytes")]
    TooLarge { index: usize, max: u64 },
    #[error("temporary storage is full ({max} bytes)")]
    StorageFull { max: u64 },
    #[error("cannot read an output file: {0}")]
    Io(#[from] io::Error),
}

impl Artifacts {
    /// A fresh, empty output directory; blocking IO.
    pub fn output_dir(&self) -> io::Result<OutputDir> {
        let name = format!(
            "out-{}",
            crate::auth::hex(&crate::auth::random_bytes::<12>().map_err(io::Error::other)?)
        );
        let path = self.inner.staging.join(name);
        std::fs::create_dir(&path)?;
        Ok(OutputDir {
            path,
            removed: false,
        })
    }

    /// Checks, counts and hashes the listed files of `dir`; blocking IO.
    /// On error nothing is kept (the directory goes with `dir`).
    pub fn adopt(
        &self,
        dir: &OutputDir,
        files: &[ListedFile],
        max_file_bytes: u64,
    ) -> Result<Stage, AdoptError> {
        let mut stage = Stage::new(
            self.inner.staging.clone(),
            std::sync::Arc::clone(&self.inner.quota),
        );
        let root: OwnedFd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        for (index, listed) in files.iter().enumerate() {
            let invalid = |reason| AdoptError::Invalid { index, reason };
            let (parent, leaf) = walk(&root, &listed.path).map_err(invalid)?;
            let fd = rustix::fs::openat(
                &parent,
                leaf.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| {
                if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::MLINK {
                    invalid("is a symlink")
                } else if e == rustix::io::Errno::NOENT {
                    invalid("no such file in the output directory")
                } else {
                    AdoptError::Io(e.into())
                }
            })?;
            let stat = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                != rustix::fs::FileType::RegularFile
            {
                return Err(invalid("not a regular file"));
            }
            let size = u64::try_from(stat.st_size).unwrap_or(0);
            if size > max_file_bytes {
                return Err(AdoptError::TooLarge {
                    index,
                    max: max_file_bytes,
                });
            }
            let charge = size.max(MIN_FILE_CHARGE);
            self.inner.quota.reserve(charge).map_err(|e| match e {
                StageError::StorageFull { max } => AdoptError::StorageFull { max },
                StageError::Io(e) => AdoptError::Io(e),
            })?;
            // Moved into the stage under our own name.
            let ours = stage.next_path()?;
            let moved =
                rustix::fs::renameat(&parent, leaf.as_str(), rustix::fs::CWD, ours.as_path());
            let mut file = std::fs::File::from(fd);
            let hashed = moved
                .map_err(io::Error::from)
                .and_then(|()| hash(&mut file));
            let sha256 = match hashed {
                Ok(sha256) => sha256,
                Err(e) => {
                    self.inner.quota.release(charge);
                    return Err(AdoptError::Io(e));
                }
            };
            // From here the stage owns the charge (released on its drop).
            stage.entries.push(StagedEntry {
                path: ours,
                name: clean_name(&listed.name),
                content_type: super::stage::clean_content_type(
                    listed
                        .content_type
                        .as_deref()
                        .unwrap_or("application/octet-stream"),
                ),
                size,
                sha256,
                charged: charge,
            });
        }
        Ok(stage)
    }
}

/// Opens every directory on `path` but the last component, refusing
/// symlinks, `..` and absolute paths; returns the parent and the leaf.
fn walk(root: &OwnedFd, path: &str) -> Result<(OwnedFd, String), &'static str> {
    let path = Path::new(path);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or("not UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` is not allowed"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to output_dir");
            }
        }
    }
    let Some(leaf) = parts.pop() else {
        return Err("empty path");
    };
    let mut dir = rustix::io::dup(root).map_err(|_| "cannot open the output directory")?;
    for part in parts {
        dir = rustix::fs::openat(
            &dir,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| "a directory on the path is missing or a symlink")?;
    }
    Ok((dir, leaf.to_owned()))
}

fn hash(file: &mut std::fs::File) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilesConfig;
    use std::time::Duration;

    fn area(
        max: u64,
    ) -> (
        tempfile::TempDir,
        Artifacts,
        tokio_util::sync::CancellationToken,
    ) {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = FilesConfig {
            file_ttl: Duration::from_secs(60),
            temp_dir: Some(temp.path().to_owned()),
            public_url: None,
            max_temp_bytes: max,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let artifacts = Artifacts::start(
            &config,
            &tracker,
            stop.clone(),
            crate::telemetry::Metrics::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (temp, artifacts, stop)
    }

    fn listed(path: &str) -> ListedFile {
        ListedFile {
            name: "out.txt".to_owned(),
            path: path.to_owned(),
            content_type: None,
        }
    }

    #[tokio::test]
    async fn adopts_regular_files_and_publishes_them() {
        let (_temp, artifacts, stop) = area(1 << 20);
        let dir = artifacts.output_dir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("sub/a.txt"), b"hello").unwrap_or_else(|e| panic!("{e}"));
        let stage = artifacts
            .adopt(&dir, &[listed("./sub/a.txt")], 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(artifacts.used_bytes(), MIN_FILE_CHARGE);
        let files = artifacts
            .publish(stage)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files[0].size, 5);
        assert_eq!(files[0].name, "out.txt");
        assert_eq!(files[0].content_type, "application/octet-stream");
        assert_eq!(files[0].sha256, crate::auth::hex(&Sha256::digest(b"hello")));
        let on_disk = artifacts.served_dir().join(&files[0].token);
        assert_eq!(std::fs::read(on_disk).unwrap_or_default(), b"hello");
        stop.cancel();
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_regular_file_inside() {
        let (temp, artifacts, stop) = area(1 << 20);
        let outside = temp.path().join("secret");
        std::fs::write(&outside, b"no").unwrap_or_else(|e| panic!("{e}"));
        let cases: [(&str, &str); 6] = [
            ("link", "is a symlink"),
            ("linkdir/secret", "symlink"),
            ("../secret", "`..`"),
            ("/etc/passwd", "relative"),
            ("missing", "no such file"),
            ("adir", "not a regular file"),
        ];
        for (path, reason) in cases {
            let dir = artifacts.output_dir().unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(&outside, dir.path().join("link"))
                .unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(temp.path(), dir.path().join("linkdir"))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::create_dir(dir.path().join("adir")).unwrap_or_else(|e| panic!("{e}"));
            let error = artifacts
                .adopt(&dir, &[listed(path)], 1 << 20)
                .err()
                .map(|e| e.to_string());
            assert!(
                error.as_deref().unwrap_or("").contains(reason),
                "{path}: {error:?}"
            );
        }
        assert_eq!(artifacts.used_bytes(), 0);
        stop.cancel();
    }

    #[tokio::test]
    async fn quota_and_size_limits() {
        let (_temp, artifacts, stop) = area(3 * MIN_FILE_CHARGE);
        let dir = artifacts.output_dir().unwrap_or_else(|e| panic!("{e}"));
        for name in ["a", "b", "c", "d"] {
            std::fs::write(dir.path().join(name), b"x").unwrap_or_else(|e| panic!("{e}"));
        }
        let all: Vec<ListedFile> = ["a", "b", "c", "d"].iter().map(|p| listed(p)).collect();
        let error = artifacts.adopt(&dir, &all, 1 << 20).err();
        assert!(
            matches!(error, Some(AdoptError::StorageFull { .. })),
            "{error:?}"
        );
        assert_eq!(
            artifacts.used_bytes(),
            0,
            "a refused adoption gives its charge back"
        );
        let dir = artifacts.output_dir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("big"), vec![0u8; 100]).unwrap_or_else(|e| panic!("{e}"));
        let error = artifacts.adopt(&dir, &[listed("big")], 10).err();
        assert!(
            matches!(error, Some(AdoptError::TooLarge { index: 0, max: 10 })),
            "{error:?}"
        );
        stop.cancel();
    }
}
