//! Layer tar streams as a hostile image may carry them (the applier is the
//! security boundary): applying never panics, and whatever the stream says,
//! nothing is created, changed or linked outside the snapshot directory.
//! The oracle: a sentinel directory beside the snapshot stays empty, and
//! the parent holds nothing else.
#![no_main]

use std::path::Path;

use berth_snapshot::{apply_layer, Compression};
use libfuzzer_sys::fuzz_target;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, layer)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("snapshot");
    let sentinel = tmp.path().join("sentinel");
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(&sentinel).unwrap();
    let _ = apply_layer(layer, compression, &target, &[]);
    assert_eq!(
        entries(tmp.path()),
        ["sentinel", "snapshot"],
        "something outside the snapshot"
    );
    assert!(
        entries(&sentinel).is_empty(),
        "something written beside the snapshot"
    );
});
