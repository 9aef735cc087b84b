//! `berth.v1.Images`: Berth's own service on the CRI socket. It pulls like
//! CRI PullImage but streams per-layer progress, for `berth pull`.

use std::pin::Pin;

use berth_cri::berth::v1 as ext;
use berth_cri::runtime::v1 as cri;
use berth_image::{LayerPhase, Progress};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::image::Images;

type ProgressStream = Pin<Box<dyn Stream<Item = Result<ext::PullProgress, Status>> + Send>>;

#[tonic::async_trait]
impl ext::images_server::Images for Images {
    async fn pull_image_with_progress(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let spec = crate::image::spec_image(req.image.as_ref())
            .map_err(Status::from)?
            .to_string();
        let auth = req.auth.as_ref().map(crate::image::auth_fields);
        let images = self.images.clone();
        let (out_tx, out_rx) = mpsc::channel::<Result<ext::PullProgress, Status>>(64);
        tokio::spawn(async move {
            let (ptx, mut prx) = mpsc::unbounded_channel::<Progress>();
            let pull = images.pull_with_progress(&spec, auth.as_ref(), Some(ptx));
            tokio::pin!(pull);
            let result = loop {
                tokio::select! {
                    r = &mut pull => break r,
                    Some(ev) = prx.recv() => {
                        if out_tx.send(Ok(to_ext(ev))).await.is_err() {
                            // The client went away: dropping `pull` cancels it.
                            return;
                        }
                    }
                }
            };
            while let Ok(ev) = prx.try_recv() {
                let _ = out_tx.send(Ok(to_ext(ev))).await;
            }
            let last = match result {
                Ok(r) => {
                    tracing::info!(method = "PullImageWithProgress", image = %spec, "ok");
                    Ok(ext::PullProgress {
                        event: Some(ext::pull_progress::Event::Done(cri::PullImageResponse {
                            image_ref: r.id,
                        })),
                    })
                }
                Err(e) => {
                    let e = ServerError::from(e);
                    tracing::warn!(method = "PullImageWithProgress", image = %spec, error = %e, "failed");
                    Err(Status::from(e))
                }
            };
            let _ = out_tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }
}

fn to_ext(ev: Progress) -> ext::PullProgress {
    let event = match ev {
        Progress::Resolved(d) => ext::pull_progress::Event::Resolved(d),
        Progress::Layer {
            digest,
            total,
            current,
            phase,
        } => ext::pull_progress::Event::Layer(ext::LayerProgress {
            digest,
            total: total as i64,
            current: current as i64,
            phase: match phase {
                LayerPhase::Waiting => ext::LayerPhase::Waiting,
                LayerPhase::Downloading => ext::LayerPhase::Downloading,
                LayerPhase::Unpacking => ext::LayerPhase::Unpacking,
                LayerPhase::Done => ext::LayerPhase::Done,
                LayerPhase::AlreadyExists => ext::LayerPhase::AlreadyExists,
            } as i32,
        }),
    };
    ext::PullProgress { event: Some(event) }
}
