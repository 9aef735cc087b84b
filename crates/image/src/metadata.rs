//! Image records: what each pulled image is (its id, names, layers) and the
//! lookup of an image by id, tag or digest. Persisted one JSON file per image.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::reference::{is_image_id, ImageRef};

/// One layer of an image, as pulled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the compressed blob, from the manifest.
    pub digest: String,
    pub media_type: String,
    /// Compressed size, from the manifest.
    pub size: i64,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// The snapshot holding this layer unpacked.
    pub chain_id: String,
}

/// A pulled image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The config digest, which is the image id.
    pub id: String,
    /// `registry/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repo@digest` names.
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The index (manifest list) the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<String>,
    pub config_media_type: String,
    pub layers: Vec<LayerRecord>,
    /// Bytes of the image as distributed: config plus compressed layers
    /// (what containerd reports).
    pub size: u64,
    /// The `User` of the image config.
    #[serde(default)]
    pub user: String,
    /// When the image was first pulled here (unix seconds).
    pub pulled_at: i64,
}

impl ImageRecord {
    /// The chain ids of the image's layers, bottom first.
    pub fn chain_ids(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|l| l.chain_id.as_str())
    }

    /// The blobs this image keeps in the content store.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.id.as_str(), self.manifest_digest.as_str()]
            .into_iter()
            .chain(self.index_digest.as_deref())
    }

    /// uid (when `User` is numeric) or user name from the image config,
    /// as the CRI reports them.
    pub fn uid_or_name(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// How a lookup string matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Id,
    Tag(String),
    Digest(String),
}

/// The in-memory index of image records.
#[derive(Debug, Default)]
pub struct Images {
    by_id: HashMap<String, ImageRecord>,
}

impl Images {
    pub fn insert(&mut self, r: ImageRecord) {
        self.by_id.insert(r.id.clone(), r);
    }

    pub fn remove(&mut self, id: &str) -> Option<ImageRecord> {
        self.by_id.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    /// Finds the image `spec` names: a full id (with or without `sha256:`),
    /// a reference by tag or digest, or a unique id prefix of 12 or more hex digits.
    pub fn resolve(&self, spec: &str) -> Option<(&ImageRecord, Match)> {
        if is_image_id(spec) {
            let id = if spec.starts_with("sha256:") {
                spec.to_string()
            } else {
                format!("sha256:{spec}")
            };
            if let Some(r) = self.by_id.get(&id) {
                return Some((r, Match::Id));
            }
        }
        if let Ok(r) = ImageRef::parse(spec) {
            if let Some(d) = r.digest() {
                let name = r.repo_digest(d);
                if let Some(i) = self.all().find(|i| i.repo_digests.contains(&name)) {
                    return Some((i, Match::Digest(name)));
                }
            } else if let Some(tag) = r.repo_tag() {
                if let Some(i) = self.all().find(|i| i.repo_tags.contains(&tag)) {
                    return Some((i, Match::Tag(tag)));
                }
            }
        }
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        if hex.len() >= 12 && hex.len() < 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits = self.all().filter(|i| i.id[7..].starts_with(hex));
            if let (Some(one), None) = (hits.next(), hits.next()) {
                return Some((one, Match::Id));
            }
        }
        None
    }

    /// Takes `tag` away from every image but `keep`; returns the ids changed.
    pub fn untag_others(&mut self, tag: &str, keep: &str) -> Vec<String> {
        let mut changed = Vec::new();
        for r in self.by_id.values_mut() {
            if r.id != keep && r.repo_tags.iter().any(|t| t == tag) {
                r.repo_tags.retain(|t| t != tag);
                changed.push(r.id.clone());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: char, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", n.to_string().repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            manifest_digest: String::new(),
            manifest_media_type: String::new(),
            index_digest: None,
            config_media_type: String::new(),
            layers: vec![],
            size: 0,
            user: String::new(),
            pulled_at: 0,
        }
    }

    #[test]
    fn resolve_by_every_form() {
        let md = format!("sha256:{}", "d".repeat(64));
        let mut im = Images::default();
        im.insert(rec(
            'a',
            &[
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:1",
            ],
            &[&format!("docker.io/library/busybox@{md}")],
        ));
        im.insert(rec('b', &["quay.io/x/y:v"], &[]));
        let a = format!("sha256:{}", "a".repeat(64));
        assert_eq!(im.resolve(&a).unwrap().1, Match::Id);
        assert_eq!(im.resolve(&"a".repeat(64)).unwrap().0.id, a);
        assert_eq!(im.resolve(&"a".repeat(12)).unwrap().0.id, a);
        assert!(im.resolve(&"a".repeat(5)).is_none());
        assert_eq!(
            im.resolve("busybox").unwrap().1,
            Match::Tag("docker.io/library/busybox:latest".into())
        );
        assert_eq!(im.resolve("busybox:1").unwrap().0.id, a);
        assert!(matches!(
            im.resolve(&format!("busybox@{md}")).unwrap().1,
            Match::Digest(_)
        ));
        assert!(im.resolve("busybox:2").is_none());
        assert!(im.resolve("quay.io/x/y:v").is_some());
        assert!(im.resolve("NOT VALID").is_none());
    }

    #[test]
    fn user_forms() {
        let mut r = rec('a', &[], &[]);
        assert_eq!(r.uid_or_name(), (None, String::new()));
        r.user = "1234".into();
        assert_eq!(r.uid_or_name(), (Some(1234), String::new()));
        r.user = "1234:5678".into();
        assert_eq!(r.uid_or_name(), (Some(1234), String::new()));
        r.user = "www-data:www".into();
        assert_eq!(r.uid_or_name(), (None, "www-data".into()));
    }
}
