//! The daemon's own Prometheus metrics, served at `/metrics` on
//! `[metrics] address` (off by default) in the OpenMetrics text format:
//!
//! - `berth_cri_requests_total{method,code}` and
//!   `berth_cri_request_duration_seconds{method}`: every CRI call, as
//!   `instrument::call` finishes it;
//! - `berth_image_pulls_total{outcome}`, `berth_image_pull_duration_seconds`
//!   and `berth_image_pull_bytes_total` (layer bytes received);
//! - `berth_pods{state}`, `berth_containers{state}` and `berth_monitors`
//!   (live per-pod monitors): read from the runtime at each scrape.
//!
//! The figures are recorded whether or not the endpoint is served.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn call_histogram() -> Histogram {
    // 0.25 ms .. 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

fn pull_histogram() -> Histogram {
    // 50 ms .. ~14 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// Every figure the daemon keeps.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pulls: Family<OutcomeLabels, Counter>,
    pull_seconds: Histogram,
    pull_bytes: Counter,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    monitors: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "cri_requests",
            "CRI calls answered, by method and gRPC code",
            calls.clone(),
        );
        let call_seconds =
            Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                call_histogram,
            );
        registry.register(
            "cri_request_duration_seconds",
            "How long CRI calls took, by method",
            call_seconds.clone(),
        );
        let pulls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "image_pulls",
            "Image pulls finished, by outcome (ok or failed)",
            pulls.clone(),
        );
        let pull_seconds = pull_histogram();
        registry.register(
            "image_pull_duration_seconds",
            "How long image pulls took",
            pull_seconds.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Layer bytes received from registries",
            pull_bytes.clone(),
        );
        let pods = Family::<StateLabels, Gauge>::default();
        registry.register("pods", "Pod sandboxes, by state", pods.clone());
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register("containers", "Containers, by state", containers.clone());
        let monitors = Gauge::default();
        registry.register(
            "monitors",
            "Live per-pod monitor processes",
            monitors.clone(),
        );
        Metrics {
            registry,
            calls,
            call_seconds,
            pulls,
            pull_seconds,
            pull_bytes,
            pods,
            containers,
            monitors,
        }
    }

    /// A CRI call finished with `code` after `seconds`.
    pub fn call(&self, method: &'static str, code: tonic::Code, seconds: f64) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: format!("{code:?}"),
            })
            .inc();
        self.call_seconds
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }

    /// An image pull finished.
    pub fn pull(&self, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "failed" };
        self.pulls.get_or_create(&OutcomeLabels { outcome }).inc();
        self.pull_seconds.observe(seconds);
    }

    /// The figures read from the runtime, then the whole text.
    pub fn render(
        &self,
        runtime: &berth_runtime::Runtime,
        images: &berth_image::ImageService,
    ) -> String {
        let received = images.downloaded_bytes();
        let counted = self.pull_bytes.get();
        if received > counted {
            self.pull_bytes.inc_by(received - counted);
        }
        let pods = runtime.list_pods(&Default::default());
        let ready = pods.iter().filter(|p| p.ready).count() as i64;
        self.pods
            .get_or_create(&StateLabels { state: "ready" })
            .set(ready);
        self.pods
            .get_or_create(&StateLabels { state: "notready" })
            .set(pods.len() as i64 - ready);
        self.monitors
            .set(pods.iter().filter(|p| p.record.monitor_alive()).count() as i64);
        let containers = runtime.list_containers(&Default::default());
        for (state, status) in [
            ("created", berth_runtime::container::Status::Created),
            ("running", berth_runtime::container::Status::Running),
            ("exited", berth_runtime::container::Status::Exited),
        ] {
            let n = containers
                .iter()
                .filter(|c| c.state.status == status)
                .count();
            self.containers
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The daemon's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: berth_runtime::Runtime,
    images: berth_image::ImageService,
) {
    let shared = Arc::new((runtime, images));
    loop {
        let (conn, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &shared).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "metrics endpoint connection");
            }
        });
    }
}

async fn answer<B>(
    req: &hyper::Request<B>,
    shared: &Arc<(berth_runtime::Runtime, berth_image::ImageService)>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "only /metrics is served here\n".into());
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(405, "text/plain", "GET /metrics\n".into());
    }
    // The runtime's records and state files: off the async workers.
    let shared = shared.clone();
    let text = tokio::task::spawn_blocking(move || global().render(&shared.0, &shared.1)).await;
    match text {
        Ok(text) => reply(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(e) => reply(500, "text/plain", format!("rendering metrics: {e}\n")),
    }
}
