//! Overlayfs-ready snapshot directories and the OCI layer applier.
//!
//! A snapshot is named by its OCI chain id and holds only its own layer's
//! diff, with OCI whiteouts converted to overlayfs form (0:0 character
//! devices and `trusted.overlay.opaque`). A container's rootfs is an overlay
//! whose `lowerdir` lists an image's snapshots, topmost first.
//!
//! ```no_run
//! # fn main() -> Result<(), berth_snapshot::Error> {
//! use berth_snapshot::{apply_layer, chain_id, Compression, SnapshotStore};
//! # let blob = std::io::empty();
//! # let media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
//! let store = SnapshotStore::open("/var/lib/berth/snapshots".as_ref())?;
//! let staging = store.stage()?;
//! let compression = Compression::from_media_type(media_type).expect("a layer media type");
//! let applied = apply_layer(blob, compression, staging.path(), &[])?;
//! store.commit(staging, &chain_id(None, &applied.diff_id))?;
//! # Ok(()) }
//! ```
//!
//! The applier is a security boundary: layers come from registries and may
//! be hostile. See the [`apply`] module for how paths are contained.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
mod error;
mod fsutil;
mod mount;
mod store;
mod tar;

pub use apply::{apply_layer, apply_layer_with, Applied, ApplyOptions};
pub use error::{Error, ErrorKind, Result};
pub use mount::{Overlay, OverlaySpec};
pub use store::{chain_id, SnapshotStore, Staging, Usage};

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly several concatenated members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// The compression of an OCI or Docker layer media type; `None` for
    /// anything that is not a known layer type. Parameters (`;...`) are
    /// ignored and the comparison is case-insensitive.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let mt = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Some(match mt.as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        use Compression::*;
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Gzip),
            ),
            (
                "Application/VND.oci.image.layer.v1.tar+gzip; foo=bar",
                Some(Gzip),
            ),
            ("application/vnd.oci.image.config.v1+json", Option::None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
            ("", Option::None),
        ] {
            assert_eq!(Compression::from_media_type(mt), c, "{mt}");
        }
    }
}
