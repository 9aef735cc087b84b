//! Containers: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers, ExecSync,
//! UpdateContainerResources, ReopenContainerLog.
//!
//! The daemon prepares a container (root filesystem overlay, OCI spec,
//! bundle, log path) and hands it to the pod's monitor, which creates,
//! starts, signals and reaps it. The monitor's state file is the truth
//! about the container's lifecycle; the record here is what was asked.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_monitor::client::ClientError;
use berth_monitor::protocol::{paths, Request};
pub use berth_monitor::protocol::{State, Status};
use berth_podspec::{ContainerConfig, ContainerMetadata, IdMapping, NamespaceMode, Resources};
use berth_snapshot::{Overlay, OverlaySpec};
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups;
use crate::error::{io, Error, Result};
use crate::events::EventKind;
use crate::idmap::IdmappedMounts;
use crate::sandbox::SandboxRecord;
use crate::{now_ns, resolve_prefix, Runtime};

/// Who the container runs as (for ContainerStatus.user).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What Berth keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// What CreateContainer asked for.
    pub config: ContainerConfig,
    /// The image's id (its config digest).
    pub image_id: String,
    /// A repo digest of the image, else its id.
    pub image_ref: String,
    /// The image name to report (its first tag, else what was asked).
    pub image_name: String,
    pub created_at: i64,
    /// Absolute log path, if the pod has a log directory.
    pub log_path: Option<PathBuf>,
    /// The image's STOPSIGNAL.
    pub image_stop_signal: Option<String>,
    /// Layer snapshots the root filesystem uses.
    pub chains: Vec<String>,
    pub cgroups_path: String,
    pub user: User,
    /// The resources last applied.
    pub resources: Option<Resources>,
    /// The pod's name, namespace and uid, for the name key.
    pub pod_key: String,
}

impl ContainerRecord {
    pub fn metadata(&self) -> &ContainerMetadata {
        &self.config.metadata
    }

    pub fn name_key(&self) -> String {
        let m = self.metadata();
        format!("{}_{}_{}", m.name, self.pod_key, m.attempt)
    }

    /// The CRI list filters: id and pod id prefixes (empty: any), labels.
    pub fn matches(
        &self,
        id: &str,
        pod: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        self.id.starts_with(id)
            && self.sandbox_id.starts_with(pod)
            && labels
                .iter()
                .all(|(k, v)| self.config.labels.get(k) == Some(v))
    }
}

/// Root filesystem directories of a container.
struct Rootfs {
    dir: PathBuf,
}

impl Rootfs {
    fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// Mounts the overlay; `owner` (host uid and gid) owns the writable
    /// layer's top directory, for a user-namespaced pod whose root is not
    /// the host's.
    fn mount(&self, lowers: &[PathBuf], owner: Option<(u32, u32)>) -> Result<()> {
        let upper = self.dir.join("upper");
        let work = self.dir.join("work");
        for d in [&upper, &work, &self.merged()] {
            std::fs::create_dir_all(d).map_err(io("creating", d))?;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&upper, Some(uid), Some(gid)).map_err(io("chown", &upper))?;
        }
        Overlay::mount(
            &OverlaySpec {
                lowers,
                upper: Some((&upper, &work)),
            },
            &self.merged(),
        )?;
        Ok(())
    }

    /// Unmounts (if mounted) and deletes everything. Idempotent.
    fn remove(&self) -> Result<()> {
        if crate::podfiles::is_mountpoint(&self.merged()) {
            Overlay::at(self.merged()).unmount()?;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &self.dir)(e)),
            _ => Ok(()),
        }
    }
}

/// Where ID-mapped image layers are numbered among a container's staging
/// mounts (its volumes take the numbers of their mounts, below).
const LAYER_STAGING: usize = 100_000;

/// Signal names as images and the CRI spell them: "SIGTERM", "TERM", "15".
fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    Signal::from_str(&name).ok()
}

/// The signal StopContainer sends first: the container config's, else the
/// image's `STOPSIGNAL`, else SIGTERM (containerd's order).
pub fn stop_signal(rec: &ContainerRecord) -> Signal {
    effective_stop_signal(
        rec.config.stop_signal.as_deref(),
        rec.image_stop_signal.as_deref(),
    )
}

fn effective_stop_signal(config: Option<&str>, image: Option<&str>) -> Signal {
    match config {
        None => image.and_then(parse_signal).unwrap_or(Signal::SIGTERM),
        Some(s) => parse_signal(s).unwrap_or(Signal::SIGTERM),
    }
}

/// A container's `log_path` stays inside its pod's log directory: it is
/// relative and never climbs (`..`). The monitor writes it as root.
fn check_log_path(log_path: &str) -> Result<()> {
    use std::path::Component;
    let p = Path::new(log_path);
    let bad = p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if bad {
        return Err(Error::InvalidArgument(format!(
            "log_path {log_path:?} must be a relative path inside the pod's log directory"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod log_path_tests {
    #[test]
    fn log_paths_stay_in_the_pod_directory() {
        for ok in ["", "c/0.log", "c.log", "./c/1.log"] {
            assert!(super::check_log_path(ok).is_ok(), "{ok}");
        }
        for bad in ["/etc/passwd", "../x.log", "c/../../x.log", "c/.."] {
            assert!(super::check_log_path(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod stop_signal_tests {
    use super::*;

    #[test]
    fn config_then_image_then_sigterm() {
        let eff = |c, i| effective_stop_signal(c, i);
        assert_eq!(eff(None, None), Signal::SIGTERM);
        assert_eq!(eff(None, Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(eff(None, Some("usr1")), Signal::SIGUSR1);
        assert_eq!(eff(None, Some("9")), Signal::SIGKILL);
        assert_eq!(eff(None, Some("bogus")), Signal::SIGTERM);
        assert_eq!(eff(Some("SIGINT"), Some("SIGQUIT")), Signal::SIGINT);
    }
}

impl Runtime {
    fn rootfs(&self, id: &str) -> Rootfs {
        Rootfs {
            dir: self.inner.root.join("rootfs").join(id),
        }
    }

    pub(crate) fn bundle(&self, id: &str) -> PathBuf {
        self.inner.state.join("containers").join(id)
    }

    /// The container `id` (or unique prefix) names.
    pub fn find_container(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let idx = self.read_index();
        let Some(full) = resolve_prefix(idx.containers.keys(), id, "container")? else {
            return Ok(None);
        };
        Ok(idx.containers.get(&full).cloned())
    }

    pub(crate) fn get_container(&self, id: &str) -> Result<ContainerRecord> {
        self.find_container(id)?
            .ok_or_else(|| Error::NotFound(format!("container {id}")))
    }

    /// Writes the record (its fsync in a blocking task) and indexes it.
    async fn save_container(&self, rec: &ContainerRecord) -> Result<()> {
        let records = self.inner.container_records.clone();
        let owned = rec.clone();
        crate::blocking(move || Ok(records.put(&owned.id, &owned)?)).await?;
        self.index().containers.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// A container and its pod, whose monitor must be alive (exec, attach).
    pub(crate) fn container_and_live_pod(
        &self,
        id: &str,
    ) -> Result<(ContainerRecord, SandboxRecord)> {
        let rec = self.get_container(id)?;
        let pod = self
            .pod_of(&rec)
            .filter(|p| p.monitor_alive())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("container {} is not running", rec.id))
            })?;
        Ok((rec, pod))
    }

    pub(crate) fn pod_of(&self, rec: &ContainerRecord) -> Option<SandboxRecord> {
        self.read_index().pods.get(&rec.sandbox_id).cloned()
    }

    /// The container's lifecycle state, from its monitor's state file; a
    /// container whose monitor is gone without recording its exit is
    /// reported exited with an unknown code.
    pub fn container_state(&self, rec: &ContainerRecord) -> State {
        let pod = self.pod_of(rec);
        let recorded = pod
            .as_ref()
            .and_then(|p| p.monitor(self).read_state(&rec.id));
        let monitor_alive = pod.as_ref().is_some_and(|p| p.monitor_alive());
        match recorded {
            Some(s) if s.status == Status::Exited || monitor_alive => s,
            other => {
                let base = other.unwrap_or(State {
                    id: rec.id.clone(),
                    status: Status::Created,
                    pid: None,
                    created_at: rec.created_at,
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    message: String::new(),
                });
                State {
                    status: Status::Exited,
                    pid: None,
                    finished_at: if base.finished_at > 0 {
                        base.finished_at
                    } else {
                        base.started_at.max(base.created_at)
                    },
                    exit_code: 255,
                    reason: "Unknown".into(),
                    message: "the pod's monitor is gone; the container's exit was not recorded"
                        .into(),
                    ..base
                }
            }
        }
    }

    /// CreateContainer.
    pub async fn create_container(&self, pod_id: &str, config: ContainerConfig) -> Result<String> {
        let pod = self.get_pod(pod_id)?;
        if !(pod.ready && pod.monitor_alive()) {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        if config.metadata.name.is_empty() {
            return Err(Error::InvalidArgument(
                "container metadata has no name".into(),
            ));
        }
        check_log_path(&config.log_path)?;
        let wanted = Some(config.image.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::InvalidArgument("container config names no image".into()))?;
        let (image, _) = self
            .inner
            .images
            .resolve(&wanted)
            .ok_or_else(|| Error::NotFound(format!("image {wanted:?}")))?;
        let pm = pod.metadata();
        let mut rec = ContainerRecord {
            id: crate::new_id(),
            sandbox_id: pod.id.clone(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            image_name: image
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| wanted.clone()),
            created_at: now_ns(),
            log_path: None,
            image_stop_signal: None,
            chains: image.chain_ids().map(str::to_string).collect(),
            cgroups_path: cgroups::container_path(
                pod.config
                    .linux
                    .as_ref()
                    .map(|l| l.cgroup_parent.as_str())
                    .unwrap_or(""),
                "",
            ),
            user: User::default(),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            pod_key: format!("{}_{}_{}", pm.name, pm.namespace, pm.uid),
            config,
        };
        rec.cgroups_path = format!("{}{}", rec.cgroups_path, rec.id);
        self.reserve(rec.name_key(), &rec.id, "container")?;
        let _g = self.lock(&rec.id).await;
        let _pod_guard = self.lock(&pod.id).await;
        match self.prepare(&pod, &mut rec, &image).await {
            Ok(()) => {
                self.emit(&rec.id, &pod.id, EventKind::Created);
                Ok(rec.id)
            }
            Err(e) => {
                let _ = pod
                    .monitor(self)
                    .done_call(&Request::Delete { id: rec.id.clone() })
                    .await;
                if let Err(c) = self.rootfs(&rec.id).remove() {
                    tracing::warn!(container = %rec.id, error = %c, "cleanup after a failed CreateContainer");
                }
                if let Err(c) = IdmappedMounts::at(&self.inner.state, &rec.id).release() {
                    tracing::warn!(container = %rec.id, error = %c, "cleanup after a failed CreateContainer");
                }
                let _ = std::fs::remove_dir_all(self.bundle(&rec.id));
                self.inner.images.release(&rec.id);
                self.unreserve(&rec.name_key(), &rec.id);
                self.forget_lock(&rec.id);
                Err(e)
            }
        }
    }

    async fn prepare(
        &self,
        pod: &SandboxRecord,
        rec: &mut ContainerRecord,
        image: &berth_image::ImageRecord,
    ) -> Result<()> {
        let t0 = std::time::Instant::now();
        let lowers = self.inner.images.hold(&rec.id, image).await?;
        let rootfs = self.rootfs(&rec.id);
        let (lowers, owner) = self.idmapped_layers(pod, rec, lowers).await?;
        rootfs.mount(&lowers, owner)?;
        let t_rootfs = t0.elapsed();
        let image_config: oci_spec::image::ImageConfiguration =
            serde_json::from_slice(&self.inner.images.config_json(image)?).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "image {} has an unreadable config: {e}",
                    image.id
                ))
            })?;
        rec.image_stop_signal = image_config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone());
        let namespaces = self.namespaces_for(pod, &rec.config)?;
        let files = pod.files(self);
        let merged = rootfs.merged();
        let config = self.idmapped_mounts(pod, rec).await?;
        let input = berth_oci::SpecInput {
            container: &config,
            sandbox: &pod.config,
            image: &image_config,
            rootfs: &merged,
            namespaces,
            pod_files: berth_oci::PodFiles {
                hostname: Some(files.hostname.clone()),
                resolv_conf: Some(files.resolv_conf.clone()),
                hosts: Some(files.hosts.clone()),
                shm: Some(
                    files
                        .shm
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("/dev/shm")),
                ),
            },
            cgroups_path: PathBuf::from(&rec.cgroups_path),
            grantable: &self.inner.grantable,
            oom_score_adj_min: own_oom_score_adj(),
            cgroup: self.inner.cgroup.clone(),
            recursive_read_only: true,
        };
        let generated = berth_oci::generate(&input)?;
        if !generated.left_out.is_empty() {
            tracing::info!(
                container = %rec.id,
                left_out = %generated.left_out.join("; "),
                "limits this host's cgroups cannot apply are left out"
            );
        }
        rec.user = User {
            uid: generated.identity.uid,
            gid: generated.identity.gid,
            groups: generated.identity.additional_gids.clone(),
        };
        if pod.userns.is_some() {
            create_mount_points(&merged, &generated.spec)?;
        }
        let bundle = self.bundle(&rec.id);
        std::fs::create_dir_all(&bundle).map_err(io("creating", &bundle))?;
        let config_path = bundle.join("config.json");
        generated
            .spec
            .save(&config_path)
            .map_err(|e| Error::Internal(format!("writing {}: {e}", config_path.display())))?;
        let log_dir = &pod.config.log_directory;
        if !log_dir.is_empty() && !rec.config.log_path.is_empty() {
            let path = Path::new(log_dir).join(&rec.config.log_path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            rec.log_path = Some(path);
        }
        let t_spec = t0.elapsed();
        let oom_score_adj = generated
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.oom_score_adj());
        pod.monitor(self)
            .state_call(&Request::Create {
                id: rec.id.clone(),
                bundle,
                log_path: rec.log_path.clone(),
                oom_score_adj,
                memory_cgroup: Some(self.inner.layout.dir("memory", &rec.cgroups_path)),
                stdin: rec.config.stdin,
                stdin_once: rec.config.stdin_once,
                tty: rec.config.tty,
            })
            .await?;
        tracing::debug!(
            container = %rec.id,
            rootfs_ms = t_rootfs.as_secs_f64() * 1e3,
            spec_ms = (t_spec - t_rootfs).as_secs_f64() * 1e3,
            monitor_ms = (t0.elapsed() - t_spec).as_secs_f64() * 1e3,
            "container created"
        );
        self.save_container(rec).await
    }

    /// The image's layers as the overlay's lower directories: in a
    /// user-namespaced pod, each one through an ID-mapped staging mount
    /// (the pod's root owns what the host's root owns), with the pod's
    /// root as the owner of the writable layer; elsewhere as they are.
    async fn idmapped_layers(
        &self,
        pod: &SandboxRecord,
        rec: &ContainerRecord,
        lowers: Vec<PathBuf>,
    ) -> Result<(Vec<PathBuf>, Option<(u32, u32)>)> {
        let (Some(maps), Some(init)) = (&pod.userns, pod.pod_init) else {
            return Ok((lowers, None));
        };
        let root_of =
            |m: &[(u32, u32, u32)]| m.iter().find(|(c, _, _)| *c == 0).map(|(_, h, _)| *h);
        let (Some(uid), Some(gid)) = (root_of(&maps.uids), root_of(&maps.gids)) else {
            return Err(Error::InvalidArgument(
                "the pod's user namespace maps no root: its image cannot be owned by it".into(),
            ));
        };
        let staging = IdmappedMounts::at(&self.inner.state, &rec.id);
        let userns = PathBuf::from(format!("/proc/{init}/ns/user"));
        let mapped = crate::blocking(move || {
            lowers
                .iter()
                .enumerate()
                .map(|(i, l)| staging.add(LAYER_STAGING + i, l, &userns, false))
                .collect::<Result<Vec<_>>>()
        })
        .await;
        match mapped {
            Ok(m) => Ok((m, Some((uid, gid)))),
            Err(e) => {
                // Nothing half-made stays behind.
                let staging = IdmappedMounts::at(&self.inner.state, &rec.id);
                let _ = crate::blocking(move || staging.release()).await;
                Err(e)
            }
        }
    }

    /// The container config the spec is generated from: in a
    /// user-namespaced pod, each mount the kubelet gave the pod's ID
    /// mappings becomes a plain bind of an ID-mapped staging mount.
    async fn idmapped_mounts(
        &self,
        pod: &SandboxRecord,
        rec: &ContainerRecord,
    ) -> Result<ContainerConfig> {
        let mut config = rec.config.clone();
        if config
            .mounts
            .iter()
            .all(|m| m.uid_mappings.is_empty() && m.gid_mappings.is_empty())
        {
            return Ok(config);
        }
        let (Some(maps), Some(init)) = (&pod.userns, pod.pod_init) else {
            return Err(Error::InvalidArgument(
                "ID-mapped mounts (uidMappings/gidMappings) need a pod with its own user \
                 namespace"
                    .into(),
            ));
        };
        let same = |wanted: &[IdMapping], pod: &[(u32, u32, u32)]| {
            wanted.len() == pod.len()
                && wanted
                    .iter()
                    .zip(pod)
                    .all(|(w, p)| (w.container_id, w.host_id, w.length) == *p)
        };
        let mut todo = Vec::new();
        for (n, m) in config.mounts.iter().enumerate() {
            if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
                continue;
            }
            if !same(&m.uid_mappings, &maps.uids) || !same(&m.gid_mappings, &maps.gids) {
                return Err(Error::InvalidArgument(format!(
                    "mount {:?}: its ID mappings differ from the pod's user namespace; \
                     only the pod's mappings are supported",
                    m.container_path
                )));
            }
            todo.push((n, PathBuf::from(&m.host_path)));
        }
        let staging = IdmappedMounts::at(&self.inner.state, &rec.id);
        let userns = PathBuf::from(format!("/proc/{init}/ns/user"));
        let made = crate::blocking(move || {
            todo.into_iter()
                .map(|(n, source)| Ok((n, staging.add(n, &source, &userns, true)?)))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        for (n, path) in made {
            let m = &mut config.mounts[n];
            m.host_path = path.to_string_lossy().into_owned();
            m.uid_mappings.clear();
            m.gid_mappings.clear();
        }
        Ok(config)
    }

    fn namespaces_for(
        &self,
        pod: &SandboxRecord,
        config: &ContainerConfig,
    ) -> Result<berth_oci::Namespaces> {
        use berth_oci::Namespace as Ns;
        let monitor = pod
            .monitor
            .ok_or_else(|| Error::FailedPrecondition(format!("pod {} has no monitor", pod.id)))?;
        let ns_path = |pid: i32, ns: &str| PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
        let opts = config
            .security_context()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_else(|| pod.namespaces());
        let pid = match opts.pid {
            NamespaceMode::Node => Ns::Host,
            NamespaceMode::Container => Ns::New,
            NamespaceMode::Pod => match pod.pod_init {
                Some(init) => Ns::Join(ns_path(init, "pid")),
                None if pod.namespaces().pid == NamespaceMode::Node => Ns::Host,
                None => {
                    return Err(Error::FailedPrecondition(format!(
                        "the container asks for the pod's PID namespace, but pod {} was \
                         created with PID namespace mode {:?}: it has none to share (create \
                         the pod with mode POD)",
                        pod.id,
                        pod.namespaces().pid
                    )))
                }
            },
            NamespaceMode::Target => {
                let target = self.get_container(&opts.target_id)?;
                if target.sandbox_id != pod.id {
                    return Err(Error::InvalidArgument(format!(
                        "target container {} is in another pod",
                        opts.target_id
                    )));
                }
                let state = self.container_state(&target);
                let pid = state
                    .pid
                    .filter(|_| state.status == Status::Running)
                    .ok_or_else(|| {
                        Error::FailedPrecondition(format!(
                            "target container {} is not running",
                            opts.target_id
                        ))
                    })?;
                Ns::Join(ns_path(pid, "pid"))
            }
        };
        if let Some(maps) = &pod.userns {
            // Every namespace of a user-namespaced pod belongs to its user
            // namespace, held by the pod init.
            let init = pod.pod_init.ok_or_else(|| {
                Error::FailedPrecondition(format!("pod {} has no pod init", pod.id))
            })?;
            let join = |ns: &str| Ns::Join(ns_path(init, ns));
            let lines = |l: &[(u32, u32, u32)]| {
                l.iter()
                    .map(|(c, h, n)| berth_oci::IdMap {
                        container_id: *c,
                        host_id: *h,
                        size: *n,
                    })
                    .collect()
            };
            // The kubelet gives each container a PID namespace of its own
            // unless the pod shares one: a new one is created inside the
            // pod's user namespace, so the container's root owns it.
            if pid == Ns::Host {
                return Err(Error::InvalidArgument(
                    "a container of a user-namespaced pod cannot use the host's PID namespace"
                        .into(),
                ));
            }
            return Ok(berth_oci::Namespaces {
                net: if pod.own_uts { join("net") } else { Ns::Host },
                ipc: if pod.own_ipc { join("ipc") } else { Ns::Host },
                uts: if pod.own_uts { join("uts") } else { Ns::Host },
                pid,
                user: Some(berth_oci::UserNs {
                    uid_mappings: lines(&maps.uids),
                    gid_mappings: lines(&maps.gids),
                    path: Some(ns_path(init, "user")),
                }),
            });
        }
        Ok(berth_oci::Namespaces {
            net: match &pod.netns {
                Some(p) => Ns::Join(p.clone()),
                None => Ns::Host,
            },
            ipc: if pod.own_ipc {
                Ns::Join(ns_path(monitor.pid, "ipc"))
            } else {
                Ns::Host
            },
            uts: if pod.own_uts {
                Ns::Join(ns_path(monitor.pid, "uts"))
            } else {
                Ns::Host
            },
            pid,
            user: None,
        })
    }

    /// StartContainer: returns when the container's process runs.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let rec = self.get_container(id)?;
        let _g = self.lock(&rec.id).await;
        let pod = self.pod_of(&rec).ok_or_else(|| {
            Error::NotFound(format!(
                "pod sandbox {} of container {}",
                rec.sandbox_id, rec.id
            ))
        })?;
        if !pod.monitor_alive() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not running",
                pod.id
            )));
        }
        pod.monitor(self)
            .state_call(&Request::Start { id: rec.id.clone() })
            .await?;
        self.emit(&rec.id, &rec.sandbox_id, EventKind::Started);
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout`
    /// seconds (0: at once). Unknown and stopped containers are fine.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let Some(rec) = self.find_container(id)? else {
            return Ok(());
        };
        let _g = self.lock(&rec.id).await;
        let Some(pod) = self.pod_of(&rec) else {
            return Ok(());
        };
        if !pod.monitor_alive() {
            return Ok(());
        }
        let signal = stop_signal(&rec);
        let timeout_secs = timeout.max(0) as u64;
        let client = pod.monitor(self);
        let req = Request::Stop {
            id: rec.id.clone(),
            signal: signal as i32,
            timeout_secs,
        };
        // Bounded by the request's deadline: the grace period, SIGKILL and
        // reaping (Request::deadline); past it, DeadlineExceeded.
        match client.state_call(&req).await {
            Ok(_)
            | Err(ClientError::Remote {
                kind: berth_monitor::protocol::ErrorKind::NotFound,
                ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// RemoveContainer: kills it if it runs and removes everything it had.
    /// Unknown containers are fine.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let Some(rec) = self.find_container(id)? else {
            return Ok(());
        };
        let guard = self.lock(&rec.id).await;
        let Some(rec) = self.find_container(&rec.id)? else {
            return Ok(());
        };
        let pod = self.pod_of(&rec);
        match &pod {
            Some(p) if p.monitor_alive() => {
                p.monitor(self)
                    .done_call(&Request::Delete { id: rec.id.clone() })
                    .await?;
            }
            _ => kill_cgroups(self, vec![rec.cgroups_path.clone()]).await,
        }
        if let Some(p) = &pod {
            let _ = std::fs::remove_file(berth_monitor::protocol::paths::state(
                &p.pod_dir(self),
                &rec.id,
            ));
        }
        // Unmounting, removing a writable layer of any size and the record's
        // fsync: a blocking task.
        let rootfs = self.rootfs(&rec.id);
        let idmapped = IdmappedMounts::at(&self.inner.state, &rec.id);
        let bundle = self.bundle(&rec.id);
        let records = self.inner.container_records.clone();
        let id = rec.id.clone();
        crate::blocking(move || {
            rootfs.remove()?;
            idmapped.release()?;
            match std::fs::remove_dir_all(&bundle) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing", &bundle)(e))
                }
                _ => {}
            }
            records.delete(&id)?;
            Ok(())
        })
        .await?;
        self.index().containers.remove(&rec.id);
        self.inner.images.release(&rec.id);
        self.unreserve(&rec.name_key(), &rec.id);
        self.emit(&rec.id, &rec.sandbox_id, EventKind::Deleted);
        drop(guard);
        self.forget_lock(&rec.id);
        Ok(())
    }

    /// ContainerStatus: the container, and with `verbose` the runtime's
    /// details (the edge adds the container's config in the CRI's form).
    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(
        ContainerView,
        Option<serde_json::Map<String, serde_json::Value>>,
    )> {
        let rec = self.get_container(id)?;
        let view = self.view(rec);
        let info = verbose.then(|| {
            let rec = &view.record;
            let spec = Spec::load(self.bundle(&rec.id).join("config.json")).ok();
            let mut info = serde_json::Map::new();
            info.insert("sandboxID".into(), rec.sandbox_id.clone().into());
            info.insert("pid".into(), view.state.pid.into());
            info.insert("removing".into(), false.into());
            info.insert("snapshotKey".into(), rec.id.clone().into());
            info.insert("runtimeSpec".into(), serde_json::json!(spec));
            info.insert("cgroupsPath".into(), rec.cgroups_path.clone().into());
            info
        });
        Ok((view, info))
    }

    pub(crate) fn view(&self, record: ContainerRecord) -> ContainerView {
        ContainerView {
            state: self.container_state(&record),
            stop_signal: stop_signal(&record),
            record,
        }
    }

    /// ListContainers.
    pub fn list_containers(&self, filter: &ContainerFilter) -> Vec<ContainerView> {
        let recs: Vec<ContainerRecord> = self.read_index().containers.values().cloned().collect();
        recs.into_iter()
            .filter(|c| c.matches(&filter.id, &filter.pod_id, &filter.labels))
            .map(|c| self.view(c))
            .filter(|c| filter.status.is_none_or(|s| s == c.state.status))
            .collect()
    }

    /// ExecSync: runs `cmd` in the container; a non-zero exit is a result,
    /// not an error. A timeout kills the process and is DeadlineExceeded.
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec: no command given".into()));
        }
        let (rec, pod) = self.container_and_live_pod(id)?;
        let spec_path = self.bundle(&rec.id).join("config.json");
        let spec = Spec::load(&spec_path)
            .map_err(|e| Error::Internal(format!("reading {}: {e}", spec_path.display())))?;
        let process = berth_oci::exec_process(&spec, cmd, false);
        let process = serde_json::to_value(&process).map_err(|e| Error::Internal(e.to_string()))?;
        let timeout_secs = timeout.max(0) as u64;
        let r = pod
            .monitor(self)
            .exec(&Request::Exec {
                id: rec.id.clone(),
                process,
                timeout_secs,
            })
            .await?;
        if r.timed_out {
            return Err(Error::DeadlineExceeded(format!(
                "timeout {timeout_secs}s exceeded: the command was killed"
            )));
        }
        Ok(ExecOutput {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }

    /// UpdateContainerResources: applies to the live cgroup and is reported
    /// by ContainerStatus.
    pub async fn update_container(&self, id: &str, resources: Option<Resources>) -> Result<()> {
        let id = self.get_container(id)?.id;
        let _g = self.lock(&id).await;
        // Read under the lock: a concurrent update's fields are kept.
        let mut rec = self.get_container(&id)?;
        let state = self.container_state(&rec);
        if state.status == Status::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let Some(r) = resources else {
            return Ok(());
        };
        let left_out =
            cgroups::update(self.inner.layout, &self.inner.cgroup, &rec.cgroups_path, &r)?;
        if !left_out.is_empty() {
            tracing::info!(
                container = %rec.id,
                left_out = %left_out.join("; "),
                "limits this host's cgroups cannot apply are left out"
            );
        }
        let mut merged = rec.resources.clone().unwrap_or_default();
        merged.merge(&r);
        rec.resources = Some(merged);
        self.save_container(&rec).await
    }

    /// ReopenContainerLog: the monitor opens the log path again.
    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let rec = self.get_container(id)?;
        let state = self.container_state(&rec);
        if state.status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let pod = self
            .pod_of(&rec)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {}", rec.sandbox_id)))?;
        pod.monitor(self)
            .done_call(&Request::ReopenLog { id: rec.id.clone() })
            .await?;
        Ok(())
    }
}

/// A container as ContainerStatus and ListContainers report it.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    /// Its lifecycle, from its monitor's state file.
    pub state: State,
    /// The signal StopContainer sends first (config, image, else SIGTERM).
    pub stop_signal: Signal,
}

/// Which containers ListContainers and ListContainerStats return: every
/// field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// An id prefix; empty: any.
    pub id: String,
    /// A pod id prefix; empty: any.
    pub pod_id: String,
    pub status: Option<Status>,
    /// Labels the container must have, with these values.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What ExecSync collected: a non-zero exit is a result, not an error.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// The lowest oom_score_adj this process may set (its own current value
/// without CAP_SYS_RESOURCE; -1000 with it).
fn own_oom_score_adj() -> i32 {
    let has_sys_resource = berth_oci::caps::grantable().contains("CAP_SYS_RESOURCE");
    if has_sys_resource {
        return -1000;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills what is left of containers whose monitor is gone, and removes
/// their cgroups (a blocking task: removal waits for the kernel).
async fn kill_cgroups(rt: &Runtime, paths: Vec<String>) {
    let layout = rt.inner.layout;
    let done = tokio::task::spawn_blocking(move || {
        for p in paths {
            cgroups::kill_and_remove(layout, &p);
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "killing containers through their cgroups");
    }
}

/// For every container of the pod: kill and remove its cgroup if its
/// monitor could not.
pub(crate) async fn kill_orphans(rt: &Runtime, pod_id: &str) {
    let paths: Vec<String> = rt
        .read_index()
        .containers
        .values()
        .filter(|c| c.sandbox_id == pod_id)
        .map(|c| c.cgroups_path.clone())
        .collect();
    kill_cgroups(rt, paths).await;
}

/// At start: containers whose pod record is gone are removed, and root
/// filesystems and bundles of containers that were never recorded (the
/// daemon was killed inside CreateContainer) are released.
pub(crate) async fn reconcile(rt: &Runtime) {
    let mut known: std::collections::HashSet<String> =
        rt.read_index().containers.keys().cloned().collect();
    // Quarantined records' containers keep their root filesystems and
    // bundles, and containers of quarantined pods stay.
    known.extend(rt.quarantined_ids("container"));
    let quarantined_pods = rt.quarantined_ids("pod");
    for e in std::fs::read_dir(rt.inner.root.join("rootfs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if !known.contains(&id) {
            tracing::warn!(container = %id, "removing the root filesystem of an unrecorded container");
            if let Err(err) = rt.rootfs(&id).remove() {
                tracing::warn!(container = %id, error = %err, "removing a leftover root filesystem");
            }
        }
    }
    for e in std::fs::read_dir(IdmappedMounts::root(&rt.inner.state))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if !known.contains(&id) {
            if let Err(err) = IdmappedMounts::at(&rt.inner.state, &id).release() {
                tracing::warn!(container = %id, error = %err, "releasing leftover ID-mapped mounts");
            }
        }
    }
    for e in std::fs::read_dir(rt.inner.state.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if !known.contains(&id) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    // A daemon killed between the monitor's Create and the record leaves a
    // container only its monitor knows: it is deleted through the monitor.
    let pods: Vec<SandboxRecord> = rt
        .read_index()
        .pods
        .values()
        .filter(|p| p.monitor_alive())
        .cloned()
        .collect();
    for pod in pods {
        let states = paths::states(&pod.pod_dir(rt));
        for e in std::fs::read_dir(&states).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if known.contains(id) {
                continue;
            }
            tracing::warn!(container = %id, pod = %pod.id, "deleting a container an interrupted CreateContainer left in its monitor");
            if let Err(err) = pod
                .monitor(rt)
                .done_call(&Request::Delete { id: id.to_string() })
                .await
            {
                tracing::warn!(container = %id, error = %err, "deleting an unrecorded container");
            }
        }
    }
    let orphans: Vec<String> = {
        let idx = rt.read_index();
        idx.containers
            .values()
            .filter(|c| !idx.pods.contains_key(&c.sandbox_id))
            .filter(|c| !quarantined_pods.contains(&c.sandbox_id))
            .map(|c| c.id.clone())
            .collect()
    };
    for id in orphans {
        if let Err(e) = rt.remove_container(&id).await {
            tracing::warn!(container = %id, error = %e, "removing a container without a pod");
        }
    }
}

/// Creates, as the host's root, the mount points of `spec` that the image
/// lacks (`/etc/hostname`, volume targets...). A container in a user
/// namespace is not root on its root filesystem and could not create them.
/// Paths are resolved inside the rootfs (`RESOLVE_IN_ROOT`): a symlink in
/// the image cannot point them outside.
fn create_mount_points(rootfs: &Path, spec: &Spec) -> Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening", rootfs)(e.into()))?;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        if ["/proc", "/dev", "/sys"]
            .iter()
            .any(|p| dest.starts_with(p))
        {
            continue;
        }
        let rel = dest.strip_prefix("/").unwrap_or(dest);
        if rel.as_os_str().is_empty()
            || rustix::fs::openat2(
                &root,
                rel,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            )
            .is_ok()
        {
            continue;
        }
        let is_file = m
            .source()
            .as_ref()
            .is_some_and(|s| std::fs::metadata(s).map(|md| md.is_file()).unwrap_or(false));
        // Parents first, each resolved inside the root.
        let mut partial = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            partial.push(c);
            let last = i + 1 == comps.len();
            let exists = rustix::fs::openat2(
                &root,
                &partial,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                resolve,
            )
            .is_ok();
            if exists {
                continue;
            }
            let parent = partial.parent().unwrap_or(Path::new(""));
            let dir = if parent.as_os_str().is_empty() {
                rustix::fs::openat2(
                    &root,
                    ".",
                    OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve,
                )
            } else {
                rustix::fs::openat2(
                    &root,
                    parent,
                    OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve,
                )
            }
            .map_err(|e| io("opening", &rootfs.join(parent))(e.into()))?;
            let name = partial.file_name().unwrap_or_default();
            let made = if last && is_file {
                rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            } else {
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))
            };
            match made {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    return Err(io("creating the mount point", &rootfs.join(&partial))(
                        e.into(),
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("SIGUSR1"), Some(Signal::SIGUSR1));
    }
}
