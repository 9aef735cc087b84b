//! Setting up the pod before the event loop starts, while the monitor is
//! still a plain single-threaded process: session, subreaper, the pod's
//! namespaces, its host name and sysctls, and the pod init that is PID 1 of
//! the pod's PID namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{sethostname, ForkResult, Pid};

use crate::protocol::PodSpec;

/// A pod setup step that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SetupError {
    what: String,
    source: std::io::Error,
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
    step(
        "creating the pod PID namespace",
        unshare(CloneFlags::CLONE_NEWPID).map_err(nix_io),
    )?;
    let child = step("forking the pod init", fork::fork().map_err(nix_io))?;
    match child {
        ForkResult::Child => run_pod_init(),
        ForkResult::Parent { child } => {
            step(
                "returning to the monitor's PID namespace",
                setns(own.as_fd(), CloneFlags::CLONE_NEWPID).map_err(nix_io),
            )?;
            Ok(child)
        }
    }
}

/// PID 1 of the pod: reaps orphans, exits on SIGTERM or SIGINT, dies with
/// the monitor. It never returns.
fn run_pod_init() -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = nix::sys::prctl::set_name(c"berth-pod-init");
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // 0, 1 and 2 become /dev/null; everything else is closed below.
        let _ = redirect_stdio(&null);
    }
    close_from(3);
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(ws) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if ws == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

fn redirect_stdio(null: &File) -> std::io::Result<()> {
    rustix::stdio::dup2_stdin(null)?;
    rustix::stdio::dup2_stdout(null)?;
    rustix::stdio::dup2_stderr(null)?;
    Ok(())
}

fn close_from(first: u32) {
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
