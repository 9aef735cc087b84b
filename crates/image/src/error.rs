//! Errors of the image service, each with the class the CRI edge maps to a gRPC code.

use std::path::PathBuf;

/// What kind of failure an [`Error`] is; the CRI server maps this to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (malformed reference...).
    InvalidArgument,
    /// The image, tag, manifest or blob does not exist.
    NotFound,
    /// Credentials were refused or missing.
    Unauthenticated,
    /// The operation cannot proceed in the current state (image in use...).
    FailedPrecondition,
    /// A registry could not be reached or timed out; trying again may help.
    Unavailable,
    /// The pull was cancelled or timed out waiting for progress.
    DeadlineExceeded,
    /// The registry sent something we refuse (bad digest, unsupported manifest, hostile layer).
    DataLoss,
    /// A local failure (disk, permissions) or a bug.
    Internal,
}

/// An image-service error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    #[error("{what} not found at {registry}: {detail}")]
    RemoteNotFound {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{registry} refused the credentials for {repository}: {detail}")]
    Unauthorized {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("cannot reach {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered HTTP {status}: {detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("unsupported {what}: {detail}")]
    Unsupported { what: String, detail: String },
    #[error("{what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid {what}: {detail}")]
    InvalidContent { what: String, detail: String },
    #[error("no data received for {timeout:?} while downloading {what}; the pull was abandoned (image.image_pull_progress_timeout)")]
    ProgressTimeout {
        what: String,
        timeout: std::time::Duration,
    },
    #[error("the pull was cancelled")]
    Cancelled,
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        source: berth_snapshot::Error,
    },
    #[error("invalid credentials: {0}")]
    Credentials(String),
    #[error("invalid image configuration: {0}")]
    Config(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] berth_store::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// An error of a pull shared by several callers.
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// The class of this error, for the gRPC edge.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference { .. } | Error::Credentials(_) | Error::Config(_) => {
                ErrorKind::InvalidArgument
            }
            Error::ImageNotFound(_) | Error::RemoteNotFound { .. } => ErrorKind::NotFound,
            Error::Unauthorized { .. } => ErrorKind::Unauthenticated,
            Error::Unreachable { .. } => ErrorKind::Unavailable,
            Error::Http { status, .. } if *status == 429 || *status >= 500 => {
                ErrorKind::Unavailable
            }
            Error::Http { .. } => ErrorKind::FailedPrecondition,
            Error::Unsupported { .. } => ErrorKind::FailedPrecondition,
            Error::DigestMismatch { .. } | Error::InvalidContent { .. } => ErrorKind::DataLoss,
            Error::Layer { source, .. }
                if source.kind() == berth_snapshot::ErrorKind::InvalidLayer =>
            {
                ErrorKind::DataLoss
            }
            Error::ProgressTimeout { .. } | Error::Cancelled => ErrorKind::DeadlineExceeded,
            Error::Layer { .. } | Error::Io { .. } | Error::Store(_) | Error::Internal(_) => {
                ErrorKind::Internal
            }
            Error::Shared(e) => e.kind(),
        }
    }
}

/// `map_err` helper for I/O errors on a path.
pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
