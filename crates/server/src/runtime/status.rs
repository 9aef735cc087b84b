//! Status: runtime and network readiness, honestly reported.

use std::collections::HashMap;

use berth_cri::runtime::v1 as cri;

use super::Runtime;
use crate::error::Result;

pub(super) async fn status(rt: &Runtime, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
    let conditions = vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "berth does not set up pod networking yet (no CNI support in this version)"
                .into(),
        },
    ];
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), rt.config_json.clone());
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        ..Default::default()
    })
}
