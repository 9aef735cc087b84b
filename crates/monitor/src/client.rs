//! The daemon's side of the monitor socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::protocol::{paths, ErrorKind, ExecResult, Reply, Request, State};

/// Why a call to a monitor failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The monitor is not there (exited, killed) or stopped answering.
    #[error("the pod's monitor at {socket} is unreachable: {source}")]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The monitor refused or failed the request.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
    /// The monitor answered something unexpected.
    #[error("the pod's monitor answered nonsense: {0}")]
    Protocol(String),
    /// The monitor did not answer in time.
    #[error(
        "the pod's monitor did not answer {request} within {after:?} \
         (it stays wedged until the pod is stopped, which kills it)"
    )]
    Timeout {
        request: &'static str,
        after: std::time::Duration,
    },
}

/// A handle on one pod's monitor.
#[derive(Debug, Clone)]
pub struct Client {
    dir: PathBuf,
}

impl Client {
    pub fn new(pod_dir: impl Into<PathBuf>) -> Client {
        Client {
            dir: pod_dir.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends one request and waits for its answer, at most
    /// [`Request::deadline`].
    pub async fn call(&self, req: &Request) -> Result<Reply, ClientError> {
        match req.deadline() {
            Some(after) => tokio::time::timeout(after, self.call_unbounded(req))
                .await
                .map_err(|_| ClientError::Timeout {
                    request: req.name(),
                    after,
                })?,
            None => self.call_unbounded(req).await,
        }
    }

    async fn call_unbounded(&self, req: &Request) -> Result<Reply, ClientError> {
        let socket = paths::socket(&self.dir);
        let unreachable = |source| ClientError::Unreachable {
            socket: socket.clone(),
            source,
        };
        let dir = std::fs::File::open(&self.dir).map_err(unreachable)?;
        let mut conn = UnixStream::connect(paths::short(&dir, paths::SOCKET))
            .await
            .map_err(unreachable)?;
        drop(dir);
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        conn.write_all(&line).await.map_err(unreachable)?;
        let mut answer = String::new();
        BufReader::new(conn)
            .read_line(&mut answer)
            .await
            .map_err(unreachable)?;
        if answer.is_empty() {
            return Err(unreachable(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the monitor closed the connection without answering",
            )));
        }
        match serde_json::from_str(&answer) {
            Ok(Reply::Error { kind, message }) => Err(ClientError::Remote { kind, message }),
            Ok(reply) => Ok(reply),
            Err(e) => Err(ClientError::Protocol(format!("{e}: {answer:?}"))),
        }
    }

    /// A request answered by a container state.
    pub async fn state_call(&self, req: &Request) -> Result<State, ClientError> {
        match self.call(req).await? {
            Reply::State(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// A request answered by `Done`.
    pub async fn done_call(&self, req: &Request) -> Result<(), ClientError> {
        match self.call(req).await? {
            Reply::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    pub async fn exec(&self, req: &Request) -> Result<ExecResult, ClientError> {
        match self.call(req).await? {
            Reply::Exec(r) => Ok(r),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Whether the monitor answers.
    pub async fn ping(&self) -> bool {
        matches!(self.call(&Request::Ping).await, Ok(Reply::Pong { .. }))
    }

    /// The container's last recorded state (from the state file, which the
    /// monitor writes on every change), even when the monitor is gone.
    pub fn read_state(&self, id: &str) -> Option<State> {
        let data = std::fs::read(paths::state(&self.dir, id)).ok()?;
        serde_json::from_slice(&data).ok()
    }
}
