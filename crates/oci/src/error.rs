//! Why a spec could not be generated, and what kind of failure that is.

use std::io;
use std::path::PathBuf;

use crate::caps::CapsError;
use crate::user::UserError;

/// What kind of failure a [`SpecError`] is, for the gRPC status it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (gRPC `InvalidArgument`).
    InvalidArgument,
    /// Something the request names does not exist (gRPC `NotFound`).
    NotFound,
    /// The request is fine but the host or pod cannot honour it
    /// (gRPC `FailedPrecondition`).
    FailedPrecondition,
}

/// Why a container's OCI spec could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the container config nor the image gives a command.
    #[error(
        "no command specified: the container config has no command or args \
         and the image has no Entrypoint or Cmd"
    )]
    NoCommand,

    /// `run_as_group` without `run_as_user` or `run_as_username`.
    #[error(
        "run_as_group {0} is specified without run_as_user or run_as_username: \
         a group can only be set together with a user"
    )]
    GroupWithoutUser(i64),

    /// A field of the request has a value that cannot be used.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// The user or a group cannot be resolved in the image.
    #[error("resolving the container user: {0}")]
    User(#[from] UserError),

    /// A capability is unknown or cannot be granted.
    #[error("{0}")]
    Caps(#[from] CapsError),

    /// A privileged container in a pod that is not privileged.
    #[error(
        "no privileged container allowed in a non-privileged pod: set \
         privileged in the pod's security context too"
    )]
    PrivilegedNotAllowed,

    /// A host path the request names does not exist.
    #[error("{what} {path:?} does not exist on the host")]
    NotFound { what: &'static str, path: PathBuf },

    /// A bind mount's propagation needs a shared (or slave) source mount.
    #[error(
        "mount propagation {propagation} for {}: its host mount {} is not a {needed} mount \
         (make it one, e.g. with `mount --make-rshared {}`)",
        path.display(),
        mount_point.display(),
        mount_point.display()
    )]
    Propagation {
        propagation: &'static str,
        path: PathBuf,
        mount_point: PathBuf,
        needed: &'static str,
    },

    /// A seccomp profile file is not a valid profile.
    #[error("seccomp profile {path:?}: {reason}")]
    SeccompProfile { path: PathBuf, reason: String },

    /// Reading something on the host failed.
    #[error("{what} {path:?}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SpecError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpecError::NoCommand
            | SpecError::GroupWithoutUser(_)
            | SpecError::Invalid { .. }
            | SpecError::SeccompProfile { .. } => ErrorKind::InvalidArgument,
            SpecError::User(e) => match e {
                UserError::NoSuchUser(_) | UserError::NoSuchGroup(_) => ErrorKind::NotFound,
                UserError::Invalid(_) => ErrorKind::InvalidArgument,
                UserError::Read { .. } => ErrorKind::FailedPrecondition,
            },
            SpecError::Caps(e) => match e {
                CapsError::Unknown(_) => ErrorKind::InvalidArgument,
                CapsError::NotHeld(_) => ErrorKind::FailedPrecondition,
            },
            SpecError::NotFound { .. } => ErrorKind::NotFound,
            SpecError::PrivilegedNotAllowed
            | SpecError::Propagation { .. }
            | SpecError::Io { .. } => ErrorKind::FailedPrecondition,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error on `path`: `NotFound` when it does not exist.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::NotFound {
            SpecError::NotFound { what, path }
        } else {
            SpecError::Io { what, path, source }
        }
    }
}
