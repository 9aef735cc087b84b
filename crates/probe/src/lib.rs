//! Probes and lifecycle hooks, run as the kubelet (v1.36) runs them.
//!
//! - [`run_probe`]: one attempt of a liveness, readiness or startup probe
//!   (exec through CRI `ExecSync`, HTTP GET, TCP connect, gRPC health).
//! - [`run_hook`]: a postStart or preStop handler (exec, HTTP GET, sleep).
//! - [`Worker`]: the periodic prober of one probe of one container, with
//!   the kubelet's initial delay, period, thresholds, startup gating and
//!   first-run jitter. Its threshold logic is the pure [`Machine`].
//!
//! Messages (probe failures, hook errors, events) are worded as the
//! kubelet words them.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

pub mod exec;
pub mod gofmt;
pub mod grpc;
pub mod http;
pub mod port;
pub mod tcp;
mod worker;

pub use exec::ExecSync;
pub use worker::{set_manager_start, Kind, Machine, Options, ProbeEvent, ProbeResult, Worker};

/// The Kubernetes minor version the probes identify as (`kube-probe/1.36`).
pub const KUBE_VERSION: &str = "1.36";

/// Where a probe or hook runs: the container and its pod's address.
#[derive(Debug, Clone)]
pub struct Target {
    /// The runtime's ID of the container (for exec).
    pub container_id: String,
    /// The pod's IP as its status shows it; for a hostNetwork pod that is
    /// the node's IP, as the kubelet reports it. `None` (no IP yet): a
    /// probe then connects to the local host, as the kubelet's Go dialer
    /// does with an empty host; an HTTP hook fails, as the kubelet's does.
    pub pod_ip: Option<IpAddr>,
    /// The container's spec: its ports (for named probe ports) and its
    /// literal `env` values (for `$(VAR)` in exec probe commands).
    pub container: Container,
}

impl Target {
    /// The host probes connect to when the action names none.
    fn probe_host(&self) -> String {
        match self.pod_ip {
            Some(ip) => ip.to_string(),
            None => "127.0.0.1".to_string(),
        }
    }
}

/// What one probe attempt found, as the kubelet's `probe.Result` with its
/// output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The probe succeeded.
    Success,
    /// Success, with a message worth an event (an HTTP redirect that was
    /// not followed).
    Warning(String),
    /// The probe failed; the message is what the kubelet puts in its
    /// `Unhealthy` event.
    Failure(String),
    /// The probe could not be run (a port that does not resolve, a runtime
    /// error). The kubelet retries such a probe at once, up to three
    /// attempts, then counts it neither as success nor as failure.
    Unknown(String),
}

/// A probe's timing and thresholds, with the API's defaults for fields
/// left out or zero (timeout 1s, period 10s, thresholds 1 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Seconds after the container started before the probe may run.
    pub initial_delay_seconds: i64,
    /// The timeout of one attempt.
    pub timeout: Duration,
    /// Time between attempts.
    pub period: Duration,
    /// Successes in a row that make the result Success.
    pub success_threshold: u32,
    /// Failures in a row that make the result Failure.
    pub failure_threshold: u32,
}

impl Settings {
    /// The settings of `probe`, defaults filled in.
    pub fn of(probe: &Probe) -> Settings {
        let positive = |v: Option<i32>, default: u32| match v {
            Some(n) if n > 0 => n.unsigned_abs(),
            _ => default,
        };
        Settings {
            initial_delay_seconds: i64::from(probe.initial_delay_seconds.unwrap_or(0)),
            timeout: Duration::from_secs(u64::from(positive(probe.timeout_seconds, 1))),
            period: Duration::from_secs(u64::from(positive(probe.period_seconds, 10))),
            success_threshold: positive(probe.success_threshold, 1),
            failure_threshold: positive(probe.failure_threshold, 3),
        }
    }
}

/// The pod as the kubelet names it in messages: `name_namespace(uid)`.
pub fn pod_desc(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

/// Runs one probe attempt with the probe's timeout. Exec runs through CRI
/// `ExecSync` with `timeout = timeoutSeconds` (the call's deadline is the
/// client's per-call deadline on top, as the kubelet's); HTTP, TCP and
/// gRPC use a client timeout of `timeoutSeconds`.
pub async fn run_probe(
    client: &berth_cri_client::Client,
    probe: &Probe,
    target: &Target,
) -> Outcome {
    run_probe_with(client, probe, target).await
}

/// [`run_probe`] with any [`ExecSync`] for exec probes.
pub async fn run_probe_with(runner: &impl ExecSync, probe: &Probe, target: &Target) -> Outcome {
    let timeout = Settings::of(probe).timeout;
    let container = &target.container;
    if let Some(action) = &probe.exec {
        let command = action.command.as_deref().unwrap_or_default();
        let cmd = exec::expand_static(command, container.env.as_deref().unwrap_or_default());
        exec::probe(runner, &target.container_id, &cmd, timeout).await
    } else if let Some(action) = &probe.http_get {
        match http::Request::new(
            action,
            container,
            &target.probe_host(),
            http::Purpose::Probe,
        ) {
            Ok(req) => http::probe(&req, timeout).await,
            Err(e) => Outcome::Unknown(e),
        }
    } else if let Some(action) = &probe.tcp_socket {
        let port = match port::resolve(&action.port, container) {
            Ok(p) => p,
            Err(e) => return Outcome::Unknown(e),
        };
        let host = match action.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => target.probe_host(),
        };
        tcp::probe(&host, port, timeout).await
    } else if let Some(action) = &probe.grpc {
        let host = target.probe_host();
        let service = action.service.as_deref().unwrap_or("");
        match u16::try_from(action.port) {
            Ok(p) if p > 0 => grpc::probe(&host, p, service, timeout).await,
            _ => Outcome::Failure(format!(
                "error: failed to connect service at {}: invalid port {}",
                gofmt::quote(&format!("{host}:{}", action.port)),
                action.port
            )),
        }
    } else {
        Outcome::Unknown(format!(
            "missing probe handler for container {}",
            gofmt::quote(&container.name)
        ))
    }
}

/// Why a lifecycle hook did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The hook failed. The message is the kubelet's (for the container's
    /// status; the kubelet's event says only "PostStartHook failed" or
    /// "PreStopHook failed", so as not to leak secrets).
    #[error("{0}")]
    Failed(String),
    /// The hook was still running when the time allowed (`max`, the grace
    /// period left for a preStop hook) ran out; it was abandoned. The
    /// kubelet only logs this and goes on to stop the container.
    #[error("the lifecycle hook did not finish within {}", gofmt::duration(*.0))]
    Unfinished(Duration),
}

/// Runs a postStart or preStop handler, waiting at most `max` (the grace
/// period left, for a preStop hook; `Duration::MAX` for no bound, as the
/// kubelet has none for postStart).
///
/// As the kubelet: an exec hook runs through `ExecSync` with no timeout
/// and no `$(VAR)` expansion, and fails on a non-zero exit; an HTTP hook
/// fails only when no answer comes (any status is success), and an HTTPS
/// hook answered in plain HTTP is retried over HTTP; a sleep hook sleeps;
/// a tcpSocket hook (deprecated, accepted by the API) fails at run time.
/// `pod` names the pod in messages, as [`pod_desc`] writes it.
pub async fn run_hook(
    client: &berth_cri_client::Client,
    handler: &LifecycleHandler,
    target: &Target,
    pod: &str,
    max: Duration,
) -> Result<(), HookError> {
    run_hook_with(client, handler, target, pod, max).await
}

/// [`run_hook`] with any [`ExecSync`] for exec hooks.
pub async fn run_hook_with(
    runner: &impl ExecSync,
    handler: &LifecycleHandler,
    target: &Target,
    pod: &str,
    max: Duration,
) -> Result<(), HookError> {
    match tokio::time::timeout(max, hook(runner, handler, target, pod)).await {
        Ok(r) => r,
        Err(_) => Err(HookError::Unfinished(max)),
    }
}

async fn hook(
    runner: &impl ExecSync,
    handler: &LifecycleHandler,
    target: &Target,
    pod: &str,
) -> Result<(), HookError> {
    let name = &target.container.name;
    if let Some(action) = &handler.exec {
        let cmd = action.command.as_deref().unwrap_or_default();
        let answer = runner
            .exec_sync(&target.container_id, cmd, Duration::ZERO)
            .await;
        match exec::map_hook(answer, cmd, name, pod) {
            None => Ok(()),
            Some(msg) => Err(HookError::Failed(msg)),
        }
    } else if let Some(action) = &handler.http_get {
        let failed = |e: String| {
            HookError::Failed(format!(
                "HTTP lifecycle hook ({}) for Container {} in Pod {} failed - error: {e}",
                action.path.as_deref().unwrap_or(""),
                gofmt::quote(name),
                gofmt::quote(pod)
            ))
        };
        let host = match (action.host.as_deref(), target.pod_ip) {
            (Some(h), _) if !h.is_empty() => h.to_string(),
            (_, Some(ip)) => ip.to_string(),
            (_, None) => {
                return Err(failed(
                    "failed to find networking container: the pod has no IP address".into(),
                ))
            }
        };
        let req = http::Request::new(action, &target.container, &host, http::Purpose::Lifecycle)
            .map_err(failed)?;
        http::hook(&req).await.map_err(failed)
    } else if let Some(action) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(action.seconds.max(0).unsigned_abs())).await;
        Ok(())
    } else {
        let what = if handler.tcp_socket.is_some() {
            "tcpSocket is not supported as a lifecycle handler"
        } else {
            "it has no exec, httpGet or sleep action"
        };
        Err(HookError::Failed(format!(
            "Cannot run handler: invalid handler: {what}"
        )))
    }
}

#[cfg(test)]
mod tests;
