//! Exec probes and hooks through CRI `ExecSync`.
//!
//! The call goes through the [`ExecSync`] trait so that the mapping of
//! answers to outcomes can be tested without a runtime.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::EnvVar;

use crate::{gofmt, Outcome};

/// The most output of an exec probe that is kept (the kubelet's 10 KiB).
pub const MAX_EXEC_OUTPUT: usize = 10 << 10;

/// The kubelet's default `--runtime-request-timeout`, used when the
/// client's own per-call deadline cannot be read.
pub const DEFAULT_RUNTIME_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Something that runs a command in a container as CRI `ExecSync` does.
pub trait ExecSync: Send + Sync {
    /// Runs `cmd` in container `container_id`. `timeout` is the CRI
    /// request's `timeout` (whole seconds; zero: none) and also bounds the
    /// call, with the runtime request timeout on top, as the kubelet does;
    /// with a zero `timeout` the call has no deadline at all.
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<cri::ExecSyncResponse, tonic::Status>> + Send;
}

/// The per-call deadline the client puts on its requests (its
/// `--runtime-request-timeout`), read back from the `grpc-timeout` header
/// that [`berth_cri_client::Client::request`] sets.
fn runtime_request_timeout(client: &berth_cri_client::Client) -> Duration {
    let probe = client.request(());
    probe
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_RUNTIME_REQUEST_TIMEOUT)
}

/// Parses a gRPC `grpc-timeout` header value (`120S`, `500m`, `3000000u`).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

impl ExecSync for berth_cri_client::Client {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<cri::ExecSyncResponse, tonic::Status>> + Send {
        let msg = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        let deadline = (!timeout.is_zero()).then(|| runtime_request_timeout(self) + timeout);
        let mut runtime = self.runtime.clone();
        async move {
            let mut req = tonic::Request::new(msg);
            let Some(deadline) = deadline else {
                return runtime
                    .exec_sync(req)
                    .await
                    .map(tonic::Response::into_inner);
            };
            req.set_timeout(deadline);
            let start = tokio::time::Instant::now();
            match tokio::time::timeout(deadline, runtime.exec_sync(req)).await {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                // tonic reports its own expiry of the grpc-timeout as a
                // cancellation: it is the deadline.
                Ok(Err(s))
                    if s.code() == tonic::Code::Cancelled
                        && start.elapsed() + Duration::from_millis(20) >= deadline =>
                {
                    Err(tonic::Status::deadline_exceeded(s.message().to_string()))
                }
                Ok(Err(s)) => Err(s),
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {}",
                    gofmt::duration(deadline)
                ))),
            }
        }
    }
}

/// Expands `$(VAR)` references in an exec probe's command as the kubelet
/// does: from the container spec's literal `env` values only (no
/// `valueFrom`, no `envFrom`; a `valueFrom` variable expands to ""),
/// unknown references left as written, `$$` an escaped `$`.
pub fn expand_static(command: &[String], env: &[EnvVar]) -> Vec<String> {
    let vars: HashMap<&str, &str> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    command.iter().map(|c| expand(c, &vars)).collect()
}

/// Expands one string with the Kubernetes `$(VAR)` syntax.
fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.is_empty() {
            // A trailing `$` is kept.
            out.push('$');
            rest = after;
            break;
        }
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    // An unclosed reference stays as written.
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Stdout then stderr, as the kubelet joins an exec's output (it does not
/// interleave them).
fn combined(resp: &cri::ExecSyncResponse) -> Vec<u8> {
    let mut data = resp.stdout.clone();
    data.extend_from_slice(&resp.stderr);
    data
}

/// Runs an exec probe: `cmd` with the probe's timeout.
pub async fn probe(
    runner: &impl ExecSync,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> Outcome {
    map_probe(
        runner.exec_sync(container_id, cmd, timeout).await,
        cmd,
        timeout,
    )
}

/// The outcome of an exec probe from the `ExecSync` answer: exit 0 is
/// success, another exit is a failure with the output as its message, a
/// deadline is a failure "command timed out", any other error is unknown
/// (the kubelet retries and then ignores it).
pub fn map_probe(
    answer: Result<cri::ExecSyncResponse, tonic::Status>,
    cmd: &[String],
    timeout: Duration,
) -> Outcome {
    match answer {
        Ok(resp) => {
            let mut data = combined(&resp);
            data.truncate(MAX_EXEC_OUTPUT);
            let output = String::from_utf8_lossy(&data).into_owned();
            if resp.exit_code == 0 {
                Outcome::Success
            } else {
                Outcome::Failure(output)
            }
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Outcome::Failure(format!(
            "command timed out: {} timed out after {}",
            gofmt::quote(&cmd.join(" ")),
            gofmt::duration(timeout)
        )),
        Err(s) => Outcome::Unknown(gofmt::status(&s)),
    }
}

/// The error of an exec hook from the `ExecSync` answer, in the kubelet's
/// words (`Exec lifecycle hook ([cmd]) for Container "c" in Pod "p" failed
/// - error: ..., message: "..."`); `None` if the command exited 0.
pub fn map_hook(
    answer: Result<cri::ExecSyncResponse, tonic::Status>,
    cmd: &[String],
    container: &str,
    pod: &str,
) -> Option<String> {
    let (error, output) = match answer {
        Ok(resp) if resp.exit_code == 0 => return None,
        Ok(resp) => (
            format!(
                "command '{}' exited with {}: {}",
                cmd.join(" "),
                resp.exit_code,
                String::from_utf8_lossy(&resp.stderr)
            ),
            combined(&resp),
        ),
        // A hook's exec has no timeout (zero), which the kubelet's
        // message shows as it is.
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => (
            format!(
                "command timed out: {} timed out after 0s",
                gofmt::quote(&cmd.join(" "))
            ),
            Vec::new(),
        ),
        Err(s) => (gofmt::status(&s), Vec::new()),
    };
    Some(format!(
        "Exec lifecycle hook ({}) for Container {} in Pod {} failed - error: {}, message: {}",
        gofmt::list(cmd),
        gofmt::quote(container),
        gofmt::quote(pod),
        error,
        gofmt::quote_bytes(&output)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, value: Option<&str>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expansion_uses_static_env_only() {
        let envs = [env("A", Some("1")), env("FROM", None)];
        let got = expand_static(
            &strings(&[
                "echo $(A)",
                "$(FROM)x",
                "$(MISSING)",
                "$$(A)",
                "a$",
                "$(open",
                "$x",
            ]),
            &envs,
        );
        assert_eq!(
            got,
            strings(&["echo 1", "x", "$(MISSING)", "$(A)", "a$", "$(open", "$x"])
        );
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("120S"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("5q"), None);
    }

    fn resp(code: i32, out: &[u8], err: &[u8]) -> Result<cri::ExecSyncResponse, tonic::Status> {
        Ok(cri::ExecSyncResponse {
            stdout: out.to_vec(),
            stderr: err.to_vec(),
            exit_code: code,
        })
    }

    #[test]
    fn probe_answers_map_as_the_kubelet_maps_them() {
        let cmd = strings(&["cat", "/tmp/healthy"]);
        let t = Duration::from_secs(1);
        assert_eq!(map_probe(resp(0, b"fine", b""), &cmd, t), Outcome::Success);
        assert_eq!(
            map_probe(resp(1, b"out ", b"no such file"), &cmd, t),
            Outcome::Failure("out no such file".into())
        );
        assert_eq!(
            map_probe(Err(tonic::Status::deadline_exceeded("x")), &cmd, t),
            Outcome::Failure("command timed out: \"cat /tmp/healthy\" timed out after 1s".into())
        );
        assert_eq!(
            map_probe(Err(tonic::Status::not_found("container gone")), &cmd, t),
            Outcome::Unknown("rpc error: code = NotFound desc = container gone".into())
        );
        let big = vec![b'a'; MAX_EXEC_OUTPUT + 100];
        match map_probe(resp(2, &big, b""), &cmd, t) {
            Outcome::Failure(m) => assert_eq!(m.len(), MAX_EXEC_OUTPUT),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hook_messages_read_as_the_kubelet_writes_them() {
        let cmd = strings(&["sh", "-c", "exit 3"]);
        assert_eq!(map_hook(resp(0, b"", b""), &cmd, "web", "p_ns(u)"), None);
        assert_eq!(
            map_hook(resp(3, b"out\n", b"bad"), &cmd, "web", "p_ns(u)").as_deref(),
            Some(
                "Exec lifecycle hook ([sh -c exit 3]) for Container \"web\" in Pod \"p_ns(u)\" \
                 failed - error: command 'sh -c exit 3' exited with 3: bad, message: \"out\\nbad\""
            )
        );
        assert_eq!(
            map_hook(Err(tonic::Status::unknown("boom")), &cmd, "web", "p").as_deref(),
            Some(
                "Exec lifecycle hook ([sh -c exit 3]) for Container \"web\" in Pod \"p\" \
                 failed - error: rpc error: code = Unknown desc = boom, message: \"\""
            )
        );
    }
}
