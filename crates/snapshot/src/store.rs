//! The snapshot store.
//!
//! Layout under the root:
//!
//! ```text
//! <root>/.lock                   flock(2)ed by the SnapshotStore that owns the root
//! <root>/<chain-hex>/fs          a committed snapshot (overlay lower/upper dir)
//! <root>/.staging-<random>/fs    a snapshot being written
//! <root>/.trash-<random>         a snapshot being removed
//! ```
//!
//! Commit is one `renameat2(RENAME_NOREPLACE)`, removal starts with a rename
//! to `.trash-*`, so a committed name always refers to a complete snapshot,
//! even after a crash. Staging and trash leftovers are deleted by
//! [`SnapshotStore::open`].
//!
//! Nothing is fsynced here: after a power loss a commit may be lost (the
//! layer is pulled again). Data durability of the snapshot contents is the
//! applier's [`ApplyOptions::sync_fs`](crate::ApplyOptions::sync_fs).

use std::ffi::OsStr;
use std::fmt;
use std::fs::DirBuilder;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsutil::{self, DiskUsage};

const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";
const LOCK_FILE: &str = ".lock";
const FS_DIR: &str = "fs";

/// The OCI chain id of a layer: its diff id for the bottom layer, otherwise
/// `sha256(parent_chain_id + " " + diff_id)`.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => {
            let mut h = Sha256::new();
            h.update(p.as_bytes());
            h.update(b" ");
            h.update(diff_id.as_bytes());
            format!("sha256:{}", hex::encode(h.finalize()))
        }
    }
}

/// Returns the hex part of `sha256:<64 lowercase hex>`.
pub(crate) fn digest_hex(id: &str) -> Result<&str> {
    let invalid = |reason| Error::InvalidChainId {
        id: id.to_string(),
        reason,
    };
    let hex = id
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid("expected the \"sha256:\" algorithm prefix"))?;
    if hex.len() != 64 {
        return Err(invalid("expected 64 hex digits"));
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid("expected lowercase hex digits"));
    }
    Ok(hex)
}

/// Space used by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk (`st_blocks * 512`), hard-linked files once.
    pub bytes: u64,
    /// Inodes (files, directories, links, ...), hard-linked files once.
    pub inodes: u64,
}

/// A directory of snapshots, one per layer chain. Cheap to share (`Arc`);
/// all methods take `&self` and are safe to call concurrently.
pub struct SnapshotStore {
    root: PathBuf,
    fd: Arc<OwnedFd>,
    /// Held for the store's lifetime: a second owner would delete our
    /// staging directories as crash leftovers.
    _lock: OwnedFd,
}

impl fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("root", &self.root)
            .finish()
    }
}

impl SnapshotStore {
    /// Opens (creating, mode 0700) the store at `root`, takes its lock and
    /// removes staging/trash directories left by a crash.
    pub fn open(root: &Path) -> Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| Error::io("create snapshot store", root, e))?;
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open snapshot store", root, e))?;
        let lock = rfs::openat(
            &fd,
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("open", root.join(LOCK_FILE), e))?;
        match rfs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    path: root.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io("lock", root.join(LOCK_FILE), e)),
        }
        let store = SnapshotStore {
            root: root.to_path_buf(),
            fd: Arc::new(fd),
            _lock: lock,
        };
        store.clean_leftovers()?;
        Ok(store)
    }

    fn clean_leftovers(&self) -> Result<()> {
        for name in self.names()? {
            let s = name.to_string_lossy();
            if s.starts_with(STAGING_PREFIX) || s.starts_with(TRASH_PREFIX) {
                tracing::info!(path = %self.root.join(&name).display(), "removing leftover from an interrupted operation");
                fsutil::remove_tree(self.fd.as_fd(), &name)
                    .map_err(|e| Error::io("remove", self.root.join(&name), e))?;
            }
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<std::ffi::OsString>> {
        let dir = rfs::Dir::read_from(&*self.fd).map_err(|e| Error::io("read", &self.root, e))?;
        let mut out = Vec::new();
        for ent in dir {
            let ent = ent.map_err(|e| Error::io("read", &self.root, e))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(out)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<hex>/fs` for `chain_id` (`sha256:<hex>`), whether or not it
    /// exists.
    pub fn fs_path(&self, chain_id: &str) -> Result<PathBuf> {
        Ok(self.root.join(digest_hex(chain_id)?).join(FS_DIR))
    }

    /// Whether a snapshot for `chain_id` is committed. Invalid ids do not
    /// exist.
    pub fn exists(&self, chain_id: &str) -> bool {
        let Ok(hex) = digest_hex(chain_id) else {
            return false;
        };
        let path = format!("{hex}/{FS_DIR}");
        rfs::statat(&*self.fd, path.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
    }

    /// Creates a fresh, empty staging fs directory (mode 0755) to apply a
    /// layer into. Dropping the [`Staging`] without committing removes it.
    pub fn stage(&self) -> Result<Staging> {
        loop {
            let name = format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>());
            match rfs::mkdirat(&*self.fd, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io("create", self.root.join(&name), e)),
            }
            // From here on, Drop cleans up.
            let staging = Staging {
                root: Arc::clone(&self.fd),
                path: self.root.join(&name).join(FS_DIR),
                name,
                committed: false,
            };
            let fs_rel = format!("{}/{FS_DIR}", staging.name);
            rfs::mkdirat(&*self.fd, fs_rel.as_str(), Mode::from_raw_mode(0o755))
                .and_then(|()| {
                    rfs::chmodat(
                        &*self.fd,
                        fs_rel.as_str(),
                        Mode::from_raw_mode(0o755),
                        AtFlags::empty(),
                    )
                })
                .map_err(|e| Error::io("create", &staging.path, e))?;
            return Ok(staging);
        }
    }

    /// Atomically publishes `staging` as `chain_id`. If that snapshot already
    /// exists (a concurrent pull won), `staging` is discarded and this
    /// succeeds.
    pub fn commit(&self, mut staging: Staging, chain_id: &str) -> Result<()> {
        let hex = digest_hex(chain_id)?;
        match rfs::renameat_with(
            &*staging.root,
            staging.name.as_str(),
            &*self.fd,
            hex,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                staging.committed = true;
                Ok(())
            }
            Err(Errno::EXIST | Errno::NOTEMPTY) => {
                tracing::debug!(
                    chain_id,
                    "snapshot already committed; discarding staged copy"
                );
                Ok(()) // dropping `staging` removes it
            }
            Err(e) => Err(Error::io("commit", staging.path.clone(), e)),
        }
    }

    /// Removes the snapshot `chain_id`, if present. Permissions and
    /// immutable/append-only flags inside are overridden as needed.
    pub fn remove(&self, chain_id: &str) -> Result<()> {
        let hex = digest_hex(chain_id)?;
        let trash = loop {
            let trash = format!("{TRASH_PREFIX}{:016x}", rand::random::<u64>());
            match rfs::renameat_with(
                &*self.fd,
                hex,
                &*self.fd,
                trash.as_str(),
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => break trash,
                Err(Errno::NOENT) => return Ok(()),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::io("remove", self.root.join(hex), e)),
            }
        };
        fsutil::remove_tree(self.fd.as_fd(), OsStr::new(&trash))
            .map_err(|e| Error::io("remove", self.root.join(&trash), e))
    }

    /// The committed chain ids, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .names()?
            .into_iter()
            .filter_map(|n| {
                let s = n.to_str()?;
                let id = format!("sha256:{s}");
                digest_hex(&id).is_ok().then_some(id)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Disk usage of the whole store (committed and staging snapshots),
    /// counting hard-linked files once.
    pub fn usage(&self) -> Result<Usage> {
        let mut du = DiskUsage::default();
        for name in self.names()? {
            if name == LOCK_FILE {
                continue;
            }
            du.add_tree(self.fd.as_fd(), &name)
                .map_err(|e| Error::io("measure", self.root.join(&name), e))?;
        }
        Ok(Usage {
            bytes: du.bytes,
            inodes: du.inodes,
        })
    }
}

/// A snapshot being written: an empty directory at [`Staging::path`].
/// Removed on drop unless committed.
pub struct Staging {
    root: Arc<OwnedFd>,
    name: String,
    path: PathBuf,
    committed: bool,
}

impl Staging {
    /// The staging fs directory, to pass to [`apply_layer`](crate::apply_layer).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for Staging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging").field("path", &self.path).finish()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(e) = fsutil::remove_tree(self.root.as_fd(), OsStr::new(&self.name)) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "failed to remove staging directory; it will be removed when the store is next opened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let a = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
        assert_eq!(chain_id(None, a), a);
        let b = "sha256:0c9eba1a8b5b4eca4c1f6a3d3d7a6e8a8c5a6a3c4c4e5a5a6b6c6d6e6f707172";
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(chain_id(Some(a), b), expected);
    }

    #[test]
    fn digest_validation() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(digest_hex(&ok).unwrap(), "ab".repeat(32));
        for bad in [
            "ab".repeat(32),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha256:{}/..", "ab".repeat(31)),
            "sha256:../../etc".to_string(),
        ] {
            let e = digest_hex(&bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
