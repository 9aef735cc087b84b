//! The in-process token server used by [`Registry::start_token_auth`](crate::Registry::start_token_auth).
//!
//! It implements the Docker registry token protocol closely enough for a
//! client to be tested against it:
//!
//! * `GET <realm>?service=..&scope=..[&offline_token=true&client_id=..]` with
//!   optional HTTP Basic credentials (the classic docker flow);
//! * `POST <realm>` with a form body, `grant_type=password` (username,
//!   password) or `grant_type=refresh_token` (refresh_token), plus `service`,
//!   `scope` (space separated), `client_id` and `access_type=offline`
//!   (the OAuth2 flow used with identity tokens).
//!
//! Authenticated requests are granted every action they ask for. Anonymous
//! requests get a token too, as Docker Hub does, but with no access unless
//! [`TokenAuthOptions::anonymous_pull`] is set; the registry then answers the
//! actual request with 401 `insufficient_scope`. Wrong credentials or an
//! unknown refresh token get 401 from the token server itself.
//!
//! Tokens are ES256 JWTs whose `x5c` header carries the issuer's self-signed
//! certificate; that certificate is the registry's `rootcertbundle`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

use crate::http::{parse_form, HttpServer, Request, Response};
use crate::util::{random_hex, unix_now};

/// Issuer name written in tokens and in the registry configuration.
pub const TOKEN_ISSUER: &str = "berth-testkit-token-issuer";
/// Service name (token audience) written in tokens and in the registry configuration.
pub const TOKEN_SERVICE: &str = "berth-testkit-registry";

/// Knobs of the token server.
#[derive(Debug, Clone)]
pub struct TokenAuthOptions {
    /// Grant `pull` on every repository to anonymous clients (default: no access).
    pub anonymous_pull: bool,
    /// Lifetime written in tokens as `exp - iat` and returned as `expires_in` (default 300 s).
    pub token_ttl: Duration,
}

impl Default for TokenAuthOptions {
    fn default() -> Self {
        Self {
            anonymous_pull: false,
            token_ttl: Duration::from_secs(300),
        }
    }
}

/// How a token request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenGrant {
    /// No credentials at all.
    Anonymous,
    /// HTTP Basic credentials on a GET.
    Basic,
    /// POST `grant_type=password`.
    Password,
    /// POST `grant_type=refresh_token`.
    RefreshToken,
}

/// One request seen by the token server, for assertions.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// How the client authenticated.
    pub grant: TokenGrant,
    /// The authenticated user, if any.
    pub account: Option<String>,
    /// Requested scopes, e.g. `repository:library/busybox:pull`.
    pub scopes: Vec<String>,
    /// HTTP status the token server answered with.
    pub status: u16,
    /// Whether a refresh token (identity token) was handed out.
    pub issued_refresh_token: bool,
}

/// The signing material: a P-256 key and its self-signed certificate.
pub(crate) struct Issuer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl Issuer {
    pub fn generate() -> Result<Self> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generate token signing key")?;
        let mut params = rcgen::CertificateParams::new(vec!["berth-testkit-token".to_owned()])
            .context("certificate params")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth testkit token issuer");
        let cert = params
            .self_signed(&key_pair)
            .context("self-sign token certificate")?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key_pair.serialize_der())
                .map_err(|e| anyhow::anyhow!("load token signing key: {e}"))?;
        Ok(Self {
            key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        })
    }

    /// PEM of the certificate, for `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a JWT carrying `access` for `subject`.
    fn sign(&self, subject: &str, access: &[Access], ttl: Duration) -> Result<String> {
        let now = unix_now();
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.cert_der)],
        });
        let access: Vec<_> = access
            .iter()
            .map(|a| json!({"type": a.kind, "name": a.name, "actions": a.actions}))
            .collect();
        let claims = json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + ttl.as_secs(),
            "nbf": now.saturating_sub(1),
            "iat": now,
            "jti": random_hex(16),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| anyhow::anyhow!("sign token: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// One granted resource.
#[derive(Debug, Clone)]
struct Access {
    kind: String,
    name: String,
    actions: Vec<String>,
}

/// Parses `type:name:actions` (name may itself contain `:`, e.g. a port).
fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

struct State {
    issuer: Issuer,
    user: String,
    password: String,
    options: TokenAuthOptions,
    refresh_tokens: Mutex<HashMap<String, String>>,
    log: Mutex<Vec<TokenRequest>>,
}

/// The running token server (stops on drop).
pub(crate) struct TokenServer {
    server: HttpServer,
    state: Arc<State>,
}

impl TokenServer {
    pub fn start(
        issuer: Issuer,
        user: &str,
        password: &str,
        options: TokenAuthOptions,
    ) -> Result<Self> {
        let state = Arc::new(State {
            issuer,
            user: user.to_owned(),
            password: password.to_owned(),
            options,
            refresh_tokens: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let server = HttpServer::start("token-server", {
            let state = state.clone();
            move |req| state.handle(req)
        })?;
        Ok(Self { server, state })
    }

    /// The realm URL to configure in the registry.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.log).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"errors": [{"code": code, "message": message}], "error": code, "details": message}),
    )
}

impl State {
    fn handle(&self, req: &Request) -> Response {
        if req.path != "/token" {
            return error(404, "NOT_FOUND", "only /token lives here");
        }
        let params: Vec<(String, String)> = match req.method.as_str() {
            "GET" => req.query.clone(),
            "POST" => parse_form(&req.body),
            _ => return error(405, "UNSUPPORTED", "use GET or POST"),
        };
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut record = TokenRequest {
            method: req.method.clone(),
            grant: TokenGrant::Anonymous,
            account: None,
            scopes: scopes.clone(),
            status: 200,
            issued_refresh_token: false,
        };
        let response = self.respond(req, &params, &scopes, &mut record);
        record.status = response.status;
        lock(&self.log).push(record);
        response
    }

    fn respond(
        &self,
        req: &Request,
        params: &[(String, String)],
        scopes: &[String],
        record: &mut TokenRequest,
    ) -> Response {
        let get = |key: &str| param(params, key);
        if let Some(service) = get("service") {
            if service != TOKEN_SERVICE {
                return error(400, "INVALID_REQUEST", "unknown service");
            }
        }

        // Work out who is asking.
        let account: Option<String> = if req.method == "POST" {
            match get("grant_type") {
                Some("password") => {
                    record.grant = TokenGrant::Password;
                    if get("username") != Some(&self.user)
                        || get("password") != Some(&self.password)
                    {
                        return error(401, "UNAUTHORIZED", "invalid username or password");
                    }
                    Some(self.user.clone())
                }
                Some("refresh_token") => {
                    record.grant = TokenGrant::RefreshToken;
                    let known = get("refresh_token")
                        .and_then(|t| lock(&self.refresh_tokens).get(t).cloned());
                    match known {
                        Some(user) => Some(user),
                        None => return error(401, "UNAUTHORIZED", "unknown refresh token"),
                    }
                }
                _ => return error(400, "UNSUPPORTED_GRANT_TYPE", "unsupported grant_type"),
            }
        } else {
            match req.header("authorization") {
                None => None,
                Some(value) => {
                    record.grant = TokenGrant::Basic;
                    match decode_basic(value) {
                        Some((user, pass)) if user == self.user && pass == self.password => {
                            Some(user)
                        }
                        _ => return error(401, "UNAUTHORIZED", "invalid username or password"),
                    }
                }
            }
        };
        record.account = account.clone();

        // Grant: everything asked for when authenticated, pull (or nothing) otherwise.
        let granted: Vec<Access> = scopes
            .iter()
            .filter_map(|s| parse_scope(s))
            .map(|mut access| {
                if account.is_none() {
                    let pull_ok = self.options.anonymous_pull && access.kind == "repository";
                    access.actions.retain(|a| pull_ok && a == "pull");
                }
                access
            })
            .filter(|a| !a.actions.is_empty())
            .collect();

        let subject = account.clone().unwrap_or_default();
        let token = match self.issuer.sign(&subject, &granted, self.options.token_ttl) {
            Ok(token) => token,
            Err(err) => return error(500, "INTERNAL", &format!("{err:#}")),
        };

        let offline = get("offline_token") == Some("true") || get("access_type") == Some("offline");
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": self.options.token_ttl.as_secs(),
            "issued_at": rfc3339_utc(unix_now()),
            "scope": scopes.join(" "),
        });
        if let Some(user) = account.filter(|_| offline) {
            let refresh =
                match get("refresh_token").filter(|_| record.grant == TokenGrant::RefreshToken) {
                    // Keep handing back the same identity token on refresh.
                    Some(existing) => existing.to_owned(),
                    None => {
                        let fresh = format!("berth-refresh-{}", random_hex(16));
                        lock(&self.refresh_tokens).insert(fresh.clone(), user);
                        fresh
                    }
                };
            body["refresh_token"] = json!(refresh);
            record.issued_refresh_token = true;
        }
        Response::json(200, &body)
    }
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn decode_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Formats a Unix time as RFC 3339 UTC (civil-from-days, no chrono needed).
pub(crate) fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing() {
        let a = parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(
            (a.kind.as_str(), a.name.as_str()),
            ("repository", "team/app")
        );
        assert_eq!(a.actions, vec!["pull", "push"]);
        let b = parse_scope("registry:catalog:*").unwrap();
        assert_eq!(b.actions, vec!["*"]);
        assert!(parse_scope("nonsense").is_none());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_577_836_800), "2020-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn signed_token_verifies() {
        let issuer = Issuer::generate().unwrap();
        let access = [Access {
            kind: "repository".into(),
            name: "x".into(),
            actions: vec!["pull".into()],
        }];
        let token = issuer.sign("me", &access, Duration::from_secs(60)).unwrap();
        let parts: Vec<_> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        use aws_lc_rs::signature::{KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, issuer.key.public_key().as_ref());
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(signing_input.as_bytes(), &signature).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], TOKEN_SERVICE);
        assert_eq!(claims["access"][0]["actions"][0], "pull");
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }
}
