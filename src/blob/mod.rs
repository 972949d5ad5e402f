//! The daemon's blob store: encrypted attachment blobs on disk, named by the CIDv1 of
//! their bytes, so a blob is its own checksum and storing the same bytes twice keeps
//! one file (each attachment is sealed under its own key, so that is rare). Blobs are written and synced before the message that names them is
//! committed; a crash in between leaves an unreferenced blob, never a dangling
//! reference. Served read-only at /ipfs/<cid> on the HTTP port.

use crate::lnmp::BlobId;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the blob writer task failed: {0}")]
    Task(String),
    #[error("cannot open the attachment {cid}: {reason}")]
    Open { cid: String, reason: String },
}

/// A folder of blobs, fanned out by the last two characters of the CID so no folder
/// grows without bound.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

impl BlobStore {
    pub fn new(dir: impl Into<PathBuf>) -> BlobStore {
        BlobStore { dir: dir.into() }
    }

    fn path_of(&self, id: &BlobId) -> PathBuf {
        let name = id.to_string();
        let fan = &name[name.len().saturating_sub(2)..];
        self.dir.join(fan).join(name)
    }

    /// Stores `bytes` durably (written, synced, renamed into place, folder synced) and
    /// returns their CID. Storing bytes already present only returns the CID.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<BlobId, BlobError> {
        let id = BlobId::of(&bytes);
        let path = self.path_of(&id);
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(|e| BlobError::Task(e.to_string()))??;
        Ok(id)
    }

    /// The blob's bytes, or None if this store does not hold it.
    pub async fn get(&self, id: &BlobId) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path_of(id);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }
}

impl BlobStore {
    /// An attachment's decrypted bytes, or None if this store does not hold its blob.
    pub async fn open(
        &self,
        file: &crate::lnmp::blob::FileAttachment,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        let Some(blob) = self.get(&file.cid).await? else {
            return Ok(None);
        };
        file.open(&blob)
            .map(|b| Some(b.to_vec()))
            .map_err(|e| BlobError::Open {
                cid: file.cid.to_string(),
                reason: e.to_string(),
            })
    }

    /// A bridged email's raw bytes: inline in the content, or from its blob (None if
    /// this store does not hold it).
    pub async fn raw_email(
        &self,
        raw: &crate::lnmp::content::RawEmail,
    ) -> Result<Option<Vec<u8>>, BlobError> {
        match raw {
            crate::lnmp::content::RawEmail::Inline(bytes) => Ok(Some(bytes.clone())),
            crate::lnmp::content::RawEmail::Blob(file) => self.open(file).await,
        }
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // A new fan-out folder must itself survive a crash, or the blob in it goes too.
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
    }
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    // The rename is durable only once the folder entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_by_content_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs"));
        let id = store.put(b"sealed bytes".to_vec()).await.unwrap();
        assert_eq!(id, BlobId::of(b"sealed bytes"));
        assert_eq!(store.put(b"sealed bytes".to_vec()).await.unwrap(), id);
        assert_eq!(store.get(&id).await.unwrap().unwrap(), b"sealed bytes");
        assert_eq!(store.get(&BlobId::of(b"other")).await.unwrap(), None);
        let name = id.to_string();
        assert!(
            dir.path()
                .join("blobs")
                .join(&name[name.len() - 2..])
                .join(&name)
                .is_file()
        );
    }
}
