//! A pulled image's snapshots stacked with overlayfs give exactly the
//! filesystem the image describes: whiteouts delete, opaque directories
//! hide, metadata survives.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_cri::runtime::v1 as cri;
use berth_snapshot::{Overlay, OverlaySpec};
use berth_testkit::fixtures::{self, Expect};
use berth_testkit::{ManifestFormat, Registry};
use common::*;

/// The snapshot directories of an image, topmost first, from verbose ImageStatus.
async fn lowers(d: &Daemon, image: &str) -> Vec<PathBuf> {
    let mut c = d.images().await;
    let r = c
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    let mut v: Vec<PathBuf> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let chain = l["chain_id"].as_str().unwrap();
            d.snapshots()
                .join(chain.trim_start_matches("sha256:"))
                .join("fs")
        })
        .collect();
    v.reverse();
    v
}

fn check(root: &Path, e: &Expect) {
    match e {
        Expect::Dir {
            path,
            mode,
            uid,
            gid,
        } => {
            let m = std::fs::symlink_metadata(root.join(path))
                .unwrap_or_else(|_| panic!("{path} missing"));
            assert!(m.is_dir(), "{path} is not a directory");
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (*mode, *uid, *gid),
                "{path}"
            );
        }
        Expect::File {
            path,
            content,
            mode,
            uid,
            gid,
        } => {
            let m = std::fs::symlink_metadata(root.join(path))
                .unwrap_or_else(|_| panic!("{path} missing"));
            assert!(m.is_file(), "{path} is not a file");
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (*mode, *uid, *gid),
                "{path}"
            );
            assert_eq!(std::fs::read(root.join(path)).unwrap(), *content, "{path}");
        }
        Expect::Symlink { path, target } => {
            assert_eq!(
                std::fs::read_link(root.join(path)).unwrap(),
                Path::new(target),
                "{path}"
            );
        }
        Expect::Fifo { path } => {
            assert!(
                std::fs::symlink_metadata(root.join(path))
                    .unwrap()
                    .file_type()
                    .is_fifo(),
                "{path}"
            );
        }
        Expect::HardLink { path, same_as } => {
            let a = std::fs::symlink_metadata(root.join(path)).unwrap();
            let b = std::fs::symlink_metadata(root.join(same_as)).unwrap();
            assert_eq!(a.ino(), b.ino(), "{path} and {same_as} are one inode");
        }
        Expect::Xattr { path, name, value } => {
            let mut buf = vec![0u8; 256];
            let n = rustix::fs::lgetxattr(root.join(path).as_path(), *name, &mut buf)
                .unwrap_or_else(|e| panic!("{path}: xattr {name}: {e}"));
            assert_eq!(&buf[..n], *value, "{path} {name}");
        }
        Expect::Absent { path } => {
            assert!(
                std::fs::symlink_metadata(root.join(path)).is_err(),
                "{path} should be gone"
            );
        }
    }
}

fn no_whiteout_names(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".wh."),
            "{} shows a raw whiteout",
            e.path().display()
        );
        if e.file_type().unwrap().is_dir() {
            no_whiteout_names(&e.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn layered_image_merges_as_the_image_says() {
    let reg = Registry::start();
    fixtures::layered()
        .push(&reg, "tests/layered:1", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start("");
    let mut c = d.images().await;
    let name = format!("{}/tests/layered:1", reg.host());
    pull(&mut c, &name, None).await.unwrap();

    let lowers = lowers(&d, &name).await;
    assert!(lowers.len() >= 5);
    let scratch = tempfile::tempdir().unwrap();
    let (upper, work, merged) = (
        scratch.path().join("upper"),
        scratch.path().join("work"),
        scratch.path().join("merged"),
    );
    for p in [&upper, &work, &merged] {
        std::fs::create_dir(p).unwrap();
    }
    let overlay = Overlay::mount(
        &OverlaySpec {
            lowers: &lowers,
            upper: Some((&upper, &work)),
        },
        &merged,
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| {
        for e in fixtures::layered_expected() {
            check(&merged, &e);
        }
        no_whiteout_names(&merged);
        // Writes go to the private upper layer, never to a shared snapshot.
        std::fs::write(merged.join("new-file"), b"w").unwrap();
        assert!(upper.join("new-file").exists());
        assert!(lowers.iter().all(|l| !l.join("new-file").exists()));
    });
    overlay.unmount().unwrap();
    overlay.unmount().unwrap();
    assert_eq!(std::fs::read_dir(&merged).unwrap().count(), 0, "unmounted");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
