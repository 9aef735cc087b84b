//! The CRI runtime service behind RuntimeService: pod sandboxes
//! ([`sandbox`]) and containers ([`container`]).
//!
//! The daemon never forks containers. Each pod gets a monitor process
//! (`berth monitor`, crate `berth-monitor`) that holds the pod's namespaces
//! and runs its containers; this crate prepares everything around it (the
//! network namespace and CNI, the pod's shared files, root filesystems,
//! OCI specs, records) and talks to the monitor over its socket.
//!
//! Where things are:
//! - `<root>/runtime/pods/<id>.json`, `<root>/runtime/containers/<id>.json`:
//!   records (what was asked, in `berth-podspec`'s model: see [`records`]),
//!   written atomically;
//! - `<root>/runtime/rootfs/<id>/{upper,work,merged}`: container root filesystems;
//! - `<state>/pods/<id>/`: the monitor's directory (socket, pod.json,
//!   container state files, shared files, shm tmpfs);
//! - `<state>/containers/<id>/`: OCI bundles; `<state>/netns/<id>`: network namespaces.

mod cgroups;
mod checkpoint;
pub mod container;
pub mod error;
pub mod events;
mod idmap;
pub mod metrics;
mod podfiles;
pub mod records;
pub mod sandbox;
pub mod stats;
mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_config::Config;
use berth_image::ImageService;
use berth_network::Cni;
use berth_store::RecordDir;

pub use container::{ContainerFilter, ContainerRecord, ContainerView, ExecOutput};
pub use error::{Error, Kind, Result};
pub use events::{Event, EventKind};
pub use sandbox::{PodFilter, PodView, SandboxRecord};
pub use stats::{ContainerStats, InterfaceStats, PodStats};

/// The runtime service.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    root: PathBuf,
    state: PathBuf,
    images: ImageService,
    cni: Cni,
    pod_records: RecordDir,
    container_records: RecordDir,
    index: RwLock<Index>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    layout: cgroups::Layout,
    /// What the host's cgroups offer containers (read once at start).
    cgroup: berth_oci::CgroupSupport,
    /// Records in quarantine, listed once by `restore`.
    quarantine: std::sync::OnceLock<Vec<QuarantinedRecord>>,
    /// Writable-layer usage by container, refreshed in the background.
    layer_usage: Mutex<HashMap<String, stats::LayerUsage>>,
    /// The node's pod CIDRs from UpdateRuntimeConfig (comma-separated, as
    /// the kubelet sends them); empty until the kubelet sends one.
    pod_cidr: std::sync::Mutex<String>,
    grantable: BTreeSet<&'static str>,
    /// The last CPU sample of each container (time, cumulative ns), for
    /// `usage_nano_cores`.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// GetContainerEvents' subscribers and the pods' watchers.
    events: events::Events,
}

#[derive(Default)]
struct Index {
    pods: BTreeMap<String, SandboxRecord>,
    containers: BTreeMap<String, ContainerRecord>,
    /// Reserved names (pod: name_namespace_uid_attempt; container:
    /// name_podname_namespace_uid_attempt) → the id holding it.
    names: HashMap<String, String>,
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A new 64-hex-digit id.
pub(crate) fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

impl Runtime {
    /// Loads the records, reconciles them with the monitors that are still
    /// running, and keeps the images containers use from collection.
    /// `wire` reads the CRI configs of version 1 records (see [`records`]).
    pub async fn open(
        config: &Config,
        images: ImageService,
        wire: Arc<dyn records::WireConfigs>,
    ) -> Result<Runtime> {
        let root = config.root.join("runtime");
        let state = config.state.clone();
        for d in [
            root.join("rootfs"),
            state.join("pods"),
            state.join("containers"),
            state.join("netns"),
        ] {
            std::fs::create_dir_all(&d).map_err(error::io("creating", &d))?;
        }
        let (pod_migration, container_migration) = records::migrations(wire);
        let pod_records =
            RecordDir::open(root.join("pods"))?.versioned(records::VERSION, pod_migration);
        let container_records = RecordDir::open(root.join("containers"))?
            .versioned(records::VERSION, container_migration);
        let cni = Cni::new(&config.cni.conf_dir, config.cni.bin_dirs.clone());
        if config.cni.install_default
            && cni.reload().is_err()
            && !has_cni_config(&config.cni.conf_dir)
        {
            install_default_network(&config.cni.conf_dir)?;
        }
        if let Err(e) = cni.reload() {
            tracing::warn!(error = %e, "no usable CNI network yet; pods without host networking will fail until there is one");
        }
        let layout = cgroups::Layout::detect();
        let rt = Runtime {
            inner: Arc::new(Inner {
                config: config.clone(),
                root,
                state,
                images,
                cni,
                pod_records,
                container_records,
                index: RwLock::default(),
                locks: Mutex::default(),
                layout,
                cgroup: cgroups::support(layout),
                pod_cidr: std::sync::Mutex::default(),
                layer_usage: Mutex::default(),
                quarantine: std::sync::OnceLock::new(),
                grantable: berth_oci::caps::grantable(),
                cpu_samples: Mutex::default(),
                events: Default::default(),
            }),
        };
        rt.restore().await?;
        stats::spawn_layer_usage_refresher(&rt);
        Ok(rt)
    }

    async fn restore(&self) -> Result<()> {
        let (pods, bad) = self.inner.pod_records.load_all::<SandboxRecord>()?;
        self.quarantine("pod", &self.inner.pod_records, bad)?;
        let (containers, bad) = self.inner.container_records.load_all::<ContainerRecord>()?;
        self.quarantine("container", &self.inner.container_records, bad)?;
        let _ = self.inner.quarantine.set(self.list_quarantined());
        let quarantined: Vec<&QuarantinedRecord> = self
            .quarantined()
            .iter()
            .filter(|q| q.kind != "image")
            .collect();
        if !quarantined.is_empty() {
            for q in &quarantined {
                tracing::warn!(
                    kind = q.kind,
                    id = %q.record.key,
                    record = %q.record.path.display(),
                    reason = %q.record.reason,
                    "record in quarantine: what it describes (processes, mounts, network, \
                     layers) is left alone"
                );
            }
            self.inner
                .images
                .hold_everything("quarantined pod and container records")?;
        }
        {
            let mut idx = self.index();
            for (_, p) in pods {
                idx.names.insert(p.name_key(), p.id.clone());
                idx.pods.insert(p.id.clone(), p);
            }
            for (_, c) in containers {
                if !idx.pods.contains_key(&c.sandbox_id)
                    && !quarantined.iter().any(|q| q.record.key == c.sandbox_id)
                {
                    tracing::warn!(container = %c.id, pod = %c.sandbox_id, "container of a pod that no longer exists; it will be removed");
                }
                self.inner.images.hold_chains(&c.id, c.chains.clone());
                idx.names.insert(c.name_key(), c.id.clone());
                idx.containers.insert(c.id.clone(), c);
            }
        }
        sandbox::reconcile(self).await;
        container::reconcile(self).await;
        Ok(())
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Serialises changes to one pod or container.
    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    fn forget_lock(&self, id: &str) {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Reserves a name for `id`; the name of a removed object is free again.
    fn reserve(&self, key: String, id: &str, what: &str) -> Result<()> {
        let mut idx = self.index();
        if let Some(holder) = idx.names.get(&key) {
            return Err(Error::AlreadyExists(format!(
                "{what} name {key:?} is reserved for {holder}"
            )));
        }
        idx.names.insert(key, id.to_string());
        Ok(())
    }

    fn unreserve(&self, key: &str, id: &str) {
        let mut idx = self.index();
        if idx.names.get(key).map(String::as_str) == Some(id) {
            idx.names.remove(key);
        }
    }

    /// Whether a usable CNI configuration exists (NetworkReady), or why not.
    pub fn network_ready(&self) -> std::result::Result<(), String> {
        self.inner
            .cni
            .reload()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Moves unreadable records aside (see [`berth_store::RecordDir::quarantine`]).
    fn quarantine(
        &self,
        kind: &'static str,
        dir: &RecordDir,
        bad: Vec<berth_store::Unreadable>,
    ) -> Result<()> {
        for u in bad {
            let q = dir.quarantine(&u.key, &u.error.to_string())?;
            tracing::error!(
                kind,
                id = %u.key,
                error = %u.error,
                moved_to = %q.path.display(),
                "unreadable record quarantined"
            );
        }
        Ok(())
    }

    /// Pod, container and image records in quarantine: unreadable when
    /// Berth started (corrupt, or written by a newer Berth). Their objects
    /// are never touched, and no image layer present at start is collected.
    /// Read once, at start: nothing enters quarantine later.
    pub fn quarantined(&self) -> &[QuarantinedRecord] {
        self.inner.quarantine.get().map_or(&[], Vec::as_slice)
    }

    fn list_quarantined(&self) -> Vec<QuarantinedRecord> {
        let list = |kind: &'static str, dir: &RecordDir| {
            dir.quarantined()
                .unwrap_or_else(|e| {
                    tracing::warn!(kind, error = %e, "listing quarantined records");
                    Vec::new()
                })
                .into_iter()
                .map(move |record| QuarantinedRecord { kind, record })
        };
        let images = self.inner.images.quarantined().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing quarantined image records");
            Vec::new()
        });
        list("pod", &self.inner.pod_records)
            .chain(list("container", &self.inner.container_records))
            .chain(images.into_iter().map(|record| QuarantinedRecord {
                kind: "image",
                record,
            }))
            .collect()
    }

    /// The ids of quarantined records of `kind` (`pod`, `container`).
    fn quarantined_ids(&self, kind: &str) -> std::collections::HashSet<String> {
        self.quarantined()
            .iter()
            .filter(|q| q.kind == kind)
            .map(|q| q.record.key.clone())
            .collect()
    }

    /// UpdateRuntimeConfig: the node's pod CIDRs (`10.244.1.0/24`, or
    /// dual-stack `10.244.1.0/24,fd00:1::/64`). The CNI configuration in
    /// use already names its ranges, so, like containerd without a CNI
    /// config template, Berth keeps the value (verbose Status reports it)
    /// and changes no network. An empty value is ignored.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        let cidr = cidr.trim();
        if cidr.is_empty() {
            return Ok(());
        }
        for part in cidr.split(',') {
            parse_cidr(part.trim())
                .map_err(|why| Error::InvalidArgument(format!("pod CIDR {part:?}: {why}")))?;
        }
        let mut current = self
            .inner
            .pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *current != cidr {
            tracing::info!(pod_cidr = cidr, "pod CIDR from UpdateRuntimeConfig");
            *current = cidr.to_string();
        }
        Ok(())
    }

    /// The pod CIDRs of the last UpdateRuntimeConfig (empty if none).
    pub fn pod_cidr(&self) -> String {
        self.inner
            .pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The handlers Status advertises: the default one and each configured
    /// external runtime whose binary exists.
    pub fn handlers(&self) -> Vec<String> {
        let mut v = vec![String::new()];
        v.extend(
            self.inner
                .config
                .runtimes
                .iter()
                .filter(|(_, h)| resolve_binary(&h.path).is_some())
                .map(|(n, _)| n.clone()),
        );
        v
    }

    fn pod_dir(&self, id: &str) -> PathBuf {
        self.inner.state.join("pods").join(id)
    }
}

/// The file name of Berth's default network.
pub const DEFAULT_NETWORK_FILE: &str = "87-berth-bridge.conflist";

fn has_cni_config(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                matches!(
                    e.path().extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
        })
        .unwrap_or(false)
}

/// Writes the default bridge network into an empty CNI config directory.
fn install_default_network(dir: &Path) -> Result<()> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "berth",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "berth0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": "10.89.0.0/16", "gateway": "10.89.0.1"}]]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::create_dir_all(dir).map_err(error::io("creating", dir))?;
    let path = dir.join(DEFAULT_NETWORK_FILE);
    let text = serde_json::to_string_pretty(&conf).map_err(|e| Error::Internal(e.to_string()))?;
    berth_store::write_atomic(&path, text.as_bytes())?;
    tracing::info!(file = %path.display(), "installed the default pod network (bridge berth0, 10.89.0.0/16)");
    Ok(())
}

/// Finds a runtime binary (a bare name is looked up in `PATH` and the sbin dirs).
pub(crate) fn resolve_binary(path: &Path) -> Option<PathBuf> {
    if path.components().count() > 1 {
        return path.is_file().then(|| path.to_path_buf());
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    let found = path_var
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/sbin",
            "/sbin",
            "/usr/local/bin",
            "/usr/bin",
        ])
        .map(|d| Path::new(d).join(path))
        .find(|p| p.is_file());
    found
}

/// Resolves an id or a unique id prefix among `ids`.
pub(crate) fn resolve_prefix<'a, I>(ids: I, wanted: &str, what: &str) -> Result<Option<String>>
where
    I: Iterator<Item = &'a String>,
{
    if wanted.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} id is empty")));
    }
    let mut found = None;
    for id in ids {
        if id == wanted {
            return Ok(Some(id.clone()));
        }
        if id.starts_with(wanted) {
            if found.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{what} id prefix {wanted:?} is ambiguous"
                )));
            }
            found = Some(id.clone());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let ids = ["abc123".to_string(), "abd456".to_string()];
        assert_eq!(
            resolve_prefix(ids.iter(), "abc", "pod").unwrap().as_deref(),
            Some("abc123")
        );
        assert_eq!(
            resolve_prefix(ids.iter(), "abd456", "pod")
                .unwrap()
                .as_deref(),
            Some("abd456")
        );
        assert!(resolve_prefix(ids.iter(), "ab", "pod").is_err());
        assert_eq!(resolve_prefix(ids.iter(), "x", "pod").unwrap(), None);
        assert!(resolve_prefix(ids.iter(), "", "pod").is_err());
    }

    #[test]
    fn ids_are_64_hex_digits() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }
}

/// Runs blocking filesystem work (unmounts, tree removals, fsyncs) off the
/// async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))?
}

/// A pod or container record in quarantine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantinedRecord {
    pub kind: &'static str,
    #[serde(flatten)]
    pub record: berth_store::Quarantined,
}

/// Checks an `address/prefix` network: a valid IPv4 or IPv6 address and a
/// prefix length that fits it.
fn parse_cidr(s: &str) -> std::result::Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = s.split_once('/').ok_or("not in address/prefix form")?;
    let addr: std::net::IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("prefix length {prefix:?} is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix length {prefix} is over {max}"));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod cidr_tests {
    use super::parse_cidr;

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.244.1.0/24").is_ok());
        assert!(parse_cidr("fd00:1::/64").is_ok());
        assert!(parse_cidr("10.244.1.0").is_err());
        assert!(parse_cidr("10.244.1.0/33").is_err());
        assert!(parse_cidr("fd00::/129").is_err());
        assert!(parse_cidr("banana/8").is_err());
        assert!(parse_cidr("10.0.0.0/x").is_err());
    }
}
