//! The snapshot store: staging, commit (including racing commits), removal,
//! crash leftovers, locking and usage.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_snapshot::{apply_layer, chain_id, Compression, Error, ErrorKind, SnapshotStore};
use common::{gzip, Layer};

fn layer() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/hostname", b"berth\n", 0o644)
        .file("bin/tool", &vec![1u8; 100_000], 0o755)
        .hardlink("bin/tool2", "bin/tool")
        .bytes()
}

fn top_names(root: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn stage_apply_commit_list_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("snapshots");
    let store = SnapshotStore::open(&root).unwrap();
    assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
    assert!(store.list().unwrap().is_empty());

    let staging = store.stage().unwrap();
    let staged = staging.path().to_path_buf();
    assert!(staged.starts_with(&root));
    assert_eq!(fs::metadata(&staged).unwrap().mode() & 0o777, 0o755);
    assert_eq!(fs::read_dir(&staged).unwrap().count(), 0);

    let applied = apply_layer(&gzip(&layer())[..], Compression::Gzip, staging.path(), &[]).unwrap();
    let id = chain_id(None, &applied.diff_id);
    assert!(!store.exists(&id));
    store.commit(staging, &id).unwrap();
    assert!(!staged.exists());
    assert!(store.exists(&id));
    let fs_path = store.fs_path(&id).unwrap();
    assert_eq!(
        fs_path,
        root.join(id.strip_prefix("sha256:").unwrap()).join("fs")
    );
    assert_eq!(fs::read(fs_path.join("etc/hostname")).unwrap(), b"berth\n");
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&id));

    // A child chain stacked on it.
    let child_layer = Layer::new().file("etc/motd", b"hi", 0o644).bytes();
    let staging = store.stage().unwrap();
    let applied2 = apply_layer(
        &child_layer[..],
        Compression::None,
        staging.path(),
        std::slice::from_ref(&fs_path),
    )
    .unwrap();
    let child = chain_id(Some(&id), &applied2.diff_id);
    store.commit(staging, &child).unwrap();
    let mut want = vec![id.clone(), child.clone()];
    want.sort();
    assert_eq!(store.list().unwrap(), want);

    store.remove(&id).unwrap();
    store.remove(&id).unwrap(); // idempotent
    assert!(!store.exists(&id));
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&child));
    store.remove(&child).unwrap();
    assert_eq!(top_names(&root), [".lock"]);
}

#[test]
fn dropped_staging_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let staging = store.stage().unwrap();
    fs::create_dir(staging.path().join("ro")).unwrap();
    fs::write(staging.path().join("ro/f"), b"x").unwrap();
    fs::set_permissions(staging.path().join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
    drop(staging);
    assert_eq!(top_names(tmp.path()), [".lock"]);
}

#[test]
fn concurrent_commits_of_the_same_chain_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let tar = layer();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let staging = store.stage().unwrap();
                    let applied =
                        apply_layer(&tar[..], Compression::None, staging.path(), &[]).unwrap();
                    let id = chain_id(None, &applied.diff_id);
                    store.commit(staging, &id).unwrap();
                    id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.list().unwrap(), [ids[0].clone()]);
    // The losers' staging dirs are gone.
    let hex = ids[0].strip_prefix("sha256:").unwrap();
    assert_eq!(top_names(tmp.path()), [".lock", hex]);
    assert_eq!(
        fs::read(store.fs_path(&ids[0]).unwrap().join("etc/hostname")).unwrap(),
        b"berth\n"
    );
}

#[test]
fn open_cleans_crash_leftovers_and_locks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let id = format!("sha256:{}", "ab".repeat(32));
    {
        let store = SnapshotStore::open(root).unwrap();
        // A second owner would delete our staging dirs: refused.
        let err = SnapshotStore::open(root).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Locked);

        let staging = store.stage().unwrap();
        apply_layer(&layer()[..], Compression::None, staging.path(), &[]).unwrap();
        std::mem::forget(staging); // simulate a crash mid-pull
        let committed = store.stage().unwrap();
        store.commit(committed, &id).unwrap();
        fs::create_dir_all(root.join(".trash-0123/fs/deep")).unwrap();
    }
    assert_eq!(top_names(root).len(), 4);
    let store = SnapshotStore::open(root).unwrap();
    assert_eq!(top_names(root), [".lock".to_string(), "ab".repeat(32)]);
    assert_eq!(store.list().unwrap(), [id]);
}

#[test]
fn remove_handles_read_only_and_immutable_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    let staging = store.stage().unwrap();
    let tar = Layer::new()
        .dir("locked", 0o000)
        .file("locked/f", b"x", 0o000)
        .dir("ro", 0o555)
        .file("ro/g", b"y", 0o444)
        .file("plain", b"z", 0o644)
        .bytes();
    apply_layer(&tar[..], Compression::None, staging.path(), &[]).unwrap();
    let id = format!("sha256:{}", "cd".repeat(32));
    store.commit(staging, &id).unwrap();

    // chattr +i / +a where the filesystem supports it.
    let fs_path = store.fs_path(&id).unwrap();
    let set_flags = |p: &Path, flags: rustix::fs::IFlags| {
        let f = fs::File::open(p).unwrap();
        rustix::fs::ioctl_setflags(f.as_fd(), flags).is_ok()
    };
    let immutable = set_flags(&fs_path.join("plain"), rustix::fs::IFlags::IMMUTABLE);
    let append = set_flags(&fs_path.join("ro"), rustix::fs::IFlags::APPEND);
    eprintln!("immutable flag supported: {immutable}, append-only: {append}");

    store.remove(&id).unwrap();
    assert!(!store.exists(&id));
    assert_eq!(top_names(tmp.path()), [".lock"]);
}

#[test]
fn usage_counts_hard_links_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    assert_eq!(store.usage().unwrap().inodes, 0);
    let staging = store.stage().unwrap();
    apply_layer(&layer()[..], Compression::None, staging.path(), &[]).unwrap();
    let before_commit = store.usage().unwrap();
    let id = format!("sha256:{}", "ef".repeat(32));
    store.commit(staging, &id).unwrap();
    let u = store.usage().unwrap();
    assert_eq!(u, before_commit, "staging dirs count too");
    // <hex>, fs, etc, etc/hostname, bin, bin/tool (= bin/tool2).
    assert_eq!(u.inodes, 6);
    assert!(u.bytes >= 100_000, "{u:?}");
    assert!(u.bytes < 200_000, "hard link counted twice? {u:?}");
}

#[test]
fn store_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SnapshotStore>();
    assert_send_sync::<berth_snapshot::Staging>();
    assert_send_sync::<Error>();
}

#[test]
fn invalid_chain_ids_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    for bad in [
        "",
        "sha256:",
        "sha256:../../etc",
        "md5:abc",
        "sha256:ABCDEF",
    ] {
        assert_eq!(
            store.fs_path(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(!store.exists(bad));
        assert_eq!(
            store.remove(bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let staging = store.stage().unwrap();
        assert_eq!(
            store.commit(staging, bad).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
    assert_eq!(top_names(tmp.path()), [".lock"]);
}
