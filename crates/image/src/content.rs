//! The content store: small immutable blobs (indexes, manifests, configs)
//! addressed by digest under `<root>/blobs/sha256/<hex>`. Layers are not
//! kept compressed: they live unpacked as snapshots (as in CRI-O's storage),
//! which halves the disk a pull writes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest;
use crate::error::{io, Error, Result};

/// A directory of blobs addressed by digest.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
}

impl ContentStore {
    /// Opens the store, creating it and removing temp files a crash left.
    pub fn open(root: &Path) -> Result<ContentStore> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io("create directory", &blobs))?;
        for e in fs::read_dir(&blobs)
            .map_err(io("read directory", &blobs))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(ContentStore { blobs })
    }

    fn path(&self, d: &str) -> Result<PathBuf> {
        crate::reference::validate_digest(d).map_err(|detail| Error::InvalidContent {
            what: "digest".into(),
            detail,
        })?;
        Ok(self.blobs.join(digest::hex_part(d)))
    }

    /// Stores `data` under `d` after checking that it hashes to `d`.
    pub fn put(&self, d: &str, data: &[u8]) -> Result<()> {
        let actual = digest::sha256(data);
        if actual != d {
            return Err(Error::DigestMismatch {
                what: "blob".into(),
                expected: d.to_string(),
                actual,
            });
        }
        let path = self.path(d)?;
        if path.exists() {
            return Ok(());
        }
        berth_store::write_atomic(&path, data)?;
        Ok(())
    }

    /// Reads the blob `d`.
    pub fn get(&self, d: &str) -> Result<Vec<u8>> {
        let path = self.path(d)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Internal(format!("blob {d} is missing from the content store"))
            } else {
                io("read", &path)(e)
            }
        })
    }

    /// Removes the blob `d` (missing is fine).
    pub fn remove(&self, d: &str) -> Result<()> {
        let path = self.path(d)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored digest.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.blobs).map_err(io("read directory", &self.blobs))? {
            let e = e.map_err(io("read directory", &self.blobs))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    /// Bytes and inodes the store uses.
    pub fn usage(&self) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let (mut bytes, mut inodes) = (0, 0);
        for e in fs::read_dir(&self.blobs)
            .map_err(io("read directory", &self.blobs))?
            .flatten()
        {
            if let Ok(m) = e.metadata() {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
        }
        Ok((bytes, inodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_checks_digest() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path()).unwrap();
        let good = digest::sha256(b"hello");
        s.put(&good, b"hello").unwrap();
        s.put(&good, b"hello").unwrap();
        assert_eq!(s.get(&good).unwrap(), b"hello");
        assert!(matches!(
            s.put(&good, b"other"),
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(s.list().unwrap(), vec![good.clone()]);
        s.remove(&good).unwrap();
        s.remove(&good).unwrap();
        assert!(s.get(&good).is_err());
        assert!(s.get("sha256:../../etc").is_err());
    }
}
