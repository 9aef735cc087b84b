//! `subPath` mounts made safe, as the kubelet makes them: the path is
//! resolved beneath its volume with `openat2` (`RESOLVE_BENEATH`, no
//! symbolic link followed, missing directories made on the way), and what
//! it names is bind-mounted from that descriptor at
//! `<pods_dir>/<uid>/volume-subpaths/<volume>/<container>/<index>`, which
//! is what the runtime is given. A container that swaps a directory of a
//! shared volume for a symlink to `/` between two checks reaches nothing:
//! the mount is made from the descriptor opened, never from a path
//! resolved again.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::container::sub_path_of;
use crate::error::ConfigError;
use crate::node::NodeSettings;
use crate::volumes::PodVolumes;

fn refuse(sub: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("unable to provision SubPath `{sub}`: {why}"))
}

/// Opens (making missing directories) `sub` beneath the directory `root`,
/// following no symbolic link.
fn open_beneath(root: &Path, sub: &str) -> Result<OwnedFd, ConfigError> {
    let mut fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(sub, format!("{}: {e}", root.display())))?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for part in sub.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let open = |dir: &OwnedFd| {
            rustix::fs::openat2(
                dir,
                part,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                how,
            )
        };
        let next = match open(&fd) {
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&fd, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(refuse(sub, format!("making {part:?}: {e}"))),
                }
                open(&fd)
            }
            other => other,
        };
        fd = next.map_err(|e| match e {
            Errno::LOOP | Errno::XDEV => refuse(
                sub,
                format!("{part:?} is a symbolic link or leaves the volume"),
            ),
            e => refuse(sub, format!("{part:?}: {e}")),
        })?;
    }
    Ok(fd)
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

/// Binds the object `fd` names at `target` (made as a file or directory
/// like it; an earlier bind there is replaced).
fn bind_fd(fd: &OwnedFd, target: &Path, sub: &str) -> Result<(), ConfigError> {
    let is_dir = rustix::fs::fstat(fd)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .map_err(|e| refuse(sub, e))?;
    if is_mount_point(target) {
        rustix::mount::unmount(target, UnmountFlags::DETACH)
            .map_err(|e| refuse(sub, format!("{}: {e}", target.display())))?;
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| refuse(sub, format!("{}: {e}", parent.display())))?;
    }
    let made = if is_dir {
        std::fs::create_dir(target)
    } else {
        std::fs::File::create(target).map(drop)
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(sub, format!("{}: {e}", target.display()))),
    }
    let tree = rustix::mount::open_tree(
        fd.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| refuse(sub, format!("cloning the mount: {e}")))?;
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| refuse(sub, format!("mounting at {}: {e}", target.display())))
}

/// Makes the safe binds of every `subPath` (or `subPathExpr`, expanded
/// with `env`) of a container's volume mounts, by the mount's index
/// (blocking). [`crate::container_config`] sends these paths.
pub fn prepare_sub_paths(
    pod: &Pod,
    c: &Container,
    env: &[(String, String)],
    volumes: &PodVolumes,
    node: &NodeSettings,
) -> Result<BTreeMap<usize, PathBuf>, ConfigError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
        return Err(ConfigError::Invalid(format!(
            "pod uid {uid:?} is not a directory name"
        )));
    }
    let mut out = BTreeMap::new();
    for (i, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(sub) = sub_path_of(vm, env)? else {
            continue;
        };
        let vol = volumes
            .get(&vm.name)
            .ok_or_else(|| ConfigError::MissingVolume {
                container: c.name.clone(),
                volume: vm.name.clone(),
            })?;
        let fd = open_beneath(&vol.host_path, &sub)?;
        let target = node
            .pods_dir
            .join(uid)
            .join("volume-subpaths")
            .join(&vm.name)
            .join(&c.name)
            .join(i.to_string());
        bind_fd(&fd, &target, &sub)?;
        out.insert(i, target);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_beneath_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("a")).unwrap();
        std::os::unix::fs::symlink("/", vol.join("escape")).unwrap();
        std::os::unix::fs::symlink("a", vol.join("inside")).unwrap();
        assert!(open_beneath(&vol, "a").is_ok());
        // Missing directories are made.
        assert!(open_beneath(&vol, "a/b/c").is_ok());
        assert!(vol.join("a/b/c").is_dir());
        for bad in ["escape", "escape/etc", "inside", "inside/x"] {
            let e = open_beneath(&vol, bad).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{bad}: {e}");
        }
    }
}
