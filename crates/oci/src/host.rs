//! What the spec generator needs to know about the host it runs on.
//!
//! Everything here is read from the running system by [`RealHost`]. The
//! generator only sees the [`Host`] trait, so tests can describe another
//! host (a shared mount, a kernel version) without changing this one.

use std::io;
use std::path::{Path, PathBuf};

/// Facts about the host, read when the generator needs them.
pub(crate) trait Host {
    /// The host's hostname (for `HOSTNAME` when the pod has none).
    fn hostname(&self) -> io::Result<String>;
    /// `/proc/self/mountinfo` of this process: bind mount sources are
    /// looked up in it to check their propagation.
    fn mountinfo(&self) -> io::Result<String>;
    /// Whether AppArmor is enabled (`/sys/module/apparmor/parameters/enabled`).
    fn apparmor_enabled(&self) -> bool;
    /// Whether `/sys/fs/cgroup` is the cgroup v2 unified hierarchy.
    fn cgroup2_unified(&self) -> bool;
    /// The running kernel's `(major, minor)`, if it can be read.
    fn kernel_version(&self) -> Option<(u32, u32)>;
    /// The directory whose device nodes a privileged container gets.
    fn dev_dir(&self) -> PathBuf;
}

/// The host this process runs on.
pub(crate) struct RealHost;

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

impl Host for RealHost {
    fn hostname(&self) -> io::Result<String> {
        // The UTS namespace of this process is the host's: the daemon runs
        // in the host namespaces.
        Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_string())
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn apparmor_enabled(&self) -> bool {
        std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim_start().starts_with('Y'))
    }

    fn cgroup2_unified(&self) -> bool {
        rustix::fs::statfs("/sys/fs/cgroup")
            .is_ok_and(|s| u64::try_from(s.f_type).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC))
    }

    fn kernel_version(&self) -> Option<(u32, u32)> {
        parse_kernel_version(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
    }

    fn dev_dir(&self) -> PathBuf {
        Path::new("/dev").to_path_buf()
    }
}

/// `"6.18.0-foo"` → `(6, 18)`.
pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A mount as `/proc/self/mountinfo` lists it (the fields used here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    pub mount_point: PathBuf,
    /// The optional fields: `shared:N`, `master:N`, `propagate_from:N`,
    /// `unbindable`.
    pub optional: Vec<String>,
}

impl MountInfo {
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }

    pub fn is_slave(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("master:"))
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                // Three octal digits fit a byte only up to \377; mountinfo
                // never writes more.
                let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` (absolute, symlinks resolved) is on: the one with the
/// longest mount point that contains it, and of several mounts stacked on
/// that mount point the last listed (the visible one).
pub(crate) fn mount_of(mountinfo: &str, path: &Path) -> Option<MountInfo> {
    let mut best: Option<MountInfo> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount_point options [optional...] - fstype source super
        let Some((head, _tail)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = head.split(' ').collect();
        if fields.len() < 6 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(fields[4]));
        if !path.starts_with(&mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| mount_point.components().count() >= b.mount_point.components().count());
        if longer {
            best = Some(MountInfo {
                mount_point,
                optional: fields[6..].iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:40 / /mnt/vol rw,relatime shared:7 - tmpfs tmpfs rw
41 40 0:41 / /mnt/vol/sub rw,relatime master:3 - tmpfs tmpfs rw
42 27 0:42 / /mnt/with\\040space rw - tmpfs tmpfs rw
43 27 0:43 / /mnt/vol rw,relatime - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_visible_mount_holding_a_path() {
        let m = mount_of(MOUNTINFO, Path::new("/mnt/vol/sub/x")).unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt/vol/sub"));
        assert!(m.is_slave() && !m.is_shared());
        // Two mounts on /mnt/vol: the later one hides the shared one.
        let m = mount_of(MOUNTINFO, Path::new("/mnt/vol/a")).unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt/vol"));
        assert!(!m.is_shared() && !m.is_slave());
        assert_eq!(
            mount_of(MOUNTINFO, Path::new("/etc/passwd"))
                .unwrap()
                .mount_point,
            Path::new("/")
        );
        assert_eq!(
            mount_of(MOUNTINFO, Path::new("/mnt/with space/f"))
                .unwrap()
                .mount_point,
            Path::new("/mnt/with space")
        );
        // A prefix of a component is not a parent.
        assert_eq!(
            mount_of(MOUNTINFO, Path::new("/mnt/volume"))
                .unwrap()
                .mount_point,
            Path::new("/")
        );
        assert_eq!(mount_of("", Path::new("/x")), None);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.0-1-amd64\n"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4"), Some((5, 4)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert!(RealHost
            .kernel_version()
            .is_some_and(|(major, _)| major >= 4));
    }

    #[test]
    fn the_real_host_answers() {
        assert!(!RealHost.hostname().unwrap().is_empty());
        let mi = RealHost.mountinfo().unwrap();
        assert_eq!(
            mount_of(&mi, Path::new("/proc/self")).unwrap().mount_point,
            Path::new("/proc")
        );
    }
}
