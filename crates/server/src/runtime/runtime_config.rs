//! RuntimeConfig: the cgroup driver kubelet must match.

use berth_cri::runtime::v1 as cri;

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
