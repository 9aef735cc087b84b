//! The daemon's side of the monitor socket.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::protocol::{paths, ErrorKind, ExecResult, FdRole, Reply, Request, State};

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
        Self::bounded(req, self.call_unbounded(req)).await
    }

    fn unreachable(&self) -> impl Fn(std::io::Error) -> ClientError {
        let socket = paths::socket(&self.dir);
        move |source| ClientError::Unreachable {
            socket: socket.clone(),
            source,
        }
    }

    /// A new connection with `req` sent on it.
    async fn send(&self, req: &Request) -> Result<UnixStream, ClientError> {
        let unreachable = self.unreachable();
        let dir = std::fs::File::open(&self.dir).map_err(&unreachable)?;
        let mut conn = UnixStream::connect(paths::short(&dir, paths::SOCKET))
            .await
            .map_err(&unreachable)?;
        drop(dir);
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        conn.write_all(&line).await.map_err(&unreachable)?;
        Ok(conn)
    }

    /// Within the request's deadline.
    async fn bounded<T>(
        req: &Request,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match req.deadline() {
            Some(after) => {
                tokio::time::timeout(after, work)
                    .await
                    .map_err(|_| ClientError::Timeout {
                        request: req.name(),
                        after,
                    })?
            }
            None => work.await,
        }
    }

    async fn call_unbounded(&self, req: &Request) -> Result<Reply, ClientError> {
        let unreachable = self.unreachable();
        let conn = self.send(req).await?;
        let mut answer = String::new();
        BufReader::new(conn)
            .read_line(&mut answer)
            .await
            .map_err(&unreachable)?;
        match parse_reply(&answer) {
            Err(ClientError::Unreachable { source, .. }) => Err(unreachable(source)),
            other => other,
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

    /// Starts a streaming exec ([`Request::ExecStream`]): the process's
    /// stdio, and the connection that owns it.
    pub async fn exec_stream(&self, req: &Request) -> Result<ExecStream, ClientError> {
        Self::bounded(req, async {
            let conn = self.send(req).await?;
            let mut fds = Vec::new();
            let line = read_line_with_fds(&conn, &mut fds)
                .await
                .map_err(self.unreachable())?;
            match parse_reply(&line)? {
                Reply::Started { pid, fds: roles } if roles.len() == fds.len() => Ok(ExecStream {
                    pid,
                    stdio: roles.into_iter().zip(fds).collect(),
                    conn,
                }),
                other => Err(ClientError::Protocol(format!("{other:?}"))),
            }
        })
        .await
    }

    /// Opens an attach session ([`Request::Attach`]).
    pub async fn attach(&self, req: &Request) -> Result<AttachSession, ClientError> {
        Self::bounded(req, async {
            let conn = self.send(req).await?;
            // Byte by byte up to the line's end: frames follow it.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            let mut conn = conn;
            loop {
                match conn.read(&mut byte).await.map_err(self.unreachable())? {
                    0 => break,
                    _ if byte[0] == b'\n' => break,
                    _ => line.push(byte[0]),
                }
                if line.len() > 64 << 10 {
                    return Err(ClientError::Protocol("an endless answer".into()));
                }
            }
            match parse_reply(&String::from_utf8_lossy(&line))? {
                Reply::Attached { tty } => {
                    let (reader, writer) = conn.into_split();
                    Ok(AttachSession {
                        tty,
                        reader,
                        writer,
                    })
                }
                other => Err(ClientError::Protocol(format!("{other:?}"))),
            }
        })
        .await
    }

    /// Watches the containers' states ([`Request::Watch`]).
    pub async fn watch(&self) -> Result<Watch, ClientError> {
        Self::bounded(&Request::Watch, async {
            let conn = self.send(&Request::Watch).await?;
            let mut lines = BufReader::new(conn);
            let mut line = String::new();
            lines
                .read_line(&mut line)
                .await
                .map_err(self.unreachable())?;
            match parse_reply(&line)? {
                Reply::Watching { states } => Ok(Watch {
                    states,
                    lines,
                    socket: paths::socket(&self.dir),
                }),
                other => Err(ClientError::Protocol(format!("{other:?}"))),
            }
        })
        .await
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

/// One answer line, errors as [`ClientError::Remote`].
fn parse_reply(answer: &str) -> Result<Reply, ClientError> {
    if answer.is_empty() {
        return Err(ClientError::Unreachable {
            socket: PathBuf::new(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the monitor closed the connection without answering",
            ),
        });
    }
    match serde_json::from_str(answer) {
        Ok(Reply::Error { kind, message }) => Err(ClientError::Remote { kind, message }),
        Ok(reply) => Ok(reply),
        Err(e) => Err(ClientError::Protocol(format!("{e}: {answer:?}"))),
    }
}

/// Reads one line (and the descriptors sent with it) without reading past
/// it: the monitor sends nothing else until the process exits.
async fn read_line_with_fds(conn: &UnixStream, fds: &mut Vec<OwnedFd>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    while !line.ends_with(b"\n") {
        conn.readable().await?;
        match conn.try_io(Interest::READABLE, || {
            crate::fdpass::recv(conn.as_fd(), &mut buf, fds)
        }) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if line.len() > 64 << 10 {
            return Err(std::io::Error::other("an endless answer"));
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// A process started by [`Client::exec_stream`]. Dropping it before
/// [`ExecStream::wait`] has answered kills the process.
#[derive(Debug)]
pub struct ExecStream {
    pub pid: i32,
    /// Its stdin (write), stdout and stderr (read), or its terminal.
    pub stdio: Vec<(FdRole, OwnedFd)>,
    conn: UnixStream,
}

impl ExecStream {
    /// Takes the descriptor of `role`.
    pub fn take(&mut self, role: FdRole) -> Option<OwnedFd> {
        let at = self.stdio.iter().position(|(r, _)| *r == role)?;
        Some(self.stdio.swap_remove(at).1)
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait(&mut self) -> Result<i32, ClientError> {
        let mut line = String::new();
        BufReader::new(&mut self.conn)
            .read_line(&mut line)
            .await
            .map_err(|source| ClientError::Unreachable {
                socket: PathBuf::new(),
                source,
            })?;
        match parse_reply(&line)? {
            Reply::Exited { exit_code } => Ok(exit_code),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}

/// A session opened by [`Client::attach`]: [`crate::protocol::frame`]s
/// both ways. Dropping it ends the session.
#[derive(Debug)]
pub struct AttachSession {
    /// The container's stdio is a terminal.
    pub tty: bool,
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
}

/// A [`Request::Watch`] connection.
pub struct Watch {
    /// Every container's state when the watch began.
    pub states: Vec<State>,
    lines: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Watch {
    /// The next recorded change; `None` when the monitor closed the
    /// connection (it exited, or this watch fell behind).
    pub async fn next(&mut self) -> Result<Option<State>, ClientError> {
        let mut line = String::new();
        let n =
            self.lines
                .read_line(&mut line)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        if n == 0 || !line.ends_with('\n') {
            return Ok(None);
        }
        match parse_reply(&line)? {
            Reply::State(s) => Ok(Some(s)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }
}
