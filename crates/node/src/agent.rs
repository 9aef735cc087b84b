//! `berth node`: runs the Pod manifests of a directory on one runtime, as
//! a kubelet runs static pods. One worker per pod syncs it when the
//! runtime's state of it changes (a relist every second), when a probe's
//! verdict changes, when a back-off ends, and at every resync; removing a
//! manifest kills its pod (preStop hooks, grace periods) and removes it.
//! Pods of the runtime that carry the kubelet's labels and match no
//! manifest are killed and removed, so a restart adopts the pods it
//! started (same manifest, same uid) and ends the others.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use berth_cri::runtime::v1 as cri;
use berth_cri_client::{Client, Options as ClientOptions};
use berth_criconfig::{NodeSettings, ObjectSource, PodVolumes};
use berth_manifest::{ConfigMap, ManifestError, Objects, Secret};
use berth_probe::{Kind, ProbeResult, Worker};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{watch, Notify};

use crate::actions::{Probes, Verdict};
use crate::apistatus::{self, StatusInputs};
use crate::backoff::BackoffPolicy;
use crate::events::{EventType, PodRef, Recorder};
use crate::gc::GcPolicy;
use crate::images::{Images, PullSettings};
use crate::manager::Manager;
use crate::status::{self, PodRuntimeStatus, PodSnapshot};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Client(#[from] berth_cri_client::ClientError),
    #[error("cannot serve the status endpoint on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the manifest directory {0} is not a directory")]
    NoManifests(PathBuf),
}

/// How long after a failed sync the pod is synced again (the kubelet's
/// pod worker back-off period).
const SYNC_ERROR_RETRY: Duration = Duration::from_secs(10);

/// Everything `berth node` is told.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub manifests: PathBuf,
    pub runtime_endpoint: String,
    pub image_endpoint: Option<String>,
    pub node: NodeSettings,
    pub pulls: PullSettings,
    /// Where `/pods`, `/events`, `/status` and `/healthz` are served.
    pub http: Option<SocketAddr>,
    /// How often the runtime is relisted (the kubelet: 1 s).
    pub relist: Duration,
    /// How often the manifest directory is read besides its inotify
    /// events (the kubelet: 20 s).
    pub manifest_poll: Duration,
    /// How often every pod is synced even when nothing changed.
    pub resync: Duration,
    pub crash_backoff: BackoffPolicy,
    pub gc: GcPolicy,
    pub logs: crate::logs::RotationPolicy,
}

impl NodeOptions {
    /// The kubelet's defaults for a node of this name.
    pub fn new(manifests: PathBuf, runtime_endpoint: String, node: NodeSettings) -> NodeOptions {
        NodeOptions {
            manifests,
            runtime_endpoint,
            image_endpoint: None,
            node,
            pulls: PullSettings::default(),
            http: None,
            relist: Duration::from_secs(1),
            manifest_poll: Duration::from_secs(20),
            resync: Duration::from_secs(60),
            crash_backoff: BackoffPolicy::CRASH_LOOP,
            gc: GcPolicy::default(),
            logs: crate::logs::RotationPolicy::default(),
        }
    }
}

/// The ConfigMaps and Secrets of the manifest directory.
#[derive(Default)]
struct ObjectsView {
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
}

impl ObjectSource for ObjectsView {
    fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.config_maps
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
    fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.secrets
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
}

/// A pod as the node reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PodReport {
    /// The manifest file it came from.
    pub source: PathBuf,
    /// The pod with its status.
    pub pod: Pod,
    /// Its manifest is gone and it is being killed (`/pods` leaves it
    /// out, as the kubelet's does).
    #[serde(default)]
    pub terminating: bool,
}

struct PodEntry {
    pod: watch::Sender<Arc<Pod>>,
    wake: Arc<Notify>,
    terminate: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

pub(crate) struct Shared {
    pub(crate) manager: Manager,
    options: NodeOptions,
    pods: Mutex<BTreeMap<String, PodEntry>>,
    objects: RwLock<Arc<ObjectsView>>,
    errors: Mutex<Vec<ManifestError>>,
    reports: Mutex<BTreeMap<String, PodReport>>,
    /// Whether the manifests were read once (orphans are ended only then).
    loaded: watch::Sender<bool>,
}

/// A running node agent.
pub struct Node {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The address the status endpoint listens on.
    pub http_address: Option<SocketAddr>,
}

impl Node {
    /// Connects to the runtime and starts the node's loops.
    pub async fn start(options: NodeOptions) -> Result<Node, NodeError> {
        if !options.manifests.is_dir() {
            return Err(NodeError::NoManifests(options.manifests.clone()));
        }
        let client = Client::connect(
            &options.runtime_endpoint,
            options.image_endpoint.as_deref(),
            &ClientOptions {
                start_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
        tracing::info!(
            runtime = %client.version.runtime_name,
            version = %client.version.runtime_version,
            "connected"
        );
        let events = Arc::new(Recorder::new(1000));
        let images = Images::new(client.clone(), options.pulls.clone());
        let manager = Manager::with_backoff(
            client,
            options.node.clone(),
            images,
            events,
            options.crash_backoff,
        );
        let (loaded, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            manager,
            options: options.clone(),
            pods: Mutex::new(BTreeMap::new()),
            objects: RwLock::new(Arc::new(ObjectsView::default())),
            errors: Mutex::new(Vec::new()),
            reports: Mutex::new(BTreeMap::new()),
            loaded,
        });
        let mut tasks = Vec::new();
        let mut http_address = None;
        if let Some(address) = options.http {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| NodeError::Listen { address, source })?;
            http_address = listener.local_addr().ok();
            tasks.push(tokio::spawn(crate::http::serve(listener, shared.clone())));
        }
        tasks.push(tokio::spawn(watch_manifests(shared.clone())));
        tasks.push(tokio::spawn(relist_loop(shared.clone())));
        tasks.push(tokio::spawn(crate::gc::run(
            shared.clone(),
            options.gc.clone(),
        )));
        tasks.push(tokio::spawn(crate::logs::run(
            shared.manager.client.clone(),
            options.logs.clone(),
        )));
        Ok(Node {
            shared,
            tasks,
            http_address,
        })
    }

    /// The pods with their statuses.
    pub fn pods(&self) -> Vec<PodReport> {
        self.shared.reports()
    }

    /// The manifest errors of the last read.
    pub fn errors(&self) -> Vec<ManifestError> {
        self.shared.errors()
    }

    /// The events kept.
    pub fn events(&self) -> Vec<crate::events::Event> {
        self.shared.manager.events.list()
    }

    /// Stops the node's loops and pod workers, leaving the pods running
    /// (a restarted node adopts them).
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        {
            let pods = self.shared.pods.lock().unwrap_or_else(|p| p.into_inner());
            for e in pods.values() {
                e.task.abort();
            }
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl Shared {
    pub(crate) fn reports(&self) -> Vec<PodReport> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn errors(&self) -> Vec<ManifestError> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn desired_uids(&self) -> Vec<String> {
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub(crate) fn loaded(&self) -> bool {
        *self.loaded.borrow()
    }
}

/// A cheap fingerprint of the directory: names, sizes and mtimes.
fn fingerprint(dir: &std::path::Path) -> Vec<(String, u64, SystemTime)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Watches the directory with inotify; None when it cannot (then the
/// directory is polled every second).
fn watch_dir(
    dir: &std::path::Path,
) -> Option<(
    notify::RecommendedWatcher,
    tokio::sync::mpsc::UnboundedReceiver<()>,
)> {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the manifest directory, polling it: {e}");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!("cannot watch {}, polling it: {e}", dir.display());
        return None;
    }
    Some((watcher, rx))
}

async fn watch_manifests(shared: Arc<Shared>) {
    let dir = shared.options.manifests.clone();
    let node_name = shared.options.node.node_name.clone();
    let mut last: Option<Vec<(String, u64, SystemTime)>> = None;
    // Changes are seen at once through inotify; the poll (the kubelet's
    // 20 s) catches what it misses, such as a directory replaced.
    let mut watch = watch_dir(&dir);
    loop {
        let d = dir.clone();
        let n = node_name.clone();
        let read = tokio::task::spawn_blocking(move || {
            let fp = fingerprint(&d);
            (fp, d, n)
        })
        .await;
        if let Ok((fp, d, n)) = read {
            if last.as_ref() != Some(&fp) {
                let loaded = tokio::task::spawn_blocking(move || {
                    berth_manifest::load_dir(&d, &berth_manifest::Options { node_name: n })
                })
                .await;
                if let Ok(objects) = loaded {
                    apply(&shared, objects);
                    last = Some(fp);
                    shared.loaded.send_replace(true);
                }
            }
        }
        match watch.as_mut() {
            Some((_, changes)) => {
                tokio::select! {
                    _ = changes.recv() => {
                        // An editor writes a file in several steps: read
                        // once they are done.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        while changes.try_recv().is_ok() {}
                    }
                    _ = tokio::time::sleep(shared.options.manifest_poll) => {}
                }
            }
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Makes the pods match a fresh read of the manifests.
fn apply(shared: &Arc<Shared>, objects: Objects) {
    for e in &objects.errors {
        tracing::warn!("invalid manifest: {e}");
    }
    *shared.errors.lock().unwrap_or_else(|p| p.into_inner()) = objects.errors.clone();
    *shared.objects.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ObjectsView {
        config_maps: objects.config_maps,
        secrets: objects.secrets,
    });
    let mut wanted: BTreeMap<String, (Pod, PathBuf)> = BTreeMap::new();
    for m in objects.pods {
        let uid = m.pod.metadata.uid.clone().unwrap_or_default();
        wanted.insert(uid, (m.pod, m.source.file));
    }
    let mut pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
    // Gone: terminate (the worker removes its entry when done).
    for (uid, entry) in pods.iter() {
        if !wanted.contains_key(uid) && !*entry.terminate.borrow() {
            tracing::info!(%uid, "manifest removed: killing the pod");
            entry.terminate.send_replace(true);
            entry.wake.notify_one();
        }
    }
    for (uid, (pod, source)) in wanted {
        if let Some(entry) = pods.get(&uid) {
            if *entry.terminate.borrow() {
                continue;
            }
            let changed = entry.pod.borrow().spec != pod.spec;
            if changed {
                entry.pod.send_replace(Arc::new(pod));
                entry.wake.notify_one();
            }
            continue;
        }
        // A pod of the same name still terminating must end first.
        let predecessors: Vec<watch::Receiver<bool>> = pods
            .values()
            .filter(|e| {
                let p = e.pod.borrow();
                p.metadata.name == pod.metadata.name
                    && p.metadata.namespace == pod.metadata.namespace
            })
            .map(|e| e.done.clone())
            .collect();
        let (pod_tx, pod_rx) = watch::channel(Arc::new(pod));
        let (terminate, terminate_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        // The worker removes its entry when it ends, which needs this lock:
        // the entry is in place before it can.
        let task = tokio::spawn(pod_worker(
            shared.clone(),
            uid.clone(),
            source.clone(),
            pod_rx,
            wake.clone(),
            terminate_rx,
            done_tx,
            predecessors,
        ));
        pods.insert(
            uid,
            PodEntry {
                pod: pod_tx,
                wake,
                terminate,
                done,
                task: task.abort_handle(),
            },
        );
    }
}

/// Follows GetContainerEvents while the runtime offers it, waking the pod
/// of each event at once; `healthy` says whether the stream is up (then
/// the relist can be rarer, as the kubelet's evented PLEG makes it).
async fn follow_events(shared: Arc<Shared>, healthy: watch::Sender<bool>) {
    let client = &shared.manager.client;
    loop {
        let req = cri::GetEventsRequest {};
        let stream = client.runtime.clone().get_container_events(req).await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "the runtime has no container events: relisting every {:?}",
                    shared.options.relist
                );
                return;
            }
            Err(s) => {
                tracing::debug!("container events: {}", s.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        healthy.send_replace(true);
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    let uid = ev
                        .pod_sandbox_status
                        .as_ref()
                        .and_then(|s| s.metadata.as_ref())
                        .map(|m| m.uid.clone())
                        .unwrap_or_default();
                    let pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = pods.get(&uid) {
                        e.wake.notify_one();
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    tracing::debug!("container events ended: {}", s.message());
                    break;
                }
            }
        }
        // Events may have been lost: relist now and often until the
        // stream is back.
        healthy.send_replace(false);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn relist_loop(shared: Arc<Shared>) {
    let mut last: BTreeMap<String, PodSnapshot> = BTreeMap::new();
    let mut ending: std::collections::BTreeSet<String> = Default::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (healthy_tx, mut healthy) = watch::channel(false);
    let events = tokio::spawn(follow_events(shared.clone(), healthy_tx));
    let _stop_events = AbortOnDrop(events.abort_handle());
    loop {
        while let Ok(uid) = done_rx.try_recv() {
            ending.remove(&uid);
        }
        match status::relist(&shared.manager.client).await {
            Ok(now) => {
                {
                    let pods = shared.pods.lock().unwrap_or_else(|p| p.into_inner());
                    for (uid, snap) in &now {
                        if last.get(uid) != Some(snap) {
                            if let Some(e) = pods.get(uid) {
                                e.wake.notify_one();
                            }
                        }
                    }
                    for uid in last.keys() {
                        if !now.contains_key(uid) {
                            if let Some(e) = pods.get(uid) {
                                e.wake.notify_one();
                            }
                        }
                    }
                    if shared.loaded() {
                        for (uid, snap) in &now {
                            // Only pods of manifest files: an API server's
                            // pods of a kubelet on the same runtime stay.
                            if pods.contains_key(uid) || ending.contains(uid) || !snap.from_file {
                                continue;
                            }
                            ending.insert(uid.clone());
                            tracing::info!(%uid, pod = %format!("{}/{}", snap.namespace, snap.name), "no manifest for this pod: killing it");
                            let shared = shared.clone();
                            let uid = uid.clone();
                            let done = done_tx.clone();
                            tokio::spawn(async move {
                                end_orphan(&shared, &uid).await;
                                let _ = done.send(uid);
                            });
                        }
                    }
                }
                last = now;
            }
            Err(e) => tracing::warn!("relist: {e}"),
        }
        // With events flowing, a relist every ten periods catches what
        // they cannot say (a pod removed behind the node's back); a stream
        // that breaks brings the next relist at once.
        let period = if *healthy.borrow() {
            shared.options.relist * 10
        } else {
            shared.options.relist
        };
        let was_healthy = *healthy.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = healthy.wait_for(|h| *h != was_healthy) => {}
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn end_orphan(shared: &Shared, uid: &str) {
    let status = match status::pod_status(&shared.manager.client, uid).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%uid, "orphaned pod: {e}");
            return;
        }
    };
    if let Err(e) = shared.manager.kill_pod(None, &status, None).await {
        tracing::warn!(%uid, "killing an orphaned pod: {e}");
        return;
    }
    if let Err(e) = shared.manager.remove_pod(&status).await {
        tracing::warn!(%uid, "removing an orphaned pod: {e}");
        return;
    }
    // Its QoS class is not known any more: the cgroup may be under any.
    for pod in crate::podcgroup::stand_ins(uid) {
        shared.manager.remove_pod_cgroup(&pod).await;
    }
    let node = shared.options.node.clone();
    let u = uid.to_string();
    let _ = tokio::task::spawn_blocking(move || berth_criconfig::remove_volumes(&u, &node)).await;
}

/// The probe workers of one pod, by container id and kind.
#[derive(Default)]
struct PodProbes {
    workers: HashMap<(String, u8), Worker>,
}

impl PodProbes {
    fn verdict(&self, id: &str, kind: Kind) -> Option<ProbeResult> {
        self.workers
            .get(&(id.to_string(), kind as u8))
            .map(|w| w.results().borrow().0)
    }
}

impl Probes for PodProbes {
    fn liveness(&self, id: &str) -> Option<Verdict> {
        match self.verdict(id, Kind::Liveness)? {
            ProbeResult::Failure => Some(Verdict::Failure),
            ProbeResult::Success => Some(Verdict::Success),
            ProbeResult::Unknown => None,
        }
    }
    fn startup(&self, id: &str) -> Option<Verdict> {
        match self.verdict(id, Kind::Startup)? {
            ProbeResult::Failure => Some(Verdict::Failure),
            ProbeResult::Success => Some(Verdict::Success),
            ProbeResult::Unknown => None,
        }
    }
}

/// Starts probe workers for the running containers that have probes and
/// stops those of containers no longer running.
fn update_probes(
    shared: &Shared,
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &mut PodProbes,
    wake: &Arc<Notify>,
) {
    let running: Vec<&status::ContainerStatus> = status.running().collect();
    probes
        .workers
        .retain(|(id, _), _| running.iter().any(|c| &c.id == id));
    let pod_ips: Vec<std::net::IpAddr> =
        status.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    for c in running {
        let Some(spec) = crate::manager::find_container(pod, &c.name) else {
            continue;
        };
        let startup_rx = |probes: &PodProbes| {
            probes
                .workers
                .get(&(c.id.clone(), Kind::Startup as u8))
                .map(Worker::result_watch)
        };
        let kinds = [
            (Kind::Startup, spec.startup_probe.as_ref()),
            (Kind::Liveness, spec.liveness_probe.as_ref()),
            (Kind::Readiness, spec.readiness_probe.as_ref()),
        ];
        for (kind, probe) in kinds {
            let Some(probe) = probe else { continue };
            let key = (c.id.clone(), kind as u8);
            if probes.workers.contains_key(&key) {
                continue;
            }
            let gate = if kind == Kind::Startup {
                None
            } else {
                startup_rx(probes)
            };
            let target = shared.manager.target(pod, spec, &c.id, &pod_ips);
            // The kubelet's worker of a container outlives its restarts
            // and probes on its own ticker, so a new container meets its
            // first probe after a part of the period, never at once: a
            // worker that starts now waits a random part of the period.
            let worker = Worker::spawn_with(
                shared.manager.client.clone(),
                kind,
                probe.clone(),
                target,
                c.started_at.unwrap_or_else(SystemTime::now),
                gate,
                berth_probe::Options {
                    manager_start: tokio::time::Instant::now(),
                },
            );
            // Every change of verdict is a reason to sync; every failed
            // attempt is an event, worded as the kubelet's.
            let mut results = worker.results();
            let mut attempts = worker.events();
            let wake = wake.clone();
            let pref = PodRef::of(pod);
            let events = shared.manager.events.clone();
            let cname = c.name.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        // Events first: the attempt that failed is told
                        // before the verdict it led to.
                        biased;
                        event = attempts.recv() => match event {
                            Ok(e) => events.record(&pref, Some(&cname), EventType::Warning, e.reason, e.message),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        },
                        changed = results.changed() => {
                            if changed.is_err() {
                                // The worker is gone: what it said last
                                // still counts.
                                while let Ok(e) = attempts.try_recv() {
                                    events.record(&pref, Some(&cname), EventType::Warning, e.reason, e.message);
                                }
                                break;
                            }
                            wake.notify_one();
                        }
                    }
                }
            });
            probes.workers.insert(key, worker);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pod_worker(
    shared: Arc<Shared>,
    uid: String,
    source: PathBuf,
    pod_rx: watch::Receiver<Arc<Pod>>,
    wake: Arc<Notify>,
    mut terminate: watch::Receiver<bool>,
    done: watch::Sender<bool>,
    predecessors: Vec<watch::Receiver<bool>>,
) {
    let manager = &shared.manager;
    // Listed at once, as the kubelet lists a pod it admits: Pending, with
    // nothing in the runtime yet.
    {
        let pod = pod_rx.borrow().clone();
        let empty = PodRuntimeStatus {
            uid: uid.clone(),
            ..Default::default()
        };
        report(
            &shared,
            &uid,
            &source,
            &pod,
            &empty,
            &PodProbes::default(),
            false,
        );
    }
    for mut p in predecessors {
        let _ = p.wait_for(|d| *d).await;
    }
    let mut probes = PodProbes::default();
    let mut volumes: Option<PodVolumes> = None;
    let mut next_sync = tokio::time::Instant::now();
    loop {
        if *terminate.borrow() {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(next_sync) => {}
            _ = terminate.changed() => {}
        }
        if *terminate.borrow() {
            break;
        }
        let pod = pod_rx.borrow().clone();
        let objects = shared
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if volumes.is_none() {
            let (p, node, o) = (pod.clone(), shared.options.node.clone(), objects.clone());
            match tokio::task::spawn_blocking(move || {
                berth_criconfig::prepare_volumes(&p, &node, o.as_ref())
            })
            .await
            {
                Ok(Ok(v)) => volumes = Some(v),
                Ok(Err(e)) => {
                    manager.events.record(
                        &PodRef::of(&pod),
                        None,
                        EventType::Warning,
                        "FailedMount",
                        format!("Unable to prepare volumes: {e}"),
                    );
                    next_sync = tokio::time::Instant::now() + Duration::from_secs(2);
                    continue;
                }
                Err(e) => {
                    tracing::error!(%uid, "volume preparation panicked: {e}");
                    next_sync = tokio::time::Instant::now() + Duration::from_secs(2);
                    continue;
                }
            }
        }
        let Some(vols) = volumes.as_ref() else {
            continue;
        };
        let status = match status::pod_status(&manager.client, &uid).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%uid, "pod status: {e}");
                next_sync = tokio::time::Instant::now() + Duration::from_secs(1);
                continue;
            }
        };
        update_probes(&shared, &pod, &status, &mut probes, &wake);
        let outcome = manager
            .sync_pod(&pod, &status, &probes, vols, objects.as_ref())
            .await;
        for e in &outcome.errors {
            tracing::debug!(%uid, "sync: {e}");
        }
        // Read again only when the sync changed something.
        let after = if outcome.acted {
            status::pod_status(&manager.client, &uid)
                .await
                .unwrap_or(status)
        } else {
            status
        };
        update_probes(&shared, &pod, &after, &mut probes, &wake);
        report(&shared, &uid, &source, &pod, &after, &probes, false);
        // Dead containers beyond the newest of each name go at once, as
        // the kubelet's pod container deletor removes them.
        for id in after.surplus_dead(shared.options.gc.max_per_pod_container.max(1)) {
            if let Err(e) = manager.remove_container(&id).await {
                tracing::debug!(container = %id, "removing a dead container: {e}");
            }
        }
        let mut next = tokio::time::Instant::now() + shared.options.resync;
        if let Some(at) = outcome.retry_at {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            next = next.min(tokio::time::Instant::now() + left);
        } else if !outcome.errors.is_empty() {
            // As the kubelet's pod worker: a failed sync is retried after
            // its back-off period.
            next = next.min(tokio::time::Instant::now() + SYNC_ERROR_RETRY);
        }
        next_sync = next;
    }
    // Terminating: kill, remove, clean up.
    drop(probes);
    if let Some(r) = shared
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&uid)
    {
        r.terminating = true;
    }
    let pod = pod_rx.borrow().clone();
    loop {
        let status = match status::pod_status(&manager.client, &uid).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%uid, "pod status while terminating: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = manager.kill_pod(Some(&pod), &status, None).await {
            tracing::warn!(%uid, "killing the pod: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let stopped = status::pod_status(&manager.client, &uid)
            .await
            .unwrap_or(status);
        report(
            &shared,
            &uid,
            &source,
            &pod,
            &stopped,
            &PodProbes::default(),
            true,
        );
        if let Err(e) = manager.remove_pod(&stopped).await {
            tracing::warn!(%uid, "removing the pod: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        break;
    }
    manager.remove_pod_cgroup(&pod).await;
    let node = shared.options.node.clone();
    let u = uid.clone();
    match tokio::task::spawn_blocking(move || berth_criconfig::remove_volumes(&u, &node)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%uid, "removing the pod's volumes: {e}"),
        Err(e) => tracing::warn!(%uid, "removing the pod's volumes: {e}"),
    }
    manager.forget(&uid);
    shared
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&uid);
    shared
        .pods
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&uid);
    done.send_replace(true);
}

fn report(
    shared: &Shared,
    uid: &str,
    source: &std::path::Path,
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &PodProbes,
    terminal: bool,
) {
    let manager = &shared.manager;
    let waiting = |name: &str| manager.waiting(uid, name);
    let ready = |id: &str| {
        probes
            .verdict(id, Kind::Readiness)
            .map(|v| v == ProbeResult::Success)
    };
    let started = |id: &str| {
        probes
            .verdict(id, Kind::Startup)
            .map(|v| v == ProbeResult::Success)
    };
    let inputs = StatusInputs {
        runtime: &manager.client.version.runtime_name,
        host_ip: shared
            .options
            .node
            .node_ips
            .first()
            .map(|ip| ip.to_string()),
        waiting: &waiting,
        ready: &ready,
        started: &started,
        terminal,
    };
    let api: PodStatus = apistatus::pod_status(pod, status, &inputs);
    let mut p = pod.clone();
    p.status = Some(api);
    shared
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            uid.to_string(),
            PodReport {
                source: source.to_path_buf(),
                pod: p,
                terminating: terminal,
            },
        );
}
