//! The `berth` binary: `berth daemon` serves the CRI; every other verb is a
//! client of a CRI endpoint. It only parses arguments and dispatches.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes container runtime (CRI v1) and its client"
)]
struct Cli {
    #[command(flatten)]
    global: berth_cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the CRI daemon.
    Daemon(DaemonArgs),
    /// A pod's monitor (started by the daemon, one per pod).
    #[command(hide = true)]
    Monitor {
        /// The pod's state directory.
        pod_dir: PathBuf,
    },
    /// Run the Pod manifests of a directory against a CRI runtime, as a
    /// kubelet runs static pods (`berth node status`: what it runs).
    Node(berth_node::cli::NodeArgs),
    #[command(flatten)]
    Client(berth_cli::Command),
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Configuration file (default /etc/berth/config.toml; missing means defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Persistent state directory (default /var/lib/berth).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state directory (default /run/berth).
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI endpoint to serve (default unix:///run/berth/berth.sock).
    #[arg(long)]
    listen: Option<String>,
    /// Log level or tracing filter (error, warn, info, debug, trace).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<berth_config::LogFormat>,
}

fn daemon(a: DaemonArgs) -> ExitCode {
    let mut config = match berth_config::Config::load(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let overrides = berth_config::Overrides {
        root: a.root,
        state: a.state,
        listen: a.listen,
        log_level: a.log_level,
        log_format: a.log_format,
    };
    if let Err(e) = config.apply(overrides) {
        return fail(&e);
    }
    berth_server::daemon::init_logging(&config.log_level, config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match rt.block_on(berth_server::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

fn node(a: berth_node::cli::NodeArgs, global: &berth_cli::Global) -> ExitCode {
    if a.command.is_none() {
        berth_server::daemon::init_logging("info", berth_config::LogFormat::Text);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let run = berth_node::cli::run(
        a,
        &global.runtime_endpoint,
        global.image_endpoint.as_deref(),
    );
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth node: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("berth: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // A pod's monitor lives as long as the pod: start it before clap builds
    // the whole command tree, whose heap and stack every monitor would keep.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|a| a == berth_monitor::pause::ARGV0)
    {
        // A pod's init, executed by its monitor (never by hand).
        berth_monitor::pause::run(&argv[1..]);
    }
    let mut args = argv.into_iter().skip(1);
    if let (Some(verb), Some(pod_dir), None) = (args.next(), args.next(), args.next()) {
        if verb == "monitor" {
            return berth_monitor::run(std::path::Path::new(&pod_dir));
        }
    }
    commands()
}

/// Everything but the monitor. Not inlined into `main`: the daemon's and
/// the client's futures make this frame tens of kB, and stack probes touch
/// all of it, which every monitor would otherwise carry under its own.
#[inline(never)]
fn commands() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Daemon(a) => daemon(a),
        Command::Node(a) => node(a, &cli.global),
        // Before any runtime exists: the monitor must stay single-threaded.
        Command::Monitor { pod_dir } => berth_monitor::run(&pod_dir),
        Command::Client(cmd) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&e),
            };
            let outcome = rt.block_on(berth_cli::run(&cli.global, cmd));
            // A read of stdin may still block a thread of the runtime
            // (`exec -i`, `attach`): do not wait for it.
            rt.shutdown_background();
            match outcome {
                Ok(berth_cli::Outcome::Success) => ExitCode::SUCCESS,
                Ok(berth_cli::Outcome::Exit(code)) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => fail(&e),
            }
        }
    }
}
