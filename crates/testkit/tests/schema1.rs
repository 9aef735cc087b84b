//! Docker schema 1: the real registry refuses to store it, the fake one serves it.

use berth_testkit::media_types::DOCKER_SCHEMA1_SIGNED;
use berth_testkit::{schema1_manifest, FakeRegistry, Registry, RegistryClient};

#[tokio::test]
async fn real_registry_refuses_schema1_pushes() {
    let registry = Registry::start();
    let client = RegistryClient::for_registry(&registry);
    let body = schema1_manifest("tests/old", "latest", &[]);
    let err = client
        .put_manifest("tests/old", "latest", DOCKER_SCHEMA1_SIGNED, body)
        .await
        .expect_err("distribution 2.8 has schema 1 disabled");
    let message = format!("{err:#}");
    eprintln!("SCHEMA1: {message}");
    assert!(
        message.contains("MANIFEST_INVALID") || message.contains("400"),
        "{message}"
    );
}

#[tokio::test]
async fn fake_registry_serves_schema1() {
    let fake = FakeRegistry::start();
    let digest = fake.serve_schema1("tests/old", "latest");

    let client = RegistryClient::new(&fake.url());
    let fetched = client
        .get_manifest("tests/old", "latest", &[])
        .await
        .expect("fake registry serves it");
    assert_eq!(fetched.media_type, DOCKER_SCHEMA1_SIGNED);
    assert_eq!(fetched.digest, digest);
    assert_eq!(
        fetched.docker_content_digest.as_deref(),
        Some(digest.as_str())
    );
    let manifest: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
    assert_eq!(manifest["schemaVersion"], 1);
    let blob_sum = manifest["fsLayers"][0]["blobSum"].as_str().unwrap();
    let blob = client.get_blob("tests/old", blob_sum).await.unwrap();
    assert_eq!(berth_testkit::sha256_digest(&blob), blob_sum);
    assert!(fake
        .requests()
        .iter()
        .any(|(m, p)| m == "GET" && p == "/v2/tests/old/manifests/latest"));
}

#[tokio::test]
async fn fake_registry_can_lie_about_digests() {
    let fake = FakeRegistry::start();
    let claimed = berth_testkit::sha256_digest(b"the real content");
    fake.add_blob("tests/liar", &claimed, b"something else");
    let blob = RegistryClient::new(&fake.url())
        .get_blob("tests/liar", &claimed)
        .await
        .unwrap();
    assert_ne!(berth_testkit::sha256_digest(&blob), claimed);
}
