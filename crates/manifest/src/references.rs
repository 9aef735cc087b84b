//! The ConfigMaps and Secrets a pod refers to, so a caller can check they were
//! loaded beside it before running it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Names (in the pod's namespace) of the objects a pod refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMaps used by volumes, projected volumes, `env` and `envFrom`.
    pub config_maps: BTreeSet<String>,
    /// Secrets used by volumes, projected volumes, `env`, `envFrom` and `imagePullSecrets`.
    pub secrets: BTreeSet<String>,
    /// Whether any reference is marked `optional: true` (missing objects are then allowed
    /// for that reference only; the sets above hold required and optional names alike).
    pub has_optional: bool,
}

/// Lists the ConfigMaps and Secrets `pod` refers to.
///
/// A real kubelet (v1.34+, `PreventStaticPodAPIReferences`) rejects static pods
/// with any such reference; Berth serves them from the manifest directory instead.
pub fn references(pod: &Pod) -> References {
    let mut r = References::default();
    let Some(spec) = pod.spec.as_ref() else {
        return r;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = v.config_map.as_ref() {
            r.config_maps.insert(c.name.clone());
            r.has_optional |= c.optional == Some(true);
        }
        if let Some(s) = v.secret.as_ref() {
            if let Some(name) = s.secret_name.as_ref() {
                r.secrets.insert(name.clone());
            }
            r.has_optional |= s.optional == Some(true);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = source.config_map.as_ref() {
                r.config_maps.insert(c.name.clone());
                r.has_optional |= c.optional == Some(true);
            }
            if let Some(s) = source.secret.as_ref() {
                r.secrets.insert(s.name.clone());
                r.has_optional |= s.optional == Some(true);
            }
        }
    }
    for secret in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(secret.name.clone());
    }
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = e.value_from.as_ref() else {
                continue;
            };
            if let Some(k) = from.config_map_key_ref.as_ref() {
                r.config_maps.insert(k.name.clone());
                r.has_optional |= k.optional == Some(true);
            }
            if let Some(k) = from.secret_key_ref.as_ref() {
                r.secrets.insert(k.name.clone());
                r.has_optional |= k.optional == Some(true);
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(c) = e.config_map_ref.as_ref() {
                r.config_maps.insert(c.name.clone());
                r.has_optional |= c.optional == Some(true);
            }
            if let Some(s) = e.secret_ref.as_ref() {
                r.secrets.insert(s.name.clone());
                r.has_optional |= s.optional == Some(true);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_kind_of_reference() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm-vol"}},
                    {"name": "b", "secret": {"secretName": "sec-vol", "optional": true}},
                    {"name": "c", "projected": {"sources": [
                        {"configMap": {"name": "cm-proj"}}, {"secret": {"name": "sec-proj"}}]}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-from"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "sec-env", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}}
                ]}]
            }
        }))
        .expect("pod");
        let r = references(&pod);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            r.config_maps,
            set(&["cm-env", "cm-from", "cm-proj", "cm-vol"])
        );
        assert_eq!(r.secrets, set(&["pull", "sec-env", "sec-proj", "sec-vol"]));
        assert!(r.has_optional);
    }
}
