//! Version: who we are and which CRI we speak.

use berth_cri::runtime::v1 as cri;

use crate::error::Result;

/// The name kubelet and crictl show for this runtime.
pub const RUNTIME_NAME: &str = "berth";
/// The CRI version served.
pub const API_VERSION: &str = "v1";

pub(super) async fn version(_req: cri::VersionRequest) -> Result<cri::VersionResponse> {
    Ok(cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: API_VERSION.into(),
    })
}
