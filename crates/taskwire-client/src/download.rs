//! Downloads of file outputs: streamed to disk, `sha256` checked.
//!
//! The bytes go to a hidden temporary file in the target directory while
//! they are hashed; only a whole file whose size and digest match the
//! File object is renamed to its name. Anything else removes the partial
//! file. The server's file name never becomes a path of its own: a name
//! with a separator or a leading dot is refused.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use taskwire_protocol::incoming::File;
use tokio::io::AsyncWriteExt;

use crate::rest::{error_of, transport};
use crate::{Client, Error, Result};

impl Client {
    /// Downloads `file` into `dir` under its own name (replacing a file of
    /// that name) and returns the path. The link needs no key (its token
    /// is the capability), so none is sent.
    pub async fn download(&self, file: &File, dir: &Path) -> Result<PathBuf> {
        let name = safe_name(&file.name)?;
        let target = dir.join(name);
        let partial = dir.join(format!(".{name}.part"));
        let result = self.fetch(file, &partial).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&partial, &target).await.map_err(|e| {
                    Error::io(format!("cannot rename into {}", target.display())).with(e)
                })?;
                Ok(target)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn fetch(&self, file: &File, partial: &Path) -> Result<()> {
        let response = self
            .inner
            .http
            .get(self.url(&file.url))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(
                error_of(status.as_u16(), &body).context(format!("download of {}", file.name))
            );
        }
        let mut out = tokio::fs::File::create(partial)
            .await
            .map_err(|e| Error::io(format!("cannot create {}", partial.display())).with(e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport)?;
            size += chunk.len() as u64;
            if size > file.size {
                return Err(Error::checksum(format!(
                    "{} is longer than its {} bytes",
                    file.name, file.size
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("cannot write {}", partial.display())).with(e))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::io(format!("cannot write {}", partial.display())).with(e))?;
        out.sync_all()
            .await
            .map_err(|e| Error::io(format!("cannot write {}", partial.display())).with(e))?;
        if size != file.size {
            return Err(Error::checksum(format!(
                "{}: {size} bytes arrived, {} expected",
                file.name, file.size
            )));
        }
        let digest = hex(&hasher.finalize());
        if !digest.eq_ignore_ascii_case(&file.sha256) {
            return Err(Error::checksum(format!(
                "{}: sha256 {digest}, expected {}",
                file.name, file.sha256
            )));
        }
        Ok(())
    }
}

/// The file's own name, if it is a plain one.
fn safe_name(name: &str) -> Result<&str> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255;
    if plain {
        Ok(name)
    } else {
        Err(Error::usage(format!(
            "the server's file name {name:?} is not a plain file name"
        )))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn names_never_leave_the_directory() {
        assert!(safe_name("booklet.odt").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", ".hidden"] {
            assert!(safe_name(bad).is_err(), "{bad}");
        }
    }
}
