//! `berth`'s client verbs: what crictl does, with human output. They speak
//! plain CRI, so they work against any runtime (containerd, CRI-O); against
//! Berth, `pull` also shows per-layer progress through Berth's own service.
#![deny(unsafe_code)]

mod configfile;
mod connect;
mod container;
mod ids;
mod images;
mod interactive;
mod logfile;
mod output;
mod runtime;
mod sandbox;
mod stats;
pub mod stream;

use std::time::Duration;

use clap::{Args, Subcommand};

pub use connect::{connect, Clients, DEFAULT_ENDPOINT};
pub use output::Format;

/// A client failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot connect to {endpoint}: {detail} (is the runtime running? see --runtime-endpoint)"
    )]
    Connect { endpoint: String, detail: String },
    #[error("{method}: {message} ({code:?})")]
    Rpc {
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("printing output: {0}")]
    Output(String),
    #[error("{0}")]
    Stream(String),
}

/// Maps a gRPC failure of `method` to a CLI error.
pub(crate) fn rpc(method: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |s| CliError::Rpc {
        method,
        code: s.code(),
        message: s.message().to_string(),
    }
}

/// Options every client verb takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The CRI endpoint (unix socket).
    #[arg(
        long,
        short = 'r',
        global = true,
        env = "CONTAINER_RUNTIME_ENDPOINT",
        default_value = DEFAULT_ENDPOINT
    )]
    pub runtime_endpoint: String,
    /// The image service endpoint, if not the runtime's.
    #[arg(long, global = true, env = "IMAGE_SERVICE_ENDPOINT")]
    pub image_endpoint: Option<String>,
    /// Timeout for connecting and for each call but pulls ("10s", "2m").
    #[arg(long, global = true, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration {s:?} (use 500ms, 10s, 2m or 1h)")),
    }
}

/// The client verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's status and configuration.
    Info(runtime::InfoArgs),
    /// Pull an image.
    Pull(images::PullArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Show details of images.
    Inspecti(images::InspectiArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Show what the image filesystem uses.
    Imagefsinfo(images::FsInfoArgs),
    /// Run a pod from a config file.
    Runp(sandbox::RunpArgs),
    /// List pods.
    Pods(sandbox::PodsArgs),
    /// Show the status of pods.
    Inspectp(sandbox::InspectpArgs),
    /// Stop pods.
    Stopp(sandbox::StoppArgs),
    /// Remove pods.
    Rmp(sandbox::RmpArgs),
    /// Create a container in a pod.
    Create(container::CreateArgs),
    /// Start created containers.
    Start(container::IdsArgs),
    /// List containers.
    Ps(container::PsArgs),
    /// Show the status of containers.
    Inspect(container::InspectArgs),
    /// Stop containers.
    Stop(container::StopArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// Print a container's log.
    Logs(logfile::LogsArgs),
    /// Run a command in a running container (-i: with stdin, -t: in a terminal).
    Exec(container::ExecArgs),
    /// Attach to a running container's stdio.
    Attach(interactive::AttachArgs),
    /// Forward local ports to a pod's ports.
    PortForward(interactive::PortForwardArgs),
    /// Change the resources of running containers.
    Update(container::UpdateArgs),
    /// Run a pod and a container in it.
    Run(container::RunArgs),
    /// Show containers' resource usage (CPU, memory, writable layer, swap).
    Stats(stats::StatsArgs),
    /// Show pods' resource usage (CPU, memory, processes, network).
    Statsp(stats::StatspArgs),
    /// Follow the runtime's container and pod events.
    Events(stats::EventsArgs),
}

/// What a verb asks the process to exit with.
pub enum Outcome {
    Success,
    /// `exec`: the command's own exit code.
    Exit(i32),
}

/// Runs one client verb.
pub async fn run(global: &Global, cmd: Command) -> Result<Outcome, CliError> {
    let mut c = connect(&global.runtime_endpoint, global.timeout).await?;
    if let Some(ep) = &global.image_endpoint {
        connect::use_image_endpoint(&mut c, ep, global.timeout).await?;
    }
    match cmd {
        Command::Version => runtime::version(&mut c, global).await,
        Command::Info(a) => runtime::info(&mut c, global, a).await,
        Command::Pull(a) => images::pull(&mut c, a).await,
        Command::Images(a) => images::images(&mut c, global, a).await,
        Command::Inspecti(a) => images::inspecti(&mut c, global, a).await,
        Command::Rmi(a) => images::rmi(&mut c, global, a).await,
        Command::Imagefsinfo(a) => images::fsinfo(&mut c, global, a).await,
        Command::Runp(a) => sandbox::runp(&mut c, global, a).await,
        Command::Pods(a) => sandbox::pods(&mut c, global, a).await,
        Command::Inspectp(a) => sandbox::inspectp(&mut c, global, a).await,
        Command::Stopp(a) => sandbox::stopp(&mut c, global, a).await,
        Command::Rmp(a) => sandbox::rmp(&mut c, global, a).await,
        Command::Create(a) => container::create(&mut c, global, a).await,
        Command::Start(a) => container::start(&mut c, global, a).await,
        Command::Ps(a) => container::ps(&mut c, global, a).await,
        Command::Inspect(a) => container::inspect(&mut c, global, a).await,
        Command::Stop(a) => container::stop(&mut c, global, a).await,
        Command::Rm(a) => container::rm(&mut c, global, a).await,
        Command::Logs(a) => logfile::logs(&mut c, global, a).await,
        Command::Exec(a) => return container::exec(&mut c, global, a).await.map(Outcome::Exit),
        Command::Attach(a) => {
            return interactive::attach(&mut c, global, a)
                .await
                .map(Outcome::Exit)
        }
        Command::PortForward(a) => interactive::port_forward(&mut c, global, a).await,
        Command::Update(a) => container::update(&mut c, global, a).await,
        Command::Run(a) => container::run(&mut c, global, a).await,
        Command::Stats(a) => stats::stats(&mut c, global, a).await,
        Command::Statsp(a) => stats::statsp(&mut c, global, a).await,
        Command::Events(a) => stats::events(&mut c, global, a).await,
    }
    .map(|()| Outcome::Success)
}

/// A request with the global timeout applied.
pub(crate) fn req<T>(msg: T, global: &Global) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(global.timeout);
    r
}
