//! Descriptor-relative tree helpers: recursive removal and disk usage.
//!
//! Both walk with O(1) open directory descriptors (descending with `openat`
//! and climbing back with `".."`), so arbitrarily deep trees, which a hostile
//! layer can build through symlinked parents, neither exhaust descriptors nor
//! overflow the stack.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, IFlags, Mode, OFlags};
use rustix::io::Errno;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `name` under `parent` for walking, making it
/// readable/searchable first if permissions forbid it (non-root callers).
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rfs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rfs::openat(parent, name, DIR_FLAGS, Mode::empty())
        }
        r => r,
    }
}

/// Clears the immutable and append-only flags, if set.
fn clear_flags(fd: BorrowedFd<'_>) {
    if let Ok(flags) = rfs::ioctl_getflags(fd) {
        let sticky = IFlags::IMMUTABLE | IFlags::APPEND;
        if flags.intersects(sticky) {
            let _ = rfs::ioctl_setflags(fd, flags - sticky);
        }
    }
}

/// `unlinkat`, retrying once after fixing what commonly prevents removal:
/// a read-only parent directory, or immutable/append-only flags on the
/// parent or on the entry itself.
fn unlink(dir: BorrowedFd<'_>, name: &OsStr, flags: AtFlags) -> rustix::io::Result<()> {
    match rfs::unlinkat(dir, name, flags) {
        Err(Errno::ACCESS | Errno::PERM) => {
            if let Ok(st) = rfs::fstat(dir) {
                if st.st_mode & 0o300 != 0o300 {
                    let _ = rfs::fchmod(dir, Mode::from_raw_mode((st.st_mode | 0o700) & 0o7777));
                }
            }
            clear_flags(dir);
            // Only regular files and directories can be opened without side
            // effects (a device open reaches a driver).
            if let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                let ft = FileType::from_raw_mode(st.st_mode);
                if ft == FileType::RegularFile || ft == FileType::Directory {
                    let f = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                    if let Ok(fd) = rfs::openat(dir, name, f, Mode::empty()) {
                        clear_flags(fd.as_fd());
                    }
                }
            }
            rfs::unlinkat(dir, name, flags)
        }
        r => r,
    }
}

/// Unlinks all non-directories in `dir`; returns the names of its
/// subdirectories.
fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut subdirs = Vec::new();
    for ent in rfs::Dir::read_from(dir)? {
        let ent = ent?;
        let name = OsStr::from_bytes(ent.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if ent.file_type() == FileType::Directory {
            subdirs.push(name.to_owned());
            continue;
        }
        match unlink(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // d_type was DT_UNKNOWN and it is a directory.
            Err(Errno::ISDIR) => subdirs.push(name.to_owned()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(subdirs)
}

/// Removes `name` under `parent`, recursively if it is a directory, without
/// following symlinks. Succeeds if it does not exist.
pub(crate) fn remove_tree(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlink(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cur = match open_dir(parent, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Each level: the directory's name and its subdirectories still to
    // remove. `cur` is the deepest level's descriptor.
    let mut stack = vec![(name.to_owned(), clear_dir(cur.as_fd())?)];
    loop {
        let (_, pending) = stack.last_mut().expect("stack is never empty here");
        if let Some(sub) = pending.pop() {
            match open_dir(cur.as_fd(), &sub) {
                Ok(fd) => {
                    let subdirs = clear_dir(fd.as_fd())?;
                    stack.push((sub, subdirs));
                    cur = fd;
                }
                Err(Errno::NOENT) => {}
                // Replaced by a non-directory meanwhile.
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    match unlink(cur.as_fd(), &sub, AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let (done, _) = stack.pop().expect("stack is never empty here");
        let up = if stack.is_empty() {
            None
        } else {
            Some(rfs::openat(
                &cur,
                "..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        };
        let up_fd = up.as_ref().map_or(parent, |fd| fd.as_fd());
        match unlink(up_fd, &done, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY) => {
                // Something appeared meanwhile: clear this level again.
                let subdirs = clear_dir(cur.as_fd())?;
                stack.push((done, subdirs));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        match up {
            Some(fd) => cur = fd,
            None => return Ok(()),
        }
    }
}

/// Disk usage accumulator.
#[derive(Default)]
pub(crate) struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
    seen: HashSet<(u64, u64)>,
}

impl DiskUsage {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // field types vary by arch
    fn add(&mut self, st: &rfs::Stat) {
        let nlink = u64::from(st.st_nlink);
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if !is_dir
            && nlink > 1
            && !self
                .seen
                .insert((u64::from(st.st_dev), u64::from(st.st_ino)))
        {
            return; // another name of an inode already counted
        }
        self.inodes += 1;
        self.bytes += u64::try_from(st.st_blocks as i64).unwrap_or(0) * 512;
    }

    /// Scans `dir`'s entries, counting them; returns its subdirectories.
    fn scan(&mut self, dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
        let mut subdirs = Vec::new();
        for ent in rfs::Dir::read_from(dir)? {
            let ent = ent?;
            let name = OsStr::from_bytes(ent.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            self.add(&st);
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                subdirs.push(name.to_owned());
            }
        }
        Ok(subdirs)
    }

    /// Adds the tree rooted at `parent/name` (which must be a directory).
    /// A tree removed concurrently is counted as far as it was seen.
    pub(crate) fn add_tree(&mut self, parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.add(&st);
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        let mut cur = match rfs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut stack = vec![self.scan(cur.as_fd())?];
        loop {
            let pending = stack.last_mut().expect("stack is never empty here");
            if let Some(sub) = pending.pop() {
                match rfs::openat(&cur, &sub, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => {
                        let subdirs = self.scan(fd.as_fd())?;
                        stack.push(subdirs);
                        cur = fd;
                    }
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            stack.pop();
            if stack.is_empty() {
                return Ok(());
            }
            cur = match rfs::openat(
                &cur,
                "..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // This tree was removed under us.
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        }
    }
}

/// The NUL-separated xattr names of an open file.
pub(crate) fn list_xattrs(fd: impl AsFd) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::flistxattr(fd.as_fd(), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// The value of one xattr of an open file.
pub(crate) fn get_xattr(fd: impl AsFd, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::fgetxattr(fd.as_fd(), OsStr::from_bytes(name), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn open(p: &std::path::Path) -> OwnedFd {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn removes_deep_read_only_trees_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        fs::create_dir(&keep).unwrap();
        fs::write(keep.join("precious"), b"x").unwrap();

        let victim = tmp.path().join("victim");
        let mut p = victim.clone();
        for i in 0..300 {
            p.push(format!("d{i}"));
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("f"), b"data").unwrap();
        symlink(&keep, victim.join("link-to-keep")).unwrap();
        symlink(&keep, p.join("link")).unwrap();
        fs::create_dir(victim.join("ro")).unwrap();
        fs::write(victim.join("ro/file"), b"x").unwrap();
        fs::set_permissions(victim.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(victim.join("d0"), fs::Permissions::from_mode(0o000)).unwrap();

        let root = open(tmp.path());
        let mut du = DiskUsage::default();
        du.add_tree(root.as_fd(), OsStr::new("victim")).unwrap();
        // 302 dirs (victim + d0..d299) + ro + ro/file + f + 2 links.
        assert_eq!(du.inodes, 1 + 300 + 1 + 1 + 1 + 2);

        remove_tree(root.as_fd(), OsStr::new("victim")).unwrap();
        assert!(!victim.exists());
        assert_eq!(fs::read(keep.join("precious")).unwrap(), b"x");
        remove_tree(root.as_fd(), OsStr::new("victim")).unwrap(); // idempotent
    }

    #[test]
    fn usage_counts_hard_links_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a"), vec![1u8; 64 * 1024]).unwrap();
        fs::hard_link(d.join("a"), d.join("b")).unwrap();
        let root = open(tmp.path());
        let mut du = DiskUsage::default();
        du.add_tree(root.as_fd(), OsStr::new("d")).unwrap();
        assert_eq!(du.inodes, 2);
        assert!(du.bytes >= 64 * 1024);
        assert!(du.bytes < 2 * 64 * 1024, "{}", du.bytes);
    }
}
