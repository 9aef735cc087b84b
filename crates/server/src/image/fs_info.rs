//! ImageFsInfo: what the image store and the containers' writable layers
//! use, and where. Both live under the daemon's root, so, as containerd
//! reports its snapshotter (image layers and containers' active snapshots
//! together), the image and the container filesystem are one, with one
//! figure: the kubelet sees no split disk and counts writable layers in it.

use berth_cri::runtime::v1 as cri;

use super::Images;
use crate::error::Result;

pub(super) async fn image_fs_info(
    svc: &Images,
    _req: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse> {
    let usage = svc.images.usage().await?;
    // Measured in the background (no walk on this path).
    let (layer_bytes, layer_inodes) = svc.runtime.writable_layers_usage();
    let fs = cri::FilesystemUsage {
        timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: svc.images.mountpoint().display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value {
            value: usage.bytes + layer_bytes,
        }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes + layer_inodes,
        }),
    };
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![fs.clone()],
        container_filesystems: vec![fs],
    })
}
