//! The CRI image service of a real daemon against a real registry.

mod common;

use berth_cri::runtime::v1 as cri;
use berth_testkit::{fixtures, IndexFormat, ManifestFormat, Registry};
use common::*;
use tonic::Code;

fn mirror_config(registry: &Registry) -> String {
    format!(
        "[registry.\"docker.io\"]\nmirrors = [\"{}\"]\nupstream = false\n[image]\nimage_pull_progress_timeout = \"20s\"\n",
        registry.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_status_list_remove_by_every_name() {
    let reg = Registry::start();
    let pushed = fixtures::busybox()
        .push(&reg, "tests/busybox:1.0", ManifestFormat::DockerV2)
        .await
        .unwrap();
    let d = Daemon::start("");
    let mut c = d.images().await;
    let name = format!("{}/tests/busybox:1.0", reg.host());
    let id = pull(&mut c, &name, None).await.unwrap();
    assert_eq!(
        id, pushed.config_digest,
        "the image id is the config digest"
    );

    let by_id = status(&mut c, &id).await.expect("status by id");
    let by_tag = status(&mut c, &name).await.expect("status by tag");
    let digest_ref = format!("{}/tests/busybox@{}", reg.host(), pushed.manifest_digest);
    let by_digest = status(&mut c, &digest_ref).await.expect("status by digest");
    assert_eq!(by_id, by_tag);
    assert_eq!(by_id, by_digest);
    assert_eq!(by_id.repo_tags, vec![name.clone()]);
    assert_eq!(by_id.repo_digests, vec![digest_ref.clone()]);
    assert!(by_id.size > 0);
    assert_eq!(by_id.spec.as_ref().unwrap().image, id);

    // A second tag of the same image: one image, two tags; removing one tag untags.
    fixtures::busybox()
        .push(&reg, "tests/busybox:latest", ManifestFormat::DockerV2)
        .await
        .unwrap();
    let id2 = pull(&mut c, &format!("{}/tests/busybox", reg.host()), None)
        .await
        .unwrap();
    assert_eq!(id, id2);
    let list = c
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repo_tags.len(), 2);
    let filtered = c
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter { image: spec(&name) }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    remove(&mut c, &name).await;
    let after = status(&mut c, &id)
        .await
        .expect("still there under its other tag");
    assert_eq!(
        after.repo_tags,
        vec![format!("{}/tests/busybox:latest", reg.host())]
    );

    // Removing by id removes every name, and the unpacked layers with it;
    // ImageFsInfo sees the change at once.
    assert!(snapshot_count(&d) > 0);
    let used_before = fs_used(&mut c).await;
    assert_eq!(
        fs_used(&mut c).await,
        used_before,
        "a poll without a change"
    );
    remove(&mut c, &id).await;
    assert!(fs_used(&mut c).await < used_before, "usage after removal");
    assert!(status(&mut c, &id).await.is_none());
    assert!(status(&mut c, &digest_ref).await.is_none());
    assert_eq!(snapshot_count(&d), 0, "layers are collected with the image");
    // Idempotent, including for ids that never existed.
    remove(&mut c, &id).await;
    remove(&mut c, &"0".repeat(64)).await;
    remove(&mut c, "never/pulled:x").await;
}

async fn fs_used(
    c: &mut berth_cri::runtime::v1::image_service_client::ImageServiceClient<
        tonic::transport::Channel,
    >,
) -> u64 {
    let r = c
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    r.image_filesystems[0].used_bytes.as_ref().unwrap().value
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_are_invalid_argument() {
    let d = Daemon::start("");
    let mut c = d.images().await;
    for bad in ["", "UPPER/case", "busybox@sha256:123", "a b"] {
        let e = pull(&mut c, bad, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = c
        .image_status(cri::ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Not found is an empty answer, not an error.
    assert!(status(&mut c, "docker.io/library/nothing:here")
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_hub_names_go_through_the_configured_mirror() {
    let reg = Registry::start();
    let pushed = fixtures::busybox()
        .push(&reg, "library/busybox:latest", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start(&mirror_config(&reg));
    let mut c = d.images().await;
    let id = pull(&mut c, "busybox", None).await.unwrap();
    assert_eq!(id, pushed.config_digest);
    let img = status(&mut c, "docker.io/library/busybox:latest")
        .await
        .unwrap();
    assert_eq!(
        img.repo_tags,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(
        img.repo_digests,
        vec![format!(
            "docker.io/library/busybox@{}",
            pushed.manifest_digest
        )]
    );
    // Missing on the mirror, upstream disabled: NotFound, naming the mirror.
    let e = pull(&mut c, "docker.io/library/absent:1", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("127.0.0.1"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_selects_this_platform() {
    let reg = Registry::start();
    let pushed = fixtures::multi_arch()
        .push(&reg, "tests/multi:latest", IndexFormat::OciIndex)
        .await
        .unwrap();
    let d = Daemon::start("");
    let mut c = d.images().await;
    let name = format!("{}/tests/multi:latest", reg.host());
    let id = pull(&mut c, &name, None).await.unwrap();
    let img = status(&mut c, &id).await.unwrap();
    // The repo digest is the index's; the image is the amd64 one.
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/tests/multi@{}", reg.host(), pushed.digest)]
    );
    let amd64 = pushed
        .manifests
        .iter()
        .find(|(p, _)| p.architecture == "amd64")
        .map(|(_, i)| i.config_digest.clone())
        .unwrap();
    assert_eq!(id, amd64);
    // Also as a Docker manifest list.
    fixtures::multi_arch()
        .push(
            &reg,
            "tests/multi-docker:latest",
            IndexFormat::DockerManifestList,
        )
        .await
        .unwrap();
    let id2 = pull(
        &mut c,
        &format!("{}/tests/multi-docker:latest", reg.host()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(id2, amd64);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_compression_unpacks() {
    let reg = Registry::start();
    let d = Daemon::start("");
    let mut c = d.images().await;
    for (tag, image) in [
        (
            "gzip",
            fixtures::compressed(berth_testkit::Compression::Gzip),
        ),
        (
            "zstd",
            fixtures::compressed(berth_testkit::Compression::Zstd),
        ),
        (
            "none",
            fixtures::compressed(berth_testkit::Compression::None),
        ),
        ("mixed", fixtures::mixed_compression()),
    ] {
        let pushed = image
            .push(&reg, &format!("tests/comp:{tag}"), ManifestFormat::Oci)
            .await
            .unwrap();
        let id = pull(&mut c, &format!("{}/tests/comp:{tag}", reg.host()), None)
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e:?}"));
        assert_eq!(id, pushed.config_digest);
    }
    assert!(leftovers(&d).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_never_write_outside_their_snapshot() {
    use berth_testkit::fixtures::Hostile;
    let reg = Registry::start();
    let d = Daemon::start("");
    let mut c = d.images().await;
    for case in Hostile::ALL {
        let repo = format!("tests/hostile-{}:1", case.name());
        case.image()
            .push(&reg, &repo, ManifestFormat::Oci)
            .await
            .unwrap();
        let r = pull(&mut c, &format!("{}/{repo}", reg.host()), None).await;
        for p in case.host_paths_at_risk() {
            assert!(
                !std::path::Path::new(p).exists(),
                "{case:?} created {p} on the host"
            );
        }
        // Nothing next to the snapshots or the root either.
        for n in [
            "berth-hostile-dotdot",
            "berth-hostile-nested",
            "berth-victim",
        ] {
            assert!(!d.root().join("images").join(n).exists(), "{case:?}");
            assert!(!d.snapshots().join(n).exists(), "{case:?}");
        }
        match case {
            Hostile::DiffIdMismatch
            | Hostile::CorruptGzip
            | Hostile::HardlinkAbsolute
            | Hostile::HardlinkDotDot
            | Hostile::WhiteoutDotDot
            | Hostile::WhiteoutEscape => {
                let e = r.expect_err(&format!("{case:?} must be refused"));
                assert_eq!(e.code(), Code::DataLoss, "{case:?}: {e:?}");
                assert!(
                    status(&mut c, &format!("{}/{repo}", reg.host()))
                        .await
                        .is_none(),
                    "{case:?}: no image after a failed pull"
                );
            }
            _ => {
                // Contained: the pull may succeed, with the file inside the rootfs.
                if let Err(e) = r {
                    assert_eq!(e.code(), Code::DataLoss, "{case:?}: {e:?}");
                }
            }
        }
        assert!(
            leftovers(&d).is_empty(),
            "{case:?} left {:?}",
            leftovers(&d)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registry() {
    let reg = Registry::start_basic_auth("alice", "s3cret");
    fixtures::busybox()
        .push(&reg, "private/bb:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start("");
    let mut c = d.images().await;
    let name = format!("{}/private/bb:1", reg.host());
    let e = pull(&mut c, &name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let bad = cri::AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&mut c, &name, Some(bad)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let good = cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    pull(&mut c, &name, Some(good)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn token_auth_registry_and_credentials_file() {
    let reg = Registry::start_token_auth("bob", "pa55");
    fixtures::busybox()
        .push(&reg, "team/bb:1", ManifestFormat::Oci)
        .await
        .unwrap();
    fixtures::user_uid()
        .push(&reg, "team/uid:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let creds = tempfile::NamedTempFile::new().unwrap();
    let auth = base64_encode("bob:pa55");
    std::fs::write(
        creds.path(),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let d = Daemon::start(&format!(
        "[image]\ncredentials_file = \"{}\"\n",
        creds.path().display()
    ));
    let mut c = d.images().await;
    // From the request.
    let good = cri::AuthConfig {
        auth: auth.clone(),
        ..Default::default()
    };
    pull(&mut c, &format!("{}/team/bb:1", reg.host()), Some(good))
        .await
        .unwrap();
    // From the credentials file.
    let id = pull(&mut c, &format!("{}/team/uid:1", reg.host()), None)
        .await
        .unwrap();
    let img = status(&mut c, &id).await.unwrap();
    assert_eq!(img.uid, Some(cri::Int64Value { value: 1234 }));
    assert!(!reg.token_requests().is_empty());
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn users_from_the_image_config() {
    let reg = Registry::start();
    let d = Daemon::start("");
    let mut c = d.images().await;
    for (tag, image, uid, name) in [
        ("uid", fixtures::user_uid(), Some(1234), ""),
        ("name", fixtures::user_name(), None, "berth"),
        ("uidgid", fixtures::user_uid_gid(), Some(1234), ""),
        ("none", fixtures::busybox(), None, ""),
    ] {
        image
            .push(&reg, &format!("tests/user:{tag}"), ManifestFormat::Oci)
            .await
            .unwrap();
        let id = pull(&mut c, &format!("{}/tests/user:{tag}", reg.host()), None)
            .await
            .unwrap();
        let img = status(&mut c, &id).await.unwrap();
        assert_eq!(img.uid.map(|u| u.value), uid, "{tag}");
        assert_eq!(img.username, name, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_one_download() {
    let reg = Registry::start();
    let pushed = fixtures::big(8)
        .push(&reg, "tests/big:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start("");
    let name = format!("{}/tests/big:1", reg.host());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = d.images().await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &name, None).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), pushed.config_digest);
    }
    for l in &pushed.layers {
        assert_eq!(
            reg.blob_get_count(&l.digest),
            1,
            "layer {} downloaded once",
            l.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schema1_is_refused_and_a_stalled_registry_times_out() {
    let fake = berth_testkit::FakeRegistry::start();
    fake.serve_schema1("old/img", "v1");
    let d = Daemon::start("[image]\nimage_pull_progress_timeout = \"2s\"\n");
    let mut c = d.images().await;
    let e = pull(&mut c, &format!("{}/old/img:v1", fake.host()), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("schema 1"), "{}", e.message());

    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let start = std::time::Instant::now();
    let e = pull(&mut c, &format!("{addr}/stalled/img:1"), None)
        .await
        .unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_and_registry_tokens() {
    let reg = Registry::start_token_auth("carol", "pw");
    fixtures::busybox()
        .push(&reg, "ids/bb:1", ManifestFormat::Oci)
        .await
        .unwrap();
    // What `docker login` stores as an identity token: an OAuth2 refresh token.
    let realm = reg.token_realm().unwrap();
    let resp: serde_json::Value = post_form(
        &realm,
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "pw"),
            ("service", reg.token_service()),
            ("scope", "repository:ids/bb:pull"),
            ("access_type", "offline"),
            ("client_id", "test"),
        ],
    )
    .await;
    let refresh = resp["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let access = resp["access_token"]
        .as_str()
        .or(resp["token"].as_str())
        .unwrap()
        .to_string();

    let d = Daemon::start("");
    let mut c = d.images().await;
    let name = format!("{}/ids/bb:1", reg.host());
    let identity = cri::AuthConfig {
        identity_token: refresh,
        ..Default::default()
    };
    pull(&mut c, &name, Some(identity)).await.unwrap();
    let grants: Vec<_> = reg.token_requests().into_iter().map(|r| r.grant).collect();
    assert!(
        grants.contains(&berth_testkit::TokenGrant::RefreshToken),
        "{grants:?}"
    );
    remove(&mut c, &name).await;

    // A registry token is sent as the bearer token itself.
    let bearer = cri::AuthConfig {
        registry_token: access,
        ..Default::default()
    };
    pull(&mut c, &name, Some(bearer)).await.unwrap();
    let bad = cri::AuthConfig {
        identity_token: "forged".into(),
        ..Default::default()
    };
    remove(&mut c, &name).await;
    assert_eq!(
        pull(&mut c, &name, Some(bad)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

/// A form POST to the token server, as `docker login` makes it.
async fn post_form(url: &str, form: &[(&str, &str)]) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mirrors_are_tried_in_order_and_pinned_images_are_reported() {
    let reg = Registry::start();
    // The mirror holds the image under the upstream path
    // (registry.k8s.io/pause → <mirror>/pause).
    let pushed = fixtures::busybox()
        .push(&reg, "pause:3.10", ManifestFormat::Oci)
        .await
        .unwrap();
    // A port nobody listens on comes first: refused, then the next mirror serves.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let d = Daemon::start(&format!(
        "[image]\npinned_images = [\"registry.k8s.io/pause:3.10\"]\n\
         [registry.\"registry.k8s.io\"]\nmirrors = [\"http://{dead_addr}\", \"{}/\"]\nupstream = false\n",
        reg.url()
    ));
    let mut c = d.images().await;
    let id = pull(&mut c, "registry.k8s.io/pause:3.10", None)
        .await
        .unwrap();
    assert_eq!(id, pushed.config_digest);
    let img = status(&mut c, &id).await.unwrap();
    assert!(img.pinned, "pinned_images names it");
    // Not pinned under another name only.
    fixtures::busybox()
        .push(&reg, "other:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let other = format!("{}/other:1", reg.host());
    pull(&mut c, &other, None).await.unwrap();
    assert!(
        status(&mut c, &other).await.unwrap().pinned,
        "same image id, still pinned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn https_registry_with_a_private_ca() {
    let reg = Registry::start();
    let pushed = fixtures::busybox()
        .push(&reg, "tls/bb:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let front = berth_testkit::TlsFront::start(&reg.host());
    let mirror = |ca: bool| {
        let mut cfg = format!(
            "[registry.\"private.example\"]\nmirrors = [\"{}\"]\nupstream = false\n",
            front.url()
        );
        if ca {
            cfg.push_str(&format!(
                "[registry.\"{}\"]\nca_file = \"{}\"\n",
                front.host(),
                front.ca_file().display()
            ));
        }
        cfg
    };
    // Not trusted: the certificate is refused, and the error says so.
    let d = Daemon::start(&mirror(false));
    let mut c = d.images().await;
    let e = pull(&mut c, "private.example/tls/bb:1", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().to_lowercase().contains("certificate"),
        "{}",
        e.message()
    );
    drop(c);
    drop(d);
    // Trusted through the host's ca_file: pulled over HTTPS.
    let d = Daemon::start(&mirror(true));
    let mut c = d.images().await;
    let id = pull(&mut c, "private.example/tls/bb:1", None)
        .await
        .unwrap();
    assert_eq!(id, pushed.config_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_pull_stops_and_leaves_nothing() {
    let reg = Registry::start();
    let pushed = fixtures::big(60)
        .push(&reg, "tests/cancel:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start("[image]\nmax_concurrent_downloads = 1\n");
    let mut c = d.images().await;
    let name = format!("{}/tests/cancel:1", reg.host());
    // The client gives up after a moment, as kubelet does at its deadline.
    let mut req = tonic::Request::new(cri::PullImageRequest {
        image: spec(&name),
        auth: None,
        sandbox_config: None,
    });
    req.set_timeout(std::time::Duration::from_millis(60));
    let e = c.pull_image(req).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    // The work stops (no caller is left) and its staging goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !leftovers(&d).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    assert!(status(&mut c, &name).await.is_none());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let fetched: usize = pushed
        .layers
        .iter()
        .map(|l| reg.blob_get_count(&l.digest))
        .sum();
    assert!(
        fetched < pushed.layers.len(),
        "the pull went on after its caller left ({fetched} layers fetched)"
    );
    // A new pull starts afresh and succeeds.
    assert_eq!(
        pull(&mut c, &name, None).await.unwrap(),
        pushed.config_digest
    );
}
