//! The verbs that stream: `exec -i/-t`, `attach` and `port-forward`. Each
//! asks the runtime for a URL (Exec, Attach, PortForward) and speaks to
//! its streaming server ([`crate::stream`]).

use std::os::fd::AsFd;

use berth_cri::runtime::v1 as cri;
use clap::Args;
use tokio::sync::mpsc;

use crate::connect::Clients;
use crate::stream::{self, Io};
use crate::{ids, req, rpc, CliError, Global};

/// The local terminal in raw mode while it lives (restored when dropped).
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal, CliError> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd())
            .map_err(|e| CliError::Usage(format!("-t needs a terminal on stdin: {e}")))?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, &raw)
            .map_err(|e| CliError::Usage(format!("putting the terminal in raw mode: {e}")))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin().as_fd(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The terminal's size now, and again on every SIGWINCH.
fn window_sizes() -> mpsc::UnboundedReceiver<(u16, u16)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let size = || {
        rustix::termios::tcgetwinsize(std::io::stdout().as_fd())
            .ok()
            .map(|w| (w.ws_col, w.ws_row))
    };
    if let Some(s) = size() {
        let _ = tx.send(s);
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(s) = size() {
                if tx.send(s).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Streams a remote command with this process's stdio.
async fn run_remote(url: &str, stdin: bool, tty: bool) -> Result<Option<i32>, CliError> {
    let raw = tty.then(RawTerminal::enter).transpose()?;
    let io = Io {
        stdin: stdin.then(|| Box::new(tokio::io::stdin()) as _),
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        resize: tty.then(window_sizes),
    };
    let r = stream::remote_command(url, io).await;
    drop(raw);
    r.map_err(|e| CliError::Stream(e.to_string()))
}

/// `exec -i/-t`: through Exec's streaming URL; the command's exit code.
pub async fn exec(
    c: &mut Clients,
    g: &Global,
    id: String,
    cmd: Vec<String>,
    stdin: bool,
    tty: bool,
) -> Result<i32, CliError> {
    let url = c
        .runtime
        .exec(req(
            cri::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            },
            g,
        ))
        .await
        .map_err(rpc("Exec"))?
        .into_inner()
        .url;
    Ok(run_remote(&url, stdin, tty).await?.unwrap_or(0))
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Send this terminal's input to the container's stdin.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The container has a terminal (created with tty).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The container (id or unique prefix).
    pub container: String,
}

/// `attach`: the container's output (and input with `-i`) until it exits
/// or this side ends.
pub async fn attach(c: &mut Clients, g: &Global, a: AttachArgs) -> Result<i32, CliError> {
    let id = ids::container(c, g, &a.container).await?;
    let url = c
        .runtime
        .attach(req(
            cri::AttachRequest {
                container_id: id,
                stdin: a.stdin,
                tty: a.tty,
                stdout: true,
                stderr: !a.tty,
            },
            g,
        ))
        .await
        .map_err(rpc("Attach"))?
        .into_inner()
        .url;
    Ok(run_remote(&url, a.stdin, a.tty).await?.unwrap_or(0))
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Listen on this address.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// The pod (id or unique prefix).
    pub pod: String,
    /// `[LOCAL:]REMOTE` ports (LOCAL 0: any free port).
    #[arg(required = true)]
    pub ports: Vec<String>,
}

fn parse_mapping(m: &str) -> Result<(u16, u16), CliError> {
    let bad = || CliError::Usage(format!("{m:?} is not [LOCAL:]REMOTE"));
    let (local, remote) = match m.split_once(':') {
        Some((l, r)) => (l.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?),
        None => {
            let p = m.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(bad());
    }
    Ok((local, remote))
}

/// `port-forward`: every local connection to a mapped port goes to the
/// pod's port, until interrupted.
pub async fn port_forward(c: &mut Clients, g: &Global, a: PortForwardArgs) -> Result<(), CliError> {
    let pod = ids::pod(c, g, &a.pod).await?;
    let mut listeners = Vec::new();
    for m in &a.ports {
        let (local, remote) = parse_mapping(m)?;
        let l = tokio::net::TcpListener::bind((a.address, local))
            .await
            .map_err(|e| CliError::Usage(format!("listening on {}:{local}: {e}", a.address)))?;
        let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("Forwarding from {at} -> {remote}");
        listeners.push((l, remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (l, remote) in listeners {
        let mut rt = c.runtime.clone();
        let g = g.clone();
        let pod = pod.clone();
        tasks.spawn(async move {
            loop {
                let Ok((conn, _)) = l.accept().await else {
                    return;
                };
                let url = match rt
                    .port_forward(req(
                        cri::PortForwardRequest {
                            pod_sandbox_id: pod.clone(),
                            port: vec![i32::from(remote)],
                        },
                        &g,
                    ))
                    .await
                {
                    Ok(r) => r.into_inner().url,
                    Err(s) => {
                        eprintln!("PortForward: {}", s.message());
                        continue;
                    }
                };
                tokio::spawn(async move {
                    if let Err(e) = stream::forward(&url, remote, conn).await {
                        eprintln!("forwarding to port {remote}: {e}");
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings() {
        assert_eq!(parse_mapping("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_mapping("0:80").unwrap(), (0, 80));
        assert_eq!(parse_mapping("18080:8080").unwrap(), (18080, 8080));
        assert!(parse_mapping("80:0").is_err());
        assert!(parse_mapping("x:80").is_err());
        assert!(parse_mapping("70000").is_err());
    }
}
