//! Helpers shared by the integration tests: a tar writer that takes names
//! verbatim (hostile layers need `..` and absolute names, which the `tar`
//! crate's path setters refuse) and a sandbox with a watched "outside" dir.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// Builds a layer tarball entry by entry.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A GNU header with defaults: root-owned, fixed mtime.
    pub fn header(kind: EntryType, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    /// Appends `h` with `name` and `link` written verbatim (each at most 100
    /// bytes; longer names need a PAX record, see [`Layer::pax`]).
    pub fn raw(
        &mut self,
        mut h: Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
    ) -> &mut Self {
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            if let Some(link) = link {
                old.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in recs {
            let mut body = format!(" {k}=").into_bytes();
            body.extend_from_slice(v);
            body.push(b'\n');
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&body);
        }
        let h = Self::header(EntryType::XHeader, 0o644);
        self.raw(h, b"././@PaxHeader", None, &data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            Self::header(EntryType::Directory, mode),
            name.as_bytes(),
            None,
            b"",
        )
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(
            Self::header(EntryType::Regular, mode),
            name.as_bytes(),
            None,
            data,
        )
    }

    /// A regular file with a customized header.
    pub fn file_with(&mut self, name: &str, data: &[u8], f: impl FnOnce(&mut Header)) -> &mut Self {
        let mut h = Self::header(EntryType::Regular, 0o644);
        f(&mut h);
        self.raw(h, name.as_bytes(), None, data)
    }

    pub fn dir_with(&mut self, name: &str, f: impl FnOnce(&mut Header)) -> &mut Self {
        let mut h = Self::header(EntryType::Directory, 0o755);
        f(&mut h);
        self.raw(h, name.as_bytes(), None, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Symlink, 0o777),
            name.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            Self::header(EntryType::Link, 0o644),
            name.as_bytes(),
            Some(target.as_bytes()),
            b"",
        )
    }

    pub fn fifo(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            Self::header(EntryType::Fifo, mode),
            name.as_bytes(),
            None,
            b"",
        )
    }

    pub fn device(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, 0o660);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, name.as_bytes(), None, b"")
    }

    /// The finished tar stream (with the end-of-archive marker).
    pub fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 1).unwrap()
}

/// A temp dir holding `target/` (empty, to apply into) and `outside/` (with
/// one sentinel file) that hostile layers try to reach.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub target: PathBuf,
    pub outside: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("sentinel"), b"untouched").unwrap();
        Sandbox {
            tmp,
            target,
            outside,
        }
    }

    /// `outside/` still holds exactly the sentinel, unchanged, and the temp
    /// dir holds only `target/` and `outside/`.
    pub fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["sentinel"],
            "something was written outside the target"
        );
        assert_eq!(
            fs::read(self.outside.join("sentinel")).unwrap(),
            b"untouched"
        );
        let mut top: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, ["outside", "target"]);
    }

    pub fn t(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The xattr `name` of `path` (not following symlinks), if set.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}
