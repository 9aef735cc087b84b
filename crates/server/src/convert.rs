//! Between the CRI's wire types and Berth's own (`berth-podspec`, the
//! runtime's views): the only place both are known.
//!
//! Inbound, what the model cannot represent (an unknown enum number, a
//! config without metadata) is an [`Invalid`] error, answered as
//! INVALID_ARGUMENT. Outbound, the model's values become the CRI's again
//! for the status and list calls.

use std::collections::HashMap;

use berth_cri::runtime::v1 as cri;
use berth_podspec as model;
use berth_runtime::container::Status;

use crate::error::ServerError;

/// A wire value the model cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for ServerError {
    fn from(e: Invalid) -> ServerError {
        ServerError::InvalidArgument(e.0)
    }
}

type Result<T> = std::result::Result<T, Invalid>;

/// An enum field's value, or what is wrong with it.
fn known<E: TryFrom<i32>>(v: i32, what: &str) -> Result<E> {
    E::try_from(v).map_err(|_| Invalid(format!("unknown {what} {v}")))
}

fn map(m: HashMap<String, String>) -> model::Map {
    m.into_iter().collect()
}

fn cri_map(m: &model::Map) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

// ---------------------------------------------------------------------------
// Inbound: RunPodSandbox, CreateContainer, UpdateContainerResources

/// RunPodSandbox's config.
pub fn pod_config(c: cri::PodSandboxConfig) -> Result<model::PodConfig> {
    let m = c
        .metadata
        .ok_or_else(|| Invalid("pod sandbox config has no metadata".into()))?;
    Ok(model::PodConfig {
        metadata: model::PodMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        },
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns_config: c.dns_config.map(|d| model::DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(port_mapping)
            .collect::<Result<_>>()?,
        labels: map(c.labels),
        annotations: map(c.annotations),
        linux: c.linux.map(linux_pod).transpose()?,
    })
}

fn port_mapping(p: cri::PortMapping) -> Result<model::PortMapping> {
    Ok(model::PortMapping {
        protocol: match known(p.protocol, "port mapping protocol")? {
            cri::Protocol::Tcp => model::Protocol::Tcp,
            cri::Protocol::Udp => model::Protocol::Udp,
            cri::Protocol::Sctp => model::Protocol::Sctp,
        },
        container_port: p.container_port,
        host_port: p.host_port,
        host_ip: p.host_ip,
    })
}

fn linux_pod(l: cri::LinuxPodSandboxConfig) -> Result<model::LinuxPodConfig> {
    Ok(model::LinuxPodConfig {
        cgroup_parent: l.cgroup_parent,
        security_context: l
            .security_context
            .map(|s| {
                #[allow(deprecated)]
                let seccomp_profile_path = s.seccomp_profile_path;
                Ok::<_, Invalid>(model::PodSecurityContext {
                    namespace_options: s.namespace_options.map(namespace_options).transpose()?,
                    run_as_user: s.run_as_user.map(|v| v.value),
                    run_as_group: s.run_as_group.map(|v| v.value),
                    readonly_rootfs: s.readonly_rootfs,
                    supplemental_groups: s.supplemental_groups,
                    privileged: s.privileged,
                    seccomp: s.seccomp.map(security_profile).transpose()?,
                    apparmor: s.apparmor.map(security_profile).transpose()?,
                    seccomp_profile_path,
                    supplemental_groups_policy: groups_policy(s.supplemental_groups_policy)?,
                })
            })
            .transpose()?,
        sysctls: map(l.sysctls),
        overhead: l.overhead.map(resources),
        resources: l.resources.map(resources),
    })
}

fn namespace_mode(v: i32, what: &str) -> Result<model::NamespaceMode> {
    Ok(match known(v, what)? {
        cri::NamespaceMode::Pod => model::NamespaceMode::Pod,
        cri::NamespaceMode::Container => model::NamespaceMode::Container,
        cri::NamespaceMode::Node => model::NamespaceMode::Node,
        cri::NamespaceMode::Target => model::NamespaceMode::Target,
    })
}

fn namespace_options(n: cri::NamespaceOption) -> Result<model::NamespaceOptions> {
    Ok(model::NamespaceOptions {
        network: namespace_mode(n.network, "network namespace mode")?,
        pid: namespace_mode(n.pid, "PID namespace mode")?,
        ipc: namespace_mode(n.ipc, "IPC namespace mode")?,
        target_id: n.target_id,
        userns_options: n
            .userns_options
            .map(|u| {
                Ok::<_, Invalid>(model::UserNamespace {
                    mode: namespace_mode(u.mode, "user namespace mode")?,
                    uids: id_mappings(u.uids),
                    gids: id_mappings(u.gids),
                })
            })
            .transpose()?,
    })
}

fn id_mappings(m: Vec<cri::IdMapping>) -> Vec<model::IdMapping> {
    m.into_iter()
        .map(|m| model::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

fn security_profile(p: cri::SecurityProfile) -> Result<model::SecurityProfile> {
    use cri::security_profile::ProfileType as P;
    Ok(model::SecurityProfile {
        profile_type: match known(p.profile_type, "security profile type")? {
            P::RuntimeDefault => model::ProfileType::RuntimeDefault,
            P::Unconfined => model::ProfileType::Unconfined,
            P::Localhost => model::ProfileType::Localhost,
        },
        localhost_ref: p.localhost_ref,
    })
}

fn groups_policy(v: i32) -> Result<model::SupplementalGroupsPolicy> {
    Ok(match known(v, "supplemental_groups_policy")? {
        cri::SupplementalGroupsPolicy::Merge => model::SupplementalGroupsPolicy::Merge,
        cri::SupplementalGroupsPolicy::Strict => model::SupplementalGroupsPolicy::Strict,
    })
}

/// Container (or pod) resources; every value is representable.
pub fn resources(r: cri::LinuxContainerResources) -> model::Resources {
    model::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        hugepage_limits: r
            .hugepage_limits
            .into_iter()
            .map(|h| model::HugepageLimit {
                page_size: h.page_size,
                limit: h.limit,
            })
            .collect(),
        unified: map(r.unified),
    }
}

fn image_spec(i: cri::ImageSpec) -> model::ImageSpec {
    model::ImageSpec {
        image: i.image,
        user_specified_image: i.user_specified_image,
    }
}

/// CreateContainer's config.
pub fn container_config(c: cri::ContainerConfig) -> Result<model::ContainerConfig> {
    let m = c
        .metadata
        .ok_or_else(|| Invalid("container config has no metadata".into()))?;
    let stop_signal = match known(c.stop_signal, "stop signal")? {
        cri::Signal::RuntimeDefault => None,
        s => Some(s.as_str_name().to_string()),
    };
    Ok(model::ContainerConfig {
        metadata: model::ContainerMetadata {
            name: m.name,
            attempt: m.attempt,
        },
        image: c.image.map(image_spec).unwrap_or_default(),
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c
            .envs
            .into_iter()
            .map(|kv| model::EnvVar {
                key: kv.key,
                value: kv.value,
            })
            .collect(),
        mounts: c.mounts.into_iter().map(mount).collect::<Result<_>>()?,
        devices: c
            .devices
            .into_iter()
            .map(|d| model::Device {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        cdi_devices: c.cdi_devices.into_iter().map(|d| d.name).collect(),
        labels: map(c.labels),
        annotations: map(c.annotations),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: c.linux.map(linux_container).transpose()?,
        stop_signal,
    })
}

fn mount(m: cri::Mount) -> Result<model::Mount> {
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => model::MountPropagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => {
            model::MountPropagation::HostToContainer
        }
        Ok(cri::MountPropagation::PropagationBidirectional) => {
            model::MountPropagation::Bidirectional
        }
        Err(_) => {
            return Err(Invalid(format!(
                "mount: unknown propagation {} (hostPath={:?})",
                m.propagation, m.host_path
            )))
        }
    };
    Ok(model::Mount {
        container_path: m.container_path,
        host_path: m.host_path,
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        selinux_relabel: m.selinux_relabel,
        propagation,
        uid_mappings: id_mappings(m.uid_mappings),
        gid_mappings: id_mappings(m.gid_mappings),
        image: m.image.map(image_spec),
        image_sub_path: m.image_sub_path,
    })
}

fn linux_container(l: cri::LinuxContainerConfig) -> Result<model::LinuxContainerConfig> {
    Ok(model::LinuxContainerConfig {
        resources: l.resources.map(resources),
        security_context: l.security_context.map(container_security).transpose()?,
    })
}

fn container_security(
    s: cri::LinuxContainerSecurityContext,
) -> Result<model::ContainerSecurityContext> {
    #[allow(deprecated)]
    let (apparmor_profile, seccomp_profile_path) = (s.apparmor_profile, s.seccomp_profile_path);
    Ok(model::ContainerSecurityContext {
        capabilities: s.capabilities.map(|c| model::Capabilities {
            add_capabilities: c.add_capabilities,
            drop_capabilities: c.drop_capabilities,
            add_ambient_capabilities: c.add_ambient_capabilities,
        }),
        privileged: s.privileged,
        namespace_options: s.namespace_options.map(namespace_options).transpose()?,
        run_as_user: s.run_as_user.map(|v| v.value),
        run_as_username: s.run_as_username,
        run_as_group: s.run_as_group.map(|v| v.value),
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups,
        supplemental_groups_policy: groups_policy(s.supplemental_groups_policy)?,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp: s.seccomp.map(security_profile).transpose()?,
        apparmor: s.apparmor.map(security_profile).transpose()?,
        seccomp_profile_path,
        apparmor_profile,
    })
}

// ---------------------------------------------------------------------------
// Version 1 records: CRI configs in protobuf-JSON

/// Reads the CRI configs of version 1 records for the runtime's migration.
pub struct V1Records;

fn from_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> std::result::Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

impl berth_runtime::records::WireConfigs for V1Records {
    fn pod_config(&self, v1: serde_json::Value) -> std::result::Result<model::PodConfig, String> {
        pod_config(from_json(v1)?).map_err(|e| e.0)
    }

    fn container_config(
        &self,
        v1: serde_json::Value,
    ) -> std::result::Result<model::ContainerConfig, String> {
        container_config(from_json(v1)?).map_err(|e| e.0)
    }

    fn resources(&self, v1: serde_json::Value) -> std::result::Result<model::Resources, String> {
        Ok(resources(from_json(v1)?))
    }
}

// ---------------------------------------------------------------------------
// Outbound: status and list calls

pub fn cri_pod_metadata(m: &model::PodMetadata) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

pub fn cri_container_metadata(m: &model::ContainerMetadata) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: m.name.clone(),
        attempt: m.attempt,
    }
}

fn cri_namespace_mode(m: model::NamespaceMode) -> i32 {
    (match m {
        model::NamespaceMode::Pod => cri::NamespaceMode::Pod,
        model::NamespaceMode::Container => cri::NamespaceMode::Container,
        model::NamespaceMode::Node => cri::NamespaceMode::Node,
        model::NamespaceMode::Target => cri::NamespaceMode::Target,
    }) as i32
}

fn cri_id_mappings(m: &[model::IdMapping]) -> Vec<cri::IdMapping> {
    m.iter()
        .map(|m| cri::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

pub fn cri_namespace_options(n: &model::NamespaceOptions) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri_namespace_mode(n.network),
        pid: cri_namespace_mode(n.pid),
        ipc: cri_namespace_mode(n.ipc),
        target_id: n.target_id.clone(),
        userns_options: n.userns_options.as_ref().map(|u| cri::UserNamespace {
            mode: cri_namespace_mode(u.mode),
            uids: cri_id_mappings(&u.uids),
            gids: cri_id_mappings(&u.gids),
        }),
    }
}

fn cri_security_profile(p: &model::SecurityProfile) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType as P;
    cri::SecurityProfile {
        profile_type: (match p.profile_type {
            model::ProfileType::RuntimeDefault => P::RuntimeDefault,
            model::ProfileType::Unconfined => P::Unconfined,
            model::ProfileType::Localhost => P::Localhost,
        }) as i32,
        localhost_ref: p.localhost_ref.clone(),
    }
}

fn cri_groups_policy(p: model::SupplementalGroupsPolicy) -> i32 {
    (match p {
        model::SupplementalGroupsPolicy::Merge => cri::SupplementalGroupsPolicy::Merge,
        model::SupplementalGroupsPolicy::Strict => cri::SupplementalGroupsPolicy::Strict,
    }) as i32
}

pub fn cri_resources(r: &model::Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: cri_map(&r.unified),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

fn cri_image_spec(i: &model::ImageSpec) -> cri::ImageSpec {
    cri::ImageSpec {
        image: i.image.clone(),
        user_specified_image: i.user_specified_image.clone(),
        ..Default::default()
    }
}

pub fn cri_mount(m: &model::Mount) -> cri::Mount {
    cri::Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        readonly: m.readonly,
        selinux_relabel: m.selinux_relabel,
        propagation: (match m.propagation {
            model::MountPropagation::Private => cri::MountPropagation::PropagationPrivate,
            model::MountPropagation::HostToContainer => {
                cri::MountPropagation::PropagationHostToContainer
            }
            model::MountPropagation::Bidirectional => {
                cri::MountPropagation::PropagationBidirectional
            }
        }) as i32,
        uid_mappings: cri_id_mappings(&m.uid_mappings),
        gid_mappings: cri_id_mappings(&m.gid_mappings),
        recursive_read_only: m.recursive_read_only,
        image: m.image.as_ref().map(cri_image_spec),
        image_sub_path: m.image_sub_path.clone(),
    }
}

/// The pod's config as the CRI spells it (verbose PodSandboxStatus).
pub fn cri_pod_config(c: &model::PodConfig) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri_pod_metadata(&c.metadata)),
        hostname: c.hostname.clone(),
        log_directory: c.log_directory.clone(),
        dns_config: c.dns_config.as_ref().map(|d| cri::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        port_mappings: c
            .port_mappings
            .iter()
            .map(|p| cri::PortMapping {
                protocol: (match p.protocol {
                    model::Protocol::Tcp => cri::Protocol::Tcp,
                    model::Protocol::Udp => cri::Protocol::Udp,
                    model::Protocol::Sctp => cri::Protocol::Sctp,
                }) as i32,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        labels: cri_map(&c.labels),
        annotations: cri_map(&c.annotations),
        linux: c.linux.as_ref().map(|l| cri::LinuxPodSandboxConfig {
            cgroup_parent: l.cgroup_parent.clone(),
            security_context: l.security_context.as_ref().map(|s| {
                #[allow(deprecated)]
                cri::LinuxSandboxSecurityContext {
                    namespace_options: s.namespace_options.as_ref().map(cri_namespace_options),
                    run_as_user: s.run_as_user.map(|value| cri::Int64Value { value }),
                    run_as_group: s.run_as_group.map(|value| cri::Int64Value { value }),
                    readonly_rootfs: s.readonly_rootfs,
                    supplemental_groups: s.supplemental_groups.clone(),
                    privileged: s.privileged,
                    seccomp: s.seccomp.as_ref().map(cri_security_profile),
                    apparmor: s.apparmor.as_ref().map(cri_security_profile),
                    seccomp_profile_path: s.seccomp_profile_path.clone(),
                    supplemental_groups_policy: cri_groups_policy(s.supplemental_groups_policy),
                    ..Default::default()
                }
            }),
            sysctls: cri_map(&l.sysctls),
            overhead: l.overhead.as_ref().map(cri_resources),
            resources: l.resources.as_ref().map(cri_resources),
        }),
        windows: None,
    }
}

/// The container's config as the CRI spells it (verbose ContainerStatus).
pub fn cri_container_config(c: &model::ContainerConfig) -> cri::ContainerConfig {
    let stop_signal = c
        .stop_signal
        .as_deref()
        .and_then(cri::Signal::from_str_name)
        .unwrap_or(cri::Signal::RuntimeDefault);
    cri::ContainerConfig {
        metadata: Some(cri_container_metadata(&c.metadata)),
        image: Some(cri_image_spec(&c.image)),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .envs
            .iter()
            .map(|e| cri::KeyValue {
                key: e.key.clone(),
                value: e.value.clone(),
            })
            .collect(),
        mounts: c.mounts.iter().map(cri_mount).collect(),
        devices: c
            .devices
            .iter()
            .map(|d| cri::Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        labels: cri_map(&c.labels),
        annotations: cri_map(&c.annotations),
        log_path: c.log_path.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: c.linux.as_ref().map(|l| cri::LinuxContainerConfig {
            resources: l.resources.as_ref().map(cri_resources),
            security_context: l.security_context.as_ref().map(|s| {
                #[allow(deprecated)]
                cri::LinuxContainerSecurityContext {
                    capabilities: s.capabilities.as_ref().map(|c| cri::Capability {
                        add_capabilities: c.add_capabilities.clone(),
                        drop_capabilities: c.drop_capabilities.clone(),
                        add_ambient_capabilities: c.add_ambient_capabilities.clone(),
                    }),
                    privileged: s.privileged,
                    namespace_options: s.namespace_options.as_ref().map(cri_namespace_options),
                    run_as_user: s.run_as_user.map(|value| cri::Int64Value { value }),
                    run_as_group: s.run_as_group.map(|value| cri::Int64Value { value }),
                    run_as_username: s.run_as_username.clone(),
                    readonly_rootfs: s.readonly_rootfs,
                    supplemental_groups: s.supplemental_groups.clone(),
                    supplemental_groups_policy: cri_groups_policy(s.supplemental_groups_policy),
                    no_new_privs: s.no_new_privs,
                    masked_paths: s.masked_paths.clone(),
                    readonly_paths: s.readonly_paths.clone(),
                    seccomp: s.seccomp.as_ref().map(cri_security_profile),
                    apparmor: s.apparmor.as_ref().map(cri_security_profile),
                    apparmor_profile: s.apparmor_profile.clone(),
                    seccomp_profile_path: s.seccomp_profile_path.clone(),
                    ..Default::default()
                }
            }),
        }),
        windows: None,
        cdi_devices: c
            .cdi_devices
            .iter()
            .map(|name| cri::CdiDevice { name: name.clone() })
            .collect(),
        stop_signal: stop_signal as i32,
    }
}

// ---------------------------------------------------------------------------
// Status and list answers

fn pod_state(ready: bool) -> cri::PodSandboxState {
    if ready {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

/// ListPodSandbox's filter; `None` when it can match no pod (an unknown state).
pub fn pod_filter(f: Option<cri::PodSandboxFilter>) -> Option<berth_runtime::PodFilter> {
    let Some(f) = f else {
        return Some(Default::default());
    };
    let ready = match f.state {
        None => None,
        Some(s) => match cri::PodSandboxState::try_from(s.state).ok()? {
            cri::PodSandboxState::SandboxReady => Some(true),
            cri::PodSandboxState::SandboxNotready => Some(false),
        },
    };
    Some(berth_runtime::PodFilter {
        id: f.id,
        ready,
        labels: map(f.label_selector),
    })
}

pub fn pod_sandbox(p: &berth_runtime::PodView) -> cri::PodSandbox {
    let r = &p.record;
    cri::PodSandbox {
        id: r.id.clone(),
        metadata: Some(cri_pod_metadata(r.metadata())),
        state: pod_state(p.ready) as i32,
        created_at: r.created_at,
        labels: cri_map(&r.config.labels),
        annotations: cri_map(&r.config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

pub fn pod_status(p: &berth_runtime::PodView) -> cri::PodSandboxStatus {
    let r = &p.record;
    let mut ips = r.ips.iter();
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: Some(cri_pod_metadata(r.metadata())),
        state: pod_state(p.ready) as i32,
        created_at: r.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri_namespace_options(&r.namespaces())),
            }),
        }),
        labels: cri_map(&r.config.labels),
        annotations: cri_map(&r.config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

fn container_state(s: Status) -> cri::ContainerState {
    match s {
        Status::Created => cri::ContainerState::ContainerCreated,
        Status::Running => cri::ContainerState::ContainerRunning,
        Status::Exited => cri::ContainerState::ContainerExited,
    }
}

/// The filter of ListContainers and ListContainerStats; `None` when it can
/// match no container (an unknown state).
pub fn container_filter(
    id: String,
    pod_id: String,
    state: Option<i32>,
    labels: HashMap<String, String>,
) -> Option<berth_runtime::ContainerFilter> {
    let status = match state {
        None => None,
        Some(s) => Some(match cri::ContainerState::try_from(s).ok()? {
            cri::ContainerState::ContainerCreated => Status::Created,
            cri::ContainerState::ContainerRunning => Status::Running,
            cri::ContainerState::ContainerExited => Status::Exited,
            // Berth reports no container in the unknown state.
            cri::ContainerState::ContainerUnknown => return None,
        }),
    };
    Some(berth_runtime::ContainerFilter {
        id,
        pod_id,
        status,
        labels: map(labels),
    })
}

/// The image a container reports: its name, and what the pod spec said.
fn reported_image(r: &berth_runtime::ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: r.image_name.clone(),
        user_specified_image: r.config.image.user_specified_image.clone(),
        ..Default::default()
    }
}

pub fn container(c: &berth_runtime::ContainerView) -> cri::Container {
    let r = &c.record;
    cri::Container {
        id: r.id.clone(),
        pod_sandbox_id: r.sandbox_id.clone(),
        metadata: Some(cri_container_metadata(r.metadata())),
        image: Some(reported_image(r)),
        image_ref: r.image_ref.clone(),
        state: container_state(c.state.status) as i32,
        created_at: r.created_at,
        labels: cri_map(&r.config.labels),
        annotations: cri_map(&r.config.annotations),
        image_id: r.image_id.clone(),
    }
}

pub fn container_status(c: &berth_runtime::ContainerView) -> cri::ContainerStatus {
    let (r, s) = (&c.record, &c.state);
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(cri_container_metadata(r.metadata())),
        state: container_state(s.status) as i32,
        created_at: r.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        image: Some(reported_image(r)),
        image_ref: r.image_ref.clone(),
        reason: s.reason.clone(),
        message: s.message.clone(),
        labels: cri_map(&r.config.labels),
        annotations: cri_map(&r.config.annotations),
        mounts: r.config.mounts.iter().map(cri_mount).collect(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: r.resources.as_ref().map(|r| cri::ContainerResources {
            linux: Some(cri_resources(r)),
            ..Default::default()
        }),
        image_id: r.image_id.clone(),
        user: Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: r.user.uid as i64,
                gid: r.user.gid as i64,
                supplemental_groups: r.user.groups.iter().map(|g| *g as i64).collect(),
            }),
        }),
        stop_signal: cri::Signal::from_str_name(c.stop_signal.as_str())
            .unwrap_or(cri::Signal::Sigterm) as i32,
    }
}

fn cri_cpu(c: &berth_runtime::stats::CpuUsage, ts: i64) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: uint64(c.usage_core_nano_seconds),
        usage_nano_cores: c.usage_nano_cores.and_then(uint64),
        psi: c.psi.as_ref().map(cri_psi),
    }
}

fn cri_psi(p: &berth_runtime::stats::Psi) -> cri::PsiStats {
    let data = |d: &berth_runtime::stats::PsiData| cri::PsiData {
        total: d.total_ns,
        avg10: d.avg10,
        avg60: d.avg60,
        avg300: d.avg300,
    };
    cri::PsiStats {
        full: p.full.as_ref().map(data),
        some: Some(data(&p.some)),
    }
}

fn cri_memory(m: &berth_runtime::stats::MemoryUsage, ts: i64) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: uint64(m.working_set_bytes),
        available_bytes: m.available_bytes.and_then(uint64),
        usage_bytes: uint64(m.usage_bytes),
        rss_bytes: uint64(m.rss_bytes),
        page_faults: uint64(m.page_faults),
        major_page_faults: uint64(m.major_page_faults),
        psi: m.psi.as_ref().map(cri_psi),
    }
}

fn uint64(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

pub fn container_stats(s: &berth_runtime::ContainerStats) -> cri::ContainerStats {
    let r = &s.record;
    let ts = s.timestamp;
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: r.id.clone(),
            metadata: Some(cri_container_metadata(r.metadata())),
            labels: cri_map(&r.config.labels),
            annotations: cri_map(&r.config.annotations),
        }),
        cpu: s.cpu.map(|c| cri_cpu(&c, ts)),
        memory: s.memory.map(|m| cri_memory(&m, ts)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: s.writable_layer.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: s.writable_layer.mountpoint.clone(),
            }),
            used_bytes: s.writable_layer.used.and_then(|(b, _)| uint64(b)),
            inodes_used: s.writable_layer.used.and_then(|(_, i)| uint64(i)),
        }),
        swap: s.swap.map(|w| cri::SwapUsage {
            timestamp: ts,
            swap_available_bytes: w.available_bytes.and_then(uint64),
            swap_usage_bytes: uint64(w.usage_bytes),
        }),
        io: s.io_psi.as_ref().map(|p| cri::IoUsage {
            timestamp: ts,
            psi: Some(cri_psi(p)),
        }),
    }
}

/// PodSandboxStats of Berth's figures. The default interface is the one
/// the CNI result names first, else `eth0`, else the first.
pub fn pod_stats(s: &berth_runtime::PodStats) -> cri::PodSandboxStats {
    let r = &s.record;
    let ts = s.timestamp;
    let iface = |i: &berth_runtime::InterfaceStats| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: uint64(i.rx_bytes),
        rx_errors: uint64(i.rx_errors),
        tx_bytes: uint64(i.tx_bytes),
        tx_errors: uint64(i.tx_errors),
    };
    let default = s
        .interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .or(s.interfaces.first());
    let network = (!s.interfaces.is_empty()).then(|| cri::NetworkUsage {
        timestamp: ts,
        default_interface: default.map(iface),
        interfaces: s.interfaces.iter().map(iface).collect(),
    });
    let containers: Vec<cri::ContainerStats> = s.containers.iter().map(container_stats).collect();
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: r.id.clone(),
            metadata: Some(cri_pod_metadata(r.metadata())),
            labels: cri_map(&r.config.labels),
            annotations: cri_map(&r.config.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: s.cpu.map(|c| cri_cpu(&c, ts)),
            memory: s.memory.map(|m| cri_memory(&m, ts)),
            network,
            process: s.processes.map(|n| cri::ProcessUsage {
                timestamp: ts,
                process_count: uint64(n),
            }),
            containers,
            io: s.io_psi.as_ref().map(|p| cri::IoUsage {
                timestamp: ts,
                psi: Some(cri_psi(p)),
            }),
        }),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_security(sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..container()
        }
    }

    fn error(r: Result<model::ContainerConfig>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn unknown_enum_numbers_are_invalid() {
        let mount = cri::Mount {
            host_path: "/h".into(),
            propagation: 7,
            ..Default::default()
        };
        let e = error(container_config(cri::ContainerConfig {
            mounts: vec![mount],
            ..container()
        }));
        assert!(e.contains("unknown propagation 7"), "{e}");

        let e = error(container_config(with_security(
            cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: 9,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )));
        assert!(e.contains("unknown security profile type 9"), "{e}");

        let e = error(container_config(with_security(
            cri::LinuxContainerSecurityContext {
                supplemental_groups_policy: 7,
                ..Default::default()
            },
        )));
        assert!(e.contains("supplemental_groups_policy"), "{e}");

        let e = error(container_config(with_security(
            cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: 9,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )));
        assert!(e.contains("unknown PID namespace mode 9"), "{e}");

        let e = error(container_config(cri::ContainerConfig {
            stop_signal: 999,
            ..container()
        }));
        assert!(e.contains("unknown stop signal 999"), "{e}");

        let pod = |p: cri::PortMapping| cri::PodSandboxConfig {
            metadata: Some(Default::default()),
            port_mappings: vec![p],
            ..Default::default()
        };
        let e = pod_config(pod(cri::PortMapping {
            protocol: 5,
            ..Default::default()
        }))
        .unwrap_err();
        assert!(e.0.contains("unknown port mapping protocol 5"), "{e}");
        let e = ServerError::from(e);
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn metadata_is_required() {
        let e = error(container_config(cri::ContainerConfig::default()));
        assert_eq!(e, "container config has no metadata");
        let e = pod_config(cri::PodSandboxConfig::default()).unwrap_err();
        assert_eq!(e.0, "pod sandbox config has no metadata");
    }

    #[test]
    fn configs_go_back_to_the_wire_unchanged() {
        let c = cri::ContainerConfig {
            stop_signal: cri::Signal::Sigusr2 as i32,
            cdi_devices: vec![cri::CdiDevice {
                name: "vendor.com/gpu=0".into(),
            }],
            ..with_security(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 0 }),
                apparmor: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "p".into(),
                }),
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Target as i32,
                    target_id: "t".into(),
                    ..Default::default()
                }),
                supplemental_groups_policy: cri::SupplementalGroupsPolicy::Strict as i32,
                ..Default::default()
            })
        };
        let m = container_config(c.clone()).unwrap();
        assert_eq!(m.stop_signal.as_deref(), Some("SIGUSR2"));
        assert_eq!(m.security_context().unwrap().run_as_user, Some(0));
        assert_eq!(cri_container_config(&m), c);
        let no_signal = container_config(container()).unwrap();
        assert_eq!(no_signal.stop_signal, None);
    }
}
