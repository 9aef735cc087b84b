//! Connecting to a CRI endpoint over its unix socket.

use std::time::Duration;

use berth_cri::berth::v1::images_client::ImagesClient;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::CliError;

/// Berth's socket, the default endpoint.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/berth/berth.sock";

/// The clients of one endpoint.
#[derive(Clone)]
pub struct Clients {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    pub berth: ImagesClient<Channel>,
    pub endpoint: String,
}

/// Connects to `endpoint` (`unix:///path` or a bare path).
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Clients, CliError> {
    let path = endpoint
        .strip_prefix("unix://")
        .unwrap_or(endpoint)
        .to_string();
    if !path.starts_with('/') {
        return Err(CliError::Usage(format!(
            "endpoint {endpoint:?} must be unix:///absolute/path"
        )));
    }
    // The URI is only a placeholder: the connector below dials the socket.
    // Its authority, `localhost`, is what kubelet and crictl send too.
    let p = path.clone();
    let channel = Endpoint::try_from("http://localhost")
        .map_err(|e| CliError::Usage(e.to_string()))?
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(p).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| CliError::Connect {
            endpoint: endpoint.to_string(),
            detail: error_chain(&e),
        })?;
    const MAX: usize = 16 << 20;
    Ok(Clients {
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX),
        image: ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX),
        berth: ImagesClient::new(channel),
        endpoint: endpoint.to_string(),
    })
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
