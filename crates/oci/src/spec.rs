//! Container config (Berth's model, `berth-podspec`) → OCI runtime spec.
//!
//! [`generate`] builds the whole spec explicitly: nothing comes from
//! oci-spec's `Default` impls, which describe runc's sample config (and
//! fill the inheritable and ambient capability sets). The rules follow
//! containerd 2.x's CRI plugin; where Berth differs it says so.
//!
//! What the spec leaves to the runtime:
//! * `hostname` is never set: the pod's UTS namespace already has it, and
//!   libcontainer refuses a hostname with a joined UTS namespace;
//! * pod sysctls are not in container specs: the runtime applies them once,
//!   in the pod's namespaces;
//! * `process.oomScoreAdj` is set (clamped, see [`SpecInput::oom_score_adj_min`]),
//!   but a libcontainer caller may prefer to take it out and write it to
//!   the container's init process itself;
//! * `linux.rootfsPropagation` and seccomp's masked comparisons use OCI's
//!   (runc's) reading; [`crate::compat::for_libcontainer`] rewrites them
//!   for libcontainer;
//! * the image's `Volumes` get no mount of their own: those paths stay in
//!   the container's writable rootfs (containerd gives each a host
//!   directory).
//!
//! `process.noNewPrivileges` is left out unless the CRI asks for it:
//! libcontainer 0.7 takes the mere presence of the field (even `false`) to
//! mean "load seccomp after dropping capabilities", which fails without
//! CAP_SYS_ADMIN ("failed to load seccomp context", seen with a localhost
//! profile).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use berth_podspec::{
    ContainerConfig, ContainerSecurityContext, NamespaceMode, PodConfig, ProfileType, Resources,
    SecurityProfile, SupplementalGroupsPolicy, UserNamespace,
};
use oci_spec::image::{Config as ImageConfig, ImageConfiguration};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxDevice, LinuxDeviceCgroup,
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Process, Root, Spec,
    User,
};

use crate::caps;
use crate::devices;
use crate::error::SpecError;
use crate::host::{Host, RealHost};
use crate::mounts::{self, BindMounter, SystemOptions};
use crate::resources::{self, CgroupSupport};
use crate::seccomp;
use crate::user::{self, GroupsPolicy, Identity, UserRequest};

/// How the container gets one of its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// The host's: no entry in the spec.
    Host,
    /// A new one, of the container's own.
    New,
    /// An existing one, joined through this path (`/proc/<pid>/ns/net`, a
    /// pinned netns file...).
    Join(PathBuf),
}

/// One line of a uid or gid map: `size` ids from `container_id` inside
/// are `host_id`... outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// The container's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNs {
    pub uid_mappings: Vec<IdMap>,
    pub gid_mappings: Vec<IdMap>,
    /// The pod's user namespace to join; `None` creates a new one with the
    /// mappings. The mappings are written to the spec either way (as
    /// containerd does), and must be those of the namespace joined.
    pub path: Option<PathBuf>,
}

/// The container's namespaces, as the caller decided them from the CRI
/// namespace options. The mount namespace is always new; a cgroup
/// namespace is added on cgroup v2 hosts for non-privileged containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub net: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    pub pid: Namespace,
    /// `None`: the host's user namespace.
    pub user: Option<UserNs>,
}

/// Files of the pod, on the host, bind-mounted into every container.
/// `None` leaves the image's own file (or, for `shm`, gives the container a
/// tmpfs of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    /// Mounted at `/etc/hostname`.
    pub hostname: Option<PathBuf>,
    /// Mounted at `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Mounted at `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// A directory (the pod's tmpfs, or the host's `/dev/shm` for a host
    /// IPC pod) mounted at `/dev/shm`.
    pub shm: Option<PathBuf>,
}

/// Everything [`generate`] needs.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub container: &'a ContainerConfig,
    pub sandbox: &'a PodConfig,
    pub image: &'a ImageConfiguration,
    /// The container's root filesystem, already mounted: the user and groups
    /// are looked up in its `/etc/passwd` and `/etc/group`.
    pub rootfs: &'a Path,
    pub namespaces: Namespaces,
    pub pod_files: PodFiles,
    /// The container's cgroup, an absolute cgroupfs path (used as given).
    pub cgroups_path: PathBuf,
    /// The capabilities the runtime holds (see [`caps::grantable`]): the
    /// container never gets one outside them.
    pub grantable: &'a BTreeSet<&'static str>,
    /// The lowest `oom_score_adj` the runtime may set (its own, without
    /// CAP_SYS_RESOURCE). A lower request is raised to it, silently, as
    /// containerd's `restrict_oom_score_adj` does.
    pub oom_score_adj_min: i32,
    /// The cgroup controllers the host offers: a limit for one it lacks is
    /// left out (and reported in [`Generated::left_out`]), as containerd does.
    pub cgroup: CgroupSupport,
    /// The runtime handler supports recursive read-only (`rro`) mounts.
    pub recursive_read_only: bool,
}

/// A generated spec and what the runtime needs to know about it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spec: Spec,
    /// Who the container runs as (for `ContainerStatus.user`).
    pub identity: Identity,
    /// The image's `StopSignal`, if any (the CRI's `stop_signal` is the
    /// caller's to prefer).
    pub stop_signal: Option<String>,
    /// Limits the host's cgroups cannot apply, left out of the spec: one
    /// description each, for the caller to log.
    pub left_out: Vec<String>,
}

/// `PATH` when the image gives none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths masked in a non-privileged container when the CRI lists none.
const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// Paths read-only in a non-privileged container when the CRI lists none.
const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Generates the OCI spec of a container.
pub fn generate(input: &SpecInput<'_>) -> Result<Generated, SpecError> {
    build(input, &RealHost)
}

/// [`generate`] on a given host.
pub(crate) fn build(input: &SpecInput<'_>, host: &dyn Host) -> Result<Generated, SpecError> {
    let container = input.container;
    let sc = container.security_context();
    let pod_sc = input.sandbox.security_context();
    let privileged = sc.is_some_and(|s| s.privileged);
    if privileged && !pod_sc.is_some_and(|s| s.privileged) {
        return Err(SpecError::PrivilegedNotAllowed);
    }
    let image = input.image.config().as_ref();
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);

    let (process, identity, cap_names) = container_process(input, sc, image, privileged, host)?;

    // Seccomp, after the capabilities: the default profile depends on them.
    let seccomp = if privileged {
        None
    } else {
        seccomp::resolve(&seccomp::choose(sc, pod_sc)?, &cap_names, host)?
    };

    // Mounts.
    let userns = input.namespaces.user.as_ref();
    let system = mounts::system_mounts(&SystemOptions {
        privileged,
        pod_shm: input.pod_files.shm.is_some(),
        tty_gid_unmapped: userns.is_some_and(|u| !maps(&u.gid_mappings, 5)),
        bind_sys: userns.is_some() && input.namespaces.net == Namespace::Host,
        rro: input.recursive_read_only,
    });
    let cri_binds = container
        .mounts
        .iter()
        .map(|m| mounts::cri_bind(m, input.recursive_read_only))
        .collect::<Result<Vec<_>, _>>()?;
    let pod_binds = mounts::pod_binds(&input.pod_files, readonly_rootfs)?;
    let mut mounter = BindMounter::new(host);
    let all_mounts = mounts::assemble(system, cri_binds, pod_binds, &mut mounter)?;

    let (linux_devices, device_rules) = devices_of(container, privileged, host)?;
    let namespaces = namespaces_of(&input.namespaces, privileged, host);
    let (masked, readonly_paths) = masked_and_readonly(sc, privileged);
    let (mut resources, left_out) = resources::resources(container.resources(), &input.cgroup)?;
    resources.set_devices(Some(device_rules));

    let mut linux = Linux::default();
    linux
        .set_net_devices(None)
        .set_uid_mappings(userns.map(|u| id_mappings(&u.uid_mappings)))
        .set_gid_mappings(userns.map(|u| id_mappings(&u.gid_mappings)))
        .set_sysctl(None)
        .set_resources(Some(resources))
        .set_cgroups_path(Some(input.cgroups_path.clone()))
        .set_namespaces(Some(namespaces))
        .set_devices(Some(linux_devices))
        .set_seccomp(seccomp)
        .set_rootfs_propagation(mounter.rootfs_propagation.take())
        .set_masked_paths(masked)
        .set_readonly_paths(readonly_paths)
        .set_mount_label(None)
        .set_intel_rdt(None)
        .set_memory_policy(None)
        .set_personality(None)
        .set_time_offsets(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf())
        .set_readonly(Some(readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string())
        .set_root(Some(root))
        .set_mounts(Some(all_mounts))
        .set_process(Some(process))
        .set_hostname(None)
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(Some(annotations(container, input.sandbox)))
        .set_linux(Some(linux))
        .set_solaris(None)
        .set_windows(None)
        .set_vm(None)
        .set_zos(None);

    Ok(Generated {
        spec,
        identity,
        stop_signal: image.and_then(|c| c.stop_signal().clone()),
        left_out,
    })
}

/// The process for an exec (ExecSync, Exec) in a container whose spec is
/// `spec`: the container's env, cwd, user, capabilities, rlimits,
/// no_new_privileges, AppArmor profile and oom_score_adj, with `args` and
/// a terminal when `tty` (which also sets `TERM=xterm`).
pub fn exec_process(spec: &Spec, args: Vec<String>, tty: bool) -> Process {
    let mut p = spec.process().clone().unwrap_or_else(blank_process);
    p.set_args(Some(args))
        .set_terminal(Some(tty))
        .set_console_size(None)
        .set_command_line(None);
    if tty {
        let mut env = p.env().clone().unwrap_or_default();
        merge_env(&mut env, "TERM=xterm");
        p.set_env(Some(env));
    }
    p
}

/// Checks a pod's CRI user namespace options (RunPodSandbox): `None` for
/// the host's user namespace (mode NODE or no options), the mappings of a
/// new pod user namespace for mode POD.
pub fn validate_userns(opts: Option<&UserNamespace>) -> Result<Option<UserNs>, SpecError> {
    let Some(opts) = opts else { return Ok(None) };
    let field = "user namespace";
    match opts.mode {
        NamespaceMode::Node => {
            if !opts.uids.is_empty() || !opts.gids.is_empty() {
                return Err(SpecError::invalid(
                    field,
                    format!(
                        "mode NODE takes no mappings, got {} UID and {} GID mappings",
                        opts.uids.len(),
                        opts.gids.len()
                    ),
                ));
            }
            Ok(None)
        }
        NamespaceMode::Pod => {
            let one = |m: &[berth_podspec::IdMapping], which: &str| {
                let [m] = m else {
                    return Err(SpecError::invalid(
                        field,
                        format!(
                            "exactly one {which} mapping line is supported, got {}",
                            m.len()
                        ),
                    ));
                };
                if m.container_id != 0 {
                    return Err(SpecError::invalid(
                        field,
                        format!(
                            "the {which} mapping must start at container id 0 \
                             (root must be mapped), got {}",
                            m.container_id
                        ),
                    ));
                }
                if m.length < 1 {
                    return Err(SpecError::invalid(
                        field,
                        format!("invalid {which} mapping length {}", m.length),
                    ));
                }
                Ok(vec![IdMap {
                    container_id: m.container_id,
                    host_id: m.host_id,
                    size: m.length,
                }])
            };
            Ok(Some(UserNs {
                uid_mappings: one(&opts.uids, "UID")?,
                gid_mappings: one(&opts.gids, "GID")?,
                path: None,
            }))
        }
        mode @ (NamespaceMode::Container | NamespaceMode::Target) => Err(SpecError::invalid(
            field,
            format!("unsupported user namespace mode {}", mode.as_str()),
        )),
    }
}

/// The container's process, who it runs as, and its capabilities
/// (`CAP_` names, which the default seccomp profile depends on).
fn container_process(
    input: &SpecInput<'_>,
    sc: Option<&ContainerSecurityContext>,
    image: Option<&ImageConfig>,
    privileged: bool,
    host: &dyn Host,
) -> Result<(Process, Identity, Vec<String>), SpecError> {
    let container = input.container;
    let args = process_args(container, image)?;
    let env = environment(container, input.sandbox, image, host)?;
    let cwd = working_dir(container, image)?;
    let identity = resolve_user(input.rootfs, sc, image)?;
    let cap_names = capabilities(sc, privileged, input.grantable)?;
    let oom_score_adj = oom_score_adj(container.resources(), input.oom_score_adj_min)?;
    let apparmor = if privileged || !host.apparmor_enabled() {
        None
    } else {
        apparmor_profile(sc)?
    };
    let mut user = User::default();
    user.set_uid(identity.uid)
        .set_gid(identity.gid)
        .set_umask(None)
        .set_additional_gids(Some(identity.additional_gids.clone()))
        .set_username(None);
    let mut process = blank_process();
    process
        .set_terminal(Some(container.tty))
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env))
        .set_cwd(cwd)
        .set_capabilities(Some(oci_capabilities(&cap_names)?))
        // Absent rather than `false`: see the module documentation.
        .set_no_new_privileges(sc.is_some_and(|s| s.no_new_privs).then_some(true))
        .set_apparmor_profile(apparmor)
        .set_oom_score_adj(oom_score_adj);
    Ok((process, identity, cap_names))
}

/// The namespace entries: a new mount namespace, the caller's choices
/// (the host's are left out), and a cgroup namespace on cgroup v2 for a
/// non-privileged container (hiding the host's cgroup tree, as
/// containerd does).
fn namespaces_of(ns: &Namespaces, privileged: bool, host: &dyn Host) -> Vec<LinuxNamespace> {
    let mut out = vec![namespace(LinuxNamespaceType::Mount, &Namespace::New)];
    for (typ, ns) in [
        (LinuxNamespaceType::Network, &ns.net),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
        (LinuxNamespaceType::Pid, &ns.pid),
    ] {
        if *ns != Namespace::Host {
            out.push(namespace(typ, ns));
        }
    }
    if let Some(u) = &ns.user {
        let user = u.path.clone().map_or(Namespace::New, Namespace::Join);
        out.push(namespace(LinuxNamespaceType::User, &user));
    }
    if !privileged && host.cgroup2_unified() {
        out.push(namespace(LinuxNamespaceType::Cgroup, &Namespace::New));
    }
    out
}

/// Masked and read-only paths: exactly the CRI's lists (kubelet sends the
/// defaults), the runc defaults for an empty list, none when privileged.
/// An empty list cannot be told from a missing one in protobuf, so a pod
/// asking for `procMount: Unmasked` still gets the defaults.
fn masked_and_readonly(
    sc: Option<&ContainerSecurityContext>,
    privileged: bool,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if privileged {
        return (None, None);
    }
    let or_default = |given: Option<&Vec<String>>, default: &[&str]| {
        Some(match given {
            Some(g) if !g.is_empty() => g.clone(),
            _ => default.iter().map(|p| p.to_string()).collect(),
        })
    };
    (
        or_default(sc.map(|s| &s.masked_paths), &DEFAULT_MASKED_PATHS),
        or_default(sc.map(|s| &s.readonly_paths), &DEFAULT_READONLY_PATHS),
    )
}

/// A process with every field set to "nothing special": root, `/`, no
/// capabilities, no rlimits.
fn blank_process() -> Process {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(Capabilities::new()))
        .set_effective(Some(Capabilities::new()))
        .set_inheritable(Some(Capabilities::new()))
        .set_permitted(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    let mut p = Process::default();
    p.set_terminal(Some(false))
        .set_console_size(None)
        .set_user(User::default())
        .set_args(None)
        .set_command_line(None)
        .set_env(Some(vec![DEFAULT_PATH.to_string()]))
        .set_cwd(PathBuf::from("/"))
        .set_capabilities(Some(caps))
        .set_rlimits(None)
        .set_no_new_privileges(None)
        .set_apparmor_profile(None)
        .set_oom_score_adj(None)
        .set_selinux_label(None)
        .set_io_priority(None)
        .set_scheduler(None)
        .set_exec_cpu_affinity(None);
    p
}

/// CRI `command` replaces the image's Entrypoint and `args` its Cmd; a
/// command without args drops the Cmd too (Docker's rules).
fn process_args(
    c: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, SpecError> {
    let mut command = c.command.clone();
    let mut args = c.args.clone();
    if command.is_empty() {
        let image_cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
        let image_entrypoint = image
            .and_then(|i| i.entrypoint().clone())
            .unwrap_or_default();
        if args.is_empty() {
            args = image_cmd;
        }
        // `[""]` is how an image says "no entrypoint".
        if image_entrypoint != [""] {
            command = image_entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(SpecError::invalid(
            "command",
            "an argument contains a NUL byte",
        ));
    }
    Ok(command)
}

/// Sets `entry` (`KEY=value`) in `env`, replacing the key's value; an
/// entry without `=` removes the key.
fn merge_env(env: &mut Vec<String>, entry: &str) {
    let (key, set) = match entry.split_once('=') {
        Some((k, _)) => (k, true),
        None => (entry, false),
    };
    let pos = env
        .iter()
        .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
    match (pos, set) {
        (Some(i), true) => env[i] = entry.to_string(),
        (None, true) => env.push(entry.to_string()),
        (Some(i), false) => {
            env.remove(i);
        }
        (None, false) => {}
    }
}

/// `PATH` (default), `TERM=xterm` with a tty, `HOSTNAME`, then the image's
/// env, then the CRI's, each overriding the ones before by key.
fn environment(
    c: &ContainerConfig,
    sandbox: &PodConfig,
    image: Option<&ImageConfig>,
    host: &dyn Host,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![DEFAULT_PATH.to_string()];
    if c.tty {
        merge_env(&mut env, "TERM=xterm");
    }
    let hostname = if sandbox.hostname.is_empty() {
        host.hostname().map_err(|e| SpecError::Io {
            what: "host name",
            path: PathBuf::from("/proc/sys/kernel/hostname"),
            source: e,
        })?
    } else {
        sandbox.hostname.clone()
    };
    merge_env(&mut env, &format!("HOSTNAME={hostname}"));
    for e in image.and_then(|i| i.env().as_ref()).into_iter().flatten() {
        merge_env(&mut env, e);
    }
    for kv in &c.envs {
        let value = kv.value.as_str();
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) || value.contains('\0') {
            return Err(SpecError::invalid(
                "env",
                format!(
                    "{:?}: a key must be non-empty without '=' or NUL, a value without NUL",
                    kv.key
                ),
            ));
        }
        merge_env(&mut env, &format!("{}={value}", kv.key));
    }
    Ok(env)
}

/// The CRI's working dir, else the image's, else `/`.
fn working_dir(c: &ContainerConfig, image: Option<&ImageConfig>) -> Result<PathBuf, SpecError> {
    if !c.working_dir.is_empty() {
        let p = PathBuf::from(&c.working_dir);
        if !p.is_absolute() {
            return Err(SpecError::invalid(
                "working_dir",
                format!("{:?} is not an absolute path", c.working_dir),
            ));
        }
        return Ok(p);
    }
    match image.and_then(|i| i.working_dir().as_deref()) {
        // A relative image WorkingDir is relative to `/`.
        Some(w) if !w.is_empty() => Ok(Path::new("/").join(w)),
        _ => Ok(PathBuf::from("/")),
    }
}

fn id(field: &str, v: i64) -> Result<u32, SpecError> {
    u32::try_from(v).map_err(|_| SpecError::invalid(field, format!("{v} is not a valid id")))
}

/// Who the container runs as: the CRI's user (a name wins over a uid, as
/// in containerd), else the image's; groups per the CRI policy.
fn resolve_user(
    rootfs: &Path,
    sc: Option<&ContainerSecurityContext>,
    image: Option<&ImageConfig>,
) -> Result<Identity, SpecError> {
    let uid = sc
        .and_then(|s| s.run_as_user)
        .map(|v| id("run_as_user", v))
        .transpose()?;
    let username = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|n| !n.is_empty());
    let gid = match sc.and_then(|s| s.run_as_group) {
        Some(g) if uid.is_none() && username.is_none() => {
            return Err(SpecError::GroupWithoutUser(g))
        }
        Some(g) => Some(id("run_as_group", g)?),
        None => None,
    };
    let groups = sc
        .map(|s| &s.supplemental_groups[..])
        .unwrap_or_default()
        .iter()
        .map(|g| id("supplemental_groups", *g))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = match sc.map(|s| s.supplemental_groups_policy).unwrap_or_default() {
        SupplementalGroupsPolicy::Merge => GroupsPolicy::Merge,
        SupplementalGroupsPolicy::Strict => GroupsPolicy::Strict,
    };
    let request = UserRequest {
        uid: if username.is_some() { None } else { uid },
        username,
        gid,
        supplemental_groups: &groups,
        policy,
        image_user: image.and_then(|i| i.user().as_deref()).unwrap_or(""),
    };
    Ok(user::resolve(rootfs, &request)?)
}

/// The container's capabilities (`CAP_` names, sorted).
fn capabilities(
    sc: Option<&ContainerSecurityContext>,
    privileged: bool,
    grantable: &BTreeSet<&'static str>,
) -> Result<Vec<String>, SpecError> {
    let requested = sc.and_then(|s| s.capabilities.as_ref());
    let add = requested
        .map(|c| &c.add_capabilities[..])
        .unwrap_or_default();
    let drop = requested
        .map(|c| &c.drop_capabilities[..])
        .unwrap_or_default();
    // `add_ambient_capabilities` is ignored, as in containerd: the
    // ambient set stays empty.
    Ok(caps::container_caps(privileged, add, drop, grantable)?)
}

/// Bounding = effective = permitted = `names`; inheritable and ambient
/// empty.
fn oci_capabilities(names: &[String]) -> Result<LinuxCapabilities, SpecError> {
    let set: Capabilities = names
        .iter()
        .map(|n| {
            let bare = n.strip_prefix("CAP_").unwrap_or(n);
            Capability::from_str(bare).map_err(|_| caps::CapsError::Unknown(n.clone()))
        })
        .collect::<Result<HashSet<_>, _>>()?;
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    Ok(c)
}

/// The requested `oom_score_adj`, raised to `min` if below it; `None` when
/// the CRI gives no resources.
fn oom_score_adj(resources: Option<&Resources>, min: i32) -> Result<Option<i32>, SpecError> {
    let Some(r) = resources else { return Ok(None) };
    let adj = i32::try_from(r.oom_score_adj)
        .ok()
        .filter(|a| (-1000..=1000).contains(a))
        .ok_or_else(|| {
            SpecError::invalid(
                "oom_score_adj",
                format!("{} is outside -1000..=1000", r.oom_score_adj),
            )
        })?;
    Ok(Some(adj.max(min)))
}

/// The AppArmor profile (when AppArmor is enabled): a localhost profile by
/// name. Berth loads no profile of its own, so `RuntimeDefault` runs
/// unconfined, like `Unconfined`.
fn apparmor_profile(sc: Option<&ContainerSecurityContext>) -> Result<Option<String>, SpecError> {
    let field = "apparmor profile";
    let Some(sc) = sc else { return Ok(None) };
    let localhost = |name: &str| {
        let name = name.strip_prefix("localhost/").unwrap_or(name);
        if name.is_empty() {
            Err(SpecError::invalid(
                field,
                "a localhost profile needs a name",
            ))
        } else {
            Ok(Some(name.to_string()))
        }
    };
    if let Some(SecurityProfile {
        profile_type,
        localhost_ref,
    }) = &sc.apparmor
    {
        return match profile_type {
            ProfileType::Localhost => localhost(localhost_ref),
            ProfileType::RuntimeDefault | ProfileType::Unconfined => Ok(None),
        };
    }
    let old = sc.apparmor_profile.as_str();
    match old {
        "" | "runtime/default" | "unconfined" => Ok(None),
        _ if old.starts_with("localhost/") => localhost(old),
        _ => Err(SpecError::invalid(
            field,
            format!("{old:?}: expected runtime/default, unconfined or localhost/<name>"),
        )),
    }
}

/// Device nodes and cgroup rules: the defaults (or every host device for
/// a privileged container), and the CRI's devices, which win on a path
/// clash.
fn devices_of(
    c: &ContainerConfig,
    privileged: bool,
    host: &dyn Host,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = if privileged {
        vec![devices::allow_all()]
    } else {
        devices::default_rules()
    };
    for d in &c.devices {
        let (n, r) = devices::from_cri(d)?;
        nodes.extend(n);
        rules.extend(r);
    }
    let base = if privileged {
        devices::host_devices(&host.dev_dir())?
    } else {
        devices::default_devices()
    };
    for d in base {
        if !nodes.iter().any(|n: &LinuxDevice| n.path() == d.path()) {
            nodes.push(d);
        }
    }
    Ok((nodes, rules))
}

fn namespace(typ: LinuxNamespaceType, ns: &Namespace) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ).set_path(match ns {
        Namespace::Join(p) => Some(p.clone()),
        Namespace::Host | Namespace::New => None,
    });
    n
}

fn id_mappings(maps: &[IdMap]) -> Vec<LinuxIdMapping> {
    maps.iter()
        .map(|m| {
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.size)
                .build()
                .expect("an id mapping builder cannot fail: every field has a default")
        })
        .collect()
}

/// Whether container id `id` is mapped.
fn maps(mappings: &[IdMap], id: u32) -> bool {
    mappings.iter().any(|m| {
        id >= m.container_id && u64::from(id) < u64::from(m.container_id) + u64::from(m.size)
    })
}

/// The container's annotations, plus the CRI ones containerd sets (those
/// Berth knows here: no ids).
fn annotations(c: &ContainerConfig, sandbox: &PodConfig) -> HashMap<String, String> {
    let mut a: HashMap<String, String> = c.annotations.clone().into_iter().collect();
    let prefix = "io.kubernetes.cri.";
    a.insert(format!("{prefix}container-type"), "container".into());
    a.insert(format!("{prefix}container-name"), c.metadata.name.clone());
    let i = &c.image;
    let name = if i.user_specified_image.is_empty() {
        &i.image
    } else {
        &i.user_specified_image
    };
    a.insert(format!("{prefix}image-name"), name.clone());
    let m = &sandbox.metadata;
    a.insert(format!("{prefix}sandbox-name"), m.name.clone());
    a.insert(format!("{prefix}sandbox-namespace"), m.namespace.clone());
    a.insert(format!("{prefix}sandbox-uid"), m.uid.clone());
    a
}

#[cfg(test)]
mod tests {
    use std::io;

    use berth_podspec::{Mount as CriMount, MountPropagation};

    use super::*;

    /// A host with a chosen mount table and cgroup version.
    struct FakeHost {
        mountinfo: String,
        cgroup2: bool,
        apparmor: bool,
    }

    impl FakeHost {
        fn new(mountinfo: String, cgroup2: bool) -> Self {
            FakeHost {
                mountinfo,
                cgroup2,
                apparmor: false,
            }
        }
    }

    impl Host for FakeHost {
        fn hostname(&self) -> io::Result<String> {
            Ok("fakehost".into())
        }
        fn mountinfo(&self) -> io::Result<String> {
            Ok(self.mountinfo.clone())
        }
        fn apparmor_enabled(&self) -> bool {
            self.apparmor
        }
        fn cgroup2_unified(&self) -> bool {
            self.cgroup2
        }
        fn kernel_version(&self) -> Option<(u32, u32)> {
            Some((6, 1))
        }
        fn dev_dir(&self) -> PathBuf {
            PathBuf::from("/dev")
        }
    }

    struct Setup {
        rootfs: tempfile::TempDir,
        volumes: tempfile::TempDir,
        image: ImageConfiguration,
        sandbox: PodConfig,
        grantable: BTreeSet<&'static str>,
    }

    impl Setup {
        fn new() -> Self {
            Setup {
                rootfs: tempfile::tempdir().unwrap(),
                volumes: tempfile::tempdir().unwrap(),
                image: ImageConfiguration::default(),
                sandbox: PodConfig::default(),
                grantable: caps::DEFAULT.into_iter().collect(),
            }
        }

        /// A directory under the volumes dir, canonical.
        fn volume(&self, name: &str) -> PathBuf {
            let p = self.volumes.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::canonicalize(p).unwrap()
        }

        fn build(
            &self,
            container: &ContainerConfig,
            host: &FakeHost,
        ) -> Result<Generated, SpecError> {
            build(
                &SpecInput {
                    container,
                    sandbox: &self.sandbox,
                    image: &self.image,
                    rootfs: self.rootfs.path(),
                    namespaces: Namespaces {
                        net: Namespace::New,
                        ipc: Namespace::New,
                        uts: Namespace::New,
                        pid: Namespace::New,
                        user: None,
                    },
                    pod_files: PodFiles::default(),
                    cgroups_path: PathBuf::from("/berth/c"),
                    grantable: &self.grantable,
                    oom_score_adj_min: 0,
                    cgroup: CgroupSupport::everything(false, &[]),
                    recursive_read_only: false,
                },
                host,
            )
        }
    }

    fn bind(host: &Path, container: &str, p: MountPropagation) -> CriMount {
        CriMount {
            host_path: host.display().to_string(),
            container_path: container.into(),
            propagation: p,
            ..Default::default()
        }
    }

    fn container(mounts: Vec<CriMount>) -> ContainerConfig {
        ContainerConfig {
            command: vec!["top".into()],
            mounts,
            ..Default::default()
        }
    }

    /// A mount table where `shared` is a shared mount and `slave` a slave.
    fn table(shared: &Path, slave: &Path) -> String {
        format!(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:40 / {} rw shared:7 - tmpfs tmpfs rw\n\
             3 1 0:41 / {} rw master:7 - tmpfs tmpfs rw\n",
            shared.display(),
            slave.display()
        )
    }

    fn options_of(spec: &Spec, dest: &str) -> Vec<String> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .and_then(|m| m.options().clone())
            .unwrap()
    }

    fn rootfs_propagation(spec: &Spec) -> Option<String> {
        spec.linux().as_ref().unwrap().rootfs_propagation().clone()
    }

    #[test]
    fn bidirectional_needs_a_shared_source_and_shares_the_rootfs() {
        let s = Setup::new();
        let shared = s.volume("shared");
        let slave = s.volume("slave");
        let host = FakeHost::new(table(&shared, &slave), false);
        let c = container(vec![bind(&shared, "/vol", MountPropagation::Bidirectional)]);
        let spec = s.build(&c, &host).unwrap().spec;
        assert_eq!(options_of(&spec, "/vol"), ["rbind", "rshared", "rw"]);
        assert_eq!(rootfs_propagation(&spec).as_deref(), Some("rshared"));

        // A sub-directory of the shared mount is fine too.
        let sub = shared.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let c = container(vec![bind(&sub, "/vol", MountPropagation::Bidirectional)]);
        assert!(s.build(&c, &host).is_ok());

        // A slave is not enough, nor a private mount.
        for source in [&slave, &s.volume("private")] {
            let c = container(vec![bind(source, "/vol", MountPropagation::Bidirectional)]);
            let e = s.build(&c, &host).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::FailedPrecondition);
            assert!(e.to_string().contains("is not a shared mount"), "{e}");
        }
    }

    #[test]
    fn host_to_container_needs_a_shared_or_slave_source() {
        let s = Setup::new();
        let shared = s.volume("shared");
        let slave = s.volume("slave");
        let host = FakeHost::new(table(&shared, &slave), false);
        for source in [&shared, &slave] {
            let c = container(vec![bind(
                source,
                "/vol",
                MountPropagation::HostToContainer,
            )]);
            let spec = s.build(&c, &host).unwrap().spec;
            assert_eq!(options_of(&spec, "/vol"), ["rbind", "rslave", "rw"]);
            assert_eq!(rootfs_propagation(&spec).as_deref(), Some("rslave"));
        }
        let private = s.volume("private");
        let c = container(vec![bind(
            &private,
            "/vol",
            MountPropagation::HostToContainer,
        )]);
        let e = s.build(&c, &host).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::FailedPrecondition);
        assert!(e.to_string().contains("shared or slave"), "{e}");

        // Mixed with a bidirectional mount, the rootfs is shared whatever
        // the order.
        for order in [
            [
                MountPropagation::HostToContainer,
                MountPropagation::Bidirectional,
            ],
            [
                MountPropagation::Bidirectional,
                MountPropagation::HostToContainer,
            ],
        ] {
            let c = container(vec![
                bind(&shared, "/a", order[0]),
                bind(&shared, "/b", order[1]),
            ]);
            let spec = s.build(&c, &host).unwrap().spec;
            assert_eq!(rootfs_propagation(&spec).as_deref(), Some("rshared"));
        }

        // Private mounts never look at the mount table.
        let c = container(vec![bind(&private, "/vol", MountPropagation::Private)]);
        let spec = s
            .build(&c, &FakeHost::new(String::new(), false))
            .unwrap()
            .spec;
        assert_eq!(rootfs_propagation(&spec), None);
    }

    #[test]
    fn a_cgroup_namespace_on_cgroup_v2_unless_privileged() {
        let mut s = Setup::new();
        let has_cgroupns = |spec: &Spec| {
            spec.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        let v2 = FakeHost::new(String::new(), true);
        let v1 = FakeHost::new(String::new(), false);
        let mut c = container(vec![]);
        assert!(has_cgroupns(&s.build(&c, &v2).unwrap().spec));
        assert!(!has_cgroupns(&s.build(&c, &v1).unwrap().spec));
        s.sandbox
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .privileged = true;
        assert!(!has_cgroupns(&s.build(&c, &v2).unwrap().spec));
    }

    #[test]
    fn hostname_env_falls_back_to_the_host() {
        let s = Setup::new();
        let host = FakeHost::new(String::new(), false);
        let spec = s.build(&container(vec![]), &host).unwrap().spec;
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"HOSTNAME=fakehost".to_string()), "{env:?}");
        // The image has no config at all: still a command from the CRI,
        // default PATH, no stop signal.
        assert!(env[0].starts_with("PATH="));
        assert_eq!(
            s.build(&container(vec![]), &host).unwrap().stop_signal,
            None
        );
    }

    #[test]
    fn apparmor_only_where_enabled() {
        let s = Setup::new();
        let mut c = container(vec![]);
        c.linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .apparmor = Some(SecurityProfile {
            profile_type: ProfileType::Localhost,
            localhost_ref: "berth-test".into(),
        });
        let profile = |host: &FakeHost| {
            s.build(&c, host)
                .unwrap()
                .spec
                .process()
                .as_ref()
                .unwrap()
                .apparmor_profile()
                .clone()
        };
        let mut host = FakeHost::new(String::new(), false);
        assert_eq!(profile(&host), None);
        host.apparmor = true;
        assert_eq!(profile(&host).as_deref(), Some("berth-test"));
    }

    #[test]
    fn env_merging() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        merge_env(&mut env, "A=3");
        merge_env(&mut env, "C=4");
        merge_env(&mut env, "B");
        merge_env(&mut env, "Z");
        assert_eq!(env, ["A=3", "C=4"]);
    }

    #[test]
    fn apparmor_profiles() {
        let sc = |p: Option<SecurityProfile>, old: &str| ContainerSecurityContext {
            apparmor: p,
            apparmor_profile: old.into(),
            ..Default::default()
        };
        let lh = |r: &str| {
            Some(SecurityProfile {
                profile_type: ProfileType::Localhost,
                localhost_ref: r.into(),
            })
        };
        assert_eq!(apparmor_profile(None).unwrap(), None);
        assert_eq!(
            apparmor_profile(Some(&sc(lh("my-prof"), "")))
                .unwrap()
                .as_deref(),
            Some("my-prof")
        );
        assert_eq!(
            apparmor_profile(Some(&sc(lh("localhost/my-prof"), "")))
                .unwrap()
                .as_deref(),
            Some("my-prof")
        );
        assert_eq!(
            apparmor_profile(Some(&sc(None, "localhost/old")))
                .unwrap()
                .as_deref(),
            Some("old")
        );
        assert_eq!(
            apparmor_profile(Some(&sc(None, "runtime/default"))).unwrap(),
            None
        );
        let default = Some(SecurityProfile::default());
        assert_eq!(apparmor_profile(Some(&sc(default, ""))).unwrap(), None);
        assert!(apparmor_profile(Some(&sc(lh(""), ""))).is_err());
        assert!(apparmor_profile(Some(&sc(None, "bogus"))).is_err());
    }

    #[test]
    fn every_known_capability_converts() {
        let all: Vec<String> = caps::NAMES.iter().map(|n| format!("CAP_{n}")).collect();
        let c = oci_capabilities(&all).unwrap();
        assert_eq!(c.bounding().as_ref().unwrap().len(), caps::NAMES.len());
        assert!(c.ambient().as_ref().unwrap().is_empty());
        assert!(matches!(
            oci_capabilities(&["CAP_FLY".to_string()]),
            Err(SpecError::Caps(caps::CapsError::Unknown(_)))
        ));
    }

    #[test]
    fn id_maps() {
        let m = [IdMap {
            container_id: 0,
            host_id: 1000,
            size: 5,
        }];
        assert!(maps(&m, 0) && maps(&m, 4) && !maps(&m, 5));
        let top = [IdMap {
            container_id: u32::MAX,
            host_id: 0,
            size: 1,
        }];
        assert!(maps(&top, u32::MAX));
    }
}
