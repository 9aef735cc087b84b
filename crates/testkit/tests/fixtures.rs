//! Fixture images are deterministic and contain what their docs promise.

mod common;

use std::collections::BTreeMap;

use berth_testkit::fixtures::{self, Expect, Hostile};
use berth_testkit::{sha256_digest, Compression, ManifestFormat, Platform};
use common::tar_entries;
use tar::EntryType;

#[test]
fn fixtures_are_deterministic() {
    let pairs = [
        (fixtures::busybox(), fixtures::busybox()),
        (fixtures::layered(), fixtures::layered()),
        (fixtures::mixed_compression(), fixtures::mixed_compression()),
        (fixtures::big(2), fixtures::big(2)),
        (Hostile::DotDot.image(), Hostile::DotDot.image()),
    ];
    for (a, b) in pairs {
        assert_eq!(a.config_digest(), b.config_digest());
        for format in [ManifestFormat::Oci, ManifestFormat::DockerV2] {
            assert_eq!(a.manifest(format), b.manifest(format));
        }
    }
}

#[test]
fn busybox_rootfs() {
    let entries = tar_entries(&fixtures::busybox_rootfs_tar());
    let find = |path: &str| {
        entries
            .iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("{path} missing"))
    };
    assert_eq!(find("bin/sh").1, EntryType::Symlink);
    assert_eq!(find("bin/sh").4, "busybox");
    for applet in ["ls", "cat", "echo", "sleep", "id", "true", "env", "top"] {
        assert_eq!(find(&format!("bin/{applet}")).4, "busybox");
    }
    assert_eq!(find("tmp").2, 0o1777);
    let passwd = String::from_utf8(find("etc/passwd").3.clone()).unwrap();
    assert!(passwd.contains("berth:x:1234:5678:"));
    assert!(passwd.contains("nobody:x:65534:"));
    let group = String::from_utf8(find("etc/group").3.clone()).unwrap();
    assert!(group.contains("berthgrp:x:5678:berth"));
    assert!(group.contains("berthextra:x:9012:berth"));

    let users = [
        (fixtures::user_uid(), "1234"),
        (fixtures::user_name(), "berth"),
        (fixtures::user_uid_gid(), "1234:5678"),
    ];
    for (image, user) in users {
        assert_eq!(image.runtime_config().user.as_deref(), Some(user));
        let config: serde_json::Value = serde_json::from_slice(image.config_json()).unwrap();
        assert_eq!(config["config"]["User"], user);
    }
}

#[test]
fn multi_arch_images_name_their_platform() {
    let index = fixtures::multi_arch();
    assert_eq!(index.entries.len(), 3);
    for (platform, image) in &index.entries {
        let config: serde_json::Value = serde_json::from_slice(image.config_json()).unwrap();
        assert_eq!(config["architecture"], platform.architecture);
        let tar = image.layers()[1].decompress().unwrap();
        let entries = tar_entries(&tar);
        assert_eq!(entries[0].0, "arch");
        assert_eq!(entries[0].3, format!("{}\n", platform.label()).into_bytes());
    }
    let arm = Platform::new("linux", "arm").with_variant("v7");
    assert!(index.image_for(&arm).is_some());
}

#[test]
fn compression_variants_share_the_image_id() {
    let gzip = fixtures::compressed(Compression::Gzip);
    let zstd = fixtures::compressed(Compression::Zstd);
    let none = fixtures::compressed(Compression::None);
    let mixed = fixtures::mixed_compression();
    for other in [&zstd, &none, &mixed] {
        assert_eq!(gzip.config_digest(), other.config_digest());
        let diff_ids = |i: &berth_testkit::Image| {
            i.layers()
                .iter()
                .map(|l| l.diff_id().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(diff_ids(&gzip), diff_ids(other));
    }
    assert_ne!(gzip.layers()[1].digest(), zstd.layers()[1].digest());
    let kinds: Vec<_> = mixed.layers().iter().map(|l| l.compression()).collect();
    assert_eq!(
        kinds,
        [
            Compression::Gzip,
            Compression::Gzip,
            Compression::Zstd,
            Compression::None
        ]
    );
    for image in [&gzip, &zstd, &none, &mixed] {
        for layer in image.layers() {
            assert_eq!(sha256_digest(&layer.decompress().unwrap()), layer.diff_id());
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&mixed.manifest(ManifestFormat::Oci)).unwrap();
    assert_eq!(
        manifest["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        manifest["layers"][3]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
}

#[test]
fn hostile_layers_hold_their_raw_entries() {
    let names = |case: Hostile| -> Vec<(String, String)> {
        tar_entries(&case.tar())
            .into_iter()
            .map(|e| (e.0, e.4))
            .collect()
    };
    let has = |case: Hostile, path: &str, link: &str| {
        assert!(
            names(case).contains(&(path.to_owned(), link.to_owned())),
            "{case:?}: {:?}",
            names(case)
        );
    };
    has(Hostile::DotDot, "../berth-hostile-dotdot", "");
    has(Hostile::NestedDotDot, "a/../../berth-hostile-nested", "");
    has(Hostile::AbsolutePath, "/tmp/berth-hostile-absolute", "");
    has(Hostile::SymlinkParentAbsolute, "escape", "/tmp");
    has(
        Hostile::SymlinkParentAbsolute,
        "escape/berth-hostile-symlink",
        "",
    );
    has(
        Hostile::SymlinkParentRelative,
        "up",
        "../../../../../../../../..",
    );
    has(Hostile::HardlinkAbsolute, "passwd", "/etc/passwd");
    has(Hostile::HardlinkDotDot, "x", "../../x");
    has(Hostile::WhiteoutDotDot, "sub/.wh...", "");
    has(Hostile::WhiteoutEscape, "../.wh.berth-victim", "");

    let mismatch = Hostile::DiffIdMismatch.image();
    let layer = &mismatch.layers()[0];
    assert_ne!(sha256_digest(&layer.decompress().unwrap()), layer.diff_id());
    assert_eq!(sha256_digest(layer.blob()), layer.digest());

    let corrupt = Hostile::CorruptGzip.image();
    assert!(corrupt.layers()[0].decompress().is_err());
    assert_eq!(
        sha256_digest(corrupt.layers()[0].blob()),
        corrupt.layers()[0].digest()
    );
}

#[test]
fn big_image_size() {
    let image = fixtures::big(10);
    assert_eq!(image.layers().len(), 5);
    let total = image.total_size();
    assert!(
        total > 10 * 1024 * 1024 && total < 11 * 1024 * 1024,
        "{total}"
    );
}

/// A node of the simulated merged filesystem.
#[derive(Debug, Clone)]
struct Node {
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
    link: String,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Applies layers the way an overlay unpacker must: whiteouts and opaque
/// markers hide lower layers only; a non-directory replaces a directory whole.
fn merge(layers: &[Vec<u8>]) -> BTreeMap<String, Node> {
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    let remove_tree = |fs: &mut BTreeMap<String, Node>, path: &str| {
        let prefix = format!("{path}/");
        fs.retain(|p, _| p != path && !p.starts_with(&prefix));
    };
    for tar in layers {
        let mut archive = tar::Archive::new(&tar[..]);
        let mut adds = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let path = path.trim_end_matches('/').to_owned();
            let (parent, base) = path.rsplit_once('/').unwrap_or(("", &path));
            if base == ".wh..wh..opq" {
                let prefix = format!("{parent}/");
                fs.retain(|p, _| !p.starts_with(&prefix));
                continue;
            }
            if let Some(victim) = base.strip_prefix(".wh.") {
                let victim = if parent.is_empty() {
                    victim.to_owned()
                } else {
                    format!("{parent}/{victim}")
                };
                remove_tree(&mut fs, &victim);
                continue;
            }
            let mut xattrs = BTreeMap::new();
            if let Some(ext) = entry.pax_extensions().unwrap() {
                for e in ext {
                    let e = e.unwrap();
                    if let Some(name) = e.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(name.to_owned(), e.value_bytes().to_vec());
                    }
                }
            }
            let header = entry.header().clone();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let node = Node {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                gid: header.gid().unwrap(),
                data,
                link,
                xattrs,
            };
            adds.push((path, node));
        }
        for (path, node) in adds {
            let is_dir = node.kind == EntryType::Directory;
            if let Some(old) = fs.get(&path) {
                if !(is_dir && old.kind == EntryType::Directory) {
                    remove_tree(&mut fs, &path);
                }
            }
            fs.insert(path, node);
        }
    }
    fs
}

#[test]
fn layered_merges_to_the_documented_view() {
    let image = fixtures::layered();
    let tars: Vec<Vec<u8>> = image
        .layers()
        .iter()
        .map(|l| l.decompress().unwrap())
        .collect();
    assert_eq!(tars.len(), 5, "busybox + 4 layers");
    let fs = merge(&tars);
    assert!(!fs.keys().any(|p| p.contains(".wh.")), "whiteouts leaked");
    for expect in fixtures::layered_expected() {
        let get = |path: &str| {
            fs.get(path)
                .unwrap_or_else(|| panic!("{path} missing for {expect:?}"))
        };
        match expect {
            Expect::Dir {
                path,
                mode,
                uid,
                gid,
            } => {
                let n = get(path);
                assert_eq!(n.kind, EntryType::Directory, "{path}");
                assert_eq!(
                    (n.mode, n.uid, n.gid),
                    (mode, uid.into(), gid.into()),
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
                let n = get(path);
                assert_eq!(n.kind, EntryType::Regular, "{path}");
                assert_eq!(n.data, content, "{path}");
                assert_eq!(
                    (n.mode, n.uid, n.gid),
                    (mode, uid.into(), gid.into()),
                    "{path}"
                );
            }
            Expect::Symlink { path, target } => {
                let n = get(path);
                assert_eq!(
                    (n.kind, n.link.as_str()),
                    (EntryType::Symlink, target),
                    "{path}"
                );
            }
            Expect::Fifo { path } => assert_eq!(get(path).kind, EntryType::Fifo, "{path}"),
            Expect::HardLink { path, same_as } => {
                let n = get(path);
                assert_eq!(
                    (n.kind, n.link.as_str()),
                    (EntryType::Link, same_as),
                    "{path}"
                );
                assert!(fs.contains_key(same_as));
            }
            Expect::Xattr { path, name, value } => {
                assert_eq!(
                    get(path).xattrs.get(name).map(Vec::as_slice),
                    Some(value),
                    "{path}"
                );
            }
            Expect::Absent { path } => assert!(!fs.contains_key(path), "{path} should be gone"),
        }
    }
}
