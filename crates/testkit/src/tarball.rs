//! Deterministic layer tarballs, including entries a well-behaved tar writer refuses.
//!
//! Every entry gets a fixed mtime, empty user/group names and explicit
//! ownership, so the same sequence of calls always produces the same bytes
//! (and therefore the same `diff_id`).

use tar::{EntryType, Header};

/// The modification time stamped on every entry (2020-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 1_577_836_800;

/// Builds an uncompressed layer tarball entry by entry.
///
/// Paths are written exactly as given (no normalisation, no leading `/`
/// stripping): pass `"etc/passwd"`, not `"/etc/passwd"`, for a normal entry.
/// Directories conventionally end without a slash; the writer adds nothing.
///
/// ```
/// use berth_testkit::TarWriter;
/// let mut tar = TarWriter::new();
/// tar.dir("etc", 0o755);
/// tar.file("etc/hostname", b"berth\n", 0o644);
/// tar.symlink("etc/alias", "hostname");
/// let bytes: Vec<u8> = tar.finish();
/// assert_eq!(bytes.len() % 512, 0);
/// ```
#[derive(Debug, Default)]
pub struct TarWriter {
    out: Vec<u8>,
    uid: u64,
    gid: u64,
}

/// A fully specified tar entry, for [`TarWriter::raw_entry`].
///
/// `name` and `link_name` are raw bytes: they may contain `..`, start with
/// `/`, or be anything else a hostile layer needs.
#[derive(Debug, Clone)]
pub struct RawEntry<'a> {
    /// Entry path bytes, written verbatim (a PAX `path` record is added when longer than 100 bytes).
    pub name: &'a [u8],
    /// Entry type.
    pub kind: EntryType,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Link target for symlinks and hard links, written verbatim.
    pub link_name: &'a [u8],
    /// File content (only meaningful for regular files).
    pub data: &'a [u8],
    /// Extended attributes, emitted as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: &'a [(&'a str, &'a [u8])],
}

impl TarWriter {
    /// Creates an empty archive whose entries are owned by 0:0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the owner used by subsequent convenience calls (`dir`, `file`, ...).
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.simple(path, EntryType::Directory, mode, b"", b"", &[])
    }

    /// Adds a directory with an explicit owner.
    pub fn dir_owned(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        self.raw_entry(&RawEntry {
            name: path.as_bytes(),
            kind: EntryType::Directory,
            mode,
            uid,
            gid,
            link_name: b"",
            data: b"",
            xattrs: &[],
        })
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.simple(path, EntryType::Regular, mode, b"", data, &[])
    }

    /// Adds a regular file carrying extended attributes (PAX `SCHILY.xattr.*`).
    pub fn file_with_xattrs(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        self.simple(path, EntryType::Regular, mode, b"", data, xattrs)
    }

    /// Adds a symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.simple(path, EntryType::Symlink, 0o777, target.as_bytes(), b"", &[])
    }

    /// Adds a hard link `path` to the earlier entry `target` (a path in the archive).
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.simple(path, EntryType::Link, 0o644, target.as_bytes(), b"", &[])
    }

    /// Adds a named pipe.
    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Self {
        self.simple(path, EntryType::Fifo, mode, b"", b"", &[])
    }

    /// Adds an AUFS/OCI whiteout deleting `path` from lower layers
    /// (an empty file named `.wh.<basename>` in the same directory).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (parent, base) = match path.rsplit_once('/') {
            Some((parent, base)) => (format!("{parent}/"), base),
            None => (String::new(), path),
        };
        let name = format!("{parent}.wh.{base}");
        self.simple(&name, EntryType::Regular, 0o644, b"", b"", &[])
    }

    /// Marks directory `dir` opaque (`<dir>/.wh..wh..opq`): lower-layer content of it is hidden.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        let name = format!("{dir}/.wh..wh..opq");
        self.simple(&name, EntryType::Regular, 0o644, b"", b"", &[])
    }

    fn simple(
        &mut self,
        path: &str,
        kind: EntryType,
        mode: u32,
        link_name: &[u8],
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let (uid, gid) = (self.uid, self.gid);
        self.raw_entry(&RawEntry {
            name: path.as_bytes(),
            kind,
            mode,
            uid,
            gid,
            link_name,
            data,
            xattrs,
        })
    }

    /// Appends an entry written byte for byte, bypassing the `tar` crate's
    /// path validation (which refuses `..` and absolute names).
    pub fn raw_entry(&mut self, entry: &RawEntry<'_>) -> &mut Self {
        let mut pax: Vec<(String, Vec<u8>)> = entry
            .xattrs
            .iter()
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.to_vec()))
            .collect();
        if entry.name.len() > 100 {
            pax.push(("path".to_owned(), entry.name.to_vec()));
        }
        if entry.link_name.len() > 100 {
            pax.push(("linkpath".to_owned(), entry.link_name.to_vec()));
        }
        if !pax.is_empty() {
            self.pax_header(entry.name, &pax);
        }

        let mut header = Header::new_ustar();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(FIXED_MTIME);
        let size = if entry.kind == EntryType::Regular {
            entry.data.len() as u64
        } else {
            0
        };
        header.set_size(size);
        let old = header.as_old_mut();
        copy_truncated(&mut old.name, entry.name);
        copy_truncated(&mut old.linkname, entry.link_name);
        header.set_cksum();
        self.push_block(header.as_bytes());
        if size > 0 {
            self.push_data(entry.data);
        }
        self
    }

    fn pax_header(&mut self, name: &[u8], records: &[(String, Vec<u8>)]) {
        let mut body = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n" where <len> counts the whole record, itself included.
            let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        let base = name.rsplit(|b| *b == b'/').next().unwrap_or(name);
        let mut pax_name = b"PaxHeaders.0/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(80)]);

        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_mtime(FIXED_MTIME);
        header.set_size(body.len() as u64);
        copy_truncated(&mut header.as_old_mut().name, &pax_name);
        header.set_cksum();
        self.push_block(header.as_bytes());
        self.push_data(&body);
    }

    fn push_block(&mut self, block: &[u8; 512]) {
        self.out.extend_from_slice(block);
    }

    fn push_data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.resize(self.out.len() + pad, 0);
    }

    /// Terminates the archive (two zero blocks) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

fn copy_truncated(slot: &mut [u8], value: &[u8]) {
    let n = value.len().min(slot.len());
    slot[..n].copy_from_slice(&value[..n]);
    slot[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> Vec<(Vec<u8>, EntryType, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let link = e.link_name_bytes().map(|l| l.to_vec()).unwrap_or_default();
                (e.path_bytes().to_vec(), e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn writes_hostile_names_verbatim() {
        let mut tar = TarWriter::new();
        tar.raw_entry(&RawEntry {
            name: b"../escape",
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            link_name: b"",
            data: b"x",
            xattrs: &[],
        });
        tar.hardlink("pw", "/etc/passwd");
        let got = entries(&tar.finish());
        assert_eq!(got[0].0, b"../escape");
        assert_eq!(got[1].2, b"/etc/passwd");
    }

    #[test]
    fn pax_xattrs_and_long_names_round_trip() {
        let long = "d/".repeat(60) + "file";
        let mut tar = TarWriter::new();
        tar.file_with_xattrs(&long, b"hello", 0o600, &[("user.berth", b"v")]);
        let bytes = tar.finish();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path_bytes().as_ref(), long.as_bytes());
        let ext: Vec<_> = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.key().unwrap().to_owned(), e.value_bytes().to_vec())
            })
            .collect();
        assert!(ext.contains(&("SCHILY.xattr.user.berth".to_owned(), b"v".to_vec())));
    }

    #[test]
    fn whiteout_names() {
        let mut tar = TarWriter::new();
        tar.whiteout("a/b/c").whiteout("top").opaque("dir");
        let names: Vec<_> = entries(&tar.finish()).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            vec![
                b"a/b/.wh.c".to_vec(),
                b".wh.top".to_vec(),
                b"dir/.wh..wh..opq".to_vec()
            ]
        );
    }
}
