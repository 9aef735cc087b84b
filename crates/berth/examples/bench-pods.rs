//! Pod and container lifecycle benchmark, Berth against a peer CRI runtime
//! (containerd from ../shared/critest-lab), the two alternating in one run:
//!
//!     scripts/bench-pods.sh [--cycles 50] [--pods 50] [--peer unix:///…/containerd.sock]
//!
//! 1. `--cycles` times: RunPodSandbox, CreateContainer, StartContainer,
//!    StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox,
//!    each timed; "pod + container from scratch" is the sum of the first
//!    three. Median and p90 of each, and Berth / peer.
//! 2. Memory: `--pods` pods with one running container each, then PSS and
//!    RSS (from /proc/PID/smaps_rollup) of the daemon and of its per-pod
//!    processes (Berth's monitors and pod inits; containerd's shims and
//!    pause processes), in total and per pod.
//!
//! Pods and containers are configured as kubelet configures an ordinary
//! pod (network and IPC shared by the pod, a PID namespace per container).
//! Without a reachable peer, Berth alone is measured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_testkit::{fixtures, ManifestFormat, Registry};
use tonic::transport::Channel;

struct Args {
    cycles: usize,
    pods: usize,
    peer: Option<String>,
    berth: PathBuf,
    /// The Berth daemon's --log-level (its log goes to this program's stderr).
    log_level: String,
}

fn args() -> Args {
    let mut a = Args {
        cycles: 50,
        pods: 50,
        peer: Some("unix:///var/tmp/critest-lab/containerd/run/containerd.sock".into()),
        berth: std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("berth"))
            .unwrap(),
        log_level: "warn".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--cycles" => a.cycles = v.parse().expect("--cycles N"),
            "--pods" => a.pods = v.parse().expect("--pods N"),
            "--peer" => a.peer = (!v.is_empty()).then_some(v),
            "--berth" => a.berth = v.into(),
            "--log-level" => a.log_level = v,
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// Whether a process (comm, cmdline) is one of a system's per-pod helpers.
type HelperMatch = Box<dyn Fn(&str, &str) -> bool>;

struct System {
    name: &'static str,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Which processes count: the daemon and its per-pod helpers.
    daemon_pid: u32,
    helper: HelperMatch,
    samples: HashMap<&'static str, Vec<Duration>>,
}

async fn connect(endpoint: &str) -> Option<Channel> {
    let path = endpoint
        .strip_prefix("unix://")
        .unwrap_or(endpoint)
        .to_string();
    let ch = tonic::transport::Endpoint::try_from("http://localhost")
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .ok()?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    rt.version(cri::VersionRequest::default()).await.ok()?;
    Some(ch)
}

/// The pid of the process listening on a unix socket path.
fn socket_owner(path: &str) -> Option<u32> {
    let unix = std::fs::read_to_string("/proc/net/unix").ok()?;
    let inode = unix
        .lines()
        .find(|l| l.ends_with(path))?
        .split_whitespace()
        .nth(6)?
        .to_string();
    let needle = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path())
                    .map(|l| l.to_string_lossy() == needle)
                    .unwrap_or(false)
                {
                    return Some(pid);
                }
            }
        }
    }
    None
}

fn pod_config(i: usize) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("bench-uid-{i}-{}", rand::random::<u32>()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What kubelet sends for an ordinary pod (no hostNetwork, hostPID,
/// hostIPC or shareProcessNamespace): pod network and IPC, a PID namespace
/// per container.
fn kubelet_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container_config(image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        // PID 1 of its own PID namespace, like a real service it exits on
        // SIGTERM (a bare `sleep` as PID 1 ignores it and waits for SIGKILL
        // after the grace period, with any runtime).
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; sleep 3600 & wait".into(),
        ],
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl System {
    fn record(&mut self, step: &'static str, d: Duration) {
        self.samples.entry(step).or_default().push(d);
    }

    async fn run_pod(&mut self, i: usize, image: &str) -> (String, String) {
        let config = pod_config(i);
        let t = Instant::now();
        let pod = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}", self.name))
            .into_inner()
            .pod_sandbox_id;
        let t_run = t.elapsed();
        let t = Instant::now();
        let c = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(image)),
                sandbox_config: Some(config),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: CreateContainer: {e}", self.name))
            .into_inner()
            .container_id;
        let t_create = t.elapsed();
        let t = Instant::now();
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: c.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("{}: StartContainer: {e}", self.name));
        let t_start = t.elapsed();
        self.record("RunPodSandbox", t_run);
        self.record("CreateContainer", t_create);
        self.record("StartContainer", t_start);
        self.record("pod + container from scratch", t_run + t_create + t_start);
        (pod, c)
    }

    async fn tear_down(&mut self, pod: String, c: String, timed: bool) {
        // Untimed: let the container's shell install its SIGTERM trap (a
        // runtime that returns from StartContainer in a millisecond would
        // otherwise signal a PID 1 that still ignores SIGTERM, and wait
        // out the grace period).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: c.clone(),
                timeout: 10,
            })
            .await
            .expect("StopContainer");
        let t_stop = t.elapsed();
        let t = Instant::now();
        self.rt
            .remove_container(cri::RemoveContainerRequest { container_id: c })
            .await
            .expect("RemoveContainer");
        let t_rm = t.elapsed();
        let t = Instant::now();
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .expect("StopPodSandbox");
        let t_stopp = t.elapsed();
        let t = Instant::now();
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .expect("RemovePodSandbox");
        let t_rmp = t.elapsed();
        if timed {
            self.record("StopContainer", t_stop);
            self.record("RemoveContainer", t_rm);
            self.record("StopPodSandbox", t_stopp);
            self.record("RemovePodSandbox", t_rmp);
        }
    }

    /// (PSS, RSS) in kB of the daemon and of the helpers.
    fn memory(&self) -> ((u64, u64), (u64, u64), usize) {
        let mut daemon = (0, 0);
        let mut helpers = (0, 0);
        let mut n = 0;
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            let is_daemon = pid == self.daemon_pid;
            if !is_daemon && !(self.helper)(comm.trim(), &cmdline) {
                continue;
            }
            let rollup = std::fs::read_to_string(p.path().join("smaps_rollup")).unwrap_or_default();
            let field = |name: &str| -> u64 {
                rollup
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let m = (field("Pss:"), field("Rss:"));
            if is_daemon {
                daemon = m;
            } else {
                helpers.0 += m.0;
                helpers.1 += m.1;
                n += 1;
            }
        }
        (daemon, helpers, n)
    }
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(v[v.len() / 2]),
        ms(v[(v.len() * 9 / 10).min(v.len() - 1)]),
    )
}

const STEPS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "pod + container from scratch",
];

/// Clients calling ListContainerStats in a loop during the Status probe.
const STATS_CLIENTS: usize = 10;
/// How long the load runs.
const LOAD_FOR: Duration = Duration::from_secs(5);

/// Status latencies (one call every 20 ms, as a busy kubelet's health and
/// PLEG checks would not even need) while [`STATS_CLIENTS`] clients call
/// ListContainerStats back to back; both sets of latencies.
async fn status_under_stats_load(
    rt: &RuntimeServiceClient<Channel>,
) -> (Vec<Duration>, Vec<Duration>) {
    let stop = Instant::now() + LOAD_FOR;
    let mut loaders = Vec::new();
    for _ in 0..STATS_CLIENTS {
        let mut rt = rt.clone().max_decoding_message_size(16 << 20);
        loaders.push(tokio::spawn(async move {
            let mut took = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                rt.list_container_stats(cri::ListContainerStatsRequest::default())
                    .await
                    .expect("ListContainerStats");
                took.push(t.elapsed());
            }
            took
        }));
    }
    let mut rt = rt.clone();
    let mut status = Vec::new();
    while Instant::now() < stop {
        let t = Instant::now();
        rt.status(cri::StatusRequest::default())
            .await
            .expect("Status");
        status.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stats = Vec::new();
    for l in loaders {
        stats.extend(l.await.unwrap());
    }
    (status, stats)
}

/// The `q` quantile in ms, and the number of samples.
fn stats_of(v: &mut [Duration], q: f64) -> (f64, usize) {
    v.sort();
    if v.is_empty() {
        return (0.0, 0);
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    (v[i].as_secs_f64() * 1e3, v.len())
}

#[tokio::main]
async fn main() {
    let a = args();
    let reg = Registry::start();
    fixtures::busybox()
        .push(&reg, "bench/busybox:1", ManifestFormat::Oci)
        .await
        .expect("push");
    let image = format!("{}/bench/busybox:1", reg.host());

    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let cni = dir.path().join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "berth-bench",
        "plugins": [
            {"type": "bridge", "bridge": "bbench0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.0.0/16"}]],
                      "dataDir": dir.path().join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(cni.join("10-bench.conflist"), conf.to_string()).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[cni]\nconf_dir = \"{}\"\ninstall_default = false\n",
            cni.display()
        ),
    )
    .unwrap();
    let sock = dir.path().join("berth.sock");
    let mut daemon = Command::new(&a.berth)
        .args(["daemon", "--log-level", &a.log_level, "--config"])
        .arg(dir.path().join("config.toml"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("start berth daemon (build it: cargo build --release --bin berth)");
    let mut ch = None;
    for _ in 0..300 {
        if let Some(c) = connect(&format!("unix://{}", sock.display())).await {
            ch = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ch = ch.expect("berth daemon did not come up");
    let dir_s = dir.path().to_string_lossy().into_owned();
    let mut systems = vec![System {
        name: "berth",
        rt: RuntimeServiceClient::new(ch.clone()),
        images: ImageServiceClient::new(ch),
        daemon_pid: daemon.id(),
        helper: Box::new(move |_, cmdline: &str| cmdline.contains(&dir_s)),
        samples: HashMap::new(),
    }];
    if let Some(p) = &a.peer {
        match connect(p).await {
            Some(ch) => {
                let path = p.strip_prefix("unix://").unwrap_or(p).to_string();
                systems.push(System {
                    name: "containerd",
                    rt: RuntimeServiceClient::new(ch.clone()),
                    images: ImageServiceClient::new(ch),
                    daemon_pid: socket_owner(&path).unwrap_or(0),
                    helper: Box::new(|comm: &str, _: &str| {
                        comm.starts_with("containerd-shim") || comm == "pause"
                    }),
                    samples: HashMap::new(),
                });
            }
            None => eprintln!("peer {p} not reachable: measuring Berth alone"),
        }
    }
    for s in &mut systems {
        s.images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{}: pull {image}: {e}", s.name));
        // One untimed cycle each: caches, CNI plugin binaries, lazy setup.
        let (pod, c) = s.run_pod(9999, &image).await;
        s.tear_down(pod, c, false).await;
        s.samples.clear();
    }

    eprintln!(
        "{} lifecycle cycles, alternating {} system(s) ...",
        a.cycles,
        systems.len()
    );
    for i in 0..a.cycles {
        let n = systems.len();
        for k in 0..n {
            // Alternate which system goes first.
            let s = &mut systems[(i + k) % n];
            let (pod, c) = s.run_pod(i, &image).await;
            s.tear_down(pod, c, true).await;
        }
    }

    println!("lifecycle, {} cycles (ms)", a.cycles);
    print!("  {:<30} {:>10} {:>10}", "step", "berth p50", "p90");
    if systems.len() > 1 {
        print!(
            " {:>14} {:>10} {:>14}",
            "containerd p50", "p90", "berth/peer p50"
        );
    }
    println!();
    for step in STEPS {
        let (b50, b90) = stats(systems[0].samples.get_mut(step).unwrap());
        print!("  {step:<30} {b50:>10.1} {b90:>10.1}");
        if systems.len() > 1 {
            let (p50, p90) = stats(systems[1].samples.get_mut(step).unwrap());
            print!(" {p50:>14.1} {p90:>10.1} {:>14.2}", b50 / p50);
        }
        println!();
    }

    println!(
        "memory with {} running pods (one container each), kB",
        a.pods
    );
    let mut loaded = Vec::new();
    for s in &mut systems {
        let (idle_daemon, _, _) = s.memory();
        let mut running = Vec::new();
        for i in 0..a.pods {
            running.push(s.run_pod(10_000 + i, &image).await);
        }
        let _ = Command::new("sync").status();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (daemon_m, helpers, n) = s.memory();
        println!(
            "  {:<10} daemon PSS {:>7} RSS {:>7} (idle PSS {:>6}) | {n:>3} per-pod processes: PSS {:>7} RSS {:>7} | per pod: PSS {:>6.0} RSS {:>6.0}",
            s.name,
            daemon_m.0,
            daemon_m.1,
            idle_daemon.0,
            helpers.0,
            helpers.1,
            helpers.0 as f64 / a.pods as f64,
            helpers.1 as f64 / a.pods as f64,
        );
        let (status, stats) = status_under_stats_load(&s.rt).await;
        loaded.push((s.name, status, stats));
        for (pod, c) in running {
            s.tear_down(pod, c, false).await;
        }
    }
    println!(
        "Status while {STATS_CLIENTS} clients call ListContainerStats in a loop, {} running containers (ms)",
        a.pods
    );
    for (name, mut status, mut stats) in loaded {
        let (s50, _) = stats_of(&mut status, 0.5);
        let (s99, n) = stats_of(&mut status, 0.99);
        let (l50, calls) = stats_of(&mut stats, 0.5);
        println!(
            "  {name:<10} Status p50 {s50:>7.2} p99 {s99:>7.2} ({n} calls) | ListContainerStats p50 {l50:>7.2} ({calls} calls)"
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = Command::new("ip")
        .args(["link", "del", "bbench0"])
        .stderr(Stdio::null())
        .status();
}
