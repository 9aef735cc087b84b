//! Users and groups of a container, as the CRI and the OCI image spec
//! define them:
//!
//! * the user comes from the CRI (`run_as_user`, `run_as_username`) or else
//!   the image config's `User`: `name`, `uid`, `name:group`, `uid:gid`...;
//! * a name is looked up in the image's `/etc/passwd`, a group name in its
//!   `/etc/group`; a numeric uid not in `/etc/passwd` is fine (gid 0);
//! * the supplementary groups are the groups of `/etc/group` that list the
//!   user (policy `Merge`, the default) plus the CRI's
//!   `supplemental_groups`; with policy `Strict` only the latter.
//!
//! The files are opened with `openat2(RESOLVE_IN_ROOT)`, so an image whose
//! `/etc/passwd` is a symlink to `/../../etc/shadow` reads its own files,
//! never the host's.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Why the user could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("user {0:?} is not in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    NoSuchGroup(String),
    #[error("invalid user {0:?}")]
    Invalid(String),
    #[error("reading the image's {file}: {reason}")]
    Read { file: &'static str, reason: String },
}

/// How supplementary groups are chosen (CRI `SupplementalGroupsPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupsPolicy {
    /// The image's groups for the user, plus the requested ones.
    #[default]
    Merge,
    /// Only the requested ones.
    Strict,
}

/// Who the container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, sorted, without duplicates.
    pub additional_gids: Vec<u32>,
}

/// What the CRI asks for.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    /// `run_as_user`.
    pub uid: Option<u32>,
    /// `run_as_username`.
    pub username: Option<&'a str>,
    /// `run_as_group`.
    pub gid: Option<u32>,
    /// `supplemental_groups`.
    pub supplemental_groups: &'a [u32],
    pub policy: GroupsPolicy,
    /// The image config's `User`.
    pub image_user: &'a str,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads `/etc/<name>` of `rootfs` without leaving it; a missing file is empty.
fn read_etc(rootfs: &Path, file: &'static str) -> Result<String, UserError> {
    let err = |reason: String| UserError::Read { file, reason };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("rootfs {}: {e}", rootfs.display())))?;
    let fd = match rustix::fs::openat2(
        &root,
        file,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let mut text = String::new();
    // Bounded: a hostile image could make /etc/passwd a device or huge.
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    Ok(text)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves who a container runs as inside `rootfs`.
pub fn resolve(rootfs: &Path, req: &UserRequest<'_>) -> Result<Identity, UserError> {
    let passwd = parse_passwd(&read_etc(rootfs, "etc/passwd")?);
    let groups = parse_group(&read_etc(rootfs, "etc/group")?);

    // Which user: the CRI's, else the image's.
    let (image_user, image_group) = match req.image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (req.image_user, None),
    };
    let user_spec: String = match (req.uid, req.username) {
        (Some(uid), _) => uid.to_string(),
        (None, Some(name)) if !name.is_empty() => name.to_string(),
        _ if image_user.is_empty() => "0".to_string(),
        _ => image_user.to_string(),
    };
    let from_cri = req.uid.is_some() || req.username.is_some_and(|n| !n.is_empty());
    let (uid, name, primary) = match user_spec.parse::<u32>() {
        Ok(uid) => {
            let e = passwd.iter().find(|e| e.uid == uid);
            (uid, e.map(|e| e.name.clone()), e.map_or(0, |e| e.gid))
        }
        Err(_) => {
            if user_spec.is_empty() || user_spec.contains(['/', '\0']) {
                return Err(UserError::Invalid(user_spec));
            }
            let e = passwd
                .iter()
                .find(|e| e.name == user_spec)
                .ok_or_else(|| UserError::NoSuchUser(user_spec.clone()))?;
            (e.uid, Some(e.name.clone()), e.gid)
        }
    };
    // Which primary group: the CRI's, else the image's `user:group` (only
    // when the user also came from the image), else the user's own.
    let gid = match (req.gid, image_group.filter(|_| !from_cri)) {
        (Some(g), _) => g,
        (None, Some(g)) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoSuchGroup(g.to_string()))?,
        },
        (None, None) => primary,
    };
    let mut additional: Vec<u32> = req.supplemental_groups.to_vec();
    if req.policy == GroupsPolicy::Merge {
        if let Some(n) = &name {
            additional.extend(
                groups
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == n))
                    .map(|g| g.gid),
            );
        }
    }
    additional.push(gid);
    additional.sort_unstable();
    additional.dedup();
    Ok(Identity {
        uid,
        gid,
        additional_gids: additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n# comment\nberth:x:1234:5678::/home/berth:/bin/sh\nbroken:line\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nberthgrp:x:5678:\nextra:x:9000:berth,other\nwheel:x:10:root\nnogroup:x:65534:\n",
        )
        .unwrap();
        d
    }

    fn req<'a>(image_user: &'a str) -> UserRequest<'a> {
        UserRequest {
            image_user,
            ..Default::default()
        }
    }

    #[test]
    fn image_user_forms() {
        let r = rootfs();
        let id = |u| resolve(r.path(), &req(u)).unwrap();
        assert_eq!(
            id(""),
            Identity {
                uid: 0,
                gid: 0,
                additional_gids: vec![0, 10]
            }
        );
        assert_eq!(
            id("berth"),
            Identity {
                uid: 1234,
                gid: 5678,
                additional_gids: vec![5678, 9000]
            }
        );
        assert_eq!(
            id("1234"),
            Identity {
                uid: 1234,
                gid: 5678,
                additional_gids: vec![5678, 9000]
            }
        );
        assert_eq!(id("1234:10").gid, 10);
        assert_eq!(id("berth:extra").gid, 9000);
        // A uid the image does not know: gid 0, no groups from the image.
        assert_eq!(
            id("4242"),
            Identity {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        assert_eq!(
            resolve(r.path(), &req("ghost")),
            Err(UserError::NoSuchUser("ghost".into()))
        );
        assert_eq!(
            resolve(r.path(), &req("berth:ghosts")),
            Err(UserError::NoSuchGroup("ghosts".into()))
        );
    }

    #[test]
    fn cri_overrides_and_group_policies() {
        let r = rootfs();
        let mut q = req("berth:extra");
        q.uid = Some(65534);
        let i = resolve(r.path(), &q).unwrap();
        assert_eq!(
            (i.uid, i.gid),
            (65534, 65534),
            "the image's group goes with the image's user"
        );
        q.gid = Some(7);
        q.supplemental_groups = &[100, 7];
        assert_eq!(resolve(r.path(), &q).unwrap().additional_gids, vec![7, 100]);
        let mut q = req("");
        q.username = Some("berth");
        q.supplemental_groups = &[100];
        assert_eq!(
            resolve(r.path(), &q).unwrap().additional_gids,
            vec![100, 5678, 9000]
        );
        q.policy = GroupsPolicy::Strict;
        assert_eq!(
            resolve(r.path(), &q).unwrap().additional_gids,
            vec![100, 5678]
        );
    }

    #[test]
    fn files_are_read_inside_the_rootfs_only() {
        let r = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), r.path().join("etc/passwd"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../../../host-group", r.path().join("etc/group"))
            .unwrap();
        // Both links resolve inside the rootfs, where nothing is.
        assert_eq!(
            resolve(r.path(), &req("evil")),
            Err(UserError::NoSuchUser("evil".into()))
        );
        // A link that climbs back onto itself is a loop, reported as such.
        std::fs::remove_file(r.path().join("etc/group")).unwrap();
        std::os::unix::fs::symlink("../../../etc/group", r.path().join("etc/group")).unwrap();
        assert!(matches!(
            resolve(r.path(), &req("0")),
            Err(UserError::Read {
                file: "etc/group",
                ..
            })
        ));
        // No /etc at all: numeric users still work.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(empty.path(), &req("5")).unwrap().uid, 5);
    }
}
