//! Test support for Berth's integration tests.
//!
//! * [`Registry`]: a real `docker-registry` (distribution 2.8) on a free
//!   127.0.0.1 port, anonymous, HTTP Basic ([`Registry::start_basic_auth`]) or
//!   token auth with an in-process token server ([`Registry::start_token_auth`]).
//! * [`FakeRegistry`]: serves canned manifests/blobs a real registry would
//!   refuse (schema 1, content not matching its digest).
//! * [`ImageBuilder`], [`Layer`], [`TarWriter`]: deterministic images in memory;
//!   [`Image::push`], [`ImageIndex::push`] and [`RegistryClient`] push them
//!   (and read them back) over the distribution API, auth included.
//! * [`fixtures`]: ready-made images (busybox, multi-arch, layered with
//!   whiteouts, compression variants, hostile layers, big).
//!
//! ```no_run
//! use berth_testkit::{fixtures, IndexFormat, ManifestFormat, Registry};
//!
//! #[tokio::test]
//! async fn pulls_busybox() {
//!     let registry = Registry::start();
//!     let pushed = fixtures::busybox()
//!         .push(&registry, "tests/busybox:latest", ManifestFormat::Oci)
//!         .await
//!         .unwrap();
//!     let reference = format!("{}/tests/busybox:latest", registry.host());
//!     // ... pull `reference` with Berth, then compare with
//!     // pushed.manifest_digest / pushed.config_digest (the image ID).
//!     fixtures::multi_arch()
//!         .push(&registry, "tests/multi:latest", IndexFormat::OciIndex)
//!         .await
//!         .unwrap();
//! }
//! ```
//!
//! Needs the Debian packages `docker-registry` and `busybox-static`.

#![warn(missing_docs)]

mod client;
mod fake;
pub mod fixtures;
mod http;
mod image;
mod process;
mod registry;
mod tarball;
mod tls;
pub mod token;
mod util;

pub use client::{
    parse_challenge, pull_scope, push_index, push_scope, split_reference, FetchedManifest,
    PushedImage, PushedIndex, PushedLayer, RegistryClient,
};
pub use fake::{schema1_manifest, FakeRegistry};
pub use image::{
    compress, compress_with_level, media_types, Compression, Image, ImageBuilder, ImageIndex,
    IndexFormat, Layer, ManifestFormat, Platform, RuntimeConfig,
};
pub use registry::{AccessLogEntry, Registry, RegistryAuth, REGISTRY_BIN_ENV};
pub use tarball::{RawEntry, TarWriter, FIXED_MTIME};
pub use tls::TlsFront;
pub use token::{TokenAuthOptions, TokenGrant, TokenRequest};
pub use util::{sha256_digest, SplitMix64};
