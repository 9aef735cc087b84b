//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric names
//! for what the kubelet's `/metrics/cadvisor` shows when it takes them from
//! the runtime (`PodAndContainerStatsFromCRI`). The kubelet passes names,
//! label values and values through as they are, so they follow what
//! cAdvisor, containerd (2.3) and CRI-O expose:
//!
//! - every metric has the labels `pod, namespace, container, id, image`
//!   (containerd's order), then its own (`interface`, `failure_type` and
//!   `scope`, `device`);
//! - network counters are the pod's (its interfaces but `lo`, container
//!   `""`, id the pod's); the rest are per container;
//! - the CRI carries integers: seconds are whole seconds, as both peers
//!   send them;
//! - only ready pods and containers that have not exited are reported.

use crate::cgroups::Layout;
use crate::container::Status;
use crate::stats::{self, read_u64, stat_file as keyed, ContainerStats, PodStats};
use crate::Runtime;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// A metric's name, help and label keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDescriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub label_keys: Vec<&'static str>,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    /// In the order of its descriptor's keys.
    pub label_values: Vec<String>,
    pub value: u64,
    /// When it was read (ns since the epoch).
    pub timestamp: i64,
}

/// A pod's metrics and its containers'.
#[derive(Debug, Clone)]
pub struct PodMetrics {
    pub pod_id: String,
    pub metrics: Vec<Metric>,
    pub containers: Vec<(String, Vec<Metric>)>,
}

/// Labels every metric has, in order.
const BASE_KEYS: [&str; 5] = ["pod", "namespace", "container", "id", "image"];

use MetricKind::{Counter, Gauge};

/// name, help, kind, extra label keys.
type Def = (
    &'static str,
    &'static str,
    MetricKind,
    &'static [&'static str],
);

const DEFS: &[Def] = &[
    // cpu
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", Counter, &[]),
    ("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", Counter, &[]),
    ("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", Counter, &[]),
    ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", Counter, &[]),
    ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", Counter, &[]),
    ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", Counter, &[]),
    // memory
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", Gauge, &[]),
    ("container_memory_working_set_bytes", "Current working set in bytes.", Gauge, &[]),
    ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", Gauge, &[]),
    ("container_memory_rss", "Size of RSS in bytes.", Gauge, &[]),
    ("container_memory_cache", "Number of bytes of page cache memory.", Gauge, &[]),
    ("container_memory_mapped_file", "Size of memory mapped files in bytes.", Gauge, &[]),
    ("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", Gauge, &[]),
    ("container_memory_total_active_file_bytes", "Current total active file in bytes.", Gauge, &[]),
    ("container_memory_total_inactive_file_bytes", "Current total inactive file in bytes.", Gauge, &[]),
    ("container_memory_swap", "Container swap usage in bytes.", Gauge, &[]),
    ("container_memory_failcnt", "Number of memory usage hits limits.", Counter, &[]),
    ("container_memory_failures_total", "Cumulative count of memory allocation failures.", Counter, &["failure_type", "scope"]),
    ("container_oom_events_total", "Count of out of memory events observed for the container.", Counter, &[]),
    // process
    ("container_processes", "Number of processes running inside the container.", Gauge, &[]),
    ("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero.", Gauge, &[]),
    ("container_file_descriptors", "Number of open file descriptors for the container.", Gauge, &[]),
    ("container_sockets", "Number of open sockets for the container.", Gauge, &[]),
    // disk
    ("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", Gauge, &["device"]),
    ("container_fs_inodes_total", "Number of inodes used by the container on this filesystem.", Gauge, &["device"]),
    ("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", Gauge, &["device"]),
    ("container_fs_inodes_free", "Number of available inodes on this filesystem.", Gauge, &["device"]),
    // spec and life
    ("container_spec_memory_limit_bytes", "Memory limit for the container.", Gauge, &[]),
    ("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", Gauge, &[]),
    ("container_spec_cpu_shares", "CPU share of the container.", Gauge, &[]),
    ("container_spec_cpu_period", "CPU period of the container.", Gauge, &[]),
    ("container_spec_cpu_quota", "CPU quota of the container.", Gauge, &[]),
    ("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", Gauge, &[]),
    ("container_last_seen", "Last time a container was seen by the exporter", Gauge, &[]),
    // pressure
    ("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", Counter, &[]),
    ("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", Counter, &[]),
    ("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", Counter, &[]),
    ("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", Counter, &[]),
    ("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", Counter, &[]),
    ("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", Counter, &[]),
    // network (the pod's)
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", Counter, &["interface"]),
    ("container_network_receive_packets_total", "Cumulative count of packets received", Counter, &["interface"]),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", Counter, &["interface"]),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", Counter, &["interface"]),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", Counter, &["interface"]),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted", Counter, &["interface"]),
    ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", Counter, &["interface"]),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", Counter, &["interface"]),
];

/// ListMetricDescriptors.
pub fn descriptors() -> Vec<MetricDescriptor> {
    DEFS.iter()
        .map(|(name, help, _, extra)| MetricDescriptor {
            name,
            help,
            label_keys: BASE_KEYS.iter().chain(extra.iter()).copied().collect(),
        })
        .collect()
}

/// Collects samples of one object (a container, or a pod's network).
struct Samples {
    base: Vec<String>,
    timestamp: i64,
    out: Vec<Metric>,
}

impl Samples {
    fn new(base: [String; 5], timestamp: i64) -> Samples {
        Samples {
            base: base.into(),
            timestamp,
            out: Vec::new(),
        }
    }

    /// One sample of `name`, whose own labels (after the base ones) are
    /// `extra`. Panics in tests for a name without a definition.
    fn add(&mut self, name: &'static str, extra: &[&str], value: u64) {
        let Some((_, _, kind, keys)) = DEFS.iter().find(|d| d.0 == name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        debug_assert_eq!(keys.len(), extra.len(), "labels of {name}");
        let mut label_values = self.base.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(Metric {
            name,
            kind: *kind,
            label_values,
            value,
            timestamp: self.timestamp,
        });
    }

    fn opt(&mut self, name: &'static str, value: Option<u64>) {
        if let Some(v) = value {
            self.add(name, &[], v);
        }
    }
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// CPU figures beyond the total: user and system seconds, CFS periods.
fn cpu_details(s: &mut Samples, layout: Layout, path: &str) {
    match layout {
        Layout::V1 => {
            // USER_HZ ticks: 100 per second on Linux.
            let acct = keyed(&layout.dir("cpuacct", path).join("cpuacct.stat"));
            s.opt(
                "container_cpu_user_seconds_total",
                acct.get("user").map(|t| t / 100),
            );
            s.opt(
                "container_cpu_system_seconds_total",
                acct.get("system").map(|t| t / 100),
            );
            let cpu = keyed(&layout.dir("cpu", path).join("cpu.stat"));
            s.opt(
                "container_cpu_cfs_periods_total",
                cpu.get("nr_periods").copied(),
            );
            s.opt(
                "container_cpu_cfs_throttled_periods_total",
                cpu.get("nr_throttled").copied(),
            );
            s.opt(
                "container_cpu_cfs_throttled_seconds_total",
                cpu.get("throttled_time").map(|ns| ns / NS_PER_SEC),
            );
        }
        Layout::V2 => {
            let cpu = keyed(&layout.dir("", path).join("cpu.stat"));
            let secs = |k: &str| cpu.get(k).map(|us| us / 1_000_000);
            s.opt("container_cpu_user_seconds_total", secs("user_usec"));
            s.opt("container_cpu_system_seconds_total", secs("system_usec"));
            s.opt(
                "container_cpu_cfs_periods_total",
                cpu.get("nr_periods").copied(),
            );
            s.opt(
                "container_cpu_cfs_throttled_periods_total",
                cpu.get("nr_throttled").copied(),
            );
            s.opt(
                "container_cpu_cfs_throttled_seconds_total",
                secs("throttled_usec"),
            );
        }
    }
}

/// Memory figures beyond ContainerStats': cache, mapped files, peak,
/// failures, OOM kills.
fn memory_details(s: &mut Samples, layout: Layout, path: &str) {
    let dir = layout.dir("memory", path);
    let stat = keyed(&dir.join("memory.stat"));
    let v1 = layout == Layout::V1;
    let get = |a: &str, b: &str| stat.get(if v1 { a } else { b }).copied();
    s.opt("container_memory_cache", get("total_cache", "file"));
    s.opt(
        "container_memory_mapped_file",
        get("total_mapped_file", "file_mapped"),
    );
    s.opt(
        "container_memory_total_active_file_bytes",
        get("total_active_file", "active_file"),
    );
    s.opt(
        "container_memory_total_inactive_file_bytes",
        get("total_inactive_file", "inactive_file"),
    );
    if v1 {
        // Gone from v1 on newer kernels (no kmem accounting): then absent.
        s.opt(
            "container_memory_kernel_usage",
            read_u64(&dir.join("memory.kmem.usage_in_bytes")),
        );
        s.opt(
            "container_memory_max_usage_bytes",
            read_u64(&dir.join("memory.max_usage_in_bytes")),
        );
        s.opt(
            "container_memory_failcnt",
            read_u64(&dir.join("memory.failcnt")),
        );
        let oom = keyed(&dir.join("memory.oom_control"));
        s.opt("container_oom_events_total", oom.get("oom_kill").copied());
    } else {
        s.opt(
            "container_memory_max_usage_bytes",
            read_u64(&dir.join("memory.peak")),
        );
        s.opt("container_memory_kernel_usage", stat.get("kernel").copied());
        let events = keyed(&dir.join("memory.events"));
        s.opt(
            "container_oom_events_total",
            events.get("oom_kill").copied(),
        );
    }
    if let Some(v) = get("total_pgfault", "pgfault") {
        s.add(
            "container_memory_failures_total",
            &["pgfault", "container"],
            v,
        );
    }
    if let Some(v) = get("total_pgmajfault", "pgmajfault") {
        s.add(
            "container_memory_failures_total",
            &["pgmajfault", "container"],
            v,
        );
    }
}

fn pids_max(layout: Layout, path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(layout.dir("pids", path).join("pids.max")).ok()?;
    match text.trim() {
        // Unlimited: cAdvisor's "infinity" is zero.
        "max" => Some(0),
        n => n.parse().ok(),
    }
}

/// Open descriptors and sockets of the processes in a cgroup.
fn descriptors_of(layout: Layout, path: &str) -> Option<(u64, u64)> {
    let procs = std::fs::read_to_string(layout.dir("memory", path).join("cgroup.procs")).ok()?;
    let (mut fds, mut sockets) = (0, 0);
    for pid in procs.lines() {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                sockets += 1;
            }
        }
    }
    Some((fds, sockets))
}

/// Size and free inodes of the filesystem holding `dir`.
fn filesystem(dir: &str) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some((st.f_blocks.saturating_mul(st.f_frsize), st.f_ffree))
}

fn pressure(s: &mut Samples, resource: &str, psi: Option<stats::Psi>) {
    let Some(psi) = psi else { return };
    let (waiting, stalled): (&'static str, &'static str) = match resource {
        "cpu" => (
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_cpu_stalled_seconds_total",
        ),
        "memory" => (
            "container_pressure_memory_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ),
        _ => (
            "container_pressure_io_waiting_seconds_total",
            "container_pressure_io_stalled_seconds_total",
        ),
    };
    s.add(waiting, &[], psi.some.total_ns / NS_PER_SEC);
    if let Some(full) = psi.full {
        s.add(stalled, &[], full.total_ns / NS_PER_SEC);
    }
}

impl Runtime {
    /// ListPodSandboxMetrics: every ready pod's.
    pub fn pod_metrics(&self) -> Vec<PodMetrics> {
        let pods: Vec<_> = self
            .read_index()
            .pods
            .values()
            .filter(|p| p.ready && p.monitor_alive())
            .cloned()
            .collect();
        stats::par_map(&pods, |p| {
            let stats = self.pod_stats_of(p);
            self.metrics_of(&stats)
        })
    }

    fn metrics_of(&self, pod: &PodStats) -> PodMetrics {
        let layout = self.inner.layout;
        let meta = pod.record.metadata();
        let mut net = Samples::new(
            [
                meta.name.clone(),
                meta.namespace.clone(),
                String::new(),
                pod.record.id.clone(),
                String::new(),
            ],
            pod.timestamp,
        );
        for i in &pod.interfaces {
            let n = i.name.as_str();
            net.add("container_network_receive_bytes_total", &[n], i.rx_bytes);
            net.add(
                "container_network_receive_packets_total",
                &[n],
                i.rx_packets,
            );
            net.add(
                "container_network_receive_packets_dropped_total",
                &[n],
                i.rx_dropped,
            );
            net.add("container_network_receive_errors_total", &[n], i.rx_errors);
            net.add("container_network_transmit_bytes_total", &[n], i.tx_bytes);
            net.add(
                "container_network_transmit_packets_total",
                &[n],
                i.tx_packets,
            );
            net.add(
                "container_network_transmit_packets_dropped_total",
                &[n],
                i.tx_dropped,
            );
            net.add("container_network_transmit_errors_total", &[n], i.tx_errors);
        }
        let containers = pod
            .containers
            .iter()
            .filter_map(|c| {
                let state = self.container_state(&c.record);
                (state.status != Status::Exited).then(|| {
                    let base = [
                        meta.name.clone(),
                        meta.namespace.clone(),
                        c.record.metadata().name.clone(),
                        c.record.id.clone(),
                        // What the pod spec named, as containerd reports.
                        Some(&c.record.config.image.user_specified_image)
                            .filter(|i| !i.is_empty())
                            .unwrap_or(&c.record.image_name)
                            .clone(),
                    ];
                    let mut s = Samples::new(base, c.timestamp);
                    self.container_metrics(&mut s, layout, c, state.started_at);
                    (c.record.id.clone(), s.out)
                })
            })
            .collect();
        PodMetrics {
            pod_id: pod.record.id.clone(),
            metrics: net.out,
            containers,
        }
    }

    fn container_metrics(&self, s: &mut Samples, layout: Layout, c: &ContainerStats, started: i64) {
        let path = c.record.cgroups_path.as_str();
        if let Some(cpu) = c.cpu {
            s.add(
                "container_cpu_usage_seconds_total",
                &[],
                cpu.usage_core_nano_seconds / NS_PER_SEC,
            );
            cpu_details(s, layout, path);
            pressure(s, "cpu", cpu.psi);
        }
        if let Some(m) = c.memory {
            s.add("container_memory_usage_bytes", &[], m.usage_bytes);
            s.add(
                "container_memory_working_set_bytes",
                &[],
                m.working_set_bytes,
            );
            s.add("container_memory_rss", &[], m.rss_bytes);
            memory_details(s, layout, path);
            pressure(s, "memory", m.psi);
        }
        s.opt("container_memory_swap", c.swap.map(|w| w.usage_bytes));
        pressure(s, "io", c.io_psi);
        s.opt("container_processes", stats::process_count(layout, path));
        s.opt("container_threads_max", pids_max(layout, path));
        if let Some((fds, sockets)) = descriptors_of(layout, path) {
            s.add("container_file_descriptors", &[], fds);
            s.add("container_sockets", &[], sockets);
        }
        let device = c.writable_layer.mountpoint.as_str();
        if let Some((bytes, inodes)) = c.writable_layer.used {
            s.add("container_fs_usage_bytes", &[device], bytes);
            s.add("container_fs_inodes_total", &[device], inodes);
        }
        if let Some((limit, free)) = filesystem(device) {
            s.add("container_fs_limit_bytes", &[device], limit);
            s.add("container_fs_inodes_free", &[device], free);
        }
        if let Some(r) = &c.record.resources {
            let positive = |v: i64| (v > 0).then_some(v as u64);
            s.opt(
                "container_spec_memory_limit_bytes",
                positive(r.memory_limit_in_bytes),
            );
            s.opt(
                "container_spec_memory_swap_limit_bytes",
                positive(r.memory_swap_limit_in_bytes),
            );
            s.opt("container_spec_cpu_shares", positive(r.cpu_shares));
            s.opt("container_spec_cpu_period", positive(r.cpu_period));
            s.opt("container_spec_cpu_quota", positive(r.cpu_quota));
        }
        if started > 0 {
            s.add(
                "container_start_time_seconds",
                &[],
                started as u64 / NS_PER_SEC,
            );
        }
        s.add(
            "container_last_seen",
            &[],
            (c.timestamp.max(0) as u64) / NS_PER_SEC,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_unique_and_labelled() {
        let d = descriptors();
        let mut names: Vec<_> = d.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len());
        for x in &d {
            assert!(!x.help.is_empty(), "{}", x.name);
            assert_eq!(&x.label_keys[..5], &BASE_KEYS, "{}", x.name);
        }
    }

    #[test]
    fn samples_carry_their_descriptors_labels() {
        let mut s = Samples::new(
            [
                "p".into(),
                "ns".into(),
                "c".into(),
                "id".into(),
                "img".into(),
            ],
            7,
        );
        s.add("container_network_receive_bytes_total", &["eth0"], 5);
        s.add(
            "container_memory_failures_total",
            &["pgfault", "container"],
            9,
        );
        s.opt("container_memory_rss", None);
        let d = descriptors();
        for m in &s.out {
            let desc = d.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
            assert_eq!(m.timestamp, 7);
        }
        assert_eq!(s.out.len(), 2);
        assert_eq!(s.out[0].label_values[5], "eth0");
        assert_eq!(s.out[0].kind, MetricKind::Counter);
    }
}
