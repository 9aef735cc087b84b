//! Overlay mounts of snapshots: how an image's layers become a container's
//! root filesystem (lower layers read-only, a private upper layer on top).
//!
//! Layers are passed with the new mount API, one `lowerdir+` per layer
//! (Linux 6.8+), so deep images are not limited by the one-page size of
//! classic mount data; older kernels get the classic `mount(2)` string,
//! which still works for any image whose paths fit in a page.

use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, unmount, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::{Error, Result};

/// A mounted overlay. Dropping it does not unmount: mounts must outlive a
/// daemon restart; call [`Overlay::unmount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    target: PathBuf,
}

/// What to stack.
#[derive(Debug, Clone)]
pub struct OverlaySpec<'a> {
    /// Read-only layers, topmost first (the order of `lowerdir`).
    pub lowers: &'a [PathBuf],
    /// The writable layer and overlayfs's work directory (same filesystem);
    /// `None` mounts read-only, which needs at least two lowers.
    pub upper: Option<(&'a Path, &'a Path)>,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

impl Overlay {
    /// Mounts `spec` on `target` (an existing directory).
    pub fn mount(spec: &OverlaySpec<'_>, target: &Path) -> Result<Overlay> {
        if spec.lowers.is_empty() {
            return Err(Error::io(
                "mount overlay",
                target,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no lower layers"),
            ));
        }
        match Self::mount_new_api(spec, target) {
            Ok(()) => {}
            // lowerdir+ is unknown before Linux 6.8.
            Err(Errno::INVAL) | Err(Errno::NOSYS) => Self::mount_classic(spec, target)?,
            Err(e) => return Err(err("mount overlay on", target)(e)),
        }
        Ok(Overlay {
            target: target.to_path_buf(),
        })
    }

    fn mount_new_api(spec: &OverlaySpec<'_>, target: &Path) -> std::result::Result<(), Errno> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "source", "overlay")?;
        for l in spec.lowers {
            fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
        }
        if let Some((upper, work)) = spec.upper {
            fsconfig_set_string(&fs, "upperdir", upper)?;
            fsconfig_set_string(&fs, "workdir", work)?;
        }
        fsconfig_create(&fs)?;
        let attrs = if spec.upper.is_none() {
            MountAttrFlags::MOUNT_ATTR_RDONLY
        } else {
            MountAttrFlags::empty()
        };
        let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
        move_mount(
            &m,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
    }

    fn mount_classic(spec: &OverlaySpec<'_>, target: &Path) -> Result<()> {
        let lowers: Vec<String> = spec
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect();
        let mut data = format!("lowerdir={}", lowers.join(":"));
        if let Some((upper, work)) = spec.upper {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        if data.len() >= 4096 {
            return Err(Error::io(
                "mount overlay on",
                target,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} layers need {} bytes of mount options, more than this kernel takes (upgrade to Linux 6.8+)",
                        spec.lowers.len(),
                        data.len()
                    ),
                ),
            ));
        }
        let flags = if spec.upper.is_none() {
            MountFlags::RDONLY
        } else {
            MountFlags::empty()
        };
        let data = std::ffi::CString::new(data).map_err(|_| {
            Error::io(
                "mount overlay on",
                target,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a layer path contains NUL",
                ),
            )
        })?;
        rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
            .map_err(err("mount overlay on", target))
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The overlay mounted at `target` (for unmounting after a restart).
    pub fn at(target: impl Into<PathBuf>) -> Overlay {
        Overlay {
            target: target.into(),
        }
    }

    /// Unmounts; an overlay that is not mounted any more is fine. A busy
    /// mount is detached (it goes when its last user does).
    pub fn unmount(&self) -> Result<()> {
        match unmount(&self.target, UnmountFlags::empty()) {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::BUSY) => unmount(&self.target, UnmountFlags::DETACH)
                .or_else(|e| if e == Errno::INVAL { Ok(()) } else { Err(e) })
                .map_err(err("unmount", &self.target)),
            Err(e) => Err(err("unmount", &self.target)(e)),
        }
    }
}
