//! The HTTP/1.1 side: `GET|POST /<exec|attach|portforward>/<token>`, the
//! token taken from the cache, and the upgrade to SPDY/3.1
//! (`X-Stream-Protocol-Version` negotiated in the client's order) or
//! WebSocket (`Sec-WebSocket-Protocol`), answered as the kubelet's own
//! streaming server answers: 404 for an unknown, used or expired token,
//! 400 for a request that cannot be upgraded, 403 with the accepted
//! protocols when none is common.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::cache::{Kind, Pending};
use crate::remotecommand::Version;
use crate::websocket::Framing;
use crate::{Backend, Shared};

pub const STREAM_PROTOCOL: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS: &str = "x-accepted-stream-protocol-versions";
/// The SPDY port-forward protocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// SPDY port-forward tunnelled through a WebSocket (kubectl 1.31+, crictl
/// `--transport websocket`): binary messages carry the SPDY bytes.
pub const TUNNELED_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

type Body = Full<Bytes>;

pub(crate) async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<B>>,
) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("streaming server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(conn, peer, shared).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(conn)).await {
                        Ok(Ok(conn)) => serve_connection(conn, peer, shared).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection<IO, B>(conn: IO, peer: std::net::SocketAddr, shared: Arc<Shared<B>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, shared)) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, "streaming connection: {e}");
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn not_found() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

/// The values of a header that may be repeated and comma-separated.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn contains_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains(token))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && contains_token(headers, CONNECTION, "upgrade")
}

fn handle<B: Backend>(mut req: Request<Incoming>, shared: Arc<Shared<B>>) -> Response<Body> {
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let (Some(kind), Some(token), None) = (
        parts.next().and_then(Kind::from_path),
        parts.next(),
        parts.next(),
    ) else {
        return not_found();
    };
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405: Method Not Allowed\n".into(),
        );
    }
    let Some(pending) = shared.cache.take(kind, token) else {
        return not_found();
    };
    let upgrade = hyper::upgrade::on(&mut req);
    if is_websocket(req.headers()) {
        websocket(req.headers(), upgrade, pending, shared)
    } else {
        spdy(req.headers(), upgrade, pending, shared)
    }
}

/// The WebSocket protocols served for `kind`, with their framing.
fn websocket_protocol(kind: Kind, offered: &[String]) -> Option<(String, Version, Framing)> {
    let framing = |base64, close_signal| Framing {
        base64,
        close_signal,
    };
    let known = |p: &str| -> Option<(Version, Framing)> {
        match (kind, p) {
            (Kind::PortForward, TUNNELED_PORT_FORWARD) => {
                Some((Version::V4, framing(false, false)))
            }
            (Kind::PortForward, "v4.channel.k8s.io") => Some((Version::V4, framing(false, false))),
            (Kind::PortForward, "v4.base64.channel.k8s.io") => {
                Some((Version::V4, framing(true, false)))
            }
            (Kind::PortForward, _) => None,
            (_, "v5.channel.k8s.io") => Some((Version::V5, framing(false, true))),
            (_, "v4.channel.k8s.io") => Some((Version::V4, framing(false, false))),
            (_, "v4.base64.channel.k8s.io") => Some((Version::V4, framing(true, false))),
            (_, "channel.k8s.io") => Some((Version::V1, framing(false, false))),
            (_, "base64.channel.k8s.io") => Some((Version::V1, framing(true, false))),
            _ => None,
        }
    };
    if offered.is_empty() {
        return Some((String::new(), Version::V1, framing(false, false)));
    }
    offered
        .iter()
        .find_map(|p| known(p).map(|(v, f)| (p.clone(), v, f)))
}

fn websocket<B: Backend>(
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
    pending: Pending,
    shared: Arc<Shared<B>>,
) -> Response<Body> {
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let (true, Some(key)) = (version_ok, key) else {
        let mut r = plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: a WebSocket upgrade needs Sec-WebSocket-Version 13 and a \
             Sec-WebSocket-Key\n"
                .into(),
        );
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return r;
    };
    let offered = values(headers, "sec-websocket-protocol");
    let Some((protocol, version, framing)) = websocket_protocol(pending.kind(), &offered) else {
        return plain(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: no WebSocket protocol in common: the client offers \
                 {offered:?}\n"
            ),
        );
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", accept);
    }
    if !protocol.is_empty() {
        if let Ok(p) = HeaderValue::from_str(&protocol) {
            h.insert("sec-websocket-protocol", p);
        }
    }
    let idle = shared.idle_timeout;
    upgraded(upgrade, idle, "WebSocket", move |io| async move {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        if protocol == TUNNELED_PORT_FORWARD {
            let spdy = crate::websocket::tunnel(ws);
            crate::spdy::serve(spdy, pending, version, shared).await;
        } else {
            crate::websocket::session(ws, pending, version, framing, shared).await;
        }
    });
    r
}

fn spdy<B: Backend>(
    headers: &HeaderMap,
    upgrade: hyper::upgrade::OnUpgrade,
    pending: Pending,
    shared: Arc<Shared<B>>,
) -> Response<Body> {
    let offered = values(headers, STREAM_PROTOCOL);
    if headers.get(STREAM_PROTOCOL).is_none() {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to upgrade: header X-Stream-Protocol-Version does not exist in request \
                 with {} headers\n",
                headers.len()
            ),
        );
    }
    let served: Vec<&str> = match pending.kind() {
        Kind::PortForward => vec![PORT_FORWARD_PROTOCOL],
        _ => Version::SPDY.to_vec(),
    };
    let Some(chosen) = offered
        .iter()
        .find(|p| served.contains(&p.as_str()))
        .cloned()
    else {
        let mut r = plain(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
                 server accepts {served:?}\n"
            ),
        );
        for p in &served {
            r.headers_mut()
                .append(ACCEPTED_PROTOCOLS, HeaderValue::from_static(p));
        }
        return r;
    };
    if !contains_token(headers, CONNECTION, "upgrade")
        || !contains_token(headers, UPGRADE, "spdy/3.1")
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (Connection: Upgrade, \
             Upgrade: SPDY/3.1)\n"
                .into(),
        );
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        h.insert(STREAM_PROTOCOL, v);
    }
    let idle = shared.idle_timeout;
    let version = Version::of(&chosen).unwrap_or(Version::V1);
    upgraded(upgrade, idle, "SPDY", move |io| {
        crate::spdy::serve(io, pending, version, shared)
    });
    r
}

/// Once the connection is upgraded, serves it with `session` until that
/// ends or nothing has crossed the connection for `idle` (then the session
/// is dropped, which closes everything it holds).
fn upgraded<F, Fut>(
    upgrade: hyper::upgrade::OnUpgrade,
    idle: Duration,
    what: &'static str,
    session: F,
) where
    F: FnOnce(IdleIo<TokioIo<hyper::upgrade::Upgraded>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => IdleIo::new(TokioIo::new(u)),
            Err(e) => {
                tracing::debug!("{what} upgrade: {e}");
                return;
            }
        };
        let last = io.last.clone();
        until_idle(session(io), last, idle).await;
    });
}

async fn until_idle(session: impl Future<Output = ()>, last: Arc<AtomicU64>, idle: Duration) {
    let start = Instant::now();
    let watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(since);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        _ = session => {}
        _ = watch => tracing::info!("closing a stream idle for {idle:?}"),
    }
}

/// A connection that notes when bytes last crossed it (milliseconds since
/// it was made).
pub(crate) struct IdleIo<T> {
    inner: T,
    start: Instant,
    pub(crate) last: Arc<AtomicU64>,
}

impl<T> IdleIo<T> {
    fn new(inner: T) -> IdleIo<T> {
        IdleIo {
            inner,
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn websocket_protocols_in_the_clients_order() {
        let (p, v, f) = websocket_protocol(
            Kind::Exec,
            &offered(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
        )
        .unwrap();
        assert_eq!((p.as_str(), v), ("v5.channel.k8s.io", Version::V5));
        assert!(f.close_signal && !f.base64);
        let (p, v, f) = websocket_protocol(
            Kind::Attach,
            &offered(&["v9.channel.k8s.io", "v4.base64.channel.k8s.io"]),
        )
        .unwrap();
        assert_eq!((p.as_str(), v), ("v4.base64.channel.k8s.io", Version::V4));
        assert!(f.base64);
        let (p, v, _) = websocket_protocol(Kind::Exec, &[]).unwrap();
        assert_eq!((p.as_str(), v), ("", Version::V1));
        assert!(websocket_protocol(Kind::Exec, &offered(&["nonsense"])).is_none());
        assert!(websocket_protocol(Kind::PortForward, &offered(&["v5.channel.k8s.io"])).is_none());
        assert!(websocket_protocol(Kind::PortForward, &offered(&["v4.channel.k8s.io"])).is_some());
    }

    #[test]
    fn header_values_split_on_commas_and_repeat() {
        let mut h = HeaderMap::new();
        h.append(
            STREAM_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            STREAM_PROTOCOL,
            HeaderValue::from_static(" v3.channel.k8s.io , channel.k8s.io,"),
        );
        assert_eq!(
            values(&h, STREAM_PROTOCOL),
            ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
        );
    }
}
