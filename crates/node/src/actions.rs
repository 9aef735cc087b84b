//! What SyncPod must do to bring a pod's runtime state to its spec: the
//! kubelet's computePodActions, as a pure function of the spec, the
//! runtime's state and the probes' verdicts.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::status::{ContainerState, PodRuntimeStatus};

/// A probe's latest verdict on a container, as the manager keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

/// The probe verdicts the actions depend on.
pub trait Probes {
    /// The liveness verdict on a container, None before its first probe.
    fn liveness(&self, container_id: &str) -> Option<Verdict>;
    /// The startup verdict on a container, None before its first probe.
    fn startup(&self, container_id: &str) -> Option<Verdict>;
}

/// Why a running container is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Its spec (hash) changed.
    SpecChanged,
    LivenessProbe,
    StartupProbe,
    /// Its state is unknown: killed before it is started again.
    Unknown,
}

/// One container to kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToKill {
    pub id: String,
    pub name: String,
    pub reason: KillReason,
    /// The kubelet's message ("Container x failed liveness probe, will be
    /// restarted").
    pub message: String,
}

/// The actions of one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Kill every container and the sandbox first.
    pub kill_pod: bool,
    /// Create a new sandbox (after killing the pod).
    pub create_sandbox: bool,
    /// The sandbox to use, or the one being replaced.
    pub sandbox_id: Option<String>,
    /// The attempt number of the sandbox to create.
    pub attempt: u32,
    /// Indexes into `spec.initContainers`, in the order to start them.
    pub init_containers_to_start: Vec<usize>,
    /// Indexes into `spec.containers`.
    pub containers_to_start: Vec<usize>,
    pub containers_to_kill: Vec<ToKill>,
}

/// Whether an init container is a sidecar (restartPolicy Always).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn restarts_on_failure(pod: &Pod) -> bool {
    restart_policy(pod) != "Never"
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The CRI network namespace mode a pod needs (POD = 0, NODE = 2).
pub fn network_mode(pod: &Pod) -> i32 {
    if host_network(pod) {
        berth_cri::runtime::v1::NamespaceMode::Node as i32
    } else {
        berth_cri::runtime::v1::NamespaceMode::Pod as i32
    }
}

/// Whether a (regular) container should run again after it stopped
/// (ShouldContainerBeRestarted).
pub fn should_restart(pod: &Pod, c: &Container, status: &PodRuntimeStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.container(&c.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Whether the sandbox must be (re)created: none, several ready, the
/// newest not ready, the network mode changed, or no IP for a pod that
/// needs one. Returns (changed, attempt, sandbox id).
pub fn sandbox_changed(pod: &Pod, status: &PodRuntimeStatus) -> (bool, u32, Option<String>) {
    let Some(newest) = status.sandboxes.first() else {
        return (true, 0, None);
    };
    let ready = status.sandboxes.iter().filter(|s| s.ready).count();
    if ready > 1 || !newest.ready {
        return (true, newest.attempt + 1, Some(newest.id.clone()));
    }
    if newest.network_mode != network_mode(pod) {
        return (true, newest.attempt + 1, None);
    }
    if !host_network(pod) && newest.ips.is_empty() {
        return (true, newest.attempt + 1, Some(newest.id.clone()));
    }
    (false, newest.attempt, Some(newest.id.clone()))
}

fn succeeded(c: &Container, status: &PodRuntimeStatus) -> bool {
    status
        .container(&c.name)
        .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
}

fn init_failed(s: &crate::status::ContainerStatus) -> bool {
    match s.state {
        ContainerState::Exited => s.exit_code != 0,
        ContainerState::Unknown => true,
        _ => false,
    }
}

/// The kubelet's computePodActions.
pub fn compute(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &dyn Probes,
    hash: &dyn Fn(&Container) -> u64,
) -> PodActions {
    let (create, attempt, sandbox_id) = sandbox_changed(pod, status);
    let mut a = PodActions {
        kill_pod: create,
        create_sandbox: create,
        sandbox_id,
        attempt,
        ..Default::default()
    };
    let empty = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec.map_or(&empty, |s| &s.containers);
    let inits = spec
        .and_then(|s| s.init_containers.as_ref())
        .unwrap_or(&empty);

    if create {
        if !restarts_on_failure(pod) && attempt != 0 && !status.containers.is_empty() {
            // A finished Never pod: kill what is left, create nothing.
            a.create_sandbox = false;
            return a;
        }
        let to_start: Vec<usize> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| !(restart_policy(pod) == "OnFailure" && succeeded(c, status)))
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && any_regular_created(containers, status) {
            a.create_sandbox = false;
            return a;
        }
        if !inits.is_empty() {
            a.init_containers_to_start = vec![0];
        } else {
            a.containers_to_start = to_start;
        }
        return a;
    }

    let initialised = init_actions(pod, inits, containers, status, probes, hash, &mut a);
    if a.kill_pod || !initialised {
        return a;
    }

    let mut keep = 0;
    for (i, c) in containers.iter().enumerate() {
        let s = status.container(&c.name);
        let running = s.filter(|s| s.state == ContainerState::Running);
        let Some(s) = running else {
            if should_restart(pod, c, status) {
                a.containers_to_start.push(i);
                if let Some(s) = s.filter(|s| s.state == ContainerState::Unknown) {
                    a.containers_to_kill.push(ToKill {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        reason: KillReason::Unknown,
                        message: "Container is in \"unknown\" state, try killing it before restart"
                            .into(),
                    });
                }
            }
            continue;
        };
        let mut restart = restarts_on_failure(pod);
        let (reason, message) = if hash(c) != s.hash {
            restart = true;
            (
                KillReason::SpecChanged,
                format!("Container {} definition changed", c.name),
            )
        } else if probes.liveness(&s.id) == Some(Verdict::Failure) {
            (
                KillReason::LivenessProbe,
                format!("Container {} failed liveness probe", c.name),
            )
        } else if probes.startup(&s.id) == Some(Verdict::Failure) {
            (
                KillReason::StartupProbe,
                format!("Container {} failed startup probe", c.name),
            )
        } else {
            keep += 1;
            continue;
        };
        let message = if restart {
            a.containers_to_start.push(i);
            format!("{message}, will be restarted")
        } else {
            message
        };
        a.containers_to_kill.push(ToKill {
            id: s.id.clone(),
            name: c.name.clone(),
            reason,
            message,
        });
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        a.kill_pod = true;
        a.init_containers_to_start.clear();
    }
    a
}

fn any_regular_created(containers: &[Container], status: &PodRuntimeStatus) -> bool {
    containers
        .iter()
        .any(|c| status.container(&c.name).is_some())
}

/// The init containers' part (computeInitContainerActions); returns
/// whether the pod is initialised.
fn init_actions(
    pod: &Pod,
    inits: &[Container],
    containers: &[Container],
    status: &PodRuntimeStatus,
    probes: &dyn Probes,
    hash: &dyn Fn(&Container) -> u64,
    a: &mut PodActions,
) -> bool {
    if inits.is_empty() {
        return true;
    }
    // A regular container created or running means initialisation was
    // done once, even if the init containers' records are gone.
    let mut initialised = containers.iter().any(|c| {
        status
            .container(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously = initialised;
    let kill = |a: &mut PodActions, id: &str, name: &str, reason, message: String| {
        a.containers_to_kill.push(ToKill {
            id: id.to_string(),
            name: name.to_string(),
            reason,
            message,
        })
    };
    for i in (0..inits.len()).rev() {
        let c = &inits[i];
        let sidecar = is_sidecar(c);
        let Some(s) = status.container(&c.name) else {
            if previously && sidecar {
                a.init_containers_to_start.push(i);
            }
            continue;
        };
        if previously && !sidecar {
            continue;
        }
        match s.state {
            ContainerState::Created => a.init_containers_to_start.push(i),
            ContainerState::Running if !sidecar => {}
            ContainerState::Running => 'running: {
                if c.startup_probe.is_some() {
                    match probes.startup(&s.id) {
                        None => break 'running,
                        Some(Verdict::Failure) => {
                            kill(
                                a,
                                &s.id,
                                &c.name,
                                KillReason::StartupProbe,
                                format!("Init container {} failed startup probe", c.name),
                            );
                            a.init_containers_to_start.push(i);
                            break 'running;
                        }
                        Some(Verdict::Success) => {}
                    }
                }
                if i == inits.len() - 1 {
                    initialised = true;
                } else if !previously {
                    a.init_containers_to_start.push(i + 1);
                }
                if hash(c) != s.hash {
                    kill(
                        a,
                        &s.id,
                        &c.name,
                        KillReason::SpecChanged,
                        format!("Init container {} definition changed", c.name),
                    );
                    a.init_containers_to_start.push(i);
                    break 'running;
                }
                if c.liveness_probe.is_some() && probes.liveness(&s.id) == Some(Verdict::Failure) {
                    kill(
                        a,
                        &s.id,
                        &c.name,
                        KillReason::LivenessProbe,
                        format!("Init container {} failed liveness probe", c.name),
                    );
                    a.init_containers_to_start.push(i);
                }
            }
            ContainerState::Exited if sidecar => a.init_containers_to_start.push(i),
            ContainerState::Exited => {
                if init_failed(s) {
                    if !restarts_on_failure(pod) {
                        a.kill_pod = true;
                        a.init_containers_to_start.clear();
                        return false;
                    }
                    a.init_containers_to_start.push(i);
                } else if i == inits.len() - 1 {
                    initialised = true;
                } else {
                    a.init_containers_to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !restarts_on_failure(pod) {
                    a.kill_pod = true;
                    a.init_containers_to_start.clear();
                    return false;
                }
                kill(
                    a,
                    &s.id,
                    &c.name,
                    KillReason::Unknown,
                    "Init container is in \"unknown\" state, try killing it before restart".into(),
                );
                a.init_containers_to_start.push(i);
            }
        }
        if !previously {
            previously = true;
        }
    }
    // The kubelet walks backwards; start them front to back.
    a.init_containers_to_start.reverse();
    initialised
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{ContainerStatus, SandboxStatus};
    use k8s_openapi::api::core::v1::{PodSpec, Probe};
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    #[derive(Default)]
    struct Verdicts {
        liveness: HashMap<String, Verdict>,
        startup: HashMap<String, Verdict>,
    }
    impl Probes for Verdicts {
        fn liveness(&self, id: &str) -> Option<Verdict> {
            self.liveness.get(id).copied()
        }
        fn startup(&self, id: &str) -> Option<Verdict> {
            self.startup.get(id).copied()
        }
    }

    fn hash(c: &Container) -> u64 {
        c.image.as_deref().map_or(0, |i| i.len() as u64)
    }

    fn c(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("img".into()),
            ..Default::default()
        }
    }

    fn sidecar(name: &str) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..c(name)
        }
    }

    fn pod(policy: &str, inits: Vec<Container>, containers: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!inits.is_empty()).then_some(inits),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready_sandbox() -> SandboxStatus {
        SandboxStatus {
            id: "sb".into(),
            attempt: 0,
            ready: true,
            created_at: SystemTime::UNIX_EPOCH,
            network_mode: 0,
            ips: vec!["10.0.0.2".into()],
            userns: None,
        }
    }

    fn cs(name: &str, state: ContainerState, exit: i32, age: u64) -> ContainerStatus {
        ContainerStatus {
            id: format!("{name}-{age}"),
            sandbox_id: "sb".into(),
            name: name.into(),
            state,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
            started_at: None,
            finished_at: None,
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            hash: 3,
            restart_count: 0,
            image: "img".into(),
            image_ref: "sha256:x".into(),
        }
    }

    fn status(containers: Vec<ContainerStatus>) -> PodRuntimeStatus {
        let mut s = PodRuntimeStatus {
            uid: "u".into(),
            sandboxes: vec![ready_sandbox()],
            containers,
            ips: vec!["10.0.0.2".into()],
        };
        s.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        s
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_and_its_first_init_container() {
        let p = pod("Always", vec![c("i0"), c("i1")], vec![c("a")]);
        let a = compute(
            &p,
            &PodRuntimeStatus::default(),
            &Verdicts::default(),
            &hash,
        );
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());
        let p = pod("Always", vec![], vec![c("a"), c("b")]);
        let a = compute(
            &p,
            &PodRuntimeStatus::default(),
            &Verdicts::default(),
            &hash,
        );
        assert_eq!(a.containers_to_start, [0, 1]);
    }

    #[test]
    fn init_containers_run_one_after_another() {
        let p = pod("Always", vec![c("i0"), c("i1")], vec![c("a")]);
        let s = status(vec![cs("i0", ContainerState::Exited, 0, 5)]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert!(!a.create_sandbox && !a.kill_pod);
        assert_eq!(a.init_containers_to_start, [1]);
        assert!(a.containers_to_start.is_empty());
        // Still running: wait.
        let s = status(vec![cs("i0", ContainerState::Running, 0, 5)]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
        // All done: the regular containers start.
        let s = status(vec![
            cs("i0", ContainerState::Exited, 0, 5),
            cs("i1", ContainerState::Exited, 0, 4),
        ]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn a_failed_init_container_restarts_or_ends_the_pod() {
        let s = status(vec![cs("i0", ContainerState::Exited, 1, 5)]);
        let p = pod("Always", vec![c("i0")], vec![c("a")]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert_eq!(a.init_containers_to_start, [0]);
        let p = pod("Never", vec![c("i0")], vec![c("a")]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert!(a.kill_pod && a.init_containers_to_start.is_empty());
    }

    #[test]
    fn a_started_sidecar_lets_the_next_container_start() {
        let p = pod("Always", vec![sidecar("s")], vec![c("a")]);
        let s = status(vec![cs("s", ContainerState::Running, 0, 5)]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert_eq!(a.containers_to_start, [0]);
        // With a startup probe, only once it passed.
        let mut probed = sidecar("s");
        probed.startup_probe = Some(Probe::default());
        let p = pod("Always", vec![probed], vec![c("a")]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert!(a.containers_to_start.is_empty());
        let mut v = Verdicts::default();
        v.startup.insert("s-5".into(), Verdict::Success);
        let a = compute(&p, &s, &v, &hash);
        assert_eq!(a.containers_to_start, [0]);
        // An exited sidecar is restarted whatever the pod's policy.
        let p = pod("Never", vec![sidecar("s")], vec![c("a")]);
        let s = status(vec![
            cs("s", ContainerState::Exited, 0, 5),
            cs("a", ContainerState::Running, 0, 4),
        ]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert_eq!(a.init_containers_to_start, [0]);
    }

    #[test]
    fn running_containers_are_kept_replaced_or_restarted() {
        let p = pod("Always", vec![], vec![c("a")]);
        let s = status(vec![cs("a", ContainerState::Running, 0, 5)]);
        let a = compute(&p, &s, &Verdicts::default(), &hash);
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb".into()),
                ..Default::default()
            }
        );
        // A changed spec (hash) replaces it.
        let mut changed = c("a");
        changed.image = Some("other".into());
        let p2 = pod("Never", vec![], vec![changed]);
        let a = compute(&p2, &s, &Verdicts::default(), &hash);
        assert_eq!(a.containers_to_start, [0]);
        assert_eq!(a.containers_to_kill[0].reason, KillReason::SpecChanged);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a definition changed, will be restarted"
        );
        // A failed liveness probe restarts it, unless the policy is Never.
        let mut v = Verdicts::default();
        v.liveness.insert("a-5".into(), Verdict::Failure);
        let a = compute(&p, &s, &v, &hash);
        assert_eq!(a.containers_to_start, [0]);
        assert_eq!(a.containers_to_kill[0].reason, KillReason::LivenessProbe);
        let never = pod("Never", vec![], vec![c("a")]);
        let a = compute(&never, &s, &v, &hash);
        assert!(a.containers_to_start.is_empty());
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a failed liveness probe"
        );
    }

    #[test]
    fn exited_containers_follow_the_restart_policy() {
        let s = status(vec![
            cs("a", ContainerState::Exited, 0, 5),
            cs("b", ContainerState::Exited, 1, 4),
        ]);
        let a = compute(
            &pod("Always", vec![], vec![c("a"), c("b")]),
            &s,
            &Verdicts::default(),
            &hash,
        );
        assert_eq!(a.containers_to_start, [0, 1]);
        let a = compute(
            &pod("OnFailure", vec![], vec![c("a"), c("b")]),
            &s,
            &Verdicts::default(),
            &hash,
        );
        assert_eq!(a.containers_to_start, [1]);
        let a = compute(
            &pod("Never", vec![], vec![c("a"), c("b")]),
            &s,
            &Verdicts::default(),
            &hash,
        );
        assert!(a.containers_to_start.is_empty());
        assert!(a.kill_pod, "nothing runs and nothing will: the pod is done");
    }

    #[test]
    fn a_lost_sandbox_is_recreated_unless_the_pod_is_done() {
        let mut s = status(vec![cs("a", ContainerState::Exited, 0, 5)]);
        s.sandboxes[0].ready = false;
        let a = compute(
            &pod("Always", vec![], vec![c("a")]),
            &s,
            &Verdicts::default(),
            &hash,
        );
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 1);
        assert_eq!(a.containers_to_start, [0]);
        let a = compute(
            &pod("Never", vec![], vec![c("a")]),
            &s,
            &Verdicts::default(),
            &hash,
        );
        assert!(!a.create_sandbox && a.kill_pod);
        // A pod without an IP gets a new sandbox.
        let mut s = status(vec![]);
        s.sandboxes[0].ips.clear();
        let (changed, attempt, _) = sandbox_changed(&pod("Always", vec![], vec![c("a")]), &s);
        assert!(changed);
        assert_eq!(attempt, 1);
    }
}
