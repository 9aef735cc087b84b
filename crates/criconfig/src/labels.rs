//! The labels and annotations the kubelet puts on sandboxes and containers,
//! the container hash, and parsing them back.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, LifecycleHandler, Pod};

use crate::error::ConfigError;
use crate::gojson;

/// Label: the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label: the container's name.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Annotation: the pod's deletion grace period, when it is being deleted.
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation: the pod's termination grace period.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: the container hash, in lowercase hex.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Annotation: the container's restart count.
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation: the container's termination message path.
pub const CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's termination message policy.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the container's preStop handler as JSON.
pub const CONTAINER_PRESTOP_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Annotation: the container's ports as JSON.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The kubelet's `HashContainer`: FNV-32a over the spew rendering
/// (`([]uint8)[123 34 ...]`) of the Go JSON of `{"image": ..., "name": ...}`.
/// Only the name and image count, so other changes keep the hash.
pub fn container_hash(container: &Container) -> u64 {
    let image = container.image.as_deref().unwrap_or_default();
    let json = format!(
        "{{\"image\":{},\"name\":{}}}",
        gojson::string(image),
        gojson::string(&container.name)
    );
    let mut spew = String::with_capacity(json.len() * 4 + 12);
    spew.push_str("([]uint8)[");
    for (i, b) in json.bytes().enumerate() {
        if i > 0 {
            spew.push(' ');
        }
        spew.push_str(&b.to_string());
    }
    spew.push(']');
    u64::from(fnv32a(spew.as_bytes()))
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The sandbox labels: the pod's own labels plus its name, namespace and UID.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(POD_NAME_LABEL.to_string(), pod_name(pod).to_string());
    labels.insert(
        POD_NAMESPACE_LABEL.to_string(),
        pod_namespace(pod).to_string(),
    );
    labels.insert(POD_UID_LABEL.to_string(), pod_uid(pod).to_string());
    labels
}

/// The container labels: pod name, namespace, UID and container name.
pub fn container_labels(container: &Container, pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME_LABEL.to_string(), pod_name(pod).to_string()),
        (
            POD_NAMESPACE_LABEL.to_string(),
            pod_namespace(pod).to_string(),
        ),
        (POD_UID_LABEL.to_string(), pod_uid(pod).to_string()),
        (CONTAINER_NAME_LABEL.to_string(), container.name.clone()),
    ])
}

/// The container annotations: hash, restart count, termination message
/// path and policy, grace periods, preStop handler and ports.
pub fn container_annotations(
    container: &Container,
    pod: &Pod,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(
        CONTAINER_HASH_ANNOTATION.to_string(),
        format!("{:x}", container_hash(container)),
    );
    a.insert(
        CONTAINER_RESTART_COUNT_ANNOTATION.to_string(),
        restart_count.to_string(),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.to_string(),
        container
            .termination_message_path
            .clone()
            .unwrap_or_default(),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.to_string(),
        container
            .termination_message_policy
            .clone()
            .unwrap_or_default(),
    );
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        a.insert(
            POD_DELETION_GRACE_PERIOD_ANNOTATION.to_string(),
            g.to_string(),
        );
    }
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.to_string(),
            g.to_string(),
        );
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        a.insert(
            CONTAINER_PRESTOP_ANNOTATION.to_string(),
            gojson::lifecycle_handler(pre_stop),
        );
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        a.insert(
            CONTAINER_PORTS_ANNOTATION.to_string(),
            gojson::container_ports(ports),
        );
    }
    a
}

/// What the kubelet reads back from a CRI container's labels and annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// The pod's name.
    pub pod_name: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container_name: String,
    /// The container hash (0 when the annotation is missing or malformed, as the kubelet does).
    pub hash: u64,
    /// The restart count (0 when missing or malformed).
    pub restart_count: u32,
    /// The pod's deletion grace period, if recorded.
    pub pod_deletion_grace_period: Option<i64>,
    /// The pod's termination grace period, if recorded.
    pub termination_grace_period: Option<i64>,
    /// The termination message path.
    pub termination_message_path: String,
    /// The termination message policy ("File" or "FallbackToLogsOnError").
    pub termination_message_policy: String,
    /// The preStop handler, if recorded.
    pub pre_stop: Option<LifecycleHandler>,
    /// The container's ports, if recorded.
    pub ports: Vec<ContainerPort>,
}

fn required(labels: &HashMap<String, String>, key: &'static str) -> Result<String, ConfigError> {
    labels.get(key).cloned().ok_or(ConfigError::BadLabel {
        key,
        problem: "missing".to_string(),
    })
}

/// Parses a CRI container's labels and annotations (kubelet
/// `getContainerInfoFromLabels` and `getContainerInfoFromAnnotations`).
/// The four identity labels are required; malformed annotations read as
/// absent, as in the kubelet (which only logs them).
pub fn container_info(
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
) -> Result<ContainerInfo, ConfigError> {
    let hash = annotations
        .get(CONTAINER_HASH_ANNOTATION)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let int = |key: &str| annotations.get(key).and_then(|v| v.parse::<i64>().ok());
    Ok(ContainerInfo {
        pod_name: required(labels, POD_NAME_LABEL)?,
        pod_namespace: required(labels, POD_NAMESPACE_LABEL)?,
        pod_uid: required(labels, POD_UID_LABEL)?,
        container_name: required(labels, CONTAINER_NAME_LABEL)?,
        hash,
        restart_count: annotations
            .get(CONTAINER_RESTART_COUNT_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        pod_deletion_grace_period: int(POD_DELETION_GRACE_PERIOD_ANNOTATION),
        termination_grace_period: int(POD_TERMINATION_GRACE_PERIOD_ANNOTATION),
        termination_message_path: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        termination_message_policy: annotations
            .get(CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        pre_stop: annotations
            .get(CONTAINER_PRESTOP_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok()),
        ports: annotations
            .get(CONTAINER_PORTS_ANNOTATION)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default(),
    })
}

/// What the kubelet reads back from a CRI sandbox's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// The pod's name.
    pub pod_name: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The pod's own labels (without the kubelet's).
    pub pod_labels: HashMap<String, String>,
}

/// Parses a CRI sandbox's labels (name, namespace and UID are required).
pub fn sandbox_info(labels: &HashMap<String, String>) -> Result<SandboxInfo, ConfigError> {
    let pod_labels = labels
        .iter()
        .filter(|(k, _)| {
            ![POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(SandboxInfo {
        pod_name: required(labels, POD_NAME_LABEL)?,
        pod_namespace: required(labels, POD_NAMESPACE_LABEL)?,
        pod_uid: required(labels, POD_UID_LABEL)?,
        pod_labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    #[test]
    fn hashes_match_the_kubelet() {
        assert_eq!(
            format!(
                "{:x}",
                container_hash(&container("main", "docker.io/library/busybox:1.36.1"))
            ),
            "2986f237"
        );
        assert_eq!(
            format!(
                "{:x}",
                container_hash(&container("web", "docker.io/library/nginx:latest"))
            ),
            "a92d0ca9"
        );
        assert_eq!(
            format!(
                "{:x}",
                container_hash(&container("sidecar", "docker.io/library/busybox:1.36.1"))
            ),
            "27210f41"
        );
    }

    #[test]
    fn container_info_round_trip() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"terminationGracePeriodSeconds": 7, "containers": []}
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "img", "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "lifecycle": {"preStop": {"httpGet": {"path": "/q", "port": "http", "scheme": "HTTP"}}}
        }))
        .unwrap();
        let info = container_info(
            &container_labels(&c, &pod),
            &container_annotations(&c, &pod, 3),
        )
        .unwrap();
        assert_eq!(info.pod_name, "p");
        assert_eq!(info.pod_namespace, "ns");
        assert_eq!(info.pod_uid, "u1");
        assert_eq!(info.container_name, "c");
        assert_eq!(info.hash, container_hash(&c));
        assert_eq!(info.restart_count, 3);
        assert_eq!(info.termination_grace_period, Some(7));
        assert_eq!(info.termination_message_policy, "File");
        assert_eq!(info.ports, c.ports.clone().unwrap());
        assert_eq!(info.pre_stop, c.lifecycle.as_ref().unwrap().pre_stop);
        let missing = container_info(&HashMap::new(), &HashMap::new());
        assert!(matches!(
            missing,
            Err(ConfigError::BadLabel {
                key: POD_NAME_LABEL,
                ..
            })
        ));
    }

    #[test]
    fn sandbox_info_splits_labels() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"tier": "x"}}
        }))
        .unwrap();
        let info = sandbox_info(&pod_labels(&pod)).unwrap();
        assert_eq!(info.pod_uid, "u1");
        assert_eq!(
            info.pod_labels,
            HashMap::from([("tier".to_string(), "x".to_string())])
        );
    }
}
