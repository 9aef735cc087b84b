//! The CRI ImageService, one file per RPC, over `berth_image::ImageService`.

mod fs_info;
mod list;
mod pull;
mod remove;
mod status;

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_server::ImageService;
use berth_image::ImageRecord;
use tonic::{Request, Response, Status};

use crate::instrument::{call, Kind};
pub(crate) use pull::auth_fields;

/// The CRI image service.
#[derive(Clone)]
pub struct Images {
    pub(crate) images: berth_image::ImageService,
    /// For the containers' writable layers, which ImageFsInfo counts too.
    pub(crate) runtime: berth_runtime::Runtime,
}

impl Images {
    pub fn new(images: berth_image::ImageService, runtime: berth_runtime::Runtime) -> Self {
        Images { images, runtime }
    }

    /// The CRI view of an image record.
    pub(crate) fn to_cri(&self, r: &ImageRecord) -> cri::Image {
        let (uid, username) = r.uid_or_name();
        cri::Image {
            id: r.id.clone(),
            repo_tags: r.repo_tags.clone(),
            repo_digests: r.repo_digests.clone(),
            size: r.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: r.id.clone(),
                ..Default::default()
            }),
            pinned: self.images.is_pinned(r),
        }
    }
}

/// The image named by an `ImageSpec`, which must be present.
pub(crate) fn spec_image(spec: Option<&cri::ImageSpec>) -> crate::error::Result<&str> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(crate::error::ServerError::InvalidArgument(
            "image spec is required (ImageSpec.image is empty)".into(),
        )),
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        call(
            "ListImages",
            Kind::Read,
            list::list_images(self, req.into_inner()),
        )
        .await
    }

    async fn stream_images(
        &self,
        req: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<crate::chunks::ListStream<cri::StreamImagesResponse>>, Status> {
        let r = req.into_inner();
        call("StreamImages", Kind::Read, async {
            let all = list::list_images(self, cri::ListImagesRequest { filter: r.filter }).await?;
            Ok(crate::chunks::stream(all.images, |images| {
                cri::StreamImagesResponse { images }
            }))
        })
        .await
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        call(
            "ImageStatus",
            Kind::Read,
            status::image_status(self, req.into_inner()),
        )
        .await
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        call(
            "PullImage",
            Kind::Mutation,
            pull::pull_image(self, req.into_inner()),
        )
        .await
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        call(
            "RemoveImage",
            Kind::Mutation,
            remove::remove_image(self, req.into_inner()),
        )
        .await
    }

    async fn image_fs_info(
        &self,
        req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        call(
            "ImageFsInfo",
            Kind::Read,
            fs_info::image_fs_info(self, req.into_inner()),
        )
        .await
    }
}
