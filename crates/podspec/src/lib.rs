//! What a pod and a container were asked to be, in Berth's own types.
//!
//! The CRI server converts the kubelet's protobuf messages into these types
//! at the edge (`berth-server`'s `convert` module), rejecting what cannot be
//! represented (an unknown enum number, a missing metadata); the spec
//! generator (`berth-oci`) and the runtime (`berth-runtime`) read only
//! these. They are also what the runtime's records keep on disk, as JSON:
//! the field names are the on-disk format. Rename nothing; a new field
//! gets `#[serde(default)]` (every struct here has it) so that older
//! records still read, and a change of meaning needs a new record version
//! and a migration (see `berth_runtime::records`).
//!
//! The shape follows the CRI's so that each rule the generator applies can
//! be checked against containerd's: numbers keep the CRI's meaning (0 is
//! "not set" for every limit), strings are empty when not given, and an
//! `Option` stands for a message the kubelet may leave out where that
//! differs from an empty one (no `resources` at all: no `oom_score_adj`).
#![deny(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels and annotations: sorted, so that records are stable.
pub type Map = BTreeMap<String, String>;

// ---------------------------------------------------------------------------
// Pods

/// A pod sandbox, as RunPodSandbox asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodConfig {
    pub metadata: PodMetadata,
    /// The pod's host name; empty: the pod's name (or the node's, with the
    /// host's network).
    pub hostname: String,
    /// The directory, on the host, of the pod's container logs; empty: no
    /// logs are written.
    pub log_directory: String,
    /// The pod's `/etc/resolv.conf`; `None`: the host's.
    pub dns_config: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: Map,
    pub annotations: Map,
    pub linux: Option<LinuxPodConfig>,
}

/// The kubelet's identity of a pod: name, namespace, uid and attempt are
/// unique together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

/// DNS settings written into the pod's `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A port of the pod published on the host (CNI's `portMappings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    /// 0: not published.
    pub host_port: i32,
    /// Empty: every address of the host.
    pub host_ip: String,
}

/// The protocol of a [`PortMapping`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name CNI uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The Linux side of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxPodConfig {
    /// The cgroup under which the pod's containers' cgroups are made
    /// (cgroupfs path); empty: Berth's own.
    pub cgroup_parent: String,
    pub security_context: Option<PodSecurityContext>,
    /// Namespaced sysctls set once in the pod's namespaces.
    pub sysctls: Map,
    /// What the pod costs beyond its containers (reported, not applied).
    pub overhead: Option<Resources>,
    /// The pod's resources as the kubelet sized them (reported, not applied).
    pub resources: Option<Resources>,
}

/// The security settings of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodSecurityContext {
    pub namespace_options: Option<NamespaceOptions>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    /// Whether the pod's containers may be privileged.
    pub privileged: bool,
    /// The seccomp profile of containers that name none.
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    /// The CRI's deprecated string form of `seccomp` (`runtime/default`,
    /// `unconfined`, `localhost/<path>`), as given; used when `seccomp` is
    /// `None`.
    pub seccomp_profile_path: String,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
}

/// Which namespaces the pod (or a container) gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    /// The container whose PID namespace mode `Target` joins.
    pub target_id: String,
    /// `None`: the host's user namespace.
    pub userns_options: Option<UserNamespace>,
}

/// Whose namespace of a kind is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// The pod's, shared by its containers.
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The host's.
    Node,
    /// Another container's (`target_id`; PID only).
    Target,
}

impl NamespaceMode {
    /// The name the CRI gives the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceMode::Pod => "POD",
            NamespaceMode::Container => "CONTAINER",
            NamespaceMode::Node => "NODE",
            NamespaceMode::Target => "TARGET",
        }
    }
}

/// A user namespace: mode `Node` (the host's) or `Pod` (one of the pod's
/// own, with these mappings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserNamespace {
    pub mode: NamespaceMode,
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// One line of a uid or gid map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

/// A seccomp or AppArmor profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityProfile {
    pub profile_type: ProfileType,
    /// The profile of type `Localhost`: a path on the host (seccomp) or a
    /// loaded profile's name (AppArmor).
    pub localhost_ref: String,
}

/// The kind of a [`SecurityProfile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileType {
    #[default]
    RuntimeDefault,
    Unconfined,
    Localhost,
}

impl ProfileType {
    /// The name the CRI gives the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileType::RuntimeDefault => "RuntimeDefault",
            ProfileType::Unconfined => "Unconfined",
            ProfileType::Localhost => "Localhost",
        }
    }
}

/// How the image's groups of the user combine with the requested ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplementalGroupsPolicy {
    /// The image's `/etc/group` memberships of the user are added.
    #[default]
    Merge,
    /// Only the requested groups.
    Strict,
}

// ---------------------------------------------------------------------------
// Containers

/// A container, as CreateContainer asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    pub image: ImageSpec,
    /// Replaces the image's entrypoint.
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    pub args: Vec<String>,
    /// Empty: the image's.
    pub working_dir: String,
    /// In order; a later one overrides an earlier one of the same key.
    pub envs: Vec<EnvVar>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    /// CDI device names (`vendor.com/class=name`), as given.
    pub cdi_devices: Vec<String>,
    pub labels: Map,
    pub annotations: Map,
    /// Relative to the pod's log directory.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub linux: Option<LinuxContainerConfig>,
    /// The signal StopContainer sends first, by its name (`SIGQUIT`);
    /// `None`: the image's, else SIGTERM.
    pub stop_signal: Option<String>,
}

/// The kubelet's identity of a container within its pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// An image as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageSpec {
    /// What the kubelet resolved (usually the image id).
    pub image: String,
    /// What the pod's spec said (`busybox:1.36`).
    pub user_specified_image: String,
}

/// An environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// A bind mount of a host path (a volume) into the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Read-only all the way down (`rro`); needs `readonly`.
    pub recursive_read_only: bool,
    pub selinux_relabel: bool,
    pub propagation: MountPropagation,
    /// ID-mapped mount: the pod's user namespace mappings.
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    /// An image volume (not supported: refused by the generator).
    pub image: Option<ImageSpec>,
    pub image_sub_path: String,
}

/// Mount propagation between the host and the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountPropagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

impl MountPropagation {
    /// The name the CRI gives the propagation.
    pub fn as_str(self) -> &'static str {
        match self {
            MountPropagation::Private => "PROPAGATION_PRIVATE",
            MountPropagation::HostToContainer => "PROPAGATION_HOST_TO_CONTAINER",
            MountPropagation::Bidirectional => "PROPAGATION_BIDIRECTIONAL",
        }
    }
}

/// A host device (or directory of devices) made available in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Device {
    /// Empty: the host path.
    pub container_path: String,
    pub host_path: String,
    /// `r`, `w`, `m`; empty: all three.
    pub permissions: String,
}

/// The Linux side of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinuxContainerConfig {
    pub resources: Option<Resources>,
    pub security_context: Option<ContainerSecurityContext>,
}

/// The security settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerSecurityContext {
    pub capabilities: Option<Capabilities>,
    pub privileged: bool,
    /// `None`: the pod's.
    pub namespace_options: Option<NamespaceOptions>,
    pub run_as_user: Option<i64>,
    /// Wins over `run_as_user`.
    pub run_as_username: String,
    pub run_as_group: Option<i64>,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// Empty: the defaults.
    pub masked_paths: Vec<String>,
    /// Empty: the defaults.
    pub readonly_paths: Vec<String>,
    /// `None`: `seccomp_profile_path`, else the pod's.
    pub seccomp: Option<SecurityProfile>,
    /// `None`: `apparmor_profile`.
    pub apparmor: Option<SecurityProfile>,
    /// The CRI's deprecated string form of `seccomp`, as given.
    pub seccomp_profile_path: String,
    /// The CRI's deprecated string form of `apparmor` (`runtime/default`,
    /// `unconfined`, `localhost/<name>`), as given.
    pub apparmor_profile: String,
}

/// Capabilities added to and dropped from the default set (names with or
/// without `CAP_`, or `ALL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    /// Kept, not applied (as containerd).
    pub add_ambient_capabilities: Vec<String>,
}

/// Cgroup limits of a container (or a pod's, as reported). Every number
/// keeps the CRI's meaning: 0 is "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    /// Memory + swap; -1: unlimited swap.
    pub memory_swap_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files and their values.
    pub unified: Map,
}

/// A hugetlb limit for one page size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugepageLimit {
    /// `2MB`, `1GB`...
    pub page_size: String,
    pub limit: u64,
}

impl Resources {
    /// Applies an update: the fields `update` sets (non-zero, non-empty)
    /// replace these; unified keys are added or replaced.
    pub fn merge(&mut self, update: &Resources) {
        let set = |into: &mut i64, v: i64| {
            if v != 0 {
                *into = v;
            }
        };
        set(&mut self.cpu_period, update.cpu_period);
        set(&mut self.cpu_quota, update.cpu_quota);
        set(&mut self.cpu_shares, update.cpu_shares);
        set(
            &mut self.memory_limit_in_bytes,
            update.memory_limit_in_bytes,
        );
        set(
            &mut self.memory_swap_limit_in_bytes,
            update.memory_swap_limit_in_bytes,
        );
        set(&mut self.oom_score_adj, update.oom_score_adj);
        if !update.cpuset_cpus.is_empty() {
            self.cpuset_cpus = update.cpuset_cpus.clone();
        }
        if !update.cpuset_mems.is_empty() {
            self.cpuset_mems = update.cpuset_mems.clone();
        }
        if !update.hugepage_limits.is_empty() {
            self.hugepage_limits = update.hugepage_limits.clone();
        }
        self.unified.extend(update.unified.clone());
    }
}

// ---------------------------------------------------------------------------
// Shortcuts the runtime and the generator share.

impl PodConfig {
    /// The pod's security context, if given.
    pub fn security_context(&self) -> Option<&PodSecurityContext> {
        self.linux.as_ref()?.security_context.as_ref()
    }

    /// The pod's namespace options (all `Pod` when not given).
    pub fn namespace_options(&self) -> NamespaceOptions {
        self.security_context()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    /// Whether the pod's containers may be privileged.
    pub fn privileged(&self) -> bool {
        self.security_context().is_some_and(|s| s.privileged)
    }
}

impl ContainerConfig {
    /// The container's security context, if given.
    pub fn security_context(&self) -> Option<&ContainerSecurityContext> {
        self.linux.as_ref()?.security_context.as_ref()
    }

    /// The container's resources, if given.
    pub fn resources(&self) -> Option<&Resources> {
        self.linux.as_ref()?.resources.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_unset_fields() {
        let mut a = Resources {
            cpu_shares: 512,
            memory_limit_in_bytes: 100,
            ..Default::default()
        };
        a.merge(&Resources {
            memory_limit_in_bytes: 200,
            unified: Map::from([("memory.high".into(), "1".into())]),
            ..Default::default()
        });
        assert_eq!(a.cpu_shares, 512);
        assert_eq!(a.memory_limit_in_bytes, 200);
        assert_eq!(a.unified.len(), 1);
    }

    #[test]
    fn the_on_disk_names() {
        // These names are the records' format: a change breaks old records.
        let c = ContainerConfig {
            metadata: ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            },
            mounts: vec![Mount {
                propagation: MountPropagation::HostToContainer,
                ..Default::default()
            }],
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["metadata"]["name"], "c");
        assert_eq!(v["mounts"][0]["propagation"], "host_to_container");
        assert_eq!(v["stop_signal"], "SIGQUIT");
        let p = PodConfig {
            port_mappings: vec![PortMapping {
                protocol: Protocol::Sctp,
                ..Default::default()
            }],
            linux: Some(LinuxPodConfig {
                security_context: Some(PodSecurityContext {
                    namespace_options: Some(NamespaceOptions {
                        pid: NamespaceMode::Container,
                        ..Default::default()
                    }),
                    seccomp: Some(SecurityProfile {
                        profile_type: ProfileType::Localhost,
                        localhost_ref: "/p.json".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["port_mappings"][0]["protocol"], "sctp");
        let sc = &v["linux"]["security_context"];
        assert_eq!(sc["namespace_options"]["pid"], "container");
        assert_eq!(sc["seccomp"]["profile_type"], "localhost");
        // Missing fields take their defaults; unknown ones are ignored.
        let back: PodConfig =
            serde_json::from_str(r#"{"metadata":{"name":"p"},"added_later":1}"#).unwrap();
        assert_eq!(back.metadata.name, "p");
        assert_eq!(back.linux, None);
    }
}
