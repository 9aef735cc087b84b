//! Every RunPodSandbox and CreateContainer request the real kubelet v1.36.2
//! made for the manifests in scripts/kubelet-manifests, regenerated from the
//! manifests and compared field by field. Only per-run values are taken from
//! the recording: pod UIDs and config annotations (the kubelet hashes the
//! file), the user namespace range, image IDs, pod IPs and the random name of
//! each termination message file.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_cri::runtime::v1 as cri;
use berth_criconfig::{
    container_config, container_hash, container_info, sandbox_config_with_userns, sandbox_info,
    CgroupDriver, ContainerContext, ContainerKind, ImageUser, NoObjects, NodeSettings, PodVolumes,
    ResolvConf, UsernsMapping,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

const E2E: &str = "/var/tmp/berth-kubelet-e2e";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn calls() -> Vec<Value> {
    let path = root().join("crates/berth/tests/fixtures/kubelet/manifests.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixture");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(&l.replace("$E2E", E2E)).expect("fixture line"))
        .collect()
}

/// The node as the lab kubelet ran: cgroupfs on a v1 host with swap
/// accounting, no cluster DNS (ClusterFirst falls back to the host's
/// resolver), two huge page sizes, no SELinux.
fn node() -> NodeSettings {
    NodeSettings {
        node_name: "vm".into(),
        pod_logs_dir: PathBuf::from(format!("{E2E}/kubelet/logs")),
        pods_dir: PathBuf::from(format!("{E2E}/kubelet/root/pods")),
        cgroup_root: "/".into(),
        cgroups_per_qos: true,
        cgroup_driver: CgroupDriver::Cgroupfs,
        cgroup_v2: false,
        swap_controller: true,
        cluster_dns: Vec::new(),
        cluster_domain: String::new(),
        resolv_conf: PathBuf::from("/etc/resolv.conf"),
        host_dns: ResolvConf::parse("nameserver 10.255.255.53\n"),
        runtime_handler: String::new(),
        node_ips: vec!["10.0.2.15".parse().expect("ip")],
        pod_pids_limit: None,
        cpu_cfs_quota: true,
        cpu_cfs_period_us: 100_000,
        memory_capacity: 16 << 30,
        allocatable: BTreeMap::new(),
        hugepage_sizes: vec!["2MB".into(), "1GB".into()],
        // The fixture machine's list: the fixed paths, no thermal ones
        // (the recorded requests check them).
        masked_paths: berth_criconfig::BASE_MASKED_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        seccomp_default: false,
        seccomp_profile_root: PathBuf::from(format!("{E2E}/kubelet/root/seccomp")),
        supports_recursive_read_only: false,
        selinux_enabled: false,
        userns_support: true,
        pod_level_resources: true,
    }
}

fn default_container(c: &mut Value) {
    let o = c.as_object_mut().expect("container object");
    o.entry("terminationMessagePath")
        .or_insert("/dev/termination-log".into());
    o.entry("terminationMessagePolicy").or_insert("File".into());
    let image = o
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let latest = !image.contains(':') || image.ends_with(":latest");
    o.entry("imagePullPolicy")
        .or_insert(if latest { "Always" } else { "IfNotPresent" }.into());
    if let Some(ports) = o.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            p.as_object_mut()
                .expect("port")
                .entry("protocol")
                .or_insert("TCP".into());
        }
    }
    // requests default to limits
    if let Some(res) = o.get_mut("resources").and_then(Value::as_object_mut) {
        if let Some(limits) = res.get("limits").cloned() {
            let req = res.entry("requests").or_insert(serde_json::json!({}));
            for (k, v) in limits.as_object().expect("limits") {
                req.as_object_mut()
                    .expect("requests")
                    .entry(k.clone())
                    .or_insert(v.clone());
            }
        }
    }
}

/// The pod the kubelet builds from a static manifest: `<name>-vm` in
/// "default", the recorded UID and config annotations, and the API defaults
/// this crate depends on.
fn static_pod(manifest: &str, sandbox: &Value) -> Pod {
    let mut v: Value = serde_norway::from_str(manifest).expect("manifest yaml");
    let meta = v["metadata"].as_object_mut().expect("metadata");
    let name = format!("{}-vm", meta["name"].as_str().expect("name"));
    meta.insert("name".into(), name.into());
    meta.insert("namespace".into(), "default".into());
    meta.insert("uid".into(), sandbox["metadata"]["uid"].clone());
    meta.insert("annotations".into(), sandbox["annotations"].clone());
    let spec = v["spec"].as_object_mut().expect("spec");
    spec.entry("restartPolicy").or_insert("Always".into());
    spec.entry("dnsPolicy").or_insert("ClusterFirst".into());
    spec.entry("securityContext")
        .or_insert(serde_json::json!({}));
    spec.entry("enableServiceLinks").or_insert(true.into());
    spec.insert("nodeName".into(), "vm".into());
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    serde_json::from_value(v).expect("pod")
}

fn manifests() -> HashMap<String, String> {
    let dir = root().join("scripts/kubelet-manifests");
    std::fs::read_dir(&dir)
        .expect("manifest dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("stem")
                .to_string();
            (
                format!("{stem}-vm"),
                std::fs::read_to_string(&p).expect("manifest"),
            )
        })
        .collect()
}

fn userns_of(sandbox: &Value) -> Option<UsernsMapping> {
    let u = &sandbox["linux"]["securityContext"]["namespaceOptions"]["usernsOptions"]["uids"][0];
    Some(UsernsMapping {
        host_id: u["hostId"].as_u64()? as u32,
        length: u["length"].as_u64()? as u32,
    })
}

fn sorted_envs(mut c: cri::ContainerConfig) -> cri::ContainerConfig {
    c.envs.sort_by(|a, b| a.key.cmp(&b.key));
    c
}

#[test]
fn every_sandbox_config_matches_the_kubelet() {
    let manifests = manifests();
    let node = node();
    let mut seen = 0;
    for call in calls().iter().filter(|c| c["method"] == "RunPodSandbox") {
        let recorded = &call["request"]["config"];
        let name = recorded["metadata"]["name"].as_str().expect("name");
        let pod = static_pod(&manifests[name], recorded);
        let ours = sandbox_config_with_userns(&pod, 0, &node, userns_of(recorded).as_ref())
            .expect("sandbox config");
        let want: cri::PodSandboxConfig =
            serde_json::from_value(recorded.clone()).expect("recorded config");
        assert_eq!(ours, want, "sandbox config of {name}");
        let info = sandbox_info(&ours.labels).expect("sandbox info");
        assert_eq!(info.pod_name, name);
        seen += 1;
    }
    assert_eq!(seen, 12, "one sandbox per manifest");
}

fn container_of<'a>(pod: &'a Pod, name: &str) -> (&'a Container, ContainerKind) {
    let spec = pod.spec.as_ref().expect("spec");
    if let Some(c) = spec.containers.iter().find(|c| c.name == name) {
        return (c, ContainerKind::Regular);
    }
    let c = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .expect("container in pod");
    let kind = if c.restart_policy.as_deref() == Some("Always") {
        ContainerKind::Sidecar
    } else {
        ContainerKind::Init
    };
    (c, kind)
}

#[test]
fn every_container_config_matches_the_kubelet() {
    let manifests = manifests();
    let node = node();
    let mut pods_seen = std::collections::BTreeSet::new();
    let mut seen = 0;
    for call in calls().iter().filter(|c| c["method"] == "CreateContainer") {
        let req = &call["request"];
        let recorded_sandbox = &req["sandboxConfig"];
        let recorded = &req["config"];
        let pod_name = recorded_sandbox["metadata"]["name"]
            .as_str()
            .expect("pod name");
        let pod = static_pod(&manifests[pod_name], recorded_sandbox);
        let sandbox: cri::PodSandboxConfig =
            serde_json::from_value(recorded_sandbox.clone()).expect("sandbox");
        let want: cri::ContainerConfig =
            serde_json::from_value(recorded.clone()).expect("recorded config");
        let (container, kind) = container_of(&pod, &want.metadata.as_ref().expect("metadata").name);

        // per-run inputs
        let pod_ip: IpAddr = want
            .envs
            .iter()
            .find(|e| e.key == "POD_IP")
            .map(|e| e.value.as_str())
            .unwrap_or("10.218.0.2")
            .parse()
            .expect("pod ip");
        let termination = want
            .mounts
            .iter()
            .find(|m| m.container_path == "/dev/termination-log")
            .map(|m| PathBuf::from(&m.host_path));
        let volumes = PodVolumes::plan(&pod, &node).expect("volumes");
        let ctx = ContainerContext {
            pod: &pod,
            container,
            kind,
            restart_count: want.metadata.as_ref().expect("metadata").attempt,
            sandbox_config: &sandbox,
            pod_ips: &[pod_ip],
            image_ref: &want.image.as_ref().expect("image").image,
            image_user: ImageUser {
                uid: Some(0),
                username: String::new(),
            },
            volumes: &volumes,
            objects: &NoObjects,
            termination_message_file: termination.as_deref(),
            target_container_id: None,
            sub_paths: &Default::default(),
            node: &node,
        };
        let ours = container_config(&ctx).expect("container config");
        assert_eq!(
            sorted_envs(ours.clone()),
            sorted_envs(want.clone()),
            "config of {pod_name}/{}",
            container.name
        );

        let info = container_info(&ours.labels, &ours.annotations).expect("container info");
        assert_eq!(info.container_name, container.name);
        assert_eq!(info.hash, container_hash(container));
        assert_eq!(info.restart_count, ctx.restart_count);
        pods_seen.insert(pod_name.to_string());
        seen += 1;
    }
    assert_eq!(seen, 20, "every CreateContainer call");
    assert_eq!(pods_seen.len(), 12, "every manifest");
}
