//! The files every container of a pod shares: `/etc/hostname`,
//! `/etc/resolv.conf`, `/etc/hosts` and the `/dev/shm` tmpfs. They live in
//! the pod's state directory and are bind-mounted into each container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_podspec::DnsConfig;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::error::{io, Error, Result};

/// Paths of a pod's shared files.
#[derive(Debug, Clone)]
pub struct PodFiles {
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    /// The pod's own tmpfs; `None` for host-IPC pods (they use the host's).
    pub shm: Option<PathBuf>,
}

impl PodFiles {
    pub fn at(pod_dir: &Path, own_shm: bool) -> PodFiles {
        PodFiles {
            hostname: pod_dir.join("hostname"),
            resolv_conf: pod_dir.join("resolv.conf"),
            hosts: pod_dir.join("hosts"),
            shm: own_shm.then(|| pod_dir.join("shm")),
        }
    }

    /// Writes the files and mounts the shm tmpfs.
    pub fn create(&self, hostname: &str, dns: Option<&DnsConfig>, shm_size: u64) -> Result<()> {
        write(&self.hostname, &format!("{hostname}\n"))?;
        write(&self.resolv_conf, &resolv_conf(dns)?)?;
        let hosts = if hostname_is_host(hostname) {
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| default_hosts())
        } else {
            default_hosts()
        };
        write(&self.hosts, &hosts)?;
        if let Some(shm) = &self.shm {
            std::fs::create_dir_all(shm).map_err(io("creating", shm))?;
            if !is_mountpoint(shm) {
                mount(
                    "shm",
                    shm,
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                    std::ffi::CString::new(format!("mode=1777,size={shm_size}"))
                        .expect("no NUL in the options")
                        .as_c_str(),
                )
                .map_err(|e| io("mounting tmpfs on", shm)(e.into()))?;
            }
        }
        Ok(())
    }

    /// Unmounts the shm tmpfs (idempotent).
    pub fn release(&self) -> Result<()> {
        if let Some(shm) = &self.shm {
            if is_mountpoint(shm) {
                unmount(shm, UnmountFlags::DETACH).map_err(|e| io("unmounting", shm)(e.into()))?;
            }
        }
        Ok(())
    }
}

fn hostname_is_host(name: &str) -> bool {
    rustix::system::uname().nodename().to_str().ok() == Some(name)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io("writing", path))
}

fn default_hosts() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
     fe00::2\tip6-allrouters\n"
        .to_string()
}

/// The pod's resolv.conf: from the CRI DNS config, else the host's.
pub fn resolv_conf(dns: Option<&DnsConfig>) -> Result<String> {
    let Some(dns) =
        dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
    else {
        return Ok(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    };
    let mut out = String::new();
    for field in dns.servers.iter().chain(&dns.searches).chain(&dns.options) {
        if field.contains(['\n', '\r']) {
            return Err(Error::InvalidArgument(format!(
                "DNS config value {field:?} contains a line break"
            )));
        }
    }
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// Whether `path` is the root of a mount.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape(m) == target)
}

/// A mount point as `/proc/self/mountinfo` escapes it, unescaped.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Checks that every sysctl is namespaced (so it only affects this pod)
/// and that network ones come with a pod network namespace.
pub fn check_sysctls(
    sysctls: &BTreeMap<String, String>,
    own_netns: bool,
    own_ipc: bool,
) -> Result<()> {
    for (k, v) in sysctls {
        let key = k.replace('/', ".");
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if !(ipc || net) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {k} is not namespaced: setting it would change the host"
            )));
        }
        if (net && !own_netns) || (ipc && !own_ipc) {
            return Err(Error::InvalidArgument(format!(
                "sysctl {k} needs the pod's own {} namespace, but the pod uses the host's",
                if net { "network" } else { "IPC" }
            )));
        }
        if v.contains(['\n', '\0']) || key.contains("..") {
            return Err(Error::InvalidArgument(format!("bad sysctl {k}={v:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into(), "8.8.8.8".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)).unwrap(),
            "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\nnameserver 8.8.8.8\noptions ndots:5\n"
        );
        let bad = DnsConfig {
            servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(matches!(
            resolv_conf(Some(&bad)),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let ok = BTreeMap::from([
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ("fs.mqueue.msg_max".to_string(), "100".to_string()),
            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ]);
        check_sysctls(&ok, true, true).unwrap();
        assert!(check_sysctls(&ok, false, true).is_err());
        assert!(check_sysctls(&ok, true, false).is_err());
        let host = BTreeMap::from([("vm.swappiness".to_string(), "1".to_string())]);
        assert!(check_sysctls(&host, true, true).is_err());
    }

    #[test]
    fn pod_files_are_written_and_shm_mounted_then_released() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFiles::at(dir.path(), true);
        files.create("pod-a", None, 1 << 20).unwrap();
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "pod-a\n");
        assert!(std::fs::read_to_string(&files.hosts)
            .unwrap()
            .contains("localhost"));
        let shm = files.shm.clone().unwrap();
        assert!(is_mountpoint(&shm));
        files.release().unwrap();
        assert!(!is_mountpoint(&shm));
        files.release().unwrap();
    }
}
