//! What the runtime holds of a pod, read over CRI as the kubelet reads it
//! (GetPods, GetPodStatus): sandboxes and containers with the kubelet's
//! labels, newest first.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_cri::runtime::v1 as cri;
use berth_cri_client::{Client, ClientError};

use crate::calls;

/// The label every kubelet-made sandbox and container carries.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// A container's state as the kubelet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    fn from_cri(state: i32) -> ContainerState {
        match cri::ContainerState::try_from(state) {
            Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        }
    }
}

/// One container of a pod, from ContainerStatus and its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub state: ContainerState,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The spec hash the kubelet labelled it with.
    pub hash: u64,
    pub restart_count: u32,
    pub image: String,
    pub image_ref: String,
}

/// One sandbox of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStatus {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: SystemTime,
    /// The network namespace mode (`cri::NamespaceMode` as a number).
    pub network_mode: i32,
    /// The pod's IPs, primary first; empty for none.
    pub ips: Vec<String>,
    /// The user namespace's first host ID and length, for a pod with
    /// `hostUsers: false`.
    pub userns: Option<(u32, u32)>,
}

/// Everything the runtime holds of one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntimeStatus {
    pub uid: String,
    /// Newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Newest first, across all sandboxes.
    pub containers: Vec<ContainerStatus>,
    /// The IPs of the newest sandbox, when it is ready.
    pub ips: Vec<String>,
}

impl PodRuntimeStatus {
    /// The newest container of that name.
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Exited containers beyond the newest `keep` of each name (the
    /// kubelet's pod container deletor removes them as soon as one dies).
    pub fn surplus_dead(&self, keep: usize) -> Vec<String> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut out = Vec::new();
        // Newest first.
        for c in self
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Exited)
        {
            let n = seen.entry(c.name.as_str()).or_default();
            *n += 1;
            if *n > keep {
                out.push(c.id.clone());
            }
        }
        out
    }

    /// The running containers.
    pub fn running(&self) -> impl Iterator<Item = &ContainerStatus> {
        self.containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
    }
}

/// A nanosecond CRI time as a time, zero as none.
pub fn time_of(ns: i64) -> Option<SystemTime> {
    (ns > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

fn label_filter(uid: &str) -> std::collections::HashMap<String, String> {
    [(POD_UID_LABEL.to_string(), uid.to_string())].into()
}

/// Reads one pod's sandboxes and containers (GetPodStatus).
pub async fn pod_status(client: &Client, uid: &str) -> Result<PodRuntimeStatus, ClientError> {
    let mut sandbox_list = calls::sandboxes(client, Some(label_filter(uid))).await?;
    let mut status = PodRuntimeStatus {
        uid: uid.to_string(),
        ..Default::default()
    };
    sandbox_list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    // A runtime that answers PodSandboxStatus in the evented PLEG's form
    // (a timestamp, its containers' statuses) saves a ContainerStatus per
    // container, and the container list when every sandbox answers so.
    let mut known: Vec<(String, cri::ContainerStatus)> = Vec::new();
    let mut all_evented = true;
    for (i, s) in sandbox_list.iter().enumerate() {
        let answer = match calls::sandbox_status_response(client, &s.id).await {
            Ok(a) => a,
            Err(e) if calls::not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        if answer.timestamp != 0 {
            known.extend(
                answer
                    .containers_statuses
                    .into_iter()
                    .map(|c| (s.id.clone(), c)),
            );
        } else {
            all_evented = false;
        }
        let Some(st) = answer.status else { continue };
        let sandbox = sandbox_status(&st);
        if i == 0 && sandbox.ready {
            status.ips = sandbox.ips.clone();
        }
        status.sandboxes.push(sandbox);
    }
    let statuses: Vec<(String, cri::ContainerStatus)> = if all_evented {
        known
    } else {
        let known: std::collections::HashMap<String, cri::ContainerStatus> =
            known.into_iter().map(|(_, c)| (c.id.clone(), c)).collect();
        let known = &known;
        let containers = calls::containers(client, Some(label_filter(uid))).await?;
        let reads = containers.iter().map(|c| async move {
            if let Some(st) = known.get(&c.id) {
                return Ok(Some((c.pod_sandbox_id.clone(), st.clone())));
            }
            calls::container_status(client, &c.id)
                .await
                .map(|st| st.map(|st| (c.pod_sandbox_id.clone(), st)))
        });
        let mut out = Vec::new();
        for answer in futures::future::join_all(reads).await {
            match answer {
                Ok(Some(pair)) => out.push(pair),
                Ok(None) => {}
                Err(e) if calls::not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        out
    };
    status.containers = statuses
        .iter()
        .filter_map(|(sandbox, st)| container_status(sandbox, st))
        .collect();
    status
        .containers
        .sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(status)
}

/// A sandbox's status in the manager's terms.
pub fn sandbox_status(st: &cri::PodSandboxStatus) -> SandboxStatus {
    let mut ips = Vec::new();
    if let Some(n) = &st.network {
        if !n.ip.is_empty() {
            ips.push(n.ip.clone());
        }
        ips.extend(n.additional_ips.iter().map(|ip| ip.ip.clone()));
    }
    let options = st
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref());
    let userns = options
        .and_then(|o| o.userns_options.as_ref())
        .and_then(|u| u.uids.first())
        .map(|m| (m.host_id, m.length));
    SandboxStatus {
        userns,
        id: st.id.clone(),
        attempt: st.metadata.as_ref().map_or(0, |m| m.attempt),
        ready: st.state == cri::PodSandboxState::SandboxReady as i32,
        created_at: time_of(st.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
        network_mode: st
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .map_or(0, |o| o.network),
        ips,
    }
}

/// A container's status in the manager's terms; None for a container
/// without the kubelet's labels.
pub fn container_status(sandbox_id: &str, st: &cri::ContainerStatus) -> Option<ContainerStatus> {
    let info = berth_criconfig::container_info(&st.labels, &st.annotations).ok()?;
    Some(ContainerStatus {
        id: st.id.clone(),
        sandbox_id: sandbox_id.to_string(),
        name: info.container_name.clone(),
        state: ContainerState::from_cri(st.state),
        created_at: time_of(st.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
        started_at: time_of(st.started_at),
        finished_at: time_of(st.finished_at),
        exit_code: st.exit_code,
        reason: st.reason.clone(),
        message: st.message.clone(),
        hash: info.hash,
        restart_count: info.restart_count,
        image: st
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: st.image_ref.clone(),
    })
}

/// What a relist sees of one pod: enough to tell whether it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSnapshot {
    pub name: String,
    pub namespace: String,
    /// Sandbox ids and whether they are ready.
    pub sandboxes: Vec<(String, bool)>,
    /// Container ids and their CRI states.
    pub containers: Vec<(String, i32)>,
    /// Whether a sandbox says the pod came from a manifest file
    /// (`kubernetes.io/config.source: file`), as the node's pods do.
    pub from_file: bool,
}

/// Lists every pod the runtime holds with the kubelet's labels (GetPods),
/// by uid.
pub async fn relist(client: &Client) -> Result<BTreeMap<String, PodSnapshot>, ClientError> {
    let sandboxes = calls::sandboxes(client, None).await?;
    let containers = calls::containers(client, None).await?;
    let mut pods: BTreeMap<String, PodSnapshot> = BTreeMap::new();
    for s in &sandboxes {
        let Ok(info) = berth_criconfig::sandbox_info(&s.labels) else {
            continue;
        };
        let p = pods.entry(info.pod_uid.clone()).or_default();
        p.name = info.pod_name.clone();
        p.namespace = info.pod_namespace.clone();
        p.from_file |= s
            .annotations
            .get("kubernetes.io/config.source")
            .is_some_and(|v| v == "file");
        p.sandboxes.push((
            s.id.clone(),
            s.state == cri::PodSandboxState::SandboxReady as i32,
        ));
    }
    for c in &containers {
        let Some(uid) = c.labels.get(POD_UID_LABEL) else {
            continue;
        };
        pods.entry(uid.clone())
            .or_default()
            .containers
            .push((c.id.clone(), c.state));
    }
    for p in pods.values_mut() {
        p.sandboxes.sort();
        p.containers.sort();
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str, state: ContainerState, age: u64) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            sandbox_id: "s".into(),
            name: name.into(),
            state,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
            started_at: None,
            finished_at: None,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            hash: 0,
            restart_count: 0,
            image: String::new(),
            image_ref: String::new(),
        }
    }

    #[test]
    fn surplus_dead_keeps_the_newest_of_each_name() {
        let mut s = PodRuntimeStatus {
            containers: vec![
                c("a3", "a", ContainerState::Running, 1),
                c("a2", "a", ContainerState::Exited, 2),
                c("a1", "a", ContainerState::Exited, 3),
                c("a0", "a", ContainerState::Exited, 4),
                c("b0", "b", ContainerState::Exited, 5),
            ],
            ..Default::default()
        };
        s.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        assert_eq!(s.surplus_dead(1), ["a1", "a0"]);
        assert!(s.surplus_dead(3).is_empty());
    }
}
