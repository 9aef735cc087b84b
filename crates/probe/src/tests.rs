//! Probes and hooks against real servers on 127.0.0.1 and a fake runtime.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader,
    LifecycleHandler, Probe, SleepAction, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::*;

/// One recorded `ExecSync` call: container, command, timeout.
type Call = (String, Vec<String>, Duration);

/// A runtime that answers `ExecSync` from a script and records calls.
#[derive(Clone, Default)]
struct FakeExec {
    answers: Arc<Mutex<VecDeque<Result<cri::ExecSyncResponse, tonic::Status>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeExec {
    fn answer(&self, a: Result<cri::ExecSyncResponse, tonic::Status>) {
        self.answers.lock().unwrap().push_back(a);
    }
    fn exit(&self, code: i32, stdout: &str) {
        self.answer(Ok(cri::ExecSyncResponse {
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
            exit_code: code,
        }));
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ExecSync for FakeExec {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<cri::ExecSyncResponse, tonic::Status>> + Send
    {
        self.calls
            .lock()
            .unwrap()
            .push((container_id.to_string(), cmd.to_vec(), timeout));
        // An empty script: exit 0.
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(cri::ExecSyncResponse::default()));
        async move { answer }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn target(ip: Option<&str>) -> Target {
    Target {
        container_id: "c0ffee".into(),
        pod_ip: ip.map(|i| i.parse().unwrap()),
        container: Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 1,
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "FILE".into(),
                value: Some("/tmp/ok".into()),
                ..Default::default()
            }]),
            ..Default::default()
        },
    }
}

fn exec_probe(cmd: &[&str]) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(strings(cmd)),
        }),
        ..Default::default()
    }
}

fn http_probe(port: u16, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some(path.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---- exec -----------------------------------------------------------------

#[tokio::test]
async fn exec_probes_expand_static_env_and_pass_the_timeout() {
    let fake = FakeExec::default();
    fake.exit(1, "missing");
    let mut probe = exec_probe(&["cat", "$(FILE)"]);
    probe.timeout_seconds = Some(5);
    let got = run_probe_with(&fake, &probe, &target(Some("10.0.0.1"))).await;
    assert_eq!(got, Outcome::Failure("missing".into()));
    assert_eq!(
        fake.calls(),
        vec![(
            "c0ffee".to_string(),
            strings(&["cat", "/tmp/ok"]),
            Duration::from_secs(5)
        )]
    );
}

#[tokio::test]
async fn exec_hooks_run_without_timeout_or_expansion() {
    let fake = FakeExec::default();
    let hook = LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(strings(&["touch", "$(FILE)"])),
        }),
        ..Default::default()
    };
    let t = target(Some("10.0.0.1"));
    run_hook_with(&fake, &hook, &t, "p_ns(u)", Duration::MAX)
        .await
        .unwrap();
    assert_eq!(
        fake.calls(),
        vec![(
            "c0ffee".to_string(),
            strings(&["touch", "$(FILE)"]),
            Duration::ZERO
        )]
    );
    fake.answer(Ok(cri::ExecSyncResponse {
        stdout: b"o".to_vec(),
        stderr: b"e".to_vec(),
        exit_code: 2,
    }));
    let err = run_hook_with(&fake, &hook, &t, "p_ns(u)", Duration::MAX)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        HookError::Failed(
            "Exec lifecycle hook ([touch $(FILE)]) for Container \"web\" in Pod \"p_ns(u)\" \
             failed - error: command 'touch $(FILE)' exited with 2: e, message: \"oe\""
                .into()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn sleep_hooks_are_bounded_by_the_grace_left() {
    let fake = FakeExec::default();
    let hook = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 30 }),
        ..Default::default()
    };
    let t = target(Some("10.0.0.1"));
    let start = tokio::time::Instant::now();
    assert_eq!(
        run_hook_with(&fake, &hook, &t, "p", Duration::from_secs(5)).await,
        Err(HookError::Unfinished(Duration::from_secs(5)))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        HookError::Unfinished(Duration::from_secs(5)).to_string(),
        "the lifecycle hook did not finish within 5s"
    );
    assert_eq!(
        run_hook_with(&fake, &hook, &t, "p", Duration::from_secs(60)).await,
        Ok(())
    );
    assert_eq!(start.elapsed(), Duration::from_secs(35));
}

#[tokio::test]
async fn tcp_socket_hooks_and_empty_handlers_fail() {
    let fake = FakeExec::default();
    let t = target(Some("10.0.0.1"));
    let tcp = LifecycleHandler {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(80),
            host: None,
        }),
        ..Default::default()
    };
    let err = run_hook_with(&fake, &tcp, &t, "p", Duration::MAX)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Cannot run handler: invalid handler"),
        "{err}"
    );
    let none = LifecycleHandler::default();
    assert!(run_hook_with(&fake, &none, &t, "p", Duration::MAX)
        .await
        .is_err());
    // A probe with no action is an error the kubelet does not count.
    let p = Probe::default();
    assert!(matches!(
        run_probe_with(&fake, &p, &t).await,
        Outcome::Unknown(_)
    ));
}

// ---- HTTP -----------------------------------------------------------------

/// A small HTTP/1.1 server: serves the routes below, records each request
/// head.
struct Server {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let h = h.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, addr, h).await;
                            }
                        }
                        None => serve(stream, addr, h).await,
                    }
                });
            }
        });
        Server { addr, heads }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // A TLS hello to this plain server: answer as HTTP servers do.
        if buf.first() == Some(&0x16) {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    heads.lock().unwrap().push(head.clone());
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, extra, body) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), "fine".to_string()),
        "/fail" => (
            "500 Internal Server Error",
            String::new(),
            "broken: disk full".to_string(),
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ("200 OK", String::new(), String::new())
        }
        "/same" => ("302 Found", "Location: /ok\r\n".into(), String::new()),
        "/other" => (
            "302 Found",
            format!("Location: http://localhost:{}/ok\r\n", addr.port()),
            "go elsewhere".to_string(),
        ),
        "/loop" => ("302 Found", "Location: /loop\r\n".into(), String::new()),
        "/big" => ("503 Service Unavailable", String::new(), "x".repeat(50_000)),
        _ => ("404 Not Found", String::new(), String::new()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

#[tokio::test]
async fn http_probe_success_sends_the_kubelets_headers() {
    let srv = Server::start(None).await;
    let mut probe = http_probe(srv.port(), "/ok");
    if let Some(h) = probe.http_get.as_mut() {
        h.http_headers = Some(vec![
            HTTPHeader {
                name: "host".into(),
                value: "svc.example".into(),
            },
            HTTPHeader {
                name: "x-custom".into(),
                value: "1".into(),
            },
        ]);
    }
    let got = run_probe_with(&FakeExec::default(), &probe, &target(Some("127.0.0.1"))).await;
    assert_eq!(got, Outcome::Success);
    let head = srv.heads().pop().unwrap();
    assert!(head.starts_with("GET /ok HTTP/1.1\r\n"), "{head}");
    for want in [
        "Host: svc.example\r\n",
        "User-Agent: kube-probe/1.36\r\n",
        "Accept: */*\r\n",
        "X-Custom: 1\r\n",
        "Connection: close\r\n",
    ] {
        assert!(head.contains(want), "{want:?} missing from {head}");
    }
    assert!(
        !head.to_ascii_lowercase().contains("accept-encoding"),
        "{head}"
    );
}

#[tokio::test]
async fn http_probe_named_port_and_failure_status() {
    let srv = Server::start(None).await;
    let mut t = target(Some("127.0.0.1"));
    if let Some(p) = t.container.ports.as_mut() {
        p[0].container_port = i32::from(srv.port());
    }
    let mut probe = http_probe(0, "/fail");
    if let Some(h) = probe.http_get.as_mut() {
        h.port = IntOrString::String("http".into());
    }
    assert_eq!(
        run_probe_with(&FakeExec::default(), &probe, &t).await,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    // A large body is read up to the limit only.
    let probe = http_probe(srv.port(), "/big");
    assert_eq!(
        run_probe_with(&FakeExec::default(), &probe, &t).await,
        Outcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
}

#[tokio::test]
async fn http_probe_redirects() {
    let srv = Server::start(None).await;
    let t = target(Some("127.0.0.1"));
    let fake = FakeExec::default();
    // Same host: followed.
    assert_eq!(
        run_probe_with(&fake, &http_probe(srv.port(), "/same"), &t).await,
        Outcome::Success
    );
    assert!(srv.heads().iter().any(|h| h.starts_with("GET /ok ")));
    // Another host name: not followed, a warning with the body.
    assert_eq!(
        run_probe_with(&fake, &http_probe(srv.port(), "/other"), &t).await,
        Outcome::Warning("Probe terminated redirects, Response body: go elsewhere".into())
    );
    // Endless: a failure after 10.
    match run_probe_with(&fake, &http_probe(srv.port(), "/loop"), &t).await {
        Outcome::Failure(m) => assert!(m.ends_with(": stopped after 10 redirects"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn http_probe_timeout_and_refused() {
    let srv = Server::start(None).await;
    let t = target(Some("127.0.0.1"));
    let fake = FakeExec::default();
    let probe = http_probe(srv.port(), "/slow");
    let start = std::time::Instant::now();
    let got = run_probe_with(&fake, &probe, &t).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(
        got,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{}/slow\": context deadline exceeded \
             (Client.Timeout exceeded while awaiting headers)",
            srv.port()
        ))
    );
    let port = closed_port().await;
    assert_eq!(
        run_probe_with(&fake, &http_probe(port, "/x"), &t).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/x\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der())),
        )
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn https_probe_does_not_verify_certificates() {
    let srv = Server::start(Some(tls_acceptor())).await;
    let mut probe = http_probe(srv.port(), "/ok");
    if let Some(h) = probe.http_get.as_mut() {
        h.scheme = Some("HTTPS".into());
    }
    assert_eq!(
        run_probe_with(&FakeExec::default(), &probe, &target(Some("127.0.0.1"))).await,
        Outcome::Success
    );
}

fn http_hook(port: u16, path: &str, scheme: Option<&str>) -> LifecycleHandler {
    LifecycleHandler {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some(path.into()),
            scheme: scheme.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn http_hooks_succeed_on_any_answer_and_fail_without_one() {
    let srv = Server::start(None).await;
    let fake = FakeExec::default();
    let t = target(Some("127.0.0.1"));
    // A 500 is still an answer.
    run_hook_with(
        &fake,
        &http_hook(srv.port(), "/fail", None),
        &t,
        "p",
        Duration::MAX,
    )
    .await
    .unwrap();
    let head = srv.heads().pop().unwrap();
    assert!(
        head.contains("User-Agent: kube-lifecycle/1.36\r\n"),
        "{head}"
    );
    let port = closed_port().await;
    let err = run_hook_with(
        &fake,
        &http_hook(port, "/stop", None),
        &t,
        "p_ns(u)",
        Duration::MAX,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "HTTP lifecycle hook (/stop) for Container \"web\" in Pod \"p_ns(u)\" failed - error: \
             Get \"http://127.0.0.1:{port}/stop\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
    // Without a pod IP the kubelet cannot find where to send it.
    let err = run_hook_with(
        &fake,
        &http_hook(srv.port(), "/ok", None),
        &target(None),
        "p",
        Duration::MAX,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("failed to find networking container"),
        "{err}"
    );
}

#[tokio::test]
async fn https_probe_of_a_plain_server_says_so() {
    let srv = Server::start(None).await;
    let mut probe = http_probe(srv.port(), "/ok");
    if let Some(h) = probe.http_get.as_mut() {
        h.scheme = Some("HTTPS".into());
    }
    assert_eq!(
        run_probe_with(&FakeExec::default(), &probe, &target(Some("127.0.0.1"))).await,
        Outcome::Failure(format!(
            "Get \"https://127.0.0.1:{}/ok\": http: server gave HTTP response to HTTPS client",
            srv.port()
        ))
    );
}

#[tokio::test]
async fn https_hooks_fall_back_to_http() {
    let srv = Server::start(None).await;
    let t = target(Some("127.0.0.1"));
    run_hook_with(
        &FakeExec::default(),
        &http_hook(srv.port(), "/ok", Some("HTTPS")),
        &t,
        "p",
        Duration::MAX,
    )
    .await
    .unwrap();
    assert!(srv.heads().iter().any(|h| h.starts_with("GET /ok ")));
}

// ---- TCP and gRPC ---------------------------------------------------------

fn tcp_probe(port: u16) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn tcp_probes_connect_or_fail() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let t = target(Some("127.0.0.1"));
    let fake = FakeExec::default();
    assert_eq!(
        run_probe_with(&fake, &tcp_probe(port), &t).await,
        Outcome::Success
    );
    // No pod IP: the local host, as Go's dialer with an empty host.
    assert_eq!(
        run_probe_with(&fake, &tcp_probe(port), &target(None)).await,
        Outcome::Success
    );
    drop(l);
    assert_eq!(
        run_probe_with(&fake, &tcp_probe(port), &t).await,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
    // A named port that does not exist: an error, not a failure.
    let mut p = tcp_probe(port);
    if let Some(a) = p.tcp_socket.as_mut() {
        a.port = IntOrString::String("admin".into());
    }
    assert_eq!(
        run_probe_with(&fake, &p, &t).await,
        Outcome::Unknown("strconv.Atoi: parsing \"admin\": invalid syntax".into())
    );
}

fn grpc_probe(port: u16, service: Option<&str>) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: service.map(Into::into),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_health_probes() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("up", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down", tonic_health::ServingStatus::NotServing)
        .await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let t = target(Some("127.0.0.1"));
    let fake = FakeExec::default();
    assert_eq!(
        run_probe_with(&fake, &grpc_probe(port, Some("up")), &t).await,
        Outcome::Success
    );
    // The server as a whole is SERVING by default.
    assert_eq!(
        run_probe_with(&fake, &grpc_probe(port, None), &t).await,
        Outcome::Success
    );
    assert_eq!(
        run_probe_with(&fake, &grpc_probe(port, Some("down")), &t).await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    match run_probe_with(&fake, &grpc_probe(port, Some("nope")), &t).await {
        Outcome::Failure(m) => assert!(
            m.starts_with("error: health rpc probe failed: rpc error: code = NotFound desc = "),
            "{m}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn grpc_probe_of_a_closed_port_times_out() {
    let port = closed_port().await;
    let start = std::time::Instant::now();
    let got = run_probe_with(
        &FakeExec::default(),
        &grpc_probe(port, None),
        &target(Some("127.0.0.1")),
    )
    .await;
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        got,
        Outcome::Failure(format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: \
             context deadline exceeded"
        ))
    );
}

// ---- thresholds and workers -----------------------------------------------

fn thresholds(success: i32, failure: i32, delay: i32) -> Probe {
    Probe {
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        initial_delay_seconds: Some(delay),
        ..exec_probe(&["true"])
    }
}

fn fail() -> Outcome {
    Outcome::Failure("bad".into())
}

#[test]
fn readiness_counts_runs_in_a_row() {
    let mut m = Machine::new(Kind::Readiness, &thresholds(2, 3, 0));
    assert_eq!(m.published(), &(ProbeResult::Failure, None));
    // One success is below the threshold of two.
    assert!(!m.record(&Outcome::Success));
    assert!(m.record(&Outcome::Warning("redirect".into())));
    assert_eq!(m.published(), &(ProbeResult::Success, None));
    // Two failures keep it ready; a success in between resets the count.
    assert!(!m.record(&fail()));
    assert!(!m.record(&fail()));
    assert!(!m.record(&Outcome::Success));
    assert!(!m.record(&fail()));
    assert!(!m.record(&fail()));
    // Errors are not counted at all.
    assert!(!m.record(&Outcome::Unknown("rpc".into())));
    assert!(m.record(&fail()));
    assert_eq!(m.published(), &(ProbeResult::Failure, Some("bad".into())));
    // Readiness goes on probing after failing.
    assert!(!m.on_hold());
    assert!(m.due(Duration::ZERO, None));
}

#[test]
fn liveness_failure_is_published_once_and_holds() {
    let mut m = Machine::new(Kind::Liveness, &thresholds(1, 3, 0));
    assert_eq!(m.published().0, ProbeResult::Success);
    assert!(!m.record(&fail()));
    assert!(!m.record(&fail()));
    assert!(m.record(&fail()));
    assert!(m.on_hold());
    assert!(!m.due(Duration::from_secs(100), None));
}

#[test]
fn startup_gates_and_holds() {
    let startup = Machine::new(Kind::Startup, &thresholds(1, 2, 0));
    assert_eq!(startup.published().0, ProbeResult::Unknown);
    assert!(startup.due(Duration::ZERO, None));
    let mut s = startup.clone();
    assert!(s.record(&Outcome::Success));
    assert!(s.on_hold());
    let mut s = startup;
    assert!(!s.record(&fail()));
    assert!(s.record(&fail()));
    assert_eq!(s.published(), &(ProbeResult::Failure, Some("bad".into())));
    assert!(s.on_hold());

    let live = Machine::new(Kind::Liveness, &thresholds(1, 3, 10));
    // Not before the startup probe succeeded, nor before the delay.
    assert!(!live.due(Duration::from_secs(30), Some(ProbeResult::Unknown)));
    assert!(!live.due(Duration::from_secs(30), Some(ProbeResult::Failure)));
    assert!(!live.due(Duration::from_millis(9_999), Some(ProbeResult::Success)));
    assert!(live.due(Duration::from_secs(10), Some(ProbeResult::Success)));
    assert!(live.due(Duration::from_secs(10), None));
}

#[test]
fn pod_deletion_quiets_liveness_not_readiness() {
    let mut live = Machine::new(Kind::Liveness, &thresholds(1, 1, 0));
    assert!(live.record(&fail()));
    let mut live2 = Machine::new(Kind::Liveness, &thresholds(1, 1, 0));
    assert!(!live2.pod_terminating());
    assert!(live2.on_hold());
    assert!(live.pod_terminating());
    assert_eq!(live.published(), &(ProbeResult::Success, None));
    let mut ready = Machine::new(Kind::Readiness, &thresholds(1, 1, 0));
    assert!(!ready.pod_terminating());
    assert!(!ready.on_hold());
}

#[test]
fn events_are_worded_as_the_kubelets() {
    assert_eq!(ProbeEvent::of(Kind::Liveness, &Outcome::Success), None);
    assert_eq!(
        ProbeEvent::of(Kind::Liveness, &fail()).unwrap().message,
        "Liveness probe failed: bad"
    );
    let w = ProbeEvent::of(Kind::Readiness, &Outcome::Warning("w".into())).unwrap();
    assert_eq!(
        (w.reason, w.message.as_str()),
        ("ProbeWarning", "Readiness probe warning: w")
    );
    assert_eq!(
        ProbeEvent::of(Kind::Startup, &Outcome::Unknown("e".into()))
            .unwrap()
            .message,
        "Startup probe errored and resulted in unknown state: e"
    );
}

#[test]
fn defaults_fill_missing_settings() {
    let s = Settings::of(&Probe::default());
    assert_eq!(s.timeout, Duration::from_secs(1));
    assert_eq!(s.period, Duration::from_secs(10));
    assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
    assert_eq!(s.initial_delay_seconds, 0);
    assert_eq!(pod_desc("web", "default", "u-1"), "web_default(u-1)");
}

fn no_jitter() -> Options {
    Options {
        manager_start: tokio::time::Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(tokio::time::Instant::now),
    }
}

fn spawn(
    fake: &FakeExec,
    kind: Kind,
    probe: Probe,
    startup: Option<tokio::sync::watch::Receiver<ProbeResult>>,
) -> Worker {
    Worker::spawn_with(
        fake.clone(),
        kind,
        probe,
        target(Some("10.0.0.1")),
        SystemTime::now(),
        startup,
        no_jitter(),
    )
}

#[tokio::test(start_paused = true)]
async fn readiness_worker_probes_every_period() {
    let fake = FakeExec::default();
    let w = spawn(&fake, Kind::Readiness, thresholds(1, 1, 0), None);
    let mut rx = w.results();
    assert_eq!(rx.borrow().0, ProbeResult::Failure);
    // The first probe runs at once and succeeds.
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow(), (ProbeResult::Success, None));
    let t0 = tokio::time::Instant::now();
    fake.exit(1, "not yet");
    let mut events = w.events();
    rx.changed().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    assert_eq!(*rx.borrow(), (ProbeResult::Failure, Some("not yet".into())));
    assert_eq!(
        events.recv().await.unwrap().message,
        "Readiness probe failed: not yet"
    );
    assert_eq!(fake.calls().len(), 2);
    w.stop();
}

#[tokio::test(start_paused = true)]
async fn liveness_waits_for_startup_and_reports_once() {
    let fake = FakeExec::default();
    // Startup: a failure, then a success; then liveness: two failures.
    fake.exit(1, "starting");
    fake.exit(0, "");
    fake.exit(1, "dead");
    fake.exit(1, "dead");
    let startup = spawn(&fake, Kind::Startup, thresholds(1, 5, 0), None);
    let live = spawn(
        &fake,
        Kind::Liveness,
        thresholds(1, 2, 0),
        Some(startup.result_watch()),
    );
    let mut s = startup.results();
    // The startup probe fails once, then succeeds on the next period.
    s.changed().await.unwrap();
    assert_eq!(s.borrow().0, ProbeResult::Success);
    // Liveness now runs: two failures in a row make Failure, once.
    let mut l = live.results();
    l.changed().await.unwrap();
    assert_eq!(*l.borrow(), (ProbeResult::Failure, Some("dead".into())));
    let calls = fake.calls().len();
    tokio::time::sleep(Duration::from_secs(100)).await;
    // Nothing more: the worker holds until the container is replaced.
    assert_eq!(fake.calls().len(), calls);
}

#[tokio::test(start_paused = true)]
async fn readiness_runs_at_once_when_startup_succeeds() {
    let fake = FakeExec::default();
    let (tx, rx) = tokio::sync::watch::channel(ProbeResult::Unknown);
    let mut ready_probe = thresholds(1, 1, 0);
    ready_probe.period_seconds = Some(60);
    let w = spawn(&fake, Kind::Readiness, ready_probe, Some(rx));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.calls().is_empty());
    tx.send_replace(ProbeResult::Success);
    let mut r = w.results();
    r.changed().await.unwrap();
    assert_eq!(r.borrow().0, ProbeResult::Success);
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn initial_delay_skips_ticks_and_deletion_quiets_liveness() {
    let fake = FakeExec::default();
    let w = spawn(&fake, Kind::Liveness, thresholds(1, 1, 15), None);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Ticks at 0s and 10s were inside the delay.
    assert!(fake.calls().is_empty());
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.calls().len(), 1);
    fake.exit(1, "dead");
    w.pod_terminating();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(*w.results().borrow(), (ProbeResult::Success, None));
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_three_times_and_not_counted() {
    let fake = FakeExec::default();
    for _ in 0..3 {
        fake.answer(Err(tonic::Status::unavailable("runtime down")));
    }
    let w = spawn(&fake, Kind::Readiness, thresholds(1, 1, 0), None);
    let mut events = w.events();
    let e = events.recv().await.unwrap();
    assert_eq!(
        e.message,
        "Readiness probe errored and resulted in unknown state: \
         rpc error: code = Unavailable desc = runtime down"
    );
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(w.results().borrow().0, ProbeResult::Failure);
    let mut r = w.results();
    r.changed().await.unwrap();
    assert_eq!(r.borrow().0, ProbeResult::Success);
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_the_first_probe_after_a_fresh_start() {
    let fake = FakeExec::default();
    let w = Worker::spawn_with(
        fake.clone(),
        Kind::Readiness,
        thresholds(1, 1, 0),
        target(Some("10.0.0.1")),
        SystemTime::now(),
        None,
        Options {
            manager_start: tokio::time::Instant::now(),
        },
    );
    let t0 = tokio::time::Instant::now();
    let mut r = w.results();
    r.changed().await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(fake.calls().len(), 1);
}
