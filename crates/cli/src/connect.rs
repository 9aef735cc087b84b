//! Connecting to a CRI endpoint, through `berth-cri-client` (its
//! runtime.v1 check included).

use std::time::Duration;

use berth_cri::berth::v1::images_client::ImagesClient;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_cri_client::{ClientError, Options, MAX_MESSAGE};
use tonic::transport::Channel;

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

fn options(timeout: Duration) -> Options {
    Options {
        connect_timeout: timeout,
        call_timeout: timeout,
        start_wait: Duration::ZERO,
    }
}

fn cli_error(e: ClientError) -> CliError {
    match e {
        ClientError::InvalidEndpoint(ep) => {
            CliError::Usage(format!("endpoint {ep:?} must be unix:///absolute/path"))
        }
        ClientError::Unreachable { endpoint, detail } => CliError::Connect { endpoint, detail },
        e @ ClientError::NotRuntimeV1 { .. } => CliError::Usage(e.to_string()),
        ClientError::Rpc { method, status } => CliError::Rpc {
            method,
            code: status.code(),
            message: status.message().to_string(),
        },
    }
}

/// Connects to the runtime at `endpoint` (`unix:///path` or a bare path),
/// which must serve runtime.v1.
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Clients, CliError> {
    let c = berth_cri_client::Client::connect(endpoint, None, &options(timeout))
        .await
        .map_err(cli_error)?;
    Ok(Clients {
        runtime: c.runtime,
        image: c.image,
        berth: ImagesClient::new(c.channel),
        endpoint: endpoint.to_string(),
    })
}

/// Points the image clients at a separate image endpoint.
pub async fn use_image_endpoint(
    c: &mut Clients,
    endpoint: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let channel = berth_cri_client::channel(endpoint, &options(timeout))
        .await
        .map_err(cli_error)?;
    c.image = ImageServiceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    c.berth = ImagesClient::new(channel);
    Ok(())
}
