//! Container environment variables (kubelet `makeEnvironmentVariables`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};

use crate::error::ConfigError;
use crate::expand::expand;
use crate::node::NodeSettings;
use crate::quantity::{quantity, ParsedQuantity};
use crate::resources::{limits, requests};

/// Where ConfigMaps and Secrets come from (the kubelet asks the API server;
/// a standalone node reads them from its own store).
pub trait ObjectSource {
    /// The ConfigMap `namespace/name`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    /// The Secret `namespace/name`, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
}

/// An [`ObjectSource`] without any objects.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObjects;

impl ObjectSource for NoObjects {
    fn config_map(&self, _namespace: &str, _name: &str) -> Option<ConfigMap> {
        None
    }
    fn secret(&self, _namespace: &str, _name: &str) -> Option<Secret> {
        None
    }
}

/// A Secret's values as bytes (`data`, then `stringData` for keys not in `data`).
pub(crate) fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.entry(k.clone())
            .or_insert_with(|| v.as_bytes().to_vec());
    }
    out
}

fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    // Go's strconv.Quote differs from Rust's escaping only for unusual
    // characters; JSON string escaping is the same for printable text.
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn subscript(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (base, key) = s.split_once("['")?;
    if base.is_empty() {
        return None;
    }
    Some((base, key))
}

/// The value of a `fieldRef` (downward API) for this pod.
pub(crate) fn field_ref_value(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    pod_ips: &[IpAddr],
    node: &NodeSettings,
) -> Result<String, ConfigError> {
    let path = sel.field_path.as_str();
    let m = &pod.metadata;
    if let Some((base, key)) = subscript(path) {
        return match base {
            "metadata.annotations" => Ok(m
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default()),
            "metadata.labels" => Ok(m
                .labels
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default()),
            _ => Err(ConfigError::Invalid(format!(
                "fieldPath {path:?} does not support subscript"
            ))),
        };
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| node.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => node
            .node_ips
            .first()
            .map(|ip| ip.to_string())
            .ok_or_else(|| {
                ConfigError::Invalid("status.hostIP requested but the node has no address".into())
            })?,
        "status.hostIPs" => node
            .node_ips
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "status.podIP" => pod_ips.first().map(|ip| ip.to_string()).unwrap_or_default(),
        "status.podIPs" => pod_ips
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(","),
        other => {
            return Err(ConfigError::Invalid(format!(
                "unsupported fieldPath: {other}"
            )))
        }
    })
}

fn div_ceil(a: i128, b: i128) -> i128 {
    if b == 0 {
        return 0;
    }
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

/// The value of a `resourceFieldRef` for `default_container` (or the
/// container it names); limits left unset read as node allocatable.
pub(crate) fn resource_field_value(
    pod: &Pod,
    default_container: &str,
    sel: &ResourceFieldSelector,
    node: &NodeSettings,
) -> Result<String, ConfigError> {
    let name = sel
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(default_container);
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let c: &Container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "resourceFieldRef: container {name:?} not found in the pod"
            ))
        })?;
    let divisor = match &sel.divisor {
        Some(d) => quantity(|| "resourceFieldRef divisor".to_string(), &d.0)?,
        None => ParsedQuantity::ZERO,
    };
    let divisor = if divisor.is_zero() {
        crate::quantity::parse_quantity("1").unwrap_or_default()
    } else {
        divisor
    };
    let (kind, res) = sel.resource.split_once('.').ok_or_else(|| {
        ConfigError::Invalid(format!("unsupported container resource: {}", sel.resource))
    })?;
    let list = match kind {
        "limits" => {
            let mut l = limits(c)?;
            for (r, q) in &node.allocatable {
                if ["cpu", "memory", "ephemeral-storage"].contains(&r.as_str()) {
                    l.entry(r.clone()).or_insert(*q);
                }
            }
            l
        }
        "requests" => requests(c)?,
        _ => {
            return Err(ConfigError::Invalid(format!(
                "unsupported container resource: {}",
                sel.resource
            )))
        }
    };
    let q = list.get(res).copied().unwrap_or_default();
    let v = if res == "cpu" {
        div_ceil(
            i128::from(q.milli_value()),
            i128::from(divisor.milli_value()),
        )
    } else if res == "memory" || res == "ephemeral-storage" || res.starts_with("hugepages-") {
        div_ceil(i128::from(q.value()), i128::from(divisor.value()))
    } else {
        return Err(ConfigError::Invalid(format!(
            "unsupported container resource: {}",
            sel.resource
        )));
    };
    Ok(v.to_string())
}

/// The container's environment in the kubelet's terms: `envFrom` sources,
/// then `env` entries (values expanded with the variables defined before
/// them, `valueFrom` resolved). The kubelet's order is a Go map's (random);
/// here it is the order of first definition.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ips: &[IpAddr],
    node: &NodeSettings,
    objects: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, k: String, v: String) {
        match env.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1 = v,
            None => env.push((k, v)),
        }
    }
    let mut cms: BTreeMap<String, Option<ConfigMap>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut get_cm = |name: &str| {
        cms.entry(name.to_string())
            .or_insert_with(|| objects.config_map(ns, name))
            .clone()
    };
    let mut get_secret = |name: &str| {
        secrets
            .entry(name.to_string())
            .or_insert_with(|| objects.secret(ns, name))
            .clone()
    };
    let missing = |kind: &'static str, name: &str| ConfigError::MissingObject {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        container: container.name.clone(),
    };

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match get_cm(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(missing("ConfigMap", &r.name)),
            }
        } else if let Some(r) = &from.secret_ref {
            match get_secret(&r.name) {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(missing("Secret", &r.name)),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.clone().unwrap_or_default();
        let value = if !literal.is_empty() {
            expand(&literal, |n| {
                env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_ref_value(pod, f, pod_ips, node)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field_value(pod, &container.name, r, node)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match get_cm(&r.name) {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                kind: "ConfigMap",
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => continue,
                    None => return Err(missing("ConfigMap", &r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match get_secret(&r.name) {
                    Some(s) => match secret_data(&s).remove(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                kind: "Secret",
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            })
                        }
                    },
                    None if optional => continue,
                    None => return Err(missing("Secret", &r.name)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}
