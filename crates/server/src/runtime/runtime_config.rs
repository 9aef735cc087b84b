//! RuntimeConfig (the cgroup driver kubelet must match) and
//! UpdateRuntimeConfig (the node's pod CIDR).

use berth_cri::runtime::v1 as cri;

use super::Runtime;
use crate::error::Result;

pub(super) async fn runtime_config(
    _req: cri::RuntimeConfigRequest,
) -> Result<cri::RuntimeConfigResponse> {
    Ok(cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
        }),
    })
}

pub(super) async fn update_runtime_config(
    rt: &Runtime,
    req: cri::UpdateRuntimeConfigRequest,
) -> Result<cri::UpdateRuntimeConfigResponse> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    rt.rt.set_pod_cidr(&cidr)?;
    Ok(cri::UpdateRuntimeConfigResponse {})
}
