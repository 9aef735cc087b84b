//! The monitor's event loop: one thread, one tokio current-thread runtime.
//!
//! It accepts the daemon's requests, creates containers through the
//! [`Runner`], pumps their output into CRI log files, reaps every child on
//! SIGCHLD and records exits (with OOM kills) in per-container state files.
//! Nothing here may start a thread: libcontainer forks with raw `clone3`,
//! which deadlocks if another thread holds the allocator's lock. That is
//! why there is no `tokio::fs`, `spawn_blocking` or `tokio::process` here.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_logs::{LogWriter, Stream};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::handler::{dev_null, Exec, Runner, Stdio3};
use crate::protocol::{paths, ErrorKind, ExecResult, Reply, Request, State, Status};
use crate::pty::Master;

mod stream;

/// The most output an exec returns per stream; the rest is dropped. Both
/// streams together stay under the 16 MiB gRPC message limit of the CRI
/// (the kubelet's and the daemon's), or the command would run and the call
/// fail on its answer.
const MAX_EXEC_OUTPUT: usize = (8 << 20) - (64 << 10);
/// How long output may keep flowing after a process exited (a background
/// child may hold the pipe open for ever).
const DRAIN: Duration = Duration::from_secs(2);
/// The exit code of a container that could not be started (containerd's).
const START_ERROR_EXIT_CODE: i32 = 128;
/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(30);

type Shared = Rc<RefCell<Monitor>>;

struct Container {
    state: State,
    log: Option<Rc<RefCell<LogWriter>>>,
    pumps: Vec<JoinHandle<()>>,
    exited: watch::Sender<bool>,
    memory_cgroup: Option<PathBuf>,
    ooms_before: u64,
    bundle: PathBuf,
    /// Why the runtime could not create it. As with containerd, which runs
    /// the OCI runtime only in StartContainer, the failure is StartContainer's:
    /// it then exits with 128, reason `StartError` (the kubelet backs off).
    start_error: Option<String>,
    /// The OCI runtime holds state for it (its create succeeded): delete
    /// must go through the runtime.
    in_runtime: bool,
    /// Its output as it is logged, for attach sessions.
    output: broadcast::Sender<(u8, Rc<[u8]>)>,
    /// Its stdin, while it has one.
    stdin: Option<Input>,
    stdin_once: bool,
    /// The master of its terminal (containers with `tty`).
    pty: Option<Master>,
}

/// Where a container's stdin is written.
#[derive(Clone)]
enum Input {
    Pipe(Rc<pipe::Sender>),
    Terminal(Master),
}

enum Owner {
    Init(String),
    Exec(oneshot::Sender<i32>),
}

struct Monitor {
    dir: PathBuf,
    runner: Runner,
    containers: HashMap<String, Container>,
    owners: HashMap<i32, Owner>,
    pod_init: Option<Pid>,
    exec_seq: u64,
    quit: Rc<Notify>,
    /// Every state change, for `Watch` connections.
    changes: broadcast::Sender<State>,
}

/// How many state changes a `Watch` connection may fall behind before it
/// is closed (the daemon then watches again and compares).
const WATCH_BACKLOG: usize = 256;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn fail(kind: ErrorKind, message: impl Into<String>) -> Reply {
    Reply::Error {
        kind,
        message: message.into(),
    }
}

fn not_found(id: &str) -> Reply {
    fail(
        ErrorKind::NotFound,
        format!("container {id} is not known to the pod's monitor"),
    )
}

/// Runs the loop until a Shutdown request; `listener` is already bound.
pub async fn serve(
    dir: PathBuf,
    runner: Runner,
    pod_init: Option<Pid>,
    listener: UnixListener,
) -> io::Result<()> {
    let quit = Rc::new(Notify::new());
    let mon: Shared = Rc::new(RefCell::new(Monitor {
        dir,
        runner,
        containers: HashMap::new(),
        owners: HashMap::new(),
        pod_init,
        exec_seq: 0,
        quit: quit.clone(),
        changes: broadcast::channel(WATCH_BACKLOG).0,
    }));
    let mut sigchld = crate::sigchld::ChildSignals::install()?;
    let reaper = {
        let mon = mon.clone();
        tokio::task::spawn_local(async move {
            loop {
                reap(&mon);
                if let Err(e) = sigchld.recv().await {
                    eprintln!("berth monitor: waiting for SIGCHLD: {e}");
                    break;
                }
            }
        })
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    tokio::task::spawn_local(handle(mon.clone(), conn));
                }
                Err(e) => eprintln!("berth monitor: accept: {e}"),
            },
            _ = quit.notified() => break,
        }
    }
    reaper.abort();
    Ok(())
}

async fn handle(mon: Shared, conn: UnixStream) {
    let (rd, mut wr) = conn.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(4 << 20));
    if rd.read_line(&mut line).await.is_err() {
        return;
    }
    let mut quit_after = false;
    let mut spawned = false;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::ExecStream { id, process, stdin }) => {
            stream::exec(&mon, &id, process, stdin, rd, wr).await;
            crate::memory::give_back();
            return;
        }
        Ok(Request::Attach {
            id,
            stdin,
            stdout,
            stderr,
        }) => {
            stream::attach(&mon, &id, [stdin, stdout, stderr], rd, wr).await;
            return;
        }
        Ok(Request::Watch) => {
            watch(&mon, rd, wr).await;
            return;
        }
        Ok(req) => {
            quit_after = matches!(req, Request::Shutdown);
            spawned = matches!(
                req,
                Request::Create { .. }
                    | Request::Start { .. }
                    | Request::Exec { .. }
                    | Request::Delete { .. }
            );
            dispatch(&mon, req).await
        }
        Err(e) => fail(ErrorKind::InvalidArgument, format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
    let _ = wr.shutdown().await;
    if spawned {
        // The runtime's create/start/exec/delete touched stack and heap a
        // long-lived monitor should not keep; give them back once the
        // caller has its answer, off the latency path.
        crate::memory::give_back();
    }
    if quit_after {
        let quit = mon.borrow().quit.clone();
        quit.notify_one();
    }
}

async fn dispatch(mon: &Shared, req: Request) -> Reply {
    match req {
        Request::Ping => Reply::Pong {
            pid: std::process::id() as i32,
            pod_init: mon.borrow().pod_init.map(Pid::as_raw),
        },
        Request::Create {
            id,
            bundle,
            log_path,
            oom_score_adj,
            memory_cgroup,
            stdin,
            stdin_once,
            tty,
        } => create(
            mon,
            id,
            &bundle,
            log_path,
            oom_score_adj,
            memory_cgroup,
            (stdin, stdin_once, tty),
        ),
        Request::Start { id } => start(mon, &id),
        Request::Stop {
            id,
            signal,
            timeout_secs,
        } => stop(mon, &id, signal, Duration::from_secs(timeout_secs)).await,
        Request::Exec {
            id,
            process,
            timeout_secs,
        } => exec(mon, &id, process, timeout_secs).await,
        Request::ReopenLog { id } => reopen(mon, &id),
        Request::Delete { id } => delete(mon, &id).await,
        // Served by `handle`, which gives them the connection.
        Request::ExecStream { .. } | Request::Attach { .. } | Request::Watch => fail(
            ErrorKind::InvalidArgument,
            "a streaming request needs its connection",
        ),
        Request::Shutdown => shutdown(mon).await,
    }
}

/// Whatever is buffered in a pipe right now (up to 64 KiB), without waiting.
fn drain_now(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let flags = rustix::fs::OFlags::NONBLOCK;
    let _ = rustix::fs::fcntl_setfl(fd, flags);
    while out.len() < 64 * 1024 {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Stdio for a new process (stdin /dev/null, stdout and stderr pipes) and
/// the read ends of its two pipes.
fn output_pipes() -> io::Result<(Stdio3, OwnedFd, OwnedFd)> {
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (out_r, out_w) = rustix::pipe::pipe_with(flags)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(flags)?;
    let stdio = Stdio3 {
        stdin: dev_null()?,
        stdout: out_w,
        stderr: err_w,
    };
    Ok((stdio, out_r, err_r))
}

fn create(
    mon: &Shared,
    id: String,
    bundle: &Path,
    log_path: Option<PathBuf>,
    oom_score_adj: Option<i32>,
    memory_cgroup: Option<PathBuf>,
    (stdin, stdin_once, tty): (bool, bool, bool),
) -> Reply {
    if mon.borrow().containers.contains_key(&id) {
        return fail(
            ErrorKind::AlreadyExists,
            format!("container {id} already exists"),
        );
    }
    let log = match log_path
        .as_deref()
        .map(|p| LogWriter::open(p, berth_logs::DEFAULT_MAX_LINE))
    {
        Some(Ok(w)) => Some(Rc::new(RefCell::new(w))),
        Some(Err(e)) => {
            return fail(
                ErrorKind::FailedPrecondition,
                format!(
                    "opening the log file {}: {e}",
                    log_path.unwrap_or_default().display()
                ),
            )
        }
        None => None,
    };
    let (mut stdio, out_r, err_r) = match output_pipes() {
        Ok(p) => p,
        Err(e) => return fail(ErrorKind::Internal, format!("creating pipes: {e}")),
    };
    let mut stdin_w = None;
    if stdin && !tty {
        match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok((r, w)) => {
                stdio.stdin = r;
                stdin_w = Some(w);
            }
            Err(e) => return fail(ErrorKind::Internal, format!("creating pipes: {e}")),
        }
    }
    let created = mon.borrow().runner.create(&id, bundle, stdio, tty);
    let (pid, master) = match created {
        Ok(started) => started,
        Err(e) => {
            let _ = mon.borrow().runner.delete(&id);
            // What the runtime's init printed says why, more than its error.
            let said = [drain_now(&err_r), drain_now(&out_r)].concat();
            let said = String::from_utf8_lossy(&said);
            let detail = said.trim();
            let why = if detail.is_empty() {
                e.to_string()
            } else {
                format!("{e}: {detail}")
            };
            eprintln!("berth monitor: creating {id} failed, reported by StartContainer: {why}");
            return created_without_process(mon, id, bundle, why);
        }
    };
    if let Some(adj) = oom_score_adj {
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string()) {
            eprintln!("berth monitor: oom_score_adj {adj} for {id}: {e}");
        }
    }
    let ooms_before = memory_cgroup.as_deref().map(oom_kills).unwrap_or(0);
    let (output, _) = broadcast::channel(stream::ATTACH_BACKLOG);
    let mut pumps = Vec::new();
    let pty = match master.map(Master::new) {
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            eprintln!("berth monitor: the terminal of {id}: {e}");
            None
        }
        None => None,
    };
    if let Some(m) = &pty {
        pumps.push(tokio::task::spawn_local(pump_terminal(
            m.clone(),
            log.clone(),
            output.clone(),
        )));
    }
    for (fd, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => pumps.push(tokio::task::spawn_local(pump(
                rx,
                stream,
                log.clone(),
                output.clone(),
            ))),
            Err(e) => eprintln!("berth monitor: output pipe of {id}: {e}"),
        }
    }
    let stdin = match stdin_w.map(pipe::Sender::from_owned_fd) {
        Some(Ok(tx)) => Some(Input::Pipe(Rc::new(tx))),
        Some(Err(e)) => {
            eprintln!("berth monitor: stdin pipe of {id}: {e}");
            None
        }
        None if stdin => pty.clone().map(Input::Terminal),
        None => None,
    };
    let state = created_state(&id, Some(pid));
    let (exited, _) = watch::channel(false);
    mon.borrow_mut().owners.insert(pid, Owner::Init(id.clone()));
    register(
        mon,
        Container {
            state,
            log,
            pumps,
            exited,
            memory_cgroup,
            ooms_before,
            bundle: bundle.to_path_buf(),
            start_error: None,
            in_runtime: true,
            output,
            stdin,
            stdin_once,
            pty,
        },
    )
}

/// A container the runtime could not create: known, CREATED, without a
/// process, until StartContainer reports `why`.
fn created_without_process(mon: &Shared, id: String, bundle: &Path, why: String) -> Reply {
    register(
        mon,
        Container {
            state: created_state(&id, None),
            log: None,
            pumps: Vec::new(),
            exited: watch::channel(true).0,
            memory_cgroup: None,
            ooms_before: 0,
            bundle: bundle.to_path_buf(),
            start_error: Some(why),
            in_runtime: false,
            output: broadcast::channel(1).0,
            stdin: None,
            stdin_once: false,
            pty: None,
        },
    )
}

fn created_state(id: &str, pid: Option<i32>) -> State {
    State {
        id: id.to_string(),
        status: Status::Created,
        pid,
        created_at: now_ns(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
    }
}

/// Records a new container (its state file first) and answers with its state.
fn register(mon: &Shared, c: Container) -> Reply {
    let state = c.state.clone();
    let mut m = mon.borrow_mut();
    persist(&m.dir, &m.changes, &state);
    m.containers.insert(state.id.clone(), c);
    Reply::State(state)
}

async fn pump(
    rx: pipe::Receiver,
    stream: Stream,
    log: Option<Rc<RefCell<LogWriter>>>,
    output: broadcast::Sender<(u8, Rc<[u8]>)>,
) {
    // Every container has two of these for its whole life, idle nearly all
    // of it: the read buffer lives on the stack of `copy_out`, only while
    // there is output to copy, not in the task.
    loop {
        if rx.readable().await.is_err() {
            break;
        }
        match copy_out(&rx, stream, log.as_deref(), &output) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    if let Some(log) = &log {
        let _ = log.borrow_mut().finish(stream, chrono::Utc::now());
    }
}

/// Copies what the pipe holds now into the log; `Ok(0)` at end of stream.
fn copy_out(
    rx: &pipe::Receiver,
    stream: Stream,
    log: Option<&RefCell<LogWriter>>,
    output: &broadcast::Sender<(u8, Rc<[u8]>)>,
) -> io::Result<usize> {
    let mut buf = [0u8; 8192];
    let n = rx.try_read(&mut buf)?;
    deliver(stream, &buf[..n], log, output);
    Ok(n)
}

/// Output of a container: to attach sessions and into its log.
fn deliver(
    stream: Stream,
    data: &[u8],
    log: Option<&RefCell<LogWriter>>,
    output: &broadcast::Sender<(u8, Rc<[u8]>)>,
) {
    if data.is_empty() {
        return;
    }
    if output.receiver_count() > 0 {
        let kind = match stream {
            Stream::Stdout => crate::protocol::frame::STDOUT,
            Stream::Stderr => crate::protocol::frame::STDERR,
        };
        let _ = output.send((kind, Rc::from(data)));
    }
    if let Some(log) = log {
        if let Err(e) = log.borrow_mut().write(stream, data, chrono::Utc::now()) {
            eprintln!("berth monitor: writing the log: {e}");
        }
    }
}

/// A terminal's output, logged as stdout, until every slave is closed.
async fn pump_terminal(
    mut master: Master,
    log: Option<Rc<RefCell<LogWriter>>>,
    output: broadcast::Sender<(u8, Rc<[u8]>)>,
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => deliver(Stream::Stdout, &buf[..n], log.as_deref(), &output),
        }
    }
    if let Some(log) = &log {
        let _ = log.borrow_mut().finish(Stream::Stdout, chrono::Utc::now());
    }
}

fn start(mon: &Shared, id: &str) -> Reply {
    let status = match mon.borrow().containers.get(id) {
        Some(c) => c.state.status,
        None => return not_found(id),
    };
    if status != Status::Created {
        return fail(
            ErrorKind::FailedPrecondition,
            format!("container {id} is {status:?}, not created"),
        );
    }
    let start_error = mon
        .borrow_mut()
        .containers
        .get_mut(id)
        .and_then(|c| c.start_error.take());
    if let Some(why) = start_error {
        let mut m = mon.borrow_mut();
        let (dir, changes) = (m.dir.clone(), m.changes.clone());
        if let Some(c) = m.containers.get_mut(id) {
            c.state.status = Status::Exited;
            c.state.finished_at = now_ns();
            c.state.exit_code = START_ERROR_EXIT_CODE;
            c.state.reason = "StartError".into();
            c.state.message = why.clone();
            persist(&dir, &changes, &c.state);
        }
        return fail(
            ErrorKind::Internal,
            format!("starting container {id}: {why}"),
        );
    }
    // Taken before the process may run: a process that exits at once is
    // reaped (finished_at) before start returns, and started_at must not
    // come after finished_at.
    let started_at = now_ns();
    let started = mon.borrow().runner.start(id);
    if let Err(e) = started {
        return fail(ErrorKind::Internal, e.to_string());
    }
    let mut m = mon.borrow_mut();
    let (dir, changes) = (m.dir.clone(), m.changes.clone());
    let Some(c) = m.containers.get_mut(id) else {
        return not_found(id);
    };
    // The process may already have exited and been recorded.
    if c.state.status == Status::Created {
        c.state.status = Status::Running;
    }
    c.state.started_at = started_at;
    persist(&dir, &changes, &c.state);
    Reply::State(c.state.clone())
}

/// Reaps every exited child and hands each exit to its owner.
fn reap(mon: &Shared) {
    loop {
        let (pid, code) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            // The pod init is traced (see `pause`): a stop is a signal it
            // did not take with sigwait; let it go on with that signal.
            Ok(WaitStatus::Stopped(pid, sig)) => {
                let _ = nix::sys::ptrace::cont(pid, sig);
                continue;
            }
            Ok(WaitStatus::PtraceEvent(pid, _, _)) => {
                let _ = nix::sys::ptrace::cont(pid, None);
                continue;
            }
            Ok(_) => continue,
        };
        let owner = mon.borrow_mut().owners.remove(&pid.as_raw());
        match owner {
            Some(Owner::Init(id)) => {
                tokio::task::spawn_local(finish(mon.clone(), id, code));
            }
            Some(Owner::Exec(tx)) => {
                let _ = tx.send(code);
            }
            None => {
                if mon.borrow().pod_init == Some(pid) {
                    eprintln!("berth monitor: the pod init exited ({code})");
                    mon.borrow_mut().pod_init = None;
                }
            }
        }
    }
}

/// Records a container's exit once its output is drained.
async fn finish(mon: Shared, id: String, code: i32) {
    let (pumps, memory_cgroup) = {
        let mut m = mon.borrow_mut();
        let Some(c) = m.containers.get_mut(&id) else {
            return;
        };
        // Nothing reads it any more.
        c.stdin = None;
        (std::mem::take(&mut c.pumps), c.memory_cgroup.clone())
    };
    // What the init left behind (in a PID namespace shared with other
    // containers it survives the init) goes too, as with runc's shims.
    if let Some(cg) = &memory_cgroup {
        kill_cgroup(cg);
    }
    let drained = tokio::time::timeout(DRAIN, futures_join(pumps)).await;
    if drained.is_err() {
        eprintln!("berth monitor: output of {id} still open {DRAIN:?} after it exited");
    }
    let mut m = mon.borrow_mut();
    let (dir, changes) = (m.dir.clone(), m.changes.clone());
    let Some(c) = m.containers.get_mut(&id) else {
        return;
    };
    let oom = c
        .memory_cgroup
        .as_deref()
        .map(|cg| oom_kills(cg) > c.ooms_before)
        .unwrap_or(false);
    c.state.status = Status::Exited;
    c.state.pid = None;
    c.state.finished_at = now_ns();
    c.state.exit_code = code;
    c.state.reason = if oom {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    }
    .into();
    persist(&dir, &changes, &c.state);
    let _ = c.exited.send(true);
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

fn signal_pid(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Waits until the container is recorded as exited.
async fn wait_exited(mon: &Shared, id: &str, limit: Option<Duration>) -> bool {
    let mut rx = match mon.borrow().containers.get(id) {
        Some(c) => c.exited.subscribe(),
        None => return true,
    };
    let wait = rx.wait_for(|e| *e);
    match limit {
        Some(l) => matches!(tokio::time::timeout(l, wait).await, Ok(Ok(_))),
        None => wait.await.is_ok(),
    }
}

/// SIGKILLs the container (init and cgroup) and waits for its exit.
async fn kill_now(mon: &Shared, id: &str) -> Result<(), Reply> {
    let (pid, cg) = match mon.borrow().containers.get(id) {
        Some(c) if c.state.status != Status::Exited => (c.state.pid, c.memory_cgroup.clone()),
        _ => return Ok(()),
    };
    if let Some(pid) = pid {
        signal_pid(pid, Signal::SIGKILL);
    }
    if let Some(cg) = &cg {
        kill_cgroup(cg);
    }
    if wait_exited(mon, id, Some(KILL_WAIT)).await {
        Ok(())
    } else {
        Err(fail(
            ErrorKind::Internal,
            format!("container {id} did not die within {KILL_WAIT:?} of SIGKILL"),
        ))
    }
}

async fn stop(mon: &Shared, id: &str, sig: i32, timeout: Duration) -> Reply {
    let (status, pid) = match mon.borrow().containers.get(id) {
        Some(c) => (c.state.status, c.state.pid),
        None => return not_found(id),
    };
    if status == Status::Running && !timeout.is_zero() {
        let sig = Signal::try_from(sig).unwrap_or(Signal::SIGTERM);
        if let Some(pid) = pid {
            signal_pid(pid, sig);
        }
        if wait_exited(mon, id, Some(timeout)).await {
            return state_of(mon, id);
        }
    }
    if status != Status::Exited {
        if let Err(r) = kill_now(mon, id).await {
            return r;
        }
    }
    state_of(mon, id)
}

fn state_of(mon: &Shared, id: &str) -> Reply {
    match mon.borrow().containers.get(id) {
        Some(c) => Reply::State(c.state.clone()),
        None => not_found(id),
    }
}

/// Where an exec's process file and pid file go, once the container is
/// known to run.
struct ExecFiles {
    init: i32,
    bundle: PathBuf,
    process: PathBuf,
    pid: PathBuf,
}

impl ExecFiles {
    fn prepare(mon: &Shared, id: &str, process: &serde_json::Value) -> Result<ExecFiles, Reply> {
        let (init, bundle) = match mon.borrow().containers.get(id) {
            Some(c) if c.state.status == Status::Running && !*c.exited.borrow() => {
                (c.state.pid.unwrap_or(0), c.bundle.clone())
            }
            Some(c) => {
                return Err(fail(
                    ErrorKind::FailedPrecondition,
                    format!("container {id} is not running ({:?})", c.state.status),
                ))
            }
            None => return Err(not_found(id)),
        };
        let (dir, seq) = {
            let mut m = mon.borrow_mut();
            m.exec_seq += 1;
            (m.dir.join("exec"), m.exec_seq)
        };
        let files = ExecFiles {
            init,
            bundle,
            process: dir.join(format!("{seq}.json")),
            pid: dir.join(format!("{seq}.pid")),
        };
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&files.process, process.to_string()));
        if let Err(e) = written {
            return Err(fail(
                ErrorKind::Internal,
                format!("writing {}: {e}", files.process.display()),
            ));
        }
        Ok(files)
    }

    /// Starts the process through the runner (the process file is removed).
    fn run(
        &self,
        mon: &Shared,
        id: &str,
        stdio: Stdio3,
        tty: bool,
    ) -> Result<(i32, Option<OwnedFd>), Reply> {
        let started = mon.borrow().runner.exec(
            Exec {
                id,
                init: self.init,
                bundle: &self.bundle,
                process: &self.process,
                pid_file: &self.pid,
            },
            stdio,
            tty,
        );
        let _ = std::fs::remove_file(&self.process);
        started.map_err(|e| fail(ErrorKind::Internal, e.to_string()))
    }
}

async fn exec(mon: &Shared, id: &str, process: serde_json::Value, timeout_secs: u64) -> Reply {
    let files = match ExecFiles::prepare(mon, id, &process) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (stdio, out_r, err_r) = match output_pipes() {
        Ok(p) => p,
        Err(e) => return fail(ErrorKind::Internal, format!("creating pipes: {e}")),
    };
    let pid = match files.run(mon, id, stdio, false) {
        Ok((pid, _)) => pid,
        Err(r) => return r,
    };
    let (tx, rx) = oneshot::channel();
    mon.borrow_mut().owners.insert(pid, Owner::Exec(tx));
    // The process may have exited before it was registered.
    reap(mon);

    let stdout = Rc::new(RefCell::new(Vec::new()));
    let stderr = Rc::new(RefCell::new(Vec::new()));
    let readers = [(out_r, stdout.clone()), (err_r, stderr.clone())].map(|(fd, buf)| {
        tokio::task::spawn_local(async move {
            let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
                return;
            };
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match rx.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut b = buf.borrow_mut();
                        let room = MAX_EXEC_OUTPUT.saturating_sub(b.len());
                        b.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
        })
    });
    let mut timed_out = false;
    let began = std::time::Instant::now();
    let code = if timeout_secs == 0 {
        rx.await.unwrap_or(-1)
    } else {
        tokio::pin!(rx);
        match tokio::time::timeout(Duration::from_secs(timeout_secs), &mut rx).await {
            Ok(code) => code.unwrap_or(-1),
            Err(_) => {
                timed_out = true;
                signal_pid(pid, Signal::SIGKILL);
                tokio::time::timeout(KILL_WAIT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(137)
            }
        }
    };
    // A child of the command may still hold its output. As containerd,
    // wait for the output to end, within what is left of the exec's
    // timeout (without one, for as long as it takes), and say so when it
    // does not: the caller gets an error, not a result cut short. After a
    // timeout the process was killed: what was read is returned.
    let drain = if timed_out {
        Some(DRAIN)
    } else if timeout_secs > 0 {
        Some(
            Duration::from_secs(timeout_secs)
                .saturating_sub(began.elapsed())
                .max(DRAIN),
        )
    } else {
        None
    };
    let mut held = false;
    for mut r in readers {
        let done = match drain {
            Some(d) => tokio::time::timeout(d, &mut r).await.is_ok(),
            None => {
                let _ = (&mut r).await;
                true
            }
        };
        if !done {
            r.abort();
            held = true;
        }
    }
    if held && !timed_out {
        return fail(
            ErrorKind::FailedPrecondition,
            format!(
                "the command exited ({code}) but its output is still held open by another \
                 process (a background child) after {:?}",
                drain.unwrap_or_default()
            ),
        );
    }
    let stdout = stdout.take();
    let stderr = stderr.take();
    Reply::Exec(ExecResult {
        exit_code: code,
        stdout,
        stderr,
        timed_out,
    })
}

fn reopen(mon: &Shared, id: &str) -> Reply {
    let log = match mon.borrow().containers.get(id) {
        Some(c) => c.log.clone(),
        None => return not_found(id),
    };
    let Some(log) = log else {
        return fail(
            ErrorKind::FailedPrecondition,
            format!("container {id} has no log file"),
        );
    };
    let reopened = log.borrow_mut().reopen();
    match reopened {
        Ok(()) => Reply::Done,
        Err(e) => fail(ErrorKind::Internal, format!("reopening the log: {e}")),
    }
}

async fn delete(mon: &Shared, id: &str) -> Reply {
    if !mon.borrow().containers.contains_key(id) {
        // Forget anything the runtime may still hold under this id.
        let _ = mon.borrow().runner.delete(id);
        let _ = std::fs::remove_file(paths::state(&mon.borrow().dir, id));
        return Reply::Done;
    }
    if let Err(r) = kill_now(mon, id).await {
        return r;
    }
    if mon
        .borrow()
        .containers
        .get(id)
        .is_some_and(|c| c.in_runtime)
    {
        let deleted = mon.borrow().runner.delete(id);
        if let Err(e) = deleted {
            return fail(ErrorKind::Internal, e.to_string());
        }
    }
    let mut m = mon.borrow_mut();
    if let Some(c) = m.containers.remove(id) {
        for p in c.pumps {
            p.abort();
        }
    }
    let _ = std::fs::remove_file(paths::state(&m.dir, id));
    Reply::Done
}

async fn shutdown(mon: &Shared) -> Reply {
    let ids: Vec<String> = mon.borrow().containers.keys().cloned().collect();
    let mut errors = Vec::new();
    for id in &ids {
        if let Err(Reply::Error { message, .. }) = kill_now(mon, id).await {
            errors.push(message);
        }
        if !mon
            .borrow()
            .containers
            .get(id)
            .is_some_and(|c| c.in_runtime)
        {
            continue;
        }
        let deleted = mon.borrow().runner.delete(id);
        if let Err(e) = deleted {
            errors.push(e.to_string());
        }
    }
    let init = mon.borrow().pod_init;
    if let Some(init) = init {
        let _ = kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
    }
    if errors.is_empty() {
        Reply::Done
    } else {
        fail(ErrorKind::Internal, errors.join("; "))
    }
}

/// The cgroup's OOM-kill counter (v1 `memory.oom_control`, v2 `memory.events`).
fn oom_kills(cg: &Path) -> u64 {
    for (file, key) in [
        ("memory.oom_control", "oom_kill "),
        ("memory.events", "oom_kill "),
    ] {
        if let Ok(text) = std::fs::read_to_string(cg.join(file)) {
            if let Some(n) = text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|n| n.trim().parse().ok())
            {
                return n;
            }
        }
    }
    0
}

/// SIGKILLs every process in the cgroup.
fn kill_cgroup(cg: &Path) {
    if let Ok(text) = std::fs::read_to_string(cg.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            signal_pid(pid, Signal::SIGKILL);
        }
    }
}

/// Writes a container's state file and tells the watchers.
fn persist(dir: &Path, changes: &broadcast::Sender<State>, state: &State) {
    let path = paths::state(dir, &state.id);
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(state).unwrap_or_default();
    let result = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        eprintln!("berth monitor: saving {}: {e}", path.display());
    }
    // No watcher is not an error.
    let _ = changes.send(state.clone());
}

/// Serves a `Watch` connection: every container's state now, then each
/// change as it is recorded, until the caller goes, the monitor exits, or
/// the caller falls [`WATCH_BACKLOG`] changes behind (then the connection
/// is closed and the caller, who sees the end, watches again).
async fn watch(
    mon: &Shared,
    mut rd: impl tokio::io::AsyncRead + Unpin,
    mut wr: tokio::net::unix::OwnedWriteHalf,
) {
    let (mut changes, states) = {
        let m = mon.borrow();
        // Subscribed first: a change recorded between the two is sent
        // twice rather than lost.
        let rx = m.changes.subscribe();
        let states: Vec<State> = m.containers.values().map(|c| c.state.clone()).collect();
        (rx, states)
    };
    let line = |reply: &Reply| {
        let mut out = serde_json::to_vec(reply).unwrap_or_default();
        out.push(b'\n');
        out
    };
    if wr
        .write_all(&line(&Reply::Watching { states }))
        .await
        .is_err()
    {
        return;
    }
    // The caller sends nothing more: its end (EOF, an error, or anything
    // at all) ends the watch at once, not at the next change.
    let mut gone = [0u8; 1];
    loop {
        let next = tokio::select! {
            next = changes.recv() => next,
            _ = rd.read(&mut gone) => return,
        };
        // The sender lives as long as the monitor; an error is lagging.
        let Ok(state) = next else { return };
        if wr.write_all(&line(&Reply::State(state))).await.is_err() {
            return;
        }
    }
}
