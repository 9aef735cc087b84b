//! PullImage: pull and answer with the image id (as containerd does).

use berth_cri::runtime::v1 as cri;
use berth_image::AuthFields;

use super::{spec_image, Images};
use crate::error::Result;

/// The CRI AuthConfig as the image service takes it.
pub(crate) fn auth_fields(a: &cri::AuthConfig) -> AuthFields {
    AuthFields {
        username: a.username.clone(),
        password: a.password.clone(),
        auth: a.auth.clone(),
        server_address: a.server_address.clone(),
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    }
}

pub(super) async fn pull_image(
    svc: &Images,
    req: cri::PullImageRequest,
) -> Result<cri::PullImageResponse> {
    let spec = spec_image(req.image.as_ref())?;
    let auth = req.auth.as_ref().map(auth_fields);
    let start = std::time::Instant::now();
    let pulled = svc.images.pull(spec, auth.as_ref()).await;
    crate::metrics::global().pull(pulled.is_ok(), start.elapsed().as_secs_f64());
    let record = pulled?;
    Ok(cri::PullImageResponse {
        image_ref: record.id,
    })
}
