//! Images as a registry sees them: layer blobs, a config blob, manifests and indexes.
//!
//! Everything is built in memory and deterministically: the same inputs
//! always give the same blobs and digests (for a given `flate2`/`zstd`
//! version when layers are compressed).

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use crate::util::sha256_digest;

/// Media type strings.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker image manifest v2 schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (understood by containerd and the registry).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker schema 1 signed manifest (deprecated; Berth must refuse it).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker schema 1 unsigned manifest.
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (flate2, default level, mtime 0 in the header).
    Gzip,
    /// zstd (level 3).
    Zstd,
}

/// Which manifest flavour to push for a single image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `application/vnd.oci.image.manifest.v1+json` with an OCI config.
    Oci,
    /// `application/vnd.docker.distribution.manifest.v2+json` with a Docker config.
    DockerV2,
}

/// Which index flavour to push for a multi-platform image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFormat {
    /// `application/vnd.oci.image.index.v1+json` over OCI manifests.
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.list.v2+json` over Docker v2 manifests.
    DockerManifestList,
}

impl IndexFormat {
    /// The manifest format used for the index's children.
    pub fn child_format(self) -> ManifestFormat {
        match self {
            IndexFormat::OciIndex => ManifestFormat::Oci,
            IndexFormat::DockerManifestList => ManifestFormat::DockerV2,
        }
    }

    /// The index media type.
    pub fn media_type(self) -> &'static str {
        match self {
            IndexFormat::OciIndex => media_types::OCI_INDEX,
            IndexFormat::DockerManifestList => media_types::DOCKER_MANIFEST_LIST,
        }
    }
}

impl ManifestFormat {
    /// The manifest media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_types::OCI_MANIFEST,
            ManifestFormat::DockerV2 => media_types::DOCKER_MANIFEST,
        }
    }

    /// The config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_types::OCI_CONFIG,
            ManifestFormat::DockerV2 => media_types::DOCKER_CONFIG,
        }
    }
}

/// One layer: the blob as stored in the registry plus its uncompressed digest.
#[derive(Debug, Clone)]
pub struct Layer {
    blob: Bytes,
    compression: Compression,
    digest: String,
    diff_id: String,
}

impl Layer {
    /// Compresses an uncompressed tarball into a layer (default levels).
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Self {
        Self::from_tar_with_level(tar, compression, None)
    }

    /// Like [`Layer::from_tar`] with an explicit level (gzip 0-9, zstd 1-19).
    /// gzip level 0 writes stored blocks: fast to build, and what deflate
    /// produces anyway for incompressible data.
    pub fn from_tar_with_level(tar: Vec<u8>, compression: Compression, level: Option<u32>) -> Self {
        let diff_id = sha256_digest(&tar);
        let blob = compress_with_level(&tar, compression, level);
        Self {
            digest: sha256_digest(&blob),
            blob: Bytes::from(blob),
            compression,
            diff_id,
        }
    }

    /// A layer from an already compressed (or deliberately broken) blob.
    /// `diff_id` is what the image config will claim; nothing checks it.
    pub fn from_blob(blob: Vec<u8>, compression: Compression, diff_id: &str) -> Self {
        Self {
            digest: sha256_digest(&blob),
            blob: Bytes::from(blob),
            compression,
            diff_id: diff_id.to_owned(),
        }
    }

    /// Returns the same blob with a different `diff_id` in the image config
    /// (to build images whose config lies about their layers).
    pub fn with_diff_id(mut self, diff_id: &str) -> Self {
        self.diff_id = diff_id.to_owned();
        self
    }

    /// The blob bytes as pushed.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Digest of the blob (`sha256:...`), as listed in the manifest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Digest of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// The blob as cheaply clonable [`Bytes`].
    pub fn blob_bytes(&self) -> &Bytes {
        &self.blob
    }

    /// Blob size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    /// The compression of the blob.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The layer media type for `format`. Docker manifests have no zstd type,
    /// so zstd layers use the OCI type there, as BuildKit does.
    pub fn media_type(&self, format: ManifestFormat) -> &'static str {
        use media_types::*;
        match (format, self.compression) {
            (ManifestFormat::Oci, Compression::None) => OCI_LAYER_TAR,
            (ManifestFormat::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
            (_, Compression::Zstd) => OCI_LAYER_ZSTD,
            (ManifestFormat::DockerV2, Compression::None) => DOCKER_LAYER_TAR,
            (ManifestFormat::DockerV2, Compression::Gzip) => DOCKER_LAYER_GZIP,
        }
    }

    /// Decompresses the blob back to the tar (fails for corrupt blobs).
    pub fn decompress(&self) -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut out = Vec::new();
        match self.compression {
            Compression::None => out.extend_from_slice(&self.blob),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&self.blob[..]).read_to_end(&mut out)?;
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(&self.blob[..])?.read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }
}

/// Compresses `data` deterministically with the default level.
pub fn compress(data: &[u8], compression: Compression) -> Vec<u8> {
    compress_with_level(data, compression, None)
}

/// Compresses `data` deterministically; `level` `None` means the default.
pub fn compress_with_level(data: &[u8], compression: Compression, level: Option<u32>) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let level = level.map_or_else(flate2::Compression::default, flate2::Compression::new);
            // GzBuilder defaults: mtime 0, no file name, OS "unknown": deterministic.
            let mut enc = flate2::GzBuilder::new().write(Vec::new(), level);
            enc.write_all(data)
                .and_then(|()| enc.finish())
                .expect("gzip into memory cannot fail")
        }
        Compression::Zstd => {
            let level = level.map_or(3, |l| l as i32);
            zstd::stream::encode_all(data, level).expect("zstd into memory cannot fail")
        }
    }
}

/// A target platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `GOOS` value, e.g. `linux`.
    pub os: String,
    /// `GOARCH` value, e.g. `amd64`, `arm64`, `arm`.
    pub architecture: String,
    /// Variant, e.g. `v7` for `arm`.
    pub variant: Option<String>,
}

impl Platform {
    /// `os/architecture` without variant.
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// Adds a variant.
    pub fn with_variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_owned());
        self
    }

    /// The platform of the machine running the tests (`linux/amd64` on x86-64).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self::new("linux", arch)
    }

    /// `os/arch[/variant]`
    pub fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `User`: `name`, `uid`, `uid:gid`, `name:group`...
    pub user: Option<String>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`, e.g. `SIGINT`.
    pub stop_signal: Option<String>,
    /// `ExposedPorts` keys, e.g. `8080/tcp`.
    pub exposed_ports: BTreeSet<String>,
    /// `Volumes` keys, e.g. `/data`.
    pub volumes: BTreeSet<String>,
}

/// Builds an [`Image`].
///
/// ```
/// use berth_testkit::{Compression, ImageBuilder, Layer, TarWriter};
/// let mut tar = TarWriter::new();
/// tar.file("hello", b"world\n", 0o644);
/// let image = ImageBuilder::new()
///     .env("PATH", "/bin")
///     .cmd(["cat", "/hello"])
///     .label("org.example", "yes")
///     .layer(Layer::from_tar(tar.finish(), Compression::Gzip))
///     .build();
/// assert!(image.config_digest().starts_with("sha256:"));
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    platform: Platform,
    config: RuntimeConfig,
    layers: Vec<Layer>,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// A `linux/<host arch>` image with no layers and an empty config.
    pub fn new() -> Self {
        Self {
            platform: Platform::host(),
            config: RuntimeConfig::default(),
            layers: Vec::new(),
            created: "2020-01-01T00:00:00Z".to_owned(),
        }
    }

    /// Sets the platform written in the config (and used in indexes).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Adds `KEY=value` to `Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.config.env.push(format!("{key}={value}"));
        self
    }

    /// Sets `Entrypoint`.
    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.config.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `Cmd`.
    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.config.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `User`.
    pub fn user(mut self, user: &str) -> Self {
        self.config.user = Some(user.to_owned());
        self
    }

    /// Sets `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.config.working_dir = Some(dir.to_owned());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.config.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `StopSignal`.
    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.config.stop_signal = Some(signal.to_owned());
        self
    }

    /// Adds an `ExposedPorts` entry such as `8080/tcp`.
    pub fn expose(mut self, port: &str) -> Self {
        self.config.exposed_ports.insert(port.to_owned());
        self
    }

    /// Adds a `Volumes` entry.
    pub fn volume(mut self, path: &str) -> Self {
        self.config.volumes.insert(path.to_owned());
        self
    }

    /// Sets the `created` timestamp (default `2020-01-01T00:00:00Z`).
    pub fn created(mut self, rfc3339: &str) -> Self {
        self.created = rfc3339.to_owned();
        self
    }

    /// Appends a layer (bottom first).
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Appends an uncompressed tarball as a layer with `compression`.
    pub fn tar_layer(self, tar: Vec<u8>, compression: Compression) -> Self {
        self.layer(Layer::from_tar(tar, compression))
    }

    /// Renders the config JSON and freezes the image.
    pub fn build(self) -> Image {
        let c = &self.config;
        let mut config = serde_json::Map::new();
        if let Some(user) = &c.user {
            config.insert("User".into(), json!(user));
        }
        if !c.exposed_ports.is_empty() {
            let ports: serde_json::Map<_, _> = c
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            config.insert("ExposedPorts".into(), ports.into());
        }
        if !c.env.is_empty() {
            config.insert("Env".into(), json!(c.env));
        }
        if let Some(entrypoint) = &c.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &c.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if !c.volumes.is_empty() {
            let volumes: serde_json::Map<_, _> =
                c.volumes.iter().map(|v| (v.clone(), json!({}))).collect();
            config.insert("Volumes".into(), volumes.into());
        }
        if let Some(dir) = &c.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if !c.labels.is_empty() {
            config.insert("Labels".into(), json!(c.labels));
        }
        if let Some(signal) = &c.stop_signal {
            config.insert("StopSignal".into(), json!(signal));
        }

        let history: Vec<_> = (0..self.layers.len())
            .map(|i| {
                json!({
                    "created": self.created,
                    "created_by": format!("berth-testkit layer {i}"),
                })
            })
            .collect();
        let mut doc = json!({
            "created": self.created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(Layer::diff_id).collect::<Vec<_>>(),
            },
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            doc["variant"] = json!(variant);
        }
        // serde_json without `preserve_order` sorts object keys: stable bytes.
        let config_json = serde_json::to_vec(&doc).expect("serialising a JSON value cannot fail");
        Image::from_parts(self.platform, self.config, config_json, self.layers)
    }
}

/// A built image: config blob plus layers. Push it with
/// [`Image::push`] or [`RegistryClient::push_image`](crate::RegistryClient::push_image).
#[derive(Debug, Clone)]
pub struct Image {
    platform: Platform,
    runtime_config: RuntimeConfig,
    config_json: Bytes,
    config_digest: String,
    layers: Vec<Layer>,
}

impl Image {
    /// Assembles an image from an arbitrary config JSON (nothing is checked:
    /// use this for images whose config is deliberately inconsistent).
    pub fn from_parts(
        platform: Platform,
        runtime_config: RuntimeConfig,
        config_json: Vec<u8>,
        layers: Vec<Layer>,
    ) -> Self {
        Self {
            platform,
            runtime_config,
            config_digest: sha256_digest(&config_json),
            config_json: Bytes::from(config_json),
            layers,
        }
    }

    /// The platform.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The runtime config the image was built with (what a test expects to read back).
    pub fn runtime_config(&self) -> &RuntimeConfig {
        &self.runtime_config
    }

    /// The config blob.
    pub fn config_json(&self) -> &[u8] {
        &self.config_json
    }

    /// The config blob digest: the image ID.
    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }

    /// Layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Sum of the blob sizes of config and layers.
    pub fn total_size(&self) -> u64 {
        self.config_json.len() as u64 + self.layers.iter().map(Layer::size).sum::<u64>()
    }

    /// The manifest body for `format`. Its digest is `sha256` of these bytes.
    pub fn manifest(&self, format: ManifestFormat) -> Vec<u8> {
        let manifest = Manifest {
            schema_version: 2,
            media_type: format.media_type(),
            config: Descriptor {
                media_type: format.config_media_type(),
                digest: &self.config_digest,
                size: self.config_json.len() as u64,
                platform: None,
            },
            layers: self
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type(format),
                    digest: l.digest(),
                    size: l.size(),
                    platform: None,
                })
                .collect(),
        };
        serde_json::to_vec(&manifest).expect("serialising a manifest cannot fail")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor<'a> {
    pub media_type: &'a str,
    pub digest: &'a str,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson<'a>>,
}

#[derive(Serialize)]
pub(crate) struct PlatformJson<'a> {
    pub architecture: &'a str,
    pub os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index<'a> {
    pub schema_version: u32,
    pub media_type: &'a str,
    pub manifests: Vec<Descriptor<'a>>,
}

/// A multi-platform image: one [`Image`] per platform, pushed as an index.
#[derive(Debug, Clone, Default)]
pub struct ImageIndex {
    /// `(platform written in the index, image)` pairs, in index order.
    pub entries: Vec<(Platform, Image)>,
}

impl ImageIndex {
    /// Finds the image for `platform`.
    pub fn image_for(&self, platform: &Platform) -> Option<&Image> {
        self.entries
            .iter()
            .find(|(p, _)| p == platform)
            .map(|(_, image)| image)
    }

    /// The index body for `format`, given the children's manifests.
    pub fn index(&self, format: IndexFormat) -> Vec<u8> {
        let child = format.child_format();
        let manifests: Vec<(Vec<u8>, &Platform)> = self
            .entries
            .iter()
            .map(|(platform, image)| (image.manifest(child), platform))
            .collect();
        let digests: Vec<String> = manifests.iter().map(|(m, _)| sha256_digest(m)).collect();
        let index = Index {
            schema_version: 2,
            media_type: format.media_type(),
            manifests: manifests
                .iter()
                .zip(&digests)
                .map(|((body, platform), digest)| Descriptor {
                    media_type: child.media_type(),
                    digest,
                    size: body.len() as u64,
                    platform: Some(PlatformJson {
                        architecture: &platform.architecture,
                        os: &platform.os,
                        variant: platform.variant.as_deref(),
                    }),
                })
                .collect(),
        };
        serde_json::to_vec(&index).expect("serialising an index cannot fail")
    }
}
