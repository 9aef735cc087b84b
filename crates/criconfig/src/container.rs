//! CreateContainer's config (kubelet `generateContainerConfig`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

use crate::env::{container_env, ObjectSource};
use crate::error::ConfigError;
use crate::expand::expand;
use crate::labels::{container_annotations, container_labels};
use crate::node::{NodeSettings, DEFAULT_READONLY_PATHS};
use crate::resources::container_resources;
use crate::sandbox::{pod_logs_directory, supplemental_groups_policy};
use crate::volumes::{etc_hosts_path, PodVolumes};

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// An init container that runs to completion.
    Init,
    /// A restartable init container (`restartPolicy: Always`).
    Sidecar,
    /// A regular container.
    Regular,
    /// An ephemeral (debug) container.
    Ephemeral,
}

/// The user an image runs as, from ImageStatus (`uid` when numeric, else `username`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// The numeric UID, when the image's user is numeric.
    pub uid: Option<i64>,
    /// The user name, when it is not numeric.
    pub username: String,
}

/// What the kubelet knows when it creates a container.
pub struct ContainerContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container (an ephemeral container converted to a Container).
    pub container: &'a Container,
    /// Which kind of container it is.
    pub kind: ContainerKind,
    /// Its restart count (the metadata attempt).
    pub restart_count: u32,
    /// The config the sandbox was created with (its namespace options are reused).
    pub sandbox_config: &'a cri::PodSandboxConfig,
    /// The pod's IPs from PodSandboxStatus (for `status.podIP(s)` and /etc/hosts).
    pub pod_ips: &'a [IpAddr],
    /// The image reference the pull returned (sent as `image.image`).
    pub image_ref: &'a str,
    /// The image's user, from ImageStatus.
    pub image_user: ImageUser,
    /// The pod's volumes (see `prepare_volumes`).
    pub volumes: &'a PodVolumes,
    /// ConfigMaps and Secrets for `env` and `envFrom`.
    pub objects: &'a dyn ObjectSource,
    /// The file created for the termination message (see
    /// [`create_termination_message_file`]); no mount when `None`.
    pub termination_message_file: Option<&'a Path>,
    /// For an ephemeral container with `targetContainerName`: the target's container ID.
    pub target_container_id: Option<&'a str>,
    /// The safe binds of the container's subpaths, by volume mount index
    /// (see [`crate::prepare_sub_paths`]); a subpath without one is an
    /// error.
    pub sub_paths: &'a std::collections::BTreeMap<usize, PathBuf>,
    /// The node's settings.
    pub node: &'a NodeSettings,
}

/// An ephemeral container as a [`Container`] (the fields they share), for
/// [`ContainerContext::container`]; its `targetContainerName` is dropped
/// (pass the target's ID as [`ContainerContext::target_container_id`]).
pub fn ephemeral_as_container(e: &k8s_openapi::api::core::v1::EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        command: e.command.clone(),
        args: e.args.clone(),
        working_dir: e.working_dir.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        ports: e.ports.clone(),
        resources: e.resources.clone(),
        resize_policy: e.resize_policy.clone(),
        restart_policy: e.restart_policy.clone(),
        restart_policy_rules: e.restart_policy_rules.clone(),
        volume_mounts: e.volume_mounts.clone(),
        volume_devices: e.volume_devices.clone(),
        liveness_probe: e.liveness_probe.clone(),
        readiness_probe: e.readiness_probe.clone(),
        startup_probe: e.startup_probe.clone(),
        lifecycle: e.lifecycle.clone(),
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        security_context: e.security_context.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
    }
}

/// The container's log path relative to the pod's log directory: `<name>/<restart>.log`.
pub fn container_log_path(container_name: &str, restart_count: u32) -> String {
    format!("{container_name}/{restart_count}.log")
}

/// Creates what the kubelet creates on disk before CreateContainer (blocking):
/// the container's log directory (`<pod log dir>/<name>`, mode 0755) and an
/// empty termination message file `<pods_dir>/<uid>/containers/<name>/<8 hex>`
/// (mode 0666), whose path it returns.
pub fn create_termination_message_file(
    pod: &Pod,
    container_name: &str,
    node: &NodeSettings,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let log_dir = pod_logs_directory(pod, node).join(container_name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&log_dir)?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_empty() || uid.contains('/') || uid == "." || uid == ".." {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("pod uid {uid:?} is not a directory name"),
        ));
    }
    let dir = node
        .pods_dir
        .join(uid)
        .join("containers")
        .join(container_name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&dir)?;
    let path = dir.join(format!("{:08x}", rand::random::<u32>()));
    std::fs::File::create(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(path)
}

/// The merged pod and container security context (kubelet `DetermineEffectiveSecurityContext`).
fn effective_security_context(pod: &Pod, c: &Container) -> SecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut eff = SecurityContext::default();
    if let Some(p) = psc {
        eff.se_linux_options = p.se_linux_options.clone();
        eff.windows_options = p.windows_options.clone();
        eff.run_as_user = p.run_as_user;
        eff.run_as_group = p.run_as_group;
        eff.run_as_non_root = p.run_as_non_root;
    }
    let Some(csc) = c.security_context.as_ref() else {
        return eff;
    };
    if psc.is_none() {
        return csc.clone();
    }
    if csc.se_linux_options.is_some() {
        eff.se_linux_options = csc.se_linux_options.clone();
    }
    if csc.capabilities.is_some() {
        eff.capabilities = csc.capabilities.clone();
    }
    if csc.privileged.is_some() {
        eff.privileged = csc.privileged;
    }
    if csc.run_as_user.is_some() {
        eff.run_as_user = csc.run_as_user;
    }
    if csc.run_as_group.is_some() {
        eff.run_as_group = csc.run_as_group;
    }
    if csc.run_as_non_root.is_some() {
        eff.run_as_non_root = csc.run_as_non_root;
    }
    if csc.read_only_root_filesystem.is_some() {
        eff.read_only_root_filesystem = csc.read_only_root_filesystem;
    }
    if csc.allow_privilege_escalation.is_some() {
        eff.allow_privilege_escalation = csc.allow_privilege_escalation;
    }
    if csc.proc_mount.is_some() {
        eff.proc_mount = csc.proc_mount.clone();
    }
    eff
}

fn verify_run_as_non_root(pod: &Pod, c: &Container, user: &ImageUser) -> Result<(), ConfigError> {
    let eff = effective_security_context(pod, c);
    if eff.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_name = format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    );
    let err = |reason: String| {
        Err(ConfigError::RunAsNonRoot {
            container: c.name.clone(),
            reason,
        })
    };
    if let Some(u) = eff.run_as_user {
        if u == 0 {
            return err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_name:?}, container: {})",
                c.name
            ));
        }
        return Ok(());
    }
    match user.uid {
        Some(0) => err(format!("container has runAsNonRoot and image will run as root (pod: {pod_name:?}, container: {})", c.name)),
        None if !user.username.is_empty() => err(format!(
            "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root (pod: {pod_name:?}, container: {})",
            user.username, c.name
        )),
        _ => Ok(()),
    }
}

fn profile(
    kind: cri::security_profile::ProfileType,
    localhost_ref: String,
) -> cri::SecurityProfile {
    cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref,
    }
}

fn seccomp_profile(
    pod: &Pod,
    c: &Container,
    node: &NodeSettings,
) -> Result<cri::SecurityProfile, ConfigError> {
    use cri::security_profile::ProfileType;
    let field = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()?
                .security_context
                .as_ref()?
                .seccomp_profile
                .as_ref()
        });
    let Some(sp) = field else {
        return Ok(if node.seccomp_default {
            profile(ProfileType::RuntimeDefault, String::new())
        } else {
            profile(ProfileType::Unconfined, String::new())
        });
    };
    match sp.type_.as_str() {
        "RuntimeDefault" => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        "Localhost" => match sp.localhost_profile.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Ok(profile(
                ProfileType::Localhost,
                node.seccomp_profile_root
                    .join(p)
                    .to_string_lossy()
                    .into_owned(),
            )),
            None => Err(ConfigError::Invalid(
                "localhostProfile must be set if seccompProfile type is Localhost.".into(),
            )),
        },
        _ => Ok(profile(ProfileType::Unconfined, String::new())),
    }
}

fn apparmor_profile(
    pod: &Pod,
    c: &Container,
) -> Result<(Option<cri::SecurityProfile>, String), ConfigError> {
    use cri::security_profile::ProfileType;
    let field = c
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()?
                .security_context
                .as_ref()?
                .app_armor_profile
                .as_ref()
        });
    let (kind, local) = match field {
        Some(p) => (p.type_.clone(), p.localhost_profile.clone()),
        None => {
            let key = format!("container.apparmor.security.beta.kubernetes.io/{}", c.name);
            match pod.metadata.annotations.as_ref().and_then(|a| a.get(&key)) {
                None => return Ok((None, String::new())),
                Some(v) if v == "runtime/default" => ("RuntimeDefault".to_string(), None),
                Some(v) if v == "unconfined" => ("Unconfined".to_string(), None),
                Some(v) => match v.strip_prefix("localhost/") {
                    Some(name) => ("Localhost".to_string(), Some(name.to_string())),
                    None => return Ok((None, String::new())),
                },
            }
        }
    };
    match kind.as_str() {
        "RuntimeDefault" => Ok((
            Some(profile(ProfileType::RuntimeDefault, String::new())),
            "runtime/default".into(),
        )),
        "Unconfined" => Ok((
            Some(profile(ProfileType::Unconfined, String::new())),
            "unconfined".into(),
        )),
        "Localhost" => {
            let name = local.ok_or_else(|| {
                ConfigError::Invalid("missing localhost apparmor profile name".into())
            })?;
            Ok((
                Some(profile(ProfileType::Localhost, name.clone())),
                format!("localhost/{name}"),
            ))
        }
        other => Err(ConfigError::Invalid(format!(
            "unknown apparmor profile type: {other:?}"
        ))),
    }
}

fn security_context(
    ctx: &ContainerContext,
) -> Result<cri::LinuxContainerSecurityContext, ConfigError> {
    let (pod, c, node) = (ctx.pod, ctx.container, ctx.node);
    let eff = effective_security_context(pod, c);
    let mut sc = cri::LinuxContainerSecurityContext {
        capabilities: eff.capabilities.as_ref().map(|caps| cri::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        selinux_options: eff.se_linux_options.as_ref().map(|se| cri::SeLinuxOption {
            user: se.user.clone().unwrap_or_default(),
            role: se.role.clone().unwrap_or_default(),
            r#type: se.type_.clone().unwrap_or_default(),
            level: se.level.clone().unwrap_or_default(),
        }),
        run_as_user: eff.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: eff.run_as_group.map(|value| cri::Int64Value { value }),
        privileged: eff.privileged.unwrap_or(false),
        readonly_rootfs: eff.read_only_root_filesystem.unwrap_or(false),
        ..Default::default()
    };
    sc.seccomp = Some(seccomp_profile(pod, c, node)?);
    let (apparmor, apparmor_profile) = apparmor_profile(pod, c)?;
    sc.apparmor = apparmor;
    // Deprecated in the CRI, but the kubelet still fills it for older runtimes.
    #[allow(deprecated)]
    {
        sc.apparmor_profile = apparmor_profile;
    }
    if sc.run_as_user.is_none() {
        sc.run_as_user = ctx.image_user.uid.map(|value| cri::Int64Value { value });
        sc.run_as_username = ctx.image_user.username.clone();
    }
    let mut ns = ctx
        .sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .ok_or(ConfigError::MissingField(
            "sandbox_config.linux.security_context.namespace_options",
        ))?;
    if let Some(target) = ctx.target_container_id {
        if ns.pid == cri::NamespaceMode::Container as i32 {
            ns.pid = cri::NamespaceMode::Target as i32;
            ns.target_id = target.to_string();
        }
    }
    sc.namespace_options = Some(ns);
    if let Some(psc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        if let Some(g) = psc.fs_group {
            sc.supplemental_groups.push(g);
        }
        sc.supplemental_groups
            .extend(psc.supplemental_groups.iter().flatten().copied());
        sc.supplemental_groups_policy =
            supplemental_groups_policy(psc.supplemental_groups_policy.as_deref())?;
    }
    sc.no_new_privs = eff.allow_privilege_escalation == Some(false);
    if eff.proc_mount.as_deref() != Some("Unmasked") {
        sc.masked_paths = node.masked_paths.clone();
        sc.readonly_paths = DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    Ok(sc)
}

fn propagation(p: Option<&str>) -> Result<i32, ConfigError> {
    match p {
        None | Some("None") => Ok(cri::MountPropagation::PropagationPrivate as i32),
        Some("HostToContainer") => Ok(cri::MountPropagation::PropagationHostToContainer as i32),
        Some("Bidirectional") => Ok(cri::MountPropagation::PropagationBidirectional as i32),
        Some(other) => Err(ConfigError::Invalid(format!(
            "invalid MountPropagation mode: {other}"
        ))),
    }
}

/// A volume mount's subpath (`subPath`, or `subPathExpr` expanded with the
/// container's environment), checked as the kubelet checks it; None when
/// it has none.
pub(crate) fn sub_path_of(
    vm: &k8s_openapi::api::core::v1::VolumeMount,
    env: &[(String, String)],
) -> Result<Option<String>, ConfigError> {
    let mut sub_path = vm.sub_path.clone().unwrap_or_default();
    if let Some(expr) = vm.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
        sub_path = expand_sub_path_expr(expr, env)?;
    }
    if sub_path.is_empty() {
        return Ok(None);
    }
    if sub_path.starts_with('/') {
        return Err(ConfigError::Invalid(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        )));
    }
    if sub_path.split('/').any(|p| p == "..") {
        return Err(ConfigError::Invalid(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        )));
    }
    Ok(Some(sub_path))
}

fn expand_sub_path_expr(expr: &str, env: &[(String, String)]) -> Result<String, ConfigError> {
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let out = expand(expr, |k| {
        let v = env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if v.is_empty() {
            missing.borrow_mut().insert(k.to_string());
        }
        Some(v)
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

fn make_mounts(
    ctx: &ContainerContext,
    env: &[(String, String)],
) -> Result<Vec<cri::Mount>, ConfigError> {
    let (pod, c, node) = (ctx.pod, ctx.container, ctx.node);
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let mut mount_hosts = !ctx.pod_ips.is_empty() || spec.host_network.unwrap_or(false);
    let mut mounts = Vec::new();
    for (index, vm) in c.volume_mounts.iter().flatten().enumerate() {
        mount_hosts = mount_hosts && vm.mount_path != "/etc/hosts";
        let vol = ctx
            .volumes
            .get(&vm.name)
            .ok_or_else(|| ConfigError::MissingVolume {
                container: c.name.clone(),
                volume: vm.name.clone(),
            })?;
        let mut host_path = vol.host_path.clone();
        if let Some(sub) = sub_path_of(vm, env)? {
            // Only the safe bind of the subpath, never a path joined here
            // that a container could turn into a symlink.
            host_path = ctx.sub_paths.get(&index).cloned().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "SubPath `{sub}` of volume {:?} was not prepared (prepare_sub_paths)",
                    vm.name
                ))
            })?;
        }
        let container_path = if vm.mount_path.starts_with('/') {
            vm.mount_path.clone()
        } else {
            format!("/{}", vm.mount_path)
        };
        let read_only = vm.read_only.unwrap_or(false) || vol.read_only;
        let rro = match vm.recursive_read_only.as_deref() {
            None | Some("Disabled") => false,
            Some("Enabled") => {
                if !vm.read_only.unwrap_or(false) {
                    return Err(ConfigError::Invalid(format!(
                        "failed to resolve recursive read-only mode: volume {:?} requested recursive read-only mode, but it is not read-only",
                        vm.name
                    )));
                }
                if !node.supports_recursive_read_only {
                    return Err(ConfigError::Invalid(format!(
                        "failed to resolve recursive read-only mode: volume {:?} requested recursive read-only mode, but it is not supported by the runtime",
                        vm.name
                    )));
                }
                true
            }
            Some("IfPossible") => {
                vm.read_only.unwrap_or(false) && node.supports_recursive_read_only
            }
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "unknown recursive read-only mode {other:?}"
                )));
            }
        };
        mounts.push(cri::Mount {
            container_path,
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: read_only,
            selinux_relabel: vol.selinux_relabel && node.selinux_enabled,
            propagation: propagation(vm.mount_propagation.as_deref())?,
            recursive_read_only: rro,
            ..Default::default()
        });
    }
    if mount_hosts {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        mounts.push(cri::Mount {
            container_path: "/etc/hosts".to_string(),
            host_path: etc_hosts_path(uid, node).to_string_lossy().into_owned(),
            selinux_relabel: node.selinux_enabled,
            ..Default::default()
        });
    }
    if let Some(file) = ctx.termination_message_file {
        if let Some(path) = c
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            mounts.push(cri::Mount {
                container_path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
                host_path: file.to_string_lossy().into_owned(),
                selinux_relabel: node.selinux_enabled,
                ..Default::default()
            });
        }
    }
    Ok(mounts)
}

/// CreateContainer's config for a container of the pod, as kubelet v1.36
/// builds it. The environment's order is the order of first definition
/// (the kubelet's is random).
pub fn container_config(ctx: &ContainerContext) -> Result<cri::ContainerConfig, ConfigError> {
    let (pod, c, node) = (ctx.pod, ctx.container, ctx.node);
    let env = container_env(pod, c, ctx.pod_ips, node, ctx.objects)?;
    let mounts = make_mounts(ctx, &env)?;
    verify_run_as_non_root(pod, c, &ctx.image_user)?;
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, lookup))
        .collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, lookup)).collect();

    let resources = container_resources(pod, c, node)?;
    let security = security_context(ctx)?;
    let mut mounts = mounts;
    if let Some(userns) = security
        .namespace_options
        .as_ref()
        .and_then(|n| n.userns_options.as_ref())
    {
        for m in &mut mounts {
            m.uid_mappings = userns.uids.clone();
            m.gid_mappings = userns.gids.clone();
        }
    }
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: ctx.restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: ctx.image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        devices: Vec::new(),
        labels: container_labels(c, pod),
        annotations: container_annotations(c, pod, ctx.restart_count),
        log_path: container_log_path(&c.name, ctx.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security),
        }),
        windows: None,
        cdi_devices: Vec::new(),
        stop_signal: 0,
    })
}
