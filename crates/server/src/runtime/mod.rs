//! The CRI RuntimeService: each RPC is a thin wrapper over
//! [`berth_runtime::Runtime`], run inside [`call`]. Every RPC of cri-api
//! v0.36 is here; the lists and their streaming forms are in `lists.rs`.

mod events;
mod lists;
mod metrics;
mod runtime_config;
mod status;
mod streaming;
mod version;

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::chunks::{self, ListStream};
use crate::convert;
use crate::error::ServerError;
use crate::instrument::{call, mutation, Kind};

/// The CRI runtime service.
#[derive(Clone)]
pub struct Runtime {
    /// The effective configuration, reported by verbose Status.
    pub(crate) config_json: String,
    pub(crate) rt: berth_runtime::Runtime,
    /// Where Exec, Attach and PortForward URLs point.
    pub(crate) streaming: berth_streaming::Server<crate::stream::StreamBackend>,
}

impl Runtime {
    pub fn new(
        config: &berth_config::Config,
        rt: berth_runtime::Runtime,
        streaming: berth_streaming::Server<crate::stream::StreamBackend>,
    ) -> Self {
        Runtime {
            config_json: serde_json::to_string(config).unwrap_or_default(),
            rt,
            streaming,
        }
    }
}

/// Runs file-reading work in the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(format!("a blocking task failed: {e}")))
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, ServerError> {
    v.ok_or_else(|| ServerError::InvalidArgument(format!("{what} is required")))
}

/// A verbose status's `info`: the runtime's details and the config, in
/// the CRI's protobuf-JSON, under `config`.
fn verbose_info(
    info: Option<serde_json::Map<String, serde_json::Value>>,
    config: impl serde::Serialize,
) -> std::collections::HashMap<String, String> {
    let Some(mut info) = info else {
        return Default::default();
    };
    info.insert(
        "config".into(),
        serde_json::to_value(config).unwrap_or_default(),
    );
    let text = serde_json::Value::Object(info).to_string();
    std::collections::HashMap::from([("info".to_string(), text)])
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        call("Version", Kind::Read, version::version(req.into_inner())).await
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        call("Status", Kind::Read, status::status(self, req.into_inner())).await
    }

    async fn runtime_config(
        &self,
        req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        call(
            "RuntimeConfig",
            Kind::Read,
            runtime_config::runtime_config(req.into_inner()),
        )
        .await
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        call(
            "UpdateRuntimeConfig",
            Kind::Mutation,
            runtime_config::update_runtime_config(self, req.into_inner()),
        )
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        let r = req.into_inner();
        call("UpdatePodSandboxResources", Kind::Mutation, async {
            self.rt.update_pod_resources(&r.pod_sandbox_id)?;
            Ok(cri::UpdatePodSandboxResourcesResponse {})
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        mutation("RunPodSandbox", {
            let rt = self.rt.clone();
            async move {
                let config = convert::pod_config(required(r.config, "config")?)?;
                let pod_sandbox_id = rt.run_pod(config, r.runtime_handler).await?;
                Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
            }
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let r = req.into_inner();
        mutation("StopPodSandbox", {
            let rt = self.rt.clone();
            async move {
                rt.stop_pod(&r.pod_sandbox_id).await?;
                Ok(cri::StopPodSandboxResponse {})
            }
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let r = req.into_inner();
        mutation("RemovePodSandbox", {
            let rt = self.rt.clone();
            async move {
                rt.remove_pod(&r.pod_sandbox_id).await?;
                Ok(cri::RemovePodSandboxResponse {})
            }
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = req.into_inner();
        call("PodSandboxStatus", Kind::Read, async {
            let (pod, info) = self.rt.pod_status(&r.pod_sandbox_id, r.verbose)?;
            // Its containers' statuses and when they were read, as CRI-O
            // answers: the kubelet's relist then needs no ContainerStatus
            // call per container.
            let timestamp = berth_runtime::now_ns();
            let filter = berth_runtime::ContainerFilter {
                pod_id: pod.record.id.clone(),
                ..Default::default()
            };
            let containers = self.rt.list_containers(&filter);
            Ok(cri::PodSandboxStatusResponse {
                status: Some(convert::pod_status(&pod)),
                info: verbose_info(info, convert::cri_pod_config(&pod.record.config)),
                containers_statuses: containers.iter().map(convert::container_status).collect(),
                timestamp,
            })
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let r = req.into_inner();
        call("ListPodSandbox", Kind::Read, async {
            Ok(cri::ListPodSandboxResponse {
                items: lists::pods(&self.rt, r.filter),
            })
        })
        .await
    }

    async fn stream_pod_sandboxes(
        &self,
        req: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<ListStream<cri::StreamPodSandboxesResponse>>, Status> {
        let r = req.into_inner();
        call("StreamPodSandboxes", Kind::Read, async {
            Ok(chunks::stream(
                lists::pods(&self.rt, r.filter),
                |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
            ))
        })
        .await
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        mutation("CreateContainer", {
            let rt = self.rt.clone();
            async move {
                let config = convert::container_config(required(r.config, "config")?)?;
                let container_id = rt.create_container(&r.pod_sandbox_id, config).await?;
                Ok(cri::CreateContainerResponse { container_id })
            }
        })
        .await
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let r = req.into_inner();
        mutation("StartContainer", {
            let rt = self.rt.clone();
            async move {
                rt.start_container(&r.container_id).await?;
                Ok(cri::StartContainerResponse {})
            }
        })
        .await
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = req.into_inner();
        mutation("StopContainer", {
            let rt = self.rt.clone();
            async move {
                rt.stop_container(&r.container_id, r.timeout).await?;
                Ok(cri::StopContainerResponse {})
            }
        })
        .await
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let r = req.into_inner();
        mutation("RemoveContainer", {
            let rt = self.rt.clone();
            async move {
                rt.remove_container(&r.container_id).await?;
                Ok(cri::RemoveContainerResponse {})
            }
        })
        .await
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let r = req.into_inner();
        call("ListContainers", Kind::Read, async {
            Ok(cri::ListContainersResponse {
                containers: lists::containers(&self.rt, r.filter),
            })
        })
        .await
    }

    async fn stream_containers(
        &self,
        req: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<ListStream<cri::StreamContainersResponse>>, Status> {
        let r = req.into_inner();
        call("StreamContainers", Kind::Read, async {
            Ok(chunks::stream(
                lists::containers(&self.rt, r.filter),
                |containers| cri::StreamContainersResponse { containers },
            ))
        })
        .await
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = req.into_inner();
        call("ContainerStatus", Kind::Read, async {
            let (c, info) = self.rt.container_status(&r.container_id, r.verbose)?;
            Ok(cri::ContainerStatusResponse {
                status: Some(convert::container_status(&c)),
                info: verbose_info(info, convert::cri_container_config(&c.record.config)),
            })
        })
        .await
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        mutation("UpdateContainerResources", {
            let rt = self.rt.clone();
            async move {
                let resources = r.linux.map(convert::resources);
                rt.update_container(&r.container_id, resources).await?;
                Ok(cri::UpdateContainerResourcesResponse {})
            }
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let r = req.into_inner();
        mutation("ReopenContainerLog", {
            let rt = self.rt.clone();
            async move {
                rt.reopen_log(&r.container_id).await?;
                Ok(cri::ReopenContainerLogResponse {})
            }
        })
        .await
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let r = req.into_inner();
        let rt = self.rt.clone();
        call("ContainerStats", Kind::Read, async move {
            // cgroup files of the container: read off the async workers.
            let stats = blocking(move || rt.container_stats(&r.container_id)).await??;
            Ok(cri::ContainerStatsResponse {
                stats: Some(convert::container_stats(&stats)),
            })
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let r = req.into_inner();
        let rt = self.rt.clone();
        call("PodSandboxStats", Kind::Read, async move {
            let stats = blocking(move || rt.pod_stats(&r.pod_sandbox_id)).await??;
            Ok(cri::PodSandboxStatsResponse {
                stats: Some(convert::pod_stats(&stats)),
            })
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let r = req.into_inner();
        let rt = self.rt.clone();
        call("ListPodSandboxStats", Kind::Read, async move {
            Ok(cri::ListPodSandboxStatsResponse {
                stats: lists::pod_stats(&rt, r.filter).await?,
            })
        })
        .await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<ListStream<cri::StreamPodSandboxStatsResponse>>, Status> {
        let r = req.into_inner();
        call("StreamPodSandboxStats", Kind::Read, async {
            Ok(chunks::stream(
                lists::pod_stats(&self.rt, r.filter).await?,
                |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats },
            ))
        })
        .await
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let r = req.into_inner();
        let rt = self.rt.clone();
        call("ListContainerStats", Kind::Read, async move {
            Ok(cri::ListContainerStatsResponse {
                stats: lists::container_stats(&rt, r.filter).await?,
            })
        })
        .await
    }

    async fn stream_container_stats(
        &self,
        req: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<ListStream<cri::StreamContainerStatsResponse>>, Status> {
        let r = req.into_inner();
        call("StreamContainerStats", Kind::Read, async {
            Ok(chunks::stream(
                lists::container_stats(&self.rt, r.filter).await?,
                |container_stats| cri::StreamContainerStatsResponse { container_stats },
            ))
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        let r = req.into_inner();
        call("CheckpointContainer", Kind::Mutation, async {
            self.rt
                .checkpoint_container(&r.container_id, &r.location)
                .await?;
            Ok(cri::CheckpointContainerResponse {})
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        call("ListMetricDescriptors", Kind::Read, async {
            Ok(cri::ListMetricDescriptorsResponse {
                descriptors: metrics::descriptors(),
            })
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let rt = self.rt.clone();
        call("ListPodSandboxMetrics", Kind::Read, async move {
            Ok(cri::ListPodSandboxMetricsResponse {
                pod_metrics: blocking(move || metrics::pod_metrics(&rt)).await?,
            })
        })
        .await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<ListStream<cri::StreamPodSandboxMetricsResponse>>, Status> {
        let rt = self.rt.clone();
        call("StreamPodSandboxMetrics", Kind::Read, async move {
            let all = blocking(move || metrics::pod_metrics(&rt)).await?;
            Ok(chunks::stream(all, |pod_sandbox_metrics| {
                cri::StreamPodSandboxMetricsResponse {
                    pod_sandbox_metrics,
                }
            }))
        })
        .await
    }

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<ListStream<cri::ContainerEventResponse>>, Status> {
        Ok(Response::new(events::subscribe(&self.rt)))
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        call("Exec", Kind::Read, streaming::exec(self, req.into_inner())).await
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        call(
            "Attach",
            Kind::Read,
            streaming::attach(self, req.into_inner()),
        )
        .await
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        call(
            "PortForward",
            Kind::Read,
            streaming::port_forward(self, req.into_inner()),
        )
        .await
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let r = req.into_inner();
        call("ExecSync", Kind::Mutation, async {
            let out = self.rt.exec_sync(&r.container_id, r.cmd, r.timeout).await?;
            Ok(cri::ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            })
        })
        .await
    }
}
