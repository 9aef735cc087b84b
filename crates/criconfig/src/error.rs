//! Errors of config generation and of volume preparation.

use std::path::PathBuf;

/// Why a CRI config could not be computed for a pod or container.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required pod field is missing (the pod was not defaulted or validated).
    #[error("pod field {0} is missing; default and validate the pod first")]
    MissingField(&'static str),
    /// A resource quantity does not parse.
    #[error("invalid quantity {value:?} for {what}: {reason}")]
    InvalidQuantity {
        /// Where the quantity was found.
        what: String,
        /// The text as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The pod asks for something the kubelet refuses.
    #[error("{0}")]
    Invalid(String),
    /// A container mounts a volume that the pod's volumes do not provide.
    #[error("container {container:?} mounts volume {volume:?}, which the pod's prepared volumes do not include")]
    MissingVolume {
        /// The container.
        container: String,
        /// The volume name.
        volume: String,
    },
    /// A ConfigMap or Secret referenced by an environment variable is missing.
    #[error("{kind} {namespace}/{name} not found (referenced by container {container:?})")]
    MissingObject {
        /// "ConfigMap" or "Secret".
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The container that references it.
        container: String,
    },
    /// A key referenced by an environment variable is missing in its object.
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        /// "ConfigMap" or "Secret".
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The pod runs without host users but no user namespace mapping was given.
    #[error("pod {0} sets hostUsers: false; allocate a user namespace mapping (UsernsAllocator) and use sandbox_config_with_userns")]
    UsernsNotAllocated(String),
    /// runAsNonRoot is set but the image would run as root or as a non-numeric user.
    #[error("container {container:?}: {reason}")]
    RunAsNonRoot {
        /// The container.
        container: String,
        /// Why the check failed, as the kubelet words it.
        reason: String,
    },
    /// A label or annotation the kubelet writes is missing or malformed.
    #[error("label or annotation {key} is {problem}")]
    BadLabel {
        /// The key.
        key: &'static str,
        /// "missing" or a description of the bad value.
        problem: String,
    },
}

/// Why a pod's volumes could not be prepared or removed on disk.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error("{action} {path}: {source}")]
    Mount {
        /// What was being done.
        action: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// The volume type is not one this crate can provide.
    #[error("volume {name:?}: type {kind} is not supported (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)")]
    Unsupported {
        /// The volume's name.
        name: String,
        /// Its type.
        kind: String,
    },
    /// A hostPath does not have the type the pod asks for.
    #[error("hostPath volume {name:?}: {path} {problem}")]
    HostPathType {
        /// The volume's name.
        name: String,
        /// The host path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A referenced ConfigMap or Secret (or one of its keys) is missing and not optional.
    #[error("volume {name:?}: {problem}")]
    Source {
        /// The volume's name.
        name: String,
        /// What is missing.
        problem: String,
    },
    /// The volume's spec is invalid (bad item path, bad field reference, ...).
    #[error("volume {name:?}: {problem}")]
    Invalid {
        /// The volume's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The pod UID is unusable as a directory name.
    #[error("pod uid {0:?} is not a plain directory name")]
    BadUid(String),
}

impl VolumeError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        VolumeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
