//! Container cgroups with the cgroupfs driver: where they live, and live
//! resource updates (UpdateContainerResources). The OCI runtime creates and
//! removes each container's cgroup; this module only reads and writes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_oci::CgroupSupport;
use berth_podspec::Resources;

use crate::error::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup hierarchy of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 controllers (possibly with an unused v2 hierarchy beside them).
    V1,
    /// The unified v2 hierarchy.
    V2,
}

impl Layout {
    pub fn detect() -> Layout {
        if Path::new(ROOT).join("memory").is_dir() {
            Layout::V1
        } else {
            Layout::V2
        }
    }

    /// The directory of `controller` for the cgroup `path` (absolute,
    /// relative to the hierarchy root).
    pub fn dir(self, controller: &str, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        match self {
            Layout::V1 => Path::new(ROOT).join(controller).join(rel),
            Layout::V2 => Path::new(ROOT).join(rel),
        }
    }

    /// Whether the memory controller limits swap (v1 `memory.memsw.*`).
    pub fn swap_controller(self) -> bool {
        match self {
            Layout::V1 => Path::new(ROOT)
                .join("memory/memory.memsw.limit_in_bytes")
                .exists(),
            Layout::V2 => std::fs::read_to_string("/proc/swaps")
                .map(|s| s.lines().count() > 1)
                .unwrap_or(false),
        }
    }
}

/// The v1 controllers the kernel knows (a v1 mount's super options also
/// hold flags such as `clone_children` and `name=systemd`).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// What this host's cgroups offer containers, read once at start.
pub fn support(layout: Layout) -> CgroupSupport {
    let controllers = match layout {
        Layout::V1 => std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| v1_controllers(&m))
            .unwrap_or_default(),
        Layout::V2 => std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
    };
    let hugepage_sizes = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    berth_oci::resources::hugepage_size_name(&e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    let support = CgroupSupport {
        v2: layout == Layout::V2,
        swap: controllers.contains("memory") && layout.swap_controller(),
        controllers,
        hugepage_sizes,
    };
    tracing::info!(
        cgroup = if support.v2 { "v2" } else { "v1" },
        controllers = ?support.controllers,
        swap = support.swap,
        hugepages = ?support.hugepage_sizes,
        "container cgroups"
    );
    support
}

/// The controllers of the v1 hierarchies mounted in `mountinfo`.
fn v1_controllers(mountinfo: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in mountinfo.lines() {
        let Some((_, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut fields = after.split_whitespace();
        if fields.next() != Some("cgroup") {
            continue;
        }
        let super_opts = fields.nth(1).unwrap_or("");
        for opt in super_opts.split(',') {
            if V1_CONTROLLERS.contains(&opt) {
                out.insert(opt.to_string());
            }
        }
    }
    out
}

/// The cgroup path of a container: under the pod's parent (kubelet's
/// `cgroup_parent`), else under Berth's own `/berth`.
pub fn container_path(parent: &str, id: &str) -> String {
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/berth/{id}")
    } else if parent.starts_with('/') {
        format!("{parent}/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

fn write(dir: &Path, file: &str, value: impl ToString) -> Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, value.to_string()).map_err(|source| Error::Io {
        what: "writing",
        path,
        source,
    })
}

/// Applies new resources to a running container's cgroup. Limits of
/// controllers the host lacks are left out, as at creation; returns what
/// was left out.
pub fn update(
    layout: Layout,
    support: &CgroupSupport,
    path: &str,
    r: &Resources,
) -> Result<Vec<String>> {
    let mut left_out = Vec::new();
    let has = |c: &str| support.controllers.contains(c);
    match layout {
        Layout::V1 => {
            let cpu = layout.dir("cpu", path);
            if r.cpu_shares > 0 {
                write(&cpu, "cpu.shares", r.cpu_shares)?;
            }
            if r.cpu_period > 0 {
                write(&cpu, "cpu.cfs_period_us", r.cpu_period)?;
            }
            if r.cpu_quota != 0 {
                write(&cpu, "cpu.cfs_quota_us", r.cpu_quota)?;
            }
            let cpuset = layout.dir("cpuset", path);
            if !r.cpuset_cpus.is_empty() {
                write(&cpuset, "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write(&cpuset, "cpuset.mems", &r.cpuset_mems)?;
            }
            if r.memory_limit_in_bytes > 0 {
                let mem = layout.dir("memory", path);
                let limit = r.memory_limit_in_bytes;
                let swap = if r.memory_swap_limit_in_bytes > 0 {
                    r.memory_swap_limit_in_bytes.max(limit)
                } else {
                    limit
                };
                let memsw = mem.join("memory.memsw.limit_in_bytes").exists();
                // memsw must stay >= the limit at every step: raise it first
                // when growing, lower it last when shrinking.
                let current: i64 = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(i64::MAX);
                if memsw && limit > current {
                    write(&mem, "memory.memsw.limit_in_bytes", swap)?;
                    write(&mem, "memory.limit_in_bytes", limit)?;
                } else {
                    write(&mem, "memory.limit_in_bytes", limit)?;
                    if memsw {
                        write(&mem, "memory.memsw.limit_in_bytes", swap)?;
                    }
                }
            }
            for h in &r.hugepage_limits {
                if !has("hugetlb") || !support.hugepage_sizes.contains(&h.page_size) {
                    left_out.push(format!("the {} hugepage limit", h.page_size));
                    continue;
                }
                let dir = layout.dir("hugetlb", path);
                write(
                    &dir,
                    &format!("hugetlb.{}.limit_in_bytes", h.page_size),
                    h.limit,
                )?;
            }
            if !r.unified.is_empty() {
                left_out.push("cgroup v2 settings (the host uses cgroup v1)".to_string());
            }
        }
        Layout::V2 => {
            let dir = layout.dir("", path);
            if r.cpu_shares > 0 {
                // The kernel's mapping of shares [2, 262144] to weight [1, 10000].
                let shares = r.cpu_shares.clamp(2, 262_144) as u64;
                write(&dir, "cpu.weight", 1 + ((shares - 2) * 9999) / 262_142)?;
            }
            if r.cpu_quota != 0 || r.cpu_period > 0 {
                let quota = if r.cpu_quota > 0 {
                    r.cpu_quota.to_string()
                } else {
                    "max".into()
                };
                let period = if r.cpu_period > 0 {
                    r.cpu_period
                } else {
                    100_000
                };
                write(&dir, "cpu.max", format!("{quota} {period}"))?;
            }
            if !r.cpuset_cpus.is_empty() {
                write(&dir, "cpuset.cpus", &r.cpuset_cpus)?;
            }
            if !r.cpuset_mems.is_empty() {
                write(&dir, "cpuset.mems", &r.cpuset_mems)?;
            }
            if r.memory_limit_in_bytes > 0 {
                write(&dir, "memory.max", r.memory_limit_in_bytes)?;
                if r.memory_swap_limit_in_bytes > 0 && dir.join("memory.swap.max").exists() {
                    let swap = (r.memory_swap_limit_in_bytes - r.memory_limit_in_bytes).max(0);
                    write(&dir, "memory.swap.max", swap)?;
                }
            }
            for h in &r.hugepage_limits {
                if !has("hugetlb") || !support.hugepage_sizes.contains(&h.page_size) {
                    left_out.push(format!("the {} hugepage limit", h.page_size));
                    continue;
                }
                write(&dir, &format!("hugetlb.{}.max", h.page_size), h.limit)?;
            }
            for (k, v) in &r.unified {
                if k.contains('/') || k.starts_with('.') {
                    return Err(Error::InvalidArgument(format!(
                        "bad unified cgroup key {k:?}"
                    )));
                }
                write(&dir, k, v)?;
            }
        }
    }
    Ok(left_out)
}

/// SIGKILLs whatever runs in the cgroup `path` and removes its directories
/// (for a container whose runtime state is gone). Best effort, idempotent.
pub fn kill_and_remove(layout: Layout, path: &str) {
    let dirs: Vec<PathBuf> = match layout {
        Layout::V1 => std::fs::read_dir(ROOT)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir() && !e.path().is_symlink())
                    .map(|e| e.path().join(path.trim_start_matches('/')))
                    .collect()
            })
            .unwrap_or_default(),
        Layout::V2 => vec![layout.dir("", path)],
    };
    for d in dirs.iter().filter(|d| d.is_dir()) {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    for d in dirs.iter().filter(|d| d.is_dir()) {
        for _ in 0..50 {
            match std::fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_controllers_of_a_hybrid_host() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime shared:9 - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let c = v1_controllers(mountinfo);
        let names: Vec<&str> = c.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            ["cpu", "cpuacct", "cpuset", "memory", "net_cls", "net_prio"]
        );
    }

    #[test]
    fn container_paths() {
        assert_eq!(container_path("", "c1"), "/berth/c1");
        assert_eq!(container_path("/kubepods/pod1/", "c1"), "/kubepods/pod1/c1");
        assert_eq!(container_path("test.slice", "c1"), "/test.slice/c1");
        assert_eq!(
            Layout::V1.dir("memory", "/berth/c1"),
            PathBuf::from("/sys/fs/cgroup/memory/berth/c1")
        );
        assert_eq!(
            Layout::V2.dir("memory", "/berth/c1"),
            PathBuf::from("/sys/fs/cgroup/berth/c1")
        );
    }
}
