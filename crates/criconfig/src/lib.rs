//! What a kubelet sends to a CRI runtime for a Pod.
//!
//! Given a Pod (already defaulted and validated) and the node's settings,
//! this crate computes the `RunPodSandbox` and `CreateContainer` configs the
//! way kubelet v1.36 does: labels, annotations and the container hash, QoS
//! class and cgroup parent, CPU and memory settings, the OOM score, DNS and
//! hostname, port mappings, security contexts and namespaces, environment
//! variables and mounts. It also lays out the pod's volumes on disk and
//! parses the kubelet's labels and annotations back from CRI objects.

#![warn(missing_docs)]

mod container;
mod dns;
mod env;
mod error;
mod expand;
mod gojson;
mod labels;
mod node;
mod quantity;
mod resources;
mod sandbox;
mod subpath;
mod userns;
mod volumes;

pub use container::{
    container_config, container_log_path, create_termination_message_file, ephemeral_as_container,
    ContainerContext, ContainerKind, ImageUser,
};
pub use dns::{pod_dns_config, pod_hostname_and_domain, ResolvConf};
pub use env::{container_env, NoObjects, ObjectSource};
pub use error::{ConfigError, VolumeError};
pub use expand::expand;
pub use labels::{
    container_annotations, container_hash, container_info, container_labels, pod_labels,
    sandbox_info, ContainerInfo, SandboxInfo, CONTAINER_HASH_ANNOTATION, CONTAINER_NAME_LABEL,
    CONTAINER_PORTS_ANNOTATION, CONTAINER_PRESTOP_ANNOTATION, CONTAINER_RESTART_COUNT_ANNOTATION,
    CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION, CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION,
    POD_DELETION_GRACE_PERIOD_ANNOTATION, POD_NAMESPACE_LABEL, POD_NAME_LABEL,
    POD_TERMINATION_GRACE_PERIOD_ANNOTATION, POD_UID_LABEL,
};
pub use node::{
    default_masked_paths, hugepage_sizes_from_sysfs, CgroupDriver, NodeSettings, BASE_MASKED_PATHS,
};
pub use quantity::{parse_quantity, ParsedQuantity};
pub use resources::{
    milli_cpu_to_quota, milli_cpu_to_shares, oom_score_adj, pod_cgroup_parent, qos_class, QosClass,
};
pub use sandbox::{pod_logs_directory, sandbox_config, sandbox_config_with_userns};
pub use subpath::prepare_sub_paths;
pub use userns::{UsernsAllocator, UsernsMapping};
pub use volumes::{
    etc_hosts_content, etc_hosts_path, prepare_volumes, remove_volumes, write_etc_hosts, PodVolume,
    PodVolumes, VolumeKind,
};
