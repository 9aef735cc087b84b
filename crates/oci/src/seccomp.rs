//! Seccomp: which profile a container gets, Berth's built-in default
//! profile, and loading a profile file from the host.
//!
//! The choice follows the CRI: the container's `seccomp` (or its
//! deprecated `seccomp_profile_path`) wins; without either the pod's
//! applies; without any, the container is unconfined. A privileged
//! container is always unconfined.
//!
//! The default profile (`RuntimeDefault`) is an allow-list in the manner
//! of Docker's and containerd's: every syscall not listed fails with
//! `EPERM`; the listed ones are allowed; a few more are allowed only when
//! the container's bounding set holds the capability that guards them.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_podspec::{
    ContainerSecurityContext, PodConfig, PodSecurityContext, ProfileType, SecurityProfile,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::error::SpecError;
use crate::host::{Host, RealHost};

/// Which seccomp profile applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Profile {
    Unconfined,
    RuntimeDefault,
    /// A profile file on the host (absolute path).
    Localhost(PathBuf),
}

/// The prefix of a localhost profile in the deprecated string form (and
/// tolerated in `localhost_ref`).
const LOCALHOST_PREFIX: &str = "localhost/";

fn localhost(reference: &str, field: &str) -> Result<Profile, SpecError> {
    let path = Path::new(
        reference
            .strip_prefix(LOCALHOST_PREFIX)
            .unwrap_or(reference),
    );
    if !path.is_absolute() {
        return Err(SpecError::invalid(
            field,
            format!("localhost seccomp profile {reference:?} must be an absolute path on the host"),
        ));
    }
    Ok(Profile::Localhost(path.to_path_buf()))
}

/// The profile a `SecurityProfile` names.
fn from_security_profile(sp: &SecurityProfile) -> Result<Profile, SpecError> {
    let field = "seccomp profile";
    let kind = sp.profile_type;
    if kind != ProfileType::Localhost && !sp.localhost_ref.is_empty() {
        return Err(SpecError::invalid(
            field,
            format!(
                "localhost_ref {:?} is only allowed with profile type Localhost, not {}",
                sp.localhost_ref,
                kind.as_str()
            ),
        ));
    }
    match kind {
        ProfileType::Unconfined => Ok(Profile::Unconfined),
        ProfileType::RuntimeDefault => Ok(Profile::RuntimeDefault),
        ProfileType::Localhost => {
            if sp.localhost_ref.is_empty() {
                return Err(SpecError::invalid(
                    field,
                    "profile type Localhost needs a localhost_ref",
                ));
            }
            localhost(&sp.localhost_ref, field)
        }
    }
}

/// The profile the deprecated `seccomp_profile_path` string names;
/// `None` when it is empty.
fn from_path_string(s: &str) -> Result<Option<Profile>, SpecError> {
    let field = "seccomp_profile_path";
    Ok(Some(match s {
        "" => return Ok(None),
        "runtime/default" | "docker/default" => Profile::RuntimeDefault,
        "unconfined" => Profile::Unconfined,
        _ if s.starts_with(LOCALHOST_PREFIX) => localhost(s, field)?,
        _ => {
            let expected = "runtime/default, docker/default, unconfined or localhost/<path>";
            return Err(SpecError::invalid(
                field,
                format!("{s:?}: expected {expected}"),
            ));
        }
    }))
}

/// The profile the pod's security context asks for, if any.
fn pod_profile(pod: Option<&PodSecurityContext>) -> Result<Option<Profile>, SpecError> {
    let Some(pod) = pod else { return Ok(None) };
    if let Some(sp) = &pod.seccomp {
        return from_security_profile(sp).map(Some);
    }
    from_path_string(&pod.seccomp_profile_path)
}

/// The profile that applies to a container.
pub(crate) fn choose(
    container: Option<&ContainerSecurityContext>,
    pod: Option<&PodSecurityContext>,
) -> Result<Profile, SpecError> {
    if let Some(c) = container {
        if let Some(sp) = &c.seccomp {
            return from_security_profile(sp);
        }
        if let Some(p) = from_path_string(&c.seccomp_profile_path)? {
            return Ok(p);
        }
    }
    Ok(pod_profile(pod)?.unwrap_or(Profile::Unconfined))
}

/// The seccomp filter of a container (`None`: unconfined), given the
/// profile and the container's bounding capabilities (`CAP_` names).
pub(crate) fn resolve(
    profile: &Profile,
    caps: &[String],
    host: &dyn Host,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match profile {
        Profile::Unconfined => Ok(None),
        Profile::RuntimeDefault => Ok(Some(default_profile(caps))),
        Profile::Localhost(path) => load(path, caps, host).map(Some),
    }
}

/// The seccomp filter of a pod's sandbox process (its infra or pause
/// process), from the pod's security context: `None` when unconfined or
/// privileged. `caps` are the sandbox process's bounding capabilities.
pub fn sandbox_seccomp(
    sandbox: &PodConfig,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let sc = sandbox.security_context();
    if sc.is_some_and(|sc| sc.privileged) {
        return Ok(None);
    }
    match pod_profile(sc)? {
        Some(p) => resolve(&p, caps, &RealHost),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// The default profile.

/// Syscalls every container may make.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
    "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
    "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv",
    "futex_wake", "futimesat", "get_robust_list", "get_thread_area", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday",
    "getuid", "getuid32", "getxattr", "getxattrat", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "ioprio_get",
    "ioprio_set", "ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
    "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "lstat", "lstat64",
    "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
    "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "set_robust_list",
    "set_thread_area", "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32",
    "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32", "setxattr",
    "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
    "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimensat_time64", "utimes",
    "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
    // Safe to allow since Linux 4.8 (a tracee can no longer use ptrace to
    // skip seccomp); Berth needs 5.6 at least (openat2).
    "process_vm_readv", "process_vm_writev", "ptrace",
];

/// Architecture-specific syscalls, for the architecture Berth runs on.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "x86")]
const ALLOWED_ARCH: &[&str] = &["modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
const ALLOWED_ARCH: &[&str] = &[];

/// The architectures the default filter covers: the native one and the
/// compat ABIs its kernel can run.
fn default_arches() -> Option<Vec<Arch>> {
    if cfg!(target_arch = "x86_64") {
        Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
    } else if cfg!(target_arch = "aarch64") {
        Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
    } else if cfg!(target_arch = "x86") {
        Some(vec![Arch::ScmpArchX86])
    } else {
        // Native only.
        None
    }
}

/// Syscalls allowed only with a capability in the bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Every `CLONE_NEW*` flag clone(2) accepts: NEWNS | NEWCGROUP | NEWUTS |
/// NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NEW_FLAGS: u64 = 0x7E02_0000;

/// `AF_ALG` and `AF_VSOCK`: socket families the default profile refuses.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The `personality(2)` values the default profile allows: PER_LINUX,
/// PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn syscall(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(action)
        .set_args((!args.is_empty()).then_some(args));
    s
}

/// A syscall argument condition.
pub(crate) fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .expect("a seccomp arg builder cannot fail: every field has a default")
}

fn allow_if(name: &str, op: LinuxSeccompOperator, value: u64) -> LinuxSyscall {
    syscall(
        &[name],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg(0, op, value, None)],
    )
}

/// Berth's default seccomp profile for a container whose bounding set is
/// `caps` (`CAP_` names).
///
/// Without CAP_SYS_ADMIN, `clone` is allowed only when it creates no
/// namespace, and `clone3` (whose flags a filter cannot see) fails with
/// `ENOSYS` so that libc falls back to `clone`. That condition is a masked
/// comparison written as OCI and runc read it (`value` the mask,
/// `valueTwo` the expected result); youki's libcontainer 0.7 reads the
/// operands the other way round, and then the rule matches every `clone`:
/// see [`crate::compat::for_libcontainer`].
pub fn default_profile(caps: &[String]) -> LinuxSeccomp {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    use LinuxSeccompOperator::{ScmpCmpEq as Eq, ScmpCmpGt as Gt, ScmpCmpLt as Lt};

    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let mut rules = vec![syscall(ALLOWED, Allow, vec![])];
    if !ALLOWED_ARCH.is_empty() {
        rules.push(syscall(ALLOWED_ARCH, Allow, vec![]));
    }
    // socket(2) for every family but AF_ALG and AF_VSOCK: one condition per
    // rule (rules are alternatives; conditions in one rule all must hold,
    // and runtimes split repeated conditions on one argument).
    rules.push(allow_if("socket", Lt, AF_ALG));
    rules.push(allow_if("socket", Eq, AF_ALG + 1));
    rules.push(allow_if("socket", Gt, AF_VSOCK));
    for p in PERSONALITIES {
        rules.push(allow_if("personality", Eq, p));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(syscall(names, Allow, vec![]));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // (flags & CLONE_NEW_FLAGS) == 0.
        let masked = LinuxSeccompOperator::ScmpCmpMaskedEq;
        let no_namespace = arg(0, masked, CLONE_NEW_FLAGS, Some(0));
        rules.push(syscall(&["clone"], Allow, vec![no_namespace]));
        let mut clone3 = syscall(&["clone3"], Errno, vec![]);
        clone3.set_errno_ret(Some(libc::ENOSYS.unsigned_abs()));
        rules.push(clone3);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(Errno)
        .set_default_errno_ret(Some(libc::EPERM.unsigned_abs()))
        .set_architectures(default_arches())
        .set_syscalls(Some(rules));
    s
}

// ---------------------------------------------------------------------------
// Profile files.

/// A profile file is read whole; nothing sensible is this big.
const MAX_PROFILE_SIZE: u64 = 4 << 20;

/// A seccomp profile in Docker's format, which is OCI's `linux.seccomp`
/// plus a few keys of its own (`archMap`, per-rule `name`, `includes`,
/// `excludes`, `comment`). Other unknown keys are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<FileSyscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileSyscall {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

/// Docker's conditions on a rule.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    /// Capabilities (`CAP_` names): includes needs all, excludes any.
    #[serde(default)]
    caps: Vec<String>,
    /// Go architecture names (`amd64`, `arm64`, `386`, ...).
    #[serde(default)]
    arches: Vec<String>,
    /// `"major.minor"`: the rule needs at least this kernel.
    #[serde(default)]
    min_kernel: Option<String>,
}

/// This machine's architecture as Docker's profiles name it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// This machine's architecture as libseccomp names it, if the default
/// profile knows it.
fn native_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::ScmpArchX86_64),
        "x86" => Some(Arch::ScmpArchX86),
        "aarch64" => Some(Arch::ScmpArchAarch64),
        _ => None,
    }
}

fn cap_name(c: &str) -> String {
    let upper = c.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Whether a rule of a profile file applies to this container and host.
fn applies(
    rule: &FileSyscall,
    caps: &[String],
    kernel: Option<(u32, u32)>,
    path: &Path,
) -> Result<bool, SpecError> {
    let has = |c: &String| caps.contains(&cap_name(c));
    let inc = &rule.includes;
    let exc = &rule.excludes;
    if !inc.caps.iter().all(has) || exc.caps.iter().any(has) {
        return Ok(false);
    }
    let arch = go_arch();
    if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch))
        || exc.arches.iter().any(|a| a == arch)
    {
        return Ok(false);
    }
    if let Some(min) = &inc.min_kernel {
        let want =
            crate::host::parse_kernel_version(min).ok_or_else(|| SpecError::SeccompProfile {
                path: path.to_path_buf(),
                reason: format!("invalid minKernel {min:?}"),
            })?;
        // An unknown kernel version runs the rule: the kernel resolves
        // names it does not know to nothing.
        if kernel.is_some_and(|k| k < want) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Turns a profile file into the container's filter.
fn convert(
    profile: FileProfile,
    caps: &[String],
    kernel: Option<(u32, u32)>,
    path: &Path,
) -> Result<LinuxSeccomp, SpecError> {
    let invalid = |reason: String| SpecError::SeccompProfile {
        path: path.to_path_buf(),
        reason,
    };
    // `architectures` wins; Docker's `archMap` gives the native
    // architecture and its sub-architectures.
    let architectures = match (profile.architectures, profile.arch_map, native_arch()) {
        (Some(a), _, _) => Some(a),
        (None, Some(map), Some(native)) => {
            map.into_iter().find(|m| m.architecture == native).map(|m| {
                std::iter::once(m.architecture)
                    .chain(m.sub_architectures)
                    .collect()
            })
        }
        _ => None,
    };
    let mut syscalls = Vec::new();
    for rule in profile.syscalls.unwrap_or_default() {
        if rule.name.is_some() && !rule.names.is_empty() {
            return Err(invalid(
                "a syscall rule has both \"name\" and \"names\"".into(),
            ));
        }
        if !applies(&rule, caps, kernel, path)? {
            continue;
        }
        let names: Vec<String> = match &rule.name {
            Some(n) => vec![n.clone()],
            None => rule.names.clone(),
        };
        if names.is_empty() {
            continue;
        }
        if names.iter().any(|n| n.is_empty()) {
            return Err(invalid("a syscall rule has an empty name".into()));
        }
        let mut s = LinuxSyscall::default();
        s.set_names(names)
            .set_action(rule.action)
            .set_errno_ret(rule.errno_ret)
            .set_args(rule.args.filter(|a| !a.is_empty()));
        syscalls.push(s);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(profile.default_action)
        .set_default_errno_ret(profile.default_errno_ret)
        .set_architectures(architectures)
        .set_flags(profile.flags)
        .set_listener_path(profile.listener_path)
        .set_listener_metadata(profile.listener_metadata)
        .set_syscalls(Some(syscalls));
    Ok(s)
}

/// Loads the profile file at `path` for a container whose bounding set is
/// `caps`. A missing file is a `NotFound` error.
fn load(path: &Path, caps: &[String], host: &dyn Host) -> Result<LinuxSeccomp, SpecError> {
    let what = "seccomp profile";
    let file = std::fs::File::open(path).map_err(|e| SpecError::io(what, path, e))?;
    let mut text = Vec::new();
    file.take(MAX_PROFILE_SIZE + 1)
        .read_to_end(&mut text)
        .map_err(|e| SpecError::io(what, path, e))?;
    if text.len() as u64 > MAX_PROFILE_SIZE {
        return Err(SpecError::SeccompProfile {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_PROFILE_SIZE} bytes"),
        });
    }
    let profile: FileProfile =
        serde_json::from_slice(&text).map_err(|e| SpecError::SeccompProfile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    convert(profile, caps, host.kernel_version(), path)
}

#[cfg(test)]
mod tests {
    use berth_podspec::LinuxPodConfig;

    use super::*;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("profile.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn profile_strings() {
        assert_eq!(from_path_string("").unwrap(), None);
        assert_eq!(
            from_path_string("docker/default").unwrap(),
            Some(Profile::RuntimeDefault)
        );
        assert_eq!(
            from_path_string("localhost//etc/p.json").unwrap(),
            Some(Profile::Localhost("/etc/p.json".into()))
        );
        let e = from_path_string("localhost/p.json").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");
    }

    #[test]
    fn kernel_and_arch_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["new"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"6.2"}},
                {"names":["not_here"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64","arm64","386"]}}
            ]}"#,
        );
        let rules = |kernel| {
            let text = std::fs::read(&p).unwrap();
            let profile: FileProfile = serde_json::from_slice(&text).unwrap();
            convert(profile, &[], kernel, &p)
                .unwrap()
                .syscalls()
                .clone()
                .unwrap()
                .len()
        };
        assert_eq!(rules(Some((6, 1))), 0);
        assert_eq!(rules(Some((6, 2))), 1);
        assert_eq!(rules(None), 1, "unknown kernel: keep the rule");

        let bad = write(
            dir.path(),
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["x"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"new"}}]}"#,
        );
        let e = load(&bad, &[], &RealHost).unwrap_err();
        assert!(e.to_string().contains("invalid minKernel"), "{e}");
    }

    #[test]
    fn huge_profiles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.json");
        std::fs::write(&p, vec![b' '; (MAX_PROFILE_SIZE + 1) as usize]).unwrap();
        let e = load(&p, &[], &RealHost).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn the_sandbox_profile() {
        let pod = |sc: PodSecurityContext| PodConfig {
            linux: Some(LinuxPodConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        let default = PodSecurityContext {
            seccomp: Some(SecurityProfile::default()),
            ..Default::default()
        };
        let s = sandbox_seccomp(&pod(default.clone()), &caps(&["CAP_KILL"])).unwrap();
        assert_eq!(
            s.unwrap().default_action(),
            LinuxSeccompAction::ScmpActErrno
        );
        let privileged = PodSecurityContext {
            privileged: true,
            ..default
        };
        assert_eq!(sandbox_seccomp(&pod(privileged), &[]).unwrap(), None);
        assert_eq!(sandbox_seccomp(&PodConfig::default(), &[]).unwrap(), None);
    }

    #[test]
    fn the_clone_mask_is_every_new_namespace_flag() {
        let all = [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ]
        .iter()
        .fold(0u64, |acc, f| acc | u64::from(f.unsigned_abs()));
        assert_eq!(all, CLONE_NEW_FLAGS);
        assert_eq!(u64::from(libc::AF_ALG.unsigned_abs()), AF_ALG);
        assert_eq!(u64::from(libc::AF_VSOCK.unsigned_abs()), AF_VSOCK);
    }
}
