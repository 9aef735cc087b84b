//! The runtime service's errors; the server maps [`Kind`] to gRPC codes.

use std::path::PathBuf;

use berth_monitor::client::ClientError;
use berth_monitor::protocol::ErrorKind as MonitorKind;

/// How an error should be reported to the CRI client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    #[error(transparent)]
    Spec(#[from] berth_oci::SpecError),
    #[error(transparent)]
    Monitor(#[from] ClientError),
    #[error(transparent)]
    Cni(#[from] berth_network::CniError),
    #[error(transparent)]
    NetNs(#[from] berth_network::NetNsError),
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    #[error(transparent)]
    Snapshot(#[from] berth_snapshot::Error),
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::DeadlineExceeded(_) => Kind::DeadlineExceeded,
            Error::Unimplemented(_) => Kind::Unimplemented,
            Error::Image(e) => match e.kind() {
                berth_image::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                berth_image::ErrorKind::NotFound => Kind::NotFound,
                berth_image::ErrorKind::FailedPrecondition => Kind::FailedPrecondition,
                berth_image::ErrorKind::Unavailable => Kind::Unavailable,
                _ => Kind::Internal,
            },
            Error::Spec(e) => match e.kind() {
                berth_oci::ErrorKind::InvalidArgument => Kind::InvalidArgument,
                berth_oci::ErrorKind::NotFound => Kind::NotFound,
                berth_oci::ErrorKind::FailedPrecondition => Kind::FailedPrecondition,
            },
            Error::Monitor(ClientError::Unreachable { .. }) => Kind::Unavailable,
            Error::Monitor(ClientError::Timeout { .. }) => Kind::DeadlineExceeded,
            Error::Monitor(ClientError::Remote { kind, .. }) => match kind {
                MonitorKind::NotFound => Kind::NotFound,
                MonitorKind::AlreadyExists => Kind::AlreadyExists,
                MonitorKind::FailedPrecondition => Kind::FailedPrecondition,
                MonitorKind::InvalidArgument => Kind::InvalidArgument,
                MonitorKind::Internal => Kind::Internal,
            },
            Error::Cni(_) => Kind::Unavailable,
            _ => Kind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` helper for io errors on a path.
pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}
