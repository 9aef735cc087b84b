//! The CRI streaming server: what answers the URLs that Exec, Attach and
//! PortForward return.
//!
//! The kubelet (or crictl) asks the runtime for a URL over gRPC; the runtime
//! keeps the request behind a single-use token ([`cache`]) and returns
//! `http://<address>/<exec|attach|portforward>/<token>`. The client (the
//! kubelet proxies kubectl's connection unchanged) then upgrades an HTTP/1.1
//! request on that URL to SPDY/3.1 or WebSocket ([`http`]) and speaks
//! Kubernetes' remote-command protocol ([`remotecommand`]) or port-forward
//! protocol ([`portforward`]) over it.
//!
//! The runtime itself is behind [`Backend`]: this crate knows nothing of
//! containers, only of processes with stdio and of TCP connections.

pub mod cache;
pub mod http;
pub mod portforward;
pub mod remotecommand;
mod spdy;
mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use cache::{Kind, Pending};

/// How long a client may take to open the streams a session needs.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the streaming server needs from the runtime.
pub trait Backend: Send + Sync + 'static {
    /// Runs a command in a container (an [`ExecRequest`] whose URL is being
    /// used).
    fn exec(&self, req: &ExecRequest) -> impl Future<Output = Result<Process, String>> + Send;

    /// Attaches to a container's stdio.
    fn attach(&self, req: &AttachRequest) -> impl Future<Output = Result<Process, String>> + Send;

    /// A connection to `port` on a pod's loopback, from inside its network
    /// namespace.
    fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, String>> + Send;
}

/// An exec's parameters, as the CRI gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attach's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A port-forward's parameters: the pod and, for WebSocket clients, the
/// ports (SPDY clients name a port per stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_id: String,
    pub ports: Vec<u16>,
}

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// How a process ended, for the client's error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code (an attach: the container did).
    Exited(i32),
    /// The session ended without an exit code (an attach the container
    /// outlives).
    Detached,
    /// The runtime failed.
    Failed(String),
}

/// A running process as the backend hands it over: its stdio (what was
/// asked for), a way to resize its terminal, and its end.
pub struct Process {
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    /// Sets the terminal's size (columns, rows).
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Resolves when the process has exited (or the attach ended).
    pub done: Pin<Box<dyn Future<Output = Outcome> + Send>>,
}

/// The streaming server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub address: SocketAddr,
    /// A stream with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<Tls>,
}

/// The streaming server's certificate.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// Why the server could not start, or a URL could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the streaming server to {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Cache(#[from] cache::CacheError),
    #[error("the streaming server's TLS certificate: {0}")]
    Tls(String),
}

/// A TLS acceptor for `tls`'s certificate chain and key.
fn acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Tls(format!("{}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(&tls.cert_file, &e))?;
    if certs.is_empty() {
        return Err(bad(&tls.cert_file, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| bad(&tls.key_file, &e))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The streaming server: its address, its pending requests and the backend.
pub struct Server<B> {
    shared: Arc<Shared<B>>,
}

pub(crate) struct Shared<B> {
    pub(crate) backend: B,
    pub(crate) cache: cache::Cache,
    pub(crate) base: String,
    pub(crate) idle_timeout: Duration,
}

impl<B> Clone for Server<B> {
    fn clone(&self) -> Self {
        Server {
            shared: self.shared.clone(),
        }
    }
}

impl<B: Backend> Server<B> {
    /// Binds the listener and serves in the background.
    pub async fn start(config: Config, backend: B) -> Result<Server<B>, Error> {
        let tls = config.tls.as_ref().map(acceptor).transpose()?;
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|source| Error::Bind {
                address: config.address,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| Error::Bind {
            address: config.address,
            source,
        })?;
        let shared = Arc::new(Shared {
            backend,
            cache: cache::Cache::new(),
            base: format!("{}://{bound}", if tls.is_some() { "https" } else { "http" }),
            idle_timeout: config.idle_timeout,
        });
        tracing::info!(address = %bound, "streaming server listening");
        tokio::spawn(http::serve(listener, tls, shared.clone()));
        Ok(Server { shared })
    }

    /// The URL of a new exec.
    pub fn exec_url(&self, req: ExecRequest) -> Result<String, Error> {
        self.url(Pending::Exec(req))
    }

    /// The URL of a new attach.
    pub fn attach_url(&self, req: AttachRequest) -> Result<String, Error> {
        self.url(Pending::Attach(req))
    }

    /// The URL of a new port-forward.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, Error> {
        self.url(Pending::PortForward(req))
    }

    fn url(&self, pending: Pending) -> Result<String, Error> {
        let kind = pending.kind();
        let token = self.shared.cache.insert(pending)?;
        Ok(format!("{}/{}/{token}", self.shared.base, kind.path()))
    }
}
