//! Status: runtime and network readiness, handlers and features.

use std::collections::HashMap;

use berth_cri::runtime::v1 as cri;

use super::Runtime;
use crate::error::Result;

pub(super) async fn status(rt: &Runtime, req: cri::StatusRequest) -> Result<cri::StatusResponse> {
    // The CNI configuration and the handlers' binaries are looked up on
    // disk: off the async workers, so that a busy node answers Status at once.
    let runtime = rt.rt.clone();
    let (ready, handlers) =
        tokio::task::spawn_blocking(move || (runtime.network_ready(), runtime.handlers()))
            .await
            .map_err(|e| {
                crate::error::ServerError::Internal(format!("a blocking task failed: {e}"))
            })?;
    let network = match ready {
        Ok(()) => cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(why) => cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("no usable CNI network: {why}"),
        },
    };
    let conditions = vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        network,
    ];
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), rt.config_json.clone());
        info.insert(
            "quarantinedRecords".to_string(),
            serde_json::to_string(&rt.rt.quarantined()).unwrap_or_default(),
        );
        info.insert(
            "podCIDR".to_string(),
            serde_json::Value::String(rt.rt.pod_cidr()).to_string(),
        );
    }
    let runtime_handlers = handlers
        .into_iter()
        .map(|name| cri::RuntimeHandler {
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                // Pod user namespaces: the monitor's pod init makes them
                // for every handler; containers join them by path.
                user_namespaces: true,
            }),
            name,
        })
        .collect();
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        runtime_handlers,
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}
