//! Image references, normalised the way docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`, `ghcr.io/a/b@sha256:…` keeps
//! its digest, `name:tag@digest` pulls by digest and remembers the tag.

use std::fmt;

use oci_spec::distribution::Reference;

use crate::error::{Error, Result};

/// A normalised, validated image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s`. An empty, upper-case or otherwise malformed
    /// reference is `InvalidReference` with the reason.
    pub fn parse(s: &str) -> Result<ImageRef> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.trim() != s || s.is_empty() {
            return Err(invalid("empty or surrounded by white space".into()));
        }
        if is_image_id(s) {
            return Err(invalid(
                "that is an image id, not a reference that can be pulled".into(),
            ));
        }
        let r = Reference::try_from(s).map_err(|e| {
            let hint = if s.chars().any(|c| c.is_ascii_uppercase()) {
                " (repository names must be lower case)"
            } else {
                ""
            };
            invalid(format!("{e}{hint}"))
        })?;
        let mut registry = r.registry().to_string();
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = "docker.io".into();
        }
        let mut repository = r.repository().to_string();
        // The parser accepts an upper-case first component as a registry
        // host, then files it under docker.io when it is not one.
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lower case".into()));
        }
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let digest = r.digest().map(str::to_string);
        if let Some(d) = &digest {
            validate_digest(d).map_err(invalid)?;
        }
        // `name@digest` carries no tag; the parser adds `latest` only when neither is given.
        let tag = r.tag().map(str::to_string);
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as written in the reference (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// The repository path within the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
    /// `registry/repository:tag`, the repo tag an image pulled by this
    /// reference carries (none when pulled by digest alone).
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }
    /// `registry/repository@digest` for a manifest digest.
    pub fn repo_digest(&self, manifest_digest: &str) -> String {
        format!("{}@{manifest_digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True for `sha256:<64 hex>` or a bare 64-hex image id.
pub fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Checks a `sha256:<hex>` digest (the only algorithm Berth stores).
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        Some(("sha256", _)) => Err(format!("digest {d:?} is not 64 lower-case hex digits")),
        Some((alg, _)) => Err(format!(
            "digest algorithm {alg:?} is not supported (sha256 only)"
        )),
        None => Err(format!("{d:?} is not a digest (algorithm:hex)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b/c:t"), "127.0.0.1:5000/a/b/c:t");
    }

    #[test]
    fn digests_and_tag_at_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.object(), d);
        assert_eq!(r.repo_tag(), None);
        let r = ImageRef::parse(&format!("busybox:1.0@{d}")).unwrap();
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.object(), d);
        assert_eq!(r.repo_digest(&d), format!("docker.io/library/busybox@{d}"));
    }

    #[test]
    fn malformed_references() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "UPPER/case",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "a//b",
            "busybox:tag with space",
            &"a".repeat(300),
        ] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidReference { .. }), "{bad:?}: {e}");
        }
        let e = ImageRef::parse("Busybox").unwrap_err().to_string();
        assert!(e.contains("lower case"), "{e}");
    }

    #[test]
    fn image_ids() {
        let hex = "b".repeat(64);
        assert!(is_image_id(&hex));
        assert!(is_image_id(&format!("sha256:{hex}")));
        assert!(!is_image_id("busybox"));
        assert!(ImageRef::parse(&hex).is_err());
    }
}
