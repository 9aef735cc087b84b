//! The per-pod monitor: `berth monitor <pod dir>`, started by the daemon for
//! every pod and living as long as the pod, independently of the daemon.
//!
//! It holds the pod's namespaces (it lives in the pod's network, IPC and
//! UTS namespaces, and its child, the pod init, is PID 1 of the pod's PID
//! namespace), creates and starts the pod's containers (with youki's
//! libcontainer in-process, or an OCI runtime binary), reaps them, writes
//! their CRI logs and records their exits in state files the daemon reads.
//! The daemon talks to it through [`client`] over `<pod dir>/monitor.sock`
//! with the messages in [`protocol`].

pub mod client;
pub mod fdpass;
mod handler;
mod memory;
mod nsexec;
pub mod pause;
mod pod;
pub mod protocol;
pub mod pty;
mod server;
mod sigchld;

use std::io::Write;
use std::os::unix::net::UnixListener as StdListener;
use std::path::Path;
use std::process::ExitCode;

use protocol::{paths, PodSpec};

/// The monitor's `main`: sets the pod up, tells the daemon on stdout
/// (`ready [<pod init pid>]` or `error: …`), then serves until the pod is
/// shut down.
pub fn run(pod_dir: &Path) -> ExitCode {
    // Started as /proc/self/exe, the kernel names it "exe": top, pidstat
    // and perf should show what it is.
    let _ = nix::sys::prctl::set_name(c"berth-monitor");
    let mut stdout = std::io::stdout();
    match setup(pod_dir) {
        Ok((listener, runner, init)) => {
            let _ = match init {
                Some(pid) => writeln!(stdout, "ready {pid}"),
                None => writeln!(stdout, "ready"),
            };
            let _ = stdout.flush();
            if let Err(e) = detach_stdio(pod_dir) {
                eprintln!("berth monitor: {e}");
            }
            init_logging();
            // A monitor has a handful of fds: a small epoll batch (the
            // default 1024 events is a 12 kB buffer per monitor).
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_io_events_per_tick(64)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("berth monitor: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let local = tokio::task::LocalSet::new();
            // Give back what setup used: a monitor lives as long as its pod.
            memory::give_back();
            let served = local.block_on(&rt, async move {
                let listener = tokio::net::UnixListener::from_std(listener)?;
                server::serve(pod_dir.to_path_buf(), runner, init, listener).await
            });
            let _ = std::fs::remove_file(paths::socket(pod_dir));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth monitor: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            let _ = writeln!(stdout, "error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// libcontainer reports through tracing: its errors go to monitor.log (a
/// plain level filter: an `EnvFilter` costs every monitor ~100 kB of heap).
/// `BERTH_MONITOR_LOG=debug|trace|...` asks for more. No thread is started.
fn init_logging() {
    let level = std::env::var("BERTH_MONITOR_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::ERROR);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn setup(
    pod_dir: &Path,
) -> Result<(StdListener, handler::Runner, Option<nix::unistd::Pid>), String> {
    let spec_path = paths::pod_spec(pod_dir);
    let text =
        std::fs::read(&spec_path).map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let spec: PodSpec = serde_json::from_slice(&text)
        .map_err(|e| format!("parsing {}: {e}", spec_path.display()))?;
    std::fs::create_dir_all(paths::states(pod_dir))
        .map_err(|e| format!("creating {}: {e}", paths::states(pod_dir).display()))?;
    let socket = paths::socket(pod_dir);
    let _ = std::fs::remove_file(&socket);
    let dir =
        std::fs::File::open(pod_dir).map_err(|e| format!("opening {}: {e}", pod_dir.display()))?;
    let listener = StdListener::bind(paths::short(&dir, paths::SOCKET))
        .map_err(|e| format!("binding {}: {e}", socket.display()))?;
    drop(dir);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("socket: {e}"))?;
    let init = pod::setup(&spec).map_err(|e| e.to_string())?;
    Ok((listener, handler::Runner::new(&spec.handler, pod_dir), init))
}

/// Stdin and stdout become /dev/null (containers inherit nothing from the
/// daemon's pipe), stderr the pod's `monitor.log`.
fn detach_stdio(pod_dir: &Path) -> std::io::Result<()> {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(pod_dir.join("monitor.log"))?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&log)?;
    Ok(())
}
