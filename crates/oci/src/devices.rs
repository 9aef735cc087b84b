//! Device nodes and the device cgroup: the default set every container
//! gets, the devices the CRI asks for, and all of the host's for a
//! privileged container.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_podspec::Device;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::SpecError;

/// The device nodes every container gets: `(path, major, minor)`, all
/// character devices, `0666 root:root` (runc's default set; `/dev/ptmx` is
/// a link to `/dev/pts/ptmx` made by the runtime).
const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Character devices usable (`rwm`) besides [`DEFAULT_DEVICES`]:
/// `/dev/console` (5:1), every `/dev/pts/N` (136:*) and `/dev/ptmx` (5:2).
const DEFAULT_CHAR_RULES: [(i64, Option<i64>); 3] = [(5, Some(1)), (136, None), (5, Some(2))];

/// Directories of the host's `/dev` that never hold devices to pass on.
const SKIPPED_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

fn char_device(path: &str, major: i64, minor: i64) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(path))
        .set_typ(LinuxDeviceType::C)
        .set_major(major)
        .set_minor(minor)
        .set_file_mode(Some(0o666))
        .set_uid(Some(0))
        .set_gid(Some(0));
    d
}

/// The device nodes every container gets.
pub(crate) fn default_devices() -> Vec<LinuxDevice> {
    DEFAULT_DEVICES
        .iter()
        .map(|(p, major, minor)| char_device(p, *major, *minor))
        .collect()
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow)
        .set_typ(Some(typ))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    r
}

/// The device cgroup of a non-privileged container: deny everything, then
/// allow creating any node (`m`; using it still needs a rule) and using the
/// default devices, the console and the pseudo-terminals.
pub(crate) fn default_rules() -> Vec<LinuxDeviceCgroup> {
    let mut rules = vec![
        rule(false, LinuxDeviceType::A, None, None, "rwm"),
        rule(true, LinuxDeviceType::C, None, None, "m"),
        rule(true, LinuxDeviceType::B, None, None, "m"),
    ];
    rules.extend(DEFAULT_DEVICES.iter().map(|(_, major, minor)| {
        rule(true, LinuxDeviceType::C, Some(*major), Some(*minor), "rwm")
    }));
    rules.extend(
        DEFAULT_CHAR_RULES
            .iter()
            .map(|(major, minor)| rule(true, LinuxDeviceType::C, Some(*major), *minor, "rwm")),
    );
    rules
}

/// The device cgroup of a privileged container: everything.
pub(crate) fn allow_all() -> LinuxDeviceCgroup {
    rule(true, LinuxDeviceType::A, None, None, "rwm")
}

/// The device node at `path` (not following a final symlink), `None` when
/// it is not a block, character or FIFO device.
fn device_at(path: &Path) -> std::io::Result<Option<LinuxDevice>> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let typ = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Ok(None);
    };
    let rdev = md.rdev();
    let mut d = LinuxDevice::default();
    d.set_path(path.to_path_buf())
        .set_typ(typ)
        .set_major(i64::from(rustix::fs::major(rdev)))
        .set_minor(i64::from(rustix::fs::minor(rdev)))
        .set_file_mode(Some(md.mode() & 0o7777))
        .set_uid(Some(md.uid()))
        .set_gid(Some(md.gid()));
    Ok(Some(d))
}

/// Every device under `dir` (recursively, skipping [`SKIPPED_DIRS`],
/// consoles and FIFOs), renamed under `container_dir` when given.
fn devices_under(
    dir: &Path,
    container_dir: Option<&Path>,
    out: &mut Vec<LinuxDevice>,
) -> Result<(), SpecError> {
    let what = "device directory";
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::io(what, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpecError::io(what, dir, e))?;
        let name = entry.file_name();
        let path = entry.path();
        let target = container_dir.map(|c| c.join(&name));
        // Not following symlinks: `/dev/fd`, `/dev/stdin` and friends are
        // links into /proc, not devices.
        let ft = entry
            .file_type()
            .map_err(|e| SpecError::io(what, &path, e))?;
        if ft.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                devices_under(&path, target.as_deref(), out)?;
            }
            continue;
        }
        if name == "console" {
            continue;
        }
        match device_at(&path) {
            Ok(Some(mut d)) if d.typ() != LinuxDeviceType::P => {
                if let Some(t) = target {
                    d.set_path(t);
                }
                out.push(d);
            }
            Ok(_) => {}
            // Gone since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpecError::io("device", &path, e)),
        }
    }
    Ok(())
}

/// Every device node of the host's `dev_dir`, for a privileged container.
pub(crate) fn host_devices(dev_dir: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    devices_under(dev_dir, None, &mut out)?;
    Ok(out)
}

/// `r`, `w` and `m`, each at most once; empty means all three.
fn permissions(p: &str) -> Result<String, SpecError> {
    if p.is_empty() {
        return Ok("rwm".to_string());
    }
    let mut seen = String::new();
    for c in p.chars() {
        if !"rwm".contains(c) || seen.contains(c) {
            return Err(SpecError::invalid(
                "device permissions",
                format!("{p:?}: only r, w and m, each at most once"),
            ));
        }
        seen.push(c);
    }
    Ok(seen)
}

/// The device nodes and cgroup rules for one CRI device. The host path is
/// a device (symlinks resolved) or a directory of devices, made available
/// at `container_path` (the host path when empty).
pub(crate) fn from_cri(
    device: &Device,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    if device.host_path.is_empty() {
        return Err(SpecError::invalid("device", "host_path is empty"));
    }
    let access = permissions(&device.permissions)?;
    let host = std::fs::canonicalize(&device.host_path)
        .map_err(|e| SpecError::io("device", &device.host_path, e))?;
    let container = if device.container_path.is_empty() {
        PathBuf::from(&device.host_path)
    } else {
        PathBuf::from(&device.container_path)
    };
    if !container.is_absolute() {
        return Err(SpecError::invalid(
            "device container_path",
            format!("{container:?} is not absolute"),
        ));
    }
    let mut devices = Vec::new();
    if host.is_dir() {
        devices_under(&host, Some(&container), &mut devices)?;
    } else {
        let mut d = device_at(&host)
            .map_err(|e| SpecError::io("device", &host, e))?
            .ok_or_else(|| {
                SpecError::invalid(
                    "device",
                    format!("{:?} ({host:?}) is not a device node", device.host_path),
                )
            })?;
        d.set_path(container);
        devices.push(d);
    }
    let rules = devices
        .iter()
        .map(|d| rule(true, d.typ(), Some(d.major()), Some(d.minor()), &access))
        .collect();
    Ok((devices, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> Device {
        Device {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn defaults_match_runc() {
        let d = default_devices();
        assert_eq!(d.len(), 6);
        let null = d
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .unwrap();
        assert_eq!(
            (null.major(), null.minor(), null.file_mode()),
            (1, 3, Some(0o666))
        );
        let rules = default_rules();
        assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        let shown: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        for want in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 5:0 rwm",
            "c 136:* rwm",
            "c 5:2 rwm",
        ] {
            assert!(shown.iter().any(|s| s == want), "{want} not in {shown:?}");
        }
    }

    #[test]
    fn a_cri_device_is_stat_ed() {
        let (devices, rules) = from_cri(&dev("/dev/null", "/dev/mynull", "rw")).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].path(), Path::new("/dev/mynull"));
        assert_eq!(devices[0].typ(), LinuxDeviceType::C);
        assert_eq!((devices[0].major(), devices[0].minor()), (1, 3));
        assert_eq!(rules[0].to_string(), "c 1:3 rw");
        assert!(rules[0].allow());
        // Empty container path: the host path; empty permissions: rwm.
        let (devices, rules) = from_cri(&dev("/dev/zero", "", "")).unwrap();
        assert_eq!(devices[0].path(), Path::new("/dev/zero"));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    }

    #[test]
    fn a_symlink_to_a_device_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/full", &link).unwrap();
        let (devices, _) = from_cri(&dev(link.to_str().unwrap(), "/dev/f", "r")).unwrap();
        assert_eq!((devices[0].major(), devices[0].minor()), (1, 7));
    }

    #[test]
    fn a_directory_of_devices() {
        let (devices, rules) = from_cri(&dev("/dev", "/hostdev", "r")).unwrap();
        assert!(devices.len() >= 6, "{devices:?}");
        assert!(devices
            .iter()
            .any(|d| d.path() == Path::new("/hostdev/null") && d.major() == 1));
        assert!(devices.iter().all(|d| d.path().starts_with("/hostdev")));
        assert!(!devices.iter().any(|d| d.path().starts_with("/hostdev/pts")));
        assert_eq!(devices.len(), rules.len());
    }

    #[test]
    fn bad_devices() {
        let e = from_cri(&dev("/nonexistent/dev", "/dev/x", "rwm")).unwrap_err();
        assert!(matches!(e, SpecError::NotFound { .. }), "{e}");
        let e = from_cri(&dev("/etc/hostname", "/dev/x", "rwm")).unwrap_err();
        assert!(e.to_string().contains("not a device node"), "{e}");
        for perms in ["rx", "rr", "read"] {
            let e = from_cri(&dev("/dev/null", "/dev/x", perms)).unwrap_err();
            assert!(e.to_string().contains("only r, w and m"), "{e}");
        }
        let e = from_cri(&dev("/dev/null", "dev/x", "r")).unwrap_err();
        assert!(e.to_string().contains("not absolute"), "{e}");
        let e = from_cri(&dev("", "/dev/x", "r")).unwrap_err();
        assert!(e.to_string().contains("host_path is empty"), "{e}");
    }

    #[test]
    fn host_devices_skip_links_and_pseudo_terminals() {
        let all = host_devices(Path::new("/dev")).unwrap();
        assert!(all.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!all
            .iter()
            .any(|d| d.path().starts_with("/dev/pts") || d.path() == Path::new("/dev/console")));
        assert!(all.iter().all(|d| d.typ() != LinuxDeviceType::P));
    }
}
