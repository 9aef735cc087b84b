//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Coarse classification of an [`Error`], for callers that decide what to do
/// (retry, blame the image, blame the host) without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The layer is malformed or hostile. Retrying the same blob will fail the
    /// same way; the image (or the registry that served it) is at fault.
    InvalidLayer,
    /// Reading the layer's byte stream failed (network, blob store). Retrying
    /// may succeed.
    Read,
    /// The caller passed something unusable (bad chain id, non-empty target).
    InvalidArgument,
    /// Another process holds the snapshot store.
    Locked,
    /// A system call on the host filesystem failed (disk full, EPERM, ...).
    Io,
}

/// Errors returned by this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layer tar stream is malformed, hostile or unsupported.
    #[error("invalid layer: {}{reason}", Location { entry: entry.as_deref(), offset: *offset })]
    InvalidLayer {
        /// What is wrong, in words.
        reason: String,
        /// The entry's path as written in the archive (lossily decoded), if
        /// the problem belongs to one entry.
        entry: Option<String>,
        /// Offset in the uncompressed tar stream of the entry's header (or of
        /// the point where the stream broke).
        offset: Option<u64>,
    },

    /// The layer's source reader failed.
    #[error("reading layer stream: {source}")]
    Read {
        /// The error returned by the caller's reader.
        #[source]
        source: io::Error,
    },

    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. `"mkdir"`.
        op: &'static str,
        /// The path operated on (for entries: the target dir joined with the
        /// cleaned entry path).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A chain id / digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid chain id {id:?}: {reason}")]
    InvalidChainId {
        /// The rejected input.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The directory passed to the applier is not empty.
    #[error("apply target {} is not an empty directory", path.display())]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },

    /// Another `SnapshotStore` (in this or another process) holds the lock.
    #[error("snapshot store {} is locked by another user", path.display())]
    Locked {
        /// The store root.
        path: PathBuf,
    },
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidLayer { .. } => ErrorKind::InvalidLayer,
            Error::Read { .. } => ErrorKind::Read,
            Error::Io { .. } => ErrorKind::Io,
            Error::InvalidChainId { .. } | Error::TargetNotEmpty { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::Locked { .. } => ErrorKind::Locked,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidLayer {
            reason: reason.into(),
            entry: None,
            offset: None,
        }
    }
}

/// Renders `entry "a/b" at offset 1024: ` (or the parts that are known).
struct Location<'a> {
    entry: Option<&'a str>,
    offset: Option<u64>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.entry, self.offset) {
            (Some(e), Some(o)) => write!(f, "entry {e:?} at offset {o}: "),
            (Some(e), None) => write!(f, "entry {e:?}: "),
            (None, Some(o)) => write!(f, "at offset {o}: "),
            (None, None) => Ok(()),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_layer_message_names_entry_and_offset() {
        let e = Error::InvalidLayer {
            reason: "hard link target escapes the layer root".into(),
            entry: Some("a/b".into()),
            offset: Some(1024),
        };
        assert_eq!(
            e.to_string(),
            "invalid layer: entry \"a/b\" at offset 1024: hard link target escapes the layer root"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidLayer);
        assert_eq!(
            Error::invalid("truncated").to_string(),
            "invalid layer: truncated"
        );
    }

    #[test]
    fn io_message_names_op_and_path() {
        let e = Error::io("mkdir", "/x/y", io::Error::from_raw_os_error(28));
        assert!(e.to_string().starts_with("mkdir /x/y: "), "{e}");
        assert_eq!(e.kind(), ErrorKind::Io);
    }
}
