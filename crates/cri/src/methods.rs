//! The unary CRI methods by name, in protobuf-JSON: the daemon's request
//! recorder decodes what a client (a kubelet) sent with [`decode`], and
//! the tests replay such recordings with [`call`].

use prost::Message;
use tonic::transport::Channel;

use crate::runtime::v1 as cri;
use crate::runtime::v1::image_service_client::ImageServiceClient;
use crate::runtime::v1::runtime_service_client::RuntimeServiceClient;

/// Which message of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Request,
    Response,
}

/// Why a recorded call could not be decoded or replayed.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error("{0} is not a unary CRI method")]
    Unknown(String),
    #[error("{method}: {source}")]
    Decode {
        method: String,
        source: prost::DecodeError,
    },
    #[error("{method}: {source}")]
    Json {
        method: String,
        source: serde_json::Error,
    },
}

macro_rules! methods {
    ($(
        $service:literal $client:ident {
            $( $name:ident $call:ident $req:ident $resp:ident ),* $(,)?
        }
    )*) => {
        /// The gRPC path of every unary CRI method
        /// (`/runtime.v1.RuntimeService/RunPodSandbox`), with its name.
        pub const PATHS: &[(&str, &str)] = &[
            $( $( (concat!("/runtime.v1.", $service, "/", stringify!($name)), stringify!($name)), )* )*
        ];

        /// Decodes one protobuf message of `method` (its bare name, e.g.
        /// `RunPodSandbox`) into protobuf-JSON.
        pub fn decode(method: &str, which: Which, protobuf: &[u8]) -> Result<serde_json::Value, MethodError> {
            let decode_err = |source| MethodError::Decode { method: method.to_string(), source };
            let json_err = |source| MethodError::Json { method: method.to_string(), source };
            match (method, which) {
                $( $(
                    (stringify!($name), Which::Request) => serde_json::to_value(
                        cri::$req::decode(protobuf).map_err(decode_err)?,
                    ).map_err(json_err),
                    (stringify!($name), Which::Response) => serde_json::to_value(
                        cri::$resp::decode(protobuf).map_err(decode_err)?,
                    ).map_err(json_err),
                )* )*
                _ => Err(MethodError::Unknown(method.to_string())),
            }
        }

        /// Calls `method` with a protobuf-JSON request on `channel`; the
        /// response, in protobuf-JSON, or the call's status.
        pub async fn call(
            channel: Channel,
            method: &str,
            request: serde_json::Value,
        ) -> Result<Result<serde_json::Value, tonic::Status>, MethodError> {
            let json_err = |source| MethodError::Json { method: method.to_string(), source };
            match method {
                $( $(
                    stringify!($name) => {
                        let req: cri::$req = serde_json::from_value(request).map_err(json_err)?;
                        let mut client = $client::new(channel)
                            .max_decoding_message_size(16 << 20);
                        match client.$call(req).await {
                            Ok(r) => Ok(Ok(serde_json::to_value(r.into_inner()).map_err(json_err)?)),
                            Err(status) => Ok(Err(status)),
                        }
                    }
                )* )*
                _ => Err(MethodError::Unknown(method.to_string())),
            }
        }
    };
}

methods! {
    "RuntimeService" RuntimeServiceClient {
        Version version VersionRequest VersionResponse,
        RunPodSandbox run_pod_sandbox RunPodSandboxRequest RunPodSandboxResponse,
        StopPodSandbox stop_pod_sandbox StopPodSandboxRequest StopPodSandboxResponse,
        RemovePodSandbox remove_pod_sandbox RemovePodSandboxRequest RemovePodSandboxResponse,
        PodSandboxStatus pod_sandbox_status PodSandboxStatusRequest PodSandboxStatusResponse,
        ListPodSandbox list_pod_sandbox ListPodSandboxRequest ListPodSandboxResponse,
        CreateContainer create_container CreateContainerRequest CreateContainerResponse,
        StartContainer start_container StartContainerRequest StartContainerResponse,
        StopContainer stop_container StopContainerRequest StopContainerResponse,
        RemoveContainer remove_container RemoveContainerRequest RemoveContainerResponse,
        ListContainers list_containers ListContainersRequest ListContainersResponse,
        ContainerStatus container_status ContainerStatusRequest ContainerStatusResponse,
        UpdateContainerResources update_container_resources UpdateContainerResourcesRequest UpdateContainerResourcesResponse,
        ReopenContainerLog reopen_container_log ReopenContainerLogRequest ReopenContainerLogResponse,
        ExecSync exec_sync ExecSyncRequest ExecSyncResponse,
        Exec exec ExecRequest ExecResponse,
        Attach attach AttachRequest AttachResponse,
        PortForward port_forward PortForwardRequest PortForwardResponse,
        ContainerStats container_stats ContainerStatsRequest ContainerStatsResponse,
        ListContainerStats list_container_stats ListContainerStatsRequest ListContainerStatsResponse,
        PodSandboxStats pod_sandbox_stats PodSandboxStatsRequest PodSandboxStatsResponse,
        ListPodSandboxStats list_pod_sandbox_stats ListPodSandboxStatsRequest ListPodSandboxStatsResponse,
        UpdateRuntimeConfig update_runtime_config UpdateRuntimeConfigRequest UpdateRuntimeConfigResponse,
        Status status StatusRequest StatusResponse,
        CheckpointContainer checkpoint_container CheckpointContainerRequest CheckpointContainerResponse,
        ListMetricDescriptors list_metric_descriptors ListMetricDescriptorsRequest ListMetricDescriptorsResponse,
        ListPodSandboxMetrics list_pod_sandbox_metrics ListPodSandboxMetricsRequest ListPodSandboxMetricsResponse,
        RuntimeConfig runtime_config RuntimeConfigRequest RuntimeConfigResponse,
        UpdatePodSandboxResources update_pod_sandbox_resources UpdatePodSandboxResourcesRequest UpdatePodSandboxResourcesResponse,
    }
    "ImageService" ImageServiceClient {
        ListImages list_images ListImagesRequest ListImagesResponse,
        ImageStatus image_status ImageStatusRequest ImageStatusResponse,
        PullImage pull_image PullImageRequest PullImageResponse,
        RemoveImage remove_image RemoveImageRequest RemoveImageResponse,
        ImageFsInfo image_fs_info ImageFsInfoRequest ImageFsInfoResponse,
    }
}

/// The bare method name of a gRPC path, if it is a unary CRI method.
pub fn name_of(path: &str) -> Option<&'static str> {
    PATHS.iter().find(|(p, _)| *p == path).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_roundtrip_through_json() {
        let req = cri::StopContainerRequest {
            container_id: "abc".into(),
            timeout: 30,
        };
        let json = decode("StopContainer", Which::Request, &req.encode_to_vec()).unwrap();
        assert_eq!(json["containerId"], "abc");
        let back: cri::StopContainerRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
        assert!(matches!(
            decode("Nope", Which::Request, b""),
            Err(MethodError::Unknown(_))
        ));
        assert_eq!(
            name_of("/runtime.v1.ImageService/PullImage"),
            Some("PullImage")
        );
        assert_eq!(
            name_of("/runtime.v1.RuntimeService/GetContainerEvents"),
            None
        );
    }
}
