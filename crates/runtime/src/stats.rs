//! ContainerStats and ListContainerStats: CPU and memory from the
//! container's cgroup, writable-layer usage from its overlay upper dir.
//! PodSandboxStats and ListPodSandboxStats: the pod's cgroup (the kubelet's
//! `cgroup_parent`; else the sum of its containers'), its process count,
//! and the interfaces of its network namespace, read from its monitor's
//! `/proc/<pid>/net/dev` (the monitor lives in that namespace).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cgroups::Layout;
use crate::container::ContainerFilter;
use crate::error::Result;
use crate::{now_ns, ContainerRecord, Runtime};

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines of a cgroup file.
pub(crate) fn stat_file(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A container's usage, as ContainerStats reports it.
#[derive(Debug, Clone)]
pub struct ContainerStats {
    /// The container (its id, metadata, labels and annotations).
    pub record: ContainerRecord,
    /// When CPU and memory were read (ns since the epoch).
    pub timestamp: i64,
    /// `None`: the cgroup is gone.
    pub cpu: Option<CpuUsage>,
    pub memory: Option<MemoryUsage>,
    pub writable_layer: WritableLayer,
    /// `None` where the host does not account swap.
    pub swap: Option<SwapUsage>,
    /// I/O pressure; `None` where the kernel does not report it for the
    /// container's cgroup.
    pub io_psi: Option<Psi>,
}

/// Swap of a container, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapUsage {
    pub usage_bytes: u64,
    /// Limit minus usage; `None` without a limit.
    pub available_bytes: Option<u64>,
}

/// Pressure stall information of one resource (`cpu.pressure`,
/// `memory.pressure`, `io.pressure`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Psi {
    pub some: PsiData,
    /// Absent for CPU on kernels before 5.13.
    pub full: Option<PsiData>,
}

/// One line of a pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PsiData {
    /// Time stalled, in nanoseconds (the kernel counts microseconds).
    pub total_ns: u64,
    /// Percent of the last 10, 60 and 300 seconds.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

/// Parses a pressure file: `some avg10=.. avg60=.. avg300=.. total=..`
/// and the same for `full`.
pub fn parse_pressure(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut d = PsiData::default();
        for w in words {
            let (k, v) = w.split_once('=')?;
            match k {
                "avg10" => d.avg10 = v.parse().ok()?,
                "avg60" => d.avg60 = v.parse().ok()?,
                "avg300" => d.avg300 = v.parse().ok()?,
                "total" => d.total_ns = v.parse::<u64>().ok()?.saturating_mul(1000),
                _ => {}
            }
        }
        match kind {
            "some" => some = Some(d),
            "full" => full = Some(d),
            _ => {}
        }
    }
    Some(Psi { some: some?, full })
}

/// The pressure of `resource` (`cpu`, `memory`, `io`) in a cgroup: on v2
/// its own directory; on a v1 host, the unified hierarchy's cgroup of the
/// same path when the OCI runtime made one (runc does in hybrid mode).
fn pressure(layout: Layout, path: &str, resource: &str) -> Option<Psi> {
    let dir = match layout {
        Layout::V2 => layout.dir("", path),
        Layout::V1 => layout.dir("unified", path),
    };
    let text = std::fs::read_to_string(dir.join(format!("{resource}.pressure"))).ok()?;
    parse_pressure(&text)
}

/// Swap use of a cgroup: v2 `memory.swap.current` and `memory.swap.max`;
/// v1 the memory+swap counters minus memory's, where swap is accounted.
fn swap(layout: Layout, path: &str) -> Option<SwapUsage> {
    let dir = layout.dir("memory", path);
    let unlimited = |l: u64| l >= (1 << 62);
    match layout {
        Layout::V2 => {
            let usage = read_u64(&dir.join("memory.swap.current"))?;
            // "max" does not parse: no limit.
            let limit = read_u64(&dir.join("memory.swap.max")).filter(|l| !unlimited(*l));
            Some(SwapUsage {
                usage_bytes: usage,
                available_bytes: limit.map(|l| l.saturating_sub(usage)),
            })
        }
        Layout::V1 => {
            let memsw = read_u64(&dir.join("memory.memsw.usage_in_bytes"))?;
            let mem = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let memsw_limit =
                read_u64(&dir.join("memory.memsw.limit_in_bytes")).filter(|l| !unlimited(*l));
            Some(SwapUsage {
                usage_bytes: memsw.saturating_sub(mem),
                available_bytes: memsw_limit.map(|l| l.saturating_sub(memsw)),
            })
        }
    }
}

/// CPU time of a container.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    /// Cumulative, in nanoseconds.
    pub usage_core_nano_seconds: u64,
    /// Since the previous sample; `None` on the first.
    pub usage_nano_cores: Option<u64>,
    pub psi: Option<Psi>,
}

/// Memory of a container, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct MemoryUsage {
    pub working_set_bytes: u64,
    /// Limit minus working set; `None` without a limit.
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub psi: Option<Psi>,
}

/// A pod's usage, as PodSandboxStats reports it.
#[derive(Debug, Clone)]
pub struct PodStats {
    pub record: crate::sandbox::SandboxRecord,
    pub timestamp: i64,
    pub cpu: Option<CpuUsage>,
    pub memory: Option<MemoryUsage>,
    /// Processes in the pod's cgroups.
    pub processes: Option<u64>,
    /// The pod cgroup's I/O pressure, where the kernel reports it.
    pub io_psi: Option<Psi>,
    /// The pod's interfaces (`lo` left out); empty for host-network pods.
    pub interfaces: Vec<InterfaceStats>,
    pub containers: Vec<ContainerStats>,
}

/// One network interface's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev`: every interface but `lo`.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            (name != "lo" && v.len() >= 12).then(|| InterfaceStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// `/proc/<pid>/net/dev` of a process in the pod's network namespace: the
/// monitor joins it, except in a user-namespaced pod, where the pod init
/// created it. Checked against the pinned namespace: a process elsewhere
/// (the host's namespace) would report the host's interfaces as the pod's.
fn pod_net_dev(pod: &crate::sandbox::SandboxRecord) -> Option<String> {
    let pinned = std::fs::metadata(pod.netns.as_ref()?).ok()?;
    if !pod.monitor_alive() {
        return None;
    }
    let candidates = pod.pod_init.into_iter().chain(pod.monitor.map(|m| m.pid));
    for pid in candidates {
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if (ns.dev(), ns.ino()) == (pinned.dev(), pinned.ino()) {
            return std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok();
        }
    }
    None
}

/// Processes in a cgroup (`pids.current`, else `cgroup.procs` lines).
pub(crate) fn process_count(layout: Layout, path: &str) -> Option<u64> {
    read_u64(&layout.dir("pids", path).join("pids.current")).or_else(|| {
        let procs =
            std::fs::read_to_string(layout.dir("memory", path).join("cgroup.procs")).ok()?;
        Some(procs.lines().count() as u64)
    })
}

/// A container's writable layer.
#[derive(Debug, Clone)]
pub struct WritableLayer {
    /// When it was measured (ns since the epoch).
    pub timestamp: i64,
    /// The filesystem the layers are on.
    pub mountpoint: String,
    /// Bytes and inodes; `None` until first measured.
    pub used: Option<(u64, u64)>,
}

/// Cumulative CPU time in nanoseconds, if the cgroup exists.
fn cpu_usage(layout: Layout, path: &str) -> Option<u64> {
    match layout {
        Layout::V1 => read_u64(&layout.dir("cpuacct", path).join("cpuacct.usage")),
        Layout::V2 => stat_file(&layout.dir("", path).join("cpu.stat"))
            .get("usage_usec")
            .map(|u| u * 1000),
    }
}

fn memory(layout: Layout, path: &str) -> Option<MemoryUsage> {
    let dir = layout.dir("memory", path);
    let (usage, limit, stat) = match layout {
        Layout::V1 => (
            read_u64(&dir.join("memory.usage_in_bytes"))?,
            read_u64(&dir.join("memory.limit_in_bytes")),
            stat_file(&dir.join("memory.stat")),
        ),
        Layout::V2 => (
            read_u64(&dir.join("memory.current"))?,
            read_u64(&dir.join("memory.max")),
            stat_file(&dir.join("memory.stat")),
        ),
    };
    let get = |v1: &str, v2: &str| {
        let k = if layout == Layout::V1 { v1 } else { v2 };
        stat.get(k).copied().unwrap_or(0)
    };
    let inactive = get("total_inactive_file", "inactive_file");
    let working_set = usage.saturating_sub(inactive);
    // v1 reports "no limit" as a huge page-aligned number.
    let limit = limit.filter(|l| *l < (1 << 62));
    Some(MemoryUsage {
        working_set_bytes: working_set,
        available_bytes: limit.map(|l| l.saturating_sub(working_set)),
        usage_bytes: usage,
        rss_bytes: get("total_rss", "anon"),
        page_faults: get("total_pgfault", "pgfault"),
        major_page_faults: get("total_pgmajfault", "pgmajfault"),
        psi: pressure(layout, path, "memory"),
    })
}

/// Bytes and inodes under `dir`, each inode once.
fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert(m.ino()) {
                bytes += m.blocks() * 512;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, seen.len() as u64)
}

/// How often writable layers are measured (containerd's snapshot syncer
/// runs every 10 s too): walking them on every stats call would put a
/// file-tree walk per container on the request path.
pub(crate) const LAYER_USAGE_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// A container's writable layer, as last measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerUsage {
    pub measured_at: i64,
    pub bytes: u64,
    pub inodes: u64,
}

/// Measures every container's writable layer now and then, in a blocking
/// task, until the runtime is dropped.
pub(crate) fn spawn_layer_usage_refresher(rt: &Runtime) {
    let weak = std::sync::Arc::downgrade(&rt.inner);
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            rt.refresh_layer_usage().await;
            drop(rt);
            tokio::time::sleep(LAYER_USAGE_PERIOD).await;
        }
    });
}

impl Runtime {
    /// Walks every container's writable layer (a blocking task) and
    /// replaces the cached figures; removed containers are forgotten.
    pub(crate) async fn refresh_layer_usage(&self) {
        let uppers: Vec<(String, std::path::PathBuf)> = self
            .read_index()
            .containers
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    self.inner.root.join("rootfs").join(id).join("upper"),
                )
            })
            .collect();
        let measured = tokio::task::spawn_blocking(move || {
            uppers
                .into_iter()
                .map(|(id, upper)| {
                    let (bytes, inodes) = disk_usage(&upper);
                    let usage = LayerUsage {
                        measured_at: now_ns(),
                        bytes,
                        inodes,
                    };
                    (id, usage)
                })
                .collect::<HashMap<_, _>>()
        })
        .await;
        match measured {
            Ok(m) => {
                *self
                    .inner
                    .layer_usage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = m
            }
            Err(e) => tracing::warn!(error = %e, "measuring writable layers"),
        }
    }

    fn stats_of(&self, c: &ContainerRecord) -> ContainerStats {
        let ts = now_ns();
        let layout = self.inner.layout;
        let cpu = self.cpu_sample(&c.id, &c.cgroups_path, ts);
        // Measured off the request path (see `refresh_layer_usage`); unknown
        // until the first walk after the container was created.
        let usage = self
            .inner
            .layer_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.id)
            .copied();
        ContainerStats {
            record: c.clone(),
            timestamp: ts,
            cpu,
            memory: memory(layout, &c.cgroups_path),
            swap: swap(layout, &c.cgroups_path),
            io_psi: pressure(layout, &c.cgroups_path, "io"),
            writable_layer: WritableLayer {
                timestamp: usage.map_or(ts, |u| u.measured_at),
                mountpoint: self
                    .inner
                    .root
                    .join("rootfs")
                    .to_string_lossy()
                    .into_owned(),
                used: usage.map(|u| (u.bytes, u.inodes)),
            },
        }
    }

    /// Bytes and inodes of every container's writable layer, as last
    /// measured (ImageFsInfo counts them).
    pub fn writable_layers_usage(&self) -> (u64, u64) {
        self.inner
            .layer_usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .fold((0, 0), |(b, i), u| (b + u.bytes, i + u.inodes))
    }

    /// CPU time of a cgroup, with its rate since the previous sample under
    /// `key`.
    fn cpu_sample(&self, key: &str, path: &str, ts: i64) -> Option<CpuUsage> {
        let layout = self.inner.layout;
        cpu_usage(layout, path).map(|total| CpuUsage {
            psi: pressure(layout, path, "cpu"),
            ..self.cpu_rate(key, total, ts)
        })
    }

    fn cpu_rate(&self, key: &str, total: u64, ts: i64) -> CpuUsage {
        let mut prev = self
            .inner
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let nano_cores = prev.get(key).and_then(|(t0, u0)| {
            let dt = (ts - t0) as u64;
            (dt > 0 && total >= *u0).then(|| (total - u0) * 1_000_000_000 / dt)
        });
        prev.insert(key.to_string(), (ts, total));
        CpuUsage {
            usage_core_nano_seconds: total,
            usage_nano_cores: nano_cores,
            psi: None,
        }
    }

    pub(crate) fn pod_stats_of(&self, pod: &crate::sandbox::SandboxRecord) -> PodStats {
        let ts = now_ns();
        let layout = self.inner.layout;
        // Copied out: the index is not held while cgroup files are read.
        let records: Vec<ContainerRecord> = self
            .read_index()
            .containers
            .values()
            .filter(|c| c.sandbox_id == pod.id)
            .cloned()
            .collect();
        let containers: Vec<ContainerStats> = records.iter().map(|c| self.stats_of(c)).collect();
        let parent = pod
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let (cpu, memory, processes, io_psi) = match &parent {
            Some(path) => (
                self.cpu_sample(&format!("pod:{}", pod.id), path, ts),
                memory(layout, path),
                process_count(layout, path),
                pressure(layout, path, "io"),
            ),
            // No pod cgroup: what its containers use.
            None => {
                let total: Option<u64> = containers
                    .iter()
                    .filter_map(|c| c.cpu.map(|u| u.usage_core_nano_seconds))
                    .reduce(|a, b| a + b);
                let cpu = total.map(|t| self.cpu_rate(&format!("pod:{}", pod.id), t, ts));
                let memory =
                    containers
                        .iter()
                        .filter_map(|c| c.memory)
                        .reduce(|a, b| MemoryUsage {
                            working_set_bytes: a.working_set_bytes + b.working_set_bytes,
                            available_bytes: None,
                            usage_bytes: a.usage_bytes + b.usage_bytes,
                            rss_bytes: a.rss_bytes + b.rss_bytes,
                            page_faults: a.page_faults + b.page_faults,
                            major_page_faults: a.major_page_faults + b.major_page_faults,
                            psi: None,
                        });
                let processes = containers
                    .iter()
                    .filter_map(|c| process_count(layout, &c.record.cgroups_path))
                    .reduce(|a, b| a + b);
                (cpu, memory, processes, None)
            }
        };
        let interfaces = pod_net_dev(pod)
            .map(|t| parse_net_dev(&t))
            .unwrap_or_default();
        PodStats {
            record: pod.clone(),
            timestamp: ts,
            cpu,
            memory,
            processes,
            io_psi,
            interfaces,
            containers,
        }
    }

    /// PodSandboxStats.
    pub fn pod_stats(&self, id: &str) -> Result<PodStats> {
        let pod = self.get_pod(id)?;
        Ok(self.pod_stats_of(&pod))
    }

    /// ListPodSandboxStats.
    pub fn list_pod_stats(&self, filter: &crate::sandbox::PodFilter) -> Vec<PodStats> {
        self.forget_removed_samples();
        let pods: Vec<crate::sandbox::SandboxRecord> = self
            .read_index()
            .pods
            .values()
            .filter(|p| {
                (filter.id.is_empty() || p.id.starts_with(&filter.id))
                    && filter
                        .labels
                        .iter()
                        .all(|(k, v)| p.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        par_map(&pods, |p| self.pod_stats_of(p))
    }

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let c = self.get_container(id)?;
        Ok(self.stats_of(&c))
    }

    /// ListContainerStats.
    pub fn list_container_stats(&self, filter: &ContainerFilter) -> Vec<ContainerStats> {
        self.forget_removed_samples();
        let recs: Vec<ContainerRecord> = self
            .read_index()
            .containers
            .values()
            .filter(|c| c.matches(&filter.id, &filter.pod_id, &filter.labels))
            .cloned()
            .collect();
        par_map(&recs, |c| self.stats_of(c))
    }

    /// Drops the CPU samples of removed containers and pods.
    fn forget_removed_samples(&self) {
        let idx = self.read_index();
        let mut prev = self
            .inner
            .cpu_samples
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        prev.retain(|key, _| match key.strip_prefix("pod:") {
            Some(pod) => idx.pods.contains_key(pod),
            None => idx.containers.contains_key(key),
        });
    }
}

/// How many threads a list of stats is read with: cgroup files cost
/// kernel time (v1 `memory.stat` sums a hierarchy), and a node's worth of
/// them is read faster on every core.
const STATS_THREADS: usize = 4;

/// `f` over `items`, in order, on up to [`STATS_THREADS`] threads when
/// there are enough items to be worth it.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(STATS_THREADS);
    if threads < 2 || items.len() < 8 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

#[cfg(test)]
mod net_dev_tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        let out = par_map(&items, |x| x * 2);
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(par_map(&[1u8, 2], |x| *x), [1, 2]);
    }

    #[test]
    fn pressure_files() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\n\
                    full avg10=0.00 avg60=0.10 avg300=0.02 total=56\n";
        let psi = parse_pressure(text).unwrap();
        assert_eq!(psi.some.total_ns, 1_234_000);
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.some.avg60, 0.25);
        let full = psi.full.unwrap();
        assert_eq!(
            (full.total_ns, full.avg60, full.avg300),
            (56_000, 0.1, 0.02)
        );
        // Older kernels have no `full` line for CPU.
        let cpu = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert_eq!((cpu.some.total_ns, cpu.full), (7000, None));
        assert_eq!(parse_pressure(""), None);
        assert_eq!(parse_pressure("some avg10=x total=1\n"), None);
    }

    #[test]
    fn net_dev_lines_without_lo() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    1500      12    1    2    0     0          0         0      700       7    3    4    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 12,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 700,
                tx_packets: 7,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }
}
