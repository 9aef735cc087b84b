//! A pod's API status (phase, conditions, container statuses) computed
//! from the runtime's state, as the kubelet's generateAPIPodStatus does,
//! for `/pods` and `berth node status`.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiContainerStatus, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::actions::is_sidecar;
use crate::manager::Waiting;
use crate::status::{ContainerState, ContainerStatus, PodRuntimeStatus};

/// What the status needs besides the runtime's state.
pub struct StatusInputs<'a> {
    /// The runtime name in container IDs ("containerd", "berth", ...).
    pub runtime: &'a str,
    pub host_ip: Option<String>,
    /// Why a container is not running, from the last sync.
    pub waiting: &'a dyn Fn(&str) -> Option<Waiting>,
    /// Readiness of a running container (by id); None: no verdict yet.
    pub ready: &'a dyn Fn(&str) -> Option<bool>,
    /// Whether a running container's startup probe passed (by id).
    pub started: &'a dyn Fn(&str) -> Option<bool>,
    /// The pod is being deleted and all its containers stopped.
    pub terminal: bool,
}

fn time(t: SystemTime) -> Time {
    use k8s_openapi::jiff::Timestamp;
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Time(Timestamp::from_nanosecond(ns).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn terminated(s: &ContainerStatus, runtime: &str) -> ContainerStateTerminated {
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: s.started_at.map(time),
        finished_at: s.finished_at.map(time),
        container_id: Some(format!("{runtime}://{}", s.id)),
        signal: None,
    }
}

fn container_status(
    c: &Container,
    status: &PodRuntimeStatus,
    inputs: &StatusInputs,
    default_waiting: &str,
) -> ApiContainerStatus {
    let mine: Vec<&ContainerStatus> = status
        .containers
        .iter()
        .filter(|s| s.name == c.name)
        .collect();
    let mut out = ApiContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        ..Default::default()
    };
    let Some(newest) = mine.first() else {
        let w = (inputs.waiting)(&c.name);
        out.state = Some(ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(
                    w.as_ref()
                        .map_or(default_waiting.to_string(), |w| w.reason.clone()),
                ),
                message: w.map(|w| w.message),
            }),
            ..Default::default()
        });
        out.started = Some(false);
        return out;
    };
    out.container_id = Some(format!("{}://{}", inputs.runtime, newest.id));
    out.image_id = newest.image_ref.clone();
    if !newest.image.is_empty() && out.image.is_empty() {
        out.image = newest.image.clone();
    }
    out.restart_count = newest.restart_count as i32;
    let previous = mine.get(1).filter(|s| s.state == ContainerState::Exited);
    match newest.state {
        ContainerState::Running => {
            out.state = Some(ApiState {
                running: Some(ContainerStateRunning {
                    started_at: newest.started_at.map(time),
                }),
                ..Default::default()
            });
            let started = if c.startup_probe.is_some() {
                (inputs.started)(&newest.id).unwrap_or(false)
            } else {
                true
            };
            out.started = Some(started);
            out.ready = started
                && if c.readiness_probe.is_some() {
                    (inputs.ready)(&newest.id).unwrap_or(false)
                } else {
                    true
                };
            if let Some(p) = previous {
                out.last_state = Some(ApiState {
                    terminated: Some(terminated(p, inputs.runtime)),
                    ..Default::default()
                });
            }
        }
        ContainerState::Exited => {
            out.started = Some(false);
            match (inputs.waiting)(&c.name) {
                Some(w) if !inputs.terminal => {
                    out.state = Some(ApiState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(w.reason),
                            message: Some(w.message),
                        }),
                        ..Default::default()
                    });
                    out.last_state = Some(ApiState {
                        terminated: Some(terminated(newest, inputs.runtime)),
                        ..Default::default()
                    });
                }
                _ => {
                    out.state = Some(ApiState {
                        terminated: Some(terminated(newest, inputs.runtime)),
                        ..Default::default()
                    });
                    if let Some(p) = previous {
                        out.last_state = Some(ApiState {
                            terminated: Some(terminated(p, inputs.runtime)),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        ContainerState::Created | ContainerState::Unknown => {
            out.started = Some(false);
            let w = (inputs.waiting)(&c.name);
            out.state = Some(ApiState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(
                        w.as_ref()
                            .map_or("ContainerCreating".to_string(), |w| w.reason.clone()),
                    ),
                    message: w.map(|w| w.message),
                }),
                ..Default::default()
            });
        }
    }
    out
}

fn is_waiting(s: &ApiContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.waiting.is_some())
}
fn is_running(s: &ApiContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}
fn terminated_code(s: &ApiContainerStatus) -> Option<i32> {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}
fn last_terminated_code(s: &ApiContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// The pod's phase (getPhase).
pub fn phase(
    pod: &Pod,
    inits: &[ApiContainerStatus],
    regular: &[ApiContainerStatus],
    initialised: bool,
    terminal: bool,
) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut pending_sidecars, mut pending_inits, mut failed_init) = (0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let s = inits.iter().find(|s| s.name == c.name);
        if is_sidecar(c) {
            if !s.is_some_and(|s| is_running(s) && s.started == Some(true)) {
                pending_sidecars += 1;
            }
            continue;
        }
        let Some(s) = s else {
            pending_inits += 1;
            continue;
        };
        if is_running(s) {
            pending_inits += 1;
        } else if let Some(code) = terminated_code(s) {
            if code != 0 {
                failed_init += 1;
            }
        } else if is_waiting(s) {
            match last_terminated_code(s) {
                Some(code) if code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_inits += 1,
            }
        } else {
            pending_inits += 1;
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in &spec.containers {
        let Some(s) = regular.iter().find(|s| s.name == c.name) else {
            unknown += 1;
            continue;
        };
        if is_running(s) {
            running += 1;
        } else if let Some(code) = terminated_code(s) {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else if is_waiting(s) {
            if last_terminated_code(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_inits > 0 || (pending_sidecars > 0 && !initialised) || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: SystemTime,
) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time: Some(time(now)),
        ..Default::default()
    }
}

/// The pod's API status.
pub fn pod_status(pod: &Pod, status: &PodRuntimeStatus, inputs: &StatusInputs) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let now = SystemTime::now();
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let inits: Vec<ApiContainerStatus> = init_specs
        .iter()
        .map(|c| {
            let mut s = container_status(c, status, inputs, "PodInitializing");
            if !is_sidecar(c) {
                // An init container is ready once it completed.
                s.ready = terminated_code(&s) == Some(0);
            }
            s
        })
        .collect();
    let initialised_inits = init_specs.iter().all(|c| {
        let s = inits.iter().find(|s| s.name == c.name);
        if is_sidecar(c) {
            s.is_some_and(|s| s.started == Some(true))
        } else {
            s.is_some_and(|s| terminated_code(s) == Some(0))
        }
    });
    let any_regular = spec
        .containers
        .iter()
        .any(|c| status.container(&c.name).is_some());
    let initialised = initialised_inits || any_regular;
    let regular_default = if initialised {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let regular: Vec<ApiContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, status, inputs, regular_default))
        .collect();
    let phase = phase(pod, &inits, &regular, initialised, inputs.terminal);

    let sandbox_ready = status.sandboxes.first().is_some_and(|s| s.ready);
    let not_ready: Vec<&str> = regular
        .iter()
        .chain(
            inits
                .iter()
                .filter(|s| init_specs.iter().any(|c| c.name == s.name && is_sidecar(c))),
        )
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let incomplete: Vec<&str> = init_specs
        .iter()
        .filter(|c| {
            let s = inits.iter().find(|s| s.name == c.name);
            if is_sidecar(c) {
                s.is_none_or(|s| s.started != Some(true))
            } else {
                s.is_none_or(|s| terminated_code(s) != Some(0))
            }
        })
        .map(|c| c.name.as_str())
        .collect();
    let completed = phase == "Succeeded";
    let containers_ready = not_ready.is_empty() && !completed;
    let unready_msg = format!("containers with unready status: [{}]", not_ready.join(" "));
    let ready_reason = if completed {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None, now),
        condition(
            "Initialized",
            initialised || completed,
            Some(
                if completed {
                    "PodCompleted"
                } else {
                    "ContainersNotInitialized"
                }
                .into(),
            ),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
            now,
        ),
        condition(
            "Ready",
            containers_ready,
            Some(ready_reason.into()),
            Some(unready_msg.clone()),
            now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some(ready_reason.into()),
            Some(unready_msg),
            now,
        ),
        condition("PodScheduled", true, None, None, now),
    ];
    let qos = berth_criconfig::qos_class(pod);
    let start = status
        .sandboxes
        .last()
        .map(|s| s.created_at)
        .filter(|t| *t > SystemTime::UNIX_EPOCH);
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: inputs.host_ip.clone(),
        pod_ip: status.ips.first().cloned(),
        pod_ips: (!status.ips.is_empty()).then(|| {
            status
                .ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect()
        }),
        start_time: start.map(time),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        container_statuses: Some(regular),
        qos_class: Some(format!("{qos:?}")),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn st(name: &str, state: ApiState, last: Option<ApiState>) -> ApiContainerStatus {
        ApiContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            started: Some(true),
            ..Default::default()
        }
    }
    fn running() -> ApiState {
        ApiState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }
    fn exited(code: i32) -> ApiState {
        ApiState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn waiting() -> ApiState {
        ApiState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }
    }
    fn pod(policy: &str, init: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: vec![Container {
                    name: "a".into(),
                    ..Default::default()
                }],
                init_containers: init.then(|| {
                    vec![Container {
                        name: "i".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let p = pod("Always", false);
        assert_eq!(
            phase(&p, &[], &[st("a", running(), None)], true, false),
            "Running"
        );
        assert_eq!(
            phase(&p, &[], &[st("a", waiting(), None)], true, false),
            "Pending"
        );
        // Crash-looping: waiting with a last termination counts as stopped.
        assert_eq!(
            phase(&p, &[], &[st("a", waiting(), Some(exited(1)))], true, false),
            "Running"
        );
        assert_eq!(phase(&p, &[], &[], true, false), "Pending");
        let never = pod("Never", false);
        assert_eq!(
            phase(&never, &[], &[st("a", exited(0), None)], true, false),
            "Succeeded"
        );
        assert_eq!(
            phase(&never, &[], &[st("a", exited(2), None)], true, false),
            "Failed"
        );
        let on_failure = pod("OnFailure", false);
        assert_eq!(
            phase(&on_failure, &[], &[st("a", exited(2), None)], true, false),
            "Running"
        );
        let with_init = pod("Never", true);
        assert_eq!(
            phase(&with_init, &[st("i", running(), None)], &[], false, false),
            "Pending"
        );
        assert_eq!(
            phase(&with_init, &[st("i", exited(1), None)], &[], false, false),
            "Failed"
        );
    }
}
