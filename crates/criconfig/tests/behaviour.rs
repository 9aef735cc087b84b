//! Behaviour beyond the recorded manifests: QoS, cgroups, OOM scores, DNS,
//! security contexts, environment, mounts and volumes on disk.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_cri::runtime::v1 as cri;
use berth_criconfig::*;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::ByteString;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("pod json")
}

fn base_pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    let s = spec.as_object_mut().expect("spec");
    s.entry("securityContext").or_insert(json!({}));
    pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "0123-abcd", "labels": {"app": "x"},
                     "annotations": {"a": "1"}},
        "spec": spec
    }))
}

fn node(dir: &Path) -> NodeSettings {
    let mut n = NodeSettings::detect("vm", dir);
    n.pod_logs_dir = dir.join("logs");
    n.cgroup_v2 = false;
    n.swap_controller = false;
    n.memory_capacity = 1000 << 20;
    n.hugepage_sizes = vec!["2MB".into()];
    n.masked_paths = vec!["/proc/kcore".into()];
    n.node_ips = vec!["192.168.1.5".parse().expect("ip")];
    n.host_dns = ResolvConf::parse("nameserver 1.1.1.1\n");
    n.selinux_enabled = false;
    n.allocatable = BTreeMap::from([("cpu".to_string(), parse_quantity("4").expect("q"))]);
    n
}

fn c(v: serde_json::Value) -> serde_json::Value {
    let mut v = v;
    let o = v.as_object_mut().expect("container");
    o.entry("image").or_insert("img:1".into());
    o.entry("terminationMessagePath")
        .or_insert("/dev/termination-log".into());
    o.entry("terminationMessagePolicy").or_insert("File".into());
    v
}

#[test]
fn qos_classes() {
    let be = base_pod(json!({"containers": [c(json!({"name": "a"}))]}));
    assert_eq!(qos_class(&be), QosClass::BestEffort);
    let g = base_pod(json!({"containers": [c(json!({"name": "a", "resources": {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}}))]}));
    assert_eq!(qos_class(&g), QosClass::Guaranteed);
    let init_without_limits = base_pod(json!({
        "initContainers": [c(json!({"name": "i", "resources": {"requests": {"cpu": "1"}}}))],
        "containers": [c(json!({"name": "a", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}))]}));
    assert_eq!(qos_class(&init_without_limits), QosClass::Burstable);
    let mut status = be.clone();
    status.status = Some(k8s_openapi::api::core::v1::PodStatus {
        qos_class: Some("Guaranteed".into()),
        ..Default::default()
    });
    assert_eq!(qos_class(&status), QosClass::Guaranteed);
    let pod_level = base_pod(
        json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}},
        "containers": [c(json!({"name": "a"}))]}),
    );
    assert_eq!(qos_class(&pod_level), QosClass::Guaranteed);
}

#[test]
fn cgroup_parents() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = node(dir.path());
    let p = base_pod(
        json!({"containers": [c(json!({"name": "a", "resources": {"requests": {"cpu": "1"}}}))]}),
    );
    assert_eq!(
        pod_cgroup_parent(&p, &n),
        "/kubepods/burstable/pod0123-abcd"
    );
    n.cgroup_driver = CgroupDriver::Systemd;
    assert_eq!(
        pod_cgroup_parent(&p, &n),
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0123_abcd.slice"
    );
    n.cgroup_driver = CgroupDriver::Cgroupfs;
    n.cgroup_root = "/custom".into();
    assert_eq!(
        pod_cgroup_parent(&p, &n),
        "/custom/kubepods/burstable/pod0123-abcd"
    );
}

#[test]
fn oom_scores() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({
        "initContainers": [c(json!({"name": "side", "restartPolicy": "Always", "resources": {"requests": {"memory": "10Mi"}}}))],
        "containers": [c(json!({"name": "a", "resources": {"requests": {"memory": "100Mi"}}})),
                       c(json!({"name": "b", "resources": {"requests": {"memory": "500Mi"}}}))]}));
    let spec = p.spec.as_ref().expect("spec");
    assert_eq!(
        oom_score_adj(&p, &spec.containers[0], &n).expect("adj"),
        900
    );
    assert_eq!(
        oom_score_adj(&p, &spec.containers[1], &n).expect("adj"),
        500
    );
    // a sidecar is never more likely to be killed than the smallest regular container
    let side = &spec.init_containers.as_ref().expect("init")[0];
    assert_eq!(oom_score_adj(&p, side, &n).expect("adj"), 900);
    let pod_level = base_pod(json!({"resources": {"requests": {"memory": "600Mi"}},
        "containers": [c(json!({"name": "a", "resources": {"requests": {"memory": "100Mi"}}})),
                       c(json!({"name": "b", "resources": {"requests": {"memory": "300Mi"}}}))]}));
    let first = &pod_level.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        oom_score_adj(&pod_level, first, &n).expect("adj"),
        800,
        "unclaimed pod request shared out"
    );
    let huge = base_pod(
        json!({"containers": [c(json!({"name": "a", "resources": {"requests": {"memory": "2000Mi"}}}))]}),
    );
    assert_eq!(
        oom_score_adj(&huge, &huge.spec.as_ref().expect("spec").containers[0], &n).expect("adj"),
        3
    );
}

#[test]
fn sandbox_details() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({
        "hostname": "h", "subdomain": "sub", "setHostnameAsFQDN": true,
        "securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
                            "supplementalGroups": [5, 6], "fsGroup": 4, "supplementalGroupsPolicy": "Strict"},
        "containers": [
            c(json!({"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "TCP"},
                                            {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"}],
                     "securityContext": {"privileged": true}}))]}));
    let mut n2 = n.clone();
    n2.cluster_domain = "cluster.local".into();
    let s = sandbox_config(&p, 2, &n2).expect("sandbox");
    assert_eq!(s.metadata.as_ref().expect("meta").attempt, 2);
    assert_eq!(s.hostname, "h.sub.ns.svc.cluster.local");
    assert_eq!(s.port_mappings.len(), 2, "duplicate port dropped");
    assert_eq!(s.port_mappings[1].protocol, cri::Protocol::Udp as i32);
    assert_eq!(s.port_mappings[1].host_ip, "127.0.0.1");
    assert_eq!(s.labels.get("app").map(String::as_str), Some("x"));
    assert_eq!(s.annotations.get("a").map(String::as_str), Some("1"));
    let linux = s.linux.as_ref().expect("linux");
    assert_eq!(
        linux.sysctls.get("net.core.somaxconn").map(String::as_str),
        Some("1024")
    );
    let sc = linux.security_context.as_ref().expect("sc");
    assert!(sc.privileged);
    assert_eq!(sc.supplemental_groups, vec![4, 5, 6]);
    assert_eq!(
        sc.supplemental_groups_policy,
        cri::SupplementalGroupsPolicy::Strict as i32
    );
    assert_eq!(
        s.log_directory,
        dir.path().join("logs/ns_p_0123-abcd").to_string_lossy()
    );

    let userns = base_pod(
        json!({"hostUsers": false, "hostPID": true, "hostIPC": true, "containers": [c(json!({"name": "a"}))]}),
    );
    assert!(matches!(
        sandbox_config(&userns, 0, &n),
        Err(ConfigError::UsernsNotAllocated(_))
    ));
    let m = UsernsMapping {
        host_id: 65536 * 5,
        length: 65536,
    };
    let s = sandbox_config_with_userns(&userns, 0, &n, Some(&m)).expect("sandbox");
    let ns = s
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .expect("ns");
    assert_eq!(ns.pid, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.ipc, cri::NamespaceMode::Node as i32);
    let u = ns.userns_options.expect("userns");
    assert_eq!(u.mode, cri::NamespaceMode::Pod as i32);
    assert_eq!(
        u.uids,
        vec![cri::IdMapping {
            host_id: 65536 * 5,
            container_id: 0,
            length: 65536
        }]
    );
}

struct Objects;

impl ObjectSource for Objects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        (namespace == "ns" && name == "cm").then(|| ConfigMap {
            data: Some(BTreeMap::from([
                ("K1".into(), "v1".into()),
                ("K2".into(), "v2".into()),
            ])),
            ..Default::default()
        })
    }
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        (namespace == "ns" && name == "sec").then(|| Secret {
            data: Some(BTreeMap::from([(
                "pw".into(),
                ByteString(b"hunter2".to_vec()),
            )])),
            ..Default::default()
        })
    }
}

fn config_for(
    p: &Pod,
    n: &NodeSettings,
    name: &str,
    user: ImageUser,
) -> Result<cri::ContainerConfig, ConfigError> {
    let sandbox = sandbox_config(p, 0, n)?;
    let volumes = PodVolumes::plan(p, n).expect("plan");
    let spec = p.spec.as_ref().expect("spec");
    let container: &Container = spec
        .containers
        .iter()
        .find(|c| c.name == name)
        .expect("container");
    let ips: [IpAddr; 1] = ["10.1.2.3".parse().expect("ip")];
    let tlog = PathBuf::from("/t/log");
    // The volumes a subpath is taken from exist on disk, as after
    // prepare_volumes.
    for vm in container.volume_mounts.iter().flatten() {
        if vm.sub_path.is_some() || vm.sub_path_expr.is_some() {
            if let Some(v) = volumes.get(&vm.name) {
                std::fs::create_dir_all(&v.host_path).expect("volume dir");
            }
        }
    }
    let env = berth_criconfig::container_env(p, container, &ips, n, &Objects)?;
    let sub_paths = berth_criconfig::prepare_sub_paths(p, container, &env, &volumes, n)?;
    let ctx = ContainerContext {
        pod: p,
        container,
        kind: ContainerKind::Regular,
        restart_count: 1,
        sandbox_config: &sandbox,
        pod_ips: &ips,
        image_ref: "sha256:abc",
        image_user: user,
        volumes: &volumes,
        objects: &Objects,
        termination_message_file: Some(&tlog),
        target_container_id: Some("target-id"),
        sub_paths: &sub_paths,
        node: n,
    };
    container_config(&ctx)
}

#[test]
fn environment_and_expansion() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({"containers": [c(json!({
        "name": "a",
        "command": ["echo", "$(K1)", "$$(K1)", "$(NOPE)"],
        "args": ["$(COMBINED)"],
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}, {"configMapRef": {"name": "gone", "optional": true}}],
        "env": [
            {"name": "K1", "value": "one"},
            {"name": "COMBINED", "value": "$(K1)-$(P_K2)"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
        ],
        "resources": {"limits": {"memory": "64Mi"}}
    }))]}));
    let cfg = config_for(&p, &n, "a", ImageUser::default()).expect("config");
    let env: BTreeMap<String, String> = cfg
        .envs
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(env["P_K1"], "v1");
    assert_eq!(env["COMBINED"], "one-v2");
    assert_eq!(env["PW"], "hunter2");
    assert!(!env.contains_key("OPT"));
    assert_eq!(env["NODE"], "vm");
    assert_eq!(env["HOST_IP"], "192.168.1.5");
    assert_eq!(env["LABELS"], "app=\"x\"");
    assert_eq!(env["APP"], "x");
    assert_eq!(env["CPU"], "4000", "no limit: node allocatable");
    assert_eq!(env["MEM"], "64");
    assert_eq!(cfg.command, ["echo", "one", "$(K1)", "$(NOPE)"]);
    assert_eq!(cfg.args, ["one-v2"]);
    assert_eq!(cfg.log_path, "a/1.log");

    let missing = base_pod(json!({"containers": [c(json!({"name": "a",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "absent"}}}]}))]}));
    assert!(matches!(
        config_for(&missing, &n, "a", ImageUser::default()),
        Err(ConfigError::MissingKey { .. })
    ));
    let no_cm = base_pod(
        json!({"containers": [c(json!({"name": "a", "envFrom": [{"configMapRef": {"name": "other"}}]}))]}),
    );
    assert!(matches!(
        config_for(&no_cm, &n, "a", ImageUser::default()),
        Err(ConfigError::MissingObject { .. })
    ));
}

#[test]
fn security_contexts() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = node(dir.path());
    let p = base_pod(json!({
    "securityContext": {"runAsUser": 1000, "seccompProfile": {"type": "Localhost", "localhostProfile": "prof.json"}},
    "annotations": {},
    "containers": [
        c(json!({"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN"]},
                 "procMount": "Unmasked", "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-x"}}})),
        c(json!({"name": "b", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}})),
        c(json!({"name": "d", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "allowPrivilegeEscalation": true}}))
    ]}));
    let a = config_for(
        &p,
        &n,
        "a",
        ImageUser {
            uid: Some(0),
            username: String::new(),
        },
    )
    .expect("a");
    let sc = a
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .expect("sc");
    assert!(sc.privileged);
    assert_eq!(
        sc.capabilities.as_ref().expect("caps").add_capabilities,
        ["NET_ADMIN"]
    );
    assert!(
        sc.masked_paths.is_empty() && sc.readonly_paths.is_empty(),
        "Unmasked proc mount"
    );
    assert_eq!(
        sc.run_as_user,
        Some(cri::Int64Value { value: 1000 }),
        "pod runAsUser wins over the image"
    );
    let seccomp = sc.seccomp.as_ref().expect("seccomp");
    assert_eq!(
        seccomp.profile_type,
        cri::security_profile::ProfileType::Localhost as i32
    );
    assert!(seccomp.localhost_ref.ends_with("seccomp/prof.json"));
    let apparmor = sc.apparmor.as_ref().expect("apparmor");
    assert_eq!(apparmor.localhost_ref, "k8s-x");
    let ns = sc.namespace_options.as_ref().expect("ns");
    assert_eq!(ns.pid, cri::NamespaceMode::Target as i32);
    assert_eq!(ns.target_id, "target-id");
    assert!(!sc.no_new_privs);

    assert!(matches!(
        config_for(&p, &n, "b", ImageUser::default()),
        Err(ConfigError::RunAsNonRoot { .. })
    ));
    let nonroot = base_pod(
        json!({"securityContext": {"runAsNonRoot": true}, "containers": [c(json!({"name": "a"}))]}),
    );
    assert!(matches!(
        config_for(
            &nonroot,
            &n,
            "a",
            ImageUser {
                uid: Some(0),
                username: String::new()
            }
        ),
        Err(ConfigError::RunAsNonRoot { .. })
    ));
    assert!(matches!(
        config_for(
            &nonroot,
            &n,
            "a",
            ImageUser {
                uid: None,
                username: "www".into()
            }
        ),
        Err(ConfigError::RunAsNonRoot { .. })
    ));
    let ok = config_for(
        &nonroot,
        &n,
        "a",
        ImageUser {
            uid: Some(33),
            username: String::new(),
        },
    )
    .expect("non-root image");
    assert_eq!(
        ok.linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.run_as_user),
        Some(cri::Int64Value { value: 33 })
    );

    n.seccomp_default = true;
    let nod = base_pod(
        json!({"containers": [c(json!({"name": "a", "securityContext": {"allowPrivilegeEscalation": false}}))]}),
    );
    let d = config_for(&nod, &n, "a", ImageUser::default()).expect("d");
    let sc = d.linux.and_then(|l| l.security_context).expect("sc");
    assert_eq!(
        sc.seccomp.expect("seccomp").profile_type,
        cri::security_profile::ProfileType::RuntimeDefault as i32
    );
    assert!(sc.no_new_privs);
    assert_eq!(sc.masked_paths, ["/proc/kcore"]);
    let anno = pod(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                     "annotations": {"container.apparmor.security.beta.kubernetes.io/a": "runtime/default"}},
        "spec": {"securityContext": {}, "containers": [c(json!({"name": "a"}))]}}));
    let x = config_for(&anno, &n, "a", ImageUser::default()).expect("x");
    #[allow(deprecated)]
    let legacy = x
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .map(|s| s.apparmor_profile.clone());
    assert_eq!(legacy.as_deref(), Some("runtime/default"));
}

#[test]
fn mounts_and_resources() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "host", "hostPath": {"path": "/srv"}},
                    {"name": "cfg", "configMap": {"name": "cm"}}],
        "containers": [c(json!({"name": "a",
            "env": [{"name": "SUB", "value": "x"}],
            "volumeMounts": [
                {"name": "data", "mountPath": "/data", "subPathExpr": "$(SUB)/y"},
                {"name": "host", "mountPath": "/h", "mountPropagation": "HostToContainer", "readOnly": true},
                {"name": "cfg", "mountPath": "/etc/hosts"}],
            "resources": {"requests": {"cpu": "250m", "memory": "1Gi", "hugepages-2Mi": "4Mi"},
                          "limits": {"cpu": "500m", "memory": "1Gi", "hugepages-2Mi": "4Mi"}}}))]}));
    let cfg = config_for(&p, &n, "a", ImageUser::default()).expect("config");
    let uid_dir = dir.path().join("pods/0123-abcd/volumes");
    // The subpath is made in the volume and bound from there.
    assert!(uid_dir.join("kubernetes.io~empty-dir/data/x/y").is_dir());
    assert_eq!(
        cfg.mounts[0].host_path,
        dir.path()
            .join("pods/0123-abcd/volume-subpaths/data/a/0")
            .to_string_lossy()
    );
    assert_eq!(cfg.mounts[1].host_path, "/srv");
    assert_eq!(
        cfg.mounts[1].propagation,
        cri::MountPropagation::PropagationHostToContainer as i32
    );
    assert!(cfg.mounts[1].readonly);
    assert!(cfg.mounts[2].readonly, "configMap volumes are read-only");
    assert_eq!(
        cfg.mounts.len(),
        4,
        "no managed /etc/hosts when the container mounts its own"
    );
    assert_eq!(cfg.mounts[3].container_path, "/dev/termination-log");
    let r = cfg.linux.and_then(|l| l.resources).expect("resources");
    assert_eq!(r.cpu_shares, 256);
    assert_eq!(r.cpu_quota, 50_000);
    assert_eq!(r.memory_limit_in_bytes, 1 << 30);
    assert_eq!(r.memory_swap_limit_in_bytes, 0, "no swap controller");
    assert_eq!(
        r.hugepage_limits,
        vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20
        }]
    );

    let bad = base_pod(
        json!({"containers": [c(json!({"name": "a", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}))]}),
    );
    assert!(matches!(
        config_for(&bad, &n, "a", ImageUser::default()),
        Err(ConfigError::MissingVolume { .. })
    ));
    let unset = base_pod(json!({"volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [c(json!({"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/d", "subPathExpr": "$(NOPE)"}]}))]}));
    assert!(config_for(&unset, &n, "a", ImageUser::default()).is_err());
    berth_criconfig::remove_volumes("0123-abcd", &n).expect("cleanup");
}

#[test]
fn volumes_on_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let host_dir = dir.path().join("made");
    let p = base_pod(json!({
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "K1", "path": "sub/k1", "mode": 0o600}]}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "a", "resource": "limits.cpu", "divisor": "1m"}}]}},
            {"name": "made", "hostPath": {"path": host_dir.to_string_lossy(), "type": "DirectoryOrCreate"}}
        ],
        "containers": [c(json!({"name": "a", "resources": {"limits": {"cpu": "200m"}}}))]}));
    let vols = prepare_volumes(&p, &n, &Objects).expect("prepare");
    let data = &vols.get("data").expect("data").host_path;
    assert!(data.is_dir());
    let cfg = &vols.get("cfg").expect("cfg").host_path;
    assert_eq!(
        std::fs::read_to_string(cfg.join("sub/k1")).expect("k1"),
        "v1"
    );
    assert!(std::fs::symlink_metadata(cfg.join("..data"))
        .expect("..data")
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(cfg.join("sub"))
        .expect("sub")
        .file_type()
        .is_symlink());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(cfg.join("sub/k1"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let info = &vols.get("info").expect("info").host_path;
    assert_eq!(
        std::fs::read_to_string(info.join("labels")).expect("labels"),
        "app=\"x\""
    );
    assert_eq!(
        std::fs::read_to_string(info.join("cpu")).expect("cpu"),
        "200"
    );
    assert!(host_dir.is_dir(), "DirectoryOrCreate made the directory");
    // again: contents are rewritten, the layout stays
    prepare_volumes(&p, &n, &Objects).expect("prepare again");
    assert_eq!(
        std::fs::read_to_string(cfg.join("sub/k1")).expect("k1"),
        "v1"
    );
    let pod_dir = dir.path().join("pods/0123-abcd");
    assert!(pod_dir.is_dir());
    remove_volumes("0123-abcd", &n).expect("remove");
    assert!(!pod_dir.exists());
    assert!(host_dir.is_dir(), "hostPath contents are never removed");
    assert!(matches!(
        remove_volumes("../x", &n),
        Err(VolumeError::BadUid(_))
    ));

    let missing_file = base_pod(
        json!({"volumes": [{"name": "f", "hostPath": {"path": host_dir.to_string_lossy(), "type": "File"}}],
        "containers": [c(json!({"name": "a"}))]}),
    );
    assert!(matches!(
        prepare_volumes(&missing_file, &n, &Objects),
        Err(VolumeError::HostPathType { .. })
    ));
    let missing_cm = base_pod(
        json!({"volumes": [{"name": "c", "configMap": {"name": "absent"}}], "containers": [c(json!({"name": "a"}))]}),
    );
    assert!(matches!(
        prepare_volumes(&missing_cm, &n, &Objects),
        Err(VolumeError::Source { .. })
    ));
    let pvc = base_pod(
        json!({"volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "x"}}], "containers": [c(json!({"name": "a"}))]}),
    );
    assert!(matches!(
        PodVolumes::plan(&pvc, &n),
        Err(VolumeError::Unsupported { .. })
    ));
}

#[test]
fn tmpfs_volumes_are_mounted_and_removed() {
    if !nix_is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({
        "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "s", "secret": {"secretName": "sec"}}],
        "containers": [c(json!({"name": "a"}))]}));
    let vols = match prepare_volumes(&p, &n, &Objects) {
        Ok(v) => v,
        // mounting may be forbidden in a restricted container even as root
        Err(VolumeError::Mount { .. }) => return,
        Err(e) => panic!("prepare: {e}"),
    };
    let secret_dir = &vols.get("s").expect("s").host_path;
    assert_eq!(
        std::fs::read(secret_dir.join("pw")).expect("pw"),
        b"hunter2"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(mounts.contains(&*secret_dir.to_string_lossy()));
    let mem_line = mounts
        .lines()
        .find(|l| l.contains(&*vols.get("mem").expect("mem").host_path.to_string_lossy()))
        .expect("memory emptyDir mounted");
    assert!(
        mem_line.contains("size=1024k"),
        "sizeLimit applied: {mem_line}"
    );
    remove_volumes("0123-abcd", &n).expect("remove");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&*dir.path().to_string_lossy()));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn hosts_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = node(dir.path());
    n.cluster_domain = "cluster.local".into();
    let p = base_pod(
        json!({"subdomain": "s", "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}],
        "containers": [c(json!({"name": "a"}))]}),
    );
    let ip: IpAddr = "10.0.0.9".parse().expect("ip");
    let content = etc_hosts_content(&p, &n, &[ip], "").expect("hosts");
    assert!(content.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    assert!(content.contains("10.0.0.9\tp.s.ns.svc.cluster.local\tp\n"));
    assert!(content.ends_with("\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    let path = write_etc_hosts(&p, &n, &[ip]).expect("write");
    assert_eq!(path, etc_hosts_path("0123-abcd", &n));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), content);
    let hostnet = base_pod(json!({"hostNetwork": true, "containers": [c(json!({"name": "a"}))]}));
    let content = etc_hosts_content(&hostnet, &n, &[], "127.0.0.1 me\n").expect("hosts");
    assert_eq!(
        content,
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 me\n"
    );
}

#[test]
fn ephemeral_containers_convert() {
    let e: k8s_openapi::api::core::v1::EphemeralContainer =
        serde_json::from_value(json!({"name": "dbg", "image": "busybox", "command": ["sh"], "targetContainerName": "a", "tty": true}))
            .expect("ephemeral");
    let c = ephemeral_as_container(&e);
    assert_eq!(c.name, "dbg");
    assert_eq!(c.command, Some(vec!["sh".to_string()]));
    assert_eq!(c.tty, Some(true));
}

#[test]
fn termination_message_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let n = node(dir.path());
    let p = base_pod(json!({"containers": [c(json!({"name": "a"}))]}));
    let f = create_termination_message_file(&p, "a", &n).expect("create");
    assert!(f.starts_with(dir.path().join("pods/0123-abcd/containers/a")));
    assert_eq!(
        f.file_name().and_then(|s| s.to_str()).map(str::len),
        Some(8)
    );
    assert!(dir.path().join("logs/ns_p_0123-abcd/a").is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777,
        0o666
    );
}
