//! The streaming requests: a streaming exec, whose stdio goes to the daemon
//! as descriptors (the monitor only starts and reaps the process), and
//! attach sessions, which relay a container's stdio in frames.
//!
//! A connection owns what it started: a streaming exec whose connection
//! closes before the process exits is SIGKILLed; an attach session ends
//! with its connection, and with it a `stdin_once` container's stdin.

use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::error::RecvError;

use super::*;
use crate::protocol::{frame, FdRole};

/// Output chunks (up to 8 KiB each) an attach session may fall behind by;
/// beyond that it loses output (logged), never the container's log.
pub(super) const ATTACH_BACKLOG: usize = 256;

pub(super) type Requests = BufReader<tokio::io::Take<OwnedReadHalf>>;

async fn answer(wr: &mut OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut out = serde_json::to_vec(reply).unwrap_or_default();
    out.push(b'\n');
    wr.write_all(&out).await
}

/// Writes `data` with `fds` attached to its first byte.
async fn send_with_fds(wr: &OwnedWriteHalf, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let sock: &UnixStream = wr.as_ref();
    let mut sent = 0;
    while sent < data.len() {
        sock.writable().await?;
        let with = if sent == 0 { fds } else { &[] };
        match sock.try_io(Interest::WRITABLE, || {
            crate::fdpass::send(sock.as_fd(), &data[sent..], with)
        }) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// The process's stdio and the ends the daemon gets.
fn exec_stdio(stdin: bool, tty: bool) -> io::Result<(Stdio3, Vec<(FdRole, OwnedFd)>)> {
    if tty {
        // The terminal is all three; it comes from the runner.
        let stdio = Stdio3 {
            stdin: dev_null()?,
            stdout: dev_null()?,
            stderr: dev_null()?,
        };
        return Ok((stdio, Vec::new()));
    }
    let mut theirs = Vec::new();
    let stdin_fd = if stdin {
        let (r, w) = pipe_pair()?;
        theirs.push((FdRole::Stdin, w));
        r
    } else {
        dev_null()?
    };
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    theirs.push((FdRole::Stdout, out_r));
    theirs.push((FdRole::Stderr, err_r));
    let stdio = Stdio3 {
        stdin: stdin_fd,
        stdout: out_w,
        stderr: err_w,
    };
    Ok((stdio, theirs))
}

pub(super) async fn exec(
    mon: &Shared,
    id: &str,
    process: serde_json::Value,
    stdin: bool,
    mut rd: Requests,
    mut wr: OwnedWriteHalf,
) {
    let tty = process
        .get("terminal")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let files = match ExecFiles::prepare(mon, id, &process) {
        Ok(f) => f,
        Err(r) => {
            let _ = answer(&mut wr, &r).await;
            return;
        }
    };
    let (stdio, mut theirs) = match exec_stdio(stdin, tty) {
        Ok(s) => s,
        Err(e) => {
            let r = fail(ErrorKind::Internal, format!("creating pipes: {e}"));
            let _ = answer(&mut wr, &r).await;
            return;
        }
    };
    let (pid, master) = match files.run(mon, id, stdio, tty) {
        Ok(started) => started,
        Err(r) => {
            let _ = answer(&mut wr, &r).await;
            return;
        }
    };
    if let Some(m) = master {
        theirs.push((FdRole::Pty, m));
    }
    let (tx, rx) = oneshot::channel();
    mon.borrow_mut().owners.insert(pid, Owner::Exec(tx));
    // The process may have exited before it was registered.
    reap(mon);
    let reply = Reply::Started {
        pid,
        fds: theirs.iter().map(|(role, _)| *role).collect(),
    };
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let fds: Vec<BorrowedFd<'_>> = theirs.iter().map(|(_, fd)| fd.as_fd()).collect();
    let sent = send_with_fds(&wr, &line, &fds).await;
    drop(fds);
    drop(theirs);
    tokio::pin!(rx);
    if sent.is_ok() {
        let mut byte = [0u8; 1];
        tokio::select! {
            code = &mut rx => {
                let exit_code = code.unwrap_or(-1);
                let _ = answer(&mut wr, &Reply::Exited { exit_code }).await;
                return;
            }
            // Nothing more is expected: data or the end both mean the
            // daemon is done with the stream.
            _ = rd.read(&mut byte) => {}
        }
    }
    signal_pid(pid, Signal::SIGKILL);
    let _ = tokio::time::timeout(KILL_WAIT, rx).await;
}

/// Reads one frame from the daemon: `None` at the end or on a bad frame.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> Option<u8> {
    let mut h = [0u8; frame::HEADER];
    rd.read_exact(&mut h).await.ok()?;
    let (kind, len) = frame::parse_header(&h)?;
    buf.resize(len, 0);
    rd.read_exact(buf).await.ok()?;
    Some(kind)
}

async fn write_frame<W: AsyncWrite + Unpin>(wr: &mut W, kind: u8, data: &[u8]) -> io::Result<()> {
    wr.write_all(&frame::header(kind, data.len())).await?;
    wr.write_all(data).await
}

/// Writes all of `data` into the container's stdin.
async fn feed(stdin: &Input, mut data: &[u8]) -> io::Result<()> {
    let stdin = match stdin {
        Input::Pipe(p) => p,
        Input::Terminal(m) => return m.clone().write_all(data).await,
    };
    while !data.is_empty() {
        stdin.writable().await?;
        match stdin.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Forgets a `stdin_once` container's stdin: once every session holding
/// it has let go, the container reads its end.
fn close_stdin_once(mon: &Shared, id: &str) {
    if let Some(c) = mon.borrow_mut().containers.get_mut(id) {
        if c.stdin_once {
            c.stdin = None;
        }
    }
}

/// The daemon's side of a session: stdin, its close, resizes. Returns at
/// the end of the connection.
async fn relay_input(
    mon: Shared,
    id: String,
    mut stdin: Option<Input>,
    pty: Option<Master>,
    mut rd: Requests,
) {
    let mut buf = Vec::new();
    while let Some(kind) = read_frame(&mut rd, &mut buf).await {
        match kind {
            frame::STDIN => {
                if let Some(tx) = &stdin {
                    if feed(tx, &buf).await.is_err() {
                        stdin = None;
                    }
                }
            }
            frame::CLOSE_STDIN if stdin.take().is_some() => close_stdin_once(&mon, &id),
            frame::RESIZE if buf.len() == 4 => {
                if let Some(m) = &pty {
                    let w = u16::from_be_bytes([buf[0], buf[1]]);
                    let h = u16::from_be_bytes([buf[2], buf[3]]);
                    m.resize(w, h);
                }
            }
            _ => {}
        }
    }
    if stdin.take().is_some() {
        close_stdin_once(&mon, &id);
    }
}

pub(super) async fn attach(
    mon: &Shared,
    id: &str,
    [want_in, want_out, want_err]: [bool; 3],
    mut rd: Requests,
    mut wr: OwnedWriteHalf,
) {
    let found = match mon.borrow().containers.get(id) {
        Some(c) if c.state.status == Status::Running && !*c.exited.borrow() => Ok((
            c.output.subscribe(),
            c.exited.subscribe(),
            c.stdin.clone().filter(|_| want_in),
            c.pty.clone(),
        )),
        Some(c) => Err(fail(
            ErrorKind::FailedPrecondition,
            format!("container {id} is not running ({:?})", c.state.status),
        )),
        None => Err(not_found(id)),
    };
    let (mut output, mut exited, stdin, pty) = match found {
        Ok(f) => f,
        Err(r) => {
            let _ = answer(&mut wr, &r).await;
            return;
        }
    };
    let tty = pty.is_some();
    if answer(&mut wr, &Reply::Attached { tty }).await.is_err() {
        return;
    }
    // Frames follow the request line: no limit on them.
    rd.get_mut().set_limit(u64::MAX);
    let input = tokio::task::spawn_local(relay_input(mon.clone(), id.to_string(), stdin, pty, rd));
    let wanted = |kind: u8| match kind {
        frame::STDOUT => want_out,
        frame::STDERR => want_err,
        _ => false,
    };
    let exit = exited.wait_for(|e| *e);
    tokio::pin!(exit, input);
    loop {
        tokio::select! {
            got = output.recv() => match got {
                Ok((kind, data)) => {
                    if wanted(kind) && write_frame(&mut wr, kind, &data).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    eprintln!("berth monitor: an attach session of {id} fell {n} chunks of output behind; they are lost to it");
                }
                Err(RecvError::Closed) => break,
            },
            _ = &mut exit => {
                // Output read before the exit was recorded is queued here.
                while let Ok((kind, data)) = output.try_recv() {
                    if wanted(kind) && write_frame(&mut wr, kind, &data).await.is_err() {
                        break;
                    }
                }
                let code = mon
                    .borrow()
                    .containers
                    .get(id)
                    .map(|c| c.state.exit_code)
                    .unwrap_or(-1);
                let _ = write_frame(&mut wr, frame::EXIT, &code.to_be_bytes()).await;
                break;
            }
            _ = &mut input => break,
        }
    }
    if !input.is_finished() {
        input.abort();
        if want_in {
            close_stdin_once(mon, id);
        }
    }
    let _ = wr.shutdown().await;
}
