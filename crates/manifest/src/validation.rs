//! A practical subset of the API server's pod, ConfigMap and Secret validation
//! (`pkg/apis/core/validation`), with the same field paths and wording.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, HTTPGetAction, LifecycleHandler, ObjectFieldSelector, Pod,
    PodSpec, Probe, ResourceRequirements, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::quantity::{parse_quantity, QUANTITY_PATTERN};

/// One validation failure: the field path and the API's reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// Reason, e.g. `Required value`.
    pub reason: String,
}

/// A value shown in an error message, printed as the API prints it.
enum Bad<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl std::fmt::Display for Bad<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Str(s) => write!(f, "{}", serde_json::Value::String((*s).to_string())),
            Bad::Int(i) => write!(f, "{i}"),
            Bad::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, reason: String) {
        self.0.push(FieldError {
            field: field.to_string(),
            reason,
        });
    }
    fn required(&mut self, field: &str, detail: &str) {
        self.push(field, with_detail("Required value".to_string(), detail));
    }
    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(field, with_detail("Forbidden".to_string(), detail));
    }
    fn invalid(&mut self, field: &str, value: Bad<'_>, detail: &str) {
        self.push(
            field,
            with_detail(format!("Invalid value: {value}"), detail),
        );
    }
    fn duplicate(&mut self, field: &str, value: &str) {
        self.push(field, format!("Duplicate value: {}", Bad::Str(value)));
    }
    fn not_found(&mut self, field: &str, value: &str) {
        self.push(field, format!("Not found: {}", Bad::Str(value)));
    }
    fn unsupported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| Bad::Str(s).to_string()).collect();
        self.push(
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                Bad::Str(value),
                list.join(", ")
            ),
        );
    }
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const RELAXED_ENV_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";
const NEGATIVE_MSG: &str = "must be greater than or equal to 0";
const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const INIT_ONLY_MSG: &str = "may not be set for init containers without restartPolicy=Always";

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn is_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain_chars(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_label_chars)
}

/// Problems with `value` as an RFC 1123 label (container, volume, port names; namespaces).
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label_chars(value) {
        if is_subdomain_chars(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Problems with `value` as an RFC 1123 subdomain (object names).
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !is_subdomain_chars(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            &format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*"),
            &["example.com"],
        ));
    }
    errs
}

fn dns_label(errs: &mut Errors, value: &str, field: &str) {
    for msg in dns1123_label_errors(value) {
        errs.invalid(field, Bad::Str(value), &msg);
    }
}

fn dns_subdomain(errs: &mut Errors, value: &str, field: &str) {
    for msg in dns1123_subdomain_errors(value) {
        errs.invalid(field, Bad::Str(value), &msg);
    }
}

fn config_key(errs: &mut Errors, key: &str, field: &str) {
    if key.len() > 253 {
        errs.invalid(field, Bad::Str(key), "must be no more than 253 characters");
    }
    let ok = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.invalid(
            field,
            Bad::Str(key),
            &regex_error(
                CONFIG_KEY_MSG,
                "[-._a-zA-Z0-9]+",
                &["key.name", "KEY_NAME", "key-name"],
            ),
        );
    }
    if key == "." {
        errs.invalid(field, Bad::Str(key), "must not be '.'");
    } else if key == ".." {
        errs.invalid(field, Bad::Str(key), "must not be '..'");
    } else if key.starts_with("..") {
        errs.invalid(field, Bad::Str(key), "must not start with '..'");
    }
}

const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

fn is_label_key_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Problems with `value` as a qualified name (label and annotation keys).
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let key_msg = || {
        regex_error(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_KEY_FMT,
            &["MyName", "my.name", "123-abc"],
        )
    };
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                key_msg()
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_label_key_name(name) {
        errs.push(format!("name part {}", key_msg()));
    }
    errs
}

/// Problems with `value` as a label value.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_label_key_name(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            &format!("({LABEL_KEY_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn object_meta(errs: &mut Errors, meta: &ObjectMeta) {
    for (key, value) in meta.labels.iter().flatten() {
        for m in qualified_name_errors(key) {
            errs.invalid("metadata.labels", Bad::Str(key), &m);
        }
        for m in label_value_errors(value) {
            errs.invalid("metadata.labels", Bad::Str(value), &m);
        }
    }
    for key in meta.annotations.iter().flat_map(|a| a.keys()) {
        for m in qualified_name_errors(&key.to_lowercase()) {
            errs.invalid("metadata.annotations", Bad::Str(key), &m);
        }
    }
    match meta.name.as_deref() {
        None | Some("") => errs.required("metadata.name", "name or generateName is required"),
        Some(name) => dns_subdomain(errs, name, "metadata.name"),
    }
    match meta.namespace.as_deref() {
        None | Some("") => errs.required("metadata.namespace", ""),
        Some(ns) => dns_label(errs, ns, "metadata.namespace"),
    }
}

/// Validates a defaulted static pod as `ValidatePodCreate` does (a subset).
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(&mut errs, &pod.metadata);
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    pod_spec(&mut errs, spec);
    errs.0
}

fn pod_spec(errs: &mut Errors, spec: &PodSpec) {
    let grace = spec.termination_grace_period_seconds;
    if grace.is_none() {
        errs.required("spec.terminationGracePeriodSeconds", "");
    }
    let host_users = spec.host_users.unwrap_or(true);
    let volumes = volumes(errs, spec.volumes.as_deref().unwrap_or(&[]));

    // Regular containers.
    let containers = &spec.containers;
    if containers.is_empty() {
        errs.required("spec.containers", "");
    }
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        container_common(errs, c, &volumes, &path, host_users);
        if !names.insert(c.name.clone()) {
            errs.duplicate(&format!("{path}.name"), &c.name);
        }
        if let Some(l) = c.lifecycle.as_ref() {
            lifecycle(errs, l, grace, &format!("{path}.lifecycle"));
        }
        probes(errs, c, grace, &path);
        container_restart_policy(errs, c, &path);
    }
    host_port_conflicts(errs, containers.iter().enumerate(), "spec.containers");

    // Init containers: names unique across init and regular containers.
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        container_common(errs, c, &volumes, &path, host_users);
        let restart_always = c.restart_policy.as_deref() == Some("Always");
        if let Some(policy) = c.restart_policy.as_deref() {
            if !["Always", "Never", "OnFailure"].contains(&policy) {
                errs.unsupported(
                    &format!("{path}.restartPolicy"),
                    policy,
                    &["Always", "Never", "OnFailure"],
                );
            }
            if restart_always
                && c.restart_policy_rules
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            {
                errs.forbidden(
                    &format!("{path}.restartPolicyRules"),
                    "restartPolicyRules are not allowed for init containers with restart policy Always",
                );
            }
        } else if c
            .restart_policy_rules
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            errs.required(
                &format!("{path}.restartPolicy"),
                "must specify restartPolicy when restart rules are used",
            );
        }
        if names.contains(&c.name) {
            errs.duplicate(&format!("{path}.name"), &c.name);
        } else if !c.name.is_empty() {
            names.insert(c.name.clone());
        }
        host_port_conflicts(errs, std::iter::once((i, c)), "spec.initContainers");
        if restart_always {
            if let Some(l) = c.lifecycle.as_ref() {
                lifecycle(errs, l, grace, &format!("{path}.lifecycle"));
            }
            probes(errs, c, grace, &path);
        } else {
            for (set, name) in [
                (c.lifecycle.is_some(), "lifecycle"),
                (c.liveness_probe.is_some(), "livenessProbe"),
                (c.readiness_probe.is_some(), "readinessProbe"),
                (c.startup_probe.is_some(), "startupProbe"),
            ] {
                if set {
                    errs.forbidden(&format!("{path}.{name}"), INIT_ONLY_MSG);
                }
            }
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errs.forbidden("spec.ephemeralContainers", "cannot be set on create");
    }

    // Host network: host ports must equal container ports.
    if spec.host_network == Some(true) {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let hp = p.host_port.unwrap_or(0);
                if hp != p.container_port {
                    errs.invalid(
                        &format!("spec.containers[{i}].ports[{j}].hostPort"),
                        Bad::Int(i64::from(hp)),
                        "must match `containerPort` when `hostNetwork` is true",
                    );
                }
            }
        }
    }

    match spec.restart_policy.as_deref().unwrap_or("") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.required("spec.restartPolicy", ""),
        other => errs.unsupported(
            "spec.restartPolicy",
            other,
            &["Always", "OnFailure", "Never"],
        ),
    }
    match spec.dns_policy.as_deref().unwrap_or("") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.required("spec.dnsPolicy", ""),
        other => errs.unsupported(
            "spec.dnsPolicy",
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        ),
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.invalid(
            "spec.securityContext.shareProcessNamespace",
            Bad::Bool(true),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        );
    }
    if !host_users {
        if spec.host_network == Some(true) {
            errs.forbidden("spec.hostNetwork", "when `hostUsers` is false");
        }
        if spec.host_pid == Some(true) {
            errs.forbidden("spec.HostPID", "when `hostUsers` is false");
        }
        if spec.host_ipc == Some(true) {
            errs.forbidden("spec.HostIPC", "when `hostUsers` is false");
        }
    }
    if let Some(sc) = spec.security_context.as_ref() {
        let p = "spec.securityContext";
        id_range(errs, sc.fs_group, &format!("{p}.fsGroup"));
        id_range(errs, sc.run_as_user, &format!("{p}.runAsUser"));
        id_range(errs, sc.run_as_group, &format!("{p}.runAsGroup"));
        for (g, gid) in sc.supplemental_groups.iter().flatten().enumerate() {
            id_range(errs, Some(*gid), &format!("{p}.supplementalGroups[{g}]"));
        }
    }
    tolerations(errs, spec.tolerations.as_deref().unwrap_or(&[]));
    if let Some(value) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&value) {
            errs.invalid(
                "spec.activeDeadlineSeconds",
                Bad::Int(value),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    if let Some(h) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        dns_label(errs, h, "spec.hostname");
    }
    if let Some(s) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        dns_label(errs, s, "spec.subdomain");
    }
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        for msg in dns1123_subdomain_errors(n) {
            errs.invalid("spec.nodeName", Bad::Str(n), &msg);
        }
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        for msg in dns1123_subdomain_errors(sa) {
            errs.invalid("spec.serviceAccountName", Bad::Str(sa), &msg);
        }
    }
}

fn id_range(errs: &mut Errors, id: Option<i64>, field: &str) {
    if let Some(id) = id {
        if !(0..=i64::from(i32::MAX)).contains(&id) {
            errs.invalid(
                field,
                Bad::Int(id),
                "must be between 0 and 2147483647, inclusive",
            );
        }
    }
}

fn container_security_context(errs: &mut Errors, c: &Container, path: &str, host_users: bool) {
    let Some(sc) = c.security_context.as_ref() else {
        return;
    };
    let p = format!("{path}.securityContext");
    id_range(errs, sc.run_as_user, &format!("{p}.runAsUser"));
    id_range(errs, sc.run_as_group, &format!("{p}.runAsGroup"));
    if let Some(pm) = sc.proc_mount.as_deref() {
        if pm != "Default" && pm != "Unmasked" {
            errs.unsupported(&format!("{p}.procMount"), pm, &["Default", "Unmasked"]);
        }
        if host_users && pm == "Unmasked" {
            errs.invalid(
                &format!("{p}.procMount"),
                Bad::Str(pm),
                "`hostUsers` must be false to use `Unmasked`",
            );
        }
    }
    if sc.allow_privilege_escalation == Some(false) && sc.privileged == Some(true) {
        errs.push(
            &p,
            "Invalid value: the security context: cannot set `allowPrivilegeEscalation` to false and `privileged` to true".to_string(),
        );
    }
}

fn tolerations(errs: &mut Errors, list: &[k8s_openapi::api::core::v1::Toleration]) {
    for (i, t) in list.iter().enumerate() {
        let p = format!("spec.tolerations[{i}]");
        let key = t.key.as_deref().unwrap_or("");
        let operator = t.operator.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        let effect = t.effect.as_deref().unwrap_or("");
        if !key.is_empty() {
            for m in qualified_name_errors(key) {
                errs.invalid(&format!("{p}.key"), Bad::Str(key), &m);
            }
        }
        if key.is_empty() && operator != "Exists" {
            errs.invalid(
                &format!("{p}.operator"),
                Bad::Str(operator),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.invalid(
                &format!("{p}.effect"),
                Bad::Str(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
        match operator {
            "Equal" | "" => {
                let msgs = label_value_errors(value);
                if !msgs.is_empty() {
                    errs.invalid(&format!("{p}.operator"), Bad::Str(value), &msgs.join(";"));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.invalid(
                        &format!("{p}.operator"),
                        Bad::Str(value),
                        "value must be empty when `operator` is 'Exists'",
                    );
                }
            }
            other => errs.unsupported(&format!("{p}.operator"), other, &["Equal", "Exists"]),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            errs.unsupported(
                &format!("{p}.effect"),
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

/// Volume source field names in the order the API checks them.
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

fn volumes(errs: &mut Errors, vols: &[Volume]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in vols.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let mut el = Errors::default();
        volume_source(&mut el, v, &path);
        let name_path = format!("{path}.name");
        if v.name.is_empty() {
            el.required(&name_path, "");
        } else {
            dns_label(&mut el, &v.name, &name_path);
        }
        if names.contains(&v.name) {
            el.duplicate(&name_path, &v.name);
        }
        if el.0.is_empty() {
            names.insert(v.name.clone());
        } else {
            errs.0.extend(el.0);
        }
    }
    names
}

fn file_mode(errs: &mut Errors, mode: Option<i32>, field: &str) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            errs.invalid(field, Bad::Int(i64::from(m)), FILE_MODE_MSG);
        }
    }
}

fn relative_path(errs: &mut Errors, p: &str, field: &str) {
    if p.starts_with('/') {
        errs.invalid(field, Bad::Str(p), "must be a relative path");
    }
    if p.split('/').any(|part| part == "..") {
        errs.invalid(field, Bad::Str(p), "must not contain '..'");
    }
}

fn volume_source(errs: &mut Errors, v: &Volume, path: &str) {
    let value = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    let present: Vec<&str> = VOLUME_SOURCES
        .iter()
        .copied()
        .filter(|k| value.get(*k).is_some_and(|x| !x.is_null()))
        .collect();
    if present.is_empty() {
        errs.required(path, "must specify a volume type");
        return;
    }
    for extra in &present[1..] {
        errs.forbidden(
            &format!("{path}.{extra}"),
            "may not specify more than 1 volume type",
        );
    }
    match present[0] {
        "emptyDir" => {
            if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
                let field = format!("{path}.emptyDir.sizeLimit");
                match parse_quantity(&limit.0) {
                    Ok(n) if n < 0 => {
                        errs.forbidden(&field, "SizeLimit field must be a valid resource quantity")
                    }
                    Ok(_) => {}
                    Err(_) => bad_quantity(errs, &limit.0, &field),
                }
            }
        }
        "hostPath" => {
            if let Some(h) = v.host_path.as_ref() {
                let field = format!("{path}.hostPath.path");
                if h.path.is_empty() {
                    errs.required(&field, "");
                } else {
                    if h.path.split('/').any(|part| part == "..") {
                        errs.invalid(&field, Bad::Str(&h.path), "must not contain '..'");
                    }
                    let types = [
                        "",
                        "BlockDevice",
                        "CharDevice",
                        "Directory",
                        "DirectoryOrCreate",
                        "File",
                        "FileOrCreate",
                        "Socket",
                    ];
                    if let Some(t) = h.type_.as_deref() {
                        if !types.contains(&t) {
                            errs.unsupported(&format!("{path}.hostPath.type"), t, &types);
                        }
                    }
                }
            }
        }
        "secret" => {
            if let Some(s) = v.secret.as_ref() {
                let p = format!("{path}.secret");
                if s.secret_name.as_deref().unwrap_or("").is_empty() {
                    errs.required(&format!("{p}.secretName"), "");
                }
                file_mode(errs, s.default_mode, &format!("{p}.defaultMode"));
                key_to_paths(errs, s.items.as_deref().unwrap_or(&[]), &p);
            }
        }
        "configMap" => {
            if let Some(c) = v.config_map.as_ref() {
                let p = format!("{path}.configMap");
                if c.name.is_empty() {
                    errs.required(&format!("{p}.name"), "");
                }
                file_mode(errs, c.default_mode, &format!("{p}.defaultMode"));
                key_to_paths(errs, c.items.as_deref().unwrap_or(&[]), &p);
            }
        }
        "downwardAPI" => {
            if let Some(d) = v.downward_api.as_ref() {
                let p = format!("{path}.downwardAPI");
                file_mode(errs, d.default_mode, &format!("{p}.defaultMode"));
                for item in d.items.iter().flatten() {
                    if item.path.is_empty() {
                        errs.required(&format!("{p}.path"), "");
                    }
                    relative_path(errs, &item.path, &format!("{p}.path"));
                    if let Some(f) = item.field_ref.as_ref() {
                        field_selector(errs, f, VOLUME_FIELD_PATHS, &format!("{p}.fieldRef"));
                        if item.resource_field_ref.is_some() {
                            errs.invalid(
                                &p,
                                Bad::Str("resource"),
                                "fieldRef and resourceFieldRef can not be specified simultaneously",
                            );
                        }
                    } else if let Some(r) = item.resource_field_ref.as_ref() {
                        let rp = format!("{p}.resourceFieldRef");
                        if r.container_name.as_deref().unwrap_or("").is_empty() {
                            errs.required(&format!("{rp}.containerName"), "");
                        } else {
                            resource_field(errs, &r.resource, &rp);
                        }
                    } else {
                        errs.required(&p, "one of fieldRef and resourceFieldRef is required");
                    }
                    file_mode(errs, item.mode, &format!("{p}.mode"));
                }
            }
        }
        "projected" => {
            if let Some(pr) = v.projected.as_ref() {
                file_mode(
                    errs,
                    pr.default_mode,
                    &format!("{path}.projected.defaultMode"),
                );
            }
        }
        _ => {}
    }
}

fn key_to_paths(errs: &mut Errors, items: &[k8s_openapi::api::core::v1::KeyToPath], p: &str) {
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{p}.items[{i}]");
        if item.key.is_empty() {
            errs.required(&format!("{ip}.key"), "");
        }
        if item.path.is_empty() {
            errs.required(&format!("{ip}.path"), "");
        }
        relative_path(errs, &item.path, &format!("{ip}.path"));
        file_mode(errs, item.mode, &format!("{ip}.mode"));
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// Field paths the v1 downward API knows at all (before the per-use check).
const CONVERTIBLE_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
    "spec.host",
];

fn field_selector(errs: &mut Errors, f: &ObjectFieldSelector, allowed: &[&str], p: &str) {
    let api_version = f.api_version.as_deref().unwrap_or("");
    if api_version.is_empty() {
        errs.required(&format!("{p}.apiVersion"), "");
        return;
    }
    if f.field_path.is_empty() {
        errs.required(&format!("{p}.fieldPath"), "");
        return;
    }
    let fp = f.field_path.as_str();
    if api_version != "v1" {
        errs.invalid(
            &format!("{p}.fieldPath"),
            Bad::Str(fp),
            &format!("error converting fieldPath: unsupported pod version: {api_version}"),
        );
        return;
    }
    if let Some((base, rest)) = fp.split_once('[') {
        let subscript_ok = rest.len() >= 3 && rest.starts_with('\'') && rest.ends_with("']");
        if subscript_ok {
            if base != "metadata.annotations" && base != "metadata.labels" {
                errs.invalid(
                    &format!("{p}.fieldPath"),
                    Bad::Str(fp),
                    &format!(
                        "error converting fieldPath: field label does not support subscript: {fp}"
                    ),
                );
            }
            return;
        }
    }
    if !CONVERTIBLE_FIELD_PATHS.contains(&fp) {
        errs.invalid(
            &format!("{p}.fieldPath"),
            Bad::Str(fp),
            &format!("error converting fieldPath: field label not supported: {fp}"),
        );
        return;
    }
    let internal = if fp == "spec.host" {
        "spec.nodeName"
    } else {
        fp
    };
    if !allowed.contains(&internal) {
        errs.unsupported(&format!("{p}.fieldPath"), internal, allowed);
    }
}

const RESOURCE_FIELD_PATHS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

fn resource_field(errs: &mut Errors, resource: &str, p: &str) {
    if resource.is_empty() {
        errs.required(&format!("{p}.resource"), "");
    } else if !RESOURCE_FIELD_PATHS.contains(&resource)
        && !resource.starts_with("limits.hugepages-")
        && !resource.starts_with("requests.hugepages-")
    {
        errs.unsupported(&format!("{p}.resource"), resource, RESOURCE_FIELD_PATHS);
    }
}

fn bad_quantity(errs: &mut Errors, text: &str, field: &str) {
    errs.invalid(
        field,
        Bad::Str(text),
        &format!("quantities must match the regular expression '{QUANTITY_PATTERN}'"),
    );
}

fn container_common(
    errs: &mut Errors,
    c: &Container,
    volumes: &BTreeSet<String>,
    path: &str,
    host_users: bool,
) {
    let name_path = format!("{path}.name");
    if c.name.is_empty() {
        errs.required(&name_path, "");
    } else {
        dns_label(errs, &c.name, &name_path);
    }
    if c.image.as_deref().unwrap_or("").is_empty() {
        errs.required(&format!("{path}.image"), "");
    }
    match c.termination_message_policy.as_deref().unwrap_or("") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.required(&format!("{path}.terminationMessagePolicy"), ""),
        other => errs.unsupported(
            &format!("{path}.terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        ),
    }
    ports(errs, c, path);
    env(
        errs,
        c.env.as_deref().unwrap_or(&[]),
        &format!("{path}.env"),
    );
    volume_mounts(errs, c, volumes, path);
    match c.image_pull_policy.as_deref().unwrap_or("") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.required(&format!("{path}.imagePullPolicy"), ""),
        other => errs.unsupported(
            &format!("{path}.imagePullPolicy"),
            other,
            &["Always", "IfNotPresent", "Never"],
        ),
    }
    if let Some(r) = c.resources.as_ref() {
        resources(errs, r, &format!("{path}.resources"));
    }
    container_security_context(errs, c, path, host_users);
}

fn ports(errs: &mut Errors, c: &Container, path: &str) {
    let mut names = BTreeSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let ip = format!("{path}.ports[{i}]");
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.invalid(&format!("{ip}.name"), Bad::Str(name), &m);
                }
            } else if !names.insert(name.to_string()) {
                errs.duplicate(&format!("{ip}.name"), name);
            }
        }
        if p.container_port == 0 {
            errs.required(&format!("{ip}.containerPort"), "");
        } else if !(1..=65535).contains(&p.container_port) {
            errs.invalid(
                &format!("{ip}.containerPort"),
                Bad::Int(i64::from(p.container_port)),
                "must be between 1 and 65535, inclusive",
            );
        }
        if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
            if !(1..=65535).contains(&hp) {
                errs.invalid(
                    &format!("{ip}.hostPort"),
                    Bad::Int(i64::from(hp)),
                    "must be between 1 and 65535, inclusive",
                );
            }
        }
        match p.protocol.as_deref().unwrap_or("") {
            "TCP" | "UDP" | "SCTP" => {}
            "" => errs.required(&format!("{ip}.protocol"), ""),
            other => errs.unsupported(&format!("{ip}.protocol"), other, &["SCTP", "TCP", "UDP"]),
        }
    }
}

/// Problems with a port name (IANA service name rules, as the API checks them).
fn port_name_errors(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

fn host_port_conflicts<'a>(
    errs: &mut Errors,
    containers: impl Iterator<Item = (usize, &'a Container)>,
    path: &str,
) {
    let mut seen = BTreeSet::new();
    for (i, c) in containers {
        for (j, p) in c.ports.iter().flatten().enumerate() {
            let hp = p.host_port.unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                p.protocol.as_deref().unwrap_or(""),
                p.host_ip.as_deref().unwrap_or(""),
                hp
            );
            if !seen.insert(key.clone()) {
                errs.duplicate(&format!("{path}[{i}].ports[{j}].hostPort"), &key);
            }
        }
    }
}

fn env(errs: &mut Errors, vars: &[EnvVar], path: &str) {
    for (i, ev) in vars.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        if ev.name.is_empty() {
            errs.required(&format!("{ip}.name"), "");
        } else if ev
            .name
            .chars()
            .any(|c| !(' '..='~').contains(&c) || c == '=')
        {
            errs.invalid(&format!("{ip}.name"), Bad::Str(&ev.name), RELAXED_ENV_MSG);
        }
        let Some(from) = ev.value_from.as_ref() else {
            continue;
        };
        let vp = format!("{ip}.valueFrom");
        let mut sources = 0;
        if let Some(f) = from.field_ref.as_ref() {
            sources += 1;
            field_selector(errs, f, ENV_FIELD_PATHS, &format!("{vp}.fieldRef"));
        }
        if let Some(r) = from.resource_field_ref.as_ref() {
            sources += 1;
            resource_field(errs, &r.resource, &format!("{vp}.resourceFieldRef"));
        }
        if let Some(k) = from.config_map_key_ref.as_ref() {
            sources += 1;
            let kp = format!("{vp}.configMapKeyRef");
            if k.name.is_empty() {
                errs.required(&format!("{kp}.name"), "");
            }
            if k.key.is_empty() {
                errs.required(&format!("{kp}.key"), "");
            } else {
                config_key(errs, &k.key, &format!("{kp}.key"));
            }
        }
        if let Some(k) = from.secret_key_ref.as_ref() {
            sources += 1;
            let kp = format!("{vp}.secretKeyRef");
            if k.name.is_empty() {
                errs.required(&format!("{kp}.name"), "");
            }
            if k.key.is_empty() {
                errs.required(&format!("{kp}.key"), "");
            } else {
                config_key(errs, &k.key, &format!("{kp}.key"));
            }
        }
        if from.file_key_ref.is_some() {
            sources += 1;
        }
        if sources == 0 {
            errs.invalid(
                &vp,
                Bad::Str(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef`, `secretKeyRef` or `fileKeyRef`",
            );
        } else if !ev.value.as_deref().unwrap_or("").is_empty() {
            errs.invalid(
                &vp,
                Bad::Str(""),
                "may not be specified when `value` is not empty",
            );
        } else if sources > 1 {
            errs.invalid(
                &vp,
                Bad::Str(""),
                "may not have more than one field specified at a time",
            );
        }
    }
}

fn volume_mounts(errs: &mut Errors, c: &Container, volumes: &BTreeSet<String>, path: &str) {
    let mut mount_points = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let ip = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.required(&format!("{ip}.name"), "");
        }
        if !volumes.contains(&m.name) {
            errs.not_found(&format!("{ip}.name"), &m.name);
        }
        if m.mount_path.is_empty() {
            errs.required(&format!("{ip}.mountPath"), "");
        }
        if !mount_points.insert(m.mount_path.clone()) {
            errs.invalid(
                &format!("{ip}.mountPath"),
                Bad::Str(&m.mount_path),
                "must be unique",
            );
        }
        let sub_path = m.sub_path.as_deref().unwrap_or("");
        if !sub_path.is_empty() {
            relative_path(errs, sub_path, &format!("{ip}.subPath"));
        }
        let expr = m.sub_path_expr.as_deref().unwrap_or("");
        if !expr.is_empty() {
            if !sub_path.is_empty() {
                errs.invalid(
                    &format!("{ip}.subPathExpr"),
                    Bad::Str(expr),
                    "subPathExpr and subPath are mutually exclusive",
                );
            }
            relative_path(errs, expr, &format!("{ip}.subPathExpr"));
        }
        if let Some(prop) = m.mount_propagation.as_deref() {
            let supported = ["Bidirectional", "HostToContainer", "None"];
            if !supported.contains(&prop) {
                errs.unsupported(&format!("{ip}.mountPropagation"), prop, &supported);
            } else if prop == "Bidirectional"
                && !c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
            {
                errs.forbidden(
                    &format!("{ip}.mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                );
            }
        }
    }
}

fn standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn resource_name(errs: &mut Errors, name: &str, field: &str) {
    if !name.contains('/') && !standard_container_resource(name) {
        errs.invalid(
            field,
            Bad::Str(name),
            "must be a standard resource for containers",
        );
    }
}

fn resources(errs: &mut Errors, r: &ResourceRequirements, path: &str) {
    let empty = BTreeMap::new();
    let limits = r.limits.as_ref().unwrap_or(&empty);
    let requests = r.requests.as_ref().unwrap_or(&empty);
    let mut limit_values = BTreeMap::new();
    for (name, q) in limits {
        let field = format!("{path}.limits[{name}]");
        resource_name(errs, name, &field);
        match parse_quantity(&q.0) {
            Ok(v) if v < 0 => errs.invalid(&field, Bad::Str(&q.0), NEGATIVE_MSG),
            Ok(v) => {
                limit_values.insert(name.clone(), v);
            }
            Err(_) => bad_quantity(errs, &q.0, &field),
        }
    }
    for (name, q) in requests {
        let field = format!("{path}.requests[{name}]");
        resource_name(errs, name, &field);
        let value = match parse_quantity(&q.0) {
            Ok(v) if v < 0 => {
                errs.invalid(&field, Bad::Str(&q.0), NEGATIVE_MSG);
                continue;
            }
            Ok(v) => v,
            Err(_) => {
                bad_quantity(errs, &q.0, &field);
                continue;
            }
        };
        // Native resources (no domain, or a kubernetes.io one) other than
        // huge pages may be overcommitted; others need requests == limits.
        let native = !name.contains('/') || name.contains("kubernetes.io/");
        let overcommit = native && !name.starts_with("hugepages-");
        match limit_values.get(name) {
            Some(limit) => {
                let limit_text = limits.get(name).map(|l| l.0.as_str()).unwrap_or("");
                if value != *limit && !overcommit {
                    errs.invalid(
                        &format!("{path}.requests"),
                        Bad::Str(&q.0),
                        &format!("must be equal to {name} limit of {limit_text}"),
                    );
                } else if value > *limit {
                    errs.invalid(
                        &format!("{path}.requests"),
                        Bad::Str(&q.0),
                        &format!("must be less than or equal to {name} limit of {limit_text}"),
                    );
                }
            }
            None if !overcommit && !limits.contains_key(name) => errs.required(
                &format!("{path}.limits"),
                "Limit must be set for non overcommitable resources",
            ),
            None => {}
        }
    }
}

fn probes(errs: &mut Errors, c: &Container, grace: Option<i64>, path: &str) {
    if let Some(p) = c.liveness_probe.as_ref() {
        let pp = format!("{path}.livenessProbe");
        probe(errs, p, grace, &pp);
        success_threshold_one(errs, p, &pp);
    }
    if let Some(p) = c.readiness_probe.as_ref() {
        let pp = format!("{path}.readinessProbe");
        probe(errs, p, grace, &pp);
        if let Some(t) = p.termination_grace_period_seconds {
            errs.invalid(
                &format!("{pp}.terminationGracePeriodSeconds"),
                Bad::Int(t),
                "must not be set for readinessProbes",
            );
        }
    }
    if let Some(p) = c.startup_probe.as_ref() {
        let pp = format!("{path}.startupProbe");
        probe(errs, p, grace, &pp);
        success_threshold_one(errs, p, &pp);
    }
}

fn success_threshold_one(errs: &mut Errors, p: &Probe, path: &str) {
    let st = p.success_threshold.unwrap_or(0);
    if st != 1 {
        errs.invalid(
            &format!("{path}.successThreshold"),
            Bad::Int(i64::from(st)),
            "must be 1",
        );
    }
}

struct Handler<'a> {
    exec: Option<&'a k8s_openapi::api::core::v1::ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_port: Option<&'a IntOrString>,
    grpc_port: Option<i32>,
    sleep: Option<i64>,
}

fn probe(errs: &mut Errors, p: &Probe, grace: Option<i64>, path: &str) {
    handler(
        errs,
        Handler {
            exec: p.exec.as_ref(),
            http_get: p.http_get.as_ref(),
            tcp_port: p.tcp_socket.as_ref().map(|t| &t.port),
            grpc_port: p.grpc.as_ref().map(|g| g.port),
            sleep: None,
        },
        grace,
        path,
    );
    for (value, name) in [
        (p.initial_delay_seconds, "initialDelaySeconds"),
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
        (p.success_threshold, "successThreshold"),
        (p.failure_threshold, "failureThreshold"),
    ] {
        let v = value.unwrap_or(0);
        if v < 0 {
            errs.invalid(
                &format!("{path}.{name}"),
                Bad::Int(i64::from(v)),
                NEGATIVE_MSG,
            );
        }
    }
    if let Some(t) = p.termination_grace_period_seconds {
        if t <= 0 {
            errs.invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                Bad::Int(t),
                "must be greater than 0",
            );
        }
    }
}

fn lifecycle(
    errs: &mut Errors,
    l: &k8s_openapi::api::core::v1::Lifecycle,
    grace: Option<i64>,
    path: &str,
) {
    let lh = |h: &'_ LifecycleHandler| -> (Option<_>, Option<_>, Option<_>, Option<i64>) {
        (
            h.exec.clone(),
            h.http_get.clone(),
            h.tcp_socket.as_ref().map(|t| t.port.clone()),
            h.sleep.as_ref().map(|s| s.seconds),
        )
    };
    for (h, name) in [(&l.post_start, "postStart"), (&l.pre_stop, "preStop")] {
        if let Some(h) = h.as_ref() {
            let (exec, http_get, tcp, sleep) = lh(h);
            handler(
                errs,
                Handler {
                    exec: exec.as_ref(),
                    http_get: http_get.as_ref(),
                    tcp_port: tcp.as_ref(),
                    grpc_port: None,
                    sleep,
                },
                grace,
                &format!("{path}.{name}"),
            );
        }
    }
    if l.stop_signal.is_some() {
        errs.forbidden(
            &format!("{path}.stopSignal"),
            "may not be set for containers with empty `spec.os.name`",
        );
    }
}

fn port_num_or_name(errs: &mut Errors, port: &IntOrString, field: &str) {
    match port {
        IntOrString::Int(n) => {
            if !(1..=65535).contains(n) {
                errs.invalid(
                    field,
                    Bad::Int(i64::from(*n)),
                    "must be between 1 and 65535, inclusive",
                );
            }
        }
        IntOrString::String(s) => {
            for m in port_name_errors(s) {
                errs.invalid(field, Bad::Str(s), &m);
            }
        }
    }
}

fn handler(errs: &mut Errors, h: Handler<'_>, grace: Option<i64>, path: &str) {
    let mut count = 0;
    let mut take = |errs: &mut Errors, present: bool, name: &str| -> bool {
        if !present {
            return false;
        }
        if count > 0 {
            errs.forbidden(
                &format!("{path}.{name}"),
                "may not specify more than 1 handler type",
            );
            false
        } else {
            count += 1;
            true
        }
    };
    if take(errs, h.exec.is_some(), "exec")
        && h.exec
            .and_then(|e| e.command.as_ref())
            .is_none_or(|c| c.is_empty())
    {
        errs.required(&format!("{path}.exec.command"), "");
    }
    if take(errs, h.http_get.is_some(), "httpGet") {
        if let Some(g) = h.http_get {
            let gp = format!("{path}.httpGet");
            if g.path.as_deref().unwrap_or("").is_empty() {
                errs.required(&format!("{gp}.path"), "");
            }
            port_num_or_name(errs, &g.port, &format!("{gp}.port"));
            let scheme = g.scheme.as_deref().unwrap_or("");
            if scheme != "HTTP" && scheme != "HTTPS" {
                errs.unsupported(&format!("{gp}.scheme"), scheme, &["HTTP", "HTTPS"]);
            }
        }
    }
    if take(errs, h.tcp_port.is_some(), "tcpSocket") {
        if let Some(p) = h.tcp_port {
            port_num_or_name(errs, p, &format!("{path}.tcpSocket.port"));
        }
    }
    if take(errs, h.grpc_port.is_some(), "grpc") {
        if let Some(p) = h.grpc_port {
            port_num_or_name(errs, &IntOrString::Int(p), &format!("{path}.grpc.port"));
        }
    }
    if take(errs, h.sleep.is_some(), "sleep") {
        if let (Some(s), Some(g)) = (h.sleep, grace) {
            if s < 0 || s > g {
                errs.invalid(
                    &format!("{path}.sleep"),
                    Bad::Int(s),
                    &format!(
                        "must be non-negative and less than terminationGracePeriodSeconds ({g})"
                    ),
                );
            }
        }
    }
    if count == 0 {
        errs.required(path, "must specify a handler type");
    }
}

fn container_restart_policy(errs: &mut Errors, c: &Container, path: &str) {
    let rules = c.restart_policy_rules.as_deref().unwrap_or(&[]);
    match c.restart_policy.as_deref() {
        None if !rules.is_empty() => errs.required(
            &format!("{path}.restartPolicy"),
            "must specify restartPolicy when restart rules are used",
        ),
        None => {}
        Some(p) if !["Always", "Never", "OnFailure"].contains(&p) => errs.unsupported(
            &format!("{path}.restartPolicy"),
            p,
            &["Always", "Never", "OnFailure"],
        ),
        Some(_) => {}
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = format!("{path}.restartPolicyRules[{i}]");
        if rule.action != "Restart" {
            errs.unsupported(&format!("{rp}.action"), &rule.action, &["Restart"]);
        }
        match rule.exit_codes.as_ref() {
            Some(codes) => {
                if codes.operator != "In" && codes.operator != "NotIn" {
                    errs.unsupported(
                        &format!("{rp}.exitCodes.operator"),
                        &codes.operator,
                        &["In", "NotIn"],
                    );
                }
            }
            None => errs.required(&format!("{rp}.exitCodes"), "must be specified"),
        }
    }
}

/// Validates a defaulted ConfigMap as `ValidateConfigMap` does.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(&mut errs, &cm.metadata);
    let binary = cm.binary_data.as_ref();
    for key in cm.data.iter().flat_map(|d| d.keys()) {
        let field = format!("data[{key}]");
        config_key(&mut errs, key, &field);
        if binary.is_some_and(|b| b.contains_key(key)) {
            errs.invalid(
                &field,
                Bad::Str(key),
                "duplicate of key present in binaryData",
            );
        }
    }
    for key in binary.iter().flat_map(|d| d.keys()) {
        config_key(&mut errs, key, &format!("binaryData[{key}]"));
    }
    errs.0
}

/// Validates a defaulted Secret as `ValidateSecret` does.
pub fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errs = Errors::default();
    object_meta(&mut errs, &secret.metadata);
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    for key in data.keys() {
        config_key(&mut errs, key, &format!("data[{key}]"));
    }
    let has = |k: &str| data.contains_key(k);
    let require = |errs: &mut Errors, k: &str| {
        if !has(k) {
            errs.required(&format!("data[{k}]"), "");
        }
    };
    match secret.type_.as_deref().unwrap_or("") {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"));
            if name.is_none_or(|n| n.is_empty()) {
                errs.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
        }
        "kubernetes.io/dockercfg" => json_key(&mut errs, data, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" => json_key(&mut errs, data, ".dockerconfigjson"),
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require(&mut errs, "username");
            require(&mut errs, "password");
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.required("data[ssh-privatekey]", "");
        }
        "kubernetes.io/tls" => {
            require(&mut errs, "tls.crt");
            require(&mut errs, "tls.key");
        }
        _ => {}
    }
    errs.0
}

fn json_key(errs: &mut Errors, data: &BTreeMap<String, k8s_openapi::ByteString>, key: &str) {
    match data.get(key) {
        None => errs.required(&format!("data[{key}]"), ""),
        Some(v) => {
            if let Err(e) =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&v.0)
            {
                errs.invalid(
                    &format!("data[{key}]"),
                    Bad::Str("<secret contents redacted>"),
                    &e.to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_subdomain_messages() {
        assert!(dns1123_label_errors("web-1").is_empty());
        assert_eq!(dns1123_label_errors("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            dns1123_label_errors("Web"),
            vec![format!(
                "{DNS1123_LABEL_MSG} (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            )]
        );
        assert!(dns1123_subdomain_errors("a.b-c").is_empty());
        assert_eq!(dns1123_subdomain_errors("-a").len(), 1);
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
    }

    #[test]
    fn port_names() {
        assert!(port_name_errors("http").is_empty());
        assert_eq!(
            port_name_errors("80"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            port_name_errors("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
    }
}
