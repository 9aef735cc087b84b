//! A real `docker-registry` (CNCF distribution 2.8) process per test.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::token::{
    Issuer, TokenAuthOptions, TokenRequest, TokenServer, TOKEN_ISSUER, TOKEN_SERVICE,
};
use crate::util::{free_port, random_hex};

/// Environment variable that overrides the registry binary path.
pub const REGISTRY_BIN_ENV: &str = "BERTH_TEST_REGISTRY_BIN";

/// How long to wait for the registry to answer `GET /v2/`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which authentication a [`Registry`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No authentication: anyone may push and pull.
    Anonymous,
    /// HTTP Basic against an htpasswd (bcrypt) file.
    Basic {
        /// The only valid user name.
        username: String,
        /// Its password.
        password: String,
    },
    /// Bearer tokens from the in-process token server.
    Token {
        /// The only valid user name at the token server.
        username: String,
        /// Its password.
        password: String,
    },
}

/// One line of the registry's access log (Apache combined format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request target (path and query), e.g. `/v2/busybox/blobs/sha256:...`.
    pub path: String,
    /// Response status.
    pub status: u16,
}

/// A `docker-registry` process listening on a free 127.0.0.1 port, with its
/// storage in a temporary directory.
///
/// Dropping it kills the process (SIGKILL + wait) and deletes the directory.
/// On Linux the process is also bound to the test process with
/// `PR_SET_PDEATHSIG`, so a test binary killed outright leaves no registry behind.
///
/// ```no_run
/// use berth_testkit::Registry;
/// let registry = Registry::start();
/// println!("pull from {}/busybox:latest", registry.host());
/// ```
pub struct Registry {
    child: Child,
    dir: TempDir,
    port: u16,
    auth: RegistryAuth,
    token_server: Option<TokenServer>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("auth", &self.auth)
            .finish()
    }
}

impl Registry {
    /// Starts an anonymous registry (no authentication).
    ///
    /// # Panics
    /// If the registry cannot be started: test setup failure is fatal. The
    /// message says why (binary missing, log tail, ...).
    pub fn start() -> Self {
        Self::launch(RegistryAuth::Anonymous, None)
            .unwrap_or_else(|e| panic!("starting the test registry failed: {e:#}"))
    }

    /// Starts a registry requiring HTTP Basic authentication as `username:password`.
    ///
    /// # Panics
    /// If the registry cannot be started.
    pub fn start_basic_auth(username: &str, password: &str) -> Self {
        let auth = RegistryAuth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        Self::launch(auth, None)
            .unwrap_or_else(|e| panic!("starting the basic-auth test registry failed: {e:#}"))
    }

    /// Starts a registry using token authentication, with a token server
    /// (in this process) that accepts `username:password`.
    ///
    /// See [`crate::token`] for the protocol the token server speaks.
    ///
    /// # Panics
    /// If the registry or the token server cannot be started.
    pub fn start_token_auth(username: &str, password: &str) -> Self {
        Self::start_token_auth_with(username, password, TokenAuthOptions::default())
    }

    /// Like [`Registry::start_token_auth`] with explicit token server options.
    ///
    /// # Panics
    /// If the registry or the token server cannot be started.
    pub fn start_token_auth_with(
        username: &str,
        password: &str,
        options: TokenAuthOptions,
    ) -> Self {
        let auth = RegistryAuth::Token {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        Self::launch(auth, Some(options))
            .unwrap_or_else(|e| panic!("starting the token-auth test registry failed: {e:#}"))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authentication this registry enforces.
    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// `(username, password)` for authenticated registries, `None` for anonymous ones.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { username, password }
            | RegistryAuth::Token { username, password } => Some((username, password)),
        }
    }

    /// The token server's realm URL (token-auth registries only).
    pub fn token_realm(&self) -> Option<String> {
        self.token_server.as_ref().map(TokenServer::realm)
    }

    /// The token `service` (audience) the registry expects.
    pub fn token_service(&self) -> &'static str {
        TOKEN_SERVICE
    }

    /// Requests served by the token server so far (empty unless token auth).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.token_server
            .as_ref()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// The temporary directory holding config, logs and storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the registry stores blob `digest` (`sha256:<hex>`) on disk.
    ///
    /// Overwriting this file (same length) makes the registry serve content
    /// that does not match its digest: the way to test digest verification
    /// on pull with a real registry.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        let prefix = hex.get(..2).unwrap_or(hex);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs")
            .join(algo)
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// The registry's application log (stderr), for diagnostics.
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Parses the access log (every HTTP request the registry answered).
    ///
    /// A line is written when the registry's handler returns, which can be a
    /// few milliseconds after the client got the last byte; use
    /// [`Registry::settled_access_log`] right after a pull.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        let text = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_access_line).collect()
    }

    /// Waits until the access log stops growing (no write for 200 ms, at most
    /// 5 s), then returns it.
    pub fn settled_access_log(&self) -> Vec<AccessLogEntry> {
        let path = self.dir.path().join("access.log");
        let size = || fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = size();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let now = size();
            if now == last {
                break;
            }
            last = now;
        }
        self.access_log()
    }

    /// How many successful `GET`s of blob `digest` the registry served
    /// (waits for the log to settle first).
    pub fn blob_get_count(&self, digest: &str) -> usize {
        let suffix = format!("/blobs/{digest}");
        self.settled_access_log()
            .iter()
            .filter(|e| e.method == "GET" && e.status == 200 && e.path.ends_with(&suffix))
            .count()
    }

    fn launch(auth: RegistryAuth, token_options: Option<TokenAuthOptions>) -> Result<Self> {
        let binary = registry_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-test-registry-")
            .tempdir()
            .context("create registry temp dir")?;

        let (auth_yaml, token_server) = match &auth {
            RegistryAuth::Anonymous => (String::new(), None),
            RegistryAuth::Basic { username, password } => {
                let path = dir.path().join("htpasswd");
                // Cost 4 is bcrypt's minimum: the registry checks it on every request.
                let hash = bcrypt::hash(password, 4).context("bcrypt the password")?;
                fs::write(&path, format!("{username}:{hash}\n")).context("write htpasswd")?;
                let yaml = format!(
                    "auth:\n  htpasswd:\n    realm: berth-test-realm\n    path: {}\n",
                    yaml_str(&path)
                );
                (yaml, None)
            }
            RegistryAuth::Token { username, password } => {
                let issuer = Issuer::generate()?;
                let bundle = dir.path().join("token-root.pem");
                fs::write(&bundle, issuer.cert_pem()).context("write rootcertbundle")?;
                let server = TokenServer::start(
                    issuer,
                    username,
                    password,
                    token_options.unwrap_or_default(),
                )?;
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    yaml_str(server.realm()),
                    yaml_str(&bundle)
                );
                (yaml, Some(server))
            }
        };

        // The port is picked before the registry binds it; retry if someone else got it first.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port().context("pick a free port")?;
            match start_process(&binary, dir.path(), port, &auth_yaml) {
                Ok(child) => {
                    return Ok(Self {
                        child,
                        dir,
                        port,
                        auth,
                        token_server,
                    })
                }
                Err(StartError::PortTaken) => continue,
                Err(StartError::Other(err)) => last_error = Some(err),
            }
            break;
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no free port after 5 attempts")))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum StartError {
    PortTaken,
    Other(anyhow::Error),
}

fn start_process(
    binary: &Path,
    dir: &Path,
    port: u16,
    auth_yaml: &str,
) -> Result<Child, StartError> {
    let other = StartError::Other;
    let storage = dir.join("storage");
    let config = format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
{auth_yaml}",
        storage = yaml_str(&storage),
        secret = random_hex(16),
    );
    let config_path = dir.join("config.yml");
    let log_path = dir.join("registry.log");
    fs::write(&config_path, config)
        .context("write registry config")
        .map_err(other)?;
    let access_log = fs::File::create(dir.join("access.log"))
        .context("create access.log")
        .map_err(other)?;
    let server_log = fs::File::create(&log_path)
        .context("create registry.log")
        .map_err(other)?;

    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .arg(&config_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(access_log)
        .stderr(server_log);
    let mut child = crate::process::spawn_bound_to_test(cmd)
        .with_context(|| format!("spawn {}", binary.display()))
        .map_err(other)?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("address already in use") {
                return Err(StartError::PortTaken);
            }
            return Err(other(anyhow::anyhow!(
                "registry exited with {status} during startup; log:\n{}",
                tail(&log, 40)
            )));
        }
        if probe_v2(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(other(anyhow::anyhow!(
                "registry did not answer GET /v2/ within {STARTUP_TIMEOUT:?}; log:\n{}",
                tail(&log, 40)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True once `GET /v2/` gets any HTTP answer (200 or 401 depending on auth).
fn probe_v2(port: u16) -> bool {
    let probe = || -> std::io::Result<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    matches!(probe(), Ok(head) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 401"))
}

fn registry_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(REGISTRY_BIN_ENV) {
        return Ok(PathBuf::from(path));
    }
    let default = PathBuf::from("/usr/bin/docker-registry");
    if default.is_file() {
        return Ok(default);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["docker-registry", "registry"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "no registry binary: install the Debian package `docker-registry` \
         (apt-get install docker-registry) or set {REGISTRY_BIN_ENV}"
    )
}

/// A string quoted for YAML (JSON strings are valid YAML scalars).
fn yaml_str(value: impl AsRef<std::ffi::OsStr>) -> String {
    serde_json::Value::String(value.as_ref().to_string_lossy().into_owned()).to_string()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Parses `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 123 "ref" "ua"`.
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(AccessLogEntry {
        method,
        path,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_line() {
        let line = r#"127.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET /v2/a/blobs/sha256:ab HTTP/1.1" 200 42 "" "reqwest""#;
        assert_eq!(
            parse_access_line(line),
            Some(AccessLogEntry {
                method: "GET".into(),
                path: "/v2/a/blobs/sha256:ab".into(),
                status: 200
            })
        );
        assert_eq!(parse_access_line("time=... level=info msg=hello"), None);
    }
}
