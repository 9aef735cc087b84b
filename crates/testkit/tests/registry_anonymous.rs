//! The anonymous registry: push fixtures with the testkit, read them back with raw HTTP.

mod common;

use berth_testkit::media_types::*;
use berth_testkit::{fixtures, IndexFormat, ManifestFormat, Platform, Registry, RegistryClient};
use common::{assert_digest, gunzip, header, raw_get, tar_entries};

#[tokio::test]
async fn push_oci_image_and_pull_it_back() {
    let registry = Registry::start();
    let image = fixtures::busybox();
    let pushed = image
        .push(&registry, "tests/busybox:oci", ManifestFormat::Oci)
        .await
        .expect("push");
    assert_eq!(pushed.config_digest, image.config_digest());

    let url = registry.url();
    let (status, headers, manifest) = raw_get(
        &format!("{url}/v2/tests/busybox/manifests/oci"),
        Some(OCI_MANIFEST),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), OCI_MANIFEST);
    assert_eq!(
        header(&headers, "docker-content-digest"),
        pushed.manifest_digest
    );
    assert_digest(&manifest, &pushed.manifest_digest);

    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["config"]["digest"], image.config_digest());
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], OCI_LAYER_GZIP);
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(layer_digest, pushed.layers[0].digest);

    let (status, _, config) = raw_get(
        &format!("{url}/v2/tests/busybox/blobs/{}", image.config_digest()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_digest(&config, image.config_digest());
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], Platform::host().architecture);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["rootfs"]["diff_ids"][0], pushed.layers[0].diff_id);

    let (status, _, layer) = raw_get(
        &format!("{url}/v2/tests/busybox/blobs/{layer_digest}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_digest(&layer, &layer_digest);
    let tar = gunzip(&layer);
    assert_digest(&tar, &pushed.layers[0].diff_id);
    let entries = tar_entries(&tar);
    let busybox = entries.iter().find(|e| e.0 == "bin/busybox").unwrap();
    assert_eq!(busybox.2, 0o755);
    assert!(busybox.3.starts_with(b"\x7fELF"));
    let tmp = entries.iter().find(|e| e.0 == "tmp").unwrap();
    assert_eq!(tmp.2, 0o1777);

    // The access log saw exactly one download of the layer.
    assert_eq!(registry.blob_get_count(&layer_digest), 1);
}

#[tokio::test]
async fn docker_v2_manifest_and_blob_dedup() {
    let registry = Registry::start();
    let image = fixtures::user_name();
    let client = RegistryClient::for_registry(&registry);
    let pushed = client
        .push_image("tests/user:docker", &image, ManifestFormat::DockerV2)
        .await
        .expect("push");
    let fetched = client
        .get_manifest("tests/user", "docker", &[DOCKER_MANIFEST])
        .await
        .expect("get manifest");
    assert_eq!(fetched.media_type, DOCKER_MANIFEST);
    assert_eq!(fetched.digest, pushed.manifest_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
    let config = client
        .get_blob("tests/user", image.config_digest())
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["User"], "berth");

    // A second push of the same image uploads nothing: HEAD finds every blob.
    let uploads =
        |log: &[berth_testkit::AccessLogEntry]| log.iter().filter(|e| e.method == "POST").count();
    let before = uploads(&registry.settled_access_log());
    client
        .push_image("tests/user:again", &image, ManifestFormat::DockerV2)
        .await
        .unwrap();
    assert_eq!(uploads(&registry.settled_access_log()), before);
}

#[tokio::test]
async fn multi_arch_index_both_formats() {
    let registry = Registry::start();
    let index = fixtures::multi_arch();
    for (format, tag) in [
        (IndexFormat::OciIndex, "oci"),
        (IndexFormat::DockerManifestList, "docker"),
    ] {
        let pushed = index
            .push(&registry, &format!("tests/multi:{tag}"), format)
            .await
            .expect("push index");
        let (status, headers, body) = raw_get(
            &format!("{}/v2/tests/multi/manifests/{tag}", registry.url()),
            Some(format.media_type()),
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), format.media_type());
        assert_digest(&body, &pushed.digest);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let manifests = doc["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 3);
        assert_eq!(manifests[2]["platform"]["architecture"], "arm");
        assert_eq!(manifests[2]["platform"]["variant"], "v7");
        assert_eq!(
            manifests[2]["mediaType"],
            format.child_format().media_type()
        );

        // Follow the arm/v7 child down to its /arch file.
        let child = manifests[2]["digest"].as_str().unwrap();
        let client = RegistryClient::for_registry(&registry);
        let child = client
            .get_manifest("tests/multi", child, &[])
            .await
            .unwrap();
        let child: serde_json::Value = serde_json::from_slice(&child.body).unwrap();
        let arch_layer = child["layers"][1]["digest"].as_str().unwrap();
        let blob = client.get_blob("tests/multi", arch_layer).await.unwrap();
        let entries = tar_entries(&gunzip(&blob));
        assert_eq!(entries[0].0, "arch");
        assert_eq!(entries[0].3, b"linux/arm/v7\n");
    }
}

#[tokio::test]
async fn every_fixture_is_accepted_by_the_registry() {
    let registry = Registry::start();
    let client = RegistryClient::for_registry(&registry);
    let mut images = vec![
        ("layered", fixtures::layered()),
        ("user-uid", fixtures::user_uid()),
        ("user-uid-gid", fixtures::user_uid_gid()),
        (
            "gzip",
            fixtures::compressed(berth_testkit::Compression::Gzip),
        ),
        (
            "zstd",
            fixtures::compressed(berth_testkit::Compression::Zstd),
        ),
        (
            "plain",
            fixtures::compressed(berth_testkit::Compression::None),
        ),
        ("mixed", fixtures::mixed_compression()),
        ("big", fixtures::big(5)),
    ];
    for case in fixtures::Hostile::ALL {
        images.push((case.name(), case.image()));
    }
    for (name, image) in images {
        for format in [ManifestFormat::Oci, ManifestFormat::DockerV2] {
            let tag = format!("tests/{name}:{format:?}").to_lowercase();
            let pushed = client
                .push_image(&tag, &image, format)
                .await
                .unwrap_or_else(|e| panic!("push {tag}: {e:#}"));
            let (repo, reference) = berth_testkit::split_reference(&tag);
            let fetched = client.get_manifest(repo, reference, &[]).await.unwrap();
            assert_eq!(fetched.digest, pushed.manifest_digest, "{tag}");
        }
    }
}

#[tokio::test]
async fn drop_stops_the_registry_and_removes_its_dir() {
    let registry = Registry::start();
    let dir = registry.dir().to_owned();
    let url = format!("{}/v2/", registry.url());
    assert_eq!(raw_get(&url, None, None).await.0, 200);
    drop(registry);
    assert!(!dir.exists());
    assert!(
        reqwest::get(&url).await.is_err(),
        "registry still answering"
    );
}

#[tokio::test]
async fn tampered_blob_is_served_as_is() {
    let registry = Registry::start();
    let image = fixtures::compressed(berth_testkit::Compression::None);
    let pushed = image
        .push(&registry, "tests/tampered:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let digest = &pushed.layers[1].digest;
    let path = registry.blob_data_path(digest);
    let mut data = std::fs::read(&path).expect("blob on disk");
    data[600] ^= 0xFF; // same length, different content
    std::fs::write(&path, &data).unwrap();
    let served = RegistryClient::for_registry(&registry)
        .get_blob("tests/tampered", digest)
        .await
        .unwrap();
    assert_eq!(served, data);
    assert_ne!(&berth_testkit::sha256_digest(&served), digest);
}
