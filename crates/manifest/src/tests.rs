//! Tests of reading, defaulting and validating manifests.

use super::*;

fn opts() -> Options {
    Options {
        node_name: "vm".to_string(),
    }
}

fn parse(text: &str) -> Objects {
    parse_file(Path::new("web.yaml"), text, &opts())
}

/// The error strings (Display) of a text.
fn errors(text: &str) -> Vec<String> {
    parse(text).errors.iter().map(|e| e.to_string()).collect()
}

/// A minimal valid pod with `extra` spliced into the container.
fn pod_with_container(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: main\n    image: busybox:1.36\n{extra}"
    )
}

/// A minimal valid pod with `extra` spliced into the spec.
fn pod_with_spec(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n{extra}  containers:\n  - name: main\n    image: busybox:1.36\n"
    )
}

fn one_pod(text: &str) -> Pod {
    let objs = parse(text);
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.pods.len(), 1);
    objs.pods
        .into_iter()
        .next()
        .map(|m| m.pod)
        .expect("one pod")
}

fn assert_one_error(text: &str, expected: &str) {
    let errs = errors(text);
    assert_eq!(errs, vec![expected.to_string()], "for:\n{text}");
}

#[test]
fn reference_manifests_load_without_errors() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/kubelet-manifests"
    ));
    let objs = load_dir(dir, &opts());
    assert!(objs.errors.is_empty(), "{:#?}", objs.errors);
    assert!(objs.warnings.is_empty(), "{:#?}", objs.warnings);
    assert_eq!(objs.pods.len(), 12);
    let names: Vec<_> = objs
        .pods
        .iter()
        .map(|m| m.pod.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names[0], "crasher-vm");
    assert!(names.contains(&"volumes-downward-vm".to_string()));
    // The sidecar init container keeps its restartPolicy.
    let sidecar = objs
        .pods
        .iter()
        .find(|m| m.pod.metadata.name.as_deref() == Some("init-sidecar-vm"))
        .and_then(|m| m.pod.spec.as_ref())
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| c[1].restart_policy.clone());
    assert_eq!(sidecar, Some(Some("Always".to_string())));
}

#[test]
fn static_pod_identity() {
    let objs = parse_file(
        Path::new("/etc/berth/manifests/web.yaml"),
        &pod_with_container(""),
        &Options {
            node_name: "Node-A".to_string(),
        },
    );
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    let m = &objs.pods[0];
    assert_eq!(m.source.file, Path::new("/etc/berth/manifests/web.yaml"));
    assert_eq!(m.source.document, 0);
    let pod = &m.pod;
    assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let uid = pod.metadata.uid.clone().expect("uid");
    assert_eq!(uid.len(), 32);
    assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
    let ann = pod.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
    assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
    assert!(ann[CONFIG_SEEN_ANNOTATION].ends_with('Z'));
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    let tolerations = spec.tolerations.as_ref().expect("tolerations");
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(tolerations[0].effect.as_deref(), Some("NoExecute"));
    assert_eq!(tolerations[0].key, None);
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
}

#[test]
fn uid_is_stable_and_changes_with_content_node_and_path() {
    let text = pod_with_container("");
    let uid = |text: &str, node: &str, file: &str| {
        let objs = parse_file(
            Path::new(file),
            text,
            &Options {
                node_name: node.to_string(),
            },
        );
        objs.pods[0].pod.metadata.uid.clone().expect("uid")
    };
    let a = uid(&text, "vm", "a.yaml");
    assert_eq!(a, uid(&text, "vm", "a.yaml"));
    let changed = text.replace("busybox:1.36", "busybox:1.37");
    assert_ne!(a, uid(&changed, "vm", "a.yaml"));
    assert_ne!(a, uid(&text, "vm2", "a.yaml"));
    assert_ne!(a, uid(&text, "vm", "b.yaml"));
    // Formatting and defaults spelled out do not matter: the defaulted object is hashed.
    let spelled = text.replace("kind: Pod\n", "kind: Pod\n\n") + "  restartPolicy: Always\n";
    assert_eq!(a, uid(&spelled, "vm", "a.yaml"));
}

#[test]
fn explicit_uid_is_kept() {
    let text = pod_with_container("").replace("{name: web}", "{name: web, uid: abc-123}");
    let pod = one_pod(&text);
    assert_eq!(pod.metadata.uid.as_deref(), Some("abc-123"));
    let ann = pod.metadata.annotations.expect("annotations");
    assert_eq!(ann[CONFIG_HASH_ANNOTATION], "abc-123");
}

#[test]
fn api_defaults_are_applied() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  hostNetwork: true
  volumes:
  - name: nothing
  - name: cm
    configMap: {name: settings}
  - name: sec
    secret: {secretName: creds}
  - name: info
    downwardAPI:
      items: [{path: name, fieldRef: {fieldPath: metadata.name}}]
  - name: host
    hostPath: {path: /var/tmp}
  initContainers:
  - name: init
    image: busybox
    resources:
      limits: {cpu: 100m}
  containers:
  - name: main
    image: nginx:1.27
    ports: [{containerPort: 80}]
    env:
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    resources:
      limits: {cpu: 200m, memory: 64Mi, ephemeral-storage: 1500u}
      requests: {cpu: 100m}
    livenessProbe:
      httpGet: {port: 80}
    readinessProbe:
      grpc: {port: 9000}
    lifecycle:
      preStop:
        httpGet: {port: 80, path: /quit}
"#;
    let pod = one_pod(text);
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.security_context, Some(Default::default()));
    assert_eq!(spec.enable_service_links, Some(true));

    let vols = spec.volumes.expect("volumes");
    assert_eq!(vols[0].empty_dir, Some(Default::default()));
    assert_eq!(
        vols[1].config_map.as_ref().and_then(|c| c.default_mode),
        Some(0o644)
    );
    assert_eq!(
        vols[2].secret.as_ref().and_then(|c| c.default_mode),
        Some(0o644)
    );
    let d = vols[3].downward_api.as_ref().expect("downwardAPI");
    assert_eq!(d.default_mode, Some(0o644));
    let items = d.items.as_ref().expect("items");
    let field_ref = items[0].field_ref.as_ref().expect("fieldRef");
    assert_eq!(field_ref.api_version.as_deref(), Some("v1"));
    assert_eq!(
        vols[4].host_path.as_ref().and_then(|h| h.type_.as_deref()),
        Some("")
    );

    let init = &spec.init_containers.expect("init")[0];
    assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
    let init_requests = init.resources.as_ref().and_then(|r| r.requests.as_ref());
    assert_eq!(init_requests.map(|r| r["cpu"].0.as_str()), Some("100m"));

    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    let port = &c.ports.as_ref().expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    // hostNetwork: the host port defaults to the container port.
    assert_eq!(port.host_port, Some(80));
    let env = &c.env.as_ref().expect("env")[0];
    let env_ref = env.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
    assert_eq!(env_ref.and_then(|f| f.api_version.as_deref()), Some("v1"));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(requests["memory"].0, "64Mi");
    // Rounded up to the millicore, then copied from the limit.
    assert_eq!(requests["ephemeral-storage"].0, "2m");

    let live = c.liveness_probe.as_ref().expect("liveness");
    assert_eq!(live.timeout_seconds, Some(1));
    assert_eq!(live.period_seconds, Some(10));
    assert_eq!(live.success_threshold, Some(1));
    assert_eq!(live.failure_threshold, Some(3));
    let get = live.http_get.as_ref().expect("httpGet");
    assert_eq!(get.path.as_deref(), Some("/"));
    assert_eq!(get.scheme.as_deref(), Some("HTTP"));
    let ready = c.readiness_probe.as_ref().expect("readiness");
    assert_eq!(
        ready.grpc.as_ref().and_then(|g| g.service.as_deref()),
        Some("")
    );
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.http_get.as_ref())
        .expect("preStop");
    assert_eq!(pre_stop.path.as_deref(), Some("/quit"));
    assert_eq!(pre_stop.scheme.as_deref(), Some("HTTP"));
}

#[test]
fn negative_grace_period_becomes_one() {
    let pod = one_pod(&pod_with_spec("  terminationGracePeriodSeconds: -5\n"));
    assert_eq!(
        pod.spec.and_then(|s| s.termination_grace_period_seconds),
        Some(1)
    );
}

#[test]
fn multi_document_file_with_config_map_and_secret() {
    let text = format!(
        "---\n# only a comment\n---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{a.conf: x}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: prod}}\ndata: {{password: aHVudGVyMg==}}\nstringData: {{user: admin}}\n---\n",
        pod_with_container("")
    );
    let objs = parse(&text);
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.pods.len(), 1);
    // Document 0 holds only a comment.
    assert_eq!(objs.pods[0].source.document, 1);
    let cm = &objs.config_maps[&("default".to_string(), "settings".to_string())];
    assert_eq!(cm.data.as_ref().map(|d| d["a.conf"].as_str()), Some("x"));
    let secret = &objs.secrets[&("prod".to_string(), "creds".to_string())];
    let data = secret.data.as_ref().expect("data");
    assert_eq!(data["password"].0, b"hunter2");
    assert_eq!(data["user"].0, b"admin");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
}

#[test]
fn list_of_objects() {
    let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a}
  spec:
    containers: [{name: c, image: busybox}]
- apiVersion: v1
  kind: Pod
  metadata: {name: b}
  spec:
    containers: [{name: c}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
"#;
    let objs = parse(text);
    assert_eq!(objs.pods.len(), 1);
    assert_eq!(objs.pods[0].pod.metadata.name.as_deref(), Some("a-vm"));
    assert_eq!(objs.config_maps.len(), 1);
    let errs: Vec<String> = objs.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errs,
        vec!["web.yaml: document 1: items[1].spec.containers[0].image: Required value"]
    );
}

#[test]
fn json_file() {
    let text = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "main", "image": "nginx"}]}}"#;
    let objs = parse_file(Path::new("web.json"), text, &opts());
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.pods[0].pod.metadata.name.as_deref(), Some("web-vm"));
}

#[test]
fn yaml_flow_style_that_looks_like_json() {
    let text = "{apiVersion: v1, kind: Pod, metadata: {name: web}, spec: {containers: [{name: c, image: nginx}]}}";
    let objs = parse(text);
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.pods.len(), 1);
}

#[test]
fn several_json_objects_in_one_file() {
    let one = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "NAME"}}"#;
    let text = format!("{}\n{}", one.replace("NAME", "a"), one.replace("NAME", "b"));
    let objs = parse_file(Path::new("cms.json"), &text, &opts());
    assert!(objs.errors.is_empty(), "{:?}", objs.errors);
    assert_eq!(objs.config_maps.len(), 2);
}

#[test]
fn invalid_json_is_an_error() {
    let objs = parse_file(Path::new("web.json"), "{\"kind\": ", &opts());
    assert_eq!(objs.errors.len(), 1);
    assert!(
        objs.errors[0].reason.starts_with("invalid JSON:"),
        "{:?}",
        objs.errors
    );
    assert_eq!(objs.errors[0].document, Some(0));
}

#[test]
fn one_bad_document_does_not_hide_the_good_one() {
    let text = format!(
        "{}---\n{}",
        pod_with_container("")
            .replace("name: web", "name: bad")
            .replace("    image: busybox:1.36\n", ""),
        pod_with_container("")
    );
    let objs = parse(&text);
    assert_eq!(objs.pods.len(), 1);
    assert_eq!(objs.pods[0].source.document, 1);
    let errs: Vec<String> = objs.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errs,
        vec!["web.yaml: document 1: spec.containers[0].image: Required value"]
    );
}

#[test]
fn other_kinds_are_rejected_per_document() {
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\n{}",
        pod_with_container("")
    );
    let objs = parse(&text);
    assert_eq!(objs.pods.len(), 1);
    assert_eq!(
        objs.errors[0].to_string(),
        "web.yaml: document 1: kind: Unsupported value: \"Deployment\": supported values: \"Pod\", \"ConfigMap\", \"Secret\""
    );
    assert_one_error(
        "apiVersion: v2\nkind: Pod\nmetadata: {name: x}\n",
        "web.yaml: document 1: apiVersion: Unsupported value: \"v2\": supported values: \"v1\"",
    );
    assert_one_error(
        "kind: Pod\nmetadata: {name: x}\n",
        "web.yaml: document 1: apiVersion: Required value",
    );
    assert_one_error(
        "metadata: {name: x}\n",
        "web.yaml: document 1: kind: Required value",
    );
    assert_one_error(
        "- a\n- b\n",
        "web.yaml: document 1: a manifest document must be an object with apiVersion and kind",
    );
}

#[test]
fn type_errors_name_the_field_path() {
    let errs = errors(&pod_with_container("    ports: [{containerPort: http}]\n"));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("web.yaml: document 1: spec.containers[0].ports[0].containerPort: invalid type: string \"http\""),
        "{errs:?}"
    );
}

#[test]
fn yaml_syntax_error() {
    let objs = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n");
    assert_eq!(objs.errors.len(), 1);
    assert!(
        objs.errors[0].reason.starts_with("invalid YAML:"),
        "{:?}",
        objs.errors
    );
}

#[test]
fn yaml_syntax_error_keeps_earlier_documents() {
    let text = format!(
        "{}---\nkind: [\n---\n{}",
        pod_with_container(""),
        pod_with_container("").replace("{name: web}", "{name: web2}")
    );
    let objs = parse(&text);
    assert_eq!(objs.pods.len(), 1, "{:?}", objs.errors);
    assert_eq!(objs.pods[0].source.document, 0);
    assert_eq!(objs.errors.len(), 1);
    assert_eq!(objs.errors[0].document, Some(1));
}

#[test]
fn unknown_fields_are_warnings() {
    let objs = parse(&pod_with_container("    imagePolicy: Always\n"));
    assert!(objs.errors.is_empty());
    assert_eq!(objs.pods.len(), 1);
    let warnings: Vec<String> = objs.warnings.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        warnings,
        vec!["web.yaml: document 1: spec.containers[0].imagePolicy: unknown field, ignored"]
    );
}

#[test]
fn missing_pod_name() {
    assert_one_error(
        "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: c, image: i}]\n",
        "web.yaml: document 1: metadata.name: Required value: name is needed for the pod",
    );
}

#[test]
fn error_display() {
    let e = ManifestError {
        file: PathBuf::from("web.yaml"),
        document: Some(1),
        field: "spec.containers[1].image".to_string(),
        reason: "Required value".to_string(),
    };
    assert_eq!(
        e.to_string(),
        "web.yaml: document 2: spec.containers[1].image: Required value"
    );
    let e = ManifestError {
        file: PathBuf::from("big.yaml"),
        document: None,
        field: String::new(),
        reason: "too big".to_string(),
    };
    assert_eq!(e.to_string(), "big.yaml: too big");
}

const LABEL_REGEX_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

#[test]
fn metadata_validation() {
    assert_one_error(
        &pod_with_container("").replace("{name: web}", "{name: Web}"),
        "web.yaml: document 1: metadata.name: Invalid value: \"Web-vm\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    assert_one_error(
        &pod_with_container("").replace("{name: web}", "{name: web, namespace: a.b}"),
        "web.yaml: document 1: metadata.namespace: Invalid value: \"a.b\": must not contain dots",
    );
}

#[test]
fn label_and_annotation_validation() {
    assert_one_error(
        &pod_with_container("").replace("{name: web}", "{name: web, labels: {\"a/b/c\": x}}"),
        "web.yaml: document 1: metadata.labels: Invalid value: \"a/b/c\": a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    );
    assert_one_error(
        &pod_with_container("").replace("{name: web}", "{name: web, labels: {app: \"-x\"}}"),
        "web.yaml: document 1: metadata.labels: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    );
    assert_one_error(
        &pod_with_container("").replace("{name: web}", "{name: web, annotations: {\"/x\": y}}"),
        "web.yaml: document 1: metadata.annotations: Invalid value: \"/x\": prefix part must be non-empty",
    );
    one_pod(&pod_with_container("").replace("{name: web}", "{name: web, labels: {example.com/App: v1.2_3, empty: \"\"}, annotations: {Example.com/Note: anything}}"));
}

#[test]
fn container_validation() {
    assert_one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: []\n",
        "web.yaml: document 1: spec.containers: Required value",
    );
    assert_one_error(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n",
        "web.yaml: document 1: spec.containers: Required value",
    );
    assert_one_error(
        &pod_with_container("").replace("name: main", "name: Main"),
        &format!("web.yaml: document 1: spec.containers[0].name: Invalid value: \"Main\": {LABEL_REGEX_MSG}"),
    );
    assert_one_error(
        &pod_with_container("  - name: main\n    image: nginx\n"),
        "web.yaml: document 1: spec.containers[1].name: Duplicate value: \"main\"",
    );
    assert_one_error(
        &pod_with_spec("  initContainers: [{name: main, image: busybox}]\n"),
        "web.yaml: document 1: spec.initContainers[0].name: Duplicate value: \"main\"",
    );
    assert_one_error(
        &pod_with_container("    imagePullPolicy: Sometimes\n"),
        "web.yaml: document 1: spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
    );
    assert_one_error(
        &pod_with_container("    terminationMessagePolicy: Always\n"),
        "web.yaml: document 1: spec.containers[0].terminationMessagePolicy: Unsupported value: \"Always\": supported values: \"File\", \"FallbackToLogsOnError\"",
    );
}

#[test]
fn restart_policies() {
    assert_one_error(
        &pod_with_spec("  restartPolicy: Sometimes\n"),
        "web.yaml: document 1: spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
    );
    assert_one_error(
        &pod_with_spec("  initContainers: [{name: init, image: busybox, restartPolicy: Sometimes}]\n"),
        "web.yaml: document 1: spec.initContainers[0].restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"",
    );
    // With ContainerRestartRules (beta, on in v1.36) init and regular containers
    // may carry any of the three policies.
    one_pod(&pod_with_spec(
        "  initContainers: [{name: init, image: busybox, restartPolicy: OnFailure}]\n",
    ));
    one_pod(&pod_with_container("    restartPolicy: Never\n"));
    assert_one_error(
        &pod_with_container("    restartPolicyRules: [{action: Restart, exitCodes: {operator: In, values: [42]}}]\n"),
        "web.yaml: document 1: spec.containers[0].restartPolicy: Required value: must specify restartPolicy when restart rules are used",
    );
}

#[test]
fn init_container_probes_need_restart_always() {
    assert_one_error(
        &pod_with_spec("  initContainers:\n  - name: init\n    image: busybox\n    livenessProbe: {exec: {command: [\"true\"]}}\n"),
        "web.yaml: document 1: spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
    );
    one_pod(&pod_with_spec("  initContainers:\n  - name: init\n    image: busybox\n    restartPolicy: Always\n    livenessProbe: {exec: {command: [\"true\"]}}\n"));
}

#[test]
fn probe_validation() {
    assert_one_error(
        &pod_with_container("    livenessProbe: {periodSeconds: 3}\n"),
        "web.yaml: document 1: spec.containers[0].livenessProbe: Required value: must specify a handler type",
    );
    assert_one_error(
        &pod_with_container("    readinessProbe: {exec: {command: [x]}, tcpSocket: {port: 80}}\n"),
        "web.yaml: document 1: spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    );
    assert_one_error(
        &pod_with_container("    livenessProbe: {exec: {command: [x]}, successThreshold: 2}\n"),
        "web.yaml: document 1: spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
    );
    assert_one_error(
        &pod_with_container("    readinessProbe: {httpGet: {port: 0}}\n"),
        "web.yaml: document 1: spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
    );
    assert_one_error(
        &pod_with_container("    readinessProbe: {httpGet: {port: 80, scheme: FTP}}\n"),
        "web.yaml: document 1: spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
    );
    assert_one_error(
        &pod_with_container("    startupProbe: {tcpSocket: {port: 80}, initialDelaySeconds: -1}\n"),
        "web.yaml: document 1: spec.containers[0].startupProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_one_error(
        &pod_with_container("    lifecycle: {preStop: {sleep: {seconds: 60}}}\n"),
        "web.yaml: document 1: spec.containers[0].lifecycle.preStop.sleep: Invalid value: 60: must be non-negative and less than terminationGracePeriodSeconds (30)",
    );
    assert_one_error(
        &pod_with_container("    livenessProbe: {exec: {command: []}}\n"),
        "web.yaml: document 1: spec.containers[0].livenessProbe.exec.command: Required value",
    );
}

#[test]
fn port_validation() {
    assert_one_error(
        &pod_with_container("    ports: [{containerPort: 70000}]\n"),
        "web.yaml: document 1: spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    assert_one_error(
        &pod_with_container("    ports: [{containerPort: 80, protocol: HTTP}]\n"),
        "web.yaml: document 1: spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    assert_one_error(
        &pod_with_container(
            "    ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]\n",
        ),
        "web.yaml: document 1: spec.containers[0].ports[1].name: Duplicate value: \"web\"",
    );
    assert_one_error(
        &pod_with_container("    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]\n"),
        "web.yaml: document 1: spec.containers[0].ports[1].hostPort: Duplicate value: \"TCP//8080\"",
    );
    assert_one_error(
        &pod_with_spec("  hostNetwork: true\n").replace("image: busybox:1.36\n", "image: busybox:1.36\n    ports: [{containerPort: 80, hostPort: 8080}]\n"),
        "web.yaml: document 1: spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true",
    );
}

#[test]
fn namespace_sharing_rules() {
    assert_one_error(
        &pod_with_spec("  shareProcessNamespace: true\n  hostPID: true\n"),
        "web.yaml: document 1: spec.securityContext.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled",
    );
    let errs = errors(&pod_with_spec(
        "  hostUsers: false\n  hostNetwork: true\n  hostPID: true\n  hostIPC: true\n",
    ));
    assert_eq!(
        errs,
        vec![
            "web.yaml: document 1: spec.hostNetwork: Forbidden: when `hostUsers` is false",
            "web.yaml: document 1: spec.HostPID: Forbidden: when `hostUsers` is false",
            "web.yaml: document 1: spec.HostIPC: Forbidden: when `hostUsers` is false",
        ]
    );
    assert_one_error(
        &pod_with_spec("  activeDeadlineSeconds: 0\n"),
        "web.yaml: document 1: spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
    );
}

#[test]
fn security_context_and_toleration_validation() {
    assert_one_error(
        &pod_with_spec("  securityContext: {runAsUser: -1}\n"),
        "web.yaml: document 1: spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
    );
    assert_one_error(
        &pod_with_container("    securityContext: {procMount: Unmasked}\n"),
        "web.yaml: document 1: spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`",
    );
    one_pod(&pod_with_spec("  hostUsers: false\n").replace(
        "image: busybox:1.36\n",
        "image: busybox:1.36\n    securityContext: {procMount: Unmasked}\n",
    ));
    assert_one_error(
        &pod_with_spec("  tolerations: [{operator: Exists, value: x}]\n"),
        "web.yaml: document 1: spec.tolerations[0].operator: Invalid value: \"x\": value must be empty when `operator` is 'Exists'",
    );
    assert_one_error(
        &pod_with_spec("  tolerations: [{key: k, operator: Equal, value: v, effect: NoSchedule, tolerationSeconds: 5}]\n"),
        "web.yaml: document 1: spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
    );
}

#[test]
fn env_validation() {
    assert_one_error(
        &pod_with_container("    env: [{name: \"A=B\", value: x}]\n"),
        "web.yaml: document 1: spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
    );
    // Relaxed rules (GA): names may start with a digit or hold spaces.
    one_pod(&pod_with_container(
        "    env: [{name: \"1 weird.name\", value: x}]\n",
    ));
    assert_one_error(
        &pod_with_container("    env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n"),
        "web.yaml: document 1: spec.containers[0].env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
    );
    assert_one_error(
        &pod_with_container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.labels}}}]\n"),
        "web.yaml: document 1: spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"metadata.labels\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\"",
    );
    one_pod(&pod_with_container(
        "    env: [{name: A, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}]\n",
    ));
    assert_one_error(
        &pod_with_container("    env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}]\n"),
        "web.yaml: document 1: spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Invalid value: \"spec.bogus\": error converting fieldPath: field label not supported: spec.bogus",
    );
}

#[test]
fn volume_validation() {
    let with_volumes = |volumes: &str, mounts: &str| {
        pod_with_spec(&format!("  volumes:\n{volumes}")).replace(
            "image: busybox:1.36\n",
            &format!("image: busybox:1.36\n{mounts}"),
        )
    };
    assert_one_error(
        &with_volumes(
            "  - {name: a, emptyDir: {}}\n  - {name: a, emptyDir: {}}\n",
            "",
        ),
        "web.yaml: document 1: spec.volumes[1].name: Duplicate value: \"a\"",
    );
    assert_one_error(
        &with_volumes("  - {name: a, emptyDir: {}, hostPath: {path: /x}}\n", ""),
        "web.yaml: document 1: spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
    );
    assert_one_error(
        &with_volumes("  - {name: A_b, emptyDir: {}}\n", ""),
        &format!(
            "web.yaml: document 1: spec.volumes[0].name: Invalid value: \"A_b\": {LABEL_REGEX_MSG}"
        ),
    );
    assert_one_error(
        &with_volumes(
            "  - {name: a, emptyDir: {}}\n",
            "    volumeMounts: [{name: b, mountPath: /b}]\n",
        ),
        "web.yaml: document 1: spec.containers[0].volumeMounts[0].name: Not found: \"b\"",
    );
    assert_one_error(
        &with_volumes(
            "  - {name: a, emptyDir: {}}\n  - {name: b, emptyDir: {}}\n",
            "    volumeMounts: [{name: a, mountPath: /d}, {name: b, mountPath: /d}]\n",
        ),
        "web.yaml: document 1: spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
    );
    // The API does not require an absolute mountPath.
    one_pod(&with_volumes(
        "  - {name: a, emptyDir: {}}\n",
        "    volumeMounts: [{name: a, mountPath: data}]\n",
    ));
    assert_one_error(
        &with_volumes("  - {name: a, emptyDir: {}}\n", "    volumeMounts: [{name: a, mountPath: /d, subPath: ../x}]\n"),
        "web.yaml: document 1: spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../x\": must not contain '..'",
    );
    assert_one_error(
        &with_volumes("  - {name: a, hostPath: {path: /x, type: Folder}}\n", ""),
        "web.yaml: document 1: spec.volumes[0].hostPath.type: Unsupported value: \"Folder\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
    );
    assert_one_error(
        &with_volumes("  - {name: a, configMap: {name: c, defaultMode: 1000}}\n", ""),
        "web.yaml: document 1: spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
    );
    assert_one_error(
        &with_volumes("  - {name: a, emptyDir: {sizeLimit: lots}}\n", ""),
        "web.yaml: document 1: spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    );
}

#[test]
fn resource_validation() {
    assert_one_error(
        &pod_with_container("    resources: {limits: {cpu: 100m}, requests: {cpu: 200m}}\n"),
        "web.yaml: document 1: spec.containers[0].resources.requests: Invalid value: \"200m\": must be less than or equal to cpu limit of 100m",
    );
    assert_one_error(
        &pod_with_container("    resources: {limits: {memory: 1Gi}, requests: {memory: 2G}}\n"),
        "web.yaml: document 1: spec.containers[0].resources.requests: Invalid value: \"2G\": must be less than or equal to memory limit of 1Gi",
    );
    assert_one_error(
        &pod_with_container("    resources: {limits: {cpu: lots}, requests: {cpu: 1m}}\n"),
        "web.yaml: document 1: spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
    );
    assert_one_error(
        &pod_with_container("    resources: {requests: {memory: -1}}\n"),
        "web.yaml: document 1: spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0",
    );
    assert_one_error(
        &pod_with_container("    resources: {requests: {gpu: 1}}\n"),
        "web.yaml: document 1: spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
    );
    // Numbers are quantities too; "0.5" and "500m" are equal.
    one_pod(&pod_with_container("    resources: {limits: {cpu: 0.5, memory: 1Gi}, requests: {cpu: 500m, memory: 1073741824}}\n"));
}

#[test]
fn config_map_and_secret_validation() {
    assert_one_error(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {\"bad key\": x}\n",
        "web.yaml: document 1: data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
    );
    assert_one_error(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: C}\n",
        "web.yaml: document 1: metadata.name: Invalid value: \"C\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    assert_one_error(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
        "web.yaml: document 1: metadata.name: Required value: name or generateName is required",
    );
    let errs =
        errors("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: \"not base64!\"}\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("web.yaml: document 1: data.k: "),
        "{errs:?}"
    );
    assert_one_error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
        "web.yaml: document 1: data[tls.key]: Required value",
    );
    assert_one_error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {..x: y}\n",
        "web.yaml: document 1: data[..x]: Invalid value: \"..x\": must not start with '..'",
    );
}

#[test]
fn duplicates_within_a_file() {
    let text = format!("{}---\n{}", pod_with_container(""), pod_with_container(""));
    let objs = parse(&text);
    assert_eq!(objs.pods.len(), 1);
    let errs: Vec<String> = objs.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errs,
        vec!["web.yaml: document 2: metadata.name: Duplicate value: \"web-vm\": pod default/web-vm is already defined in web.yaml document 1"]
    );
}

#[test]
fn load_dir_reads_like_the_kubelet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write");
    };
    write("b.yaml", &pod_with_container(""));
    // Same pod name in a later file: rejected, naming the first.
    write(
        "c.yaml",
        &pod_with_container("").replace("busybox:1.36", "nginx"),
    );
    // Any extension is read.
    write(
        "a.manifest",
        &pod_with_container("").replace("{name: web}", "{name: other}"),
    );
    // Hidden files and directories are skipped.
    write(".hidden.yaml", "not: [valid");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("sub/x.yaml"), "not: [valid").expect("write");
    write(
        "d.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    );
    write(
        "e.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {x: y}\n",
    );

    let objs = load_dir(dir.path(), &opts());
    let names: Vec<_> = objs
        .pods
        .iter()
        .map(|m| m.pod.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["other-vm", "web-vm"]);
    assert_eq!(objs.pods[1].source.file, dir.path().join("b.yaml"));
    assert_eq!(objs.config_maps.len(), 1);
    let cm = &objs.config_maps[&("default".to_string(), "cm".to_string())];
    assert_eq!(cm.data, Some(BTreeMap::new()));
    assert_eq!(objs.secrets.len(), 1);
    let errs: Vec<String> = objs.errors.iter().map(|e| e.to_string()).collect();
    let d = dir.path().display();
    assert_eq!(
        errs,
        vec![
            format!("{d}/c.yaml: document 1: metadata.name: Duplicate value: \"web-vm\": pod default/web-vm is already defined in {d}/b.yaml document 1"),
            format!("{d}/e.yaml: document 1: metadata.name: Duplicate value: \"cm\": configmap default/cm is already defined in {d}/d.yaml document 1"),
        ]
    );
}

#[test]
fn load_dir_reports_a_missing_directory() {
    let objs = load_dir(Path::new("/nonexistent/berth-manifests"), &opts());
    assert_eq!(objs.errors.len(), 1);
    assert!(objs.errors[0]
        .to_string()
        .starts_with("/nonexistent/berth-manifests: cannot read the manifest directory: "));
}
