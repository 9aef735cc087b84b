//! The CRI RuntimeService. Only the runtime-wide calls exist so far; every
//! other RPC answers UNIMPLEMENTED through the generated default methods.

mod runtime_config;
mod status;
mod version;

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::instrument::{call, Kind};

/// The CRI runtime service.
#[derive(Clone)]
pub struct Runtime {
    /// The effective configuration, reported by verbose Status.
    pub(crate) config_json: String,
}

impl Runtime {
    pub fn new(config: &berth_config::Config) -> Self {
        Runtime {
            config_json: serde_json::to_string(config).unwrap_or_default(),
        }
    }
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
}
