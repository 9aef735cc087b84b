//! `berth node` on the command line: the agent's flags (named after the
//! kubelet's) and `berth node status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::agent::{Node, NodeOptions, PodReport};
use crate::images::PullSettings;

/// `berth node`: run the Pod manifests of a directory against a CRI
/// runtime, as a kubelet runs static pods.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    /// The directory of Pod manifests (YAML or JSON; ConfigMaps and
    /// Secrets beside them are what the pods may refer to).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// The node's state directory (pods' volumes under `<root>/pods`).
    #[arg(long, default_value = "/var/lib/berth-node")]
    pub root_dir: PathBuf,
    /// Where pod log directories go.
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's IP addresses (hostIP, and the address of hostNetwork pods).
    #[arg(long = "node-ip")]
    pub node_ips: Vec<std::net::IpAddr>,
    /// Where `/pods`, `/events`, `/status` and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:10255")]
    pub address: SocketAddr,
    /// Cluster DNS server (repeatable).
    #[arg(long)]
    pub cluster_dns: Vec<String>,
    /// The cluster domain.
    #[arg(long, default_value = "")]
    pub cluster_domain: String,
    /// Pull images one at a time (the kubelet's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub serialize_image_pulls: bool,
    /// Pulls at once when not serialised.
    #[arg(long, default_value_t = 5)]
    pub max_parallel_image_pulls: usize,
    /// Pulls per second (0: unlimited).
    #[arg(long, default_value_t = 5.0)]
    pub registry_qps: f64,
    /// Pulls allowed at once above the QPS.
    #[arg(long, default_value_t = 10)]
    pub registry_burst: u32,
    /// A docker config file with registry credentials for every pull.
    #[arg(long)]
    pub docker_config: Option<PathBuf>,
    /// The longest crash-loop back-off, in seconds (the kubelet's
    /// `crashLoopBackOff.maxContainerRestartPeriod`; the first delay is
    /// 10 s or this, whichever is shorter).
    #[arg(long, default_value_t = 300)]
    pub max_container_restart_period: u64,
    /// A container's log is rotated when it reaches this many bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub container_log_max_size: u64,
    /// Log files kept per container, the live one included.
    #[arg(long, default_value_t = 5)]
    pub container_log_max_files: usize,
    /// How often log sizes are checked, in seconds.
    #[arg(long, default_value_t = 10)]
    pub container_log_monitor_interval: u64,
    /// Image garbage collection starts when the image filesystem is fuller
    /// than this percentage...
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub image_gc_high_threshold: u8,
    /// ...and frees space down to this one.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Dead containers kept per pod and container.
    #[arg(long, default_value_t = 1)]
    pub maximum_dead_containers_per_container: usize,
    /// A dead container is removed only when older than this, in seconds.
    #[arg(long, default_value_t = 0)]
    pub minimum_container_ttl_duration: u64,
    /// How often every pod is synced even when nothing changed, in seconds.
    #[arg(long, default_value_t = 60)]
    pub sync_frequency: u64,
}

/// `berth node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show the pods of a running `berth node`, their containers, the
    /// manifest errors and recent events.
    Status {
        /// The node's status endpoint.
        #[arg(long, default_value = "127.0.0.1:10255")]
        address: SocketAddr,
        /// json: the whole status document.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
    },
}

/// Why `berth node` stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--manifests DIR is required")]
    NoManifests,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Node(#[from] crate::agent::NodeError),
    #[error("cannot reach berth node at {address}: {detail}")]
    Status { address: SocketAddr, detail: String },
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

/// The address the host would send from on its default route (what the
/// kubelet takes as the node IP without `--node-ip`); no packet is sent.
fn default_route_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Runs `berth node` (until SIGINT or SIGTERM) or one of its subcommands,
/// against the CRI runtime at `runtime_endpoint` (the global
/// `--runtime-endpoint`) and `image_endpoint`.
pub async fn run(
    args: NodeArgs,
    runtime_endpoint: &str,
    image_endpoint: Option<&str>,
) -> Result<(), CliError> {
    if let Some(NodeCommand::Status { address, output }) = args.command {
        return status(address, &output).await;
    }
    let manifests = args.manifests.clone().ok_or(CliError::NoManifests)?;
    let name = args.hostname_override.clone().unwrap_or_else(hostname);
    let root = args.root_dir.clone();
    let n = name.clone();
    let mut node =
        tokio::task::spawn_blocking(move || berth_criconfig::NodeSettings::detect(&n, &root))
            .await
            .map_err(std::io::Error::other)?;
    node.pod_logs_dir = args.pod_logs_dir.clone();
    node.cluster_dns = args.cluster_dns.clone();
    node.cluster_domain = args.cluster_domain.clone();
    node.node_ips = if args.node_ips.is_empty() {
        default_route_ip().into_iter().collect()
    } else {
        args.node_ips.clone()
    };
    let mut options = NodeOptions::new(manifests, runtime_endpoint.to_string(), node);
    options.image_endpoint = image_endpoint.map(str::to_string);
    options.http = Some(args.address);
    options.resync = Duration::from_secs(args.sync_frequency.max(1));
    if args.image_gc_low_threshold >= args.image_gc_high_threshold {
        return Err(CliError::Invalid(format!(
            "--image-gc-low-threshold ({}) must be below --image-gc-high-threshold ({})",
            args.image_gc_low_threshold, args.image_gc_high_threshold
        )));
    }
    options.gc.image_high_percent = args.image_gc_high_threshold;
    options.gc.image_low_percent = args.image_gc_low_threshold;
    options.gc.max_per_pod_container = args.maximum_dead_containers_per_container;
    options.gc.min_age = Duration::from_secs(args.minimum_container_ttl_duration);
    options.logs.max_size = args.container_log_max_size;
    options.logs.max_files = args.container_log_max_files.max(2);
    options.logs.interval = Duration::from_secs(args.container_log_monitor_interval.max(1));
    let max = Duration::from_secs(args.max_container_restart_period.max(1));
    options.crash_backoff = crate::backoff::BackoffPolicy {
        initial: options.crash_backoff.initial.min(max),
        max,
        reset_after: options.crash_backoff.reset_after,
    };
    options.pulls = PullSettings {
        parallel: if args.serialize_image_pulls {
            1
        } else {
            args.max_parallel_image_pulls.max(1)
        },
        qps: args.registry_qps,
        burst: args.registry_burst,
        docker_config: args.docker_config.clone(),
    };
    let node = Node::start(options).await?;
    tracing::info!(node = %name, address = ?node.http_address, "berth node running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping; the pods keep running and are adopted at the next start");
    node.stop().await;
    Ok(())
}

async fn fetch(address: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(raw[split + 4..].to_vec())
}

/// The `/status` document as the CLI reads it.
#[derive(Debug, serde::Deserialize)]
struct StatusDoc {
    pods: Vec<PodReport>,
    errors: Vec<String>,
    events: Vec<crate::events::EventView>,
}

async fn status(address: SocketAddr, output: &str) -> Result<(), CliError> {
    let body = fetch(address, "/status")
        .await
        .map_err(|detail| CliError::Status { address, detail })?;
    if output == "json" {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let doc: StatusDoc = serde_json::from_slice(&body).map_err(|e| CliError::Status {
        address,
        detail: e.to_string(),
    })?;
    print!("{}", render(&doc));
    Ok(())
}

fn render(doc: &StatusDoc) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<10} {:<7} {:<9} SOURCE",
        "POD", "PHASE", "READY", "RESTARTS"
    );
    for r in &doc.pods {
        let st = r.pod.status.clone().unwrap_or_default();
        let cs = st.container_statuses.clone().unwrap_or_default();
        let ready = cs.iter().filter(|c| c.ready).count();
        let restarts: i32 = cs.iter().map(|c| c.restart_count).sum();
        let _ = writeln!(
            out,
            "{:<40} {:<10} {:<7} {:<9} {}",
            format!(
                "{}/{}",
                r.pod.metadata.namespace.as_deref().unwrap_or(""),
                r.pod.metadata.name.as_deref().unwrap_or("")
            ),
            st.phase.unwrap_or_default(),
            format!("{ready}/{}", cs.len()),
            restarts,
            r.source.display()
        );
        for c in st.init_container_statuses.iter().flatten().chain(cs.iter()) {
            let state = c.state.clone().unwrap_or_default();
            let what = if let Some(w) = state.waiting {
                format!("Waiting: {}", w.reason.unwrap_or_default())
            } else if let Some(t) = state.terminated {
                format!(
                    "Terminated: {} (exit {})",
                    t.reason.unwrap_or_default(),
                    t.exit_code
                )
            } else if state.running.is_some() {
                "Running".into()
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "  {:<38} {:<28} ready={} restarts={}",
                c.name, what, c.ready, c.restart_count
            );
        }
    }
    if !doc.errors.is_empty() {
        let _ = writeln!(out, "\nMANIFEST ERRORS");
        for e in &doc.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    if !doc.events.is_empty() {
        let _ = writeln!(out, "\nEVENTS (newest last)");
        for e in doc.events.iter().rev().take(20).rev() {
            let _ = writeln!(
                out,
                "  {}  {:<7} {:<20} {}/{}{}  {}",
                e.time,
                e.kind,
                e.reason,
                e.namespace,
                e.pod,
                e.container
                    .as_ref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default(),
                e.message
            );
        }
    }
    out
}
