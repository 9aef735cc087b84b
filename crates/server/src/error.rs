//! The one place where Berth errors become gRPC status codes.

use berth_image::ErrorKind;
use tonic::{Code, Status};

/// An error a CRI handler returns; converted to a `Status` at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    #[error(transparent)]
    Runtime(#[from] berth_runtime::Error),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Streaming(#[from] berth_streaming::Error),
}

impl ServerError {
    pub fn code(&self) -> Code {
        match self {
            ServerError::InvalidArgument(_) => Code::InvalidArgument,
            ServerError::Internal(_) => Code::Internal,
            ServerError::Streaming(berth_streaming::Error::Cache(_)) => Code::ResourceExhausted,
            ServerError::Streaming(_) => Code::Unavailable,
            ServerError::Runtime(e) => match e.kind() {
                berth_runtime::Kind::InvalidArgument => Code::InvalidArgument,
                berth_runtime::Kind::NotFound => Code::NotFound,
                berth_runtime::Kind::AlreadyExists => Code::AlreadyExists,
                berth_runtime::Kind::FailedPrecondition => Code::FailedPrecondition,
                berth_runtime::Kind::DeadlineExceeded => Code::DeadlineExceeded,
                berth_runtime::Kind::Unavailable => Code::Unavailable,
                berth_runtime::Kind::Unimplemented => Code::Unimplemented,
                berth_runtime::Kind::Internal => Code::Internal,
            },
            ServerError::Image(e) => match e.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::Unauthenticated => Code::Unauthenticated,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
                ErrorKind::DataLoss => Code::DataLoss,
                ErrorKind::Internal => Code::Internal,
            },
        }
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
