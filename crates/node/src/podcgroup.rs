//! The pod's cgroup, which the kubelet owns (its pod container manager):
//! created with the pod's limits before its sandbox, removed once the
//! pod is gone. The runtime puts the sandbox and the containers below it.
//!
//! Only what the node made is removed, and only with `rmdir`: a cgroup
//! that still holds processes stays, with a log line.

use std::io;
use std::path::{Component, Path, PathBuf};

use berth_cri::runtime::v1 as cri;

/// Where cgroupfs is mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The pod cgroup's path below a hierarchy, refused unless absolute and
/// plain (no `..`).
fn relative(parent: &str) -> io::Result<PathBuf> {
    let p = Path::new(parent);
    let plain = p.is_absolute()
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && p.components().count() > 1;
    if !plain {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pod cgroup {parent:?} is not a plain absolute path"),
        ));
    }
    Ok(p.strip_prefix("/").unwrap_or(p).to_path_buf())
}

fn unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Writes `value` to a control file that exists (a controller the host
/// does not offer has none: the limit is left out).
fn set(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        tracing::debug!(path = %path.display(), "no such control file: limit left out");
        return Ok(());
    }
    std::fs::write(&path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// cgroup v2 weight of v1 CPU shares (the kubelet's conversion).
pub fn shares_to_weight(shares: i64) -> i64 {
    if shares <= 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Creates the pod's cgroup (blocking) with the pod-level resources of its
/// sandbox config and the PID limit, in the CPU, memory and PID
/// hierarchies (cgroup v1) or the unified one (v2).
pub fn ensure(
    parent: &str,
    resources: Option<&cri::LinuxContainerResources>,
    pids_limit: Option<i64>,
) -> io::Result<()> {
    ensure_at(Path::new(ROOT), parent, resources, pids_limit)
}

fn ensure_at(
    root: &Path,
    parent: &str,
    r: Option<&cri::LinuxContainerResources>,
    pids_limit: Option<i64>,
) -> io::Result<()> {
    let rel = relative(parent)?;
    let shares = r.map_or(0, |r| r.cpu_shares);
    let (quota, period) = r.map_or((0, 0), |r| (r.cpu_quota, r.cpu_period));
    let memory = r.map_or(0, |r| r.memory_limit_in_bytes);
    if unified(root) {
        let dir = root.join(&rel);
        std::fs::create_dir_all(&dir)?;
        if shares > 0 {
            set(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if period > 0 {
            let q = if quota > 0 {
                quota.to_string()
            } else {
                "max".into()
            };
            set(&dir, "cpu.max", &format!("{q} {period}"))?;
        }
        if memory > 0 {
            set(&dir, "memory.max", &memory.to_string())?;
        }
        if let Some(p) = pids_limit {
            set(&dir, "pids.max", &p.to_string())?;
        }
        return Ok(());
    }
    for controller in ["cpu", "memory", "pids"] {
        let hierarchy = root.join(controller);
        if !hierarchy.is_dir() {
            continue;
        }
        let dir = hierarchy.join(&rel);
        std::fs::create_dir_all(&dir)?;
        match controller {
            "cpu" => {
                if shares > 0 {
                    set(&dir, "cpu.shares", &shares.to_string())?;
                }
                if period > 0 {
                    set(&dir, "cpu.cfs_period_us", &period.to_string())?;
                }
                if quota != 0 {
                    set(&dir, "cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
            "memory" if memory > 0 => set(&dir, "memory.limit_in_bytes", &memory.to_string())?,
            "pids" => {
                if let Some(p) = pids_limit {
                    set(&dir, "pids.max", &p.to_string())?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Pods of each QoS class with this uid, for the cgroup of a pod whose
/// spec is gone (the cgroup's name depends on the class).
pub fn stand_ins(uid: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let with = |requests: &[(&str, &str)], limits: &[(&str, &str)]| {
        let map = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.to_string());
        pod.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: map(requests),
                    limits: map(limits),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod
    };
    let both = [("cpu", "1"), ("memory", "1Mi")];
    vec![
        with(&[], &[]),
        with(&[("cpu", "1")], &[]),
        with(&both, &both),
    ]
}

/// Removes the pod's cgroup from every hierarchy that has it (blocking);
/// returns what could not be removed and why.
pub fn remove(parent: &str) -> Vec<String> {
    remove_at(Path::new(ROOT), parent)
}

fn remove_at(root: &Path, parent: &str) -> Vec<String> {
    let rel = match relative(parent) {
        Ok(r) => r,
        Err(e) => return vec![e.to_string()],
    };
    let mut hierarchies = vec![root.to_path_buf()];
    if !unified(root) {
        if let Ok(rd) = std::fs::read_dir(root) {
            hierarchies.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut failed = Vec::new();
    for h in hierarchies {
        // cpu and cpuacct are often one hierarchy under two names.
        let Ok(real) = h.canonicalize() else { continue };
        if !seen.insert(real.clone()) {
            continue;
        }
        let dir = real.join(&rel);
        if real == root && !unified(root) {
            continue;
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failed.push(format!("{}: {e}", dir.display())),
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_absolute_paths() {
        assert!(relative("/kubepods/besteffort/podx").is_ok());
        for bad in ["", "/", "kubepods/x", "/kubepods/../x"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stand_ins_cover_every_qos_class() {
        let node = berth_criconfig::NodeSettings::detect("n", std::path::Path::new("/nonexistent"));
        let mut parents: Vec<String> = stand_ins("u1")
            .iter()
            .map(|p| berth_criconfig::pod_cgroup_parent(p, &node))
            .collect();
        parents.sort();
        assert_eq!(
            parents,
            [
                "/kubepods/besteffort/podu1",
                "/kubepods/burstable/podu1",
                "/kubepods/podu1"
            ]
        );
    }

    #[test]
    fn weights_as_the_kubelet() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn limits_are_written_and_removed_on_a_v1_tree() {
        let root = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids", "freezer"] {
            std::fs::create_dir(root.path().join(c)).unwrap();
        }
        // Control files exist where the kernel would put them; a plain
        // directory stands in for a hierarchy here.
        let pod = "/kubepods/burstable/poduid";
        for (c, files) in [
            (
                "cpu",
                &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"][..],
            ),
            ("memory", &["memory.limit_in_bytes"][..]),
            ("pids", &["pids.max"][..]),
        ] {
            let d = root.path().join(c).join("kubepods/burstable/poduid");
            std::fs::create_dir_all(&d).unwrap();
            for f in files {
                std::fs::write(d.join(f), "").unwrap();
            }
        }
        let r = cri::LinuxContainerResources {
            cpu_shares: 51,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        ensure_at(root.path(), pod, Some(&r), Some(1024)).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cpu/kubepods/burstable/poduid/cpu.shares"), "51");
        assert_eq!(
            read("cpu/kubepods/burstable/poduid/cpu.cfs_quota_us"),
            "50000"
        );
        assert_eq!(
            read("memory/kubepods/burstable/poduid/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids/kubepods/burstable/poduid/pids.max"), "1024");
        // rmdir refuses a directory with files in it, as the kernel
        // refuses a cgroup with processes: reported, left in place.
        let failed = remove_at(root.path(), pod);
        assert_eq!(failed.len(), 3, "{failed:?}");
        for c in ["cpu", "memory", "pids"] {
            let d = root.path().join(c).join("kubepods/burstable/poduid");
            for f in std::fs::read_dir(&d).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        assert!(remove_at(root.path(), pod).is_empty());
        assert!(!root.path().join("cpu/kubepods/burstable/poduid").exists());
        assert!(
            root.path().join("cpu/kubepods/burstable").exists(),
            "the QoS cgroup stays"
        );
    }
}
