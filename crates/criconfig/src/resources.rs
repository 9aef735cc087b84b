//! QoS class, cgroup parents, and the CPU, memory, huge page and OOM
//! settings the kubelet derives from resource requests and limits.

use std::collections::BTreeMap;

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};

use crate::error::ConfigError;
use crate::node::{CgroupDriver, NodeSettings};
use crate::quantity::{quantity, ParsedQuantity};

/// Minimum CPU shares the kubelet sends.
const MIN_SHARES: i64 = 2;
/// Maximum CPU shares.
const MAX_SHARES: i64 = 262_144;
/// The smallest CFS quota, in microseconds.
const MIN_QUOTA_PERIOD: i64 = 1000;
/// OOM score of Guaranteed containers.
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// OOM score of BestEffort containers.
const BESTEFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// A pod's quality of service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has equal CPU and memory requests and limits.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No CPU or memory requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The class as written in `status.qosClass`.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

pub(crate) type ResourceList = BTreeMap<String, ParsedQuantity>;

fn parse_list(
    owner: &str,
    kind: &str,
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Result<ResourceList, ConfigError> {
    let mut out = ResourceList::new();
    for (name, q) in list.into_iter().flatten() {
        let parsed = quantity(|| format!("{owner} {kind}.{name}"), &q.0)?;
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}

/// A container's requests.
pub(crate) fn requests(c: &Container) -> Result<ResourceList, ConfigError> {
    parse_list(
        &format!("container {:?}", c.name),
        "requests",
        c.resources.as_ref().and_then(|r| r.requests.as_ref()),
    )
}

/// A container's limits.
pub(crate) fn limits(c: &Container) -> Result<ResourceList, ConfigError> {
    parse_list(
        &format!("container {:?}", c.name),
        "limits",
        c.resources.as_ref().and_then(|r| r.limits.as_ref()),
    )
}

fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    pod.spec.as_ref()?.resources.as_ref()
}

fn pod_level_list(pod: &Pod, want_limits: bool) -> Result<ResourceList, ConfigError> {
    let r = pod_level(pod);
    let list = r.and_then(|r| {
        if want_limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
    });
    parse_list("pod", if want_limits { "limits" } else { "requests" }, list)
}

fn has_cpu_or_memory(list: &ResourceList) -> bool {
    list.contains_key("cpu") || list.contains_key("memory")
}

/// Whether the pod sets pod-level CPU or memory resources and the feature is on.
pub(crate) fn pod_level_resources_set(pod: &Pod, node: &NodeSettings) -> Result<bool, ConfigError> {
    if !node.pod_level_resources {
        return Ok(false);
    }
    Ok(has_cpu_or_memory(&pod_level_list(pod, false)?)
        || has_cpu_or_memory(&pod_level_list(pod, true)?))
}

pub(crate) fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn qos_from_lists(
    requests: &ResourceList,
    limits: &ResourceList,
    mut guaranteed: bool,
) -> QosClass {
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed {
        for (name, req) in requests {
            if limits.get(name) != Some(req) {
                guaranteed = false;
                break;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

fn qos_resource(name: &str) -> bool {
    name == "cpu" || name == "memory"
}

/// The pod's QoS class: `status.qosClass` when set, else computed from
/// CPU and memory requests and limits of all containers (or the pod-level
/// resources when the pod sets them) as the kubelet does. The pod must be
/// defaulted (requests default to limits).
pub fn qos_class(pod: &Pod) -> QosClass {
    qos_class_checked(pod, true).unwrap_or(QosClass::BestEffort)
}

pub(crate) fn qos_class_checked(
    pod: &Pod,
    pod_level_feature: bool,
) -> Result<QosClass, ConfigError> {
    if let Some(class) = pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        match class {
            "Guaranteed" => return Ok(QosClass::Guaranteed),
            "Burstable" => return Ok(QosClass::Burstable),
            "BestEffort" => return Ok(QosClass::BestEffort),
            _ => {}
        }
    }
    let pod_req = pod_level_list(pod, false)?;
    let pod_lim = pod_level_list(pod, true)?;
    if pod_level_feature && (has_cpu_or_memory(&pod_req) || has_cpu_or_memory(&pod_lim)) {
        let req: ResourceList = pod_req
            .into_iter()
            .filter(|(n, q)| qos_resource(n) && q.nanos() > 0)
            .collect();
        let lim: ResourceList = pod_lim
            .into_iter()
            .filter(|(n, q)| qos_resource(n) && q.nanos() > 0)
            .collect();
        let guaranteed = lim.contains_key("cpu") && lim.contains_key("memory");
        return Ok(qos_from_lists(&req, &lim, guaranteed));
    }
    let mut req = ResourceList::new();
    let mut lim = ResourceList::new();
    let mut guaranteed = true;
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in all {
        for (name, q) in requests(c)? {
            if qos_resource(&name) && q.nanos() > 0 {
                let e = req.entry(name).or_default();
                *e = e.plus(q);
            }
        }
        let mut found = 0;
        for (name, q) in limits(c)? {
            if qos_resource(&name) && q.nanos() > 0 {
                found += 1;
                let e = lim.entry(name).or_default();
                *e = e.plus(q);
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    Ok(qos_from_lists(&req, &lim, guaranteed))
}

fn cgroup_name_components(pod: &Pod, node: &NodeSettings, class: QosClass) -> Vec<String> {
    let mut parts: Vec<String> = node
        .cgroup_root
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if !node.cgroups_per_qos {
        return parts;
    }
    parts.push("kubepods".to_string());
    match class {
        QosClass::Guaranteed => {}
        QosClass::Burstable => parts.push("burstable".to_string()),
        QosClass::BestEffort => parts.push("besteffort".to_string()),
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    parts.push(format!("pod{uid}"));
    parts
}

fn cgroup_literal(parts: &[String], driver: CgroupDriver) -> String {
    if parts.is_empty() {
        return "/".to_string();
    }
    match driver {
        CgroupDriver::Cgroupfs => format!("/{}", parts.join("/")),
        CgroupDriver::Systemd => {
            let escaped: Vec<String> = parts.iter().map(|p| p.replace('-', "_")).collect();
            let mut path = String::new();
            let mut prefix = String::new();
            for component in &escaped {
                path.push('/');
                path.push_str(&prefix);
                path.push_str(component);
                path.push_str(".slice");
                prefix.push_str(component);
                prefix.push('-');
            }
            path
        }
    }
}

/// The pod's cgroup as the kubelet names it in `cgroup_parent`
/// (cgroupfs: `/kubepods/burstable/pod<uid>`; systemd:
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`
/// with dashes in the uid turned into underscores).
pub fn pod_cgroup_parent(pod: &Pod, node: &NodeSettings) -> String {
    let class = qos_class_checked(pod, node.pod_level_resources).unwrap_or(QosClass::BestEffort);
    cgroup_literal(
        &cgroup_name_components(pod, node, class),
        node.cgroup_driver,
    )
}

/// CPU shares for a CPU amount in millicores (kubelet `MilliCPUToShares`).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a CPU limit in millicores over `period` microseconds
/// (kubelet `MilliCPUToQuota`; 0 when there is no limit).
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period) / 1000).max(MIN_QUOTA_PERIOD)
}

/// kubelet `calculateLinuxResources`.
pub(crate) fn calculate_linux_resources(
    cpu_request: Option<ParsedQuantity>,
    cpu_limit: ParsedQuantity,
    memory_limit: ParsedQuantity,
    node: &NodeSettings,
) -> cri::LinuxContainerResources {
    let mut r = cri::LinuxContainerResources {
        cpu_shares: match cpu_request {
            None => milli_cpu_to_shares(cpu_limit.milli_value()),
            Some(req) => milli_cpu_to_shares(req.milli_value()),
        },
        ..Default::default()
    };
    let mem = memory_limit.value();
    if mem != 0 {
        r.memory_limit_in_bytes = mem;
    }
    if node.cpu_cfs_quota {
        r.cpu_quota = milli_cpu_to_quota(cpu_limit.milli_value(), node.cpu_cfs_period_us);
        r.cpu_period = node.cpu_cfs_period_us;
    }
    if node.cgroup_v2 && !node_single_process_oom_kill(node) {
        r.unified
            .insert("memory.oom.group".to_string(), "1".to_string());
    }
    r
}

fn node_single_process_oom_kill(_node: &NodeSettings) -> bool {
    // The kubelet's singleProcessOOMKill defaults to false on cgroup v2.
    false
}

fn add_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = e.plus(*v);
    }
}

fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        match into.get(k) {
            Some(cur) if cur >= v => {}
            _ => {
                into.insert(k.clone(), *v);
            }
        }
    }
}

/// The pod's effective requests or limits (kubelet `PodRequests`/`PodLimits`
/// without overhead): regular containers and sidecars add up, init
/// containers count by their maximum, pod-level CPU and memory override.
pub(crate) fn pod_resources(
    pod: &Pod,
    node: &NodeSettings,
    want_limits: bool,
) -> Result<ResourceList, ConfigError> {
    let mut total = aggregate_container_resources(pod, want_limits)?;
    if pod_level_resources_set(pod, node)? {
        for (name, q) in pod_level_list(pod, want_limits)? {
            if qos_resource(&name) {
                total.insert(name, q);
            }
        }
    }
    Ok(total)
}

/// The containers' requests or limits combined (kubelet
/// `AggregateContainerRequests`/`AggregateContainerLimits`).
fn aggregate_container_resources(
    pod: &Pod,
    want_limits: bool,
) -> Result<ResourceList, ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let get = |c: &Container| if want_limits { limits(c) } else { requests(c) };
    let mut total = ResourceList::new();
    for c in &spec.containers {
        add_into(&mut total, &get(c)?);
    }
    let mut restartable = ResourceList::new();
    let mut init_max = ResourceList::new();
    for ic in spec.init_containers.iter().flatten() {
        let mut own = get(ic)?;
        if is_sidecar(ic) {
            add_into(&mut total, &own);
            add_into(&mut restartable, &own);
            own = restartable.clone();
        } else {
            add_into(&mut own, &restartable);
        }
        max_into(&mut init_max, &own);
    }
    max_into(&mut total, &init_max);
    Ok(total)
}

/// The pod cgroup's memory limit (kubelet `ResourceConfigForPod`): the
/// pod-level limit, else the combined container limits when every container
/// declares one.
pub(crate) fn pod_memory_limit(pod: &Pod, node: &NodeSettings) -> Result<Option<i64>, ConfigError> {
    if pod_level_resources_set(pod, node)? {
        if let Some(q) = pod_level_list(pod, true)?.get("memory") {
            return Ok(Some(q.value()));
        }
    }
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        if limits(c)?.get("memory").is_none_or(|q| q.is_zero()) {
            return Ok(None);
        }
    }
    Ok(pod_resources(pod, node, true)?
        .get("memory")
        .map(|q| q.value()))
}

/// The sandbox's resources (kubelet `calculateSandboxResources`).
pub(crate) fn sandbox_resources(
    pod: &Pod,
    node: &NodeSettings,
) -> Result<cri::LinuxContainerResources, ConfigError> {
    let req = pod_resources(pod, node, false)?;
    let lim = pod_resources(pod, node, true)?;
    let cpu_limit = lim.get("cpu").copied().unwrap_or_default();
    let mem_limit = lim.get("memory").copied().unwrap_or_default();
    Ok(calculate_linux_resources(
        req.get("cpu").copied(),
        cpu_limit,
        mem_limit,
        node,
    ))
}

/// The sandbox's overhead resources (from `spec.overhead`, requests = limits).
pub(crate) fn overhead_resources(
    pod: &Pod,
    node: &NodeSettings,
) -> Result<cri::LinuxContainerResources, ConfigError> {
    let Some(overhead) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) else {
        return Ok(cri::LinuxContainerResources::default());
    };
    let list = parse_list("pod", "overhead", Some(overhead))?;
    let cpu = list.get("cpu").copied().unwrap_or_default();
    let mem = list.get("memory").copied().unwrap_or_default();
    Ok(calculate_linux_resources(Some(cpu), cpu, mem, node))
}

fn is_node_critical(pod: &Pod) -> bool {
    let spec = match pod.spec.as_ref() {
        Some(s) => s,
        None => return false,
    };
    if spec.priority_class_name.as_deref() != Some("system-node-critical") {
        return false;
    }
    let source = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"));
    let is_static = matches!(source.map(String::as_str), Some(s) if s != "api");
    is_static || spec.priority.unwrap_or(0) >= 2_000_000_000
}

fn memory_request(c: &Container) -> Result<i64, ConfigError> {
    Ok(requests(c)?.get("memory").map(|q| q.value()).unwrap_or(0))
}

/// The container's `oom_score_adj` (kubelet `GetContainerOOMScoreAdjust`):
/// -997 for Guaranteed and node-critical pods, 1000 for BestEffort, and for
/// Burstable `1000 - 1000 * memoryRequest / memoryCapacity` kept within
/// 3..=999 (sidecars no higher than the pod's smallest regular container).
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    node: &NodeSettings,
) -> Result<i64, ConfigError> {
    if is_node_critical(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    match qos_class_checked(pod, node.pod_level_resources)? {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BESTEFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    let capacity = node.memory_capacity.max(1);
    // With pod-level memory requests, the part no container claims is shared out evenly.
    let mut remaining = 0i64;
    if node.pod_level_resources {
        let pod_req = pod_level_list(pod, false)?;
        if has_cpu_or_memory(&pod_req) {
            let pod_mem = pod_req.get("memory").map(|q| q.value()).unwrap_or(0);
            if pod_mem != 0 {
                let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
                let count = (spec.containers.len()
                    + spec.init_containers.as_ref().map_or(0, Vec::len))
                .max(1);
                let aggregate = aggregate_container_resources(pod, false)?
                    .get("memory")
                    .map(|q| q.value())
                    .unwrap_or(0);
                remaining = (pod_mem - aggregate) / count as i64;
            }
        }
    }
    let mut adj = 1000
        - (1000i128 * i128::from(memory_request(container)? + remaining) / i128::from(capacity))
            as i64;
    if is_sidecar(container) {
        let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
        let mut min_req: Option<i64> = None;
        for c in &spec.containers {
            let m = memory_request(c)?;
            min_req = Some(min_req.map_or(m, |x| x.min(m)));
        }
        let min_adj = 1000
            - (1000i128 * i128::from(min_req.unwrap_or(0) + remaining) / i128::from(capacity))
                as i64;
        adj = adj.min(min_adj);
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return Ok(1000 + GUARANTEED_OOM_SCORE_ADJ);
    }
    if adj == BESTEFFORT_OOM_SCORE_ADJ {
        return Ok(adj - 1);
    }
    Ok(adj)
}

fn hugepage_unit_size(bytes: i64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes;
    let mut idx = 0;
    while size >= 1024 && size % 1024 == 0 && idx + 1 < UNITS.len() {
        size /= 1024;
        idx += 1;
    }
    format!("{size}{}", UNITS[idx])
}

fn hugepage_limits(
    pod: &Pod,
    c: &Container,
    node: &NodeSettings,
) -> Result<Vec<cri::HugepageLimit>, ConfigError> {
    let mut required: BTreeMap<String, u64> = BTreeMap::new();
    let mut take = |list: ResourceList| -> Result<(), ConfigError> {
        for (name, amount) in list {
            if let Some(size) = name.strip_prefix("hugepages-") {
                let bytes = quantity(|| format!("resource name {name}"), size)?.value();
                required.insert(hugepage_unit_size(bytes), amount.value().max(0) as u64);
            }
        }
        Ok(())
    };
    if pod_level_resources_set(pod, node)? {
        take(pod_level_list(pod, true)?)?;
    }
    take(limits(c)?)?;
    Ok(node
        .hugepage_sizes
        .iter()
        .map(|size| cri::HugepageLimit {
            page_size: size.clone(),
            limit: required.get(size).copied().unwrap_or(0),
        })
        .collect())
}

/// kubelet `generateLinuxContainerResources`.
pub(crate) fn container_resources(
    pod: &Pod,
    c: &Container,
    node: &NodeSettings,
) -> Result<cri::LinuxContainerResources, ConfigError> {
    let req = requests(c)?;
    let lim = limits(c)?;
    let mut cpu_limit = lim.get("cpu").copied().unwrap_or_default();
    let mut mem_limit = lim.get("memory").copied().unwrap_or_default();
    if pod_level_resources_set(pod, node)? {
        let pod_lim = pod_level_list(pod, true)?;
        if cpu_limit.is_zero() {
            cpu_limit = pod_lim.get("cpu").copied().unwrap_or_default();
        }
        if mem_limit.is_zero() {
            mem_limit = pod_lim.get("memory").copied().unwrap_or_default();
        }
    }
    let mut r = calculate_linux_resources(req.get("cpu").copied(), cpu_limit, mem_limit, node);
    r.oom_score_adj = oom_score_adj(pod, c, node)?;
    r.hugepage_limits = hugepage_limits(pod, c, node)?;
    if node.swap_controller {
        if node.cgroup_v2 {
            r.unified
                .insert("memory.swap.max".to_string(), "0".to_string());
        } else {
            r.memory_swap_limit_in_bytes = r.memory_limit_in_bytes;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_quota() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(50), 51);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
        assert_eq!(milli_cpu_to_quota(100, 100_000), 10_000);
        assert_eq!(milli_cpu_to_quota(1, 100_000), 1000);
    }

    #[test]
    fn hugepage_units() {
        assert_eq!(hugepage_unit_size(2 << 20), "2MB");
        assert_eq!(hugepage_unit_size(1 << 30), "1GB");
        assert_eq!(hugepage_unit_size(1000), "1000B");
    }

    #[test]
    fn systemd_slices() {
        let parts: Vec<String> = ["kubepods", "burstable", "poda-b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            cgroup_literal(&parts, CgroupDriver::Systemd),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice"
        );
        assert_eq!(
            cgroup_literal(&parts, CgroupDriver::Cgroupfs),
            "/kubepods/burstable/poda-b"
        );
        assert_eq!(cgroup_literal(&[], CgroupDriver::Systemd), "/");
    }
}
