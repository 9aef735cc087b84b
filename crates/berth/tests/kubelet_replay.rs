//! Replays what a real kubelet sent: the CRI calls the lab kubelet
//! (Kubernetes v1.36.2) made while running `scripts/kubelet-manifests`,
//! recorded with `record_requests` and trimmed by
//! `scripts/kubelet-fixture.py` into `tests/fixtures/kubelet/*.jsonl`.
//!
//! Each call is sent again, in order, to a fresh daemon; ids the recorded
//! responses returned are mapped to the ones this daemon returns, lab paths
//! to a temporary directory, the lab registry's images to the test
//! registry. Every call that succeeded for the kubelet must succeed again,
//! and nothing is left afterwards. Where the recorded daemon was killed
//! (`kill -9` under the running kubelet, a `restartDaemon` line), this
//! daemon is killed too and started again, and every container that ran
//! must still run, started at the same time. Re-record when the kubelet
//! changes (from a fresh runtime root, so that the images are pulled).

mod common;

use std::collections::HashMap;
use std::path::Path;

use berth_testkit::{fixtures, ManifestFormat, Registry};
use common::*;
use serde_json::Value;

/// Calls whose outcome depends on timing the replay cannot reproduce (a
/// probe or a status read may meet a container in another state): their
/// codes are reported, not compared.
const TIMING: [&str; 3] = ["ExecSync", "ContainerStatus", "PodSandboxStatus"];

fn replace_strings(v: &mut Value, map: &HashMap<String, String>, e2e: &str) {
    match v {
        Value::String(s) => {
            if let Some(new) = map.get(s.as_str()) {
                *s = new.clone();
            } else if s.contains("$E2E") {
                *s = s.replace("$E2E", e2e);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, map, e2e)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_strings(x, map, e2e)),
        _ => {}
    }
}

/// The images the kubelet manifests use, built from the busybox fixture.
async fn push_images(reg: &Registry) {
    fixtures::busybox()
        .push(reg, "library/busybox:1.36.1", ManifestFormat::DockerV2)
        .await
        .unwrap();
    // nginx's stand-in: busybox's httpd on port 80.
    fixtures::busybox_builder()
        .cmd(["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/"])
        .build()
        .push(reg, "library/nginx:latest", ManifestFormat::DockerV2)
        .await
        .unwrap();
}

/// The running containers, with their start times.
async fn running_containers(channel: &tonic::transport::Channel) -> Vec<(String, i64)> {
    let mut rt =
        berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient::new(channel.clone());
    let mut out = Vec::new();
    for c in rt
        .list_containers(berth_cri::runtime::v1::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
    {
        if c.state != berth_cri::runtime::v1::ContainerState::ContainerRunning as i32 {
            continue;
        }
        let st = rt
            .container_status(berth_cri::runtime::v1::ContainerStatusRequest {
                container_id: c.id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        out.push((c.id, st.started_at));
    }
    out.sort();
    out
}

/// Removes the kubelet's pod cgroups (the parents the runtimes created
/// for the containers) as the kubelet does after RemovePodSandbox: each
/// must be removable, nothing of Berth's may keep it busy. The QoS levels
/// above are removed too when empty (nobody else would here).
fn remove_pod_cgroups(parents: &[String]) {
    let mut busy = Vec::new();
    for ctl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for parent in parents {
            let mut dir = ctl.path().join(parent.trim_start_matches('/'));
            if let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    busy.push(format!("{}: {e}", dir.display()));
                }
                continue;
            }
            dir.pop();
            while dir.starts_with(ctl.path().join("kubepods")) && std::fs::remove_dir(&dir).is_ok()
            {
                dir.pop();
            }
        }
    }
    assert!(
        busy.is_empty(),
        "pod cgroups the kubelet could not remove: {busy:?}"
    );
}

async fn replay(fixture: &str) {
    let reg = Registry::start();
    push_images(&reg).await;
    let mirror = format!("mirrors = [\"http://{}\"]\nupstream = false\n", reg.host());
    let config = format!(
        "[registry.\"docker.io\"]\n{mirror}[cni]\nconf_dir = \"{{dir}}/cni\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n"
    );
    let mut d = Daemon::start(&config);
    let _net = TestNetwork::create(d.dir.path());
    let e2e = d.dir.path().join("e2e");
    let e2e = e2e.to_string_lossy().into_owned();
    let mut channel = channel(&d.socket()).await;
    let mut restarts = 0;

    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/kubelet")
            .join(fixture),
    )
    .unwrap();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut cgroup_parents = Vec::new();
    let mut containers: Vec<(String, String)> = Vec::new();
    let (mut replayed, mut timing_differs) = (0, Vec::new());
    for (n, line) in text.lines().enumerate() {
        let call: Value = serde_json::from_str(line).unwrap();
        if call["restartDaemon"] == true {
            // Where the recorded daemon was killed: the same here, and
            // every container must outlive it, untouched.
            let before = running_containers(&channel).await;
            assert!(!before.is_empty(), "call {n}: nothing runs at the restart");
            d.kill9();
            d.spawn();
            channel = common::channel(&d.socket()).await;
            assert_eq!(
                running_containers(&channel).await,
                before,
                "containers running before the daemon was killed\n{}",
                d.log()
            );
            restarts += 1;
            continue;
        }
        let method = call["method"].as_str().unwrap();
        let mut request = call["request"].clone();
        replace_strings(&mut request, &ids, &e2e);
        // The host paths the kubelet had made for this container.
        if let Some(paths) = call["hostPaths"].as_object() {
            for (p, kind) in paths {
                let p = p.replace("$E2E", &e2e);
                match kind.as_str() {
                    Some("dir") => std::fs::create_dir_all(&p).unwrap(),
                    Some("file") => {
                        std::fs::create_dir_all(Path::new(&p).parent().unwrap()).unwrap();
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&p)
                            .unwrap();
                    }
                    _ => {}
                }
            }
        }
        if method == "RunPodSandbox" {
            if let Some(p) = request["config"]["linux"]["cgroupParent"].as_str() {
                cgroup_parents.push(p.to_string());
            }
        }
        let want = call["code"].as_i64().unwrap() as i32;
        let got = berth_cri::methods::call(channel.clone(), method, request.clone())
            .await
            .unwrap_or_else(|e| panic!("call {n} ({method}): {e}"));
        let code = match &got {
            Ok(_) => 0,
            Err(s) => s.code() as i32,
        };
        if code != want {
            if TIMING.contains(&method) {
                timing_differs.push(format!("{n} {method}: {want} -> {code}"));
            } else {
                panic!(
                    "call {n} ({method}) answered {got:?}, the kubelet got code {want}\nrequest: {request}\n{}",
                    d.log()
                );
            }
        }
        if method == "CreateContainer" {
            if let (Ok(resp), Some(parent)) = (
                &got,
                request["sandboxConfig"]["linux"]["cgroupParent"].as_str(),
            ) {
                if let Some(id) = resp["containerId"].as_str() {
                    containers.push((parent.to_string(), id.to_string()));
                }
            }
        }
        // Map the ids the kubelet was given to this daemon's.
        if let (Ok(resp), Some(recorded)) = (&got, call["response"].as_object()) {
            for key in ["podSandboxId", "containerId", "imageRef"] {
                if let (Some(old), Some(new)) = (
                    recorded.get(key).and_then(Value::as_str),
                    resp.get(key).and_then(Value::as_str),
                ) {
                    ids.insert(old.to_string(), new.to_string());
                }
            }
        }
        replayed += 1;
    }
    eprintln!(
        "{fixture}: {replayed} calls replayed, {restarts} daemon restarts; \
         timing-dependent differences: {timing_differs:?}"
    );
    assert!(replayed > 100, "a fixture of {replayed} calls");

    // The recording ends with the lab's teardown (crictl stopp/rmp); what
    // is still there goes now, and nothing may be left.
    let mut rt = d.runtime().await;
    for p in rt
        .list_pod_sandbox(berth_cri::runtime::v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
    {
        let id = p.id;
        rt.stop_pod_sandbox(berth_cri::runtime::v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(berth_cri::runtime::v1::RemovePodSandboxRequest {
            pod_sandbox_id: id,
        })
        .await
        .unwrap();
    }
    assert_eq!(host_traces(&d), Vec::<String>::new(), "left on the host");
    for (parent, id) in &containers {
        for ctl in ["memory", "cpu", "pids"] {
            let cg = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(parent.trim_start_matches('/'))
                .join(id);
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
    }
    drop(d);
    remove_pod_cgroups(&cgroup_parents);
}

/// The lab kubelet running every manifest of `scripts/kubelet-manifests`
/// (init containers, a sidecar, probes, hooks, hostPort, volumes, downward
/// API, security contexts, QoS classes, shared PID, host network, a
/// user-namespaced pod, a crashing container), a restart of the kubelet and
/// of the daemon, the removal of a manifest, and the lab's teardown.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_manifests() {
    replay("manifests.jsonl").await;
}
