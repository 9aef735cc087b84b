//! The node's local HTTP endpoint: `/pods` in the kubelet's shape (a
//! PodList with statuses), `/events`, `/status` (pods, manifest errors
//! and events together, for `berth node status`) and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::agent::Shared;

/// Serves the endpoint on `listener` until the task is dropped.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (conn, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "status endpoint: accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &shared)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "status endpoint connection");
            }
        });
    }
}

fn reply(status: u16, ctype: &str, body: Vec<u8>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn json(value: &impl serde::Serialize) -> hyper::Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(200, "application/json", body),
        Err(e) => reply(500, "text/plain", format!("{e}\n").into_bytes()),
    }
}

/// The `/status` document.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub pods: Vec<crate::agent::PodReport>,
    /// Manifest errors: "file: document n: field: reason".
    pub errors: Vec<String>,
    pub events: Vec<serde_json::Value>,
}

fn answer<B>(req: &hyper::Request<B>, shared: &Shared) -> hyper::Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", b"only GET is served here\n".to_vec());
    }
    match req.uri().path() {
        "/healthz" => reply(200, "text/plain", b"ok".to_vec()),
        "/pods" | "/pods/" => {
            let items: Vec<_> = shared
                .reports()
                .into_iter()
                .filter(|r| !r.terminating)
                .map(|r| r.pod)
                .collect();
            json(&serde_json::json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {},
                "items": items,
            }))
        }
        "/events" => json(&shared.manager.events.list()),
        "/status" => json(&serde_json::json!({
            "pods": shared.reports(),
            "errors": shared.errors().iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "events": shared.manager.events.list(),
        })),
        _ => reply(
            404,
            "text/plain",
            b"served here: /pods /events /status /healthz\n".to_vec(),
        ),
    }
}
