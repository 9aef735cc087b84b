//! A fake registry that serves exactly what it is given.
//!
//! A real registry validates what it stores, so some server behaviours
//! cannot be produced with it: serving a Docker schema 1 manifest (distribution
//! 2.8 refuses schema 1 pushes unless `compatibility.schema1.enabled` is set,
//! and then it wants a valid libtrust signature), or serving a manifest or
//! blob whose bytes do not match the digest it was asked for. `FakeRegistry`
//! speaks just enough of the `/v2/` API for a puller: `GET /v2/`, `GET`/`HEAD`
//! of manifests and blobs. No auth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::http::{HttpServer, Request, Response};
use crate::image::media_types;
use crate::util::sha256_digest;

#[derive(Default)]
struct Content {
    /// (repo, tag or digest) -> (media type, body)
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// (repo, digest) -> body (not checked against the digest)
    blobs: HashMap<(String, String), Vec<u8>>,
    /// (method, path) of every request.
    requests: Vec<(String, String)>,
}

/// A tiny in-process registry serving canned manifests and blobs.
///
/// ```
/// use berth_testkit::FakeRegistry;
/// let fake = FakeRegistry::start();
/// let digest = fake.serve_schema1("tests/old", "latest");
/// assert!(digest.starts_with("sha256:"));
/// // Pull `{fake.host()}/tests/old:latest` and expect a refusal.
/// ```
pub struct FakeRegistry {
    server: HttpServer,
    content: Arc<Mutex<Content>>,
}

impl std::fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRegistry")
            .field("url", &self.url())
            .finish()
    }
}

fn lock(content: &Mutex<Content>) -> std::sync::MutexGuard<'_, Content> {
    content.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeRegistry {
    /// Starts serving on a free 127.0.0.1 port.
    ///
    /// # Panics
    /// If no socket can be bound.
    pub fn start() -> Self {
        let content = Arc::new(Mutex::new(Content::default()));
        let server = HttpServer::start("fake-registry", {
            let content = content.clone();
            move |req| handle(&content, req)
        })
        .unwrap_or_else(|e| panic!("starting the fake registry failed: {e:#}"));
        Self { server, content }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// Serves `body` with `Content-Type: media_type` at
    /// `/v2/<repo>/manifests/<reference>` and at `/v2/<repo>/manifests/<sha256 of body>`.
    /// Returns the digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let digest = sha256_digest(body);
        let mut content = lock(&self.content);
        for key in [reference, digest.as_str()] {
            content.manifests.insert(
                (repo.to_owned(), key.to_owned()),
                (media_type.to_owned(), body.to_vec()),
            );
        }
        digest
    }

    /// Serves `body` at `/v2/<repo>/blobs/<digest>`, whether or not it matches `digest`.
    pub fn add_blob(&self, repo: &str, digest: &str, body: &[u8]) {
        lock(&self.content)
            .blobs
            .insert((repo.to_owned(), digest.to_owned()), body.to_vec());
    }

    /// Serves a Docker schema 1 image (`application/vnd.docker.distribution.manifest.v1+prettyjws`)
    /// with one small gzip layer as `repo:tag`. Returns the manifest digest.
    ///
    /// The manifest is well formed but its JWS signature is not valid: a
    /// runtime must refuse schema 1 on the media type before looking at it.
    pub fn serve_schema1(&self, repo: &str, tag: &str) -> String {
        let mut tar = crate::TarWriter::new();
        tar.file("schema1.txt", b"served by a schema 1 manifest\n", 0o644);
        let layer = crate::Layer::from_tar(tar.finish(), crate::Compression::Gzip);
        self.add_blob(repo, layer.digest(), layer.blob());
        let body = schema1_manifest(repo, tag, &[layer.digest()]);
        self.add_manifest(repo, tag, media_types::DOCKER_SCHEMA1_SIGNED, &body)
    }

    /// `(method, path)` of every request received so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.content).requests.clone()
    }
}

/// A schema 1 signed manifest body for `name:tag` over `blob_sums` (top layer first,
/// as schema 1 orders them). The signature block is syntactically right but fake.
pub fn schema1_manifest(name: &str, tag: &str, blob_sums: &[&str]) -> Vec<u8> {
    let history: Vec<_> = blob_sums
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let v1 = json!({
                "id": sha256_digest(format!("{name}:{tag}:{i}").as_bytes())[7..].to_owned(),
                "created": "2020-01-01T00:00:00Z",
                "os": "linux",
                "architecture": "amd64",
                "config": {"Cmd": ["sh"]},
            });
            json!({"v1Compatibility": v1.to_string()})
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": blob_sums.iter().map(|d| json!({"blobSum": d})).collect::<Vec<_>>(),
        "history": history,
        "signatures": [{
            "header": {
                "jwk": {
                    "crv": "P-256",
                    "kid": "BERT:HTES:TKIT:FAKE:SIGN:ATUR:EBER:THTE:STKI:TFAK:ESIG:NATU",
                    "kty": "EC",
                    "x": "ZmFrZS14LWNvb3JkaW5hdGUtZm9yLWEtdGVzdC1rZXk",
                    "y": "ZmFrZS15LWNvb3JkaW5hdGUtZm9yLWEtdGVzdC1rZXk"
                },
                "alg": "ES256"
            },
            "signature": "ZmFrZS1zaWduYXR1cmU",
            "protected": "eyJmb3JtYXRMZW5ndGgiOjEsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAyMC0wMS0wMVQwMDowMDowMFoifQ"
        }],
    });
    serde_json::to_vec_pretty(&manifest).expect("serialising a JSON value cannot fail")
}

fn not_found(code: &str) -> Response {
    Response::json(
        404,
        &json!({"errors": [{"code": code, "message": "not known to the fake registry"}]}),
    )
}

fn handle(content: &Mutex<Content>, req: &Request) -> Response {
    let mut content = lock(content);
    content
        .requests
        .push((req.method.clone(), req.path.clone()));
    if req.method != "GET" && req.method != "HEAD" {
        return Response::json(405, &json!({"errors": [{"code": "UNSUPPORTED"}]}));
    }
    let api = |r: Response| r.header("Docker-Distribution-API-Version", "registry/2.0");
    if req.path == "/v2/" || req.path == "/v2" {
        return api(Response::json(200, &json!({})));
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return not_found("NAME_UNKNOWN");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return match content
            .manifests
            .get(&(repo.to_owned(), reference.to_owned()))
        {
            Some((media_type, body)) => api(Response::new(200)
                .header("Content-Type", media_type)
                .header("Docker-Content-Digest", &sha256_digest(body))
                .body(body.clone())),
            None => api(not_found("MANIFEST_UNKNOWN")),
        };
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return match content.blobs.get(&(repo.to_owned(), digest.to_owned())) {
            Some(body) => api(Response::new(200)
                .header("Content-Type", "application/octet-stream")
                .header("Docker-Content-Digest", digest)
                .body(body.clone())),
            None => api(not_found("BLOB_UNKNOWN")),
        };
    }
    api(not_found("NAME_UNKNOWN"))
}
