//! What the streaming server asks of the runtime: Exec, Attach and
//! PortForward once their URL is used. Exec and attach go through the pod's
//! monitor (the parent of every container process); port-forward connects
//! from inside the pod's network namespace, with no helper process.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use berth_monitor::client::{AttachSession, ExecStream};
use berth_monitor::protocol::{Request, Status};
use oci_spec::runtime::Spec;

use crate::error::{Error, Result};
use crate::sandbox::SandboxRecord;
use crate::Runtime;

/// How long connecting to a pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// The container must run for an exec or an attach (checked when the
    /// URL is asked for, and again when it is used).
    pub fn check_running(&self, id: &str) -> Result<String> {
        let rec = self.get_container(id)?;
        let state = self.container_state(&rec);
        if state.status != Status::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running ({:?})",
                rec.id, state.status
            )));
        }
        Ok(rec.id)
    }

    /// Starts `cmd` in a running container for a streaming exec, with a
    /// terminal (`tty`) or pipes; with `stdin` it reads what the caller
    /// writes. The process dies when the returned stream is dropped.
    pub async fn exec_stream(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecStream> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec: no command given".into()));
        }
        let (rec, pod) = self.container_and_live_pod(id)?;
        let spec_path = self.bundle(&rec.id).join("config.json");
        let spec = tokio::task::spawn_blocking(move || {
            Spec::load(&spec_path)
                .map_err(|e| Error::Internal(format!("reading {}: {e}", spec_path.display())))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let process = berth_oci::exec_process(&spec, cmd, tty);
        let process = serde_json::to_value(&process).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(pod
            .monitor(self)
            .exec_stream(&Request::ExecStream {
                id: rec.id.clone(),
                process,
                stdin,
            })
            .await?)
    }

    /// Attaches to a running container's stdio.
    pub async fn attach(
        &self,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<AttachSession> {
        let (rec, pod) = self.container_and_live_pod(id)?;
        Ok(pod
            .monitor(self)
            .attach(&Request::Attach {
                id: rec.id.clone(),
                stdin,
                stdout,
                stderr,
            })
            .await?)
    }

    /// A pod that is ready (its monitor alive): what port-forward needs.
    pub fn ready_pod(&self, pod_id: &str) -> Result<SandboxRecord> {
        let pod = self.get_pod(pod_id)?;
        if !pod.ready || !pod.monitor_alive() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        Ok(pod)
    }

    /// A TCP connection to `port` on the pod's loopback (IPv4, then IPv6),
    /// made from inside its network namespace.
    pub async fn port_forward(&self, pod_id: &str, port: u16) -> Result<tokio::net::TcpStream> {
        let netns = self.ready_pod(pod_id)?.netns;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: it enters the pod's network namespace and
        // ends, so no pool thread is ever left in a pod's namespace.
        std::thread::Builder::new()
            .name("berth-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_in(netns, port));
            })
            .map_err(|e| Error::Internal(format!("starting a thread: {e}")))?;
        let stream = rx
            .await
            .map_err(|_| Error::Internal("the port-forward thread died".into()))??;
        stream
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpStream::from_std(stream))
            .map_err(|e| Error::Internal(format!("port-forward socket: {e}")))
    }
}

/// Connects to `localhost:port` in `netns` (`None`: here).
fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<std::net::TcpStream> {
    if let Some(path) = &netns {
        let f = std::fs::File::open(path).map_err(crate::error::io("opening", path))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::Internal(format!(
                "entering the network namespace {}: {e}",
                path.display()
            ))
        })?;
    }
    let mut last = None;
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        match std::net::TcpStream::connect_timeout(&(ip, port).into(), CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::FailedPrecondition(format!(
        "connecting to localhost:{port} in the pod: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}
