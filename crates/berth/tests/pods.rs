//! Pods and containers through the CRI socket, as kubelet drives them: real
//! monitors, namespaces, overlay root filesystems, CNI bridge networking,
//! CRI log files, with the built-in handler and with runc.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_testkit::{fixtures, ManifestFormat, Registry};
use common::*;
use tonic::transport::Channel;

const CONFIG: &str = r#"
[cni]
conf_dir = "{dir}/cni"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
"#;

struct Env {
    _reg: Registry,
    d: Daemon,
    net: TestNetwork,
    rt: RuntimeServiceClient<Channel>,
    image: String,
}

async fn env() -> Env {
    env_with(CONFIG).await
}

async fn env_with(config: &str) -> Env {
    let reg = Registry::start();
    fixtures::busybox()
        .push(&reg, "tests/busybox:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start(config);
    let net = TestNetwork::create(d.dir.path());
    let image = format!("{}/tests/busybox:1", reg.host());
    pull(&mut d.images().await, &image, None).await.unwrap();
    let rt = d.runtime().await;
    Env {
        _reg: reg,
        d,
        net,
        rt,
        image,
    }
}

fn pod_config(name: &str, log_dir: &std::path::Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "tests".into(),
            attempt: 1,
        }),
        hostname: name.into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("c".to_string(), name.to_string())]),
        ..Default::default()
    }
}

async fn run_pod(e: &mut Env, name: &str, handler: &str) -> String {
    let config = pod_config(name, &e.d.dir.path().join("logs").join(name));
    run_pod_with(e, config, handler).await
}

async fn run_pod_with(e: &mut Env, config: cri::PodSandboxConfig, handler: &str) -> String {
    try_run_pod(e, config, handler)
        .await
        .unwrap_or_else(|s| panic!("RunPodSandbox: {s:?}\n{}", e.d.log()))
}

async fn try_run_pod(
    e: &mut Env,
    config: cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    e.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: handler.into(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn create(e: &mut Env, pod: &str, name: &str, cmd: &[&str]) -> String {
    let sandbox = pod_config_of(e, pod).await;
    let config = container_config(name, &e.image, cmd);
    create_with(e, pod, config, sandbox).await
}

async fn create_with(
    e: &mut Env,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: cri::PodSandboxConfig,
) -> String {
    try_create(e, pod, config, sandbox)
        .await
        .unwrap_or_else(|s| panic!("CreateContainer: {s:?}\n{}", monitor_logs(&e.d)))
}

async fn try_create(
    e: &mut Env,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    e.rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(sandbox),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// A verbose status's `info`, parsed.
fn parsed(info: &HashMap<String, String>) -> serde_json::Value {
    serde_json::from_str(&info["info"]).unwrap()
}

async fn pod_info(e: &mut Env, pod: &str) -> serde_json::Value {
    parsed(&pod_status_response(e, pod, true).await.info)
}

async fn container_info(e: &mut Env, id: &str) -> serde_json::Value {
    parsed(&status_response(e, id, true).await.info)
}

async fn list_pods(e: &mut Env) -> Vec<cri::PodSandbox> {
    e.rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// A pod with one started container, `main`, that sleeps.
async fn running_pod(e: &mut Env, name: &str) -> (String, String) {
    let pod = run_pod(e, name, "").await;
    let c = create(e, &pod, "main", &["sleep", "1000"]).await;
    start(e, &c).await;
    (pod, c)
}

async fn pod_config_of(e: &mut Env, pod: &str) -> cri::PodSandboxConfig {
    let st = pod_status(e, pod).await;
    let m = st.metadata.unwrap();
    pod_config(&m.name, &e.d.dir.path().join("logs").join(&m.name))
}

async fn pod_status_response(
    e: &mut Env,
    pod: &str,
    verbose: bool,
) -> cri::PodSandboxStatusResponse {
    e.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn pod_status(e: &mut Env, pod: &str) -> cri::PodSandboxStatus {
    pod_status_response(e, pod, false).await.status.unwrap()
}

async fn status_response(e: &mut Env, id: &str, verbose: bool) -> cri::ContainerStatusResponse {
    e.rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn status(e: &mut Env, id: &str) -> cri::ContainerStatus {
    status_response(e, id, false).await.status.unwrap()
}

async fn start(e: &mut Env, id: &str) {
    e.rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("StartContainer: {s:?}\n{}", monitor_logs(&e.d)));
}

async fn exec(
    e: &mut Env,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    e.rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

async fn wait_state(e: &mut Env, id: &str, want: cri::ContainerState) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(e, id).await;
        if s.state == want as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_pod_state(e: &mut Env, pod: &str, want: cri::PodSandboxState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = pod_status(e, pod).await;
        if s.state == want as i32 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_remove_container(e: &mut Env, id: &str) {
    e.rt.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout: 1,
    })
    .await
    .unwrap_or_else(|s| panic!("StopContainer: {s:?}"));
    e.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("RemoveContainer: {s:?}"));
}

async fn stop_remove_pod(e: &mut Env, pod: &str) {
    e.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("StopPodSandbox: {s:?}\n{}", e.d.log()));
    e.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("RemovePodSandbox: {s:?}\n{}", e.d.log()));
}

/// Every monitor's log.
fn monitor_logs(d: &Daemon) -> String {
    let mut out = String::new();
    for p in std::fs::read_dir(d.state().join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out += &std::fs::read_to_string(p.path().join("monitor.log")).unwrap_or_default();
    }
    out
}

/// Nothing of the daemon's pods is left on the host.
fn assert_no_leaks(e: &Env, ids: &[String]) {
    assert_eq!(
        host_traces(&e.d),
        Vec::<String>::new(),
        "mounts or processes left"
    );
    assert_eq!(
        e.net.veths(),
        Vec::<String>::new(),
        "veths left on the bridge"
    );
    let netns: Vec<_> = std::fs::read_dir(e.d.state().join("netns"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "netns files left: {netns:?}");
    for id in ids {
        for ctl in ["memory", "cpu", "pids", "freezer"] {
            let cg = std::path::Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join("berth")
                .join(id);
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
        assert!(
            !e.d.state().join("pods").join(id).exists(),
            "pod dir of {id} left"
        );
        assert!(
            !e.d.state().join("containers").join(id).exists(),
            "bundle of {id} left"
        );
        assert!(
            !e.d.root().join("runtime/rootfs").join(id).exists(),
            "rootfs of {id} left"
        );
    }
}

fn log_lines(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let rec = berth_logs::parse_line(l.as_bytes())
                .unwrap_or_else(|e| panic!("bad log line {l:?}: {e:?}"));
            (
                rec.stream.as_str().to_string(),
                String::from_utf8_lossy(rec.content).into_owned(),
            )
        })
        .collect()
}

async fn lifecycle(handler: &str) {
    let mut e = env().await;
    let pod = run_pod(&mut e, "life", handler).await;
    let st = pod_status(&mut e, &pod).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    // The pod's monitor is named for what it is, not "exe".
    let monitor_dir = e.d.state().join("pods").join(&pod);
    let comms: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*monitor_dir.to_string_lossy()))
                .unwrap_or(false)
        })
        .filter_map(|p| std::fs::read_to_string(p.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(
        comms.iter().any(|c| c == "berth-monitor"),
        "processes of the pod's monitor: {comms:?}"
    );
    let ip = st.network.unwrap().ip;
    assert!(ip.starts_with("10."), "pod IP {ip:?}");
    assert_eq!(e.net.veths().len(), 1);

    let c = create(
        &mut e,
        &pod,
        "main",
        &["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"],
    )
    .await;
    assert_eq!(
        status(&mut e, &c).await.state,
        cri::ContainerState::ContainerCreated as i32
    );
    start(&mut e, &c).await;
    let s = status(&mut e, &c).await;
    assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
    assert!(s.started_at >= s.created_at && s.created_at > 0);
    assert!(s.log_path.ends_with("life/main.log"), "{}", s.log_path);

    // exec: output, exit codes, the container's view of the world.
    let r = exec(&mut e, &c, &["echo", "-n", "hi"], 10).await.unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi"[..], &b""[..], 0)
    );
    let r = exec(&mut e, &c, &["sh", "-c", "echo e >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!((r.stderr.as_slice(), r.exit_code), (&b"e\n"[..], 3));
    let r = exec(&mut e, &c, &["hostname"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "life\n");
    let r = exec(&mut e, &c, &["cat", "/proc/1/cmdline"], 10)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&r.stdout).contains("sleep"),
        "PID 1 of the pod is not the pod init"
    );
    let r = exec(&mut e, &c, &["cat", "/proc/net/fib_trie"], 10)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r.stdout).contains(&ip),
        "pod IP {ip} not in the container's netns"
    );

    // A timed-out exec is an error and its process is gone when it returns.
    let t = Instant::now();
    let err = exec(&mut e, &c, &["sleep", "4321"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let r = exec(
        &mut e,
        &c,
        &["sh", "-c", "ps -o args | grep -c '^sleep 4321' || true"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "0");

    // The log has both streams in CRI format.
    let lines = log_lines(&s.log_path);
    assert!(
        lines.contains(&("stdout".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:?}"
    );

    // Listing with filters.
    let all =
        e.rt.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod[..12].to_string(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                label_selector: HashMap::from([("c".to_string(), "main".to_string())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, c);

    // Stop: sleep dies of SIGTERM (it is not PID 1 of the pod).
    e.rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let s = wait_state(&mut e, &c, cri::ContainerState::ContainerExited).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (143, "Error"));
    assert!(s.finished_at >= s.started_at);

    // An exit of its own, recorded with its code.
    let c2 = create(&mut e, &pod, "quick", &["sh", "-c", "exit 7"]).await;
    start(&mut e, &c2).await;
    let s2 = wait_state(&mut e, &c2, cri::ContainerState::ContainerExited).await;
    assert_eq!((s2.exit_code, s2.reason.as_str()), (7, "Error"));
    let c3 = create(&mut e, &pod, "ok", &["true"]).await;
    start(&mut e, &c3).await;
    let s3 = wait_state(&mut e, &c3, cri::ContainerState::ContainerExited).await;
    assert_eq!((s3.exit_code, s3.reason.as_str()), (0, "Completed"));

    // Remove one container directly; the pod removal takes the others.
    e.rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    e.rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    let err =
        e.rt.container_status(cri::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    stop_remove_pod(&mut e, &pod).await;
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c, c2, c3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_with_builtin_handler() {
    lifecycle("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_with_runc() {
    lifecycle("runc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_unique_and_unknown_ids_are_fine() {
    let mut e = env().await;
    let pod = run_pod(&mut e, "uniq", "").await;
    let again = pod_config("uniq", &e.d.dir.path().join("logs/uniq"));
    let err = try_run_pod(&mut e, again, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let c = create(&mut e, &pod, "one", &["sleep", "100"]).await;
    let config = pod_config_of(&mut e, &pod).await;
    let one = container_config("one", &e.image, &["sleep", "1"]);
    let err = try_create(&mut e, &pod, one, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    let other = pod_config("other", &e.d.dir.path().join("logs/other"));
    let err = try_run_pod(&mut e, other, "no-such-handler")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let unknown = "0123456789abcdef0123456789abcdef".to_string();
    stop_remove_container(&mut e, &unknown).await;
    e.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    e.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .unwrap();
    let err =
        e.rt.start_container(cri::StartContainerRequest {
            container_id: unknown,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Removing a running container kills it; the name is free again.
    start(&mut e, &c).await;
    e.rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    let c2 = create(&mut e, &pod, "one", &["sleep", "100"]).await;
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c, c2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_a_daemon_kill() {
    let mut e = env().await;
    let pod = run_pod(&mut e, "survivor", "").await;
    let long = create(
        &mut e,
        &pod,
        "long",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    )
    .await;
    let short = create(&mut e, &pod, "short", &["sh", "-c", "sleep 1; exit 5"]).await;
    start(&mut e, &long).await;
    start(&mut e, &short).await;
    e.d.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    e.d.spawn();
    e.rt = e.d.runtime().await;

    assert_eq!(
        pod_status(&mut e, &pod).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let s = status(&mut e, &short).await;
    assert_eq!(
        (s.state, s.exit_code),
        (cri::ContainerState::ContainerExited as i32, 5),
        "{s:?}"
    );
    let l = status(&mut e, &long).await;
    assert_eq!(l.state, cri::ContainerState::ContainerRunning as i32);
    let before = log_lines(&l.log_path).len();
    let r = exec(&mut e, &long, &["echo", "-n", "still here"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still here");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        log_lines(&l.log_path).len() > before,
        "the log stopped after the restart"
    );
    let pods = list_pods(&mut e).await;
    assert_eq!(pods.len(), 1);
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, long, short]);
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// 200 pods with two running containers each, created and removed: nothing
/// accumulates (mounts, processes, veths, netns, cgroups, files, fds).
#[tokio::test(flavor = "multi_thread")]
async fn no_leaks_after_200_pod_cycles() {
    let mut e = env().await;
    let mut ids = Vec::new();
    let mut fds_after_first = 0;
    for i in 0..200 {
        let pod = run_pod(&mut e, &format!("cycle{i}"), "").await;
        let a = create(&mut e, &pod, "a", &["sleep", "1000"]).await;
        let b = create(&mut e, &pod, "b", &["sh", "-c", "echo hi; exec sleep 1000"]).await;
        start(&mut e, &a).await;
        start(&mut e, &b).await;
        // Removing a pod with running containers stops and removes them.
        e.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        ids.extend([pod, a, b]);
        // Lazily opened files (CNI, cgroups) count from the first cycle on.
        if i == 0 {
            fds_after_first = fd_count(e.d.pid());
        }
    }
    assert_no_leaks(&e, &ids);
    let pods = list_pods(&mut e).await;
    assert!(pods.is_empty(), "{pods:?}");
    let ctrs =
        e.rt.list_containers(cri::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(ctrs.is_empty(), "{ctrs:?}");
    for dir in ["pods", "containers", "netns"] {
        let left: Vec<_> = std::fs::read_dir(e.d.state().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    for dir in ["runtime/rootfs", "runtime/pods", "runtime/containers"] {
        let left: Vec<_> = std::fs::read_dir(e.d.root().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    let fds = fd_count(e.d.pid());
    assert!(
        fds <= fds_after_first + 2,
        "daemon fds grew from {fds_after_first} to {fds}"
    );
}

/// A pod with its own user namespace (kubelet's `hostUsers: false`): the
/// containers see the pod's uid map and run as root inside only.
async fn user_namespaced_pod(handler: &str) {
    let mut e = env().await;
    let mut config = pod_config("userns", &e.d.dir.path().join("logs/userns"));
    let mapping = cri::IdMapping {
        container_id: 0,
        host_id: 200_000,
        length: 65536,
    };
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(cri::UserNamespace {
                    mode: cri::NamespaceMode::Pod as i32,
                    uids: vec![mapping],
                    gids: vec![mapping],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    // Two mapping lines are refused.
    let mut two = config.clone();
    let opts = two
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .userns_options
        .as_mut()
        .unwrap();
    opts.uids.push(cri::IdMapping {
        container_id: 65536,
        host_id: 300_000,
        length: 10,
    });
    let err = try_run_pod(&mut e, two, handler).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let pod = run_pod_with(&mut e, config.clone(), handler).await;
    let ip = pod_status(&mut e, &pod).await.network.unwrap().ip;
    let verbose = pod_info(&mut e, &pod).await;
    assert!(ip.starts_with("10."), "{ip:?} {verbose}");
    // A volume as the kubelet mounts it in such a pod: ID-mapped with the
    // pod's mappings, so that what host root owns, the container's root owns.
    let volume = e.d.dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("by-host-root"), b"x").unwrap();
    let mut main = container_config("main", &e.image, &["sleep", "1000"]);
    main.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: volume.to_string_lossy().into_owned(),
        uid_mappings: vec![mapping],
        gid_mappings: vec![mapping],
        ..Default::default()
    });
    let c = create_with(&mut e, &pod, main, config).await;
    start(&mut e, &c).await;
    let r = exec(&mut e, &c, &["cat", "/proc/self/uid_map"], 10)
        .await
        .unwrap();
    let map: Vec<String> = String::from_utf8_lossy(&r.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(map, ["0", "200000", "65536"], "{r:?}");
    let r = exec(&mut e, &c, &["id", "-u"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "0\n");
    // The image is the pod's root's (its layers are ID-mapped): root
    // writes to it as it would without a user namespace, and what it
    // makes is the mapped root's on the host.
    let r = exec(
        &mut e,
        &c,
        &[
            "sh",
            "-c",
            "stat -c %u:%g /bin/busybox /etc && echo x >> /etc/passwd && mkdir /made && stat -c %u /made",
        ],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (0, "0:0\n0:0\n0\n"),
        "{r:?}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let upper = e.d.root().join("runtime/rootfs").join(&c).join("upper");
        assert_eq!(
            std::fs::metadata(upper.join("made")).unwrap().uid(),
            200_000
        );
        assert_eq!(
            std::fs::metadata(upper.join("etc/passwd")).unwrap().uid(),
            200_000
        );
    }
    let r = exec(
        &mut e,
        &c,
        &[
            "sh",
            "-c",
            "stat -c %u /data/by-host-root && touch /data/by-container-root",
        ],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).trim()),
        (0, "0"),
        "{r:?}"
    );
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(volume.join("by-container-root")).unwrap();
    assert_eq!(
        made.uid(),
        0,
        "the container's root writes as host root through the mapping"
    );
    // The container's processes run as the mapped uid on the host.
    let pid = container_info(&mut e, &c).await["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(uid_line.contains("200000"), "{uid_line}");

    // As the kubelet runs it (no shareProcessNamespace): a PID namespace of
    // the container's own, inside the pod's user namespace.
    let own = with_pid_mode(
        container_config("own-pid", &e.image, &["sleep", "1000"]),
        cri::NamespaceMode::Container,
    );
    let sandbox = pod_config_of(&mut e, &pod).await;
    let own = create_with(&mut e, &pod, own, sandbox).await;
    start(&mut e, &own).await;
    let r = exec(
        &mut e,
        &own,
        &["cat", "/proc/1/comm", "/proc/self/uid_map"],
        10,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["sleep", "0", "200000", "65536"], "{r:?}");
    let namespaces = [
        "sh",
        "-c",
        "readlink /proc/self/ns/user; readlink /proc/self/ns/pid",
    ];
    let r = exec(&mut e, &own, &namespaces, 10).await.unwrap();
    let own_ns = String::from_utf8_lossy(&r.stdout).into_owned();
    let r = exec(&mut e, &c, &namespaces, 10).await.unwrap();
    let shared_ns = String::from_utf8_lossy(&r.stdout).into_owned();
    let (own_user, own_pid) = own_ns.split_once('\n').unwrap();
    let (shared_user, shared_pid) = shared_ns.split_once('\n').unwrap();
    assert_eq!(own_user, shared_user, "one user namespace for the pod");
    assert_ne!(own_pid, shared_pid, "a PID namespace of its own");

    // The pod's interfaces are its namespace's, never the host's (the pod
    // init made that namespace, not the monitor).
    let stats =
        e.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let names: Vec<String> = stats
        .linux
        .unwrap()
        .network
        .unwrap()
        .interfaces
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["eth0"]);

    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c, own]);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaced_pod_with_builtin_handler() {
    user_namespaced_pod("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_namespaced_pod_with_runc() {
    user_namespaced_pod("runc").await;
}

/// The CLI's pod and container verbs, with crictl-style config files.
#[tokio::test(flavor = "multi_thread")]
async fn cli_pod_and_container_verbs() {
    let e = env().await;
    let dir = e.d.dir.path();
    let pod_yaml = dir.join("pod.yaml");
    std::fs::write(
        &pod_yaml,
        format!(
            "metadata:\n  name: clipod\n  namespace: default\n  uid: cli-uid\nlog_directory: {}\nlinux: {{}}\n",
            dir.join("logs/cli").display()
        ),
    )
    .unwrap();
    let ctr_json = dir.join("ctr.json");
    std::fs::write(
        &ctr_json,
        serde_json::json!({
            "metadata": {"name": "hello"},
            "image": {"image": e.image},
            "command": ["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"],
            "log_path": "hello.log"
        })
        .to_string(),
    )
    .unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = ok(e.d.cli(&[
        "run",
        ctr_json.to_str().unwrap(),
        pod_yaml.to_str().unwrap(),
    ]));
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64);
    let ps = ok(e.d.cli(&["ps"]));
    assert!(
        ps.contains("Running") && ps.contains("hello") && ps.contains("clipod"),
        "{ps}"
    );
    let pods = ok(e.d.cli(&["pods", "-q"]));
    assert_eq!(pods.lines().count(), 1);

    let out = e.d.cli(&[
        "exec",
        &id[..10],
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // The log, once the container has written it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = e.d.cli(&["logs", &id]);
        if String::from_utf8_lossy(&out.stdout) == "hello\n" {
            assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
            break;
        }
        assert!(Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = ok(e.d.cli(&["logs", "--tail", "1", "--timestamps", &id]));
    assert!(
        tail.is_empty(),
        "stdout of --tail 1 is the stderr line's stream: {tail:?}"
    );

    let inspect: serde_json::Value = serde_json::from_str(&ok(e.d.cli(&["inspect", &id]))).unwrap();
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING");
    assert!(inspect["info"]["pid"].as_i64().unwrap() > 0);
    ok(e.d.cli(&["update", "--memory", "200000000", &id]));
    let inspect: serde_json::Value = serde_json::from_str(&ok(e.d.cli(&["inspect", &id]))).unwrap();
    assert_eq!(
        inspect["status"]["resources"]["linux"]["memoryLimitInBytes"],
        "200000000"
    );

    ok(e.d.cli(&["stop", "--time", "2", &id]));
    let ps = ok(e.d.cli(&["ps", "-a"]));
    assert!(ps.contains("Exited"), "{ps}");
    let out = e.d.cli(&["exec", "--interactive", &id, "sh"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );
    let out = e.d.cli(&["rm", "nosuchid"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no container"),
        "{out:?}"
    );
    let out = e.d.cli(&["rm"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--all"),
        "{out:?}"
    );
    ok(e.d.cli(&["rm", &id]));
    let pod = pods.trim();
    let inspectp: serde_json::Value =
        serde_json::from_str(&ok(e.d.cli(&["inspectp", "-o", "table", &pod[..8]]))).unwrap();
    assert_eq!(inspectp["status"]["id"], pod);
    // SANDBOX_READY is the enum's zero value, which the JSON leaves out.
    assert!(inspectp["status"]["state"].is_null(), "{inspectp}");
    assert_eq!(
        ok(e.d.cli(&["stopp", &pod[..8]])).trim(),
        format!("Stopped sandbox {pod}")
    );
    ok(e.d.cli(&["rmp", "-a"]));
    assert!(ok(e.d.cli(&["pods", "-q"])).is_empty());
    assert_no_leaks(&e, &[id]);
}

/// A monitor that dies (OOM killer, a stray kill -9) takes its pod down:
/// the pod is reported NOTREADY, its containers EXITED, and removing the
/// pod still releases everything.
#[tokio::test(flavor = "multi_thread")]
async fn pod_whose_monitor_died_is_reported_and_cleaned_up() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "orphan").await;
    let monitor = pod_info(&mut e, &pod).await["monitorPid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_pod_state(&mut e, &pod, cri::PodSandboxState::SandboxNotready).await;
    let s = status(&mut e, &c).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    let err = exec(&mut e, &c, &["true"], 5).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// kill -9 of the daemon inside RunPodSandbox or CreateContainer leaves a
/// monitor, a netns, mounts and directories without a record (records are
/// written last). The next start releases them. Simulated by dropping the
/// records while the daemon is down.
#[tokio::test(flavor = "multi_thread")]
async fn unrecorded_leftovers_are_released_at_start() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "half").await;
    let kept = run_pod(&mut e, "kept", "").await;
    let kept_c = create(&mut e, &kept, "main", &["sleep", "1000"]).await;
    assert_eq!(e.net.veths().len(), 2);
    e.d.kill9();
    // As if the daemon had died before writing these records.
    std::fs::remove_file(e.d.root().join(format!("runtime/pods/{pod}.json"))).unwrap();
    std::fs::remove_file(e.d.root().join(format!("runtime/containers/{c}.json"))).unwrap();
    std::fs::remove_file(e.d.root().join(format!("runtime/containers/{kept_c}.json"))).unwrap();
    e.d.spawn();
    e.rt = e.d.runtime().await;
    let pods = list_pods(&mut e).await;
    let ids: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [kept.as_str()]);
    assert!(!e.d.state().join("pods").join(&pod).exists());
    assert!(!e.d.state().join("netns").join(&pod).exists());
    assert!(!e.d.root().join("runtime/rootfs").join(&c).exists());
    assert!(!e.d.root().join("runtime/rootfs").join(&kept_c).exists());
    assert_eq!(e.net.veths().len(), 1, "the leftover pod's veth is gone");
    // The recorded pod still works.
    let again = create(&mut e, &kept, "again", &["sleep", "1000"]).await;
    start(&mut e, &again).await;
    stop_remove_pod(&mut e, &kept).await;
    assert_no_leaks(&e, &[pod, c, kept, kept_c, again]);
}

/// The pod inits (`berth-pause`) whose parent is `monitor`.
fn pod_inits_of(monitor: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| l == "Name:\tberth-pause")
                && status
                    .lines()
                    .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(&*monitor.to_string()))
        })
        .collect()
}

fn with_pid_mode(mut c: cri::ContainerConfig, pid: cri::NamespaceMode) -> cri::ContainerConfig {
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: pid as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

/// Kubelet's ordinary pod: a PID namespace per container. No pod init is
/// started (nothing would share its PID namespace), each container is PID
/// 1 of its own, and a container asking for the pod's PID namespace is
/// refused rather than put somewhere else.
#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_per_container() {
    let mut e = env().await;
    let per_container = cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    };
    let mut config = pod_config("pidc", &e.d.dir.path().join("logs").join("pidc"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(per_container.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod_with(&mut e, config.clone(), "").await;
    let monitor = pod_info(&mut e, &pod).await["pid"].as_i64().unwrap();
    let inits = pod_inits_of(monitor as u32);
    assert!(
        inits.is_empty(),
        "a pod init for a CONTAINER pod: {inits:?}"
    );

    let mut ids = Vec::new();
    let mut pid_namespaces = Vec::new();
    for name in ["a", "b"] {
        let c = with_pid_mode(
            container_config(name, &e.image, &["sleep", "1000"]),
            cri::NamespaceMode::Container,
        );
        let id = create_with(&mut e, &pod, c, config.clone()).await;
        start(&mut e, &id).await;
        let r = exec(&mut e, &id, &["cat", "/proc/1/comm"], 10)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "sleep", "{r:?}");
        let r = exec(&mut e, &id, &["readlink", "/proc/self/ns/pid"], 10)
            .await
            .unwrap();
        pid_namespaces.push(String::from_utf8_lossy(&r.stdout).trim().to_string());
        ids.push(id);
    }
    assert_ne!(
        pid_namespaces[0], pid_namespaces[1],
        "one PID namespace each"
    );

    let shared = with_pid_mode(
        container_config("shared", &e.image, &["sleep", "1000"]),
        cri::NamespaceMode::Pod,
    );
    let err = try_create(&mut e, &pod, shared, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("PID namespace"), "{err:?}");

    stop_remove_pod(&mut e, &pod).await;
    ids.push(pod);
    assert_no_leaks(&e, &ids);
}

/// A caller that gives up (crictl's 2 s default deadline, kubelet's
/// runtime request timeout) does not leave a change half done: the call
/// finishes in the daemon and the result is what a completed call leaves.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_calls_run_to_completion() {
    let mut e = env().await;
    let config = pod_config("abandoned", &e.d.dir.path().join("logs/abandoned"));
    let mut req = tonic::Request::new(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    });
    req.set_timeout(Duration::from_millis(1));
    let err = e.rt.run_pod_sandbox(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let pod = loop {
        let pods = list_pods(&mut e).await;
        if let Some(p) = pods
            .iter()
            .find(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
        {
            assert_eq!(pods.len(), 1, "{pods:?}");
            break p.id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned RunPodSandbox never finished: {pods:?}\n{}",
            e.d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Abandoned in turn, StopPodSandbox still stops everything.
    let mut req = tonic::Request::new(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    });
    req.set_timeout(Duration::from_millis(1));
    let _ = e.rt.stop_pod_sandbox(req).await;
    wait_pod_state(&mut e, &pod, cri::PodSandboxState::SandboxNotready).await;
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod]);
}

/// A static helper that tries to ptrace-attach to a pid and prints
/// `attached` or the error (built with the host's gcc).
fn ptrace_helper() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ptrace.c");
    std::fs::write(
        &src,
        r#"#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int pid = atoi(argv[1]);
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
        waitpid(pid, 0, __WALL);
        ptrace(PTRACE_DETACH, pid, 0, 0);
        puts("attached");
        return 0;
    }
    printf("attach: %s\n", strerror(errno));
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
        ptrace(PTRACE_DETACH, pid, 0, 0);
        puts("seized");
        return 0;
    }
    printf("seize: %s\n", strerror(errno));
    return 1;
}
"#,
    )
    .unwrap();
    let out = dir.path().join("ptrace");
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc (Debian package gcc) builds the ptrace helper");
    assert!(status.success(), "gcc failed");
    std::fs::read(out).unwrap()
}

/// The pod init of a shared-PID pod is PID 1 of every container: a
/// container with CAP_SYS_PTRACE (kubectl debug --profile=general) finds
/// nothing of the host through it, and cannot attach to it.
#[tokio::test(flavor = "multi_thread")]
async fn pod_init_gives_a_container_nothing() {
    let mut e = env().await;
    let mut tar = berth_testkit::TarWriter::new();
    tar.file("ptrace", &ptrace_helper(), 0o755);
    let image = fixtures::busybox_builder()
        .layer(berth_testkit::Layer::from_tar(
            tar.finish(),
            berth_testkit::Compression::Gzip,
        ))
        .build();
    image
        .push(&e._reg, "tests/ptrace:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let tools = format!("{}/tests/ptrace:1", e._reg.host());
    pull(&mut e.d.images().await, &tools, None).await.unwrap();

    let config = pod_config("shared", &e.d.dir.path().join("logs/shared"));
    let pod = run_pod_with(&mut e, config.clone(), "").await;
    let mut c = with_pid_mode(
        container_config("debug", &tools, &["sleep", "1000"]),
        cri::NamespaceMode::Pod,
    );
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    let c = create_with(&mut e, &pod, c, config).await;
    start(&mut e, &c).await;
    let sh = |script: &str| {
        let cmd = ["sh", "-c", script].map(String::from);
        let rt = e.rt.clone();
        let id = c.clone();
        async move {
            let mut rt = rt;
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd: cmd.to_vec(),
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            (
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            )
        }
    };

    // The capability works: the container can attach to its own process.
    let (code, out, err) = sh("/ptrace $(pidof sleep)").await;
    assert_eq!((code, out.trim()), (0, "attached"), "{err}");

    // PID 1 is the pod init: no root, no cwd, no environment, no host
    // command line, and nobody can attach to it.
    let (_, comm, _) = sh("cat /proc/1/comm").await;
    assert_eq!(comm.trim(), "berth-pause");
    let (code, out, err) = sh("ls -A /proc/1/root/ /proc/1/cwd/").await;
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out
        .lines()
        .filter(|l| !l.is_empty() && !l.ends_with(':'))
        .collect();
    assert!(listed.is_empty(), "the pod init's root shows {listed:?}");
    let (_, env, _) = sh("cat /proc/1/environ; echo").await;
    assert_eq!(env.trim(), "", "environment of the pod init");
    // Its only open files are /dev/null, as stdin, stdout and stderr.
    let (_, fds, _) = sh("for f in /proc/1/fd/*; do echo \"$f $(readlink $f)\"; done").await;
    assert_eq!(
        fds.lines().collect::<Vec<_>>(),
        [
            "/proc/1/fd/0 /dev/null",
            "/proc/1/fd/1 /dev/null",
            "/proc/1/fd/2 /dev/null"
        ],
        "{fds}"
    );
    let (_, cmdline, _) = sh("tr '\\0' ' ' < /proc/1/cmdline").await;
    assert_eq!(cmdline.trim(), "berth-pause --die-with-parent");
    let (code, out, _) = sh("/ptrace 1").await;
    assert_eq!(code, 1, "ptrace of the pod init: {out}");
    assert!(out.contains("attach: Operation not permitted"), "{out}");
    let (_, status, _) = sh("cat /proc/1/status").await;
    for want in [
        "Uid:\t65535\t65535\t65535\t65535",
        "Gid:\t65535\t65535\t65535\t65535",
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(
            status.lines().any(|l| l == want),
            "no {want:?} in\n{status}"
        );
    }
    // No other process of Berth's is in the pod's PID namespace.
    let (_, comms, _) = sh("cat /proc/[0-9]*/comm").await;
    let others: Vec<&str> = comms
        .lines()
        .filter(|c| !["berth-pause", "sleep", "sh", "cat"].contains(c))
        .collect();
    assert!(others.is_empty(), "other processes: {others:?}");

    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// A command that does not exist fails StartContainer, not CreateContainer,
/// as with containerd: the container is then EXITED with 128 and reason
/// StartError, which the kubelet restarts with back-off (a failed
/// CreateContainer would be retried at once, for ever).
async fn missing_command_fails_start(handler: &str) {
    let mut e = env().await;
    let pod = run_pod(&mut e, "nocmd", handler).await;
    let c = create(&mut e, &pod, "nocmd", &["/no/such/command"]).await;
    assert_eq!(
        status(&mut e, &c).await.state,
        cri::ContainerState::ContainerCreated as i32
    );
    let err =
        e.rt.start_container(cri::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("/no/such/command"), "{err:?}");
    let s = status(&mut e, &c).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (128, "StartError"),
        "{s:?}"
    );
    assert!(s.message.contains("/no/such/command"), "{s:?}");
    assert_eq!(s.started_at, 0);
    assert!(s.finished_at > 0);
    // Stop and remove behave as for any exited container.
    stop_remove_container(&mut e, &c).await;
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_command_fails_start_with_builtin_handler() {
    missing_command_fails_start("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_command_fails_start_with_runc() {
    missing_command_fails_start("runc").await;
}

/// Records of the previous format (version 1, the CRI's configs inside;
/// the fixtures of `crates/server/tests/fixtures/records-v1`, written by
/// that Berth) left in the root are read after a restart: migrated, not
/// quarantined, answered as before, written as version 2 when they
/// change, and removable.
#[tokio::test(flavor = "multi_thread")]
async fn version_1_records_are_migrated_at_start() {
    let mut d = Daemon::start(CONFIG);
    d.kill9();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/tests/fixtures/records-v1");
    let record = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(fixtures.join(name)).unwrap()).unwrap()
    };
    let (pod, container) = (record("pod.json"), record("container.json"));
    let pod_id = pod["record"]["id"].as_str().unwrap().to_string();
    let cid = container["record"]["id"].as_str().unwrap().to_string();
    let pod_path = d.root().join("runtime/pods").join(format!("{pod_id}.json"));
    let container_path = d
        .root()
        .join("runtime/containers")
        .join(format!("{cid}.json"));
    std::fs::copy(fixtures.join("pod.json"), &pod_path).unwrap();
    std::fs::copy(fixtures.join("container.json"), &container_path).unwrap();
    d.spawn();
    let mut rt = d.runtime().await;

    assert!(
        !d.root().join("runtime/pods/quarantine").exists(),
        "{}",
        d.log()
    );
    assert!(
        !d.root().join("runtime/containers/quarantine").exists(),
        "{}",
        d.log()
    );
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod_id);
    assert_eq!(pods[0].metadata.as_ref().unwrap().name, "security-vm");
    assert_eq!(pods[0].labels["io.kubernetes.pod.namespace"], "default");
    // Its monitor is long gone.
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
    // That change was saved, in the new format.
    let text = std::fs::read_to_string(&pod_path).unwrap();
    assert!(text.starts_with(r#"{"version":2,"#), "{text}");

    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let s = status.status.unwrap();
    assert_eq!(s.metadata.as_ref().unwrap().attempt, 3);
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.mounts[0].container_path, "/data");
    assert!(s.mounts[0].readonly);
    let r = s.resources.unwrap().linux.unwrap();
    assert_eq!((r.cpu_quota, r.memory_limit_in_bytes), (60000, 134217728));
    assert_eq!(s.stop_signal, cri::Signal::Sigquit as i32);
    assert_eq!(
        s.user.unwrap().linux.unwrap().supplemental_groups,
        [2000, 3000]
    );
    let info = parsed(&status.info);
    assert_eq!(info["config"]["workingDir"], "/tmp");
    assert_eq!(info["config"]["stopSignal"], "SIGQUIT");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap_or_else(|s| panic!("RemovePodSandbox: {s:?}\n{}", d.log()));
    assert!(!pod_path.exists() && !container_path.exists());
}

/// What Berth cannot read it never destroys: a corrupt container record
/// and a pod record of a future version, left in the root while the daemon
/// is down, are quarantined at the next start and reported; every process
/// of both pods keeps running, their root filesystems stay mounted, and
/// no layer is collected, not even those of an image removed before.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_records_are_quarantined_and_their_pods_left_alone() {
    let mut e = env().await;
    let (pod_a, a) = running_pod(&mut e, "corrupt").await;
    let (pod_b, b) = running_pod(&mut e, "future").await;
    let pids: Vec<i64> = vec![
        container_info(&mut e, &a).await["pid"].as_i64().unwrap(),
        container_info(&mut e, &b).await["pid"].as_i64().unwrap(),
        pod_info(&mut e, &pod_a).await["pid"].as_i64().unwrap(),
        pod_info(&mut e, &pod_b).await["pid"].as_i64().unwrap(),
    ];
    // The image goes: only the containers' holds keep its layers.
    remove(&mut e.d.images().await, &e.image).await;
    let snapshots = snapshot_count(&e.d);
    assert!(snapshots > 0);

    e.d.kill9();
    let a_record =
        e.d.root()
            .join("runtime/containers")
            .join(format!("{a}.json"));
    std::fs::write(&a_record, b"{\"version\":2,\"record\":{\"id\":").unwrap();
    let b_pod_record =
        e.d.root()
            .join("runtime/pods")
            .join(format!("{pod_b}.json"));
    let text = std::fs::read_to_string(&b_pod_record).unwrap();
    let future = text.replacen("\"version\":2", "\"version\":99", 1);
    assert_ne!(text, future, "the record's version field: {text}");
    std::fs::write(&b_pod_record, future).unwrap();
    e.d.spawn();
    e.rt = e.d.runtime().await;

    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} was killed\n{}",
            e.d.log()
        );
    }
    assert_eq!(snapshot_count(&e.d), snapshots, "layers were collected");
    let merged = |id: &str| e.d.root().join("runtime/rootfs").join(id).join("merged");
    for id in [&a, &b] {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mounts.contains(&*merged(id).to_string_lossy()),
            "the root filesystem of {id} was unmounted"
        );
    }
    let runtime_status =
        e.rt.status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    let q: serde_json::Value =
        serde_json::from_str(&runtime_status.info["quarantinedRecords"]).unwrap();
    let q = q.as_array().unwrap();
    let find = |kind: &str, id: &str| {
        q.iter()
            .find(|r| r["kind"] == kind && r["key"] == id)
            .unwrap_or_else(|| panic!("no quarantined {kind} {id} in {q:?}"))
            .clone()
    };
    let qa = find("container", &a);
    assert!(qa["reason"].as_str().unwrap().contains("corrupt"), "{qa}");
    assert!(std::path::Path::new(qa["path"].as_str().unwrap()).exists());
    let qb = find("pod", &pod_b);
    assert!(
        qb["reason"].as_str().unwrap().contains("version 99"),
        "{qb}"
    );
    assert!(!a_record.exists() && !b_pod_record.exists());
    // What stays readable is still listed: pod A, and container b (whose
    // pod the daemon can no longer vouch for).
    let pods = list_pods(&mut e).await;
    assert_eq!(pods.iter().map(|p| &p.id).collect::<Vec<_>>(), [&pod_a]);
    let listed =
        e.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(listed.iter().map(|c| &c.id).collect::<Vec<_>>(), [&b]);
    // A second restart leaves them alone as well.
    e.d.kill9();
    e.d.spawn();
    e.rt = e.d.runtime().await;
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    assert_eq!(snapshot_count(&e.d), snapshots);
}

/// A monitor that stopped answering (a stuck OCI runtime; here SIGSTOP)
/// does not hold StopPodSandbox: it is killed, its containers through
/// their cgroups, and the pod is removed with nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn a_wedged_monitor_does_not_hold_stop_pod() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "wedged").await;
    // The pod's pid is its pod init's; the monitor is its parent.
    let init = pod_info(&mut e, &pod).await["pid"].as_i64().unwrap();
    let monitor: i32 = std::fs::read_to_string(format!("/proc/{init}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = container_info(&mut e, &c).await["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let t0 = Instant::now();
    stop_remove_pod(&mut e, &pod).await;
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "StopPodSandbox took {:?}",
        t0.elapsed()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z")
        }
    );
    assert_no_leaks(&e, &[pod, c]);
}

/// What ImageFsInfo says is used, image and container filesystems alike.
async fn image_fs_used(d: &Daemon) -> u64 {
    let r = d
        .images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_filesystems, r.container_filesystems);
    r.container_filesystems[0].used_bytes.unwrap().value
}

/// ContainerStats reports the writable layer, measured in the background
/// (a walk per request would stall the daemon's workers).
#[tokio::test(flavor = "multi_thread")]
async fn writable_layer_usage_is_reported() {
    let mut e = env().await;
    let before = image_fs_used(&e.d).await;
    let pod = run_pod(&mut e, "usage", "").await;
    let c = create(
        &mut e,
        &pod,
        "writer",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1024 count=2048; sleep 1000",
        ],
    )
    .await;
    start(&mut e, &c).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let stats =
            e.rt.container_stats(cri::ContainerStatsRequest {
                container_id: c.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let layer = stats.writable_layer.unwrap();
        let used = layer.used_bytes.map_or(0, |v| v.value);
        if used >= 2 << 20 {
            assert!(layer.inodes_used.unwrap().value >= 1);
            // ImageFsInfo counts the writable layers too.
            assert!(image_fs_used(&e.d).await >= before + (2 << 20));
            break;
        }
        assert!(Instant::now() < deadline, "writable layer: {used} bytes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// PodSandboxStats: the pod's CPU, memory and processes (its containers'
/// here: no cgroup parent), the interfaces of its network namespace, and
/// its containers' stats; ListPodSandboxStats filters by id.
#[tokio::test(flavor = "multi_thread")]
async fn pod_stats_report_cgroups_network_and_containers() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "podstats").await;
    let stats =
        e.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.attributes.unwrap().id, pod);
    let linux = stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, c);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    let net = linux.network.unwrap();
    let eth0 = net.default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.is_some() && eth0.tx_bytes.is_some());
    assert!(net.interfaces.iter().all(|i| i.name != "lo"));
    let listed =
        e.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.clone(),
                label_selector: Default::default(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let unknown =
        e.rt.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// The next event of a GetContainerEvents stream, within 20 s.
async fn next_event(s: &mut tonic::Streaming<cri::ContainerEventResponse>) -> (String, i32) {
    let e = tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("an event, not the end");
    let pod = e.pod_sandbox_status.as_ref().expect("the pod's status");
    assert!(pod.metadata.is_some(), "{e:?}");
    assert!(e.created_at > 0);
    (e.container_id, e.container_event_type)
}

async fn subscribe(e: &mut Env) -> tonic::Streaming<cri::ContainerEventResponse> {
    e.rt.get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// GetContainerEvents: every subscriber sees a pod's and its containers'
/// lifecycle, a container's own exit included, with the pod's statuses;
/// a monitor that dies stops its containers and its pod.
#[tokio::test(flavor = "multi_thread")]
async fn container_events_reach_every_subscriber() {
    use cri::ContainerEventType as T;
    let mut e = env().await;
    let mut a = subscribe(&mut e).await;
    let mut b = subscribe(&mut e).await;
    let pod = run_pod(&mut e, "events", "").await;
    let c = create(&mut e, &pod, "quits", &["sh", "-c", "sleep 0.3; exit 3"]).await;
    start(&mut e, &c).await;
    wait_state(&mut e, &c, cri::ContainerState::ContainerExited).await;
    e.rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    stop_remove_pod(&mut e, &pod).await;
    let want = [
        (pod.clone(), T::ContainerCreatedEvent as i32),
        (pod.clone(), T::ContainerStartedEvent as i32),
        (c.clone(), T::ContainerCreatedEvent as i32),
        (c.clone(), T::ContainerStartedEvent as i32),
        (c.clone(), T::ContainerStoppedEvent as i32),
        (c.clone(), T::ContainerDeletedEvent as i32),
        (pod.clone(), T::ContainerStoppedEvent as i32),
        (pod.clone(), T::ContainerDeletedEvent as i32),
    ];
    for s in [&mut a, &mut b] {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(next_event(s).await);
        }
        assert_eq!(got, want);
    }
    drop(b);

    // The container's exit carries its status; a monitor killed under a
    // running container stops it and the pod.
    let (pod, c) = running_pod(&mut e, "events2").await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut a).await);
    }
    assert_eq!(seen[3], (c.clone(), T::ContainerStartedEvent as i32));
    let monitor = pod_info(&mut e, &pod).await["monitorPid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut after = Vec::new();
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(20), a.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ev.container_id == c {
            let st = ev.containers_statuses.iter().find(|s| s.id == c).unwrap();
            assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
        } else {
            let p = ev.pod_sandbox_status.unwrap();
            assert_eq!(p.state, cri::PodSandboxState::SandboxNotready as i32);
        }
        after.push((ev.container_id, ev.container_event_type));
    }
    after.sort();
    let mut want = vec![
        (c.clone(), T::ContainerStoppedEvent as i32),
        (pod.clone(), T::ContainerStoppedEvent as i32),
    ];
    want.sort();
    assert_eq!(after, want);
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// ListMetricDescriptors and ListPodSandboxMetrics: every metric is
/// described, with as many label values as its descriptor has keys; the
/// pod's network counters and its container's cgroup figures are there.
#[tokio::test(flavor = "multi_thread")]
async fn pod_metrics_follow_their_descriptors() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "metrics").await;
    let descriptors: HashMap<String, cri::MetricDescriptor> =
        e.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
    assert!(descriptors.contains_key("container_cpu_usage_seconds_total"));
    let all =
        e.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    let p = all.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    let check = |m: &cri::Metric| -> HashMap<String, String> {
        let d = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        assert!(m.value.is_some() && m.timestamp > 0, "{m:?}");
        d.label_keys
            .iter()
            .cloned()
            .zip(m.label_values.iter().cloned())
            .collect()
    };
    let rx = p
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && check(m).get("interface").map(String::as_str) == Some("eth0")
        })
        .expect("eth0's received bytes");
    assert_eq!(check(rx)["pod"], "metrics");
    assert_eq!(check(rx)["id"], pod);
    assert_eq!(p.container_metrics.len(), 1);
    let cm = &p.container_metrics[0];
    assert_eq!(cm.container_id, c);
    let by_name: HashMap<&str, &cri::Metric> =
        cm.metrics.iter().map(|m| (m.name.as_str(), m)).collect();
    for m in &cm.metrics {
        check(m);
    }
    let usage = by_name["container_memory_usage_bytes"];
    let labels = check(usage);
    assert_eq!(
        (labels["container"].as_str(), labels["namespace"].as_str()),
        ("main", "tests")
    );
    assert!(usage.value.as_ref().unwrap().value > 0);
    assert!(by_name["container_processes"].value.as_ref().unwrap().value >= 1);
    assert!(
        by_name["container_file_descriptors"]
            .value
            .as_ref()
            .unwrap()
            .value
            >= 1
    );
    assert!(
        by_name["container_fs_limit_bytes"]
            .value
            .as_ref()
            .unwrap()
            .value
            > 0
    );
    assert!(by_name.contains_key("container_start_time_seconds"));
    assert!(by_name.contains_key("container_memory_total_inactive_file_bytes"));
    // No checkpoint here: the answer says why (CRIU missing or failing).
    let refused =
        e.rt.checkpoint_container(cri::CheckpointContainerRequest {
            container_id: c.clone(),
            location: e.d.dir.path().join("c.tar").to_string_lossy().into_owned(),
            timeout: 30,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert!(refused.message().contains("CRIU"), "{refused:?}");
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// Every message of a server stream, each turned into items by `items`.
async fn drain<M>(
    call: impl std::future::Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
    items: impl Fn(M) -> Vec<String>,
) -> Vec<String> {
    let mut s = call.await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        out.extend(items(m));
    }
    out
}

/// The streaming lists answer what the unary lists answer.
#[tokio::test(flavor = "multi_thread")]
async fn streaming_lists_match_the_lists() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "streamlists").await;
    let pods = drain(
        e.rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None }),
        |m| m.pod_sandboxes.into_iter().map(|p| p.id).collect(),
    )
    .await;
    assert_eq!(pods, vec![pod.clone()]);
    let containers = drain(
        e.rt.stream_containers(cri::StreamContainersRequest { filter: None }),
        |m| m.containers.into_iter().map(|c| c.id).collect(),
    )
    .await;
    assert_eq!(containers, vec![c.clone()]);
    let stats = drain(
        e.rt.stream_container_stats(cri::StreamContainerStatsRequest { filter: None }),
        |m| {
            m.container_stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id)
                .collect()
        },
    )
    .await;
    assert_eq!(stats, vec![c.clone()]);
    let pod_stats = drain(
        e.rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: None }),
        |m| {
            m.pod_sandbox_stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id)
                .collect()
        },
    )
    .await;
    assert_eq!(pod_stats, vec![pod.clone()]);
    let metric_pods = drain(
        e.rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {}),
        |m| {
            m.pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id)
                .collect()
        },
    )
    .await;
    assert_eq!(metric_pods, vec![pod.clone()]);
    let mut images_client = e.d.images().await;
    let images = drain(
        images_client.stream_images(cri::StreamImagesRequest { filter: None }),
        |m| m.images.into_iter().flat_map(|i| i.repo_tags).collect(),
    )
    .await;
    assert_eq!(images, vec![e.image.clone()]);
    // PodSandboxStatus carries its containers' statuses, as CRI-O's does.
    let full = pod_status_response(&mut e, &pod, false).await;
    assert!(full.timestamp > 0);
    assert_eq!(full.containers_statuses.len(), 1);
    assert_eq!(full.containers_statuses[0].id, c);
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// `[metrics] address`: Prometheus text with the CRI calls, the pull and
/// the pods and containers the daemon has.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut e = env_with(&format!(
        "{CONFIG}\n[metrics]\naddress = \"127.0.0.1:{port}\"\n"
    ))
    .await;
    let (pod, c) = running_pod(&mut e, "prom").await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    let value = |line: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("berth_pods{state=\"ready\"}"), 1.0);
    assert_eq!(value("berth_containers{state=\"running\"}"), 1.0);
    assert_eq!(value("berth_monitors "), 1.0);
    assert!(value("berth_image_pull_bytes_total") > 0.0);
    assert_eq!(value("berth_image_pulls_total{outcome=\"ok\"}"), 1.0);
    assert!(value("berth_cri_requests_total{method=\"RunPodSandbox\",code=\"Ok\"}") >= 1.0);
    assert!(value("berth_cri_request_duration_seconds_count{method=\"StartContainer\"}") >= 1.0);
    // Failures are counted by their code.
    let _ =
        e.rt.container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await;
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("berth_cri_requests_total{method=\"ContainerStatus\",code=\"NotFound\"} 1"),
        "{text}"
    );
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{port}/x"))
            .await
            .unwrap()
            .status(),
        404
    );
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// `berth stats`, `statsp` and `events` against the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn cli_stats_and_events() {
    let mut e = env().await;
    let mut events =
        e.d.cli_command(&["events"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    // Subscribed once the daemon says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.d.log().contains("subscribed") {
        assert!(Instant::now() < deadline, "berth events never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (pod, c) = running_pod(&mut e, "clistats").await;
    let stats = e.d.cli(&["stats", "-s", "0.2"]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success(), "{stats:?}");
    assert!(
        text.starts_with("CONTAINER ") && text.contains("CPU %"),
        "{text}"
    );
    assert!(text.contains(&c[..13]) && text.contains(" main "), "{text}");
    let statsp = e.d.cli(&["statsp", "-s", "0.2"]);
    let text = String::from_utf8_lossy(&statsp.stdout);
    assert!(statsp.status.success(), "{statsp:?}");
    assert!(
        text.contains("clistats") && text.contains(&pod[..13]),
        "{text}"
    );
    stop_remove_pod(&mut e, &pod).await;
    let out = events.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("DELETED  pod"))
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("the pod's DELETED event")
        .unwrap();
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("STARTED  container") && l.contains(" main ")),
        "{lines:?}"
    );
    assert_no_leaks(&e, &[pod, c]);
}

/// ExecSync output beyond what a CRI message can carry is cut, so the
/// call still answers (16 MiB is the kubelet's message limit).
#[tokio::test(flavor = "multi_thread")]
async fn exec_output_fits_in_a_cri_message() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "bigexec").await;
    let r = exec(
        &mut e,
        &c,
        &[
            "sh",
            "-c",
            "head -c 20000000 /dev/zero; head -c 20000000 /dev/zero >&2; exit 3",
        ],
        30,
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, 3);
    assert!(
        r.stdout.len() + r.stderr.len() < 16 << 20,
        "{} + {}",
        r.stdout.len(),
        r.stderr.len()
    );
    assert!(r.stdout.len() > 4 << 20 && r.stderr.len() > 4 << 20);
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// A daemon killed after the monitor created a container but before its
/// record was written: at the next start the container is deleted through
/// its monitor (its process killed), and its root filesystem released.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_created_without_a_record_is_deleted_at_start() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "unrecorded").await;
    let pid = container_info(&mut e, &c).await["pid"].as_i64().unwrap();
    e.d.kill9();
    std::fs::remove_file(
        e.d.root()
            .join("runtime/containers")
            .join(format!("{c}.json")),
    )
    .unwrap();
    e.d.spawn();
    e.rt = e.d.runtime().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(
            Instant::now() < deadline,
            "the unrecorded container still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed =
        e.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(listed.is_empty(), "{listed:?}");
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// A host-network pod shares the node's UTS namespace: a host name of its
/// own is refused (containerd refuses it too), the node's is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_network_pod_cannot_rename_the_node() {
    let mut e = env().await;
    let logs = e.d.dir.path().join("logs");
    let host_net = |name: &str, hostname: &str| {
        let mut c = pod_config(name, &logs.join(name));
        c.hostname = hostname.to_string();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let renamed = host_net("renamed", "not-the-node");
    let err = try_run_pod(&mut e, renamed, "").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not-the-node"), "{err:?}");
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let same = host_net("same", node.trim());
    let pod = run_pod_with(&mut e, same, "").await;
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod]);
}

/// ExecSync waits for the command's output to end, not only for the
/// command: a background child still holding it past the exec's timeout is
/// reported (containerd's behaviour), while one that lets go in time is
/// waited for.
#[tokio::test(flavor = "multi_thread")]
async fn exec_waits_for_output_held_by_a_child() {
    let mut e = env().await;
    let (pod, c) = running_pod(&mut e, "drain").await;
    let r = exec(
        &mut e,
        &c,
        &["sh", "-c", "(sleep 1; echo late) & echo now"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "now\nlate\n");
    let err = exec(&mut e, &c, &["sh", "-c", "sleep 60 & echo now"], 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("still held open"), "{err:?}");
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod, c]);
}

/// UpdatePodSandboxResources (the kubelet's in-place pod resize) succeeds
/// for a pod that exists, and is NotFound otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn pod_resources_update() {
    let mut e = env().await;
    let pod = run_pod(&mut e, "resize", "").await;
    let update = |id: &str| cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.into(),
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    e.rt.update_pod_sandbox_resources(update(&pod))
        .await
        .unwrap();
    let err =
        e.rt.update_pod_sandbox_resources(update("0123456789abcdef"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    stop_remove_pod(&mut e, &pod).await;
    assert_no_leaks(&e, &[pod]);
}
