//! The runtime manager: SyncPod, KillPod and the container steps between
//! them, as the kubelet's kubeGenericRuntimeManager performs them over
//! CRI.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_cri::runtime::v1 as cri;
use berth_cri_client::Client;
use berth_criconfig::{ContainerKind, NodeSettings, ObjectSource, PodVolumes};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::actions::{self, KillReason, PodActions, Probes};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::calls;
use crate::events::{EventType, PodRef, Recorder};
use crate::images::Images;
use crate::status::{ContainerState, ContainerStatus, PodRuntimeStatus};

/// The shortest grace period a container gets (the kubelet's).
pub const MIN_GRACE_SECONDS: i64 = 2;

/// Why a container is not running, for its waiting state
/// (CrashLoopBackOff, ErrImagePull, CreateContainerError, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// What one sync did not get done.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Errors of the steps, in order ("StartContainer main: ...").
    pub errors: Vec<String>,
    /// When a back-off ends and the pod should be synced again.
    pub retry_at: Option<SystemTime>,
    /// Whether the sync had anything to do (the runtime's state of the
    /// pod may have changed).
    pub acted: bool,
}

/// The runtime manager of a node.
pub struct Manager {
    pub client: Client,
    pub node: NodeSettings,
    pub images: Images,
    pub events: Arc<Recorder>,
    crash_backoff: Mutex<Backoff>,
    /// The last reason each (pod uid, container) is not running.
    waiting: Mutex<HashMap<(String, String), Waiting>>,
    /// User namespace ranges of `hostUsers: false` pods.
    userns: Mutex<berth_criconfig::UsernsAllocator>,
}

fn spec_containers(pod: &Pod) -> (&[Container], &[Container]) {
    match pod.spec.as_ref() {
        Some(s) => (
            s.init_containers.as_deref().unwrap_or(&[]),
            s.containers.as_slice(),
        ),
        None => (&[], &[]),
    }
}

/// The container of that name in the spec (init or regular).
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let (inits, regular) = spec_containers(pod);
    inits.iter().chain(regular).find(|c| c.name == name)
}

/// The pod's grace period (deletionGracePeriodSeconds, else
/// terminationGracePeriodSeconds, else 30 s); a probe's own grace period
/// for a probe failure.
pub fn grace_period(pod: &Pod, c: Option<&Container>, reason: Option<KillReason>) -> i64 {
    let mut grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    let probe = match reason {
        Some(KillReason::LivenessProbe) => c.and_then(|c| c.liveness_probe.as_ref()),
        Some(KillReason::StartupProbe) => c.and_then(|c| c.startup_probe.as_ref()),
        _ => None,
    };
    if let Some(g) = probe.and_then(|p| p.termination_grace_period_seconds) {
        grace = g;
    }
    grace
}

/// The back-off key of a container: stable pod identity and the fields
/// whose change resets it.
pub fn backoff_key(pod: &Pod, c: &Container) -> String {
    format!(
        "{}_{}_{}_{}_{:x}",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or(""),
        c.name,
        berth_criconfig::container_hash(c)
    )
}

impl Manager {
    /// A manager over a connected runtime.
    pub fn new(
        client: Client,
        node: NodeSettings,
        images: Images,
        events: Arc<Recorder>,
    ) -> Manager {
        Manager::with_backoff(client, node, images, events, BackoffPolicy::CRASH_LOOP)
    }

    /// A manager with its own crash-loop back-off periods.
    pub fn with_backoff(
        client: Client,
        node: NodeSettings,
        images: Images,
        events: Arc<Recorder>,
        backoff: BackoffPolicy,
    ) -> Manager {
        Manager {
            client,
            node,
            images,
            events,
            crash_backoff: Mutex::new(Backoff::new(backoff)),
            waiting: Mutex::new(HashMap::new()),
            userns: Mutex::new(berth_criconfig::UsernsAllocator::kubelet_default()),
        }
    }

    /// Why a container of a pod is not running, as the last sync saw it.
    pub fn waiting(&self, uid: &str, container: &str) -> Option<Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(uid.to_string(), container.to_string()))
            .cloned()
    }

    fn set_waiting(&self, uid: &str, container: &str, w: Option<Waiting>) {
        let mut map = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let key = (uid.to_string(), container.to_string());
        match w {
            Some(w) => {
                map.insert(key, w);
            }
            None => {
                map.remove(&key);
            }
        }
    }

    /// RunPodSandbox's config for a pod, with its user namespace range
    /// when it sets `hostUsers: false` (the one its sandboxes already
    /// have, else a free one).
    pub fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
        status: &PodRuntimeStatus,
    ) -> Result<cri::PodSandboxConfig, String> {
        let host_users = pod.spec.as_ref().and_then(|s| s.host_users).unwrap_or(true);
        if host_users {
            return berth_criconfig::sandbox_config(pod, attempt, &self.node)
                .map_err(|e| e.to_string());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mapping = {
            let mut alloc = self.userns.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((host_id, length)) = status.sandboxes.iter().find_map(|s| s.userns) {
                let known = berth_criconfig::UsernsMapping { host_id, length };
                if let Err(e) = alloc.record(&uid, known) {
                    tracing::warn!(%uid, "the pod's user namespace range: {e}");
                }
            }
            alloc.allocate(&uid).map_err(|e| e.to_string())?
        };
        berth_criconfig::sandbox_config_with_userns(pod, attempt, &self.node, Some(&mapping))
            .map_err(|e| e.to_string())
    }

    /// Forgets what the manager keeps of a pod that is gone.
    pub fn forget(&self, uid: &str) {
        self.userns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(uid);
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(u, _), _| u != uid);
    }

    /// SyncPod: computes the actions and carries them out.
    pub async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodRuntimeStatus,
        probes: &(dyn Probes + Sync),
        volumes: &PodVolumes,
        objects: &(dyn ObjectSource + Sync),
    ) -> SyncOutcome {
        let hash = |c: &Container| berth_criconfig::container_hash(c);
        let actions = actions::compute(pod, status, probes, &hash);
        tracing::debug!(pod = ?pod.metadata.name, ?actions, "sync");
        self.execute(pod, status, actions, volumes, objects).await
    }

    async fn execute(
        &self,
        pod: &Pod,
        status: &PodRuntimeStatus,
        actions: PodActions,
        volumes: &PodVolumes,
        objects: &(dyn ObjectSource + Sync),
    ) -> SyncOutcome {
        let mut out = SyncOutcome {
            acted: actions.kill_pod
                || actions.create_sandbox
                || !actions.containers_to_kill.is_empty()
                || !actions.init_containers_to_start.is_empty()
                || !actions.containers_to_start.is_empty(),
            ..Default::default()
        };
        let pref = PodRef::of(pod);
        if actions.create_sandbox && actions.sandbox_id.is_some() {
            self.events.record(
                &pref,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.",
            );
        }
        if actions.kill_pod {
            if let Err(e) = self.kill_pod(Some(pod), status, None).await {
                out.errors.push(format!("KillPod: {e}"));
                return out;
            }
            if actions.create_sandbox {
                self.purge_init_containers(pod, status).await;
            }
        } else {
            for k in &actions.containers_to_kill {
                let c = find_container(pod, &k.name);
                if let Err(e) = self
                    .kill_container(
                        pod,
                        c,
                        &k.id,
                        Kill {
                            message: &k.message,
                            reason: Some(k.reason),
                            grace_override: None,
                            pod_ips: &ips_of(status),
                        },
                    )
                    .await
                {
                    out.errors.push(format!("KillContainer {}: {e}", k.name));
                    return out;
                }
            }
        }
        self.prune_init_containers(pod, status).await;

        let mut ips = status.ips.clone();
        let mut sandbox_id = actions.sandbox_id.clone().unwrap_or_default();
        if actions.create_sandbox {
            match self.create_sandbox(pod, actions.attempt, status).await {
                Ok((id, new_ips)) => {
                    sandbox_id = id;
                    ips = new_ips;
                }
                Err(e) => {
                    self.events.record(
                        &pref,
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    out.errors.push(format!("CreatePodSandbox: {e}"));
                    return out;
                }
            }
        }
        if !actions.create_sandbox
            && actions.init_containers_to_start.is_empty()
            && actions.containers_to_start.is_empty()
        {
            return out;
        }
        if self.node.cluster_dns.is_empty() && wants_cluster_dns(pod) {
            self.events.record(
                &pref,
                None,
                EventType::Warning,
                "MissingClusterDNS",
                format!(
                    "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
                    pod_desc(pod)
                ),
            );
        }
        let sandbox_config = match self.sandbox_config(pod, actions.attempt, status) {
            Ok(c) => c,
            Err(e) => {
                out.errors.push(format!("GeneratePodSandboxConfig: {e}"));
                return out;
            }
        };
        let pod_ips: Vec<std::net::IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        let (inits, regular) = spec_containers(pod);
        let step = StartStep {
            pod,
            status,
            sandbox_id: &sandbox_id,
            sandbox_config: &sandbox_config,
            pod_ips: &pod_ips,
            volumes,
            objects,
        };
        for &i in &actions.init_containers_to_start {
            let c = &inits[i];
            let kind = if actions::is_sidecar(c) {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            if let Err(e) = self.start_container(&step, c, kind, &mut out).await {
                out.errors.push(format!("StartContainer {}: {e}", c.name));
                if kind == ContainerKind::Init {
                    return out;
                }
            }
        }
        for &i in &actions.containers_to_start {
            let c = &regular[i];
            if let Err(e) = self
                .start_container(&step, c, ContainerKind::Regular, &mut out)
                .await
            {
                out.errors.push(format!("StartContainer {}: {e}", c.name));
            }
        }
        out
    }

    async fn create_sandbox(
        &self,
        pod: &Pod,
        attempt: u32,
        status: &PodRuntimeStatus,
    ) -> Result<(String, Vec<String>), String> {
        let config = self.sandbox_config(pod, attempt, status)?;
        let log_dir = std::path::PathBuf::from(&config.log_directory);
        let linux = config.linux.clone().unwrap_or_default();
        let pids = self.node.pod_pids_limit;
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&log_dir)
                .map_err(|e| format!("cannot create the pod's log directory: {e}"))?;
            if !linux.cgroup_parent.is_empty() {
                crate::podcgroup::ensure(&linux.cgroup_parent, linux.resources.as_ref(), pids)
                    .map_err(|e| format!("cannot create the pod's cgroup: {e}"))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        let c = &self.client;
        let handler = self.node.runtime_handler.clone();
        let id = c
            .call(
                "RunPodSandbox",
                c.runtime
                    .clone()
                    .run_pod_sandbox(c.request(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: handler,
                    })),
            )
            .await
            .map_err(|e| calls::message(&e))?
            .pod_sandbox_id;
        let st = calls::sandbox_status(c, &id)
            .await
            .map_err(|e| format!("Unable to get pod sandbox status: {}", calls::message(&e)))?
            .ok_or("pod sandbox status is nil")?;
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ips = if host_network {
            self.node.node_ips.iter().map(|ip| ip.to_string()).collect()
        } else {
            crate::status::sandbox_status(&st).ips
        };
        Ok((id, ips))
    }

    async fn start_container(
        &self,
        step: &StartStep<'_>,
        c: &Container,
        kind: ContainerKind,
        out: &mut SyncOutcome,
    ) -> Result<(), String> {
        let pod = step.pod;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pref = PodRef::of(pod);
        // Back-off after the newest exit of this container.
        if let Some(exited) = step
            .status
            .containers
            .iter()
            .find(|s| s.name == c.name && s.state == ContainerState::Exited)
        {
            let key = backoff_key(pod, c);
            let finished = exited.finished_at.unwrap_or(exited.created_at);
            let now = SystemTime::now();
            let mut backoff = self.crash_backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(left) = backoff.in_backoff_since(&key, finished, now) {
                let delay = backoff.delay(&key).unwrap_or_default();
                drop(backoff);
                self.events.record(
                    &pref,
                    Some(&c.name),
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_desc(pod)
                    ),
                );
                let message = format!(
                    "back-off {} restarting failed container={} pod={}",
                    berth_probe::gofmt::duration(delay),
                    c.name,
                    pod_desc(pod)
                );
                self.set_waiting(
                    &uid,
                    &c.name,
                    Some(Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: message.clone(),
                    }),
                );
                let at = now + left;
                out.retry_at = Some(out.retry_at.map_or(at, |t| t.min(at)));
                return Err(message);
            }
            backoff.next(&key, finished, now);
        }
        let fail = |reason: &str, message: String| {
            self.set_waiting(
                &uid,
                &c.name,
                Some(Waiting {
                    reason: reason.to_string(),
                    message: message.clone(),
                }),
            );
            message
        };
        // A step of the container's own that failed: a Failed event too.
        let failed = |reason: &str, message: String| {
            self.events.record(
                &pref,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {message}"),
            );
            fail(reason, message)
        };
        let secrets = pull_secrets(pod, step.objects);
        let image_ref = match self
            .images
            .ensure(pod, c, step.sandbox_config, &secrets, &self.events)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.reason == "ImagePullBackOff" || e.reason == "ErrImagePull" {
                    let at = SystemTime::now() + Duration::from_secs(1);
                    out.retry_at = Some(out.retry_at.map_or(at, |t| t.min(at)));
                }
                return Err(fail(e.reason, e.message));
            }
        };
        let restart_count = match step.status.container(&c.name) {
            Some(s) => s.restart_count + 1,
            None => 0,
        };
        let image_user = self.images.user(&image_ref).await;
        // The container's log directory and its termination message file.
        let wants_message = c
            .termination_message_path
            .as_deref()
            .is_some_and(|p| !p.is_empty());
        let env =
            match berth_criconfig::container_env(pod, c, step.pod_ips, &self.node, step.objects) {
                Ok(env) => env,
                Err(e) => return Err(fail("CreateContainerConfigError", e.to_string())),
            };
        let (p, spec, node) = (pod.clone(), c.clone(), self.node.clone());
        let (ips, volumes) = (step.pod_ips.to_vec(), step.volumes.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            berth_criconfig::write_etc_hosts(&p, &node, &ips)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let sub_paths = berth_criconfig::prepare_sub_paths(&p, &spec, &env, &volumes, &node)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let file = if wants_message {
                berth_criconfig::create_termination_message_file(&p, &spec.name, &node).map(Some)
            } else {
                let dir = berth_criconfig::pod_logs_directory(&p, &node).join(&spec.name);
                std::fs::create_dir_all(dir).map(|()| None)
            }?;
            Ok::<_, std::io::Error>((file, sub_paths))
        })
        .await;
        let (message_file, sub_paths) = match prepared {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                return Err(fail(
                    "CreateContainerConfigError",
                    format!("preparing the container's files: {e}"),
                ))
            }
            Err(e) => return Err(fail("CreateContainerConfigError", e.to_string())),
        };
        let config = berth_criconfig::container_config(&berth_criconfig::ContainerContext {
            pod,
            container: c,
            kind,
            restart_count,
            sandbox_config: step.sandbox_config,
            pod_ips: step.pod_ips,
            image_ref: &image_ref,
            image_user,
            volumes: step.volumes,
            objects: step.objects,
            termination_message_file: message_file.as_deref(),
            target_container_id: None,
            sub_paths: &sub_paths,
            node: &self.node,
        });
        let config = match config {
            Ok(cfg) => cfg,
            Err(e) => {
                return Err(failed("CreateContainerConfigError", e.to_string()));
            }
        };
        let client = &self.client;
        let id = match client
            .call(
                "CreateContainer",
                client.runtime.clone().create_container(client.request(
                    cri::CreateContainerRequest {
                        pod_sandbox_id: step.sandbox_id.to_string(),
                        config: Some(config),
                        sandbox_config: Some(step.sandbox_config.clone()),
                    },
                )),
            )
            .await
        {
            Ok(a) => a.container_id,
            Err(e) => {
                return Err(failed("CreateContainerError", calls::message(&e)));
            }
        };
        self.events.record(
            &pref,
            Some(&c.name),
            EventType::Normal,
            "Created",
            "Container created",
        );
        if let Err(e) = client
            .call(
                "StartContainer",
                client.runtime.clone().start_container(client.request(
                    cri::StartContainerRequest {
                        container_id: id.clone(),
                    },
                )),
            )
            .await
        {
            return Err(failed("RunContainerError", calls::message(&e)));
        }
        self.events.record(
            &pref,
            Some(&c.name),
            EventType::Normal,
            "Started",
            "Container started",
        );
        self.set_waiting(&uid, &c.name, None);
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = self.target(pod, c, &id, step.pod_ips);
            let desc = pod_desc(pod);
            if let Err(e) =
                berth_probe::run_hook(&self.client, hook, &target, &desc, Duration::MAX).await
            {
                let message = e.to_string();
                tracing::warn!(container = %c.name, "postStart hook: {message}");
                // The event leaves the message out, which may hold secrets.
                self.events.record(
                    &pref,
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPostStartHook",
                    "PostStartHook failed",
                );
                let _ = self
                    .kill_container(
                        pod,
                        Some(c),
                        &id,
                        Kill {
                            message: "FailedPostStartHook",
                            reason: None,
                            grace_override: None,
                            pod_ips: step.pod_ips,
                        },
                    )
                    .await;
                return Err(fail("PostStartHookError", message));
            }
        }
        Ok(())
    }

    /// Where a probe or hook of a container runs.
    pub fn target(
        &self,
        pod: &Pod,
        c: &Container,
        container_id: &str,
        pod_ips: &[std::net::IpAddr],
    ) -> berth_probe::Target {
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let pod_ip = if host_network {
            self.node.node_ips.first().copied()
        } else {
            pod_ips.first().copied()
        };
        berth_probe::Target {
            container_id: container_id.to_string(),
            pod_ip,
            container: c.clone(),
        }
    }

    /// Kills one container: the preStop hook, then StopContainer with
    /// what is left of the grace period (at least 2 s).
    pub async fn kill_container(
        &self,
        pod: &Pod,
        c: Option<&Container>,
        id: &str,
        how: Kill<'_>,
    ) -> Result<(), String> {
        let Kill {
            message,
            reason,
            grace_override,
            pod_ips,
        } = how;
        let pref = PodRef::of(pod);
        let name = c.map_or("", |c| c.name.as_str());
        let mut grace = grace_override.unwrap_or_else(|| grace_period(pod, c, reason));
        let message = if message.is_empty() {
            format!("Stopping container {name}")
        } else {
            message.to_string()
        };
        self.events
            .record(&pref, Some(name), EventType::Normal, "Killing", message);
        if let Some(hook) = c
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
        {
            if grace > 0 {
                let started = Instant::now();
                let target = self.target(
                    pod,
                    c.expect("a hook comes with its container"),
                    id,
                    pod_ips,
                );
                let budget = Duration::from_secs(grace as u64);
                let desc = pod_desc(pod);
                match berth_probe::run_hook(&self.client, hook, &target, &desc, budget).await {
                    Ok(()) => {}
                    Err(berth_probe::HookError::Unfinished(_)) => {
                        tracing::info!(
                            container = name,
                            "the preStop hook used the whole grace period"
                        )
                    }
                    Err(e) => {
                        tracing::warn!(container = name, "preStop hook: {e}");
                        self.events.record(
                            &pref,
                            Some(name),
                            EventType::Warning,
                            "FailedPreStopHook",
                            "PreStopHook failed",
                        )
                    }
                }
                grace -= started.elapsed().as_secs() as i64;
            }
        }
        let grace = grace.max(MIN_GRACE_SECONDS);
        calls::stop_container(&self.client, id, grace).await
    }

    /// KillPod: stops the running containers (regular and plain init
    /// containers together, then sidecars one by one in reverse order)
    /// and every sandbox of the pod.
    pub async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        status: &PodRuntimeStatus,
        grace_override: Option<i64>,
    ) -> Result<(), String> {
        let running: Vec<&ContainerStatus> = status.running().collect();
        let fallback;
        let pod = match pod {
            Some(p) => p,
            None => {
                fallback = orphan_pod(status);
                &fallback
            }
        };
        let sidecar_names: Vec<String> = spec_containers(pod)
            .0
            .iter()
            .filter(|c| actions::is_sidecar(c))
            .map(|c| c.name.clone())
            .collect();
        let (sidecars, others): (Vec<_>, Vec<_>) = running
            .into_iter()
            .partition(|c| sidecar_names.contains(&c.name));
        let started = Instant::now();
        let ips = ips_of(status);
        let kills = others.iter().map(|s| {
            let c = find_container(pod, &s.name);
            let how = Kill {
                message: "",
                reason: None,
                grace_override,
                pod_ips: &ips,
            };
            self.kill_container(pod, c, &s.id, how)
        });
        let mut errors: Vec<String> = futures::future::join_all(kills)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        // Sidecars stop after the containers they serve, the last first.
        let mut ordered = sidecars;
        ordered.sort_by_key(|s| {
            std::cmp::Reverse(sidecar_names.iter().position(|n| *n == s.name).unwrap_or(0))
        });
        for s in ordered {
            let c = find_container(pod, &s.name);
            let grace = grace_override.unwrap_or_else(|| grace_period(pod, c, None));
            let left = (grace - started.elapsed().as_secs() as i64).max(0);
            if let Err(e) = self
                .kill_container(
                    pod,
                    c,
                    &s.id,
                    Kill {
                        message: "",
                        reason: None,
                        grace_override: Some(left),
                        pod_ips: &ips,
                    },
                )
                .await
            {
                errors.push(e);
            }
        }
        for sb in &status.sandboxes {
            if let Err(e) = calls::stop_sandbox(&self.client, &sb.id).await {
                errors.push(format!("StopPodSandbox {}: {e}", sb.id));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Removes one container (RemoveContainer; an unknown one is gone
    /// already).
    pub async fn remove_container(&self, id: &str) -> Result<(), String> {
        calls::remove_container(&self.client, id).await
    }

    /// Removes one sandbox.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), String> {
        calls::remove_sandbox(&self.client, id).await
    }

    /// Removes the pod's cgroup (after its sandboxes are gone).
    pub async fn remove_pod_cgroup(&self, pod: &Pod) {
        let parent = berth_criconfig::pod_cgroup_parent(pod, &self.node);
        let failed = tokio::task::spawn_blocking(move || crate::podcgroup::remove(&parent))
            .await
            .unwrap_or_default();
        for f in failed {
            tracing::warn!("the pod's cgroup stays: {f}");
        }
    }

    /// Removes every container and sandbox of a pod that was killed.
    pub async fn remove_pod(&self, status: &PodRuntimeStatus) -> Result<(), String> {
        let mut errors = Vec::new();
        for c in &status.containers {
            if let Err(e) = self.remove_container(&c.id).await {
                errors.push(e);
            }
        }
        for s in &status.sandboxes {
            if let Err(e) = self.remove_sandbox(&s.id).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Removes the init containers of earlier sandboxes, before a new
    /// sandbox starts initialisation again.
    async fn purge_init_containers(&self, pod: &Pod, status: &PodRuntimeStatus) {
        let (inits, _) = spec_containers(pod);
        for s in &status.containers {
            if inits.iter().any(|c| c.name == s.name) && s.state != ContainerState::Running {
                if let Err(e) = self.remove_container(&s.id).await {
                    tracing::warn!(container = %s.id, "cannot remove an old init container: {e}");
                }
            }
        }
    }

    /// Keeps only the newest exited instance of each init container.
    async fn prune_init_containers(&self, pod: &Pod, status: &PodRuntimeStatus) {
        let (inits, _) = spec_containers(pod);
        let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
        for s in &status.containers {
            if !inits.iter().any(|c| c.name == s.name) || s.state == ContainerState::Running {
                continue;
            }
            if s.state != ContainerState::Exited {
                continue;
            }
            if seen.insert(s.name.as_str(), true).is_some() {
                if let Err(e) = self.remove_container(&s.id).await {
                    tracing::warn!(container = %s.id, "cannot remove an old init container: {e}");
                }
            }
        }
    }
}

struct StartStep<'a> {
    pod: &'a Pod,
    status: &'a PodRuntimeStatus,
    sandbox_id: &'a str,
    sandbox_config: &'a cri::PodSandboxConfig,
    pod_ips: &'a [std::net::IpAddr],
    volumes: &'a PodVolumes,
    objects: &'a (dyn ObjectSource + Sync),
}

/// Whether a pod's DNS policy asks for the cluster's DNS servers.
fn wants_cluster_dns(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    match spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst")
    {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    }
}

/// How a container is killed.
#[derive(Debug, Clone, Copy)]
pub struct Kill<'a> {
    /// The Killing event's message; empty: "Stopping container NAME".
    pub message: &'a str,
    pub reason: Option<KillReason>,
    /// A grace period instead of the pod's.
    pub grace_override: Option<i64>,
    /// Where a preStop HTTP hook connects.
    pub pod_ips: &'a [std::net::IpAddr],
}

/// The pod's IPs as addresses.
fn ips_of(status: &PodRuntimeStatus) -> Vec<std::net::IpAddr> {
    status.ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The pod's image pull secrets that exist.
fn pull_secrets(pod: &Pod, objects: &dyn ObjectSource) -> Vec<Secret> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.as_str())
        .filter_map(|name| objects.secret(ns, name))
        .collect()
}

/// "name_namespace(uid)", the kubelet's pod description.
pub fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// A stand-in spec for a pod the manager has no manifest of, from what
/// the runtime holds: its containers' names, so they can be stopped.
fn orphan_pod(status: &PodRuntimeStatus) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.uid = Some(status.uid.clone());
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods() {
        let mut pod = Pod::default();
        assert_eq!(grace_period(&pod, None, None), 30);
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        });
        assert_eq!(grace_period(&pod, None, None), 5);
        let c = Container {
            liveness_probe: Some(k8s_openapi::api::core::v1::Probe {
                termination_grace_period_seconds: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            grace_period(&pod, Some(&c), Some(KillReason::LivenessProbe)),
            1
        );
        assert_eq!(
            grace_period(&pod, Some(&c), Some(KillReason::SpecChanged)),
            5
        );
        pod.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(grace_period(&pod, None, None), 0);
    }
}
