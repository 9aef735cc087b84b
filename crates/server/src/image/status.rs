//! ImageStatus: the image, or an empty answer if it is not present (as the
//! CRI asks: "not found" is not an error here).

use std::collections::HashMap;

use berth_cri::runtime::v1 as cri;

use super::{spec_image, Images};
use crate::error::Result;

pub(super) async fn image_status(
    svc: &Images,
    req: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse> {
    let spec = spec_image(req.image.as_ref())?;
    let Some((record, _)) = svc.images.resolve(spec) else {
        return Ok(cri::ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config: serde_json::Value = svc
            .images
            .config_json(&record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let v = serde_json::json!({
            "imageSpec": config,
            "manifestDigest": record.manifest_digest,
            "manifestMediaType": record.manifest_media_type,
            "indexDigest": record.index_digest,
            "chainID": record.layers.last().map(|l| l.chain_id.clone()),
            "layers": record.layers,
            "pulledAt": record.pulled_at,
        });
        info.insert("info".to_string(), v.to_string());
    }
    Ok(cri::ImageStatusResponse {
        image: Some(svc.to_cri(&record)),
        info,
    })
}
