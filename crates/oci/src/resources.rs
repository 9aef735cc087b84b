//! cgroup limits: a container's `Resources` → OCI `linux.resources`,
//! bounded by what the host's cgroups offer.
//!
//! The kubelet sends the same resources on every host: a hugepage limit for
//! every page size in `/sys/kernel/mm/hugepages`, a swap limit, `unified`
//! keys for cgroup v2. A limit for a controller the host lacks is left out
//! and named in the result (the caller logs it once), as containerd and
//! CRI-O do; an OCI runtime would refuse the whole container. A malformed
//! value is an error.

use std::collections::BTreeSet;

use berth_podspec::Resources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::error::SpecError;

/// What the host's cgroups offer a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSupport {
    /// The unified (v2) hierarchy is the one containers live in: `unified`
    /// keys apply. On v1 (and the v1 side of a hybrid host) they do not.
    pub v2: bool,
    /// The controllers containers can be limited by (`cpu`, `cpuset`,
    /// `memory`, `hugetlb`, ...): mounted v1 hierarchies on v1, the root's
    /// `cgroup.controllers` on v2.
    pub controllers: BTreeSet<String>,
    /// Memory + swap can be limited (`memory.memsw.*` on v1, swap enabled
    /// on v2).
    pub swap: bool,
    /// The hugepage sizes the host has, as the CRI names them (`2MB`, `1GB`).
    pub hugepage_sizes: BTreeSet<String>,
}

impl CgroupSupport {
    /// A host with every controller, swap and the given page sizes (tests).
    pub fn everything(v2: bool, hugepage_sizes: &[&str]) -> CgroupSupport {
        CgroupSupport {
            v2,
            controllers: ["cpu", "cpuset", "memory", "hugetlb", "pids"]
                .into_iter()
                .map(String::from)
                .collect(),
            swap: true,
            hugepage_sizes: hugepage_sizes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.contains(controller)
    }
}

/// The CRI name of a hugepage size directory (`hugepages-2048kB` → `2MB`),
/// as the kubelet and runc name them.
pub fn hugepage_size_name(dir_name: &str) -> Option<String> {
    let kb: u64 = dir_name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    let bytes = kb.checked_mul(1024)?;
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && value % 1024 == 0 && unit + 1 < units.len() {
        value /= 1024;
        unit += 1;
    }
    Some(format!("{value}{}", units[unit]))
}

/// Whether `size` looks like a CRI hugepage size (`2MB`, `64KB`, `1GB`).
fn valid_page_size(size: &str) -> bool {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "B" | "KB" | "MB" | "GB" | "TB" | "PB")
}

fn non_negative(field: &str, v: i64) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| SpecError::invalid(field, format!("{v} is negative")))
}

/// The limits of `r` the host can apply, and a description of each one it
/// cannot (left out).
pub(crate) fn resources(
    r: Option<&Resources>,
    host: &CgroupSupport,
) -> Result<(LinuxResources, Vec<String>), SpecError> {
    let mut out = LinuxResources::default();
    let mut left_out = Vec::new();
    let Some(r) = r else {
        return Ok((out, left_out));
    };

    // Validate everything first: a malformed value is an error whatever
    // the host offers.
    let period = (r.cpu_period != 0)
        .then(|| non_negative("cpu_period", r.cpu_period))
        .transpose()?;
    let shares = (r.cpu_shares != 0)
        .then(|| non_negative("cpu_shares", r.cpu_shares))
        .transpose()?;
    if r.memory_limit_in_bytes < 0 {
        return Err(SpecError::invalid(
            "memory_limit_in_bytes",
            format!("{} is negative", r.memory_limit_in_bytes),
        ));
    }
    let swap = match r.memory_swap_limit_in_bytes {
        0 => None,
        -1 => Some(-1),
        s if s < 0 => {
            return Err(SpecError::invalid(
                "memory_swap_limit_in_bytes",
                format!("{s} is negative (only -1, unlimited, is allowed)"),
            ))
        }
        s if r.memory_limit_in_bytes > 0 && s < r.memory_limit_in_bytes => {
            return Err(SpecError::invalid(
                "memory_swap_limit_in_bytes",
                format!(
                    "{s} is below memory_limit_in_bytes {} (it counts memory + swap)",
                    r.memory_limit_in_bytes
                ),
            ))
        }
        s => Some(s),
    };
    let mut hugepages = Vec::with_capacity(r.hugepage_limits.len());
    for h in &r.hugepage_limits {
        if !valid_page_size(&h.page_size) {
            return Err(SpecError::invalid(
                "hugepage page_size",
                format!("{:?} is not a page size such as 2MB or 1GB", h.page_size),
            ));
        }
        let limit = i64::try_from(h.limit).map_err(|_| {
            SpecError::invalid("hugepage limit", format!("{} is too large", h.limit))
        })?;
        hugepages.push((h.page_size.clone(), limit));
    }

    let mut cpu = LinuxCpu::default();
    let cpu_asked = period.is_some() || r.cpu_quota != 0 || shares.is_some();
    if cpu_asked && !host.has("cpu") {
        left_out.push("CPU shares and quota (no cpu controller)".to_string());
    } else {
        cpu.set_period(period);
        cpu.set_quota((r.cpu_quota != 0).then_some(r.cpu_quota));
        cpu.set_shares(shares);
    }
    let cpuset_asked = !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty();
    if cpuset_asked && !host.has("cpuset") {
        left_out.push("cpuset (no cpuset controller)".to_string());
    } else {
        if !r.cpuset_cpus.is_empty() {
            cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        }
        if !r.cpuset_mems.is_empty() {
            cpu.set_mems(Some(r.cpuset_mems.clone()));
        }
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    if r.memory_limit_in_bytes > 0 {
        if host.has("memory") {
            let limit = r.memory_limit_in_bytes;
            let mut memory = LinuxMemory::default();
            memory.set_limit(Some(limit));
            // OCI's swap is memory + swap (cgroup v1's memsw; runtimes
            // subtract the limit for v2's memory.swap.max): equal to the
            // limit means no swap.
            if host.swap {
                memory.set_swap(Some(swap.unwrap_or(limit)));
            } else if swap.is_some_and(|s| s != limit) {
                left_out.push("the swap limit (swap accounting is off)".to_string());
            }
            out.set_memory(Some(memory));
        } else {
            left_out.push("the memory limit (no memory controller)".to_string());
        }
    }

    if !hugepages.is_empty() {
        if host.has("hugetlb") {
            let mut limits = Vec::new();
            for (size, limit) in hugepages {
                if host.hugepage_sizes.contains(&size) {
                    let mut l = LinuxHugepageLimit::default();
                    l.set_page_size(size).set_limit(limit);
                    limits.push(l);
                } else {
                    left_out.push(format!("the {size} hugepage limit (no such page size)"));
                }
            }
            if !limits.is_empty() {
                out.set_hugepage_limits(Some(limits));
            }
        } else {
            left_out.push("hugepage limits (no hugetlb controller)".to_string());
        }
    }
    if !r.unified.is_empty() {
        if host.v2 {
            out.set_unified(Some(r.unified.clone().into_iter().collect()));
        } else {
            let keys: Vec<&str> = r.unified.keys().map(String::as_str).collect();
            left_out.push(format!(
                "cgroup v2 settings {} (the host uses cgroup v1)",
                keys.join(", ")
            ));
        }
    }
    Ok((out, left_out))
}

#[cfg(test)]
mod tests {
    use berth_podspec::HugepageLimit;

    use super::*;

    fn hybrid() -> CgroupSupport {
        // This development VM: v1 controllers, hugetlb only on the unified
        // hierarchy, no swap accounting.
        CgroupSupport {
            v2: false,
            controllers: ["cpu", "cpuacct", "cpuset", "memory", "pids", "devices"]
                .into_iter()
                .map(String::from)
                .collect(),
            swap: false,
            hugepage_sizes: ["2MB".to_string()].into(),
        }
    }

    fn kubelet_burstable() -> Resources {
        Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 128 << 20,
            oom_score_adj: 999,
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 0,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn page_size_names() {
        assert_eq!(
            hugepage_size_name("hugepages-2048kB").as_deref(),
            Some("2MB")
        );
        assert_eq!(
            hugepage_size_name("hugepages-1048576kB").as_deref(),
            Some("1GB")
        );
        assert_eq!(
            hugepage_size_name("hugepages-64kB").as_deref(),
            Some("64KB")
        );
        assert_eq!(
            hugepage_size_name("hugepages-32768kB").as_deref(),
            Some("32MB")
        );
        assert_eq!(hugepage_size_name("hugepages-x"), None);
        assert_eq!(hugepage_size_name("other"), None);
    }

    #[test]
    fn hugepages_without_hugetlb_are_left_out() {
        let (out, left) = resources(Some(&kubelet_burstable()), &hybrid()).unwrap();
        assert!(out.hugepage_limits().is_none());
        assert_eq!(left, ["hugepage limits (no hugetlb controller)"]);
        // Everything else stays.
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(out.memory().unwrap().limit(), Some(128 << 20));
        assert_eq!(out.memory().unwrap().swap(), None);
    }

    #[test]
    fn unknown_page_sizes_are_left_out_one_by_one() {
        let (out, left) = resources(
            Some(&kubelet_burstable()),
            &CgroupSupport::everything(true, &["2MB"]),
        )
        .unwrap();
        let limits = out.hugepage_limits().clone().unwrap();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].page_size(), "2MB");
        assert_eq!(left, ["the 1GB hugepage limit (no such page size)"]);
    }

    #[test]
    fn malformed_values_are_errors_on_every_host() {
        for host in [hybrid(), CgroupSupport::everything(true, &["2MB"])] {
            let mut r = kubelet_burstable();
            r.hugepage_limits[0].page_size = "2 megabytes".into();
            assert!(resources(Some(&r), &host).is_err());
            let mut r = kubelet_burstable();
            r.cpu_shares = -2;
            assert!(resources(Some(&r), &host).is_err());
            let mut r = kubelet_burstable();
            r.memory_swap_limit_in_bytes = -5;
            assert!(resources(Some(&r), &host).is_err());
        }
    }

    #[test]
    fn unified_keys_only_on_v2() {
        let mut r = kubelet_burstable();
        r.unified.insert("memory.high".into(), "100000000".into());
        let (out, left) = resources(Some(&r), &hybrid()).unwrap();
        assert!(out.unified().is_none());
        assert!(left.iter().any(|l| l.contains("memory.high")));
        let (out, _) = resources(Some(&r), &CgroupSupport::everything(true, &["2MB"])).unwrap();
        assert_eq!(out.unified().clone().unwrap()["memory.high"], "100000000");
    }

    #[test]
    fn missing_cpu_and_memory_controllers() {
        let host = CgroupSupport {
            controllers: BTreeSet::new(),
            ..hybrid()
        };
        let (out, left) = resources(Some(&kubelet_burstable()), &host).unwrap();
        assert!(out.cpu().is_none());
        assert!(out.memory().is_none());
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[test]
    fn swap_only_where_accounted() {
        let mut r = kubelet_burstable();
        r.memory_swap_limit_in_bytes = 256 << 20;
        let (out, left) = resources(Some(&r), &hybrid()).unwrap();
        assert_eq!(out.memory().unwrap().swap(), None);
        assert_eq!(left.len(), 2, "{left:?}");
        let (out, _) = resources(Some(&r), &CgroupSupport::everything(false, &[])).unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(256 << 20));
        // Without a swap request, swap = limit (none) where accounted.
        let (out, _) = resources(
            Some(&kubelet_burstable()),
            &CgroupSupport::everything(false, &[]),
        )
        .unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(128 << 20));
    }
}
