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
//!   records (what was asked), written atomically;
//! - `<root>/runtime/rootfs/<id>/{upper,work,merged}`: container root filesystems;
//! - `<state>/pods/<id>/`: the monitor's directory (socket, pod.json,
//!   container state files, shared files, shm tmpfs);
//! - `<state>/containers/<id>/`: OCI bundles; `<state>/netns/<id>`: network namespaces.

mod cgroups;
pub mod container;
pub mod error;
mod podfiles;
pub mod sandbox;
mod stats;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_config::Config;
use berth_image::ImageService;
use berth_network::Cni;
use berth_store::RecordDir;

pub use container::ContainerRecord;
pub use error::{Error, Kind, Result};
pub use sandbox::SandboxRecord;

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
    grantable: BTreeSet<&'static str>,
    /// The last CPU sample of each container (time, cumulative ns), for
    /// `usage_nano_cores`.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
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
pub(crate) fn now_ns() -> i64 {
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
    pub async fn open(config: &Config, images: ImageService) -> Result<Runtime> {
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
        let pod_records = RecordDir::open(root.join("pods"))?;
        let container_records = RecordDir::open(root.join("containers"))?;
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
                layout: cgroups::Layout::detect(),
                grantable: berth_oci::caps::grantable(),
                cpu_samples: Mutex::default(),
            }),
        };
        rt.restore().await?;
        Ok(rt)
    }

    async fn restore(&self) -> Result<()> {
        let (pods, bad) = self.inner.pod_records.load_all::<SandboxRecord>()?;
        for e in bad {
            tracing::warn!(error = %e, "skipping unreadable pod record");
        }
        let (containers, bad) = self.inner.container_records.load_all::<ContainerRecord>()?;
        for e in bad {
            tracing::warn!(error = %e, "skipping unreadable container record");
        }
        {
            let mut idx = self.index();
            for (_, p) in pods {
                idx.names.insert(p.name_key(), p.id.clone());
                idx.pods.insert(p.id.clone(), p);
            }
            for (_, c) in containers {
                if !idx.pods.contains_key(&c.sandbox_id) {
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
