//! Which addresses serve a registry host: its mirrors in order, then the host
//! itself unless the configuration says not to.

use std::collections::BTreeMap;

use berth_config::RegistryHost;

/// One address that may serve a registry's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://h:p` or `https://h`, no trailing slash.
    pub base: String,
    /// `h:p` as used for credentials and logs.
    pub host: String,
    /// True for a configured mirror, false for the registry itself.
    pub mirror: bool,
    /// Extra CA certificates to trust for this endpoint (its host's `ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The endpoints to try for `registry`, in order.
pub fn endpoints(registry: &str, config: &BTreeMap<String, RegistryHost>) -> Vec<Endpoint> {
    let default = RegistryHost::default();
    let host_cfg = config.get(registry).unwrap_or(&default);
    let mut out = Vec::new();
    for m in &host_cfg.mirrors {
        let m = m.trim_end_matches('/');
        let (base, host) = match m.split_once("://") {
            Some((scheme, rest)) => (format!("{scheme}://{rest}"), rest.to_string()),
            None if host_cfg.insecure || is_loopback(m) => (format!("http://{m}"), m.to_string()),
            None => (format!("https://{m}"), m.to_string()),
        };
        // A mirror URL may carry a path prefix (`https://m/v2/proxy`); we keep
        // only scheme and authority for `host`, the whole thing for `base`.
        let host = host.split('/').next().unwrap_or_default().to_string();
        let ca_file = config.get(&host).and_then(|h| h.ca_file.clone());
        out.push(Endpoint {
            base,
            host,
            mirror: true,
            ca_file,
        });
    }
    if host_cfg.upstream {
        let target = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if host_cfg.insecure || is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        out.push(Endpoint {
            base: format!("{scheme}://{target}"),
            host: registry.to_string(),
            mirror: false,
            ca_file: host_cfg.ca_file.clone(),
        });
    }
    out
}

/// `localhost` and loopback addresses speak plain HTTP, as docker and containerd assume.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str) -> BTreeMap<String, RegistryHost> {
        berth_config::Config::parse(toml_text).unwrap().registry
    }

    #[test]
    fn mirror_then_upstream() {
        let c = cfg("[registry.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\", \"mirror.example:443\"]\n");
        let e = endpoints("docker.io", &c);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].base, "http://127.0.0.1:5000");
        assert_eq!(e[0].host, "127.0.0.1:5000");
        assert!(e[0].mirror);
        assert_eq!(e[1].base, "https://mirror.example:443");
        assert_eq!(e[2].base, "https://registry-1.docker.io");
        assert_eq!(e[2].host, "docker.io");
        assert!(!e[2].mirror);
    }

    #[test]
    fn no_upstream_and_insecure() {
        let c = cfg(
            "[registry.\"r.example\"]\nmirrors = [\"m:5000\"]\nupstream = false\ninsecure = true\n",
        );
        let e = endpoints("r.example", &c);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].base, "http://m:5000");
        let c = cfg("[registry.\"r.example\"]\ninsecure = true\n");
        assert_eq!(endpoints("r.example", &c)[0].base, "http://r.example");
    }

    #[test]
    fn ca_files_follow_the_host_contacted() {
        let c = cfg("[registry.\"r.example\"]\nmirrors = [\"https://m.example\"]\nca_file = \"/r.pem\"\n[registry.\"m.example\"]\nca_file = \"/m.pem\"\n");
        let e = endpoints("r.example", &c);
        assert_eq!(
            e[0].ca_file.as_deref(),
            Some(std::path::Path::new("/m.pem"))
        );
        assert_eq!(
            e[1].ca_file.as_deref(),
            Some(std::path::Path::new("/r.pem"))
        );
    }

    #[test]
    fn loopback_is_plain_http() {
        let c = BTreeMap::new();
        assert_eq!(
            endpoints("localhost:5000", &c)[0].base,
            "http://localhost:5000"
        );
        assert_eq!(
            endpoints("127.0.0.1:5000", &c)[0].base,
            "http://127.0.0.1:5000"
        );
        assert_eq!(endpoints("quay.io", &c)[0].base, "https://quay.io");
    }
}
