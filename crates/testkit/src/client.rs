//! A small distribution-API client (reqwest) to push test images and read them back.
//!
//! It handles anonymous, HTTP Basic and Bearer-token registries: on a 401 it
//! reads `WWW-Authenticate`, and for `Bearer` fetches a token from the realm
//! (sending Basic credentials if it has any), caches it per scope and retries.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};

use crate::image::{Image, ImageIndex, IndexFormat, ManifestFormat, Platform};
use crate::registry::Registry;
use crate::util::sha256_digest;

/// Result of pushing one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Repository name, e.g. `tests/busybox`.
    pub repository: String,
    /// Tag or digest the manifest was pushed under.
    pub reference: String,
    /// Manifest digest (`sha256:...`).
    pub manifest_digest: String,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// Config digest: the image ID.
    pub config_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<PushedLayer>,
}

/// One pushed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedLayer {
    /// Blob digest.
    pub digest: String,
    /// Uncompressed digest, as in the config.
    pub diff_id: String,
    /// Blob size.
    pub size: u64,
    /// Media type written in the manifest.
    pub media_type: String,
}

/// Result of pushing an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedIndex {
    /// Repository name.
    pub repository: String,
    /// Tag the index was pushed under.
    pub reference: String,
    /// Index digest.
    pub digest: String,
    /// Index media type.
    pub media_type: String,
    /// Children, in index order.
    pub manifests: Vec<(Platform, PushedImage)>,
}

/// A manifest as served by a registry.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// `Content-Type` of the response.
    pub media_type: String,
    /// `Docker-Content-Digest` of the response, if any.
    pub docker_content_digest: Option<String>,
    /// sha256 of the body.
    pub digest: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Splits `repo:tag`, `repo@sha256:...` or `repo` (tag `latest`).
///
/// The repository must not include a registry host.
pub fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

#[derive(Debug, Default)]
struct AuthState {
    /// The registry asked for Basic: send credentials on every request.
    basic: bool,
    /// Bearer tokens by scope.
    tokens: HashMap<String, String>,
}

/// A registry client for tests.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use berth_testkit::{fixtures, ManifestFormat, Registry, RegistryClient};
/// let registry = Registry::start_token_auth("alice", "secret");
/// let client = RegistryClient::for_registry(&registry);
/// let pushed = client.push_image("tests/busybox:1", &fixtures::busybox(), ManifestFormat::Oci).await?;
/// let manifest = client.get_manifest("tests/busybox", "1", &[]).await?;
/// assert_eq!(manifest.digest, pushed.manifest_digest);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
    auth: Mutex<AuthState>,
}

impl RegistryClient {
    /// A client for `base_url` (`http://host:port`), anonymous.
    ///
    /// # Panics
    /// If `base_url` is not a URL.
    pub fn new(base_url: &str) -> Self {
        let base = Url::parse(base_url)
            .unwrap_or_else(|e| panic!("registry base URL {base_url:?} is not a URL: {e}"));
        Self {
            http: reqwest::Client::new(),
            base,
            credentials: None,
            auth: Mutex::new(AuthState::default()),
        }
    }

    /// A client for `registry` carrying its credentials (if it has any).
    pub fn for_registry(registry: &Registry) -> Self {
        let client = Self::new(&registry.url());
        match registry.credentials() {
            Some((user, pass)) => client.with_credentials(user, pass),
            None => client,
        }
    }

    /// Uses `username:password` for Basic auth and at token servers.
    pub fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Sends an authenticated request to `path` (starting with `/v2/`),
    /// going through the auth challenge if needed. `scope` is the token scope
    /// to ask for, e.g. `repository:foo:pull`. The response is returned
    /// whatever its status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response> {
        let url = self
            .base
            .join(path)
            .with_context(|| format!("bad path {path:?}"))?;
        self.send(method, url, scope, headers, body).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        scope: Option<&str>,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response> {
        let mut challenged = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            if let Some(value) = self.authorization(scope) {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(response);
            }
            let Some(challenge) = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                return Ok(response);
            };
            challenged = true;
            if !self.answer_challenge(&challenge, scope).await? {
                return Ok(response);
            }
        }
    }

    fn authorization(&self, scope: Option<&str>) -> Option<String> {
        let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = auth.tokens.get(scope.unwrap_or("")) {
            return Some(format!("Bearer {token}"));
        }
        match (&self.credentials, auth.basic) {
            (Some((user, pass)), true) => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{user}:{pass}"))
            )),
            _ => None,
        }
    }

    /// Returns whether retrying makes sense.
    async fn answer_challenge(&self, challenge: &str, scope: Option<&str>) -> Result<bool> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let mut auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            let retry = self.credentials.is_some() && !auth.basic;
            auth.basic = true;
            return Ok(retry);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(false);
        }
        let realm = params
            .get("realm")
            .ok_or_else(|| anyhow!("Bearer challenge without realm: {challenge}"))?;
        let mut url = Url::parse(realm).with_context(|| format!("bad realm {realm:?}"))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope.or(params.get("scope").map(String::as_str)) {
                query.append_pair("scope", scope);
            }
        }
        let mut request = self.http.get(url.clone());
        if let Some((user, pass)) = &self.credentials {
            request = request.basic_auth(user, Some(pass));
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("token server {url} answered {status}: {text}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("token response {text:?}"))?;
        let token = json["token"]
            .as_str()
            .or(json["access_token"].as_str())
            .ok_or_else(|| anyhow!("token response without token: {text}"))?;
        self.auth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .insert(scope.unwrap_or("").to_owned(), token.to_owned());
        Ok(true)
    }

    /// Whether blob `digest` exists in `repo` (HEAD).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let scope = pull_scope(repo);
        let response = self
            .request(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                Some(&scope),
                HeaderMap::new(),
                None,
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => bail!("HEAD blob {digest} in {repo}: {status}"),
        }
    }

    /// Uploads `data` as a blob of `repo` (monolithic POST + PUT), unless the
    /// registry already has it. Returns its digest.
    pub async fn push_blob(&self, repo: &str, data: impl Into<Bytes>) -> Result<String> {
        let data: Bytes = data.into();
        let digest = sha256_digest(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let scope = push_scope(repo);
        let start = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                Some(&scope),
                HeaderMap::new(),
                None,
            )
            .await?;
        let status = start.status();
        if status != StatusCode::ACCEPTED {
            let text = start.text().await.unwrap_or_default();
            bail!("start upload to {repo}: {status}: {text}");
        }
        let location = start
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("upload to {repo}: 202 without Location"))?;
        let mut url = self
            .base
            .join(location)
            .with_context(|| format!("bad upload Location {location:?}"))?;
        url.query_pairs_mut().append_pair("digest", &digest);

        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/octet-stream"),
        );
        let done = self
            .send(Method::PUT, url, Some(&scope), headers, Some(data))
            .await?;
        let status = done.status();
        if status != StatusCode::CREATED {
            let text = done.text().await.unwrap_or_default();
            bail!("finish upload of {digest} to {repo}: {status}: {text}");
        }
        Ok(digest)
    }

    /// PUTs a manifest body with an arbitrary `media_type` under `reference`
    /// (tag or digest). Returns the digest of `body`. Fails on any non-201.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<String> {
        let body: Bytes = body.into();
        let digest = sha256_digest(&body);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            media_type
                .parse()
                .context("media type is not a header value")?,
        );
        let scope = push_scope(repo);
        let response = self
            .request(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(&scope),
                headers,
                Some(body),
            )
            .await?;
        let status = response.status();
        if status != StatusCode::CREATED {
            let text = response.text().await.unwrap_or_default();
            bail!("PUT manifest {repo}:{reference} ({media_type}): {status}: {text}");
        }
        Ok(digest)
    }

    /// GETs a manifest. `accept` defaults to every media type this crate knows.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest> {
        use crate::image::media_types::*;
        let default = [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ];
        let accept = if accept.is_empty() {
            &default[..]
        } else {
            accept
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            accept.join(", ").parse().context("bad Accept value")?,
        );
        let scope = pull_scope(repo);
        let response = self
            .request(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(&scope),
                headers,
                None,
            )
            .await?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let media_type = header("content-type").unwrap_or_default();
        let docker_content_digest = header("docker-content-digest");
        let body = response.bytes().await?.to_vec();
        if status != StatusCode::OK {
            bail!(
                "GET manifest {repo}:{reference}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(FetchedManifest {
            media_type,
            docker_content_digest,
            digest: sha256_digest(&body),
            body,
        })
    }

    /// GETs a blob.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let scope = pull_scope(repo);
        let response = self
            .request(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                Some(&scope),
                HeaderMap::new(),
                None,
            )
            .await?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        if status != StatusCode::OK {
            bail!("GET blob {repo}@{digest}: {status}");
        }
        Ok(body)
    }

    /// Pushes the layers, the config and the manifest of `image` as
    /// `reference` (`repo:tag` or `repo@digest`).
    pub async fn push_image(
        &self,
        reference: &str,
        image: &Image,
        format: ManifestFormat,
    ) -> Result<PushedImage> {
        let (repo, tag) = split_reference(reference);
        for layer in image.layers() {
            self.push_blob(repo, layer.blob_bytes().clone()).await?;
        }
        self.push_blob(repo, Bytes::copy_from_slice(image.config_json()))
            .await?;
        let manifest = image.manifest(format);
        let manifest_size = manifest.len() as u64;
        let manifest_digest = self
            .put_manifest(repo, tag, format.media_type(), manifest)
            .await?;
        Ok(PushedImage {
            repository: repo.to_owned(),
            reference: tag.to_owned(),
            manifest_digest,
            manifest_media_type: format.media_type().to_owned(),
            manifest_size,
            config_digest: image.config_digest().to_owned(),
            layers: image
                .layers()
                .iter()
                .map(|l| PushedLayer {
                    digest: l.digest().to_owned(),
                    diff_id: l.diff_id().to_owned(),
                    size: l.size(),
                    media_type: l.media_type(format).to_owned(),
                })
                .collect(),
        })
    }

    /// Pushes every child image by digest, then the index as `reference`.
    pub async fn push_index(
        &self,
        reference: &str,
        index: &ImageIndex,
        format: IndexFormat,
    ) -> Result<PushedIndex> {
        let (repo, tag) = split_reference(reference);
        let child_format = format.child_format();
        let mut manifests = Vec::new();
        for (platform, image) in &index.entries {
            let digest = sha256_digest(&image.manifest(child_format));
            let pushed = self
                .push_image(&format!("{repo}@{digest}"), image, child_format)
                .await?;
            manifests.push((platform.clone(), pushed));
        }
        let body = index.index(format);
        let digest = self
            .put_manifest(repo, tag, format.media_type(), body)
            .await?;
        Ok(PushedIndex {
            repository: repo.to_owned(),
            reference: tag.to_owned(),
            digest,
            media_type: format.media_type().to_owned(),
            manifests,
        })
    }
}

impl Image {
    /// Pushes this image to `registry` as `reference` (`repo:tag`), with the
    /// registry's credentials.
    pub async fn push(
        &self,
        registry: &Registry,
        reference: &str,
        format: ManifestFormat,
    ) -> Result<PushedImage> {
        RegistryClient::for_registry(registry)
            .push_image(reference, self, format)
            .await
    }
}

impl ImageIndex {
    /// Pushes this index (and its images) to `registry` as `reference`.
    pub async fn push(
        &self,
        registry: &Registry,
        reference: &str,
        format: IndexFormat,
    ) -> Result<PushedIndex> {
        RegistryClient::for_registry(registry)
            .push_index(reference, self, format)
            .await
    }
}

/// Pushes `[(platform, image)]` as an index: shorthand for [`ImageIndex::push`].
pub async fn push_index(
    registry: &Registry,
    reference: &str,
    entries: &[(Platform, Image)],
    format: IndexFormat,
) -> Result<PushedIndex> {
    let index = ImageIndex {
        entries: entries.to_vec(),
    };
    index.push(registry, reference, format).await
}

/// `repository:<repo>:pull`
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// `repository:<repo>:pull,push`
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Parses `Scheme k="v",k2="v2"` (values may contain commas inside quotes).
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_reference("a/b:1"), ("a/b", "1"));
        assert_eq!(split_reference("a/b"), ("a/b", "latest"));
        assert_eq!(split_reference("a@sha256:ab"), ("a", "sha256:ab"));
    }

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "http://127.0.0.1:1/token");
        assert_eq!(p["scope"], "repository:a:pull,push");
        assert_eq!(p["error"], "insufficient_scope");
        let (scheme, p) = parse_challenge(r#"Basic realm="r""#);
        assert_eq!((scheme.as_str(), p["realm"].as_str()), ("Basic", "r"));
    }
}
