//! The platform (os/arch/variant) to select from multi-platform images.

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, with Go's architecture names as OCI uses them.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match arch {
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?} (expected os/arch[/variant])"
            )),
        }
    }

    /// How well an index entry's platform matches this one: `None` if it
    /// can't run here, higher is better. An exact variant beats a missing one;
    /// arm64 treats a missing variant as v8.
    pub fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || arch != self.architecture {
            return None;
        }
        let want = self.variant.as_deref();
        match (want, variant) {
            (_, None) | (_, Some("")) => Some(1),
            (Some(w), Some(v)) if w == v => Some(2),
            (None, Some(_)) => Some(0),
            // An older arm variant runs on a newer CPU (v6 on v7); the reverse does not.
            (Some(w), Some(v)) if self.architecture == "arm" && v < w => Some(0),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring() {
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(amd.score("linux", "amd64", None), Some(1));
        assert_eq!(amd.score("linux", "arm64", None), None);
        assert_eq!(amd.score("windows", "amd64", None), None);
        let arm = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(arm.score("linux", "arm", Some("v7")), Some(2));
        assert_eq!(arm.score("linux", "arm", Some("v6")), Some(0));
        assert_eq!(arm.score("linux", "arm", Some("v8")), None);
        assert!(Platform::parse("linux").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
