//! Fixture images, built deterministically in memory.
//!
//! Uncompressed tarballs (hence `diff_id`s and config digests) are stable
//! across machines and dependency versions, except for anything containing
//! the host's busybox binary. Compressed blob digests are stable for a given
//! `flate2`/`zstd` build.
//!
//! | fixture | what it is |
//! |---|---|
//! | [`busybox`] | runnable image: static busybox, users, `/tmp` 1777, `Cmd ["sh"]` |
//! | [`user_uid`], [`user_name`], [`user_uid_gid`] | busybox with `User` `1234`, `berth`, `1234:5678` |
//! | [`multi_arch`] | index over linux/amd64, linux/arm64, linux/arm/v7, each with `/arch` |
//! | [`layered`] | busybox + 4 layers: whiteouts, opaque dir, links, setuid, xattr, FIFO ([`layered_expected`]) |
//! | [`compressed`], [`mixed_compression`] | the same content with gzip / zstd / no compression |
//! | [`hostile`] | one image per [`Hostile`] case (path escapes, broken layers) |
//! | [`big`] | incompressible multi-layer image for pull benchmarks |

use std::path::PathBuf;
use std::sync::OnceLock;

use tar::EntryType;

use crate::image::{Compression, Image, ImageBuilder, ImageIndex, Layer, Platform};
use crate::tarball::{RawEntry, TarWriter};
use crate::util::{sha256_digest, SplitMix64};

/// Environment variable overriding the path of the static busybox binary.
pub const BUSYBOX_ENV: &str = "BERTH_TEST_BUSYBOX";

/// uid of the `berth` user in the busybox image's `/etc/passwd`.
pub const BERTH_UID: u32 = 1234;
/// gid of `berthgrp`, the `berth` user's primary group.
pub const BERTH_GID: u32 = 5678;
/// gid of `berthextra`, a supplementary group of `berth` (listed in `/etc/group`).
pub const BERTH_EXTRA_GID: u32 = 9012;

/// Busybox applets linked in `/bin` (each a symlink to `busybox`).
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "id", "true", "false", "env", "top", "ps", "mkdir", "rm",
    "touch", "stat", "readlink", "grep", "head", "wc", "hostname", "test", "printf", "kill",
    "chmod", "pwd", "uname",
];

/// `PATH` set in the busybox image config.
pub const BUSYBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `/etc/passwd` of the busybox image.
pub const ETC_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
berth:x:1234:5678:berth test user:/home/berth:/bin/sh\n";

/// `/etc/group` of the busybox image: `berth` is in `berthgrp` (primary, 5678)
/// and `berthextra` (supplementary, 9012).
pub const ETC_GROUP: &str = "root:x:0:\n\
nogroup:x:65534:\n\
berthgrp:x:5678:berth\n\
berthextra:x:9012:berth\n";

fn busybox_binary() -> Vec<u8> {
    let candidates: Vec<PathBuf> = match std::env::var_os(BUSYBOX_ENV) {
        Some(path) => vec![path.into()],
        None => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            return bytes;
        }
    }
    panic!(
        "no static busybox at {candidates:?}: install the Debian package `busybox-static` \
         (apt-get install busybox-static) or set {BUSYBOX_ENV}"
    )
}

/// The uncompressed busybox root filesystem tarball.
///
/// `/bin/busybox` plus applet symlinks, `/etc/passwd`, `/etc/group`,
/// `/tmp` (1777), `/root` (0700), `/home/berth` (owned 1234:5678), and
/// empty `/dev`, `/proc`, `/sys`.
///
/// # Panics
/// If the busybox binary cannot be read.
pub fn busybox_rootfs_tar() -> Vec<u8> {
    let busybox = busybox_binary();
    let mut tar = TarWriter::new();
    tar.dir("bin", 0o755);
    tar.file("bin/busybox", &busybox, 0o755);
    for applet in BUSYBOX_APPLETS {
        tar.symlink(&format!("bin/{applet}"), "busybox");
    }
    tar.dir("dev", 0o755);
    tar.dir("etc", 0o755);
    tar.file("etc/passwd", ETC_PASSWD.as_bytes(), 0o644);
    tar.file("etc/group", ETC_GROUP.as_bytes(), 0o644);
    tar.dir("home", 0o755);
    tar.dir_owned("home/berth", 0o755, BERTH_UID.into(), BERTH_GID.into());
    tar.dir("proc", 0o755);
    tar.dir("root", 0o700);
    tar.dir("sys", 0o755);
    tar.dir("tmp", 0o1777);
    tar.finish()
}

/// The busybox layer, gzip (built once per process).
pub fn busybox_layer() -> Layer {
    static LAYER: OnceLock<Layer> = OnceLock::new();
    LAYER
        .get_or_init(|| Layer::from_tar(busybox_rootfs_tar(), Compression::Gzip))
        .clone()
}

/// An [`ImageBuilder`] holding the busybox layer, `PATH` and `Cmd ["sh"]`,
/// to customise before `build()`.
pub fn busybox_builder() -> ImageBuilder {
    ImageBuilder::new()
        .env("PATH", BUSYBOX_PATH)
        .cmd(["sh"])
        .layer(busybox_layer())
}

/// A runnable busybox image for the host platform (one gzip layer).
pub fn busybox() -> Image {
    busybox_builder().build()
}

/// busybox with `User: "1234"` (uid only: gid comes from `/etc/passwd`, 5678).
pub fn user_uid() -> Image {
    busybox_builder().user("1234").build()
}

/// busybox with `User: "berth"` (resolved through the image's `/etc/passwd` to 1234:5678).
pub fn user_name() -> Image {
    busybox_builder().user("berth").build()
}

/// busybox with `User: "1234:5678"`.
pub fn user_uid_gid() -> Image {
    busybox_builder().user("1234:5678").build()
}

/// The platforms of [`multi_arch`], in index order.
pub fn multi_arch_platforms() -> Vec<Platform> {
    vec![
        Platform::new("linux", "amd64"),
        Platform::new("linux", "arm64"),
        Platform::new("linux", "arm").with_variant("v7"),
    ]
}

/// An index over linux/amd64, linux/arm64 and linux/arm/v7.
///
/// Every image has the busybox layer (the host's binary, so only the host
/// platform's image really runs) and a second layer with a file `/arch`
/// containing its platform label and a newline, e.g. `linux/arm/v7\n`
/// ([`Platform::label`]). `Cmd` is `["cat", "/arch"]`.
pub fn multi_arch() -> ImageIndex {
    let entries = multi_arch_platforms()
        .into_iter()
        .map(|platform| {
            let mut tar = TarWriter::new();
            tar.file("arch", format!("{}\n", platform.label()).as_bytes(), 0o644);
            let image = busybox_builder()
                .platform(platform.clone())
                .cmd(["cat", "/arch"])
                .tar_layer(tar.finish(), Compression::Gzip)
                .build();
            (platform, image)
        })
        .collect();
    ImageIndex { entries }
}

/// Layer tarballs of [`layered`], bottom first (uncompressed).
pub fn layered_tars() -> Vec<Vec<u8>> {
    // Layer 0: the base.
    let mut l0 = TarWriter::new();
    l0.dir("a", 0o755)
        .file("a/keep.txt", b"keep v1\n", 0o644)
        .file("a/del.txt", b"to be deleted\n", 0o644)
        .dir("opq", 0o755)
        .file("opq/old.txt", b"hidden by the opaque marker\n", 0o644)
        .dir("opq/sub", 0o755)
        .file("opq/sub/deep.txt", b"hidden too\n", 0o644)
        .dir("gone", 0o755)
        .file("gone/child.txt", b"removed with its directory\n", 0o644)
        .file(
            "replaced",
            b"a file in layer 0, a directory from layer 2\n",
            0o644,
        );

    // Layer 1: deletions and special modes.
    let mut l1 = TarWriter::new();
    l1.dir("a", 0o755)
        .whiteout("a/del.txt")
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/new.txt", b"after the opaque marker\n", 0o644)
        .file("setuid-bin", b"#!/bin/sh\necho setuid\n", 0o4755)
        .dir_owned("owned", 0o750, BERTH_UID.into(), BERTH_GID.into())
        .raw_entry(&RawEntry {
            name: b"owned/file.txt",
            kind: EntryType::Regular,
            mode: 0o640,
            uid: BERTH_UID.into(),
            gid: BERTH_GID.into(),
            link_name: b"",
            data: b"owned by berth\n",
            xattrs: &[],
        })
        .file_with_xattrs(
            "xattr.txt",
            b"has an xattr\n",
            0o644,
            &[("user.berth", b"hello")],
        );

    // Layer 2: links, a FIFO, a file turned into a directory.
    let mut l2 = TarWriter::new();
    l2.dir("links", 0o755)
        .file("links/target.txt", b"link target\n", 0o644)
        .hardlink("links/hard", "links/target.txt")
        .symlink("links/rel", "target.txt")
        .symlink("links/abs", "/links/target.txt")
        .symlink("links/dangling", "/does/not/exist")
        .symlink("links/dirlink", "../a")
        .fifo("links/fifo", 0o644)
        .dir("replaced", 0o755)
        .file("replaced/inner.txt", b"now a directory\n", 0o644);

    // Layer 3: overwrite, whole-directory whiteout, additions.
    let mut l3 = TarWriter::new();
    l3.dir("a", 0o755)
        .file("a/keep.txt", b"keep v2\n", 0o600)
        .whiteout("gone")
        .dir("new", 0o755)
        .file("new/added.txt", b"added in layer 3\n", 0o644);

    vec![l0.finish(), l1.finish(), l2.finish(), l3.finish()]
}

/// busybox plus 4 layers (all gzip) exercising overlay semantics. See
/// [`layered_expected`] for the merged view a correct unpack must show.
///
/// * layer 0: `a/keep.txt`, `a/del.txt`, `opq/old.txt`, `opq/sub/deep.txt`,
///   `gone/child.txt`, file `replaced`;
/// * layer 1: whiteout `a/.wh.del.txt`; opaque `opq/.wh..wh..opq` plus
///   `opq/new.txt`; `setuid-bin` (04755); dir `owned` (1234:5678, 0750) with
///   `owned/file.txt` (1234:5678, 0640); `xattr.txt` with `user.berth=hello`
///   (PAX `SCHILY.xattr.user.berth`);
/// * layer 2: `links/target.txt`, hard link `links/hard`, symlinks
///   `links/rel -> target.txt`, `links/abs -> /links/target.txt`,
///   `links/dangling -> /does/not/exist`, `links/dirlink -> ../a`, FIFO
///   `links/fifo`; `replaced` becomes a directory with `inner.txt`;
/// * layer 3: `a/keep.txt` rewritten (`keep v2`, mode 0600), whiteout
///   `.wh.gone` (the whole directory), `new/added.txt`.
pub fn layered() -> Image {
    layered_tars()
        .into_iter()
        .fold(busybox_builder().cmd(["ls", "-lR", "/"]), |b, tar| {
            b.tar_layer(tar, Compression::Gzip)
        })
        .build()
}

/// One fact about the merged root filesystem of [`layered`].
/// Paths are relative to the rootfs, without a leading `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A directory with this mode (permission bits) and owner.
    Dir {
        /// Path.
        path: &'static str,
        /// Permission bits.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
    /// A regular file with this content, mode (including setuid) and owner.
    File {
        /// Path.
        path: &'static str,
        /// Exact content.
        content: &'static [u8],
        /// Permission bits including setuid/setgid/sticky.
        mode: u32,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
    /// A symlink with this target.
    Symlink {
        /// Path.
        path: &'static str,
        /// Link target, verbatim.
        target: &'static str,
    },
    /// A named pipe.
    Fifo {
        /// Path.
        path: &'static str,
    },
    /// `path` is a hard link to `same_as` (same inode).
    HardLink {
        /// Path.
        path: &'static str,
        /// The other name of the inode.
        same_as: &'static str,
    },
    /// `path` carries extended attribute `name` = `value`.
    Xattr {
        /// Path.
        path: &'static str,
        /// Attribute name.
        name: &'static str,
        /// Attribute value.
        value: &'static [u8],
    },
    /// Nothing exists at `path` (deleted by a whiteout or hidden by an opaque dir).
    Absent {
        /// Path.
        path: &'static str,
    },
}

/// What the merged rootfs of [`layered`] must look like (on top of the
/// busybox layer). Also: no `.wh.*` entry may appear anywhere.
pub fn layered_expected() -> Vec<Expect> {
    let (u, g) = (BERTH_UID, BERTH_GID);
    let dir = |path, mode, uid, gid| Expect::Dir {
        path,
        mode,
        uid,
        gid,
    };
    let file = |path, content: &'static [u8], mode, uid, gid| Expect::File {
        path,
        content,
        mode,
        uid,
        gid,
    };
    let root_file = |path, content, mode| file(path, content, mode, 0, 0);
    let symlink = |path, target| Expect::Symlink { path, target };
    let absent = |path| Expect::Absent { path };
    vec![
        dir("a", 0o755, 0, 0),
        root_file("a/keep.txt", b"keep v2\n", 0o600),
        absent("a/del.txt"),
        absent("a/.wh.del.txt"),
        dir("opq", 0o755, 0, 0),
        root_file("opq/new.txt", b"after the opaque marker\n", 0o644),
        absent("opq/old.txt"),
        absent("opq/sub"),
        absent("opq/.wh..wh..opq"),
        absent("gone"),
        absent(".wh.gone"),
        dir("replaced", 0o755, 0, 0),
        root_file("replaced/inner.txt", b"now a directory\n", 0o644),
        root_file("setuid-bin", b"#!/bin/sh\necho setuid\n", 0o4755),
        dir("owned", 0o750, u, g),
        file("owned/file.txt", b"owned by berth\n", 0o640, u, g),
        root_file("xattr.txt", b"has an xattr\n", 0o644),
        Expect::Xattr {
            path: "xattr.txt",
            name: "user.berth",
            value: b"hello",
        },
        root_file("links/target.txt", b"link target\n", 0o644),
        Expect::HardLink {
            path: "links/hard",
            same_as: "links/target.txt",
        },
        symlink("links/rel", "target.txt"),
        symlink("links/abs", "/links/target.txt"),
        symlink("links/dangling", "/does/not/exist"),
        symlink("links/dirlink", "../a"),
        Expect::Fifo { path: "links/fifo" },
        root_file("new/added.txt", b"added in layer 3\n", 0o644),
        dir("tmp", 0o1777, 0, 0),
    ]
}

/// Uncompressed tarballs of the data layers shared by [`compressed`] and
/// [`mixed_compression`]: text files, 256 KiB of pseudo-random bytes, and a
/// 1 MiB highly compressible file.
pub fn compression_tars() -> Vec<Vec<u8>> {
    let mut text = TarWriter::new();
    text.dir("data", 0o755)
        .file("data/hello.txt", b"hello from a layer\n", 0o644)
        .file(
            "data/lorem.txt",
            "lorem ipsum dolor sit amet\n".repeat(200).as_bytes(),
            0o644,
        );

    let mut random = vec![0u8; 256 * 1024];
    SplitMix64::new(0xB3E7).fill(&mut random);
    let mut binary = TarWriter::new();
    binary
        .dir("data", 0o755)
        .file("data/random.bin", &random, 0o644);

    let mut zeros = TarWriter::new();
    zeros
        .dir("data", 0o755)
        .file("data/zeros.bin", &vec![0u8; 1024 * 1024], 0o644);

    vec![text.finish(), binary.finish(), zeros.finish()]
}

/// busybox plus the [`compression_tars`] layers, every layer (busybox too)
/// compressed with `compression`. All variants have the same `diff_id`s and
/// therefore the same config digest (image ID), with different layer digests.
/// `Cmd` is `["cat", "/data/hello.txt"]`.
pub fn compressed(compression: Compression) -> Image {
    let layers = std::iter::once(busybox_rootfs_tar()).chain(compression_tars());
    layers
        .fold(
            ImageBuilder::new()
                .env("PATH", BUSYBOX_PATH)
                .cmd(["cat", "/data/hello.txt"]),
            |b, tar| b.tar_layer(tar, compression),
        )
        .build()
}

/// Like [`compressed`] with mixed compressions: busybox gzip, then the data
/// layers gzip, zstd and uncompressed. Same image ID as the other variants.
pub fn mixed_compression() -> Image {
    let compressions = [
        Compression::Gzip,
        Compression::Gzip,
        Compression::Zstd,
        Compression::None,
    ];
    let layers = std::iter::once(busybox_rootfs_tar()).chain(compression_tars());
    layers
        .zip(compressions)
        .fold(
            ImageBuilder::new()
                .env("PATH", BUSYBOX_PATH)
                .cmd(["cat", "/data/hello.txt"]),
            |b, (tar, c)| b.tar_layer(tar, c),
        )
        .build()
}

/// Hostile or broken images. Each is a single-layer image (gzip) whose layer
/// holds a harmless `ok.txt` plus the hostile part. A safe runtime either
/// refuses the layer or confines its effect to the rootfs; the description
/// of each case says what must never happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hostile {
    /// Entry `../berth-hostile-dotdot`: must not be created next to the rootfs.
    DotDot,
    /// Entry `a/../../berth-hostile-nested` (escapes after normalisation).
    NestedDotDot,
    /// Entry `/tmp/berth-hostile-absolute`: must not appear on the host; at
    /// most inside the rootfs (`<rootfs>/tmp/...`).
    AbsolutePath,
    /// Symlink `escape -> /tmp`, then file `escape/berth-hostile-symlink`:
    /// must not create `/tmp/berth-hostile-symlink` on the host.
    SymlinkParentAbsolute,
    /// Symlink `up -> ../../../../../../../../..`, then file
    /// `up/tmp/berth-hostile-symlink-rel`: must not reach the host's `/tmp`.
    SymlinkParentRelative,
    /// Hard link `passwd -> /etc/passwd`: must not link the host's file.
    HardlinkAbsolute,
    /// Hard link `x -> ../../x`: must not link anything outside the rootfs.
    HardlinkDotDot,
    /// Whiteout `sub/.wh...` (deleting `sub/..`, i.e. the rootfs itself):
    /// must not delete anything outside `sub`.
    WhiteoutDotDot,
    /// Whiteout `../.wh.berth-victim` (deleting a sibling of the rootfs).
    WhiteoutEscape,
    /// A valid layer whose `diff_id` in the config is wrong: the pull must fail
    /// verification (the registry cannot serve a blob under a wrong digest, so
    /// this is how a content mismatch is tested with a real registry).
    DiffIdMismatch,
    /// A layer declared gzip whose bytes are a corrupted gzip stream (its blob
    /// digest is right): decompression must fail cleanly.
    CorruptGzip,
}

impl Hostile {
    /// Every case.
    pub const ALL: [Hostile; 11] = [
        Hostile::DotDot,
        Hostile::NestedDotDot,
        Hostile::AbsolutePath,
        Hostile::SymlinkParentAbsolute,
        Hostile::SymlinkParentRelative,
        Hostile::HardlinkAbsolute,
        Hostile::HardlinkDotDot,
        Hostile::WhiteoutDotDot,
        Hostile::WhiteoutEscape,
        Hostile::DiffIdMismatch,
        Hostile::CorruptGzip,
    ];

    /// A short kebab-case name, usable as a repository name.
    pub fn name(self) -> &'static str {
        match self {
            Hostile::DotDot => "dotdot",
            Hostile::NestedDotDot => "nested-dotdot",
            Hostile::AbsolutePath => "absolute-path",
            Hostile::SymlinkParentAbsolute => "symlink-parent-absolute",
            Hostile::SymlinkParentRelative => "symlink-parent-relative",
            Hostile::HardlinkAbsolute => "hardlink-absolute",
            Hostile::HardlinkDotDot => "hardlink-dotdot",
            Hostile::WhiteoutDotDot => "whiteout-dotdot",
            Hostile::WhiteoutEscape => "whiteout-escape",
            Hostile::DiffIdMismatch => "diffid-mismatch",
            Hostile::CorruptGzip => "corrupt-gzip",
        }
    }

    /// Host paths a vulnerable unpacker would create (absolute cases only).
    pub fn host_paths_at_risk(self) -> &'static [&'static str] {
        match self {
            Hostile::AbsolutePath => &["/tmp/berth-hostile-absolute"],
            Hostile::SymlinkParentAbsolute => &["/tmp/berth-hostile-symlink"],
            Hostile::SymlinkParentRelative => &["/tmp/berth-hostile-symlink-rel"],
            _ => &[],
        }
    }

    /// The uncompressed layer tarball.
    pub fn tar(self) -> Vec<u8> {
        let mut tar = TarWriter::new();
        tar.file("ok.txt", b"benign\n", 0o644);
        let file = |tar: &mut TarWriter, name: &[u8]| {
            tar.raw_entry(&RawEntry {
                name,
                kind: EntryType::Regular,
                mode: 0o644,
                uid: 0,
                gid: 0,
                link_name: b"",
                data: b"written by a hostile layer\n",
                xattrs: &[],
            });
        };
        let link = |tar: &mut TarWriter, name: &[u8], kind: EntryType, target: &[u8]| {
            tar.raw_entry(&RawEntry {
                name,
                kind,
                mode: 0o777,
                uid: 0,
                gid: 0,
                link_name: target,
                data: b"",
                xattrs: &[],
            });
        };
        match self {
            Hostile::DotDot => file(&mut tar, b"../berth-hostile-dotdot"),
            Hostile::NestedDotDot => {
                tar.dir("a", 0o755);
                file(&mut tar, b"a/../../berth-hostile-nested");
            }
            Hostile::AbsolutePath => file(&mut tar, b"/tmp/berth-hostile-absolute"),
            Hostile::SymlinkParentAbsolute => {
                link(&mut tar, b"escape", EntryType::Symlink, b"/tmp");
                file(&mut tar, b"escape/berth-hostile-symlink");
            }
            Hostile::SymlinkParentRelative => {
                link(
                    &mut tar,
                    b"up",
                    EntryType::Symlink,
                    b"../../../../../../../../..",
                );
                file(&mut tar, b"up/tmp/berth-hostile-symlink-rel");
            }
            Hostile::HardlinkAbsolute => {
                link(&mut tar, b"passwd", EntryType::Link, b"/etc/passwd");
            }
            Hostile::HardlinkDotDot => link(&mut tar, b"x", EntryType::Link, b"../../x"),
            Hostile::WhiteoutDotDot => {
                tar.dir("sub", 0o755);
                file(&mut tar, b"sub/.wh...");
            }
            Hostile::WhiteoutEscape => file(&mut tar, b"../.wh.berth-victim"),
            Hostile::DiffIdMismatch | Hostile::CorruptGzip => {
                tar.file("payload.txt", b"content checked by digest\n", 0o644);
            }
        }
        tar.finish()
    }

    /// The image.
    pub fn image(self) -> Image {
        let tar = self.tar();
        let layer = match self {
            Hostile::DiffIdMismatch => Layer::from_tar(tar, Compression::Gzip)
                .with_diff_id(&sha256_digest(b"not the layer content")),
            Hostile::CorruptGzip => {
                let diff_id = sha256_digest(&tar);
                let mut blob = crate::image::compress(&tar, Compression::Gzip);
                // Keep the 10-byte gzip header, scramble the deflate stream.
                let end = blob.len().saturating_sub(8);
                for byte in &mut blob[10.min(end)..end] {
                    *byte ^= 0x5A;
                }
                Layer::from_blob(blob, Compression::Gzip, &diff_id)
            }
            _ => Layer::from_tar(tar, Compression::Gzip),
        };
        ImageBuilder::new()
            .label("org.berth.test.hostile", self.name())
            .layer(layer)
            .build()
    }
}

/// The image for one hostile case: shorthand for [`Hostile::image`].
pub fn hostile(case: Hostile) -> Image {
    case.image()
}

/// A ~`size_mb` MB image of 5 gzip layers of incompressible pseudo-random
/// data (seeded, so deterministic), for pull benchmarks. Each layer holds
/// one file `big/layer-<i>.bin`. The gzip streams use stored blocks (level
/// 0, what deflate emits for random data anyway) so that building is fast
/// even in debug builds; pulling still inflates and checks CRCs.
pub fn big(size_mb: usize) -> Image {
    const LAYERS: usize = 5;
    let per_layer = (size_mb * 1024 * 1024 / LAYERS).max(1);
    (0..LAYERS)
        .fold(
            ImageBuilder::new().label("org.berth.test.big-mb", &size_mb.to_string()),
            |b, i| {
                let mut data = vec![0u8; per_layer];
                SplitMix64::new(0xB16_0000 + i as u64).fill(&mut data);
                let mut tar = TarWriter::new();
                tar.dir("big", 0o755)
                    .file(&format!("big/layer-{i}.bin"), &data, 0o644);
                b.layer(Layer::from_tar_with_level(
                    tar.finish(),
                    Compression::Gzip,
                    Some(0),
                ))
            },
        )
        .build()
}
