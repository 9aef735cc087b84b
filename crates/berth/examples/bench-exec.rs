//! Streaming exec benchmark (`scripts/bench-exec.sh`): on each runtime
//! given, a pod with a busybox container; then, alternating the runtimes
//! round by round, the round trip of `exec true` through the Exec URL
//! (the gRPC call, the upgrade, the session to its status) and the stdout
//! throughput of an exec writing 100 MB. Same client for every runtime:
//! WebSocket (`berth exec -i` and crictl `--transport websocket` use it),
//! v5 where offered, else v4.
//!
//!     bench-exec --image IMAGE NAME=unix:///sock [NAME=unix:///sock ...]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::median;

mod common;

use berth_cli::stream::{self, Io};
use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const ROUNDS: usize = 5;
const EXECS_PER_ROUND: usize = 20;
const BYTES: usize = 100_000_000;

/// Counts what is written.
#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl tokio::io::AsyncWrite for Count {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.fetch_add(b.len(), Ordering::Relaxed);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct Runtime {
    name: String,
    rt: RuntimeServiceClient<Channel>,
    pod: String,
    container: String,
    latency: Vec<Duration>,
    throughput: Vec<f64>,
}

async fn setup(name: &str, endpoint: &str, image: &str) -> Runtime {
    let (mut rt, spec) = common::connect_and_pull(name, endpoint, image).await;
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "bench-exec".into(),
            uid: format!("bench-exec-{}", rand::random::<u32>()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("{name}: RunPodSandbox: {s:?}"))
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: spec,
                command: vec!["sleep".into(), "100000".into()],
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|s| panic!("{name}: CreateContainer: {s:?}"))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap_or_else(|s| panic!("{name}: StartContainer: {s:?}"));
    Runtime {
        name: name.into(),
        rt,
        pod,
        container,
        latency: Vec::new(),
        throughput: Vec::new(),
    }
}

/// One exec through its URL; the bytes of stdout.
async fn exec(r: &mut Runtime, cmd: &[&str]) -> usize {
    let url =
        r.rt.exec(cri::ExecRequest {
            container_id: r.container.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("{}: Exec: {s:?}", r.name))
        .into_inner()
        .url;
    let out = Count::default();
    let io = Io {
        stdin: None,
        stdout: Box::new(out.clone()),
        stderr: Box::new(tokio::io::sink()),
        resize: None,
    };
    let code = stream::remote_command(&url, io)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", r.name));
    assert_eq!(code, Some(0), "{}: {cmd:?}", r.name);
    out.0.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let (image, endpoints) =
        common::runtimes_from_args("bench-exec [--image IMAGE] NAME=unix:///sock ...");
    let mut runtimes = Vec::new();
    for (name, endpoint) in &endpoints {
        runtimes.push(setup(name, endpoint, &image).await);
    }
    let size = BYTES.to_string();
    for _ in 0..ROUNDS {
        for r in &mut runtimes {
            for _ in 0..EXECS_PER_ROUND {
                let t = Instant::now();
                exec(r, &["true"]).await;
                r.latency.push(t.elapsed());
            }
            let t = Instant::now();
            let got = exec(r, &["head", "-c", &size, "/dev/zero"]).await;
            assert_eq!(got, BYTES, "{}: stdout cut short", r.name);
            r.throughput
                .push(BYTES as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
    }
    println!(
        "{ROUNDS} rounds, runtimes alternated; per round {EXECS_PER_ROUND} x `exec true` and 1 x {} MB of stdout",
        BYTES / 1_000_000
    );
    println!(
        "{:<16} {:>14} {:>14} {:>16}",
        "runtime", "exec p50 (ms)", "exec p90 (ms)", "stdout (MB/s)"
    );
    let first = (
        median(&runtimes[0].latency),
        median(&runtimes[0].throughput),
    );
    for r in &runtimes {
        let mut l = r.latency.clone();
        l.sort();
        let p90 = l[l.len() * 9 / 10];
        println!(
            "{:<16} {:>14.2} {:>14.2} {:>16.0}",
            r.name,
            median(&l).as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3,
            median(&r.throughput)
        );
    }
    for r in runtimes.iter().skip(1) {
        println!(
            "{} / {}: exec latency {:.2}, throughput {:.2}",
            runtimes[0].name,
            r.name,
            first.0.as_secs_f64() / median(&r.latency).as_secs_f64(),
            first.1 / median(&r.throughput)
        );
    }
    for r in &mut runtimes {
        let _ =
            r.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: r.pod.clone(),
            })
            .await;
        let _ =
            r.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: r.pod.clone(),
            })
            .await;
    }
}
