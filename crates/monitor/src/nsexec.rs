//! Exec into a running container for the built-in handler.
//!
//! libcontainer 0.7's tenant builder drops the container's `linux` section
//! (seccomp among it) when it builds the exec process, so an exec would
//! escape the container's seccomp filter. This module does what `runc exec`
//! does instead: a child of the (single-threaded) monitor joins the
//! container's cgroups and namespaces and forks the process into its PID
//! namespace; that process takes the container's user, groups,
//! capabilities, no_new_privs and seccomp filter, then executes the command.
//! Failures before the exec come back as text on a close-on-exec pipe.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::unistd::{ForkResult, Gid, Uid};
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::handler::{HandlerError, Stdio3};

/// Namespaces joined, in order: the user namespace first (it owns the
/// others), the mount namespace last (all are opened through the host's
/// /proc before any is joined).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Everything the exec needs, prepared before forking.
struct Plan {
    namespaces: Vec<(File, CloneFlags)>,
    cgroup_procs: Vec<PathBuf>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    candidates: Vec<CString>,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    process: Process,
    seccomp: Option<LinuxSeccomp>,
}

fn cstr(s: &str) -> Result<CString, HandlerError> {
    CString::new(s).map_err(|_| HandlerError(format!("{s:?} contains a NUL byte")))
}

/// The `cgroup.procs` files of the init's cgroups (v1: one per hierarchy).
fn cgroup_procs(init: i32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let base = if controllers.is_empty() {
                let hybrid = Path::new("/sys/fs/cgroup/unified");
                if hybrid.is_dir() {
                    hybrid.to_path_buf()
                } else {
                    PathBuf::from("/sys/fs/cgroup")
                }
            } else {
                let name = controllers.strip_prefix("name=").unwrap_or(controllers);
                Path::new("/sys/fs/cgroup").join(name)
            };
            let procs = base.join(path.trim_start_matches('/')).join("cgroup.procs");
            procs.exists().then_some(procs)
        })
        .collect()
}

fn plan(
    init: i32,
    spec_seccomp: Option<LinuxSeccomp>,
    process: Process,
) -> Result<Plan, HandlerError> {
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{init}/ns/{name}");
        let same = std::fs::read_link(&theirs).ok()
            == std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        if same && flag != CloneFlags::CLONE_NEWNS {
            continue;
        }
        let f = File::open(&theirs).map_err(|e| HandlerError(format!("opening {theirs}: {e}")))?;
        namespaces.push((f, flag));
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(HandlerError("exec: no command".into()));
    }
    let env = process.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let candidates = if args[0].contains('/') {
        vec![cstr(&args[0])?]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstr(&format!("{}/{}", d.trim_end_matches('/'), args[0])))
            .collect::<Result<_, _>>()?
    };
    let user = process.user();
    Ok(Plan {
        namespaces,
        cgroup_procs: cgroup_procs(init),
        argv: args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        envp: env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?,
        candidates,
        cwd: process.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        seccomp: spec_seccomp,
        process,
    })
}

/// Starts `process` in the container whose init is `init`; returns its pid
/// (a child of the monitor once the intermediate child has exited). With
/// `console` (a unix socket), the process gets a new terminal of the
/// container's devpts as its controlling terminal and stdio, and the
/// master goes out on `console` before the command is executed.
pub fn exec(
    init: i32,
    seccomp: Option<LinuxSeccomp>,
    process: Process,
    stdio: Stdio3,
    console: Option<OwnedFd>,
) -> Result<i32, HandlerError> {
    let plan = plan(init, seccomp, process)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| HandlerError(format!("pipe: {e}")))?;
    let (pid_r, pid_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| HandlerError(format!("pipe: {e}")))?;
    match fork::fork().map_err(|e| HandlerError(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(err_r);
            drop(pid_r);
            intermediate(&plan, stdio, console, err_w, pid_w)
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            drop(pid_w);
            drop(stdio);
            drop(console);
            // The intermediate exits as soon as it has forked the process.
            let _ = nix::sys::wait::waitpid(child, None);
            let mut buf = [0u8; 4];
            let got = File::from(pid_r).read_exact(&mut buf);
            let mut message = String::new();
            let _ = File::from(err_r).read_to_string(&mut message);
            if !message.is_empty() {
                return Err(HandlerError(message));
            }
            got.map_err(|_| {
                HandlerError("the exec helper died before starting the process".into())
            })?;
            Ok(i32::from_ne_bytes(buf))
        }
    }
}

/// Writes the error for the monitor and exits.
fn die(err: &OwnedFd, what: &str, e: impl std::fmt::Display) -> ! {
    let _ = File::from(err.try_clone().expect("dup")).write_all(format!("{what}: {e}").as_bytes());
    fork::exit(127)
}

fn intermediate(
    plan: &Plan,
    stdio: Stdio3,
    console: Option<OwnedFd>,
    err: OwnedFd,
    pid_w: OwnedFd,
) -> ! {
    let me = std::process::id().to_string();
    for procs in &plan.cgroup_procs {
        if let Err(e) = std::fs::write(procs, &me) {
            die(&err, &format!("joining the cgroup {}", procs.display()), e);
        }
    }
    for (f, flag) in &plan.namespaces {
        if let Err(e) = setns(f.as_fd(), *flag) {
            die(
                &err,
                &format!("joining the container's {flag:?} namespace"),
                e,
            );
        }
    }
    // The PID namespace applies to children: the process is one.
    match fork::fork() {
        Err(e) => die(&err, "fork", e),
        Ok(ForkResult::Parent { child }) => {
            let _ = File::from(pid_w).write_all(&child.as_raw().to_ne_bytes());
            fork::exit(0)
        }
        Ok(ForkResult::Child) => {
            drop(pid_w);
            process(plan, stdio, console, err)
        }
    }
}

fn process(plan: &Plan, stdio: Stdio3, console: Option<OwnedFd>, err: OwnedFd) -> ! {
    use libcontainer::syscall::syscall::create_syscall;
    let syscall = create_syscall();
    let terminal = match &console {
        None => None,
        Some(socket) => {
            let (master, slave) = match crate::pty::open() {
                Ok(p) => p,
                Err(e) => die(&err, "opening a terminal in the container", e),
            };
            if let Err(e) = crate::fdpass::send(socket.as_fd(), b"pty", &[master.as_fd()]) {
                die(&err, "sending the terminal to the monitor", e);
            }
            // Its owner is the process's user, as a login terminal's.
            let _ = nix::unistd::fchown(
                &slave,
                Some(Uid::from_raw(plan.uid)),
                Some(Gid::from_raw(plan.gid)),
            );
            Some(slave)
        }
    };
    drop(console);
    let fds = match &terminal {
        Some(t) => [t.as_raw_fd(); 3],
        None => [
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
        ],
    };
    for (fd, target) in fds.into_iter().zip(0..) {
        if fork::dup2(fd, target).is_err() {
            die(&err, "setting up stdio", std::io::Error::last_os_error());
        }
    }
    if let Some(t) = &terminal {
        if let Err(e) = crate::pty::become_session_leader(t.as_fd()) {
            die(&err, "making the terminal the controlling one", e);
        }
    }
    if let Err(e) = std::env::set_current_dir(&plan.cwd) {
        die(&err, &format!("chdir {}", plan.cwd.display()), e);
    }
    let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        die(&err, "setgroups", e);
    }
    let _ = nix::sys::prctl::set_keepcaps(true);
    let gid = Gid::from_raw(plan.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        die(&err, "setting the gid", e);
    }
    let uid = Uid::from_raw(plan.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        die(&err, "setting the uid", e);
    }
    let _ = nix::sys::prctl::set_keepcaps(false);
    let nnp = plan.process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: before
    // the capabilities are dropped (as runc and libcontainer do).
    if !nnp {
        if let Some(s) = &plan.seccomp {
            if let Err(e) = libcontainer::seccomp::initialize_seccomp(s) {
                die(&err, "installing the seccomp filter", e);
            }
        }
    }
    // A non-root uid lost its effective set: take the permitted one back
    // (kept by PR_SET_KEEPCAPS) so that the sets can be changed.
    if let Err(e) = libcontainer::capabilities::reset_effective(syscall.as_ref()) {
        die(&err, "restoring the effective capabilities", e);
    }
    if let Some(caps) = plan.process.capabilities() {
        if let Err(e) = libcontainer::capabilities::drop_privileges(caps, syscall.as_ref()) {
            die(&err, "setting capabilities", e);
        }
    }
    if nnp {
        if let Err(e) = nix::sys::prctl::set_no_new_privs() {
            die(&err, "no_new_privs", e);
        }
        if let Some(s) = &plan.seccomp {
            if let Err(e) = libcontainer::seccomp::initialize_seccomp(s) {
                die(&err, "installing the seccomp filter", e);
            }
        }
    }
    let mut last = None;
    for path in &plan.candidates {
        match nix::unistd::execve(path, &plan.argv, &plan.envp) {
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
            Err(e) => last = Some((path, e)),
            Ok(_) => unreachable!(),
        }
    }
    match last {
        Some((path, e)) => die(&err, &format!("exec {}", path.to_string_lossy()), e),
        None => die(
            &err,
            &format!("exec {:?}", plan.argv[0]),
            "executable file not found in $PATH",
        ),
    }
}

mod fork {
    //! The raw process calls of an exec, made from the single-threaded monitor.
    #![allow(unsafe_code)]

    use nix::unistd::ForkResult;

    pub fn fork() -> nix::Result<ForkResult> {
        // SAFETY: the monitor has one thread, so the child may allocate and
        // run arbitrary code; the intermediate child has one thread too.
        unsafe { nix::unistd::fork() }
    }

    pub fn dup2(fd: i32, target: i32) -> std::io::Result<()> {
        // SAFETY: dup2 on raw descriptor numbers; the target (0, 1 or 2)
        // is replaced, which is the point, and no Rust object owns it.
        let r = unsafe { libc::dup2(fd, target) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Leaves a forked child without running the parent's destructors.
    pub fn exit(code: i32) -> ! {
        // SAFETY: _exit ends the process at once; nothing is left to run.
        unsafe { libc::_exit(code) }
    }
}
