//! The node's settings that shape what the kubelet sends (its flags and
//! what it learns from the machine).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::dns::ResolvConf;
use crate::quantity::ParsedQuantity;

/// How pod cgroups are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Plain paths: `/kubepods/burstable/pod<uid>`.
    Cgroupfs,
    /// systemd slices: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`.
    Systemd,
}

/// The node's settings (the kubelet's flags and machine facts).
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// Where pod log directories go (kubelet `podLogsDir`, default `/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The kubelet's pods directory (`<root-dir>/pods`).
    pub pods_dir: PathBuf,
    /// The kubelet's `cgroupRoot` (default "/").
    pub cgroup_root: String,
    /// Whether pods get QoS cgroups (`cgroupsPerQOS`, default true).
    pub cgroups_per_qos: bool,
    /// The cgroup driver.
    pub cgroup_driver: CgroupDriver,
    /// Whether the host is on the cgroup v2 unified hierarchy.
    pub cgroup_v2: bool,
    /// Whether the v1 memory controller has swap accounting (`memory.memsw.limit_in_bytes`);
    /// on v1 it makes the kubelet send `memory_swap_limit_in_bytes` equal to the memory limit.
    pub swap_controller: bool,
    /// Cluster DNS server addresses (`clusterDNS`); empty makes ClusterFirst fall back to Default.
    pub cluster_dns: Vec<String>,
    /// The cluster domain (`clusterDomain`, e.g. "cluster.local"; may be empty).
    pub cluster_domain: String,
    /// The host resolver file (`resolvConf`); an empty path means "no host DNS".
    pub resolv_conf: PathBuf,
    /// The parsed contents of `resolv_conf` (see [`ResolvConf::read`]).
    pub host_dns: ResolvConf,
    /// The runtime handler for pods without a RuntimeClass.
    pub runtime_handler: String,
    /// The node's addresses, for `status.hostIP(s)` and DNS without a resolver file.
    pub node_ips: Vec<IpAddr>,
    /// The pod PID limit (`podPidsLimit`), if any.
    pub pod_pids_limit: Option<i64>,
    /// Whether CPU limits are enforced with CFS quota (`cpuCFSQuota`, default true).
    pub cpu_cfs_quota: bool,
    /// The CFS period in microseconds (100000 unless the CPUCFSQuotaPeriod gate is on).
    pub cpu_cfs_period_us: i64,
    /// The machine's memory in bytes (for the Burstable OOM score).
    pub memory_capacity: i64,
    /// Node allocatable resources (for downward API limits of containers without limits).
    pub allocatable: BTreeMap<String, ParsedQuantity>,
    /// Huge page sizes in the kubelet's notation ("2MB", "1GB"), in directory order.
    pub hugepage_sizes: Vec<String>,
    /// The paths the kubelet masks in every container (defaults plus per-CPU thermal_throttle).
    pub masked_paths: Vec<String>,
    /// Whether containers default to the RuntimeDefault seccomp profile (`seccompDefault`).
    pub seccomp_default: bool,
    /// Where Localhost seccomp profiles live (`<root-dir>/seccomp`).
    pub seccomp_profile_root: PathBuf,
    /// Whether the runtime supports recursive read-only mounts.
    pub supports_recursive_read_only: bool,
    /// Whether SELinux is enabled on the host (relabel flags are sent only then).
    pub selinux_enabled: bool,
    /// Whether the UserNamespacesSupport feature is on (default true in 1.36: sends `usernsOptions: NODE`).
    pub userns_support: bool,
    /// Whether the PodLevelResources feature is on (beta, default true in 1.36).
    pub pod_level_resources: bool,
}

impl NodeSettings {
    /// Settings as a default kubelet with root dir `root_dir` would use on this
    /// machine: reads `/etc/resolv.conf`, the huge page sizes, `/proc/meminfo`
    /// and the masked paths (blocking file reads).
    pub fn detect(node_name: &str, root_dir: &Path) -> NodeSettings {
        let resolv_conf = PathBuf::from("/etc/resolv.conf");
        let host_dns = ResolvConf::read(&resolv_conf).unwrap_or_default();
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        NodeSettings {
            node_name: node_name.to_string(),
            pod_logs_dir: PathBuf::from("/var/log/pods"),
            pods_dir: root_dir.join("pods"),
            cgroup_root: "/".to_string(),
            cgroups_per_qos: true,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_v2,
            swap_controller: cgroup_v2
                || Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            resolv_conf,
            host_dns,
            runtime_handler: String::new(),
            node_ips: Vec::new(),
            pod_pids_limit: None,
            cpu_cfs_quota: true,
            cpu_cfs_period_us: 100_000,
            memory_capacity: memory_capacity_from_proc().unwrap_or(i64::MAX),
            allocatable: BTreeMap::new(),
            hugepage_sizes: hugepage_sizes_from_sysfs(Path::new("/sys/kernel/mm/hugepages")),
            masked_paths: default_masked_paths(),
            seccomp_default: false,
            seccomp_profile_root: root_dir.join("seccomp"),
            supports_recursive_read_only: false,
            selinux_enabled: Path::new("/sys/fs/selinux/enforce").exists(),
            userns_support: true,
            pod_level_resources: true,
        }
    }
}

fn memory_capacity_from_proc() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The huge page sizes under `dir` (normally `/sys/kernel/mm/hugepages`) in
/// directory order, named as the kubelet names them ("2MB", "1GB").
pub fn hugepage_sizes_from_sysfs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(hugepage_dir_to_size))
        .collect()
}

fn hugepage_dir_to_size(name: &str) -> Option<String> {
    let kb: u64 = name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    Some(hugepage_size_name(kb))
}

/// A page size in kB in the kubelet's notation.
pub(crate) fn hugepage_size_name(kb: u64) -> String {
    if kb >= 1 << 20 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// The paths the kubelet masks in every container, before the per-CPU
/// `thermal_throttle` ones.
pub const BASE_MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths the kubelet masks in containers on this machine: a fixed list
/// plus `/sys/devices/system/cpu/cpu<N>/thermal_throttle` for each possible
/// CPU where it exists (blocking reads of sysfs).
pub fn default_masked_paths() -> Vec<String> {
    let mut paths: Vec<String> = BASE_MASKED_PATHS.iter().map(|s| s.to_string()).collect();
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    for cpu in parse_cpu_list(possible.trim()) {
        let p = format!("/sys/devices/system/cpu/cpu{cpu}/thermal_throttle");
        if Path::new(&p).exists() {
            paths.push(p);
        }
    }
    paths
}

fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The read-only paths the kubelet sends for every container with the default proc mount.
pub(crate) const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_names() {
        assert_eq!(
            hugepage_dir_to_size("hugepages-2048kB").as_deref(),
            Some("2MB")
        );
        assert_eq!(
            hugepage_dir_to_size("hugepages-1048576kB").as_deref(),
            Some("1GB")
        );
        assert_eq!(
            hugepage_dir_to_size("hugepages-64kB").as_deref(),
            Some("64KB")
        );
        assert_eq!(hugepage_dir_to_size("nr_hugepages"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5"), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
    }
}
