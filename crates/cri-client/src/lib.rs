//! A CRI v1 client with the kubelet's connection rules, for any runtime
//! (Berth, containerd, CRI-O):
//!
//! - endpoints are `unix:///absolute/path` (or a bare absolute path), with
//!   an optional separate image endpoint;
//! - every call but a pull gets the per-call deadline ([`Client::call`]);
//!   a pull is bounded by the runtime's own progress deadline instead, as
//!   the kubelet leaves it ([`Client::pull`]);
//! - messages up to 16 MiB both ways, the kubelet's limit;
//! - at connect, `Version` must answer on `runtime.v1.RuntimeService`: a
//!   runtime that speaks only an older API (v1alpha2) is a clear error, not
//!   a later UNIMPLEMENTED;
//! - a runtime that is starting (no socket yet, connection refused) is
//!   waited for, up to [`Options::start_wait`].

use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The largest message sent or received: the kubelet's limit.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a connection or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {0:?} is not unix:///absolute/path")]
    InvalidEndpoint(String),
    #[error("cannot connect to {endpoint}: {detail} (is the runtime running?)")]
    Unreachable { endpoint: String, detail: String },
    #[error(
        "{endpoint} does not serve the CRI runtime.v1 API ({detail}); \
         it may speak only an older version such as v1alpha2"
    )]
    NotRuntimeV1 { endpoint: String, detail: String },
    #[error("{method}: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        method: &'static str,
        status: tonic::Status,
    },
}

impl ClientError {
    /// The gRPC status of a failed call, if that is what failed.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// How the client connects and calls.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long one attempt to connect may take.
    pub connect_timeout: Duration,
    /// The deadline of every call but pulls (the kubelet's
    /// `--runtime-request-timeout`, 2 minutes by default).
    pub call_timeout: Duration,
    /// How long to keep trying while the socket is missing or refuses
    /// connections (a runtime that is starting); zero: one attempt.
    pub start_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(120),
            start_wait: Duration::ZERO,
        }
    }
}

/// The socket path of an endpoint.
pub fn socket_path(endpoint: &str) -> Result<&str, ClientError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') && !path.contains('\0') {
        Ok(path)
    } else {
        Err(ClientError::InvalidEndpoint(endpoint.to_string()))
    }
}

/// Whether a failed connection may succeed once the runtime has started.
fn starting(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// A gRPC channel to `endpoint`, waiting up to `options.start_wait` for a
/// runtime that is starting.
pub async fn channel(endpoint: &str, options: &Options) -> Result<Channel, ClientError> {
    let path = socket_path(endpoint)?.to_string();
    let deadline = tokio::time::Instant::now() + options.start_wait;
    let mut pause = Duration::from_millis(50);
    loop {
        // The socket is dialled first, so that a runtime still starting is
        // told apart from one that fails otherwise.
        match tokio::net::UnixStream::connect(&path).await {
            Err(e) if starting(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!(endpoint, error = %e, "waiting for the runtime to start");
                tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(e) => {
                return Err(ClientError::Unreachable {
                    endpoint: endpoint.to_string(),
                    detail: e.to_string(),
                })
            }
            Ok(probe) => drop(probe),
        }
        // The URI is a placeholder: the connector dials the socket. Its
        // authority, `localhost`, is what the kubelet and crictl send.
        let p = path.clone();
        let connected = Endpoint::from_static("http://localhost")
            .connect_timeout(options.connect_timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await;
        return connected.map_err(|e| ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            detail: error_chain(&e),
        });
    }
}

/// An error with its sources, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.ends_with(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// A runtime client and an image client, checked to speak runtime.v1.
#[derive(Clone)]
pub struct Client {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    /// The runtime endpoint's channel (for other services on its socket).
    pub channel: Channel,
    /// What `Version` answered at connect.
    pub version: cri::VersionResponse,
    call_timeout: Duration,
}

impl Client {
    /// Connects to the runtime (and to a separate image endpoint, if
    /// given) and checks that it serves runtime.v1.
    pub async fn connect(
        runtime_endpoint: &str,
        image_endpoint: Option<&str>,
        options: &Options,
    ) -> Result<Client, ClientError> {
        let channel = self::channel(runtime_endpoint, options).await?;
        let mut runtime = RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let image_channel = match image_endpoint {
            Some(ep) if ep != runtime_endpoint => self::channel(ep, options).await?,
            _ => channel.clone(),
        };
        let image = ImageServiceClient::new(image_channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut req = tonic::Request::new(cri::VersionRequest {
            version: "v1".into(),
        });
        req.set_timeout(options.call_timeout);
        let version = match runtime.version(req).await {
            Ok(v) => v.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Err(ClientError::NotRuntimeV1 {
                    endpoint: runtime_endpoint.to_string(),
                    detail: s.message().to_string(),
                })
            }
            Err(status) => {
                return Err(ClientError::Rpc {
                    method: "Version",
                    status,
                })
            }
        };
        Ok(Client {
            runtime,
            image,
            channel,
            version,
            call_timeout: options.call_timeout,
        })
    }

    /// `msg` as a request with the per-call deadline.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.call_timeout);
        r
    }

    /// Awaits one call within the per-call deadline (the server is told
    /// it too, through [`Client::request`]), naming it in its error.
    pub async fn call<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        let start = tokio::time::Instant::now();
        let expired = |status: tonic::Status| {
            // A server on tonic cancels the call at the deadline it was
            // sent rather than saying it expired.
            if status.code() == tonic::Code::Cancelled
                && start.elapsed() + Duration::from_millis(20) >= self.call_timeout
            {
                tonic::Status::deadline_exceeded(format!(
                    "no answer within {:?} (the runtime cancelled the call)",
                    self.call_timeout
                ))
            } else {
                status
            }
        };
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(answer) => {
                answer
                    .map(tonic::Response::into_inner)
                    .map_err(|status| ClientError::Rpc {
                        method,
                        status: expired(status),
                    })
            }
            Err(_) => Err(ClientError::Rpc {
                method,
                status: tonic::Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.call_timeout
                )),
            }),
        }
    }

    /// PullImage, without the per-call deadline: a pull takes as long as
    /// it makes progress, which the runtime bounds.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String, ClientError> {
        let mut c = self.image.clone();
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            auth,
            sandbox_config,
        };
        c.pull_image(req)
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|status| ClientError::Rpc {
                method: "PullImage",
                status,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///run/x.sock").unwrap(), "/run/x.sock");
        assert_eq!(socket_path("/run/x.sock").unwrap(), "/run/x.sock");
        for bad in ["unix://run/x.sock", "tcp://1.2.3.4:5", "", "x.sock"] {
            assert!(matches!(
                socket_path(bad),
                Err(ClientError::InvalidEndpoint(_))
            ));
        }
    }

    #[test]
    fn error_chains_skip_repeats() {
        let inner = std::io::Error::other("refused");
        assert_eq!(error_chain(&inner), "refused");
    }
}
