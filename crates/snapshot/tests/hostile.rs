//! Hostile layers: nothing may be written (or linked, or chmodded) outside
//! the target directory. Every test checks that the sandbox's `outside/`
//! dir and its sentinel are untouched, whether the layer is refused or
//! contained.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_snapshot::{apply_layer, Compression, Error, ErrorKind};
use common::{gzip, Layer, Sandbox};
use tar::EntryType;

fn apply(sb: &Sandbox, tar: &[u8]) -> Result<berth_snapshot::Applied, Error> {
    apply_layer(tar, Compression::None, &sb.target, &[])
}

fn assert_invalid(r: Result<berth_snapshot::Applied, Error>, needle: &str) {
    let err = r.expect_err("hostile layer was accepted");
    assert_eq!(err.kind(), ErrorKind::InvalidLayer, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
}

/// Snapshot of a host file we must not touch.
fn host_file(p: &str) -> (Vec<u8>, u64, u32, i64) {
    let m = fs::metadata(p).unwrap();
    (fs::read(p).unwrap(), m.nlink(), m.mode(), m.mtime())
}

#[test]
fn dotdot_names_are_refused() {
    let sb = Sandbox::new();
    let up = sb.outside.join("evil");
    let rel_to_outside = "../outside/evil";
    for name in [
        "../../etc/evil",
        rel_to_outside,
        "a/../../outside/evil",
        "/../outside/evil",
    ] {
        let tar = Layer::new().file(name, b"pwned", 0o644).bytes();
        assert_invalid(apply(&sb, &tar), "climbs above the layer root");
        sb.assert_outside_untouched();
    }
    assert!(!up.exists());
    assert!(!Path::new("/etc/evil").exists());
    // `..` that stays inside is fine.
    let tar = Layer::new().file("a/b/../c", b"ok", 0o644).bytes();
    apply(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.t("a/c")).unwrap(), b"ok");
}

#[test]
fn absolute_names_land_inside() {
    let sb = Sandbox::new();
    let abs = format!("{}/evil", sb.outside.display());
    let tar = Layer::new()
        .file("/abs/path", b"inside", 0o644)
        .file(&abs, b"inside too", 0o644)
        .bytes();
    apply(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.t("abs/path")).unwrap(), b"inside");
    assert_eq!(
        fs::read(sb.t(abs.trim_start_matches('/'))).unwrap(),
        b"inside too"
    );
    sb.assert_outside_untouched();
}

#[test]
fn absolute_symlink_parent_is_resolved_inside() {
    let sb = Sandbox::new();
    let outside = sb.outside.display().to_string();
    let mirrored_rel = outside.trim_start_matches('/').to_string();
    let mut l = Layer::new();
    // Give the target its own copy of the outside path, so the symlink
    // resolves (inside the target).
    let mut prefix = String::new();
    for comp in mirrored_rel.split('/') {
        prefix = if prefix.is_empty() {
            comp.to_string()
        } else {
            format!("{prefix}/{comp}")
        };
        l.dir(&prefix, 0o755);
    }
    let tar = l
        .symlink("evil", &outside)
        .file("evil/file", b"contained", 0o644)
        .dir("evil/newdir", 0o777)
        .bytes();
    apply(&sb, &tar).unwrap();
    // The symlink is kept verbatim; what went through it landed under the
    // target's own copy of that path.
    assert_eq!(fs::read_link(sb.t("evil")).unwrap(), sb.outside);
    let mirrored = sb.target.join(&mirrored_rel);
    assert_eq!(fs::read(mirrored.join("file")).unwrap(), b"contained");
    assert!(mirrored.join("newdir").is_dir());
    sb.assert_outside_untouched();
}

#[test]
fn dangling_symlink_parents_are_refused() {
    // The symlink's target does not exist inside the target: refused (it
    // would never reach outside, but guessing which directories to create
    // behind a symlink is not worth it; no layer builder writes this).
    for (link, entry) in [("outside", "evil/file"), ("nowhere/x", "evil/sub/file")] {
        let sb = Sandbox::new();
        let link = if link == "outside" {
            sb.outside.display().to_string()
        } else {
            link.to_string()
        };
        let link = link.as_str();
        let tar = Layer::new()
            .symlink("evil", link)
            .file(entry, b"x", 0o644)
            .bytes();
        assert_invalid(
            apply(&sb, &tar),
            "symbolic link to a directory that does not exist",
        );
        sb.assert_outside_untouched();
        let sb2 = Sandbox::new();
        let tar = Layer::new()
            .symlink("evil", link)
            .file("evil/.wh.sentinel", b"", 0)
            .bytes();
        assert_invalid(apply(&sb2, &tar), "does not exist");
        sb2.assert_outside_untouched();
    }
}

#[test]
fn relative_symlink_chains_cannot_climb_out() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("up", "../../../../../../..")
        .file("up/outside/evil", b"x", 0o644)
        .symlink("a", "b")
        .symlink("b", "c/../..")
        .dir("c", 0o755)
        .file("a/outside/evil2", b"y", 0o644)
        .symlink("d/loop", "loop")
        .bytes();
    apply(&sb, &tar).unwrap();
    // `..` at the root stays at the root.
    assert_eq!(fs::read(sb.t("outside/evil")).unwrap(), b"x");
    assert_eq!(fs::read(sb.t("outside/evil2")).unwrap(), b"y");
    sb.assert_outside_untouched();

    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("loop", "loop")
        .file("loop/x", b"", 0o644)
        .bytes();
    assert_invalid(apply(&sb, &tar), "symbolic links");
    sb.assert_outside_untouched();
}

#[test]
fn final_component_symlinks_are_replaced_not_followed() {
    let sb = Sandbox::new();
    let sentinel = sb.outside.join("sentinel").display().to_string();
    let outside = sb.outside.display().to_string();
    let tar = Layer::new()
        .symlink("f", &sentinel)
        .file("f", b"new file", 0o777) // must not truncate/chmod the sentinel
        .symlink("d", &outside)
        .dir("d", 0o777) // must not chmod outside/
        .symlink("dev", &sentinel)
        .fifo("dev", 0o600)
        .symlink("s", &sentinel)
        .symlink("s", "/elsewhere")
        .bytes();
    apply(&sb, &tar).unwrap();
    assert_eq!(fs::read(sb.t("f")).unwrap(), b"new file");
    assert!(fs::symlink_metadata(sb.t("d")).unwrap().is_dir());
    assert_eq!(fs::read_link(sb.t("s")).unwrap(), Path::new("/elsewhere"));
    sb.assert_outside_untouched();
    assert_eq!(fs::metadata(&sb.outside).unwrap().mode() & 0o777, 0o755);
    assert_eq!(
        fs::metadata(sb.outside.join("sentinel")).unwrap().mode() & 0o777,
        0o644
    );
}

#[test]
fn hardlinks_to_host_files_are_refused() {
    let before = host_file("/etc/passwd");
    let sb = Sandbox::new();
    let sentinel = sb.outside.join("sentinel").display().to_string();
    for (target, needle) in [
        ("/etc/passwd", "not an earlier entry"),
        ("../../etc/passwd", "climbs above"),
        ("../outside/sentinel", "climbs above"),
        (sentinel.as_str(), "not an earlier entry"),
        ("", "hard link to the layer root"),
        ("/", "hard link to the layer root"),
    ] {
        let tar = Layer::new().hardlink("pw", target).bytes();
        assert_invalid(apply(&sb, &tar), needle);
    }
    // Through a symlinked directory: resolved inside the target, where
    // there is no etc/passwd.
    // (`etc -> /etc` resolves to itself inside the target: a loop.)
    let tar = Layer::new()
        .symlink("etc", "/etc")
        .hardlink("pw", "etc/passwd")
        .bytes();
    assert_invalid(apply(&Sandbox::new(), &tar), "symbolic links");
    let tar = Layer::new()
        .dir("etc", 0o755)
        .symlink("e", "/etc")
        .hardlink("pw", "e/passwd")
        .bytes();
    assert_invalid(apply(&Sandbox::new(), &tar), "not an earlier entry");
    let sb2 = Sandbox::new();
    let tar = Layer::new()
        .symlink("o", &sb2.outside.display().to_string())
        .hardlink("pw", "o/sentinel")
        .bytes();
    assert_invalid(apply(&sb2, &tar), "not an earlier entry");
    sb2.assert_outside_untouched();

    // A hard link to a symlink links the symlink itself.
    let sb3 = Sandbox::new();
    let tar = Layer::new()
        .symlink("s", "/etc/passwd")
        .hardlink("h", "s")
        .bytes();
    apply(&sb3, &tar).unwrap();
    assert_eq!(fs::read_link(sb3.t("h")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::symlink_metadata(sb3.t("h")).unwrap().nlink(), 2);

    // Directories cannot be hard linked.
    let tar = Layer::new().dir("d", 0o755).hardlink("h", "d").bytes();
    assert_invalid(apply(&Sandbox::new(), &tar), "is a directory");

    assert_eq!(host_file("/etc/passwd"), before);
    sb.assert_outside_untouched();
    sb3.assert_outside_untouched();
}

#[test]
fn bad_whiteouts_are_refused() {
    for name in [".wh..", ".wh...", ".wh.", "a/.wh..", "a/.wh..."] {
        let sb = Sandbox::new();
        let tar = Layer::new().file(name, b"", 0o644).bytes();
        assert_invalid(apply(&sb, &tar), "invalid whiteout");
        sb.assert_outside_untouched();
    }
    // A whiteout whose parent climbs out is refused like any other name.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("../outside/.wh.sentinel", b"", 0o644)
        .bytes();
    assert_invalid(apply(&sb, &tar), "climbs above");
    // ... and through a symlinked parent it stays inside.
    let tar = Layer::new()
        .dir("inner", 0o755)
        .symlink("o", "/inner")
        .file("inner/sentinel", b"mine", 0o644)
        .file("o/.wh.sentinel", b"", 0o644)
        .file("o/.wh..wh..opq", b"", 0o644)
        .bytes();
    apply(&sb, &tar).unwrap();
    assert!(fs::symlink_metadata(sb.t("inner/sentinel"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        common::xattr(&sb.t("inner"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    sb.assert_outside_untouched();
    assert_eq!(common::xattr(&sb.outside, "trusted.overlay.opaque"), None);
}

#[test]
fn metadata_bombs_are_refused_cheaply() {
    // A PAX header claiming 8 GiB: refused before reading it.
    let mut h = Layer::header(EntryType::XHeader, 0o644);
    h.set_size(8 << 30);
    let mut raw = h.as_bytes().to_vec();
    raw[..4].copy_from_slice(b"pax\0");
    let mut h = tar::Header::from_byte_slice(&raw).clone();
    h.set_cksum();
    let blob = gzip(h.as_bytes());
    let sb = Sandbox::new();
    let err = apply_layer(&blob[..], Compression::Gzip, &sb.target, &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidLayer);
    assert!(err.to_string().contains("exceeds"), "{err}");
}

#[test]
fn hostile_numbers_and_types() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.pax(&[("uid", b"4294967295")]).file("a", b"", 0o644);
    assert_invalid(apply(&sb, &l.bytes()), "out of range");

    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.pax(&[("size", b"99999999999999")]).file("a", b"", 0o644);
    assert!(apply(&sb, &l.bytes()).is_err());

    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.raw(Layer::header(EntryType::new(b'Q'), 0o644), b"q", None, b"");
    assert_invalid(apply(&sb, &l.bytes()), "unsupported entry type");

    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.pax(&[("path", b"a\0b")]).file("a", b"", 0o644);
    assert_invalid(apply(&sb, &l.bytes()), "NUL");

    let sb = Sandbox::new();
    let name = "n".repeat(300);
    let mut l = Layer::new();
    l.pax(&[("path", name.as_bytes())]).file("x", b"", 0o644);
    assert_invalid(apply(&sb, &l.bytes()), "too long");
    sb.assert_outside_untouched();
}

#[test]
fn random_garbage_never_panics() {
    // Deterministic xorshift noise, raw and inside valid-looking headers.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let base = Layer::new()
        .file("a", b"hello", 0o644)
        .symlink("l", "a")
        .hardlink("h", "a")
        .dir("d", 0o755)
        .bytes();
    for round in 0..300 {
        let mut blob = base.clone();
        for _ in 0..(1 + round % 8) {
            let i = (next() as usize) % blob.len();
            blob[i] = next() as u8;
        }
        let sb = Sandbox::new();
        let _ = apply(&sb, &blob);
        sb.assert_outside_untouched();
    }
}
