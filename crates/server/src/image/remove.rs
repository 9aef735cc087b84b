//! RemoveImage: idempotent; a tag of a multi-tag image only untags.

use berth_cri::runtime::v1 as cri;

use super::{spec_image, Images};
use crate::error::Result;

pub(super) async fn remove_image(
    svc: &Images,
    req: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse> {
    let spec = spec_image(req.image.as_ref())?;
    svc.images.remove(spec).await?;
    Ok(cri::RemoveImageResponse {})
}
