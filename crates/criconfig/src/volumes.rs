//! A pod's volumes on disk, laid out as the kubelet's volume plugins lay
//! them out under `<pods_dir>/<uid>/volumes/<plugin>/<name>`, and the
//! kubelet-managed `/etc/hosts`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIVolumeFile, KeyToPath, Pod, SecretProjection, Volume,
};

use crate::env::{field_ref_value, resource_field_value, secret_data, ObjectSource};
use crate::error::{ConfigError, VolumeError};
use crate::node::NodeSettings;
use crate::quantity::parse_quantity;
use crate::resources::pod_memory_limit;

/// Which plugin provides a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// `emptyDir` on disk.
    EmptyDir,
    /// `emptyDir` with `medium: Memory` (a tmpfs).
    EmptyDirMemory,
    /// `hostPath`.
    HostPath,
    /// `configMap`.
    ConfigMap,
    /// `secret` (on a tmpfs).
    Secret,
    /// `downwardAPI` (on a tmpfs).
    DownwardApi,
    /// `projected` (on a tmpfs).
    Projected,
}

impl VolumeKind {
    fn plugin_dir(self) -> Option<&'static str> {
        match self {
            VolumeKind::EmptyDir | VolumeKind::EmptyDirMemory => Some("kubernetes.io~empty-dir"),
            VolumeKind::HostPath => None,
            VolumeKind::ConfigMap => Some("kubernetes.io~configmap"),
            VolumeKind::Secret => Some("kubernetes.io~secret"),
            VolumeKind::DownwardApi => Some("kubernetes.io~downward-api"),
            VolumeKind::Projected => Some("kubernetes.io~projected"),
        }
    }

    fn on_tmpfs(self) -> bool {
        matches!(
            self,
            VolumeKind::EmptyDirMemory
                | VolumeKind::Secret
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }
}

/// One volume of a pod as containers mount it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    /// Which plugin provides it.
    pub kind: VolumeKind,
    /// Its directory (or file) on the host.
    pub host_path: PathBuf,
    /// Whether every mount of it is read-only (configMap, secret, downwardAPI, projected).
    pub read_only: bool,
    /// Whether the kubelet asks for SELinux relabelling of it.
    pub selinux_relabel: bool,
}

/// A pod's volumes by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    volumes: BTreeMap<String, PodVolume>,
}

impl PodVolumes {
    /// Where each of the pod's volumes lives, without touching the disk.
    pub fn plan(pod: &Pod, node: &NodeSettings) -> Result<PodVolumes, VolumeError> {
        let uid = checked_uid(pod)?;
        let mut volumes = BTreeMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let kind = volume_kind(v)?;
            let host_path = match (kind, &v.host_path) {
                (VolumeKind::HostPath, Some(hp)) => PathBuf::from(&hp.path),
                _ => {
                    let plugin = kind.plugin_dir().unwrap_or_default();
                    node.pods_dir
                        .join(&uid)
                        .join("volumes")
                        .join(plugin)
                        .join(&v.name)
                }
            };
            volumes.insert(
                v.name.clone(),
                PodVolume {
                    kind,
                    host_path,
                    read_only: matches!(
                        kind,
                        VolumeKind::ConfigMap
                            | VolumeKind::Secret
                            | VolumeKind::DownwardApi
                            | VolumeKind::Projected
                    ),
                    selinux_relabel: kind != VolumeKind::HostPath,
                },
            );
        }
        Ok(PodVolumes { volumes })
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Option<&PodVolume> {
        self.volumes.get(name)
    }

    /// Every volume by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PodVolume)> {
        self.volumes.iter()
    }
}

fn checked_uid(pod: &Pod) -> Result<String, VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    check_uid(&uid)?;
    Ok(uid)
}

fn check_uid(uid: &str) -> Result<(), VolumeError> {
    if uid.is_empty() || uid == "." || uid == ".." || uid.contains('/') || uid.contains('\0') {
        return Err(VolumeError::BadUid(uid.to_string()));
    }
    Ok(())
}

fn volume_kind(v: &Volume) -> Result<VolumeKind, VolumeError> {
    if let Some(e) = &v.empty_dir {
        return Ok(if e.medium.as_deref() == Some("Memory") {
            VolumeKind::EmptyDirMemory
        } else {
            VolumeKind::EmptyDir
        });
    }
    if v.host_path.is_some() {
        return Ok(VolumeKind::HostPath);
    }
    if v.config_map.is_some() {
        return Ok(VolumeKind::ConfigMap);
    }
    if v.secret.is_some() {
        return Ok(VolumeKind::Secret);
    }
    if v.downward_api.is_some() {
        return Ok(VolumeKind::DownwardApi);
    }
    if v.projected.is_some() {
        return Ok(VolumeKind::Projected);
    }
    let value = serde_json::to_value(v).unwrap_or_default();
    let kind = value
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "name").cloned())
        .unwrap_or_else(|| "none".to_string());
    Err(VolumeError::Unsupported {
        name: v.name.clone(),
        kind,
    })
}

fn mkdir(path: &Path, mode: u32) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| VolumeError::io("create directory", path, e))
}

fn is_mount_point(path: &Path) -> bool {
    mount_points_under(path).iter().any(|m| m == path)
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The size of a memory-backed volume (kubelet `calculateEmptyDirMemorySize`):
/// node allocatable memory, lowered to the pod's memory limit and then to
/// the volume's `sizeLimit` when those are smaller.
fn tmpfs_size(pod: &Pod, v: &Volume, node: &NodeSettings) -> Result<i64, VolumeError> {
    let invalid = |e: ConfigError| VolumeError::Invalid {
        name: v.name.clone(),
        problem: e.to_string(),
    };
    let mut size = node
        .allocatable
        .get("memory")
        .map(|q| q.value())
        .unwrap_or(node.memory_capacity);
    if let Some(limit) = pod_memory_limit(pod, node).map_err(invalid)? {
        if limit > 0 && limit <= size {
            size = limit;
        }
    }
    if let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
        let limit = parse_quantity(&q.0)
            .map_err(|reason| VolumeError::Invalid {
                name: v.name.clone(),
                problem: format!("sizeLimit {:?}: {reason}", q.0),
            })?
            .value();
        if limit > 0 && limit <= size {
            size = limit;
        }
    }
    Ok(size)
}

fn mount_tmpfs(path: &Path, size: Option<i64>) -> Result<(), VolumeError> {
    if is_mount_point(path) {
        return Ok(());
    }
    let data = size
        .filter(|s| *s > 0 && *s < i64::MAX)
        .map(|s| format!("size={s}"));
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        data.as_deref(),
    )
    .map_err(|source| VolumeError::Mount {
        action: "mount tmpfs on",
        path: path.to_path_buf(),
        source,
    })
}

fn set_group_ownership(path: &Path, gid: i64, read_only: bool) -> Result<(), VolumeError> {
    let gid = nix::unistd::Gid::from_raw(gid as u32);
    let meta = std::fs::symlink_metadata(path).map_err(|e| VolumeError::io("inspect", path, e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        None,
        Some(gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| VolumeError::io("change group of", path, std::io::Error::from(e)))?;
    let mut mode = meta.permissions().mode() & 0o7777;
    if meta.is_dir() {
        mode |= 0o2000 | 0o050 | if read_only { 0 } else { 0o020 };
    } else {
        mode |= 0o040 | if read_only { 0 } else { 0o020 };
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("change mode of", path, e))?;
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).map_err(|e| VolumeError::io("read directory", path, e))?
        {
            let entry = entry.map_err(|e| VolumeError::io("read directory", path, e))?;
            set_group_ownership(&entry.path(), i64::from(gid.as_raw()), read_only)?;
        }
    }
    Ok(())
}

/// A file to write into a volume: relative path, contents, mode.
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn check_item_path(volume: &str, p: &str) -> Result<(), VolumeError> {
    let path = Path::new(p);
    let bad = p.is_empty()
        || path.is_absolute()
        || p.starts_with("..")
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)));
    if bad {
        return Err(VolumeError::Invalid {
            name: volume.to_string(),
            problem: format!("invalid item path {p:?}"),
        });
    }
    Ok(())
}

/// Writes `payload` into `dir` as the kubelet's atomic writer does: the files
/// go into a fresh `..<timestamp>` directory, `..data` is switched to it with
/// a rename, and each top-level name is a symlink into `..data`.
fn atomic_write(volume: &str, dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    for p in payload.keys() {
        check_item_path(volume, p)?;
    }
    let old_target = std::fs::read_link(dir.join("..data")).ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts_name = format!(
        "..{}.{:09}",
        now.as_secs(),
        rand::random::<u32>() % 1_000_000_000
    );
    let ts_dir = dir.join(&ts_name);
    mkdir(&ts_dir, 0o755)?;
    for (rel, (data, mode)) in payload {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            mkdir(parent, 0o755)?;
        }
        std::fs::write(&path, data).map_err(|e| VolumeError::io("write", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode & 0o7777))
            .map_err(|e| VolumeError::io("change mode of", &path, e))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts_name, &tmp_link)
        .map_err(|e| VolumeError::io("create symlink", &tmp_link, e))?;
    std::fs::rename(&tmp_link, dir.join("..data"))
        .map_err(|e| VolumeError::io("rename", &tmp_link, e))?;
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)
                .map_err(|e| VolumeError::io("create symlink", &link, e))?;
        }
    }
    // stale top-level links from an earlier payload
    for entry in std::fs::read_dir(dir).map_err(|e| VolumeError::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| VolumeError::io("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || tops.contains(&name) {
            continue;
        }
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_target {
        if old != Path::new(&ts_name)
            && old.to_string_lossy().starts_with("..")
            && old.components().count() == 1
        {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(())
}

fn key_payload(
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    what: &str,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            (v.clone(), it.mode.map(|m| m as u32).unwrap_or(default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::Source {
                            name: volume.to_string(),
                            problem: format!(
                                "configured to use key {} of {what}, which does not exist",
                                it.key
                            ),
                        })
                    }
                }
            }
        }
    }
    Ok(())
}

fn config_map_payload(
    pod: &Pod,
    volume: &str,
    src: &ConfigMapProjection,
    default_mode: u32,
    objects: &dyn ObjectSource,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let optional = src.optional.unwrap_or(false);
    let Some(cm) = objects.config_map(ns, &src.name) else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::Source {
            name: volume.into(),
            problem: format!("ConfigMap {ns}/{} not found", src.name),
        });
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    key_payload(
        volume,
        &data,
        src.items.as_ref(),
        default_mode,
        optional,
        &format!("ConfigMap {ns}/{}", src.name),
        out,
    )
}

fn secret_payload(
    pod: &Pod,
    volume: &str,
    src: &SecretProjection,
    default_mode: u32,
    objects: &dyn ObjectSource,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let optional = src.optional.unwrap_or(false);
    let Some(secret) = objects.secret(ns, &src.name) else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::Source {
            name: volume.into(),
            problem: format!("Secret {ns}/{} not found", src.name),
        });
    };
    key_payload(
        volume,
        &secret_data(&secret),
        src.items.as_ref(),
        default_mode,
        optional,
        &format!("Secret {ns}/{}", src.name),
        out,
    )
}

fn downward_payload(
    pod: &Pod,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    node: &NodeSettings,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let invalid = |e: ConfigError| VolumeError::Invalid {
        name: volume.to_string(),
        problem: e.to_string(),
    };
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_ref_value(pod, f, &[], node).map_err(invalid)?
        } else if let Some(r) = &it.resource_field_ref {
            resource_field_value(pod, "", r, node).map_err(invalid)?
        } else {
            continue;
        };
        out.insert(
            it.path.clone(),
            (
                value.into_bytes(),
                it.mode.map(|m| m as u32).unwrap_or(default_mode),
            ),
        );
    }
    Ok(())
}

fn check_host_path(name: &str, path: &Path, kind: Option<&str>) -> Result<(), VolumeError> {
    let problem = |p: &str| VolumeError::HostPathType {
        name: name.into(),
        path: path.to_path_buf(),
        problem: p.into(),
    };
    let meta = std::fs::metadata(path);
    match kind.unwrap_or("") {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(problem("exists but is not a directory")),
            Err(_) => mkdir(path, 0o755),
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(problem("is not a directory")),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(problem("exists but is not a file")),
            Err(_) => {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path);
                f.map(|_| ())
                    .map_err(|e| VolumeError::io("create file", path, e))
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(problem("is not a file")),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(problem("is not a socket file")),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(problem("is not a character device")),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(problem("is not a block device")),
        },
        other => Err(problem(&format!("has an unknown hostPath type {other:?}"))),
    }
}

/// Creates the pod's volumes on disk (blocking; run it off the async
/// runtime): emptyDir directories (tmpfs for `medium: Memory`, sized by
/// `sizeLimit`), hostPath type checks (creating for the *OrCreate types),
/// and configMap, secret, downwardAPI and projected contents written
/// atomically (`..data` symlink layout; secrets, downwardAPI and projected
/// on a tmpfs). `fsGroup` becomes the group of emptyDir and written
/// volumes. Calling it again refreshes the contents.
pub fn prepare_volumes(
    pod: &Pod,
    node: &NodeSettings,
    objects: &dyn ObjectSource,
) -> Result<PodVolumes, VolumeError> {
    let plan = PodVolumes::plan(pod, node)?;
    let uid = checked_uid(pod)?;
    mkdir(&node.pods_dir.join(&uid), 0o750)?;
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group);
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(pv) = plan.get(&v.name) else {
            continue;
        };
        if pv.kind == VolumeKind::HostPath {
            if let Some(hp) = &v.host_path {
                check_host_path(&v.name, &pv.host_path, hp.type_.as_deref())?;
            }
            continue;
        }
        mkdir(&pv.host_path, 0o750)?;
        if pv.kind.on_tmpfs() {
            mount_tmpfs(&pv.host_path, Some(tmpfs_size(pod, v, node)?))?;
        }
        let mut payload = Payload::new();
        match pv.kind {
            VolumeKind::EmptyDir | VolumeKind::EmptyDirMemory => {
                std::fs::set_permissions(&pv.host_path, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| VolumeError::io("change mode of", &pv.host_path, e))?;
                if let Some(g) = fs_group {
                    set_group_ownership(&pv.host_path, g, false)?;
                }
                continue;
            }
            VolumeKind::ConfigMap => {
                if let Some(src) = &v.config_map {
                    let proj = ConfigMapProjection {
                        name: src.name.clone(),
                        items: src.items.clone(),
                        optional: src.optional,
                    };
                    config_map_payload(
                        pod,
                        &v.name,
                        &proj,
                        src.default_mode.unwrap_or(0o644) as u32,
                        objects,
                        &mut payload,
                    )?;
                }
            }
            VolumeKind::Secret => {
                if let Some(src) = &v.secret {
                    let proj = SecretProjection {
                        name: src.secret_name.clone().unwrap_or_default(),
                        items: src.items.clone(),
                        optional: src.optional,
                    };
                    secret_payload(
                        pod,
                        &v.name,
                        &proj,
                        src.default_mode.unwrap_or(0o644) as u32,
                        objects,
                        &mut payload,
                    )?;
                }
            }
            VolumeKind::DownwardApi => {
                if let Some(src) = &v.downward_api {
                    let mode = src.default_mode.unwrap_or(0o644) as u32;
                    downward_payload(
                        pod,
                        &v.name,
                        src.items.as_deref().unwrap_or_default(),
                        mode,
                        node,
                        &mut payload,
                    )?;
                }
            }
            VolumeKind::Projected => {
                if let Some(src) = &v.projected {
                    let mode = src.default_mode.unwrap_or(0o644) as u32;
                    for s in src.sources.iter().flatten() {
                        if let Some(cm) = &s.config_map {
                            config_map_payload(pod, &v.name, cm, mode, objects, &mut payload)?;
                        } else if let Some(sec) = &s.secret {
                            secret_payload(pod, &v.name, sec, mode, objects, &mut payload)?;
                        } else if let Some(d) = &s.downward_api {
                            downward_payload(
                                pod,
                                &v.name,
                                d.items.as_deref().unwrap_or_default(),
                                mode,
                                node,
                                &mut payload,
                            )?;
                        } else {
                            return Err(VolumeError::Unsupported {
                                name: v.name.clone(),
                                kind:
                                    "projected source other than configMap, secret and downwardAPI"
                                        .into(),
                            });
                        }
                    }
                }
            }
            VolumeKind::HostPath => {}
        }
        atomic_write(&v.name, &pv.host_path, &payload)?;
        if let Some(g) = fs_group {
            set_group_ownership(&pv.host_path, g, true)?;
        }
    }
    Ok(plan)
}

/// Unmounts every mount under `<pods_dir>/<uid>` (tmpfs volumes) and removes
/// that directory. Symlinks are removed, never followed, and hostPath
/// volumes live outside it, so their contents are never touched. Fails
/// without removing anything when a mount cannot be undone.
pub fn remove_volumes(pod_uid: &str, node: &NodeSettings) -> Result<(), VolumeError> {
    check_uid(pod_uid)?;
    let dir = node.pods_dir.join(pod_uid);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let mut mounts = mount_points_under(&dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        if let Err(e) = nix::mount::umount(m.as_path()) {
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH).map_err(
                    |source| VolumeError::Mount {
                        action: "unmount",
                        path: m.clone(),
                        source,
                    },
                )?;
            }
        }
    }
    if let Some(left) = mount_points_under(&dir).first() {
        return Err(VolumeError::Mount {
            action: "unmount",
            path: left.clone(),
            source: nix::errno::Errno::EBUSY,
        });
    }
    std::fs::remove_dir_all(&dir).map_err(|e| VolumeError::io("remove", &dir, e))
}

/// The pod's managed hosts file: `<pods_dir>/<uid>/etc-hosts`.
pub fn etc_hosts_path(pod_uid: &str, node: &NodeSettings) -> PathBuf {
    node.pods_dir.join(pod_uid).join("etc-hosts")
}

/// The content the kubelet writes to the pod's hosts file: for host-network
/// pods the node's `/etc/hosts` (given as `node_hosts`) under a header,
/// otherwise localhost entries and one line per pod IP; `hostAliases` last.
pub fn etc_hosts_content(
    pod: &Pod,
    node: &NodeSettings,
    pod_ips: &[IpAddr],
    node_hosts: &str,
) -> Result<String, ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let mut out = String::new();
    if spec.host_network.unwrap_or(false) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(node_hosts);
    } else {
        let (host, domain) = crate::dns::pod_hostname_and_domain(pod, node)?;
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        for ip in pod_ips {
            if domain.is_empty() {
                out.push_str(&format!("{ip}\t{host}\n"));
            } else {
                out.push_str(&format!("{ip}\t{host}.{domain}\t{host}\n"));
            }
        }
    }
    if let Some(aliases) = spec.host_aliases.as_ref().filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    Ok(out)
}

/// Writes the pod's hosts file (mode 0644) as the kubelet does before each
/// container it creates (blocking; reads `/etc/hosts` for host-network pods).
pub fn write_etc_hosts(
    pod: &Pod,
    node: &NodeSettings,
    pod_ips: &[IpAddr],
) -> Result<PathBuf, VolumeError> {
    let uid = checked_uid(pod)?;
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let node_hosts = if host_network {
        std::fs::read_to_string("/etc/hosts")
            .map_err(|e| VolumeError::io("read", "/etc/hosts", e))?
    } else {
        String::new()
    };
    let content =
        etc_hosts_content(pod, node, pod_ips, &node_hosts).map_err(|e| VolumeError::Invalid {
            name: "etc-hosts".into(),
            problem: e.to_string(),
        })?;
    mkdir(&node.pods_dir.join(&uid), 0o750)?;
    let path = etc_hosts_path(&uid, node);
    std::fs::write(&path, content).map_err(|e| VolumeError::io("write", &path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| VolumeError::io("change mode of", &path, e))?;
    Ok(path)
}
