//! Stats benchmark (`scripts/bench-stats.sh`): on each runtime given,
//! 25 pods of 4 running busybox containers (100 containers); then,
//! alternating the runtimes round by round, the latency of
//! ListContainerStats and ListPodSandboxStats over all of them. The pods
//! are removed at the end.
//!
//!     bench-stats [--image IMAGE] NAME=unix:///sock [NAME=unix:///sock ...]

mod common;

use std::time::{Duration, Instant};

use common::{median, quantile};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const PODS: usize = 25;
const PER_POD: usize = 4;
const ROUNDS: usize = 5;
const CALLS_PER_ROUND: usize = 20;

struct Runtime {
    name: String,
    rt: RuntimeServiceClient<Channel>,
    pods: Vec<String>,
    containers: Vec<Duration>,
    pod_stats: Vec<Duration>,
}

async fn setup(name: &str, endpoint: &str, image: &str) -> Runtime {
    let (mut rt, spec) = common::connect_and_pull(name, endpoint, image).await;
    let run = rand::random::<u32>();
    let mut pods = Vec::new();
    for p in 0..PODS {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("bench-stats-{p}"),
                uid: format!("bench-stats-{run}-{p}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/bench-stats-{run}/pod{p}"),
                ..Default::default()
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
        for i in 0..PER_POD {
            let id = rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: format!("c{i}"),
                            attempt: 0,
                        }),
                        image: spec.clone(),
                        command: vec!["sleep".into(), "100000".into()],
                        ..Default::default()
                    }),
                    sandbox_config: Some(config.clone()),
                })
                .await
                .unwrap_or_else(|s| panic!("{name}: CreateContainer: {s:?}"))
                .into_inner()
                .container_id;
            rt.start_container(cri::StartContainerRequest { container_id: id })
                .await
                .unwrap_or_else(|s| panic!("{name}: StartContainer: {s:?}"));
        }
        pods.push(pod);
    }
    Runtime {
        name: name.into(),
        rt,
        pods,
        containers: Vec::new(),
        pod_stats: Vec::new(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let (image, endpoints) =
        common::runtimes_from_args("bench-stats [--image IMAGE] NAME=unix:///sock ...");
    let mut runtimes = Vec::new();
    for (name, endpoint) in &endpoints {
        runtimes.push(setup(name, endpoint, &image).await);
    }
    // A first call each: CPU rates need a previous sample.
    for r in &mut runtimes {
        let _ =
            r.rt.list_container_stats(cri::ListContainerStatsRequest { filter: None })
                .await;
        let _ =
            r.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
                .await;
    }
    for _ in 0..ROUNDS {
        for r in &mut runtimes {
            for _ in 0..CALLS_PER_ROUND {
                let t = Instant::now();
                let n =
                    r.rt.list_container_stats(cri::ListContainerStatsRequest { filter: None })
                        .await
                        .unwrap_or_else(|s| panic!("{}: ListContainerStats: {s:?}", r.name))
                        .into_inner()
                        .stats
                        .len();
                r.containers.push(t.elapsed());
                assert!(n >= PODS * PER_POD, "{}: {n} container stats", r.name);
                let t = Instant::now();
                let n =
                    r.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
                        .await
                        .unwrap_or_else(|s| panic!("{}: ListPodSandboxStats: {s:?}", r.name))
                        .into_inner()
                        .stats
                        .len();
                r.pod_stats.push(t.elapsed());
                assert!(n >= PODS, "{}: {n} pod stats", r.name);
            }
        }
    }
    println!(
        "{} running containers in {PODS} pods per runtime; {ROUNDS} rounds, runtimes alternated, \
         {CALLS_PER_ROUND} calls of each per round",
        PODS * PER_POD
    );
    println!(
        "{:<16} {:>16} {:>16} {:>16} {:>16}",
        "runtime", "ctr p50 (ms)", "ctr p90 (ms)", "pod p50 (ms)", "pod p90 (ms)"
    );
    for r in &runtimes {
        println!(
            "{:<16} {:>16.2} {:>16.2} {:>16.2} {:>16.2}",
            r.name,
            ms(median(&r.containers)),
            ms(quantile(&r.containers, 0.9)),
            ms(median(&r.pod_stats)),
            ms(quantile(&r.pod_stats, 0.9))
        );
    }
    for r in runtimes.iter().skip(1) {
        println!(
            "{} / {}: ListContainerStats {:.2}, ListPodSandboxStats {:.2} (median latency ratio)",
            runtimes[0].name,
            r.name,
            median(&runtimes[0].containers).as_secs_f64() / median(&r.containers).as_secs_f64(),
            median(&runtimes[0].pod_stats).as_secs_f64() / median(&r.pod_stats).as_secs_f64(),
        );
    }
    for r in &mut runtimes {
        for pod in std::mem::take(&mut r.pods) {
            let _ =
                r.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await;
            let _ =
                r.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                })
                .await;
        }
    }
}
