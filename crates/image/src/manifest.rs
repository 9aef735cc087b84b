//! The JSON documents of an image: index, manifest and config. Only the
//! fields Berth uses are modelled, and every one is optional where the
//! specs allow, so real-world documents parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<DescPlatform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DescPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI index or a Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An OCI image manifest or a Docker v2 schema 2 manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// What a fetched manifest document is.
#[derive(Debug, Clone)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Classifies and parses a manifest body, by its Content-Type and, when
/// that is missing or generic, by its own `mediaType` and shape.
pub fn parse_document(content_type: &str, body: &[u8]) -> Result<Document> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let invalid = |detail: String| Error::InvalidContent {
        what: "manifest".into(),
        detail,
    };
    let probe: Probe = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let mt = if !probe.media_type.is_empty() {
        probe.media_type.as_str()
    } else {
        content_type
    };
    if probe.schema_version == 1 || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED {
        return Err(Error::Unsupported {
            what: "manifest format".into(),
            detail: "Docker image manifest schema 1 is deprecated and not supported; \
                     push the image again with a current client (schema 2 or OCI)"
                .into(),
        });
    }
    let is_index = match mt {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        _ => probe.manifests.is_some() && probe.config.is_none(),
    };
    if probe.schema_version != 2 {
        return Err(invalid(format!(
            "schemaVersion {} (expected 2)",
            probe.schema_version
        )));
    }
    if is_index {
        let i: Index = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
        Ok(Document::Index(i))
    } else {
        if probe.config.is_none() {
            return Err(invalid(format!(
                "media type {mt:?} is neither a manifest nor an index"
            )));
        }
        let m: Manifest = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            crate::reference::validate_digest(&d.digest).map_err(invalid)?;
            if d.size < 0 {
                return Err(invalid(format!(
                    "descriptor {} has a negative size",
                    d.digest
                )));
            }
        }
        Ok(Document::Manifest(m))
    }
}

/// The parts of an image config Berth reads (OCI image-spec `config.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

/// The execution parameters of an image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// The layer list of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Parses an image config, checking what the pull relies on.
pub fn parse_config(body: &[u8]) -> Result<ImageConfig> {
    let c: ImageConfig = serde_json::from_slice(body).map_err(|e| Error::InvalidContent {
        what: "image config".into(),
        detail: e.to_string(),
    })?;
    if c.rootfs.kind != "layers" {
        return Err(Error::InvalidContent {
            what: "image config".into(),
            detail: format!("rootfs.type is {:?}, expected \"layers\"", c.rootfs.kind),
        });
    }
    for d in &c.rootfs.diff_ids {
        crate::reference::validate_digest(d).map_err(|detail| Error::InvalidContent {
            what: "image config".into(),
            detail,
        })?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_document("", m.as_bytes()).unwrap(),
            Document::Manifest(_)
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert!(matches!(
            parse_document(OCI_INDEX, i.as_bytes()).unwrap(),
            Document::Index(_)
        ));
        assert!(matches!(
            parse_document("", i.as_bytes()).unwrap(),
            Document::Index(_)
        ));
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let e = parse_document(DOCKER_SCHEMA1_SIGNED, s1.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        assert!(parse_document("", b"not json").is_err());
        let bad = r#"{"schemaVersion":2,"config":{"digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse_document(OCI_MANIFEST, bad.as_bytes()).is_err());
    }

    #[test]
    fn config_checks() {
        let d = format!("sha256:{}", "b".repeat(64));
        let ok = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"1000","Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let c = parse_config(ok.as_bytes()).unwrap();
        assert_eq!(c.config.unwrap().user, "1000");
        assert!(parse_config(br#"{"rootfs":{"type":"other","diff_ids":[]}}"#).is_err());
        assert!(parse_config(br#"{"rootfs":{"type":"layers","diff_ids":["x"]}}"#).is_err());
    }
}
