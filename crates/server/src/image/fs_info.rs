//! ImageFsInfo: what the image store uses, and where.

use berth_cri::runtime::v1 as cri;

use super::Images;
use crate::error::Result;

pub(super) async fn image_fs_info(
    svc: &Images,
    _req: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse> {
    let usage = svc.images.usage().await?;
    let fs = cri::FilesystemUsage {
        timestamp: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: svc.images.mountpoint().display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes,
        }),
    };
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![fs.clone()],
        container_filesystems: vec![fs],
    })
}
