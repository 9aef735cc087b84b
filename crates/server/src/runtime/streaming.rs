//! Exec, Attach and PortForward: checked here, then answered with a
//! single-use URL of the streaming server (`berth-streaming`), where the
//! client's upgraded connection does the work.

use berth_cri::runtime::v1 as cri;

use super::Runtime;
use crate::error::ServerError;

/// What exec and attach have in common to check.
fn stdio_wanted(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), ServerError> {
    if tty && stderr {
        return Err(ServerError::InvalidArgument(
            "tty and stderr cannot both be true (a terminal has one output)".into(),
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(ServerError::InvalidArgument(
            "one of stdin, stdout or stderr must be requested".into(),
        ));
    }
    Ok(())
}

fn container_id(id: &str) -> Result<(), ServerError> {
    if id.is_empty() {
        return Err(ServerError::InvalidArgument(
            "container_id is required".into(),
        ));
    }
    Ok(())
}

pub(super) async fn exec(
    rt: &Runtime,
    r: cri::ExecRequest,
) -> Result<cri::ExecResponse, ServerError> {
    container_id(&r.container_id)?;
    if r.cmd.is_empty() {
        return Err(ServerError::InvalidArgument("cmd is required".into()));
    }
    stdio_wanted(r.stdin, r.stdout, r.stderr, r.tty)?;
    let container_id = rt.rt.check_running(&r.container_id)?;
    let url = rt.streaming.exec_url(berth_streaming::ExecRequest {
        container_id,
        cmd: r.cmd,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })?;
    Ok(cri::ExecResponse { url })
}

pub(super) async fn attach(
    rt: &Runtime,
    r: cri::AttachRequest,
) -> Result<cri::AttachResponse, ServerError> {
    container_id(&r.container_id)?;
    stdio_wanted(r.stdin, r.stdout, r.stderr, r.tty)?;
    let container_id = rt.rt.check_running(&r.container_id)?;
    let url = rt.streaming.attach_url(berth_streaming::AttachRequest {
        container_id,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    })?;
    Ok(cri::AttachResponse { url })
}

pub(super) async fn port_forward(
    rt: &Runtime,
    r: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, ServerError> {
    if r.pod_sandbox_id.is_empty() {
        return Err(ServerError::InvalidArgument(
            "pod_sandbox_id is required".into(),
        ));
    }
    let ports =
        r.port
            .iter()
            .map(|&p| {
                u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    ServerError::InvalidArgument(format!("port {p} is not a TCP port"))
                })
            })
            .collect::<Result<Vec<u16>, _>>()?;
    let pod_id = rt.rt.ready_pod(&r.pod_sandbox_id)?.id;
    let url = rt
        .streaming
        .port_forward_url(berth_streaming::PortForwardRequest { pod_id, ports })?;
    Ok(cri::PortForwardResponse { url })
}
