//! Setting up the pod before the event loop starts, while the monitor is
//! still a plain single-threaded process: session, subreaper, the pod's
//! namespaces, its host name and sysctls, and the pod init that is PID 1 of
//! the pod's PID namespace (see [`crate::pause`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::{sethostname, ForkResult, Pid};

use crate::protocol::PodSpec;

/// A pod setup step that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SetupError {
    pub(crate) what: String,
    pub(crate) source: std::io::Error,
}

fn step<T, E: Into<std::io::Error>>(what: &str, r: Result<T, E>) -> Result<T, SetupError> {
    r.map_err(|e| SetupError {
        what: what.to_string(),
        source: e.into(),
    })
}

fn nix_io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Enters the pod's namespaces and applies its settings. Returns the pid of
/// the pod init when the pod has its own PID namespace.
pub fn setup(spec: &PodSpec) -> Result<Option<Pid>, SetupError> {
    step("setsid", nix::unistd::setsid().map_err(nix_io))?;
    step("chdir /", std::env::set_current_dir("/"))?;
    step(
        "becoming a child subreaper",
        nix::sys::prctl::set_child_subreaper(true).map_err(nix_io),
    )?;
    if let Some(maps) = &spec.userns {
        return userns::pod_init(spec, maps).map(Some);
    }
    if let Some(netns) = &spec.netns {
        let f = step(&format!("opening {}", netns.display()), File::open(netns))?;
        step(
            "joining the pod network namespace",
            setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(nix_io),
        )?;
    }
    if spec.new_ipc {
        step(
            "creating the pod IPC namespace",
            unshare(CloneFlags::CLONE_NEWIPC).map_err(nix_io),
        )?;
    }
    if let Some(name) = &spec.hostname {
        step(
            "creating the pod UTS namespace",
            unshare(CloneFlags::CLONE_NEWUTS).map_err(nix_io),
        )?;
        step("setting the host name", sethostname(name).map_err(nix_io))?;
    }
    for (key, value) in &spec.sysctls {
        step(&format!("sysctl {key}={value}"), write_sysctl(key, value))?;
    }
    if spec.new_pid {
        pod_init().map(Some)
    } else {
        Ok(None)
    }
}

/// Pods with their own user namespace: the pod's namespaces must belong to
/// it, so the pod init creates them after the user namespace, and the
/// monitor (root on the host) writes the maps in between.
mod userns {
    use std::fs::File;
    use std::io::{Read, Write};

    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{sethostname, ForkResult, Gid, Pid, Uid};

    use super::{fork, nix_io, pipe, step, write_sysctl, SetupError};
    use crate::protocol::{IdMaps, PodSpec};

    pub fn pod_init(spec: &PodSpec, maps: &IdMaps) -> Result<Pid, SetupError> {
        let (mut unshared_r, unshared_w) = pipe()?;
        let (mapped_r, mut mapped_w) = pipe()?;
        let (mut result_r, result_w) = pipe()?;
        let (mut status_r, status_w) = pipe()?;
        let child = step("forking the pod init", fork::fork().map_err(nix_io))?;
        let ForkResult::Parent { child } = child else {
            drop(unshared_r);
            drop(mapped_w);
            drop(result_r);
            drop(status_r);
            intermediate(spec, unshared_w, mapped_r, result_w, status_w)
        };
        drop(unshared_w);
        drop(mapped_r);
        drop(result_w);
        drop(status_w);
        let mut b = [0u8; 1];
        let outcome = (|| {
            step(
                "waiting for the user namespace",
                unshared_r.read_exact(&mut b),
            )?;
            for (file, lines) in [("uid_map", &maps.uids), ("gid_map", &maps.gids)] {
                step(
                    &format!("writing {file}"),
                    std::fs::write(format!("/proc/{child}/{file}"), IdMaps::format(lines)),
                )?;
            }
            step("releasing the pod init", mapped_w.write_all(b"m"))?;
            let mut answer = String::new();
            let _ = result_r.read_to_string(&mut answer);
            match answer
                .strip_prefix("pid ")
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                Some(pid) => Ok(Pid::from_raw(pid)),
                None => Err(SetupError {
                    what: "setting up the pod's user namespace".into(),
                    source: std::io::Error::other(answer),
                }),
            }
        })();
        drop(mapped_w);
        let _ = nix::sys::wait::waitpid(child, None);
        let init = outcome?;
        super::confined(init, &mut status_r)?;
        Ok(init)
    }

    fn report(mut to: File, text: &str) -> ! {
        let _ = to.write_all(text.as_bytes());
        fork::exit(if text.starts_with("pid ") { 0 } else { 1 })
    }

    /// The forked child: enters a new user namespace, waits for its maps,
    /// becomes root in it, creates the pod's namespaces and forks the pod
    /// init into the new PID namespace.
    fn intermediate(
        spec: &PodSpec,
        mut unshared: File,
        mut mapped: File,
        result: File,
        status: File,
    ) -> ! {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
            report(result, &format!("creating the user namespace: {e}"));
        }
        let _ = unshared.write_all(b"u");
        let mut b = [0u8; 1];
        if mapped.read_exact(&mut b).is_err() {
            report(result, "the monitor did not write the id maps");
        }
        let root = (|| -> Result<(), String> {
            nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
            let g = Gid::from_raw(0);
            nix::unistd::setresgid(g, g, g).map_err(|e| format!("becoming gid 0: {e}"))?;
            let u = Uid::from_raw(0);
            nix::unistd::setresuid(u, u, u).map_err(|e| format!("becoming uid 0: {e}"))?;
            let mut flags = CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWPID;
            if spec.new_ipc {
                flags |= CloneFlags::CLONE_NEWIPC;
            }
            if spec.hostname.is_some() {
                flags |= CloneFlags::CLONE_NEWUTS;
            }
            unshare(flags).map_err(|e| format!("creating the pod namespaces: {e}"))?;
            if let Some(name) = &spec.hostname {
                sethostname(name).map_err(|e| format!("setting the host name: {e}"))?;
            }
            for (k, v) in &spec.sysctls {
                write_sysctl(k, v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
            }
            Ok(())
        })();
        if let Err(e) = root {
            report(result, &e);
        }
        match fork::fork() {
            Ok(ForkResult::Child) => {
                drop(result);
                // Executed in the user namespace, the pod init's memory
                // belongs to it: root of the pod's user namespace (the
                // runtimes joining its namespaces) may open its
                // /proc/PID/ns/* although it is not dumpable.
                crate::pause::exec(status.into(), false)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(status);
                report(result, &format!("pid {child}"))
            }
            Err(e) => report(result, &format!("forking the pod init: {e}")),
        }
    }
}

fn write_sysctl(key: &str, value: &str) -> std::io::Result<()> {
    if key.is_empty() || key.contains("..") || key.starts_with(['.', '/']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a sysctl name",
        ));
    }
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(path, value)
}

/// Starts the pod init in a new PID namespace and puts this process back in
/// its own one for later children.
fn pod_init() -> Result<Pid, SetupError> {
    let own = step("opening /proc/self/ns/pid", File::open("/proc/self/ns/pid"))?;
    let (mut status_r, status_w) = pipe()?;
    step(
        "creating the pod PID namespace",
        unshare(CloneFlags::CLONE_NEWPID).map_err(nix_io),
    )?;
    let child = step("forking the pod init", fork::fork().map_err(nix_io))?;
    match child {
        ForkResult::Child => {
            drop(status_r);
            crate::pause::exec(status_w.into(), true)
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            step(
                "returning to the monitor's PID namespace",
                setns(own.as_fd(), CloneFlags::CLONE_NEWPID).map_err(nix_io),
            )?;
            confined(child, &mut status_r)?;
            Ok(child)
        }
    }
}

/// Waits for the pod init's word that it is confined, then traces it: no
/// one else can attach to it, and it dies with the monitor.
fn confined(init: Pid, status: &mut File) -> Result<(), SetupError> {
    let mut answer = String::new();
    let _ = status.read_to_string(&mut answer);
    if answer != "ok" {
        let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        let why = if answer.is_empty() {
            "it exited without a word".to_string()
        } else {
            answer
        };
        return Err(SetupError {
            what: "confining the pod init".into(),
            source: std::io::Error::other(why),
        });
    }
    use nix::sys::ptrace;
    if let Err(e) = ptrace::seize(init, ptrace::Options::PTRACE_O_EXITKILL) {
        // Still confined (no capability, empty root): only ptrace by a
        // container with CAP_SYS_PTRACE stays possible.
        eprintln!(
            "berth monitor: cannot trace the pod init {init} ({e}); \
             containers with CAP_SYS_PTRACE can attach to it"
        );
    }
    Ok(())
}

fn pipe() -> Result<(File, File), SetupError> {
    let (r, w) = step(
        "pipe",
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(std::io::Error::from),
    )?;
    Ok((File::from(r), File::from(w)))
}

/// Leaves a forked child (or the pod init) at once, without destructors.
pub(crate) fn exit_now(code: i32) -> ! {
    fork::exit(code)
}

pub(crate) fn close_from(first: u32) {
    fork::close_range(first);
}

mod fork {
    //! The one `fork` of the monitor, done before any thread or runtime exists.
    #![allow(unsafe_code)]

    use nix::unistd::ForkResult;

    pub fn fork() -> nix::Result<ForkResult> {
        // SAFETY: the monitor is single-threaded when it sets up the pod (the
        // event loop is built afterwards), so the child can run arbitrary code.
        unsafe { nix::unistd::fork() }
    }

    /// Leaves a forked child without running the parent's destructors.
    pub fn exit(code: i32) -> ! {
        // SAFETY: _exit ends the process at once; nothing is left to run.
        unsafe { libc::_exit(code) }
    }

    /// Closes every fd from `first` on (in the pod init, which owns none of them).
    pub fn close_range(first: u32) {
        // SAFETY: close_range takes plain integers; closing fds the process
        // does not use afterwards cannot violate memory safety here (the pod
        // init only uses 0-2 and no Rust object owns a higher fd it touches).
        unsafe {
            libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
        }
    }
}
