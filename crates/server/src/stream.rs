//! The streaming server's [`Backend`]: exec, attach and port-forward of
//! [`berth_runtime::Runtime`] turned into the processes and connections
//! `berth-streaming` relays.
//!
//! A streaming exec's stdio comes from the pod's monitor as descriptors
//! (pipes, or a terminal's master) that are read and written here
//! directly; an attach session is the monitor's framed connection split
//! into stdin, stdout and stderr.

use std::os::fd::OwnedFd;

use berth_monitor::client::AttachSession;
use berth_monitor::protocol::{frame, FdRole};
use berth_monitor::pty::Master as Pty;
use berth_streaming::{AttachRequest, Backend, ExecRequest, Outcome, Process, Reader, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// The runtime, as the streaming server sees it.
#[derive(Clone)]
pub struct StreamBackend {
    pub rt: berth_runtime::Runtime,
}

fn reader(fd: OwnedFd) -> Result<Reader, String> {
    pipe::Receiver::from_owned_fd(fd)
        .map(|r| Box::pin(r) as Reader)
        .map_err(|e| format!("the process's output: {e}"))
}

fn writer(fd: OwnedFd) -> Result<Writer, String> {
    pipe::Sender::from_owned_fd(fd)
        .map(|w| Box::pin(w) as Writer)
        .map_err(|e| format!("the process's stdin: {e}"))
}

impl Backend for StreamBackend {
    async fn exec(&self, req: &ExecRequest) -> Result<Process, String> {
        let mut stream = self
            .rt
            .exec_stream(&req.container_id, req.cmd.clone(), req.tty, req.stdin)
            .await
            .map_err(|e| e.to_string())?;
        let mut process = Process {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            done: Box::pin(async { Outcome::Detached }),
        };
        if let Some(master) = stream.take(FdRole::Pty) {
            let pty = Pty::new(master).map_err(|e| format!("the terminal: {e}"))?;
            if req.stdin {
                process.stdin = Some(Box::pin(pty.clone()));
            }
            process.stdout = Some(Box::pin(pty.clone()));
            process.resize = Some(Box::new(move |w, h| pty.resize(w, h)));
        } else {
            process.stdin = stream.take(FdRole::Stdin).map(writer).transpose()?;
            process.stdout = stream.take(FdRole::Stdout).map(reader).transpose()?;
            process.stderr = stream.take(FdRole::Stderr).map(reader).transpose()?;
        }
        // The monitor's connection owns the process: dropped (the client
        // gone), the process is killed.
        process.done = Box::pin(async move {
            match stream.wait().await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        });
        Ok(process)
    }

    async fn attach(&self, req: &AttachRequest) -> Result<Process, String> {
        let session = self
            .rt
            .attach(&req.container_id, req.stdin, req.stdout, req.stderr)
            .await
            .map_err(|e| e.to_string())?;
        Ok(attach_process(session, req))
    }

    async fn port_forward(&self, pod_id: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
        self.rt
            .port_forward(pod_id, port)
            .await
            .map_err(|e| e.to_string())
    }
}

/// How much of an attach session's output is buffered per stream.
const ATTACH_BUFFER: usize = 64 * 1024;

/// Splits a monitor's attach session into a [`Process`].
fn attach_process(session: AttachSession, req: &AttachRequest) -> Process {
    let AttachSession {
        tty,
        mut reader,
        mut writer,
    } = session;
    let (stdout_w, stdout_r) = tokio::io::duplex(ATTACH_BUFFER);
    let (stderr_w, stderr_r) = tokio::io::duplex(ATTACH_BUFFER);
    let (exit_tx, exit_rx) = oneshot::channel();
    // Output frames to their streams, until the container's exit.
    let output = tokio::spawn(async move {
        let (mut out, mut err) = (stdout_w, stderr_w);
        let mut h = [0u8; frame::HEADER];
        let mut buf = Vec::new();
        loop {
            if reader.read_exact(&mut h).await.is_err() {
                return;
            }
            let Some((kind, len)) = frame::parse_header(&h) else {
                return;
            };
            buf.resize(len, 0);
            if reader.read_exact(&mut buf).await.is_err() {
                return;
            }
            match kind {
                frame::STDOUT => {
                    let _ = out.write_all(&buf).await;
                }
                frame::STDERR => {
                    let _ = err.write_all(&buf).await;
                }
                frame::EXIT if len == 4 => {
                    let code = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let _ = exit_tx.send(code);
                    return;
                }
                _ => {}
            }
        }
    });
    // Stdin and terminal sizes to the monitor.
    let (stdin_w, mut stdin_r) = tokio::io::duplex(ATTACH_BUFFER);
    let (size_tx, mut size_rx) = mpsc::unbounded_channel::<(u16, u16)>();
    let input = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        let (mut stdin_open, mut sizes_open) = (true, true);
        while stdin_open || sizes_open {
            tokio::select! {
                n = stdin_r.read(&mut buf), if stdin_open => {
                    let n = n.unwrap_or(0);
                    let sent = if n == 0 {
                        stdin_open = false;
                        writer.write_all(&frame::header(frame::CLOSE_STDIN, 0)).await
                    } else {
                        let h = frame::header(frame::STDIN, n);
                        match writer.write_all(&h).await {
                            Ok(()) => writer.write_all(&buf[..n]).await,
                            Err(e) => Err(e),
                        }
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                size = size_rx.recv(), if sizes_open => {
                    let Some((w, h)) = size else {
                        sizes_open = false;
                        continue;
                    };
                    let mut f = frame::header(frame::RESIZE, 4).to_vec();
                    f.extend_from_slice(&w.to_be_bytes());
                    f.extend_from_slice(&h.to_be_bytes());
                    if writer.write_all(&f).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Closing the connection would end the session: it lasts until the
        // container exits or the client goes (this task is then aborted).
        std::future::pending::<()>().await;
        drop(writer);
    });
    let done = async move {
        let outcome = match exit_rx.await {
            Ok(code) => Outcome::Exited(code),
            Err(_) => Outcome::Detached,
        };
        output.abort();
        input.abort();
        outcome
    };
    Process {
        stdin: req.stdin.then(|| Box::pin(stdin_w) as Writer),
        stdout: Some(Box::pin(stdout_r)),
        stderr: (!tty).then(|| Box::pin(stderr_r) as Reader),
        resize: tty.then(|| {
            Box::new(move |w, h| {
                let _ = size_tx.send((w, h));
            }) as Box<dyn Fn(u16, u16) + Send + Sync>
        }),
        done: Box::pin(done),
    }
}
