//! ID-mapped bind mounts for user-namespaced pods.
//!
//! For a pod with `hostUsers: false` the kubelet gives every mount (its
//! volumes, `/etc/hosts`, the termination log) the pod's uid and gid
//! mappings, so that what host root owns is owned by the container's root
//! and not by `nobody`. Berth makes those mounts itself, for every runtime
//! handler: an `open_tree` clone of the host path, `mount_setattr` with
//! `MOUNT_ATTR_IDMAP` and the pod's user namespace, moved to
//! `<state>/idmap/<container>/<n>`; the container then gets a plain bind
//! mount of that path, which keeps the mapping.
//!
//! The staging mounts belong to the container: [`IdmappedMounts::release`]
//! detaches them on removal, on a failed create and at start for
//! containers without a record. Nothing below a staging mount (the user's
//! volume) is ever deleted: mounts are detached first, then only empty
//! directories and files Berth created are removed.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use crate::error::{io, Error, Result};

/// `MOUNT_ATTR_IDMAP` from `linux/mount.h`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` from `linux/mount.h`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The id-mapped staging mounts of one container.
pub(crate) struct IdmappedMounts {
    dir: PathBuf,
}

impl IdmappedMounts {
    pub fn at(state: &Path, container: &str) -> IdmappedMounts {
        IdmappedMounts {
            dir: state.join("idmap").join(container),
        }
    }

    /// The directory holding every container's staging mounts.
    pub fn root(state: &Path) -> PathBuf {
        state.join("idmap")
    }

    /// Mounts `source` (with what is mounted below it when `recursive`) at
    /// a new staging path, its ownership mapped through the user namespace
    /// `userns` (`/proc/<pid>/ns/user`). Returns the staging path.
    pub fn add(&self, n: usize, source: &Path, userns: &Path, recursive: bool) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let target = self.dir.join(n.to_string());
        let meta = std::fs::metadata(source).map_err(io("reading", source))?;
        if meta.is_dir() {
            std::fs::create_dir(&target).map_err(io("creating", &target))?;
        } else {
            File::create(&target).map_err(io("creating", &target))?;
        }
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        let tree = rustix::mount::open_tree(rustix::fs::CWD, source, flags)
            .map_err(|e| io("cloning the mount of", source)(e.into()))?;
        let ns = File::open(userns).map_err(io("opening", userns))?;
        set_idmap(&tree, &ns, recursive).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot ID-map the mount of {} (its filesystem may not support ID-mapped \
                 mounts): {e}",
                source.display()
            ))
        })?;
        rustix::mount::move_mount(
            tree.as_fd(),
            "",
            rustix::fs::CWD,
            &target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| io("mounting", &target)(e.into()))?;
        Ok(target)
    }

    /// Detaches every staging mount and removes the directory. Idempotent.
    pub fn release(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        let prefix = format!("{}/", self.dir.display());
        let mounted: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io("reading", Path::new("/proc/self/mountinfo")))?
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(crate::podfiles::unescape)
            .filter(|m| m.starts_with(&prefix))
            .collect();
        for m in mounted.iter().rev() {
            rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| io("unmounting", Path::new(m))(e.into()))?;
        }
        // Only the mount points Berth made: never a recursive removal.
        for e in std::fs::read_dir(&self.dir).map_err(io("reading", &self.dir))? {
            let p = e.map_err(io("reading", &self.dir))?.path();
            let removed = if p.is_dir() {
                std::fs::remove_dir(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(io("removing", &p))?;
        }
        match std::fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &self.dir)(e)),
            _ => Ok(()),
        }
    }
}

fn set_idmap(tree: &impl AsFd, userns: &File, recursive: bool) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a
    // live, properly laid out `struct mount_attr`, and an empty C string
    // path; both outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
