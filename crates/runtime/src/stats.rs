//! ContainerStats and ListContainerStats: CPU and memory from the
//! container's cgroup, writable-layer usage from its overlay upper dir.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cgroups::Layout;
use crate::container::ContainerFilter;
use crate::error::Result;
use crate::{now_ns, ContainerRecord, Runtime};

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_file(path: &Path) -> HashMap<String, u64> {
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
}

/// CPU time of a container.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    /// Cumulative, in nanoseconds.
    pub usage_core_nano_seconds: u64,
    /// Since the previous sample; `None` on the first.
    pub usage_nano_cores: Option<u64>,
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
        let cpu = cpu_usage(layout, &c.cgroups_path).map(|total| {
            let mut prev = self
                .inner
                .cpu_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let nano_cores = prev.get(&c.id).and_then(|(t0, u0)| {
                let dt = (ts - t0) as u64;
                (dt > 0 && total >= *u0).then(|| (total - u0) * 1_000_000_000 / dt)
            });
            prev.insert(c.id.clone(), (ts, total));
            CpuUsage {
                usage_core_nano_seconds: total,
                usage_nano_cores: nano_cores,
            }
        });
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

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let c = self.get_container(id)?;
        Ok(self.stats_of(&c))
    }

    /// ListContainerStats.
    pub fn list_container_stats(&self, filter: &ContainerFilter) -> Vec<ContainerStats> {
        let recs: Vec<ContainerRecord> = self.read_index().containers.values().cloned().collect();
        {
            // Forget the samples of removed containers.
            let mut prev = self
                .inner
                .cpu_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            prev.retain(|id, _| recs.iter().any(|c| &c.id == id));
        }
        recs.iter()
            .filter(|c| c.matches(&filter.id, &filter.pod_id, &filter.labels))
            .map(|c| self.stats_of(c))
            .collect()
    }
}
