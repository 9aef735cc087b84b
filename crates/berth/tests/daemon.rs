//! The daemon process: runtime-wide RPCs, locking, socket, signals, restarts.

mod common;

use std::os::unix::fs::PermissionsExt;

use berth_cri::runtime::v1 as cri;
use berth_testkit::{fixtures, ManifestFormat, Registry};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn version_status_and_runtime_config() {
    let d = Daemon::start("");
    let mut rt = d.runtime().await;
    let v = rt
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "berth");
    assert_eq!(v.runtime_api_version, "v1");
    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(get("RuntimeReady").status);
    // An empty CNI directory got the default bridge network.
    assert!(get("NetworkReady").status, "{conds:?}");
    let installed = d.dir.path().join("cni/87-berth-bridge.conflist");
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&installed).unwrap()).unwrap();
    assert_eq!(conf["plugins"][0]["type"], "bridge");
    // The default handler and runc, with their features.
    let handlers: Vec<(String, bool)> = s
        .runtime_handlers
        .iter()
        .map(|h| (h.name.clone(), h.features.as_ref().unwrap().user_namespaces))
        .collect();
    assert_eq!(handlers[0], (String::new(), true));
    assert!(s.features.as_ref().unwrap().supplemental_groups_policy);
    let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert!(cfg["root"].as_str().unwrap().ends_with("/root"));

    // Without a network (and without the default one), NetworkReady is
    // false with a reason.
    let bare = Daemon::start("[cni]\nconf_dir = \"{dir}/none\"\ninstall_default = false\n");
    let s = bare
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let net = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!net.status);
    assert!(
        !net.reason.is_empty() && net.message.contains("CNI"),
        "{net:?}"
    );
    let rc = rt
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    // Checkpoints: unknown containers are NotFound (the rest is in pods.rs).
    let e = rt
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: "nope".into(),
            location: "/tmp/x.tar".into(),
            timeout: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_private_and_a_second_daemon_is_refused() {
    let mut d = Daemon::start("");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = d.command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    // The first one is unharmed.
    d.runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    // SIGTERM: clean exit, socket removed.
    assert!(d.terminate().success());
    assert!(!d.socket().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn images_survive_a_restart_and_a_killed_pull_leaves_nothing() {
    let reg = Registry::start();
    let bb = fixtures::busybox()
        .push(&reg, "tests/bb:1", ManifestFormat::Oci)
        .await
        .unwrap();
    fixtures::big(60)
        .push(&reg, "tests/big:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let mut d = Daemon::start("");
    let mut c = d.images().await;
    pull(&mut c, &format!("{}/tests/bb:1", reg.host()), None)
        .await
        .unwrap();
    let snaps = snapshot_count(&d);

    // Kill -9 in the middle of a big pull.
    let mut c2 = d.images().await;
    let big = format!("{}/tests/big:1", reg.host());
    let pulling = tokio::spawn(async move { pull(&mut c2, &big, None).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while leftovers(&d).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    d.kill9();
    assert!(pulling.await.unwrap().is_err());

    d.spawn();
    let mut c = d.images().await;
    assert!(status(&mut c, &format!("{}/tests/big:1", reg.host()))
        .await
        .is_none());
    let img = status(&mut c, &bb.config_digest)
        .await
        .expect("pulled image survives");
    assert_eq!(img.repo_tags, vec![format!("{}/tests/bb:1", reg.host())]);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    assert_eq!(snapshot_count(&d), snaps, "no partial layer survives");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_verbs() {
    let reg = Registry::start();
    let pushed = fixtures::busybox()
        .push(&reg, "tests/cli:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start("");
    let name = format!("{}/tests/cli:1", reg.host());
    let out = d.cli(&["pull", "-q", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pushed.config_digest
    );
    let out = d.cli(&["images"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IMAGE") && text.contains(&format!("{}/tests/cli", reg.host())),
        "{text}"
    );
    let out = d.cli(&["images", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pushed.config_digest
    );
    let out = d.cli(&["images", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["id"], pushed.config_digest.as_str());
    let out = d.cli(&["inspecti", &name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"]["repoTags"][0], name.as_str());
    assert!(v["info"]["imageSpec"]["rootfs"].is_object());
    let out = d.cli(&["imagefsinfo"]);
    assert!(out.status.success());
    let out = d.cli(&["version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("RuntimeName:  berth"));
    let out = d.cli(&["rmi", &name]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deleted"));
    let out = d.cli(&["inspecti", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image"));
    // A separate image endpoint (here the same socket) serves the image verbs.
    let ep = d.endpoint();
    let out = d.cli(&["--image-endpoint", &ep, "images", "-q"]);
    assert!(out.status.success(), "{out:?}");
    // A dead endpoint is one clear line and a failure.
    let out = std::process::Command::new(BERTH)
        .args(["-r", "unix:///nonexistent.sock", "images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
