//! RunPodSandbox's config (kubelet `generatePodSandboxConfig`).

use std::path::PathBuf;

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use crate::dns::{kernel_hostname, pod_dns_config};
use crate::error::ConfigError;
use crate::labels::pod_labels;
use crate::node::NodeSettings;
use crate::resources::{overhead_resources, pod_cgroup_parent, sandbox_resources};
use crate::userns::UsernsMapping;

/// The pod's log directory: `<pod_logs_dir>/<namespace>_<name>_<uid>`.
pub fn pod_logs_directory(pod: &Pod, node: &NodeSettings) -> PathBuf {
    node.pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let mut names = std::collections::HashSet::new();
        for p in c.ports.iter().flatten() {
            let host_ip = p.host_ip.clone().unwrap_or_default();
            let family = if host_ip.is_empty() {
                "any"
            } else if host_ip.contains(':') {
                "v6"
            } else {
                "v4"
            };
            let name = match p.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => n.to_string(),
                None => format!(
                    "{family}-{}-{host_ip}:{}:{}",
                    p.protocol.as_deref().unwrap_or_default(),
                    p.container_port,
                    p.host_port.unwrap_or(0)
                ),
            };
            if !names.insert(name) {
                continue;
            }
            out.push(cri::PortMapping {
                protocol: protocol(p.protocol.as_deref()),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip,
            });
        }
    }
    out
}

fn namespace_mode(host: bool) -> i32 {
    if host {
        cri::NamespaceMode::Node as i32
    } else {
        cri::NamespaceMode::Pod as i32
    }
}

/// The pod's namespace options (kubelet `NamespacesForPod`).
pub(crate) fn namespace_options(
    pod: &Pod,
    node: &NodeSettings,
    userns: Option<&UsernsMapping>,
) -> Result<cri::NamespaceOption, ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let pid = if spec.host_pid.unwrap_or(false) {
        cri::NamespaceMode::Node as i32
    } else if spec.share_process_namespace.unwrap_or(false) {
        cri::NamespaceMode::Pod as i32
    } else {
        cri::NamespaceMode::Container as i32
    };
    let userns_options = match spec.host_users {
        None | Some(true) if node.userns_support => Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        None => None,
        Some(true) => {
            return Err(ConfigError::Invalid(
                "the feature gate \"UserNamespacesSupport\" is disabled: can't set spec.HostUsers"
                    .into(),
            ))
        }
        Some(false) => {
            if !node.userns_support {
                return Err(ConfigError::Invalid(
                    "the feature gate \"UserNamespacesSupport\" is disabled: can't set spec.HostUsers".into(),
                ));
            }
            let m = userns.ok_or_else(|| {
                ConfigError::UsernsNotAllocated(pod.metadata.name.clone().unwrap_or_default())
            })?;
            let ids = vec![cri::IdMapping {
                host_id: m.host_id,
                container_id: 0,
                length: m.length,
            }];
            Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: ids.clone(),
                gids: ids,
            })
        }
    };
    Ok(cri::NamespaceOption {
        network: namespace_mode(spec.host_network.unwrap_or(false)),
        pid,
        ipc: namespace_mode(spec.host_ipc.unwrap_or(false)),
        target_id: String::new(),
        userns_options,
    })
}

pub(crate) fn supplemental_groups_policy(p: Option<&str>) -> Result<i32, ConfigError> {
    match p {
        None | Some("Merge") => Ok(cri::SupplementalGroupsPolicy::Merge as i32),
        Some("Strict") => Ok(cri::SupplementalGroupsPolicy::Strict as i32),
        Some(other) => Err(ConfigError::Invalid(format!(
            "unsupported supplementalGroupsPolicy: {other}"
        ))),
    }
}

fn has_privileged_container(pod: &Pod) -> bool {
    pod.spec.iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
            || s.ephemeral_containers.iter().flatten().any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
    })
}

/// RunPodSandbox's config for a pod without a user namespace
/// (`hostUsers: false` needs [`sandbox_config_with_userns`]).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    node: &NodeSettings,
) -> Result<cri::PodSandboxConfig, ConfigError> {
    sandbox_config_with_userns(pod, attempt, node, None)
}

/// RunPodSandbox's config (`attempt` is the sandbox attempt number), with
/// the pod's user namespace mapping when it sets `hostUsers: false`.
pub fn sandbox_config_with_userns(
    pod: &Pod,
    attempt: u32,
    node: &NodeSettings,
    userns: Option<&UsernsMapping>,
) -> Result<cri::PodSandboxConfig, ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let hostname = if spec.host_network.unwrap_or(false) {
        String::new()
    } else {
        kernel_hostname(pod, node)?
    };

    let default_sc = k8s_openapi::api::core::v1::PodSecurityContext::default();
    let psc = spec.security_context.as_ref().unwrap_or(&default_sc);
    let mut sc = cri::LinuxSandboxSecurityContext {
        privileged: has_privileged_container(pod),
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    sc.run_as_user = psc.run_as_user.map(|v| cri::Int64Value { value: v });
    sc.run_as_group = psc.run_as_group.map(|v| cri::Int64Value { value: v });
    sc.namespace_options = Some(namespace_options(pod, node, userns)?);
    if let Some(g) = psc.fs_group {
        sc.supplemental_groups.push(g);
    }
    sc.supplemental_groups
        .extend(psc.supplemental_groups.iter().flatten().copied());
    sc.supplemental_groups_policy =
        supplemental_groups_policy(psc.supplemental_groups_policy.as_deref())?;
    if let Some(se) = &psc.se_linux_options {
        sc.selinux_options = Some(cri::SeLinuxOption {
            user: se.user.clone().unwrap_or_default(),
            role: se.role.clone().unwrap_or_default(),
            r#type: se.type_.clone().unwrap_or_default(),
            level: se.level.clone().unwrap_or_default(),
        });
    }
    let sysctls = psc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();

    let linux = cri::LinuxPodSandboxConfig {
        cgroup_parent: pod_cgroup_parent(pod, node),
        security_context: Some(sc),
        sysctls,
        overhead: Some(overhead_resources(pod, node)?),
        resources: Some(sandbox_resources(pod, node)?),
    };

    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: pod_logs_directory(pod, node).to_string_lossy().into_owned(),
        dns_config: Some(pod_dns_config(pod, node)?),
        port_mappings: port_mappings(pod),
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(linux),
        windows: None,
    })
}
