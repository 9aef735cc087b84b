//! `berth node` against the Berth daemon, as a user runs it: a manifest
//! directory with the reference pod (an init container, a sidecar, a web
//! container with an HTTP readiness probe and a preStop hook, a crashing
//! container, one whose exec liveness probe starts failing, an emptyDir
//! they share) and a file with one good and one bad document. Checked
//! through the node's `/status` endpoint and the runtime's CRI state:
//! everything runs, the crash loops with back-off, the liveness failure
//! restarts its container, a node restart adopts the pods, a changed
//! manifest replaces its pod, a deleted one is killed with its preStop
//! hook and leaves nothing in the runtime.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_testkit::{fixtures, ManifestFormat, Registry};
use common::*;
use serde_json::Value;

const IMAGE: &str = "docker.io/library/busybox:1.36.1";

fn reference_pod(out: &Path, web_marker: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ref}}
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: out, hostPath: {{path: "{out}", type: Directory}}}}
  initContainers:
  - name: init
    image: {IMAGE}
    command: [sh, -c, "echo initialised > /shared/index.html"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: sidecar
    image: {IMAGE}
    restartPolicy: Always
    command: [sh, -c, "trap 'exit 0' TERM; while true; do date > /shared/sidecar; sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: web
    image: {IMAGE}
    command: [sh, -c, "echo {web_marker} > /shared/marker; exec httpd -f -p 8080 -h /shared"]
    ports: [{{containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /index.html, port: 8080}}, periodSeconds: 1}}
    volumeMounts: [{{name: shared, mountPath: /shared}}, {{name: out, mountPath: /out}}]
    lifecycle:
      preStop: {{exec: {{command: [sh, -c, "echo stopped > /out/prestop"]}}}}
  - name: crasher
    image: {IMAGE}
    command: [sh, -c, "exit 3"]
  - name: liveness
    image: {IMAGE}
    command: [sh, -c, "trap 'exit 0' TERM; touch /tmp/healthy; sleep 2; rm /tmp/healthy; while true; do sleep 1; done"]
    livenessProbe: {{exec: {{command: [test, -f, /tmp/healthy]}}, periodSeconds: 1, failureThreshold: 1}}
"#,
        out = out.display()
    )
}

const MIXED: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: good}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: docker.io/library/busybox:1.36.1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do echo 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz; usleep 2000; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - {name: c}
"#;

struct NodeProcess {
    child: Child,
    manifests: PathBuf,
    address: String,
}

impl NodeProcess {
    /// Writes `files` (name, text) into a manifest directory of the
    /// daemon's test directory and starts `berth node` on it, on a free
    /// local port.
    fn start(d: &Daemon, files: &[(&str, &str)]) -> NodeProcess {
        let manifests = d.dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for (name, text) in files {
            std::fs::write(manifests.join(name), text).unwrap();
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.local_addr().unwrap().to_string();
        drop(l);
        NodeProcess {
            child: Self::spawn(d, &manifests, &address),
            manifests,
            address,
        }
    }

    /// Starts the node again (after `stop`), on the same directory and port.
    fn restart(&mut self, d: &Daemon) {
        self.child = Self::spawn(d, &self.manifests, &self.address);
    }

    fn spawn(d: &Daemon, manifests: &Path, address: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.dir.path().join("node.log"))
            .unwrap();
        Command::new(BERTH)
            .args(["node", "--manifests"])
            .arg(manifests)
            .args(["--runtime-endpoint", &d.endpoint()])
            .arg("--root-dir")
            .arg(d.dir.path().join("node"))
            .arg("--pod-logs-dir")
            .arg(d.dir.path().join("pod-logs"))
            .args(["--hostname-override", "testnode"])
            .args(["--address", address])
            .args(["--max-container-restart-period", "2"])
            .args(["--container-log-max-size", "8192"])
            .args(["--container-log-max-files", "3"])
            .args(["--container-log-monitor-interval", "1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth node")
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("berth node did not stop on SIGTERM");
    }

    async fn status(&self) -> Option<Value> {
        let url = format!("http://{}/status", self.address);
        let r = reqwest::get(&url).await.ok()?;
        r.json().await.ok()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["pods"]
        .as_array()?
        .iter()
        .map(|r| &r["pod"])
        .find(|p| p["metadata"]["name"] == format!("{name}-testnode"))
}

fn container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

/// Polls the node's status until `check` holds, or fails with the last
/// status and the node's log.
async fn wait_for(
    node: &NodeProcess,
    d: &Daemon,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(s) = node.status().await {
            if check(&s) {
                return s;
            }
            last = s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(d.dir.path().join("node.log")).unwrap_or_default();
    panic!(
        "{what}: not within {timeout:?}\nlast status: {}\nnode log:\n{log}",
        serde_json::to_string_pretty(&last).unwrap()
    );
}

fn events_with(status: &Value, reason: &str, container: &str) -> usize {
    status["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["reason"] == reason && e["container"] == container)
                .count()
        })
        .unwrap_or(0)
}

async fn sandboxes(d: &Daemon) -> Vec<cri::PodSandbox> {
    let mut rt = d.runtime().await;
    rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

async fn containers(d: &Daemon) -> Vec<cri::Container> {
    let mut rt = d.runtime().await;
    rt.list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// A daemon whose docker.io is a test registry holding busybox, on a
/// network of its own.
async fn daemon_with_busybox() -> (Registry, Daemon, TestNetwork) {
    let reg = Registry::start();
    fixtures::busybox()
        .push(&reg, "library/busybox:1.36.1", ManifestFormat::DockerV2)
        .await
        .unwrap();
    let config = format!(
        "[registry.\"docker.io\"]\nmirrors = [\"http://{}\"]\nupstream = false\n[cni]\nconf_dir = \"{{dir}}/cni\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n",
        reg.host()
    );
    let d = Daemon::start(&config);
    let net = TestNetwork::create(d.dir.path());
    (reg, d, net)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runs_manifests_as_a_kubelet() {
    let (_reg, d, _net) = daemon_with_busybox().await;
    let out = d.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let reference = reference_pod(&out, "one");
    let mut node = NodeProcess::start(&d, &[("ref.yaml", &reference), ("mixed.yaml", MIXED)]);
    let manifests = node.manifests.clone();

    // Everything runs; the bad document is reported, the good one runs.
    let s = wait_for(
        &node,
        &d,
        "the reference pod ready",
        Duration::from_secs(90),
        |s| {
            let Some(p) = pod(s, "ref") else { return false };
            let web_ready = container(p, "web").is_some_and(|c| c["ready"] == true);
            let sidecar =
                container(p, "sidecar").is_some_and(|c| c["state"]["running"].is_object());
            let init_done = container(p, "init")
                .is_some_and(|c| c["state"]["terminated"]["reason"] == "Completed");
            let good = pod(s, "good").is_some_and(|p| p["status"]["phase"] == "Running");
            p["status"]["phase"] == "Running" && web_ready && sidecar && init_done && good
        },
    )
    .await;
    let good_uid = pod(&s, "good").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let errors: Vec<String> = serde_json::from_value(s["errors"].clone()).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("mixed.yaml") && errors[0].contains("spec.containers[0].image"),
        "{errors:?}"
    );
    // `berth node status` shows the pods, their containers and the error.
    let shown = Command::new(BERTH)
        .args(["node", "status", "--address", &node.address])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    for expected in [
        "default/ref-testnode",
        "default/good-testnode",
        "MANIFEST ERRORS",
        "spec.containers[0].image: Required value",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
    // The init container's file, served by web from the shared emptyDir.
    let p = pod(&s, "ref").unwrap();
    let ip = p["status"]["podIP"].as_str().expect("a pod IP").to_string();
    let body = reqwest::get(format!("http://{ip}:8080/index.html"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "initialised\n");
    let labels_ok = sandboxes(&d).await.iter().any(|s| {
        s.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("ref-testnode")
            && s.labels
                .get("io.kubernetes.pod.namespace")
                .map(String::as_str)
                == Some("default")
    });
    assert!(labels_ok, "the sandbox carries the kubelet's labels");
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let made = ["memory", "unified", ""].iter().any(|h| {
        Path::new("/sys/fs/cgroup")
            .join(h)
            .join(format!("kubepods/besteffort/pod{uid}"))
            .is_dir()
    });
    assert!(made, "the pod's cgroup exists");

    // The chatty container's log is rotated: at most 3 files, the older
    // rotated ones compressed, the live one still written.
    let logs = d.dir.path().join("pod-logs");
    let log_dir = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("_good-testnode_"))
        .expect("the good pod's log directory")
        .join("c");
    let deadline = Instant::now() + Duration::from_secs(30);
    let names = loop {
        let mut names: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // Between the rename and the runtime's reopen there is no 0.log.
        let rotated =
            names.iter().any(|n| n.ends_with(".gz")) && names.contains(&"0.log".to_string());
        if rotated || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(names.iter().any(|n| n.ends_with(".gz")), "{names:?}");
    assert!(
        names.len() <= 3 && names.contains(&"0.log".to_string()),
        "{names:?}"
    );
    let live = std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default();
    let grows = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default() == live {
        assert!(Instant::now() < grows, "the reopened log is not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The crash loops with back-off; the liveness failure restarts its
    // container.
    let s = wait_for(
        &node,
        &d,
        "crash loop and liveness restart",
        Duration::from_secs(60),
        |s| {
            let Some(p) = pod(s, "ref") else { return false };
            let crashes =
                container(p, "crasher").map_or(0, |c| c["restartCount"].as_i64().unwrap_or(0));
            let live =
                container(p, "liveness").map_or(0, |c| c["restartCount"].as_i64().unwrap_or(0));
            crashes >= 3 && live >= 1
        },
    )
    .await;
    assert!(
        events_with(&s, "BackOff", "crasher") > 0,
        "a back-off was recorded"
    );
    assert!(
        events_with(&s, "Unhealthy", "liveness") > 0,
        "the liveness failure was recorded"
    );
    let crasher = container(pod(&s, "ref").unwrap(), "crasher").unwrap();
    let last_exit = &crasher["lastState"]["terminated"]["exitCode"];
    let now_exit = &crasher["state"]["terminated"]["exitCode"];
    assert!(last_exit == 3 || now_exit == 3, "{crasher}");

    // A restart of the node adopts the pods: the same containers run on.
    let web_id = container(pod(&s, "ref").unwrap(), "web").unwrap()["containerID"].clone();
    let sandbox_count = sandboxes(&d).await.len();
    node.stop();
    node.restart(&d);
    let s = wait_for(
        &node,
        &d,
        "the pods adopted",
        Duration::from_secs(30),
        |s| pod(s, "ref").is_some_and(|p| container(p, "web").is_some_and(|c| c["ready"] == true)),
    )
    .await;
    let web = container(pod(&s, "ref").unwrap(), "web").unwrap();
    assert_eq!(web["containerID"], web_id, "web was not restarted");
    assert_eq!(web["restartCount"], 0);
    assert_eq!(
        sandboxes(&d).await.len(),
        sandbox_count,
        "no sandbox was added"
    );

    // A changed manifest replaces the pod; the old one's preStop hook ran.
    let old_uid = pod(&s, "ref").unwrap()["metadata"]["uid"].clone();
    std::fs::write(manifests.join("ref.yaml"), reference_pod(&out, "two")).unwrap();
    let s = wait_for(
        &node,
        &d,
        "the pod replaced",
        Duration::from_secs(60),
        |s| {
            pod(s, "ref").is_some_and(|p| {
                p["metadata"]["uid"] != old_uid
                    && container(p, "web").is_some_and(|c| c["ready"] == true)
            }) && s["pods"].as_array().unwrap().len() == 2
        },
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(out.join("prestop")).unwrap(),
        "stopped\n"
    );
    std::fs::remove_file(out.join("prestop")).unwrap();
    let new_uid = pod(&s, "ref").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let uids: Vec<String> = sandboxes(&d)
        .await
        .iter()
        .filter_map(|s| s.labels.get("io.kubernetes.pod.uid").cloned())
        .collect();
    assert!(
        !uids.iter().any(|u| *u == old_uid.as_str().unwrap()),
        "the old pod's sandbox was removed: {uids:?}"
    );
    assert!(uids.contains(&new_uid));

    // A manifest removed while the node is down: its pod is ended at the
    // next start (the kubelet's orphaned pods).
    node.stop();
    std::fs::remove_file(manifests.join("mixed.yaml")).unwrap();
    node.restart(&d);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let good_left = sandboxes(&d).await.iter().any(|s| {
            s.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("good-testnode")
        });
        let cgroup_left = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .any(|h| {
                h.path()
                    .join(format!("kubepods/besteffort/pod{good_uid}"))
                    .exists()
            });
        if !good_left && !cgroup_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orphaned pod was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deleting a manifest kills its pod (preStop first) and leaves
    // nothing in the runtime.
    std::fs::remove_file(manifests.join("ref.yaml")).unwrap();
    wait_for(&node, &d, "the pods gone", Duration::from_secs(60), |s| {
        s["pods"].as_array().is_some_and(|p| p.is_empty())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(out.join("prestop")).unwrap(),
        "stopped\n"
    );
    assert!(sandboxes(&d).await.is_empty());
    assert!(containers(&d).await.is_empty());
    // The pods' cgroups, which the node made, are gone from every
    // hierarchy.
    let old_uid = old_uid.as_str().unwrap();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for uid in [old_uid, new_uid.as_str()] {
            let dir = h.path().join(format!("kubepods/besteffort/pod{uid}"));
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    }
    let pods_dir = d.dir.path().join("node/pods");
    let left: Vec<_> = std::fs::read_dir(&pods_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    node.stop();
}

const OBJECTS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: wired, labels: {app: wired}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cfg, configMap: {name: settings}}
  - {name: sec, secret: {secretName: creds}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: mem, emptyDir: {medium: Memory}}
  containers:
  - name: c
    image: docker.io/library/busybox:1.36.1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MESSAGE, value: "$(GREETING) from $(POD_NAME)"}
    envFrom: [{secretRef: {name: creds}}]
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: info, mountPath: /etc/info}
    - {name: mem, mountPath: /scratch}
---
apiVersion: v1
kind: Pod
metadata: {name: attacker}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: shared, emptyDir: {}}]
  initContainers:
  - name: plant
    image: docker.io/library/busybox:1.36.1
    command: [sh, -c, "mkdir -p /shared/ok && ln -s / /shared/escape"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: c
    image: docker.io/library/busybox:1.36.1
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts:
    - {name: shared, mountPath: /fine, subPath: ok}
    - {name: shared, mountPath: /host, subPath: escape}
---
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  containers:
  - {name: c, image: docker.io/library/absent:1, imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: unpullable}
spec:
  containers:
  - {name: c, image: docker.io/library/absent:2}
"#;

async fn exec(d: &Daemon, id: &str, cmd: &[&str]) -> String {
    let mut rt = d.runtime().await;
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

fn waiting_reason(s: &Value, pod_name: &str) -> String {
    pod(s, pod_name)
        .and_then(|p| container(p, "c"))
        .and_then(|c| c["state"]["waiting"]["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_wires_volumes_env_and_reports_image_errors() {
    let (_reg, d, _net) = daemon_with_busybox().await;
    let mut node = NodeProcess::start(&d, &[("wired.yaml", OBJECTS)]);
    let manifests = node.manifests.clone();

    let s = wait_for(
        &node,
        &d,
        "wired running, image errors reported",
        Duration::from_secs(60),
        |s| {
            let running = pod(s, "wired")
                .and_then(|p| container(p, "c"))
                .is_some_and(|c| c["state"]["running"].is_object());
            let never = waiting_reason(s, "never") == "ErrImageNeverPull";
            let unpullable = ["ErrImagePull", "ImagePullBackOff"]
                .contains(&waiting_reason(s, "unpullable").as_str());
            let attacker = waiting_reason(s, "attacker") == "CreateContainerConfigError";
            running && never && unpullable && attacker
        },
    )
    .await;
    // A subpath that a container turned into a symlink to / is refused,
    // and no container is made with it.
    let refused = container(pod(&s, "attacker").unwrap(), "c").unwrap()["state"]["waiting"]
        ["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(refused.contains("symbolic link"), "{refused}");
    let attacker_main = containers(&d).await.into_iter().filter(|c| {
        c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("attacker-testnode")
            && c.metadata.as_ref().is_some_and(|m| m.name == "c")
    });
    assert_eq!(attacker_main.count(), 0);
    assert_eq!(pod(&s, "never").unwrap()["status"]["phase"], "Pending");
    let id = container(pod(&s, "wired").unwrap(), "c").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .split("://")
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(exec(&d, &id, &["cat", "/etc/cfg/greeting"]).await, "hello");
    assert_eq!(exec(&d, &id, &["cat", "/etc/sec/password"]).await, "s3cret");
    assert_eq!(
        exec(&d, &id, &["cat", "/etc/info/labels"]).await,
        "app=\"wired\""
    );
    let env = exec(&d, &id, &["env"]).await;
    assert!(env.contains("MESSAGE=hello from wired-testnode\n"), "{env}");
    assert!(env.contains("password=s3cret\n"), "{env}");
    let mounts = exec(&d, &id, &["cat", "/proc/mounts"]).await;
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /scratch ") && l.starts_with("tmpfs")),
        "{mounts}"
    );
    // The unpullable image backs off: the next attempt waits.
    wait_for(
        &node,
        &d,
        "the pull backs off",
        Duration::from_secs(30),
        |s| waiting_reason(s, "unpullable") == "ImagePullBackOff",
    )
    .await;

    std::fs::remove_file(manifests.join("wired.yaml")).unwrap();
    wait_for(&node, &d, "the pods gone", Duration::from_secs(60), |s| {
        s["pods"].as_array().is_some_and(|p| p.is_empty())
    })
    .await;
    assert!(sandboxes(&d).await.is_empty());
    let pods_dir = d.dir.path().join("node/pods");
    let left: Vec<_> = std::fs::read_dir(&pods_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    let tmpfs_left = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*pods_dir.to_string_lossy()))
        .count();
    assert_eq!(tmpfs_left, 0, "volume mounts left");
    node.stop();
}
