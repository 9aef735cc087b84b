//! gRPC health probes (`grpc.health.v1.Health/Check`).

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::{gofmt, tcp, Outcome, KUBE_VERSION};

/// Runs a gRPC health probe of `service` ("" for the server as a whole)
/// at `host:port`, all within `timeout`: SERVING is success, anything
/// else a failure worded as the kubelet words it. As the kubelet's client
/// (which blocks until connected), a refused connection is retried with
/// gRPC's backoff until the timeout.
pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = gofmt::join_host_port(host, port);
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        Outcome::Failure(format!(
            "timeout: failed to connect service {} within {}: context deadline exceeded",
            gofmt::quote(&addr),
            gofmt::duration(timeout)
        ))
    };
    let endpoint = match Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(format!("kube-probe/{KUBE_VERSION}")))
    {
        Ok(e) => e,
        Err(e) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {}: {}",
                gofmt::quote(&addr),
                berth_cri_client::error_chain(&e)
            ))
        }
    };
    let channel = {
        // gRPC's reconnection backoff: 1s, growing 1.6 times, ±20% jitter.
        let mut backoff = Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, connect(&endpoint, host, port, deadline)).await
            {
                Ok(Ok(ch)) => break ch,
                Ok(Err(e)) => {
                    tracing::debug!(addr, error = %e, "gRPC probe connection failed; retrying");
                    let jitter = 0.8 + 0.4 * rand::random::<f64>();
                    let pause = backoff.mul_f64(jitter);
                    if Instant::now() + pause >= deadline {
                        tokio::time::sleep_until(deadline).await;
                        return timed_out();
                    }
                    tokio::time::sleep(pause).await;
                    backoff = backoff.mul_f64(1.6).min(Duration::from_secs(120));
                }
                Err(_) => return timed_out(),
            }
        }
    };
    let mut client = HealthClient::new(channel);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let rpc_timeout = || {
        Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            gofmt::duration(timeout)
        ))
    };
    let answer = match tokio::time::timeout_at(deadline, client.check(req)).await {
        Err(_) => return rpc_timeout(),
        Ok(a) => a,
    };
    match answer {
        Ok(resp) => {
            let status = resp.into_inner().status();
            if status == ServingStatus::Serving {
                Outcome::Success
            } else {
                Outcome::Failure(format!(
                    "service unhealthy (responded with {})",
                    gofmt::quote(status.as_str_name())
                ))
            }
        }
        Err(s) => match s.code() {
            tonic::Code::Unimplemented => Outcome::Failure(format!(
                "error: this server does not implement the grpc health protocol \
                 (grpc.health.v1.Health): {}",
                s.message()
            )),
            tonic::Code::DeadlineExceeded => rpc_timeout(),
            // tonic reports its own expiry of the deadline as a cancellation.
            tonic::Code::Cancelled if Instant::now() + Duration::from_millis(20) >= deadline => {
                rpc_timeout()
            }
            _ => Outcome::Failure(format!(
                "error: health rpc probe failed: {}",
                gofmt::status(&s)
            )),
        },
    }
}

/// One connection attempt (TCP and the HTTP/2 handshake).
async fn connect(
    endpoint: &Endpoint,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<Channel, tonic::transport::Error> {
    let host = host.to_string();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let host = host.clone();
            async move {
                let left = deadline.saturating_duration_since(Instant::now());
                tcp::dial(&host, port, left)
                    .await
                    .map(TokioIo::new)
                    .map_err(std::io::Error::other)
            }
        }))
        .await
}
