//! Basic-auth and token-auth registries.

mod common;

use base64::Engine as _;
use berth_testkit::media_types::OCI_MANIFEST;
use berth_testkit::{
    fixtures, parse_challenge, ManifestFormat, Registry, RegistryClient, TokenAuthOptions,
    TokenGrant,
};
use common::{assert_digest, header, raw_get};

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test]
async fn basic_auth_registry() {
    let registry = Registry::start_basic_auth("alice", "s3cret");
    assert_eq!(registry.credentials(), Some(("alice", "s3cret")));

    let (status, headers, _) = raw_get(&format!("{}/v2/", registry.url()), None, None).await;
    assert_eq!(status, 401);
    let (scheme, params) = parse_challenge(&header(&headers, "www-authenticate"));
    assert_eq!(scheme, "Basic");
    assert_eq!(params["realm"], "berth-test-realm");

    // Without credentials the client cannot push.
    let anonymous = RegistryClient::new(&registry.url());
    let image = fixtures::busybox();
    assert!(anonymous
        .push_image("tests/busybox:1", &image, ManifestFormat::Oci)
        .await
        .is_err());

    let pushed = image
        .push(&registry, "tests/busybox:1", ManifestFormat::Oci)
        .await
        .expect("push with credentials");

    let manifest_url = format!("{}/v2/tests/busybox/manifests/1", registry.url());
    let good = basic("alice", "s3cret");
    let (status, _, body) = raw_get(&manifest_url, Some(OCI_MANIFEST), Some(&good)).await;
    assert_eq!(status, 200);
    assert_digest(&body, &pushed.manifest_digest);
    let bad = basic("alice", "wrong");
    assert_eq!(
        raw_get(&manifest_url, Some(OCI_MANIFEST), Some(&bad))
            .await
            .0,
        401
    );
}

/// Asks the token server for a token the way docker does (GET + Basic).
async fn get_token(
    registry: &Registry,
    scope: &str,
    auth: Option<&str>,
) -> (u16, serde_json::Value) {
    let realm = registry.token_realm().expect("token registry");
    let url = reqwest::Url::parse_with_params(
        &realm,
        &[("service", registry.token_service()), ("scope", scope)],
    )
    .unwrap();
    let (status, _, body) = raw_get(url.as_str(), None, auth).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn form_encode(form: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://form.invalid/", form).unwrap();
    url.query().unwrap_or_default().to_owned()
}

async fn post_token(registry: &Registry, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(registry.token_realm().expect("token registry"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_encode(form))
        .send()
        .await
        .expect("POST token");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

#[tokio::test]
async fn token_auth_registry() {
    let registry = Registry::start_token_auth("bob", "hunter2");
    let image = fixtures::busybox();
    let pushed = image
        .push(&registry, "tests/busybox:1", ManifestFormat::Oci)
        .await
        .expect("push through the Bearer flow");
    assert!(registry
        .token_requests()
        .iter()
        .any(|r| r.grant == TokenGrant::Basic && r.account.as_deref() == Some("bob")));

    // Anonymous: 401 with a Bearer challenge naming the realm, service and scope.
    let manifest_url = format!("{}/v2/tests/busybox/manifests/1", registry.url());
    let (status, headers, _) = raw_get(&manifest_url, Some(OCI_MANIFEST), None).await;
    assert_eq!(status, 401);
    let (scheme, params) = parse_challenge(&header(&headers, "www-authenticate"));
    assert_eq!(scheme, "Bearer");
    assert_eq!(params["realm"], registry.token_realm().unwrap());
    assert_eq!(params["service"], registry.token_service());
    assert_eq!(params["scope"], "repository:tests/busybox:pull");

    // With a token from the realm it works.
    let scope = "repository:tests/busybox:pull";
    let (status, token) = get_token(&registry, scope, Some(&basic("bob", "hunter2"))).await;
    assert_eq!(status, 200);
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let (status, _, body) = raw_get(&manifest_url, Some(OCI_MANIFEST), Some(&bearer)).await;
    assert_eq!(status, 200);
    assert_digest(&body, &pushed.manifest_digest);

    // An anonymous token carries no access: insufficient_scope.
    let (status, token) = get_token(&registry, scope, None).await;
    assert_eq!(status, 200);
    let anonymous = format!("Bearer {}", token["token"].as_str().unwrap());
    let (status, headers, _) = raw_get(&manifest_url, Some(OCI_MANIFEST), Some(&anonymous)).await;
    assert_eq!(status, 401);
    let (_, params) = parse_challenge(&header(&headers, "www-authenticate"));
    assert_eq!(params["error"], "insufficient_scope");

    // Wrong password: refused by the token server itself.
    let (status, _) = get_token(&registry, scope, Some(&basic("bob", "nope"))).await;
    assert_eq!(status, 401);

    // A client without credentials cannot pull.
    assert!(RegistryClient::new(&registry.url())
        .get_manifest("tests/busybox", "1", &[])
        .await
        .is_err());
}

#[tokio::test]
async fn identity_tokens() {
    let registry = Registry::start_token_auth("carol", "pw");
    fixtures::busybox()
        .push(&registry, "tests/busybox:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let manifest_url = format!("{}/v2/tests/busybox/manifests/1", registry.url());
    let scope = "repository:tests/busybox:pull";

    // OAuth2 password grant with access_type=offline returns a refresh token.
    let (status, body) = post_token(
        &registry,
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "pw"),
            ("service", registry.token_service()),
            ("scope", scope),
            ("client_id", "berth"),
            ("access_type", "offline"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();

    // The refresh token alone (an identity token) gets a working access token.
    let (status, body) = post_token(
        &registry,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", registry.token_service()),
            ("scope", scope),
            ("client_id", "berth"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    assert_eq!(
        raw_get(&manifest_url, Some(OCI_MANIFEST), Some(&bearer))
            .await
            .0,
        200
    );

    // Unknown refresh tokens and bad passwords are refused.
    let (status, _) = post_token(
        &registry,
        &[("grant_type", "refresh_token"), ("refresh_token", "bogus")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post_token(
        &registry,
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(status, 401);

    // The GET flow hands out a refresh token with offline_token=true.
    let realm = registry.token_realm().unwrap();
    let url = reqwest::Url::parse_with_params(
        &realm,
        &[
            ("service", registry.token_service()),
            ("scope", scope),
            ("offline_token", "true"),
            ("client_id", "berth"),
        ],
    )
    .unwrap();
    let (status, _, body) = raw_get(url.as_str(), None, Some(&basic("carol", "pw"))).await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body["refresh_token"].as_str().is_some());

    let grants: Vec<TokenGrant> = registry
        .token_requests()
        .into_iter()
        .map(|r| r.grant)
        .collect();
    assert!(grants.contains(&TokenGrant::Password));
    assert!(grants.contains(&TokenGrant::RefreshToken));
}

#[tokio::test]
async fn token_auth_with_anonymous_pull() {
    let options = TokenAuthOptions {
        anonymous_pull: true,
        ..TokenAuthOptions::default()
    };
    let registry = Registry::start_token_auth_with("dave", "pw", options);
    let pushed = fixtures::busybox()
        .push(&registry, "tests/public:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let anonymous = RegistryClient::new(&registry.url());
    let fetched = anonymous
        .get_manifest("tests/public", "1", &[])
        .await
        .expect("anonymous pull allowed");
    assert_eq!(fetched.digest, pushed.manifest_digest);
    assert!(anonymous
        .push_blob("tests/public", b"nope".to_vec())
        .await
        .is_err());
}
