//! The container's mounts: the system mounts every container gets, the
//! pod's files (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/dev/shm`) and the CRI's bind mounts.
//!
//! Like containerd, a CRI mount replaces a system or pod mount with the
//! same destination (a CRI `/dev` replaces every `/dev/...` system mount);
//! the system mounts come first in a fixed order, then the bind mounts
//! sorted by depth so that a parent is mounted before its children.

use std::path::{Component, Path, PathBuf};

use berth_podspec::{Mount as ConfigMount, MountPropagation};
use oci_spec::runtime::Mount;

use crate::error::SpecError;
use crate::host::{mount_of, Host};
use crate::spec::PodFiles;

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination))
        .set_typ(Some(typ.to_string()))
        .set_source(Some(PathBuf::from(source)))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// How the system mounts differ between containers.
pub(crate) struct SystemOptions {
    /// `/sys` and `/sys/fs/cgroup` writable.
    pub privileged: bool,
    /// The pod gives `/dev/shm`: no tmpfs of the container's own.
    pub pod_shm: bool,
    /// `gid=5` (tty) is not mapped in the container's user namespace, so
    /// `/dev/pts` cannot use it.
    pub tty_gid_unmapped: bool,
    /// A new user namespace in the host network namespace: sysfs cannot be
    /// mounted there, so the host's `/sys` is bind-mounted read-only.
    pub bind_sys: bool,
    /// The handler supports `rro` (for that `/sys` bind).
    pub rro: bool,
}

/// The mounts every container gets, in mount order.
pub(crate) fn system_mounts(o: &SystemOptions) -> Vec<Mount> {
    let rw_or_ro = if o.privileged { "rw" } else { "ro" };
    let mut pts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !o.tty_gid_unmapped {
        pts.push("gid=5");
    }
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount("/dev/pts", "devpts", "devpts", &pts),
    ];
    if !o.pod_shm {
        mounts.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ));
    }
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ));
    if o.bind_sys {
        let ro = if o.rro { "rro" } else { "ro" };
        mounts.push(mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", ro, "nosuid", "nodev", "noexec"],
        ));
    } else {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", rw_or_ro],
        ));
    }
    mounts.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", rw_or_ro],
    ));
    mounts
}

/// A bind mount to make: from the CRI or from the pod's files.
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub container_path: PathBuf,
    pub host_path: PathBuf,
    pub readonly: bool,
    pub recursive_read_only: bool,
    pub propagation: MountPropagation,
}

/// The pod's files as bind mounts: read-only when the rootfs is (except
/// `/dev/shm`). The files must exist.
pub(crate) fn pod_binds(files: &PodFiles, readonly_rootfs: bool) -> Result<Vec<Bind>, SpecError> {
    let wanted = [
        (&files.hostname, "/etc/hostname", readonly_rootfs),
        (&files.hosts, "/etc/hosts", readonly_rootfs),
        (&files.resolv_conf, "/etc/resolv.conf", readonly_rootfs),
        (&files.shm, "/dev/shm", false),
    ];
    let mut binds = Vec::new();
    for (source, destination, readonly) in wanted {
        let Some(source) = source else { continue };
        // The runtime made these files: a missing one is its problem, not
        // the request's.
        std::fs::metadata(source).map_err(|e| SpecError::Io {
            what: "pod file",
            path: source.clone(),
            source: e,
        })?;
        binds.push(Bind {
            container_path: PathBuf::from(destination),
            host_path: source.clone(),
            readonly,
            recursive_read_only: false,
            propagation: MountPropagation::Private,
        });
    }
    Ok(binds)
}

/// A CRI mount as a bind to make, checked: an absolute destination, an
/// existing host path (symlinks resolved), a known propagation, and a
/// recursive read-only mode only where it can work.
pub(crate) fn cri_bind(m: &ConfigMount, rro_supported: bool) -> Result<Bind, SpecError> {
    let field = "mount";
    let container_path = PathBuf::from(&m.container_path);
    if !container_path.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!(
                "container_path {:?} is not an absolute path",
                m.container_path
            ),
        ));
    }
    if m.image.is_some() || !m.image_sub_path.is_empty() {
        return Err(SpecError::invalid(
            field,
            format!(
                "{:?}: image volume mounts are not supported",
                m.container_path
            ),
        ));
    }
    if m.host_path.is_empty() {
        return Err(SpecError::invalid(
            field,
            format!("{:?}: host_path is empty", m.container_path),
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::invalid(
            field,
            format!(
                "{:?}: ID-mapped mounts (uidMappings/gidMappings) are not supported",
                m.container_path
            ),
        ));
    }
    let propagation = m.propagation;
    if m.recursive_read_only {
        if !m.readonly {
            return Err(SpecError::invalid(
                field,
                format!(
                    "recursive read-only mount conflicts with RW mount (hostPath={:?})",
                    m.host_path
                ),
            ));
        }
        if !rro_supported {
            return Err(SpecError::invalid(
                field,
                format!(
                    "runtime handler does not support recursive read-only mounts (hostPath={:?})",
                    m.host_path
                ),
            ));
        }
        if propagation != MountPropagation::Private {
            return Err(SpecError::invalid(
                field,
                format!(
                    "recursive read-only mount needs private propagation, got {:?} (hostPath={:?})",
                    propagation.as_str(),
                    m.host_path
                ),
            ));
        }
    }
    let host_path = std::fs::canonicalize(&m.host_path)
        .map_err(|e| SpecError::io("mount host path", &m.host_path, e))?;
    Ok(Bind {
        container_path,
        host_path,
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation,
    })
}

/// `path` without `.`, `..` (lexically, never above `/`) and repeated `/`.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// How deep a mount point is: `/` 0, `/a` 1, `/a/b` 2.
fn depth(path: &Path) -> usize {
    clean(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Turns binds into OCI mounts and works out the rootfs propagation they
/// need.
pub(crate) struct BindMounter<'h> {
    host: &'h dyn Host,
    mountinfo: Option<String>,
    /// `linux.rootfsPropagation`, in OCI spelling (`rshared`, `rslave`).
    pub rootfs_propagation: Option<String>,
}

impl<'h> BindMounter<'h> {
    pub fn new(host: &'h dyn Host) -> Self {
        BindMounter {
            host,
            mountinfo: None,
            rootfs_propagation: None,
        }
    }

    /// Checks that the host mount holding `path` propagates as needed.
    fn check_propagation(
        &mut self,
        path: &Path,
        propagation: &'static str,
        slave_ok: bool,
    ) -> Result<(), SpecError> {
        if self.mountinfo.is_none() {
            let text = self.host.mountinfo().map_err(|e| SpecError::Io {
                what: "mount table",
                path: PathBuf::from("/proc/self/mountinfo"),
                source: e,
            })?;
            self.mountinfo = Some(text);
        }
        let info = self.mountinfo.as_deref().and_then(|mi| mount_of(mi, path));
        let ok = info
            .as_ref()
            .is_some_and(|i| i.is_shared() || (slave_ok && i.is_slave()));
        if ok {
            return Ok(());
        }
        Err(SpecError::Propagation {
            propagation,
            path: path.to_path_buf(),
            mount_point: info.map_or_else(|| PathBuf::from("/"), |i| i.mount_point),
            needed: if slave_ok {
                "shared or slave"
            } else {
                "shared"
            },
        })
    }

    /// The OCI mount for a bind: `rbind`, the propagation, then `rro`,
    /// `ro` (this mount only: submounts stay as they are) or `rw`.
    pub fn mount(&mut self, b: &Bind) -> Result<Mount, SpecError> {
        let propagation = match b.propagation {
            MountPropagation::Private => "rprivate",
            MountPropagation::HostToContainer => {
                self.check_propagation(&b.host_path, "HOST_TO_CONTAINER", true)?;
                if self.rootfs_propagation.as_deref() != Some("rshared") {
                    self.rootfs_propagation = Some("rslave".into());
                }
                "rslave"
            }
            MountPropagation::Bidirectional => {
                self.check_propagation(&b.host_path, "BIDIRECTIONAL", false)?;
                self.rootfs_propagation = Some("rshared".into());
                "rshared"
            }
        };
        let mode = match (b.readonly, b.recursive_read_only) {
            (true, true) => "rro",
            (true, false) => "ro",
            (false, _) => "rw",
        };
        let mut m = Mount::default();
        m.set_destination(b.container_path.clone())
            .set_typ(Some("bind".into()))
            .set_source(Some(b.host_path.clone()))
            .set_options(Some(vec!["rbind".into(), propagation.into(), mode.into()]));
        Ok(m)
    }
}

/// All mounts of the container: `system` (minus those a bind replaces),
/// then the CRI binds and the pod binds they do not replace, sorted by
/// depth (stable: equal depths keep their order, CRI mounts first).
pub(crate) fn assemble(
    system: Vec<Mount>,
    cri: Vec<Bind>,
    pod: Vec<Bind>,
    mounter: &mut BindMounter<'_>,
) -> Result<Vec<Mount>, SpecError> {
    let cri_destinations: Vec<PathBuf> = cri.iter().map(|b| clean(&b.container_path)).collect();
    let mut binds = cri;
    binds.extend(
        pod.into_iter()
            .filter(|b| !cri_destinations.contains(&clean(&b.container_path))),
    );
    binds.sort_by_key(|b| depth(&b.container_path));

    let bound: Vec<PathBuf> = binds.iter().map(|b| clean(&b.container_path)).collect();
    let dev_bound = bound.iter().any(|p| p == Path::new("/dev"));
    let mut mounts: Vec<Mount> = system
        .into_iter()
        .filter(|m| {
            let d = clean(m.destination());
            // A bind on `/dev` replaces everything mounted under it too.
            let replaced = bound.contains(&d) || (dev_bound && d.starts_with("/dev"));
            !replaced
        })
        .collect();
    for b in &binds {
        mounts.push(mounter.mount(b)?);
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_and_depth() {
        assert_eq!(clean(Path::new("/a/./b/../c//d/")), Path::new("/a/c/d"));
        assert_eq!(clean(Path::new("/../..")), Path::new("/"));
        assert_eq!(depth(Path::new("/")), 0);
        assert_eq!(depth(Path::new("/etc/hosts")), 2);
        assert_eq!(depth(Path::new("/etc/./hosts/")), 2);
    }

    #[test]
    fn system_mount_variants() {
        let base = SystemOptions {
            privileged: false,
            pod_shm: false,
            tty_gid_unmapped: false,
            bind_sys: false,
            rro: false,
        };
        let find =
            |ms: &[Mount], d: &str| ms.iter().find(|m| m.destination() == Path::new(d)).cloned();
        let ms = system_mounts(&base);
        assert_eq!(ms.len(), 7);
        assert_eq!(
            find(&ms, "/dev/shm").unwrap().options().clone().unwrap(),
            ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        );
        let ms = system_mounts(&SystemOptions {
            pod_shm: true,
            bind_sys: true,
            ..base
        });
        assert!(find(&ms, "/dev/shm").is_none());
        let sys = find(&ms, "/sys").unwrap();
        assert_eq!(
            sys.options().clone().unwrap(),
            ["rbind", "ro", "nosuid", "nodev", "noexec"]
        );
        assert_eq!(sys.source().as_deref(), Some(Path::new("/sys")));
    }
}
