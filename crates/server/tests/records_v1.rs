//! Version 1 pod and container records, written by Berth before records
//! kept its own types (`fixtures/records-v1/`: a kubelet-like pod and
//! container, run with that Berth, with the PodSandboxStatus and verbose
//! ContainerStatus it answered), read by this one: migrated on read into
//! `berth-podspec`'s model, answered the same, written back as version 2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_cri::runtime::v1 as cri;
use berth_podspec::{MountPropagation, NamespaceMode, ProfileType, Protocol};
use berth_runtime::container::{State, Status};
use berth_runtime::records::{self, migrate_container, migrate_pod};
use berth_runtime::{ContainerRecord, ContainerView, PodView, SandboxRecord};
use berth_server::convert::{self, V1Records};
use berth_store::RecordDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/records-v1")
        .join(name)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Record directories as the runtime opens them, holding the fixtures.
fn dirs() -> (tempfile::TempDir, RecordDir, RecordDir) {
    let d = tempfile::tempdir().unwrap();
    let open = |sub: &str, migrate: berth_store::Migration| {
        let dir = d.path().join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture(&format!("{sub}.json")), dir.join("x.json")).unwrap();
        RecordDir::open(dir)
            .unwrap()
            .versioned(records::VERSION, migrate)
    };
    let pods = open("pod", Arc::new(|v, r| migrate_pod(&V1Records, v, r)));
    let containers = open(
        "container",
        Arc::new(|v, r| migrate_container(&V1Records, v, r)),
    );
    (d, pods, containers)
}

fn load<T: serde::de::DeserializeOwned>(dir: &RecordDir) -> T {
    let (mut good, bad) = dir.load_all::<T>().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    good.pop().unwrap().1
}

#[test]
fn a_v1_pod_record_is_migrated() {
    let (_d, pods, _) = dirs();
    let pod: SandboxRecord = load(&pods);
    let c = &pod.config;
    assert_eq!(c.metadata.name, "security-vm");
    assert_eq!(c.metadata.namespace, "default");
    assert_eq!(c.metadata.attempt, 1);
    assert_eq!(c.hostname, "security-vm");
    assert_eq!(c.labels["io.kubernetes.pod.name"], "security-vm");
    assert_eq!(c.dns_config.as_ref().unwrap().options, ["ndots:5"]);
    assert_eq!(c.port_mappings[0].protocol, Protocol::Udp);
    assert_eq!(c.port_mappings[0].container_port, 80);
    let linux = c.linux.as_ref().unwrap();
    assert_eq!(linux.cgroup_parent, "/berth-fixture/podcb58");
    assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(linux.resources.as_ref().unwrap().cpu_shares, 2);
    let sc = linux.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(3000)));
    assert_eq!(sc.supplemental_groups, [2000]);
    // protobuf-JSON leaves defaults out: `"seccomp": {}` is RuntimeDefault,
    // a missing `pid` is POD.
    assert_eq!(
        sc.seccomp.as_ref().unwrap().profile_type,
        ProfileType::RuntimeDefault
    );
    let ns = c.namespace_options();
    assert_eq!(ns.pid, NamespaceMode::Pod);
    assert_eq!(ns.userns_options.unwrap().mode, NamespaceMode::Node);
    // The rest of the record is as it was.
    assert!(pod.ready && pod.own_ipc && pod.own_uts);
    assert_eq!(pod.ips, ["10.101.19.2"]);
    assert_eq!(pod.monitor.unwrap().pid, 14748);
    assert_eq!(pod.pod_init, Some(14753));
    assert!(pod.cni_result.is_some() && pod.netns.is_some() && pod.userns.is_none());
}

#[test]
fn a_v1_container_record_is_migrated() {
    let (_d, _, containers) = dirs();
    let rec: ContainerRecord = load(&containers);
    let c = &rec.config;
    assert_eq!((c.metadata.name.as_str(), c.metadata.attempt), ("main", 3));
    assert_eq!(
        c.image.user_specified_image,
        "docker.io/library/busybox:1.36.1"
    );
    assert_eq!(c.command, ["sh", "-c"]);
    assert_eq!(c.working_dir, "/tmp");
    assert_eq!(
        (c.envs[1].key.as_str(), c.envs[1].value.as_str()),
        ("EMPTY", "")
    );
    assert!(c.stdin && !c.tty);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(c.log_path, "main/0.log");
    let m = &c.mounts[0];
    assert!(m.readonly && m.selinux_relabel);
    assert_eq!(m.propagation, MountPropagation::Private);
    assert_eq!(c.devices[0].host_path, "/dev/null");
    let sc = c.security_context().unwrap();
    assert_eq!(sc.capabilities.as_ref().unwrap().drop_capabilities, ["ALL"]);
    assert!(sc.no_new_privs && sc.readonly_rootfs);
    assert_eq!(sc.masked_paths.len(), 3);
    assert_eq!(
        sc.seccomp.as_ref().unwrap().profile_type,
        ProfileType::Unconfined
    );
    assert_eq!(
        sc.apparmor.as_ref().unwrap().profile_type,
        ProfileType::RuntimeDefault
    );
    assert_eq!(c.resources().unwrap().cpu_quota, 50000);
    // What UpdateContainerResources applied.
    let r = rec.resources.as_ref().unwrap();
    assert_eq!((r.cpu_quota, r.memory_limit_in_bytes), (60000, 134217728));
    assert_eq!(r.unified["memory.high"], "60000000");
    assert_eq!(rec.user.groups, [2000, 3000]);
    assert_eq!(rec.chains.len(), 1);
}

#[test]
fn migrated_records_are_answered_as_before() {
    let (_d, pods, containers) = dirs();
    let pod: SandboxRecord = load(&pods);
    let rec: ContainerRecord = load(&containers);

    let before: cri::PodSandboxStatusResponse =
        serde_json::from_value(json("pod-status.json")).unwrap();
    let now = convert::pod_status(&PodView {
        record: pod.clone(),
        ready: true,
    });
    assert_eq!(now, before.status.unwrap());
    let info: serde_json::Value = serde_json::from_str(&before.info["info"]).unwrap();
    let config: cri::PodSandboxConfig = serde_json::from_value(info["config"].clone()).unwrap();
    assert_eq!(convert::cri_pod_config(&pod.config), config);

    let before: cri::ContainerStatusResponse =
        serde_json::from_value(json("container-status.json")).unwrap();
    let status = before.status.unwrap();
    let view = ContainerView {
        record: rec.clone(),
        state: State {
            id: rec.id.clone(),
            status: Status::Running,
            pid: None,
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        stop_signal: berth_runtime::container::stop_signal(&rec),
    };
    assert_eq!(convert::container_status(&view), status);
    let info: serde_json::Value = serde_json::from_str(&before.info["info"]).unwrap();
    let config: cri::ContainerConfig = serde_json::from_value(info["config"].clone()).unwrap();
    assert_eq!(convert::cri_container_config(&rec.config), config);
}

#[test]
fn migrated_records_are_written_back_as_v2() {
    let (_d, pods, containers) = dirs();
    let pod: SandboxRecord = load(&pods);
    let rec: ContainerRecord = load(&containers);
    pods.put("x", &pod).unwrap();
    containers.put("x", &rec).unwrap();
    let text = std::fs::read_to_string(containers.dir().join("x.json")).unwrap();
    assert!(text.starts_with(r#"{"version":2,"#), "{text}");
    assert!(text.contains(r#""stop_signal":"SIGQUIT""#), "{text}");
    let again: ContainerRecord = load(&containers);
    assert_eq!(again.config, rec.config);
    assert_eq!(again.resources, rec.resources);
    let again: SandboxRecord = load(&pods);
    assert_eq!(again.config, pod.config);
}

#[test]
fn a_v1_record_the_model_cannot_hold_is_unreadable() {
    let (d, pods, _) = dirs();
    let mut v = json("pod.json");
    v["record"]["config"]["portMappings"][0]["protocol"] = 9.into();
    std::fs::write(d.path().join("pod/x.json"), v.to_string()).unwrap();
    let (good, bad) = pods.load_all::<SandboxRecord>().unwrap();
    assert!(good.is_empty());
    let e = bad[0].error.to_string();
    assert!(e.contains("cannot be migrated to version 2"), "{e}");
    // A record of a later version is refused, as before.
    let mut v = json("pod.json");
    v["version"] = 3.into();
    std::fs::write(d.path().join("pod/x.json"), v.to_string()).unwrap();
    let (_, bad) = pods.load_all::<SandboxRecord>().unwrap();
    assert!(matches!(
        bad[0].error,
        berth_store::Error::Version {
            found: 3,
            supported: 2,
            ..
        }
    ));
}
