//! ListImages: every image, or the one the filter names.

use berth_cri::runtime::v1 as cri;

use super::Images;
use crate::error::Result;

pub(super) async fn list_images(
    svc: &Images,
    req: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse> {
    let wanted = req
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.is_empty());
    let images = match wanted {
        Some(spec) => svc
            .images
            .resolve(&spec)
            .map(|(r, _)| vec![svc.to_cri(&r)])
            .unwrap_or_default(),
        None => svc.images.list().iter().map(|r| svc.to_cri(r)).collect(),
    };
    Ok(cri::ListImagesResponse { images })
}
