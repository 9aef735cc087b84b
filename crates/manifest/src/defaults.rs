//! The defaults the API server (and the kubelet's decoder) fills in before a pod
//! is validated and run, and the identity a kubelet gives a static pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, HTTPGetAction, LifecycleHandler, Pod, PodSecurityContext,
    PodSpec, Probe, Secret, Toleration, Volume,
};
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};

/// Annotation holding the static pod's hash (equal to its uid).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation naming the pod's config source ("file").
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation with the time the kubelet first saw the pod (RFC 3339, nanoseconds).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";

/// File mode 0644, the API's default for configMap, secret, downwardAPI and projected volumes.
const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Applies the API server's defaults for a Pod (`pkg/apis/core/v1/defaults.go` and
/// the generated defaulters), as the kubelet's decoder does for a manifest file.
pub fn apply_pod_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);

    // Negative grace periods are forced to 1 by the v1 -> internal conversion.
    if let Some(grace) = spec.termination_grace_period_seconds {
        if grace < 0 {
            spec.termination_grace_period_seconds = Some(1);
        }
    }

    // SetDefaults_ResourceList: values finer than a millicore are rounded up.
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(resources) = c.resources.as_mut() {
            for list in [resources.limits.as_mut(), resources.requests.as_mut()]
                .into_iter()
                .flatten()
            {
                for value in list.values_mut() {
                    if let Some(rounded) = crate::quantity::round_up_to_millis(value) {
                        *value = rounded;
                    }
                }
            }
        }
    }

    // SetDefaults_Pod: requests default to limits.
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(resources) = c.resources.as_mut() {
            if let Some(limits) = resources.limits.as_ref() {
                let requests = resources.requests.get_or_insert_with(BTreeMap::new);
                for (name, value) in limits {
                    requests
                        .entry(name.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
    }
    if spec.enable_service_links.is_none() {
        spec.enable_service_links = Some(true);
    }
    if spec.host_network == Some(true) {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }

    // SetDefaults_PodSpec.
    if spec.dns_policy.as_deref().unwrap_or("").is_empty() {
        spec.dns_policy = Some("ClusterFirst".to_string());
    }
    if spec.restart_policy.as_deref().unwrap_or("").is_empty() {
        spec.restart_policy = Some("Always".to_string());
    }
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext::default());
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(30);
    }
    if spec.scheduler_name.as_deref().unwrap_or("").is_empty() {
        spec.scheduler_name = Some("default-scheduler".to_string());
    }

    for volume in spec.volumes.iter_mut().flatten() {
        default_volume(volume);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    for ec in spec.ephemeral_containers.iter_mut().flatten() {
        if ec.image_pull_policy.as_deref().unwrap_or("").is_empty() {
            ec.image_pull_policy = Some(default_pull_policy(ec.image.as_deref().unwrap_or("")));
        }
        if ec
            .termination_message_path
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            ec.termination_message_path = Some("/dev/termination-log".to_string());
        }
        if ec
            .termination_message_policy
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            ec.termination_message_policy = Some("File".to_string());
        }
        for port in ec.ports.iter_mut().flatten() {
            if port.protocol.as_deref().unwrap_or("").is_empty() {
                port.protocol = Some("TCP".to_string());
            }
        }
        default_env(ec.env.as_deref_mut());
    }
}

/// The pull policy the API gives a container without one: `Always` when the
/// image's tag is `latest` (or there is neither tag nor digest), else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> String {
    if image_tag(image).as_deref() == Some("latest") {
        "Always".to_string()
    } else {
        "IfNotPresent".to_string()
    }
}

/// The tag of an image reference as the API reads it: the explicit tag, `latest`
/// when there is neither tag nor digest, `None` for a digest without a tag.
fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag.to_string()),
        None if digest.is_some() => None,
        None => Some("latest".to_string()),
    }
}

fn default_volume(volume: &mut Volume) {
    let value = serde_json::to_value(&*volume).unwrap_or(serde_json::Value::Null);
    let has_source = value
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k != "name"));
    if !has_source {
        volume.empty_dir = Some(Default::default());
    }
    if let Some(image) = volume.image.as_mut() {
        if image.pull_policy.as_deref().unwrap_or("").is_empty() {
            image.pull_policy = Some(default_pull_policy(
                image.reference.as_deref().unwrap_or(""),
            ));
        }
    }
    if let Some(s) = volume.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(c) = volume.config_map.as_mut() {
        c.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(d) = volume.downward_api.as_mut() {
        d.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                default_api_version(&mut f.api_version);
            }
        }
    }
    if let Some(h) = volume.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(p) = volume.projected.as_mut() {
        p.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in p.sources.iter_mut().flatten() {
            if let Some(d) = source.downward_api.as_mut() {
                for item in d.items.iter_mut().flatten() {
                    if let Some(f) = item.field_ref.as_mut() {
                        default_api_version(&mut f.api_version);
                    }
                }
            }
            if let Some(t) = source.service_account_token.as_mut() {
                t.expiration_seconds.get_or_insert(3600);
            }
        }
    }
}

fn default_api_version(api_version: &mut Option<String>) {
    if api_version.as_deref().unwrap_or("").is_empty() {
        *api_version = Some("v1".to_string());
    }
}

fn default_env(env: Option<&mut [EnvVar]>) {
    for var in env.into_iter().flatten() {
        if let Some(from) = var.value_from.as_mut() {
            if let Some(f) = from.field_ref.as_mut() {
                default_api_version(&mut f.api_version);
            }
            if let Some(f) = from.file_key_ref.as_mut() {
                f.optional.get_or_insert(false);
            }
        }
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")));
    }
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".to_string());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".to_string());
    }
    for port in c.ports.iter_mut().flatten() {
        if port.protocol.as_deref().unwrap_or("").is_empty() {
            port.protocol = Some("TCP".to_string());
        }
    }
    default_env(c.env.as_deref_mut());
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = c.lifecycle.as_mut() {
        for handler in [lifecycle.post_start.as_mut(), lifecycle.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            default_lifecycle_handler(handler);
        }
    }
}

fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        default_http_get(h);
    }
    if let Some(g) = p.grpc.as_mut() {
        g.service.get_or_insert_with(String::new);
    }
}

fn default_lifecycle_handler(h: &mut LifecycleHandler) {
    if let Some(h) = h.http_get.as_mut() {
        default_http_get(h);
    }
}

fn default_http_get(h: &mut HTTPGetAction) {
    if h.path.as_deref().unwrap_or("").is_empty() {
        h.path = Some("/".to_string());
    }
    if h.scheme.as_deref().unwrap_or("").is_empty() {
        h.scheme = Some("HTTP".to_string());
    }
}

/// Applies the API defaults of a ConfigMap: namespace `default`, `data` present.
pub fn apply_config_map_defaults(cm: &mut ConfigMap) {
    if cm.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        cm.metadata.namespace = Some("default".to_string());
    }
    cm.data.get_or_insert_with(BTreeMap::new);
}

/// Applies the API defaults of a Secret: namespace `default`, type `Opaque`, and
/// `stringData` merged over `data` (then cleared), as the API server stores it.
pub fn apply_secret_defaults(secret: &mut Secret) {
    if secret
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        secret.metadata.namespace = Some("default".to_string());
    }
    if secret.type_.as_deref().unwrap_or("").is_empty() {
        secret.type_ = Some("Opaque".to_string());
    }
    if let Some(strings) = secret.string_data.take() {
        if !strings.is_empty() {
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            for (key, value) in strings {
                data.insert(key, ByteString(value.into_bytes()));
            }
        }
    }
}

/// The uid a manifest without one gets: 32 hex characters of a SHA-256 over the
/// defaulted pod's JSON, the node name and the file path. The same file content
/// on the same node and path always gives the same uid; any change gives a new one.
pub fn static_pod_uid(pod: &Pod, node_name: &str, file: &str) -> String {
    let mut hasher = Sha256::new();
    // Serialising a k8s-openapi object is deterministic: struct fields in a
    // fixed order, maps ordered by key.
    let json = serde_json::to_vec(pod).unwrap_or_default();
    hasher.update(&json);
    hasher.update(format!("host:{node_name}").as_bytes());
    hasher.update(format!("file:{file}").as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The name a static pod gets on a node: `<name>-<lowercased node name>`.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// Gives a defaulted pod from a manifest file the identity a kubelet gives a
/// static pod (`applyDefaults` in pkg/kubelet/config/common.go): uid (kept when
/// the manifest has one), name `<name>-<node>`, namespace `default` when unset,
/// `spec.nodeName` (lowercased), the config hash/source/seen annotations, the
/// `{operator: Exists, effect: NoExecute}` toleration and phase Pending.
/// Call it after [`apply_pod_defaults`]: the uid hashes the defaulted pod.
pub fn apply_static_pod_identity(pod: &mut Pod, node_name: &str, file: &str, seen: &str) {
    let uid = match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => static_pod_uid(pod, node_name, file),
    };
    pod.metadata.uid = Some(uid.clone());
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.name = Some(static_pod_name(&name, node_name));
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some("default".to_string());
    }
    pod.metadata.self_link = None;
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    // The kubelet's node name is always lowercase (it lowercases the hostname
    // and any override); do the same so the pod validates.
    spec.node_name = Some(node_name.to_lowercase());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), uid);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string());
    annotations.insert(CONFIG_SEEN_ANNOTATION.to_string(), seen.to_string());

    add_or_update_toleration(
        spec.tolerations.get_or_insert_with(Vec::new),
        Toleration {
            operator: Some("Exists".to_string()),
            effect: Some("NoExecute".to_string()),
            ..Default::default()
        },
    );
    pod.status.get_or_insert_with(Default::default).phase = Some("Pending".to_string());
}

/// Adds a toleration unless one with the same key, operator, value and effect
/// is there already, in which case that one is replaced.
fn add_or_update_toleration(tolerations: &mut Vec<Toleration>, new: Toleration) {
    let norm = |s: &Option<String>| s.clone().unwrap_or_default();
    let same = |t: &Toleration| {
        norm(&t.key) == norm(&new.key)
            && norm(&t.effect) == norm(&new.effect)
            && norm(&t.value) == norm(&new.value)
            && (norm(&t.operator) == norm(&new.operator)
                || (norm(&t.operator).is_empty() && norm(&new.operator) == "Equal")
                || (norm(&t.operator) == "Equal" && norm(&new.operator).is_empty()))
    };
    match tolerations.iter_mut().find(|t| same(t)) {
        Some(existing) => *existing = new,
        None => tolerations.push(new),
    }
}

/// Now as the kubelet writes `kubernetes.io/config.seen`: RFC 3339 in UTC with
/// up to nine fractional digits, trailing zeros dropped.
pub fn rfc3339_nano_now() -> String {
    rfc3339_nano(chrono::Utc::now())
}

fn rfc3339_nano(t: chrono::DateTime<chrono::Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(
            default_pull_policy("docker.io/library/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(
            default_pull_policy("busybox@sha256:0123456789abcdef"),
            "IfNotPresent"
        );
        assert_eq!(
            default_pull_policy("busybox:latest@sha256:0123456789abcdef"),
            "Always"
        );
    }

    #[test]
    fn rfc3339_nano_trims_zeros() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single();
        let t = t.expect("valid date");
        assert_eq!(rfc3339_nano(t), "2026-01-02T03:04:05Z");
        let t = t + chrono::Duration::nanoseconds(120_000_000);
        assert_eq!(rfc3339_nano(t), "2026-01-02T03:04:05.12Z");
    }

    #[test]
    fn toleration_is_added_once() {
        let mut list = vec![Toleration {
            operator: Some("Exists".to_string()),
            effect: Some("NoExecute".to_string()),
            toleration_seconds: Some(5),
            ..Default::default()
        }];
        add_or_update_toleration(
            &mut list,
            Toleration {
                operator: Some("Exists".to_string()),
                effect: Some("NoExecute".to_string()),
                ..Default::default()
            },
        );
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].toleration_seconds, None);
    }

    #[test]
    fn secret_string_data_overrides_data() {
        let mut s = Secret {
            data: Some(BTreeMap::from([
                ("a".to_string(), ByteString(b"1".to_vec())),
                ("b".to_string(), ByteString(b"2".to_vec())),
            ])),
            string_data: Some(BTreeMap::from([("b".to_string(), "two".to_string())])),
            ..Default::default()
        };
        apply_secret_defaults(&mut s);
        let data = s.data.expect("data");
        assert_eq!(data["a"].0, b"1");
        assert_eq!(data["b"].0, b"two");
        assert!(s.string_data.is_none());
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
    }
}
