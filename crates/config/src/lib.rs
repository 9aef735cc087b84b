//! Berth's daemon configuration.
//!
//! The file is TOML (default `/etc/berth/config.toml`); a missing file means
//! every default. Command-line flags override the file (see [`Overrides`]).
//! Unknown keys are refused so that a typo never silently changes behaviour.
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";
/// Persistent state: images, snapshots, container metadata.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
/// Volatile state: sockets, lock files, per-boot data.
pub const DEFAULT_STATE: &str = "/run/berth";
/// The CRI socket kubelet and crictl connect to.
pub const DEFAULT_LISTEN: &str = "unix:///run/berth/berth.sock";

/// Errors while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state directory (`--root`).
    pub root: PathBuf,
    /// Volatile state directory (`--state`).
    pub state: PathBuf,
    /// The CRI endpoint, `unix:///path` (`--listen`).
    pub listen: String,
    /// Group that may use the socket; the socket mode becomes 0660 instead of 0600.
    pub socket_group: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter directive.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Image service settings.
    pub image: ImageConfig,
    /// Per-registry settings keyed by host (`docker.io`, `registry.k8s.io:443`...).
    pub registry: BTreeMap<String, RegistryHost>,
    /// Pod networking.
    pub cni: CniConfig,
    /// CRI runtime handlers served by an external OCI runtime, keyed by
    /// handler name. The default handler (`""`) is Berth's built-in one.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// Pods and containers.
    pub pod: PodConfig,
    /// The streaming server (exec, attach, port-forward URLs).
    pub stream: StreamConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Appends every unary CRI call (request, response, status) to this
    /// file as JSON lines: a debugging aid, and how the kubelet fixtures of
    /// the tests are recorded. Off by default.
    pub record_requests: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            listen: DEFAULT_LISTEN.into(),
            socket_group: None,
            record_requests: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            image: ImageConfig::default(),
            registry: BTreeMap::new(),
            cni: CniConfig::default(),
            runtimes: BTreeMap::from([(
                "runc".to_string(),
                RuntimeHandler {
                    path: "runc".into(),
                },
            )]),
            pod: PodConfig::default(),
            stream: StreamConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The daemon's Prometheus metrics endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` over HTTP on this address (`127.0.0.1:9099`);
    /// unset (the default): not served.
    pub address: Option<std::net::SocketAddr>,
}

/// The streaming server that Exec, Attach and PortForward URLs point at.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// The address it listens on: loopback by default, as containerd's
    /// (the kubelet on the same node proxies clients to it).
    pub address: std::net::IpAddr,
    /// Its TCP port; 0 picks a free one at start.
    pub port: u16,
    /// A stream with no traffic for this long is closed.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Serve HTTPS with this certificate chain (PEM); with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            idle_timeout: Duration::from_secs(4 * 3600),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// Image pulling and storage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Layers downloaded (and unpacked) at once, per daemon.
    pub max_concurrent_downloads: usize,
    /// A pull fails if no bytes arrive for this long (`"5m"`, `"30s"`).
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub image_pull_progress_timeout: Duration,
    /// A docker-style `config.json` with registry credentials, used when the
    /// CRI request carries none.
    pub credentials_file: Option<PathBuf>,
    /// Images that are never garbage-collected by kubelet (ImageStatus `pinned`).
    pub pinned_images: Vec<String>,
    /// The platform to pull from multi-platform images, `os/arch[/variant]`;
    /// empty means this machine's.
    pub platform: Option<String>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            max_concurrent_downloads: 3,
            image_pull_progress_timeout: Duration::from_secs(300),
            credentials_file: None,
            pinned_images: Vec::new(),
            platform: None,
        }
    }
}

/// Where CNI network configurations and plugins are.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// The first `.conflist`/`.conf`/`.json` file (in name order) is the pod network.
    pub conf_dir: PathBuf,
    /// Directories searched for plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// When `conf_dir` holds no network at start, write Berth's default
    /// bridge network there (`87-berth-bridge.conflist`: bridge `berth0`,
    /// 10.89.0.0/16, masquerading, host ports), as CRI-O and podman do.
    pub install_default: bool,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            install_default: true,
        }
    }
}

/// An external OCI runtime behind a CRI runtime handler.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The runtime binary (runc, crun); a bare name is looked up in `PATH`.
    pub path: PathBuf,
}

/// Pod and container defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodConfig {
    /// Size of each pod's `/dev/shm` tmpfs, in bytes.
    pub shm_size: u64,
    /// How long StopPodSandbox waits for containers that ignore SIGTERM.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub stop_timeout: Duration,
}

impl Default for PodConfig {
    fn default() -> Self {
        PodConfig {
            shm_size: 64 << 20,
            stop_timeout: Duration::from_secs(0),
        }
    }
}

/// How to reach one registry host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryHost {
    /// Mirrors tried in order before the host itself: `http://h:p`,
    /// `https://h`, or a bare `h:p` (HTTPS unless `insecure`).
    pub mirrors: Vec<String>,
    /// Try the host itself after the mirrors (default true).
    pub upstream: bool,
    /// Speak plain HTTP to the host (and to bare mirror addresses).
    pub insecure: bool,
    /// PEM file of CA certificates to trust for this host, in addition to
    /// the system roots (a private registry's CA). Applies when this host is
    /// contacted, as upstream or as another registry's mirror.
    pub ca_file: Option<PathBuf>,
}

impl Default for RegistryHost {
    fn default() -> Self {
        RegistryHost {
            mirrors: Vec::new(),
            upstream: true,
            insecure: false,
            ca_file: None,
        }
    }
}

/// Values given on the command line; each one that is set wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub listen: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Reads `path` (or the default path); a missing file at the *default*
    /// path means defaults, a missing file that was asked for explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| match e {
                Error::Parse { source, .. } => Error::Parse { path, source },
                other => other,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(Error::Read { path, source }),
        }
    }

    /// Parses configuration text and validates it.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: Overrides) -> Result<(), Error> {
        if let Some(v) = o.root {
            self.root = v;
        }
        if let Some(v) = o.state {
            self.state = v;
        }
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        self.validate()
    }

    /// The unix socket path of `listen`.
    pub fn socket_path(&self) -> Result<PathBuf, Error> {
        socket_path(&self.listen)
    }

    fn validate(&self) -> Result<(), Error> {
        socket_path(&self.listen)?;
        if !self.root.is_absolute() || !self.state.is_absolute() {
            return Err(Error::Invalid(format!(
                "root ({}) and state ({}) must be absolute paths",
                self.root.display(),
                self.state.display()
            )));
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(Error::Invalid(
                "image.max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if self.stream.idle_timeout.is_zero() {
            return Err(Error::Invalid(
                "stream.idle_timeout must be positive".into(),
            ));
        }
        if self.image.image_pull_progress_timeout.is_zero() {
            return Err(Error::Invalid(
                "image.image_pull_progress_timeout must be positive".into(),
            ));
        }
        for (host, h) in &self.registry {
            for m in &h.mirrors {
                if m.is_empty() || m.contains(char::is_whitespace) {
                    return Err(Error::Invalid(format!(
                        "registry.{host:?}: mirror {m:?} is not an address"
                    )));
                }
                if let Some((scheme, _)) = m.split_once("://") {
                    if scheme != "http" && scheme != "https" {
                        return Err(Error::Invalid(format!(
                            "registry.{host:?}: mirror {m:?} must use http:// or https://"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Extracts the socket path from a `unix://` endpoint (a bare absolute path is accepted too).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(Error::Invalid(format!(
            "listen address {endpoint:?} must be unix:///absolute/path"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Parses a duration given as `"5m"`, `"1m30s"`, `"300ms"` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(
            c.socket_path().unwrap(),
            PathBuf::from("/run/berth/berth.sock")
        );
        assert_eq!(
            c.image.image_pull_progress_timeout,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn mirror_form_from_the_docs() {
        let c = Config::parse("[registry.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n")
            .unwrap();
        let h = &c.registry["docker.io"];
        assert_eq!(h.mirrors, vec!["http://127.0.0.1:5000".to_string()]);
        assert!(h.upstream);
        assert!(!h.insecure);
    }

    #[test]
    fn serialises_back_to_toml() {
        let c = Config::parse("[registry.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n")
            .unwrap();
        let text = toml::to_string(&c).unwrap();
        let again = Config::parse(&text).unwrap();
        assert_eq!(
            again.registry["docker.io"].mirrors,
            c.registry["docker.io"].mirrors
        );
        assert_eq!(
            again.image.image_pull_progress_timeout,
            c.image.image_pull_progress_timeout
        );
    }

    #[test]
    fn durations() {
        let c = Config::parse("[image]\nimage_pull_progress_timeout = \"1m30s\"\n").unwrap();
        assert_eq!(c.image.image_pull_progress_timeout, Duration::from_secs(90));
        let c = Config::parse("[image]\nimage_pull_progress_timeout = 7\n").unwrap();
        assert_eq!(c.image.image_pull_progress_timeout, Duration::from_secs(7));
        assert!(Config::parse("[image]\nimage_pull_progress_timeout = \"soon\"\n").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("roots = \"/x\"\n").is_err());
        assert!(Config::parse("listen = \"tcp://1.2.3.4:1\"\n").is_err());
        assert!(Config::parse("root = \"relative\"\n").is_err());
        assert!(Config::parse("[registry.x]\nmirrors = [\"ftp://m\"]\n").is_err());
        assert!(Config::parse("[image]\nmax_concurrent_downloads = 0\n").is_err());
    }

    #[test]
    fn flags_override_file() {
        let mut c = Config::parse("root = \"/a\"\n").unwrap();
        c.apply(Overrides {
            root: Some("/b".into()),
            listen: Some("unix:///tmp/x.sock".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/b"));
        assert_eq!(c.socket_path().unwrap(), PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn missing_default_file_is_defaults_but_missing_explicit_file_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&missing)),
            Err(Error::Read { .. })
        ));
    }
}
