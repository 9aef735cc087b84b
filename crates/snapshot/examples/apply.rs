//! Applies a layer blob into a fresh directory and reports throughput.
//!
//! ```text
//! cargo run --release -p berth-snapshot --example apply -- LAYER [gzip|zstd|none] [TARGET_PARENT]
//! ```
//!
//! Without LAYER arguments' compression, it is guessed from the magic bytes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::time::Instant;

use berth_snapshot::{apply_layer, Compression};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let layer = args
        .next()
        .ok_or("usage: apply LAYER [gzip|zstd|none] [TARGET_PARENT]")?;
    let compression = match args.next().as_deref() {
        Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("none") => Compression::None,
        Some(other) => return Err(format!("unknown compression {other:?}").into()),
        None => {
            let mut magic = [0u8; 4];
            File::open(&layer)?.read_exact(&mut magic)?;
            match magic {
                [0x1f, 0x8b, ..] => Compression::Gzip,
                [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
                _ => Compression::None,
            }
        }
    };
    let parent = args.next().map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(parent)?;
    let target = dir.path().join("fs");
    std::fs::create_dir(&target)?;

    let start = Instant::now();
    let blob = BufReader::with_capacity(1 << 20, File::open(&layer)?);
    let applied = apply_layer(blob, compression, &target, &[])?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} entries, {:.1} MiB uncompressed in {:.3}s ({:.0} MiB/s, {:.0} entries/s)\n{}",
        applied.entries,
        applied.uncompressed_size as f64 / (1 << 20) as f64,
        secs,
        applied.uncompressed_size as f64 / (1 << 20) as f64 / secs,
        applied.entries as f64 / secs,
        applied.diff_id
    );
    Ok(())
}
