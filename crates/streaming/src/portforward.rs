//! Port forwarding: a client's data stream joined to a TCP connection the
//! backend makes inside the pod's network namespace.
//!
//! Over SPDY (`portforward.k8s.io`) the client opens an error stream and a
//! data stream per connection, paired by their `requestid` header and
//! naming the port in `port`. Over WebSocket the ports are the CRI
//! request's: port `i` has data channel `2i` and error channel `2i + 1`,
//! and both start with the port number (two bytes, little-endian).
//!
//! Unlike the kubelet's forwarder, a client that closes its side half-closes
//! the connection to the pod (`shutdown(SHUT_WR)`), and the pod's answer is
//! still delivered in full.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

use crate::websocket::{self, Framing};
use crate::{Backend, PortForwardRequest, Reader, Shared, Writer};

/// What the error stream says when forwarding fails (the kubelet's words);
/// logged too.
pub fn error_message(port: u16, pod_id: &str, error: &str) -> String {
    tracing::info!(pod = pod_id, port, "port-forward failed: {error}");
    format!("error forwarding port {port} to pod {pod_id}, uid : {error}")
}

/// A connection to `port` in the pod.
pub async fn connect<B: Backend>(
    backend: &B,
    pod_id: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    backend.port_forward(pod_id, port).await
}

/// Copies both ways until the pod closes its side (the client's end of
/// its side is passed on as a half-close), then closes the client's.
pub async fn relay(
    conn: tokio::net::TcpStream,
    mut from_client: Reader,
    mut to_client: Writer,
) -> Result<(), String> {
    let (mut pod_r, mut pod_w) = conn.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut pod_w).await;
        let _ = pod_w.shutdown().await;
        // Keep waiting for the pod's answer.
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let r = tokio::io::copy(&mut pod_r, &mut to_client).await;
        let _ = to_client.shutdown().await;
        r
    };
    tokio::select! {
        r = downstream => match r {
            Ok(_) => Ok(()),
            // The client going away is not the pod's error.
            Err(e) if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => Ok(()),
            Err(e) => Err(format!("copying from the pod: {e}")),
        },
        _ = upstream => Ok(()),
    }
}

/// Serves a port-forward WebSocket: every port of the request at once.
pub(crate) async fn over_websocket<S, B>(
    ws: WebSocketStream<S>,
    framing: Framing,
    req: PortForwardRequest,
    shared: Arc<Shared<B>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let n = req.ports.len().min(127);
    let ports = &req.ports[..n];
    let data: Vec<u8> = (0..n as u8).map(|i| 2 * i).collect();
    let outbound: Vec<u8> = (0..n as u8).flat_map(|i| [2 * i, 2 * i + 1]).collect();
    let initial = ports
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let i = i as u8;
            [
                (2 * i, p.to_le_bytes().to_vec()),
                (2 * i + 1, p.to_le_bytes().to_vec()),
            ]
        })
        .collect();
    let mut mux = websocket::open(ws, framing, &data, &outbound, initial);
    // Dropped (the session idle for too long), every forward stops.
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let i = i as u8;
        let (Some(from), Some(to), Some(mut error)) = (
            mux.readers.remove(&(2 * i)),
            mux.writers.remove(&(2 * i)),
            mux.writers.remove(&(2 * i + 1)),
        ) else {
            continue;
        };
        let shared = shared.clone();
        let pod = req.pod_id.clone();
        forwards.spawn(async move {
            let done = match connect(&shared.backend, &pod, port).await {
                Ok(conn) => relay(conn, from, to).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                let _ = error
                    .write_all(error_message(port, &pod, &e).as_bytes())
                    .await;
            }
            let _ = error.shutdown().await;
        });
    }
    let all = async { while forwards.join_next().await.is_some() {} };
    tokio::select! {
        _ = all => mux.tasks.finish().await,
        // Forwards idle on both sides would wait for ever: dropped.
        _ = mux.gone => {}
    }
}
