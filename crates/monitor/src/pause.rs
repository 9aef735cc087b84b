//! The pod init: PID 1 of a pod's PID namespace, holding nothing.
//!
//! Containers that share the pod's PID namespace see it as PID 1, and one
//! with `CAP_SYS_PTRACE` (`kubectl debug --profile=general`) can open its
//! `/proc/1/root`, `/proc/1/exe`, `/proc/1/environ` and `/proc/1/mem`.
//! So, like containerd's pause container, it keeps nothing worth reaching:
//!
//! * it is a fresh `execve` of this binary with an empty environment and
//!   argv `berth-pause` (nothing of the monitor's memory, arguments or
//!   environment);
//! * its root is an empty read-only tmpfs in a mount namespace of its own
//!   (the host's mounts are detached);
//! * it runs as 65535:65535 (pause's user) with no capabilities in any
//!   set, no new privileges, not dumpable;
//! * a seccomp filter leaves it the handful of system calls it makes;
//! * the monitor traces it (`PTRACE_SEIZE` with `EXITKILL`), so nobody
//!   else can attach to it, and it dies with the monitor.
//!
//! Its binary stays visible through `/proc/1/exe`: the executable of a
//! running process cannot be opened for writing (ETXTBSY).
//!
//! It tells the monitor on fd 3 ([`STATUS_FD`]) that it is confined (`ok`)
//! or what failed, then reaps orphans until SIGTERM or SIGINT.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Uid};

/// argv[0] of the pod init: `berth`'s `main` dispatches on it.
pub const ARGV0: &str = "berth-pause";
/// argv[1] when the pod init must die with its parent (the monitor).
const WITH_PARENT: &str = "--die-with-parent";
/// The fd on which the pod init reports `ok` or its failure.
pub(crate) const STATUS_FD: i32 = 3;
/// pause's user and group.
const PAUSE_ID: u32 = 65535;

/// In the forked child (root, already in the pod's namespaces): executes
/// this binary again as the pod init, with `status` as fd 3. Never
/// returns; on failure, writes why on `status` and exits.
pub(crate) fn exec(status: OwnedFd, die_with_parent: bool) -> ! {
    let fd = status.into_raw_fd();
    let moved = if fd == STATUS_FD {
        // SAFETY: fcntl on a plain fd number this process owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
    } else {
        // SAFETY: dup2 onto fd 3, which no Rust object owns here (the
        // forked child owns only the status pipe); the copy has no
        // close-on-exec flag.
        unsafe { libc::dup2(fd, STATUS_FD) }
    };
    // SAFETY: fd 3 now is the status pipe (or `fd` still is, if dup2
    // failed); either way this child owns it alone.
    let status = unsafe { OwnedFd::from_raw_fd(if moved < 0 { fd } else { STATUS_FD }) };
    if moved < 0 {
        fail(
            status,
            &format!(
                "moving the status pipe to fd 3: {}",
                std::io::Error::last_os_error()
            ),
        );
    }
    // Nothing of the monitor's stays open: stdin, stdout and stderr (the
    // daemon's pipe, the monitor's log) become /dev/null, the rest is closed.
    match File::options().read(true).write(true).open("/dev/null") {
        Ok(null) => {
            for target in 0..3 {
                // SAFETY: dup2 onto the standard fds, which no Rust object
                // in this forked child uses any more.
                if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) } < 0 {
                    fail(status, "redirecting the standard fds to /dev/null");
                }
            }
        }
        Err(e) => fail(status, &format!("opening /dev/null: {e}")),
    }
    crate::pod::close_from(STATUS_FD as u32 + 1);
    let mut argv = vec![CString::new(ARGV0).expect("no NUL")];
    if die_with_parent {
        argv.push(CString::new(WITH_PARENT).expect("no NUL"));
    }
    let env: [CString; 0] = [];
    let e = nix::unistd::execve(c"/proc/self/exe", &argv, &env).unwrap_err();
    fail(status, &format!("executing the pod init: {e}"))
}

fn fail(status: OwnedFd, why: &str) -> ! {
    let _ = File::from(status).write_all(why.as_bytes());
    crate::pod::exit_now(1)
}

/// `berth-pause [--die-with-parent]`: confines itself, reports on fd 3,
/// then reaps orphans.
pub fn run(args: &[std::ffi::OsString]) -> ! {
    let die_with_parent = args.iter().any(|a| a == WITH_PARENT);
    let _ = nix::sys::prctl::set_name(c"berth-pause");
    // Nothing is delivered: signals are only ever taken with sigwait, so
    // the tracing monitor never sees a signal-delivery stop.
    let _ = SigSet::all().thread_block();
    // SAFETY: fd 3 was set up by `exec` as the status pipe; nothing else
    // in this fresh process owns it.
    let status = File::from(unsafe { OwnedFd::from_raw_fd(STATUS_FD) });
    let mut status = Some(status);
    if let Err(why) = confine(die_with_parent) {
        if let Some(mut s) = status.take() {
            let _ = s.write_all(why.as_bytes());
        }
        crate::pod::exit_now(1);
    }
    if let Some(mut s) = status.take() {
        let _ = s.write_all(b"ok");
    }
    reap_forever()
}

fn confine(die_with_parent: bool) -> Result<(), String> {
    fn err(what: &'static str) -> impl Fn(nix::Error) -> String {
        move |e| format!("{what}: {e}")
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(err("creating a mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making the mounts private"))?;
    let dir = ["/tmp", "/mnt", "/run", "/dev"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .ok_or("no directory to mount the empty root on")?;
    let sealed = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        sealed,
        Some("size=4k,nr_inodes=1,mode=0555"),
    )
    .map_err(err("mounting the empty root"))?;
    nix::unistd::chdir(dir).map_err(err("entering the empty root"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the host's mounts"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | sealed,
        None::<&str>,
    )
    .map_err(err("making the root read-only"))?;

    // No capability can come back: empty bounding, inheritable and
    // ambient sets; the change of uid below empties the others.
    fn cap_err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> String {
        move |e| format!("{what}: {e}")
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(cap_err("clearing ambient caps"))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(cap_err("clearing inheritable caps"))?;
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(cap_err("dropping bounding caps"))?;
    }
    nix::unistd::setgroups(&[]).map_err(err("setgroups"))?;
    let gid = Gid::from_raw(PAUSE_ID);
    nix::unistd::setresgid(gid, gid, gid).map_err(err("becoming gid 65535"))?;
    let uid = Uid::from_raw(PAUSE_ID);
    nix::unistd::setresuid(uid, uid, uid).map_err(err("becoming uid 65535"))?;
    let left = caps::read(None, caps::CapSet::Permitted).map_err(cap_err("reading caps"))?;
    if !left.is_empty() {
        return Err(format!("capabilities left after dropping root: {left:?}"));
    }
    nix::sys::prctl::set_no_new_privs().map_err(err("PR_SET_NO_NEW_PRIVS"))?;
    nix::sys::prctl::set_dumpable(false).map_err(err("PR_SET_DUMPABLE"))?;
    // A change of uid clears the parent-death signal: set it now.
    if die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err("PR_SET_PDEATHSIG"))?;
    }
    seccomp()
}

/// Allows what `reap_forever` and exiting need, and the report on fd 3;
/// anything else fails with EPERM.
fn seccomp() -> Result<(), String> {
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let err = |e: libseccomp::error::SeccompError| format!("seccomp: {e}");
    let mut f = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).map_err(err)?;
    // The report on the status pipe, after the filter is in place.
    for name in ["write", "close"] {
        let call = ScmpSyscall::from_name(name).map_err(err)?;
        let on_status = ScmpArgCompare::new(0, ScmpCompareOp::Equal, STATUS_FD as u64);
        f.add_rule_conditional(ScmpAction::Allow, call, &[on_status])
            .map_err(err)?;
    }
    for name in [
        "rt_sigtimedwait",
        "rt_sigprocmask",
        "rt_sigreturn",
        "wait4",
        "waitid",
        "restart_syscall",
        "exit",
        "exit_group",
    ] {
        let call = ScmpSyscall::from_name(name).map_err(err)?;
        f.add_rule(ScmpAction::Allow, call).map_err(err)?;
    }
    f.load().map_err(err)
}

fn reap_forever() -> ! {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(ws) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if ws == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => crate::pod::exit_now(0),
            Err(_) => {}
        }
    }
}
