//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.
//!
//! A pod is: a network namespace wired by CNI (unless it uses the host's),
//! the shared files and shm tmpfs of [`crate::podfiles`], and a monitor
//! process that creates the pod's IPC, UTS and PID namespaces and runs its
//! containers. Everything a failed or removed pod had is released, in the
//! reverse order, by the same idempotent steps.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_monitor::client::Client;
use berth_monitor::protocol::{self, Handler, PodSpec, Request};
use berth_network::{NetNs, PodNetwork, PortMapping};
use berth_podspec::{NamespaceMode, NamespaceOptions, PodConfig, PodMetadata};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{io, Error, Result};
use crate::events::EventKind;
use crate::podfiles::{check_sysctls, PodFiles};
use crate::{now_ns, resolve_binary, resolve_prefix, Runtime};

/// How long a new monitor may take to set the pod up.
const MONITOR_START: Duration = Duration::from_secs(30);

/// A process identified by pid and start time (pids are reused).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    pub fn of(pid: i32) -> Option<ProcessId> {
        start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// Whether this very process still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    /// Waits until the process has exited, at most `limit`; true if it
    /// has. Woken by a pidfd (no polling; it need not be our child), with
    /// a slow poll where pidfds are missing.
    pub async fn exited(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let pid = rustix::process::Pid::from_raw(self.pid);
        let pidfd = pid.and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK).ok()
        });
        // Opened after the process may have gone and its pid been reused:
        // check identity only now that the fd pins whichever it is.
        if !self.alive() {
            return true;
        }
        if let Some(fd) = pidfd {
            // SAFETY: an OwnedFd moved into the AsyncFd is open, and always
            // the same descriptor, for as long as the AsyncFd owns it.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(fd) = registered {
                let _ = tokio::time::timeout_at(deadline, fd.readable()).await;
                return !self.alive();
            }
        }
        while self.alive() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Field 22 of /proc/<pid>/stat, or None for a missing or zombie process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// What Berth keeps about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// What RunPodSandbox asked for.
    pub config: PodConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub ready: bool,
    /// The pod's network namespace (None: the host's).
    pub netns: Option<PathBuf>,
    pub ips: Vec<String>,
    pub cni_result: Option<serde_json::Value>,
    pub monitor: Option<ProcessId>,
    /// PID 1 of the pod's PID namespace.
    pub pod_init: Option<i32>,
    pub own_ipc: bool,
    pub own_uts: bool,
    /// The pod's user namespace maps (None: the host's user namespace).
    #[serde(default)]
    pub userns: Option<protocol::IdMaps>,
}

impl SandboxRecord {
    pub fn metadata(&self) -> &PodMetadata {
        &self.config.metadata
    }

    /// kubelet's uniqueness key: name, namespace, uid and attempt.
    pub fn name_key(&self) -> String {
        let m = self.metadata();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }

    pub fn namespaces(&self) -> NamespaceOptions {
        self.config.namespace_options()
    }

    pub fn pod_dir(&self, rt: &Runtime) -> PathBuf {
        rt.pod_dir(&self.id)
    }

    pub fn monitor(&self, rt: &Runtime) -> Client {
        Client::new(self.pod_dir(rt))
    }

    pub fn files(&self, rt: &Runtime) -> PodFiles {
        PodFiles::at(&self.pod_dir(rt), self.own_ipc)
    }

    pub fn monitor_alive(&self) -> bool {
        self.monitor.is_some_and(|m| m.alive())
    }

    pub fn privileged(&self) -> bool {
        self.config.privileged()
    }

    fn network(&self) -> Option<PodNetwork> {
        let netns = self.netns.clone()?;
        let m = self.metadata();
        Some(PodNetwork {
            id: self.id.clone(),
            netns,
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            port_mappings: self
                .config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| PortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: p.protocol.as_str().into(),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
        })
    }
}

impl Runtime {
    /// The pod `id` (or unique id prefix) names.
    pub fn find_pod(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let idx = self.read_index();
        let Some(full) = resolve_prefix(idx.pods.keys(), id, "pod sandbox")? else {
            return Ok(None);
        };
        Ok(idx.pods.get(&full).cloned())
    }

    /// UpdatePodSandboxResources: the kubelet tells the runtime a pod's new
    /// resources after it resized the pod's cgroup itself. As in containerd
    /// without NRI plugins there is nothing of the runtime's to change: the
    /// pod must exist, and the call is logged.
    pub fn update_pod_resources(&self, id: &str) -> Result<()> {
        let pod = self.get_pod(id)?;
        tracing::debug!(pod = %pod.id, "pod resources updated by the kubelet");
        Ok(())
    }

    pub(crate) fn get_pod(&self, id: &str) -> Result<SandboxRecord> {
        self.find_pod(id)?
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id}")))
    }

    /// Writes the record (its fsync in a blocking task) and indexes it.
    async fn save_pod(&self, rec: &SandboxRecord) -> Result<()> {
        let records = self.inner.pod_records.clone();
        let owned = rec.clone();
        crate::blocking(move || Ok(records.put(&owned.id, &owned)?)).await?;
        self.index().pods.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    fn handler(&self, name: &str) -> Result<Handler> {
        if name.is_empty() {
            return Ok(Handler::Builtin);
        }
        let h = self.inner.config.runtimes.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no runtime handler {name:?} is configured (known: \"\"{})",
                self.inner
                    .config
                    .runtimes
                    .keys()
                    .map(|k| format!(", {k:?}"))
                    .collect::<String>()
            ))
        })?;
        let path = resolve_binary(&h.path).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "runtime handler {name:?}: {} is not installed",
                h.path.display()
            ))
        })?;
        Ok(Handler::Oci { path })
    }

    /// RunPodSandbox: returns the new pod's id once it is ready.
    pub async fn run_pod(&self, config: PodConfig, handler: String) -> Result<String> {
        if config.metadata.name.is_empty() {
            return Err(Error::InvalidArgument(
                "pod sandbox metadata has no name".into(),
            ));
        }
        let ns = config.namespace_options();
        let userns = berth_oci::validate_userns(ns.userns_options.as_ref())?.map(|u| {
            let lines = |m: &[berth_oci::IdMap]| {
                m.iter()
                    .map(|l| (l.container_id, l.host_id, l.size))
                    .collect::<Vec<_>>()
            };
            protocol::IdMaps {
                uids: lines(&u.uid_mappings),
                gids: lines(&u.gid_mappings),
            }
        });
        let runner = self.handler(&handler)?;
        let host_net = ns.network == NamespaceMode::Node;
        if host_net && !config.hostname.is_empty() {
            // The pod shares the node's UTS namespace: its host name is the
            // node's. containerd (through runc) refuses this too.
            let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            if config.hostname != node.trim() {
                return Err(Error::InvalidArgument(format!(
                    "host name {:?} cannot be set on a host-network pod: it shares the node's \
                     UTS namespace (host name {:?})",
                    config.hostname,
                    node.trim()
                )));
            }
        }
        let own_ipc = ns.ipc != NamespaceMode::Node;
        let sysctls: std::collections::BTreeMap<String, String> = config
            .linux
            .as_ref()
            .map(|l| l.sysctls.clone().into_iter().collect())
            .unwrap_or_default();
        check_sysctls(&sysctls, !host_net, own_ipc)?;
        if !host_net {
            self.inner.cni.reload()?;
        }

        let mut rec = SandboxRecord {
            id: crate::new_id(),
            config,
            runtime_handler: handler,
            created_at: now_ns(),
            ready: false,
            netns: None,
            ips: Vec::new(),
            cni_result: None,
            monitor: None,
            pod_init: None,
            own_ipc,
            own_uts: !host_net,
            userns,
        };
        self.reserve(rec.name_key(), &rec.id, "pod sandbox")?;
        let _g = self.lock(&rec.id).await;
        match self.start_pod(&mut rec, runner, sysctls).await {
            Ok(()) => {
                if let Some(m) = rec.monitor {
                    self.watch_pod(&rec.id, m);
                }
                self.emit(&rec.id, &rec.id, EventKind::Created);
                self.emit(&rec.id, &rec.id, EventKind::Started);
                Ok(rec.id)
            }
            Err(e) => {
                if let Err(c) = self.release_pod(&mut rec).await {
                    tracing::warn!(pod = %rec.id, error = %c, "cleanup after a failed RunPodSandbox");
                }
                let _ = std::fs::remove_dir_all(rec.pod_dir(self));
                self.unreserve(&rec.name_key(), &rec.id);
                self.forget_lock(&rec.id);
                Err(e)
            }
        }
    }

    async fn start_pod(
        &self,
        rec: &mut SandboxRecord,
        handler: Handler,
        sysctls: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let dir = rec.pod_dir(self);
        let t0 = std::time::Instant::now();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        if rec.own_uts && rec.userns.is_none() {
            let path = self.inner.state.join("netns").join(&rec.id);
            let made = {
                let dir = self.inner.state.join("netns");
                let id = rec.id.clone();
                tokio::task::spawn_blocking(move || NetNs::create(&dir, &id))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
            };
            made?;
            // Wired by CNI below, while the monitor starts.
            rec.netns = Some(path);
        }
        let hostname = if rec.own_uts {
            let h = &rec.config.hostname;
            if h.is_empty() {
                rec.metadata().name.chars().take(63).collect()
            } else {
                h.clone()
            }
        } else {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        };
        // CNI wires the netns while the pod files are written and the
        // monitor starts (it joins the netns): all at once. `join!` polls
        // CNI first, so its first plugin is running before the rest starts.
        let pending_net = rec.userns.is_none().then(|| rec.network()).flatten();
        let cni = async {
            match &pending_net {
                Some(net) => Some(self.inner.cni.setup(net).await),
                None => None,
            }
        };
        let monitor = async {
            rec.files(self).create(
                &hostname,
                rec.config.dns_config.as_ref(),
                self.inner.config.pod.shm_size,
            )?;
            let ns = rec.namespaces();
            let spec = PodSpec {
                id: rec.id.clone(),
                netns: rec.netns.clone(),
                new_ipc: rec.own_ipc,
                hostname: rec.own_uts.then(|| hostname.clone()),
                // Only a pod whose containers share one PID namespace needs
                // a pod init (CRI-O's drop_infra_ctr does the same): with
                // CONTAINER (kubelet's default), every container gets its
                // own, and a pod init would only hold an empty one.
                new_pid: ns.pid == NamespaceMode::Pod,
                sysctls,
                handler,
                userns: rec.userns.clone(),
            };
            let spec_path = protocol::paths::pod_spec(&dir);
            let text =
                serde_json::to_vec_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
            std::fs::write(&spec_path, text).map_err(io("writing", &spec_path))?;
            spawn_monitor(&dir).await
        };
        let (wired, spawned) = tokio::join!(cni, monitor);
        if let Ok(m) = &spawned {
            rec.monitor = ProcessId::of(m.pid);
            rec.pod_init = m.pod_init;
        }
        if let Some(wired) = wired {
            let result = wired?;
            rec.ips = result.ips;
            rec.cni_result = Some(result.result);
        }
        spawned?;
        tracing::debug!(pod = %rec.id, ms = t0.elapsed().as_secs_f64() * 1e3, "pod network and monitor ready");
        if rec.userns.is_some() && rec.own_uts {
            // The pod init created the network namespace inside the pod's
            // user namespace: pin it for CNI, then wire it.
            let init = rec.pod_init.ok_or_else(|| {
                Error::Internal("the monitor reported no pod init for a user-namespaced pod".into())
            })?;
            let source = PathBuf::from(format!("/proc/{init}/ns/net"));
            let dir = self.inner.state.join("netns");
            let ns = NetNs::pin(&dir, &rec.id, &source)?;
            self.wire_network(rec, ns.path().to_path_buf()).await?;
        }
        rec.ready = true;
        self.save_pod(rec).await
    }

    /// Records the pod's network namespace (so that cleanup finds it even
    /// if CNI fails) and runs CNI ADD in it.
    async fn wire_network(&self, rec: &mut SandboxRecord, netns: PathBuf) -> Result<()> {
        rec.netns = Some(netns);
        let net = rec.network().expect("netns was just set");
        let result = self.inner.cni.setup(&net).await?;
        rec.ips = result.ips;
        rec.cni_result = Some(result.result);
        Ok(())
    }

    /// Stops whatever the pod still runs and releases its network and
    /// mounts. Idempotent; the record stays.
    async fn release_pod(&self, rec: &mut SandboxRecord) -> Result<()> {
        // From here on, what happens to the pod's containers is told here.
        self.unwatch_pod(&rec.id);
        // Every container's state file, read only when someone listens.
        let before = if self.has_subscribers() {
            self.statuses_of(&rec.id)
        } else {
            Vec::new()
        };
        let released = self.release_pod_now(rec).await;
        self.emit_exits(&rec.id, &before);
        released
    }

    async fn release_pod_now(&self, rec: &mut SandboxRecord) -> Result<()> {
        // The monitor kills the containers while CNI tears the network
        // down: the two are independent, and DEL needs the netns, which
        // outlives both (it is pinned on a file).
        let network = rec.network();
        let shutdown = async {
            let Some(monitor) = rec.monitor.filter(|m| m.alive()) else {
                return;
            };
            let client = rec.monitor(self);
            if client.ping().await {
                // Bounded by the request's deadline (Request::deadline).
                if let Err(e) = client.done_call(&Request::Shutdown).await {
                    tracing::warn!(pod = %rec.id, error = %e, "monitor shutdown");
                }
            } else {
                // Wedged (a stuck OCI runtime, a stopped process): it is
                // killed, and its containers through their cgroups below.
                tracing::warn!(pod = %rec.id, pid = monitor.pid, "the monitor does not answer; killing it");
            }
            // It exits right after answering.
            if !monitor.exited(Duration::from_secs(2)).await {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(monitor.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        };
        let teardown = async {
            match &network {
                Some(net) => Some(self.inner.cni.teardown(net, rec.cni_result.as_ref()).await),
                None => None,
            }
        };
        let ((), torn_down) = tokio::join!(shutdown, teardown);
        // Containers whose monitor is gone are killed through their cgroups,
        // and a pod init that outlived it (it dies with its tracing monitor,
        // unless tracing failed) by pid, once it is sure to be this pod's:
        // named so and in the pod's network namespace.
        crate::container::kill_orphans(self, &rec.id).await;
        if let (Some(init), Some(net)) = (rec.pod_init, &network) {
            let comm = std::fs::read_to_string(format!("/proc/{init}/comm")).unwrap_or_default();
            let ino = |p: &Path| std::fs::metadata(p).ok().map(|m| m.ino());
            let pinned = ino(&net.netns);
            if comm.trim() == "berth-pause"
                && pinned.is_some()
                && ino(Path::new(&format!("/proc/{init}/ns/net"))) == pinned
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(init),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let (Some(net), Some(torn_down)) = (network, torn_down) {
            if let Err(e) = torn_down {
                // Without a CNI config there is nothing to tear down with;
                // a later stop retries while the namespace is kept.
                if NetNs::at(&net.netns).exists() {
                    return Err(e.into());
                }
            }
            NetNs::at(&net.netns).remove()?;
            rec.netns = None;
        }
        rec.files(self).release()?;
        Ok(())
    }

    /// StopPodSandbox: kills the pod's containers, tears its network down.
    /// Unknown and already stopped pods are fine.
    pub async fn stop_pod(&self, id: &str) -> Result<()> {
        let Some(rec) = self.find_pod(id)? else {
            return Ok(());
        };
        let _g = self.lock(&rec.id).await;
        let Some(mut rec) = self.find_pod(&rec.id)? else {
            return Ok(());
        };
        let was_ready = rec.ready;
        let released = self.release_pod(&mut rec).await;
        rec.ready = false;
        self.save_pod(&rec).await?;
        if was_ready {
            self.emit(&rec.id, &rec.id, EventKind::Stopped);
        }
        released
    }

    /// RemovePodSandbox: stops the pod if needed and removes it with all
    /// its containers. Unknown pods are fine.
    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        let Some(rec) = self.find_pod(id)? else {
            return Ok(());
        };
        let guard = self.lock(&rec.id).await;
        let Some(mut rec) = self.find_pod(&rec.id)? else {
            return Ok(());
        };
        let was_ready = rec.ready;
        self.release_pod(&mut rec).await?;
        rec.ready = false;
        self.save_pod(&rec).await?;
        if was_ready {
            self.emit(&rec.id, &rec.id, EventKind::Stopped);
        }
        let containers: Vec<String> = self
            .read_index()
            .containers
            .values()
            .filter(|c| c.sandbox_id == rec.id)
            .map(|c| c.id.clone())
            .collect();
        for c in containers {
            self.remove_container(&c).await?;
        }
        let dir = rec.pod_dir(self);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", &dir)(e));
            }
            _ => {}
        }
        // Told while the pod is still there to be described, as containerd does.
        self.emit(&rec.id, &rec.id, EventKind::Deleted);
        self.inner.pod_records.delete(&rec.id)?;
        self.index().pods.remove(&rec.id);
        self.unreserve(&rec.name_key(), &rec.id);
        drop(guard);
        self.forget_lock(&rec.id);
        Ok(())
    }

    /// PodSandboxStatus: the pod, and with `verbose` the runtime's details
    /// (the edge adds the pod's config in the CRI's form).
    pub fn pod_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(PodView, Option<serde_json::Map<String, serde_json::Value>>)> {
        let rec = self.get_pod(id)?;
        let info = verbose.then(|| {
            let mut info = serde_json::Map::new();
            info.insert(
                "pid".into(),
                rec.pod_init.or(rec.monitor.map(|m| m.pid)).into(),
            );
            info.insert("monitorPid".into(), rec.monitor.map(|m| m.pid).into());
            info.insert("netNamespacePath".into(), serde_json::json!(rec.netns));
            info.insert("runtimeHandler".into(), rec.runtime_handler.clone().into());
            info.insert("cniResult".into(), serde_json::json!(rec.cni_result));
            info
        });
        Ok((PodView::of(rec), info))
    }

    /// ListPodSandbox.
    pub fn list_pods(&self, filter: &PodFilter) -> Vec<PodView> {
        let idx = self.read_index();
        idx.pods
            .values()
            .map(|p| PodView::of(p.clone()))
            .filter(|p| {
                (filter.id.is_empty() || p.record.id.starts_with(&filter.id))
                    && filter.ready.is_none_or(|r| r == p.ready)
                    && filter
                        .labels
                        .iter()
                        .all(|(k, v)| p.record.config.labels.get(k) == Some(v))
            })
            .collect()
    }
}

/// A pod as PodSandboxStatus and ListPodSandbox report it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub record: SandboxRecord,
    /// Ready: so recorded, and its monitor runs.
    pub ready: bool,
}

impl PodView {
    pub(crate) fn of(record: SandboxRecord) -> PodView {
        let ready = record.ready && record.monitor_alive();
        PodView { record, ready }
    }
}

/// Which pods ListPodSandbox returns: every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct PodFilter {
    /// An id prefix; empty: any.
    pub id: String,
    pub ready: Option<bool>,
    /// Labels the pod must have, with these values.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A monitor that reported ready.
struct Started {
    pid: i32,
    /// The pod init it forked, if the pod has its own PID namespace.
    pod_init: Option<i32>,
}

/// Starts `berth monitor <dir>` and waits for its `ready [<pod init>]` line.
async fn spawn_monitor(dir: &std::path::Path) -> Result<Started> {
    let log_path = dir.join("monitor.log");
    let log = std::fs::File::create(&log_path).map_err(io("creating", &log_path))?;
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg0("berth-monitor")
        .arg("monitor")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(io("starting the monitor for", dir))?;
    let pid = child.id().unwrap_or(0) as i32;
    let stdout = child.stdout.take();
    // The daemon is the monitor's parent until it restarts: reap it.
    let ready = async {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line).await;
        }
        line
    };
    let line = tokio::time::timeout(MONITOR_START, ready).await;
    let outcome = match line.as_deref().map(str::trim) {
        Ok("ready") => Ok(Started {
            pid,
            pod_init: None,
        }),
        Ok(l) if l.starts_with("ready ") => match l["ready ".len()..].parse() {
            Ok(init) => Ok(Started {
                pid,
                pod_init: Some(init),
            }),
            Err(_) => Err(Error::Internal(format!(
                "the pod's monitor reported {l:?}; see {}",
                log_path.display()
            ))),
        },
        Ok(l) if l.starts_with("error: ") => Err(Error::FailedPrecondition(format!(
            "setting up the pod: {}",
            &l["error: ".len()..]
        ))),
        Ok(l) => Err(Error::Internal(format!(
            "the pod's monitor exited during setup ({l:?}); see {}",
            log_path.display()
        ))),
        Err(_) => {
            let _ = child.start_kill();
            Err(Error::DeadlineExceeded(format!(
                "the pod's monitor was not ready within {MONITOR_START:?}"
            )))
        }
    };
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    outcome
}

/// At start: pods whose monitor died while the daemon was away are no
/// longer ready.
pub(crate) async fn reconcile(rt: &Runtime) {
    remove_unrecorded_pods(rt).await;
    let pods: Vec<SandboxRecord> = rt.read_index().pods.values().cloned().collect();
    for mut p in pods {
        if let Some(m) = p.monitor.filter(|_| p.ready && p.monitor_alive()) {
            rt.watch_pod(&p.id, m);
        }
        if p.ready && !p.monitor_alive() {
            tracing::warn!(pod = %p.id, "the pod's monitor is gone; the pod is not ready");
            p.ready = false;
            if let Err(e) = rt.save_pod(&p).await {
                tracing::warn!(pod = %p.id, error = %e, "saving the pod record");
            }
        }
    }
}

/// A daemon killed in the middle of RunPodSandbox leaves a pod directory, a
/// network namespace and possibly a monitor, but no record (the record is
/// written last). At start they are released: the monitor is shut down, the
/// network torn down by the pod's id (CNI plugins key their state on it),
/// the namespace and the shm tmpfs unmounted, the directory removed.
async fn remove_unrecorded_pods(rt: &Runtime) {
    let mut known: std::collections::HashSet<String> =
        rt.read_index().pods.keys().cloned().collect();
    // A pod whose record is quarantined is not a leftover: it is left alone.
    known.extend(rt.quarantined_ids("pod"));
    let dirs = [rt.inner.state.join("pods"), rt.inner.state.join("netns")];
    let mut ids = std::collections::BTreeSet::new();
    for d in &dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&id) {
                ids.insert(id);
            }
        }
    }
    for id in ids {
        tracing::warn!(pod = %id, "removing what an interrupted RunPodSandbox left");
        let dir = rt.pod_dir(&id);
        let client = Client::new(&dir);
        if client.ping().await {
            let _ = client.done_call(&Request::Shutdown).await;
        }
        let netns = rt.inner.state.join("netns").join(&id);
        if netns.exists() {
            let net = PodNetwork {
                id: id.clone(),
                netns: netns.clone(),
                name: String::new(),
                namespace: String::new(),
                uid: String::new(),
                port_mappings: Vec::new(),
            };
            if let Err(e) = rt.inner.cni.teardown(&net, None).await {
                tracing::warn!(pod = %id, error = %e, "CNI teardown of a leftover pod");
            }
            if let Err(e) = NetNs::at(&netns).remove() {
                tracing::warn!(pod = %id, error = %e, "removing a leftover network namespace");
            }
        }
        if let Err(e) = PodFiles::at(&dir, true).release() {
            tracing::warn!(pod = %id, error = %e, "unmounting a leftover shm");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
