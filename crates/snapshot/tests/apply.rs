//! The layer applier on well-formed layers. Runs as root (ownership, device
//! nodes, trusted.* xattrs).

mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use berth_snapshot::{apply_layer, apply_layer_with, ApplyOptions, Compression, Error, ErrorKind};
use common::{gzip, sha256, xattr, zstd, Layer, Sandbox, MTIME};
use tar::EntryType;

fn apply(sb: &Sandbox, tar: &[u8]) -> Result<berth_snapshot::Applied, Error> {
    apply_layer(tar, Compression::None, &sb.target, &[])
}

fn mode(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// security.capability v2 granting cap_net_bind_service (bit 10).
fn file_caps() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0000u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted[0]
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable[0]
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

#[test]
fn applies_every_entry_type_with_metadata() {
    let sb = Sandbox::new();
    let caps = file_caps();
    let tar = Layer::new()
        .dir_with("etc/", |h| {
            h.set_mode(0o750);
            h.set_uid(10);
            h.set_gid(20);
            h.set_mtime(1_500_000_000);
        })
        .file_with("etc/passwd", b"root:x:0:0\n", |h| {
            h.set_mode(0o644);
            h.set_uid(1000);
            h.set_gid(2000);
            h.set_mtime(1_400_000_000);
        })
        .file_with("bin/su", b"\x7fELF", |h| {
            h.set_mode(0o4755);
            h.set_uid(0);
            h.set_gid(0);
        })
        .file_with("bin/wall", b"\x7fELF", |h| {
            h.set_mode(0o2755);
            h.set_uid(1000);
            h.set_gid(5);
        })
        .dir("tmp", 0o1777)
        .symlink("etc/rel-link", "../bin/su")
        .symlink("etc/abs-link", "/does/not/exist")
        .hardlink("bin/su-again", "bin/su")
        .fifo("run.fifo", 0o620)
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/loop0", EntryType::Block, 7, 0)
        .pax(&[
            ("SCHILY.xattr.user.greeting", b"hello"),
            ("SCHILY.xattr.trusted.berth", b"t"),
            ("SCHILY.xattr.security.capability", &caps),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/evil"),
            ("mtime", b"1234567890.25"),
        ])
        .file_with("bin/ping", b"ping", |h| {
            h.set_mode(0o755);
            h.set_uid(1);
            h.set_gid(1);
        })
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("xdir", 0o700)
        .bytes();

    let applied = apply(&sb, &tar).unwrap();
    assert_eq!(applied.diff_id, sha256(&tar));
    assert_eq!(applied.uncompressed_size, tar.len() as u64);
    assert_eq!(applied.entries, 13);

    let etc = fs::metadata(sb.t("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!((mode(&sb.t("etc")), etc.uid(), etc.gid()), (0o750, 10, 20));
    // Set after its children were created.
    assert_eq!(etc.mtime(), 1_500_000_000);

    let passwd = fs::metadata(sb.t("etc/passwd")).unwrap();
    assert_eq!(fs::read(sb.t("etc/passwd")).unwrap(), b"root:x:0:0\n");
    assert_eq!(
        (passwd.mode() & 0o7777, passwd.uid(), passwd.gid()),
        (0o644, 1000, 2000)
    );
    assert_eq!(passwd.mtime(), 1_400_000_000);

    // Special bits survive chown.
    assert_eq!(mode(&sb.t("bin/su")), 0o4755);
    let wall = fs::metadata(sb.t("bin/wall")).unwrap();
    assert_eq!(
        (wall.mode() & 0o7777, wall.uid(), wall.gid()),
        (0o2755, 1000, 5)
    );
    assert_eq!(mode(&sb.t("tmp")), 0o1777);

    assert_eq!(
        fs::read_link(sb.t("etc/rel-link")).unwrap(),
        PathBuf::from("../bin/su")
    );
    assert_eq!(
        fs::read_link(sb.t("etc/abs-link")).unwrap(),
        PathBuf::from("/does/not/exist")
    );
    assert_eq!(
        fs::symlink_metadata(sb.t("etc/abs-link")).unwrap().mtime(),
        MTIME as i64
    );

    let su = fs::metadata(sb.t("bin/su")).unwrap();
    let su2 = fs::metadata(sb.t("bin/su-again")).unwrap();
    assert_eq!((su.ino(), su.nlink()), (su2.ino(), 2));

    let fifo = fs::symlink_metadata(sb.t("run.fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);

    let null = fs::symlink_metadata(sb.t("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    let lo = fs::symlink_metadata(sb.t("dev/loop0")).unwrap();
    assert!(lo.file_type().is_block_device());
    assert_eq!(lo.rdev(), rustix::fs::makedev(7, 0));
    // Implied parent: root-owned 0755.
    assert_eq!(mode(&sb.t("dev")), 0o755);

    let ping = sb.t("bin/ping");
    assert_eq!(
        xattr(&ping, "user.greeting").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(xattr(&ping, "trusted.berth").as_deref(), Some(&b"t"[..]));
    assert_eq!(
        xattr(&ping, "security.capability").as_deref(),
        Some(&caps[..])
    );
    assert_eq!(
        xattr(&ping, "trusted.overlay.redirect"),
        None,
        "overlay xattrs are never taken from layers"
    );
    let pm = fs::metadata(&ping).unwrap();
    assert_eq!((pm.mtime(), pm.mtime_nsec()), (1_234_567_890, 250_000_000));
    assert_eq!(xattr(&sb.t("xdir"), "user.dir").as_deref(), Some(&b"d"[..]));

    sb.assert_outside_untouched();
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("a", 0o755)
        .file("a/.wh.gone", b"", 0o644)
        .file("a/.wh..wh..opq", b"", 0o644)
        .file("a/kept", b"k", 0o644)
        .file("new/deep/.wh..wh..opq", b"", 0o644)
        .file(".wh.top", b"", 0o644)
        .file("a/.wh..wh.plnk", b"", 0o644) // aufs meta file: ignored
        .bytes();
    apply(&sb, &tar).unwrap();

    for p in ["a/gone", "top"] {
        let m = fs::symlink_metadata(sb.t(p)).unwrap();
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert_eq!(
        xattr(&sb.t("a"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(&sb.t("new/deep"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&sb.t("new"), "trusted.overlay.opaque"), None);
    let mut names: Vec<_> = fs::read_dir(sb.t("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["gone", "kept"]);
}

#[test]
fn whiteout_replaces_an_earlier_entry_and_dir_over_whiteout_is_opaque() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("d/x/file", b"1", 0o644)
        .file("d/.wh.x", b"", 0o644)
        .file(".wh.y", b"", 0o644)
        .dir("y", 0o755)
        .file("y/inside", b"i", 0o644)
        .bytes();
    apply(&sb, &tar).unwrap();
    assert!(fs::symlink_metadata(sb.t("d/x"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(fs::metadata(sb.t("y")).unwrap().is_dir());
    assert_eq!(
        xattr(&sb.t("y"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("f2d", b"file", 0o644)
        .dir("f2d", 0o711)
        .file("f2d/child", b"c", 0o644)
        .dir("d2f", 0o755)
        .file("d2f/child", b"c", 0o644)
        .dir("d2f/sub", 0o500)
        .file("d2f/sub/deeper", b"c", 0o400)
        .file("d2f", b"now a file", 0o600)
        .symlink("l2d", "/etc")
        .dir("l2d", 0o755)
        .file("same", b"old", 0o644)
        .file("same", b"new", 0o640)
        .dir("keep", 0o700)
        .file("keep/x", b"x", 0o644)
        .dir("keep", 0o755) // existing dir: metadata only, children kept
        .file("hl-src", b"src", 0o644)
        .hardlink("hl", "hl-src")
        .hardlink("hl", "hl-src") // same file again: no-op
        .bytes();
    apply(&sb, &tar).unwrap();
    assert!(fs::metadata(sb.t("f2d")).unwrap().is_dir());
    assert_eq!(mode(&sb.t("f2d")), 0o711);
    assert_eq!(fs::read(sb.t("f2d/child")).unwrap(), b"c");
    assert_eq!(fs::read(sb.t("d2f")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(sb.t("l2d")).unwrap().is_dir());
    assert_eq!(fs::read(sb.t("same")).unwrap(), b"new");
    assert_eq!(mode(&sb.t("same")), 0o640);
    assert_eq!(mode(&sb.t("keep")), 0o755);
    assert_eq!(fs::read(sb.t("keep/x")).unwrap(), b"x");
    assert_eq!(fs::metadata(sb.t("hl")).unwrap().nlink(), 2);
}

#[test]
fn compressions_and_digest() {
    let mut layer = Layer::new();
    for i in 0..40 {
        layer.file(&format!("dir/file{i}"), &vec![i as u8; i * 1000], 0o644);
    }
    let mut tar = layer.bytes();
    // Trailing bytes after the end marker are part of the diff id.
    tar.extend_from_slice(&[0u8; 4096]);
    tar.extend_from_slice(b"trailing junk");
    let want = sha256(&tar);

    // Two concatenated gzip members, as some tools write.
    let (a, b) = tar.split_at(10_000);
    let mut multi = gzip(a);
    multi.extend_from_slice(&gzip(b));

    for (c, blob) in [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (Compression::Gzip, multi),
        (Compression::Zstd, zstd(&tar)),
    ] {
        let sb = Sandbox::new();
        let applied = apply_layer(&blob[..], c, &sb.target, &[]).unwrap();
        assert_eq!(applied.diff_id, want, "{c:?}");
        assert_eq!(applied.uncompressed_size, tar.len() as u64);
        assert_eq!(applied.entries, 40);
        assert_eq!(fs::read(sb.t("dir/file39")).unwrap(), vec![39u8; 39_000]);
    }
}

#[test]
fn large_files_and_long_names() {
    let sb = Sandbox::new();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(big.len() as u64);
    h.set_mtime(MTIME);
    b.append_data(&mut h, "big", &big[..]).unwrap();
    // GNU long name (the builder emits a ././@LongLink entry).
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    // And a PAX path + linkpath for a symlink.
    tar.truncate(tar.len() - 1024);
    let mut l = Layer::new();
    let plong = format!("p/{}/{}", "q".repeat(200), "r".repeat(250));
    let plink = format!("/{}", "t".repeat(400));
    l.pax(&[("path", plong.as_bytes()), ("linkpath", plink.as_bytes())])
        .symlink("short", "short");
    tar.extend_from_slice(&l.bytes());

    let applied = apply_layer(&gzip(&tar)[..], Compression::Gzip, &sb.target, &[]).unwrap();
    assert_eq!(applied.entries, 3);
    assert_eq!(fs::read(sb.t("big")).unwrap(), big);
    assert_eq!(fs::read(sb.t(&long)).unwrap(), b"abc");
    assert_eq!(fs::read_link(sb.t(&plong)).unwrap(), PathBuf::from(plink));
}

#[test]
fn implied_parents_copy_metadata_from_the_topmost_lower() {
    let sb = Sandbox::new();
    let lower_top = sb.tmp.path().join("lower-top");
    let lower_bottom = sb.tmp.path().join("lower-bottom");
    for (root, tar) in [
        (
            &lower_bottom,
            Layer::new()
                .dir_with("usr", |h| {
                    h.set_mode(0o711);
                    h.set_uid(7);
                    h.set_gid(8);
                    h.set_mtime(1_000_000);
                })
                .dir_with("usr/lib", |h| {
                    h.set_mode(0o700);
                    h.set_mtime(2_000_000);
                })
                .dir_with("hidden", |h| h.set_mode(0o701))
                .dir_with("opq", |h| h.set_mode(0o703))
                .dir_with("opq/sub", |h| h.set_mode(0o704))
                .bytes(),
        ),
        (
            &lower_top,
            Layer::new()
                .file(".wh.hidden", b"", 0)
                .dir_with("opq", |h| h.set_mode(0o705))
                .file("opq/.wh..wh..opq", b"", 0)
                .bytes(),
        ),
    ] {
        fs::create_dir(root).unwrap();
        apply_layer(&tar[..], Compression::None, root, &[]).unwrap();
    }
    let parents = [lower_top.clone(), lower_bottom.clone()];
    let tar = Layer::new()
        .file("usr/lib/x/file", b"f", 0o644)
        .file("hidden/file", b"f", 0o644)
        .file("opq/sub/file", b"f", 0o644)
        .bytes();
    apply_layer(&tar[..], Compression::None, &sb.target, &parents).unwrap();

    let usr = fs::metadata(sb.t("usr")).unwrap();
    assert_eq!(
        (usr.mode() & 0o7777, usr.uid(), usr.gid(), usr.mtime()),
        (0o711, 7, 8, 1_000_000)
    );
    let lib = fs::metadata(sb.t("usr/lib")).unwrap();
    assert_eq!((lib.mode() & 0o7777, lib.mtime()), (0o700, 2_000_000));
    let x = fs::metadata(sb.t("usr/lib/x")).unwrap();
    assert_eq!((x.mode() & 0o7777, x.uid()), (0o755, 0));
    // Whited out in the top lower: defaults, not the bottom's 0701.
    assert_eq!(mode(&sb.t("hidden")), 0o755);
    // opq comes from the top lower; opq/sub is hidden by its opaque dir.
    assert_eq!(mode(&sb.t("opq")), 0o705);
    assert_eq!(mode(&sb.t("opq/sub")), 0o755);
    // The opaque marker itself is not copied up.
    assert_eq!(xattr(&sb.t("opq"), "trusted.overlay.opaque"), None);
}

#[test]
fn corrupt_and_truncated_streams_are_invalid_layers() {
    let tar = Layer::new().file("a", &[7u8; 100_000], 0o644).bytes();
    let gz = gzip(&tar);
    let zs = zstd(&tar);
    let mut flipped = gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let cases: Vec<(&str, Compression, Vec<u8>)> = vec![
        ("truncated tar", Compression::None, tar[..1000].to_vec()),
        (
            "truncated gzip",
            Compression::Gzip,
            gz[..gz.len() / 2].to_vec(),
        ),
        ("corrupt gzip", Compression::Gzip, flipped),
        (
            "truncated zstd",
            Compression::Zstd,
            zs[..zs.len() / 2].to_vec(),
        ),
        ("not gzip", Compression::Gzip, tar.clone()),
        ("not zstd", Compression::Zstd, tar.clone()),
        ("not tar", Compression::None, vec![b'x'; 4096]),
    ];
    for (what, c, blob) in cases {
        let sb = Sandbox::new();
        let err = apply_layer(&blob[..], c, &sb.target, &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer, "{what}: {err}");
        assert!(
            matches!(
                err,
                Error::InvalidLayer {
                    offset: Some(_),
                    ..
                }
            ),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn source_errors_are_read_errors() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "registry went away",
                ));
            }
            let n = buf.len().min(self.0).min(512);
            buf[..n].fill(0);
            self.0 -= n;
            Ok(n)
        }
    }
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let sb = Sandbox::new();
        let err = apply_layer(Failing(0), c, &sb.target, &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Read, "{c:?}: {err}");
        assert!(err.to_string().contains("registry went away"), "{err}");
    }
}

#[test]
fn uncompressed_size_limit() {
    // 1 MiB of file data compresses to almost nothing.
    let tar = Layer::new()
        .file("bomb", &vec![0u8; 1 << 20], 0o644)
        .bytes();
    let sb = Sandbox::new();
    let opts = ApplyOptions::default().max_uncompressed_size(64 * 1024);
    let err =
        apply_layer_with(&gzip(&tar)[..], Compression::Gzip, &sb.target, &[], &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidLayer);
    assert!(err.to_string().contains("limit"), "{err}");

    let sb = Sandbox::new();
    let opts = ApplyOptions::default()
        .max_uncompressed_size(tar.len() as u64)
        .sync_fs(true);
    apply_layer_with(&zstd(&tar)[..], Compression::Zstd, &sb.target, &[], &opts).unwrap();
}

#[test]
fn target_must_be_empty() {
    let sb = Sandbox::new();
    fs::write(sb.t("existing"), b"").unwrap();
    let tar = Layer::new().file("a", b"", 0o644).bytes();
    let err = apply(&sb, &tar).unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn empty_layer_and_root_entries() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("./", 0o700)
        .dir("/", 0o700)
        .dir(".", 0o700)
        .bytes();
    let applied = apply(&sb, &tar).unwrap();
    assert_eq!(applied.entries, 3);
    assert_eq!(fs::read_dir(&sb.target).unwrap().count(), 0);

    // A zero-length stream is an empty layer too.
    let sb = Sandbox::new();
    let applied = apply(&sb, b"").unwrap();
    assert_eq!(applied.diff_id, sha256(b""));
}

#[test]
fn sparse_files_keep_their_holes() {
    // Old GNU sparse ('S'): 1 MiB file with data at 0..4 and 512K..512K+6.
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}", w = len - 1);
        h[at..at + len - 1].copy_from_slice(s.as_bytes());
    };
    h[..6].copy_from_slice(b"sparse");
    put(&mut h, 100, 8, 0o640);
    put(&mut h, 108, 8, 0);
    put(&mut h, 116, 8, 0);
    put(&mut h, 124, 12, 10);
    put(&mut h, 136, 12, MTIME);
    h[156] = b'S';
    h[257..263].copy_from_slice(b"ustar ");
    h[263..265].copy_from_slice(b" \0");
    put(&mut h, 386, 12, 0);
    put(&mut h, 398, 12, 4);
    put(&mut h, 410, 12, 512 * 1024);
    put(&mut h, 422, 12, 6);
    put(&mut h, 483, 12, 1 << 20);
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = h.to_vec();
    tar.extend_from_slice(b"headtail!!");
    tar.resize(1024, 0);
    tar.extend_from_slice(&[0; 1024]);

    let sb = Sandbox::new();
    apply(&sb, &tar).unwrap();
    let data = fs::read(sb.t("sparse")).unwrap();
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[512 * 1024..512 * 1024 + 6], b"tail!!");
    assert_eq!(data.iter().filter(|&&b| b != 0).count(), 10);
    let m = fs::metadata(sb.t("sparse")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "holes were filled: {} blocks",
        m.blocks()
    );
}
