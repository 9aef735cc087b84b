//! A client of the OCI distribution API (what docker/containerd call a
//! "resolver" and "fetcher"): manifests and blobs over HTTP(S), with the
//! token handshake, redirects and per-host mirrors.

pub mod auth;
pub mod hosts;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use auth::{Challenge, Credential, TokenResponse};
pub use hosts::Endpoint;

/// Media types of manifests we understand (and schema 1, to refuse it by name).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1, \
application/json;q=0.1";

/// The HTTP clients: one trusting the system roots, and one more per
/// extra CA file a registry host configures. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    connect_timeout: Duration,
    with_ca: Arc<std::sync::Mutex<HashMap<PathBuf, reqwest::Client>>>,
}

fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
}

impl Client {
    /// A client whose connections fail after `connect_timeout`; response
    /// bodies are bounded by the caller's progress timeout instead.
    pub fn new(connect_timeout: Duration) -> Result<Client> {
        let http = builder(connect_timeout)
            .build()
            .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
        Ok(Client {
            http,
            connect_timeout,
            with_ca: Arc::default(),
        })
    }

    /// The client for an endpoint: the system roots plus its host's CA file.
    fn http_for(&self, endpoint: &Endpoint) -> Result<reqwest::Client> {
        let Some(ca) = &endpoint.ca_file else {
            return Ok(self.http.clone());
        };
        let mut map = self.with_ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(ca) {
            return Ok(c.clone());
        }
        let bad = |detail: String| {
            Error::Config(format!(
                "ca_file {} for {}: {detail}",
                ca.display(),
                endpoint.host
            ))
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        let c = builder(self.connect_timeout)
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        map.insert(ca.clone(), c.clone());
        Ok(c)
    }

    /// A session with one endpoint for one repository.
    pub fn session(
        &self,
        endpoint: Endpoint,
        repository: &str,
        credential: Credential,
        request_timeout: Duration,
    ) -> Result<Session> {
        Ok(Session {
            http: self.http_for(&endpoint)?,
            endpoint,
            repository: repository.to_string(),
            credential,
            authorization: Mutex::new(None),
            request_timeout,
        })
    }
}

/// A manifest as fetched: bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    pub media_type: String,
    pub digest: String,
}

/// Requests against one endpoint for one repository, holding the
/// authorization the registry granted so later requests reuse it.
pub struct Session {
    http: reqwest::Client,
    endpoint: Endpoint,
    repository: String,
    credential: Credential,
    authorization: Mutex<Option<HeaderValue>>,
    request_timeout: Duration,
}

impl Session {
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn url(&self, kind: &str, object: &str) -> String {
        format!(
            "{}/v2/{}/{kind}/{object}",
            self.endpoint.base, self.repository
        )
    }

    /// Fetches a manifest (or index) by tag or digest; `limit` bounds its size.
    pub async fn manifest(&self, object: &str, limit: usize) -> Result<Fetched> {
        let url = self.url("manifests", object);
        let resp = self.send(&url, Some(ACCEPT_MANIFESTS), "manifest").await?;
        let header_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let body = read_limited(resp, limit, &url, self.request_timeout).await?;
        let digest = crate::digest::sha256(&body);
        Ok(Fetched {
            body,
            media_type: header_type,
            digest,
        })
    }

    /// Fetches a small blob (a config) whole; `limit` bounds its size.
    pub async fn blob_bytes(&self, digest: &str, limit: usize) -> Result<Bytes> {
        let url = self.url("blobs", digest);
        let resp = self.send(&url, None, "blob").await?;
        read_limited(resp, limit, &url, self.request_timeout).await
    }

    /// Opens a blob for streaming; the caller verifies its digest.
    pub async fn blob_stream(
        &self,
        digest: &str,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = Result<Bytes>> + Send + 'static,
    )> {
        let url = self.url("blobs", digest);
        let resp = self.send(&url, None, "blob").await?;
        let len = resp.content_length();
        let stream = resp.bytes_stream().map(move |r| {
            r.map_err(|e| Error::Unreachable {
                url: url.clone(),
                detail: format!("download interrupted: {}", error_chain(&e)),
            })
        });
        Ok((len, stream))
    }

    /// GET with authorization; on 401 performs the challenge once and retries.
    async fn send(&self, url: &str, accept: Option<&str>, what: &str) -> Result<Response> {
        let mut tried_auth = false;
        loop {
            let mut req = self.http.request(Method::GET, url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(h) = self.authorization.lock().await.clone() {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = self.execute(req, url).await?;
            match resp.status() {
                s if s.is_success() => return Ok(resp),
                StatusCode::UNAUTHORIZED if !tried_auth => {
                    tried_auth = true;
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(auth::parse_challenge);
                    let Some(challenge) = challenge else {
                        return Err(self.unauthorized(
                            "the registry sent no usable WWW-Authenticate challenge",
                        ));
                    };
                    let h = self.authorize(challenge).await?;
                    *self.authorization.lock().await = Some(h);
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let body = body_snippet(resp).await;
                    return Err(self.unauthorized(&body));
                }
                StatusCode::NOT_FOUND => {
                    let body = body_snippet(resp).await;
                    return Err(Error::RemoteNotFound {
                        what: format!("{what} {}", url.rsplit('/').next().unwrap_or(url)),
                        registry: format!("{}/{}", self.endpoint.base, self.repository),
                        detail: body,
                    });
                }
                status => {
                    let body = body_snippet(resp).await;
                    return Err(Error::Http {
                        url: url.to_string(),
                        status: status.as_u16(),
                        detail: body,
                    });
                }
            }
        }
    }

    async fn execute(&self, req: RequestBuilder, url: &str) -> Result<Response> {
        match tokio::time::timeout(self.request_timeout, req.send()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(Error::Unreachable {
                url: url.to_string(),
                detail: error_chain(&e),
            }),
            Err(_) => Err(Error::Unreachable {
                url: url.to_string(),
                detail: format!("no answer within {:?}", self.request_timeout),
            }),
        }
    }

    fn unauthorized(&self, detail: &str) -> Error {
        let who = match &self.credential {
            Credential::Anonymous => "anonymous access was refused; pass credentials",
            _ => "the credentials were refused",
        };
        Error::Unauthorized {
            registry: self.endpoint.base.clone(),
            repository: self.repository.clone(),
            detail: format!("{who}: {detail}"),
        }
    }

    /// Answers a challenge: the Authorization header value to use from now on.
    async fn authorize(&self, challenge: Challenge) -> Result<HeaderValue> {
        let value = match (challenge, &self.credential) {
            (Challenge::Basic, Credential::Basic { username, password }) => {
                format!("Basic {}", basic(username, password))
            }
            (Challenge::Basic, _) => {
                return Err(self.unauthorized("the registry asks for a username and password"))
            }
            (Challenge::Bearer { .. }, Credential::RegistryToken(t)) => format!("Bearer {t}"),
            (
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                },
                cred,
            ) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let token = self
                    .fetch_token(&realm, service.as_deref(), &scope, cred)
                    .await?;
                format!("Bearer {token}")
            }
        };
        HeaderValue::from_str(&value).map_err(|_| {
            self.unauthorized("the token server returned a token that is not a valid header")
        })
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        cred: &Credential,
    ) -> Result<String> {
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let req = match cred {
            Credential::IdentityToken { token, .. } => {
                let mut form = query.clone();
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", "berth"),
                ]);
                self.http.post(realm).form(&form)
            }
            Credential::Basic { username, password } => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            _ => self.http.get(realm).query(&query),
        };
        let resp = self.execute(req, realm).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = body_snippet(resp).await;
            return Err(self.unauthorized(&format!("token server {realm}: {body}")));
        }
        if !status.is_success() {
            let body = body_snippet(resp).await;
            return Err(Error::Http {
                url: realm.to_string(),
                status: status.as_u16(),
                detail: body,
            });
        }
        let body = read_limited(resp, 1 << 20, realm, self.request_timeout).await?;
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| Error::InvalidContent {
                what: format!("token response from {realm}"),
                detail: e.to_string(),
            })?;
        t.into_token().ok_or_else(|| Error::InvalidContent {
            what: format!("token response from {realm}"),
            detail: "no token in the answer".into(),
        })
    }
}

fn basic(u: &str, p: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
}

/// A reqwest error with its causes, which say what really happened
/// (connection refused, DNS, TLS...).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

async fn body_snippet(resp: Response) -> String {
    let status = resp.status();
    let text = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let text: String = text.chars().take(300).collect();
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

async fn read_limited(resp: Response, limit: usize, url: &str, timeout: Duration) -> Result<Bytes> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::InvalidContent {
                what: url.to_string(),
                detail: format!("{len} bytes is more than the {limit} allowed"),
            });
        }
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| Error::ProgressTimeout {
                what: url.to_string(),
                timeout,
            })?;
        match next {
            None => break,
            Some(Err(e)) => {
                return Err(Error::Unreachable {
                    url: url.to_string(),
                    detail: error_chain(&e),
                })
            }
            Some(Ok(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(Error::InvalidContent {
                        what: url.to_string(),
                        detail: format!("more than the {limit} bytes allowed"),
                    });
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
    Ok(Bytes::from(out))
}
