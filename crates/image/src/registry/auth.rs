//! Registry credentials and the token-auth handshake.
//!
//! Credentials come from the CRI request (`AuthConfig`) or from a docker-style
//! `config.json`. A registry that answers 401 says how to authenticate in
//! `WWW-Authenticate`: `Basic` (send the credentials) or `Bearer` (get a token
//! from the realm: GET with basic credentials or anonymously, or POST an
//! OAuth2 refresh-token grant when we hold an identity token).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use crate::error::{Error, Result};

/// What we present to a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credential {
    /// No credentials.
    #[default]
    Anonymous,
    /// Username and password (HTTP Basic, or the token realm's basic auth).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's "identity token").
    IdentityToken { username: String, token: String },
    /// A bearer token to send as is (docker's "registry token").
    RegistryToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => write!(f, "Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, ***)")
            }
            Credential::RegistryToken(_) => write!(f, "RegistryToken(***)"),
        }
    }
}

/// The fields of a CRI `AuthConfig` (and of a `config.json` entry).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthFields {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub server_address: String,
    #[serde(default, alias = "identitytoken")]
    pub identity_token: String,
    #[serde(default, alias = "registrytoken")]
    pub registry_token: String,
}

impl AuthFields {
    /// Turns the fields into one credential, in docker's order of preference.
    pub fn credential(&self) -> Result<Credential> {
        if !self.registry_token.is_empty() {
            return Ok(Credential::RegistryToken(self.registry_token.clone()));
        }
        let (mut username, mut password) = (self.username.clone(), self.password.clone());
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|e| Error::Credentials(format!("auth is not base64: {e}")))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| Error::Credentials("auth is not UTF-8".into()))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| Error::Credentials("auth must encode username:password".into()))?;
            username = u.to_string();
            password = p.to_string();
        }
        if !self.identity_token.is_empty() {
            return Ok(Credential::IdentityToken {
                username,
                token: self.identity_token.clone(),
            });
        }
        if username.is_empty() && password.is_empty() {
            return Ok(Credential::Anonymous);
        }
        Ok(Credential::Basic { username, password })
    }
}

/// Credentials for one pull: those of the request, then those of the file.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    request: Option<(Credential, Option<String>)>,
    file: HashMap<String, Credential>,
}

impl Credentials {
    /// `request` is the CRI AuthConfig, if any; `file` a docker `config.json`.
    pub fn new(request: Option<&AuthFields>, file: Option<&Path>) -> Result<Credentials> {
        let request = match request {
            Some(a) => {
                let c = a.credential()?;
                let server = (!a.server_address.is_empty()).then(|| host_of(&a.server_address));
                (c != Credential::Anonymous).then_some((c, server))
            }
            None => None,
        };
        let file = match file {
            Some(p) => load_docker_config(p)?,
            None => HashMap::new(),
        };
        Ok(Credentials { request, file })
    }

    /// The credential to present to `endpoint_host` when pulling an image of
    /// `image_registry`. The request's credentials go only to the image's own
    /// registry (or to the host named in `server_address`), never to a mirror
    /// they were not meant for; the file is looked up by the endpoint's host.
    pub fn for_endpoint(&self, image_registry: &str, endpoint_host: &str) -> Credential {
        if let Some((c, server)) = &self.request {
            let target = server.as_deref().unwrap_or(image_registry);
            if same_registry(target, endpoint_host) {
                return c.clone();
            }
        }
        for (k, c) in &self.file {
            if same_registry(k, endpoint_host) {
                return c.clone();
            }
        }
        Credential::Anonymous
    }
}

fn same_registry(a: &str, b: &str) -> bool {
    let canon = |h: &str| match h {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    };
    canon(a) == canon(b)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:port` stays.
fn host_of(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

fn load_docker_config(path: &Path) -> Result<HashMap<String, Credential>> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        auths: HashMap<String, AuthFields>,
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(crate::error::io("read credentials file", path)(e)),
    };
    let f: File = serde_json::from_slice(&text)
        .map_err(|e| Error::Credentials(format!("credentials file {}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (k, v) in f.auths {
        out.insert(host_of(&k), v.credential()?);
    }
    Ok(out)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the first challenge we understand from a `WWW-Authenticate` value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k="v", k2=v2` with quoted strings that may contain commas and escapes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// The JSON a token realm answers with.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        let t = if self.access_token.is_empty() {
            self.token
        } else {
            self.access_token
        };
        (!t.is_empty()).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn auth_fields_precedence() {
        let a = AuthFields {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:w"),
            ..Default::default()
        };
        assert_eq!(
            a.credential().unwrap(),
            Credential::Basic {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        let a = AuthFields {
            username: "u".into(),
            identity_token: "tok".into(),
            ..Default::default()
        };
        assert!(matches!(
            a.credential().unwrap(),
            Credential::IdentityToken { .. }
        ));
        let a = AuthFields {
            registry_token: "rt".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert_eq!(
            a.credential().unwrap(),
            Credential::RegistryToken("rt".into())
        );
        let a = AuthFields {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(a.credential().is_err());
        assert_eq!(
            AuthFields::default().credential().unwrap(),
            Credential::Anonymous
        );
    }

    #[test]
    fn request_credentials_do_not_leak_to_mirrors() {
        let a = AuthFields {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let c = Credentials::new(Some(&a), None).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "docker.io"),
            Credential::Basic { .. }
        ));
        assert_eq!(
            c.for_endpoint("docker.io", "127.0.0.1:5000"),
            Credential::Anonymous
        );
        let a = AuthFields {
            server_address: "http://127.0.0.1:5000".into(),
            ..a
        };
        let c = Credentials::new(Some(&a), None).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "127.0.0.1:5000"),
            Credential::Basic { .. }
        ));
    }

    #[test]
    fn docker_config_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("fu:fp");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"m:5000":{{"identitytoken":"it"}}}}}}"#),
        )
        .unwrap();
        let c = Credentials::new(None, Some(&p)).unwrap();
        assert!(matches!(
            c.for_endpoint("docker.io", "docker.io"),
            Credential::Basic { .. }
        ));
        assert!(matches!(
            c.for_endpoint("x", "m:5000"),
            Credential::IdentityToken { .. }
        ));
        assert_eq!(c.for_endpoint("x", "other"), Credential::Anonymous);
        assert!(Credentials::new(None, Some(&d.path().join("missing.json"))).is_ok());
        std::fs::write(&p, "{").unwrap();
        assert!(Credentials::new(None, Some(&p)).is_err());
    }
}
