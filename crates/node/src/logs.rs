//! Container log rotation as the kubelet's container log manager does it:
//! every few seconds, each running container whose log is over the size
//! limit gets its log renamed to `<log>.<YYYYMMDD-HHMMSS>` and reopened by
//! the runtime (ReopenContainerLog); earlier rotated files are compressed
//! (`.gz`) and the oldest removed so that at most `max_files` files (the
//! live one included) remain.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use berth_cri_client::Client;

use crate::calls;

/// When and how much to keep (the kubelet's containerLogMaxSize,
/// containerLogMaxFiles and containerLogMonitorInterval).
#[derive(Debug, Clone)]
pub struct RotationPolicy {
    pub max_size: u64,
    pub max_files: usize,
    pub interval: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            max_size: 10 << 20,
            max_files: 5,
            interval: Duration::from_secs(10),
        }
    }
}

const GZ: &str = ".gz";
const TMP: &str = ".tmp";

/// The rotated files of `log` that are still wanted, oldest first; what
/// is left of an interrupted compression (a `.tmp`, or a plain file whose
/// `.gz` exists) is removed.
fn cleanup(log: &Path) -> io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut rotated: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) {
            rotated.push(n);
        }
    }
    let mut keep = Vec::new();
    for n in &rotated {
        let unused = n.ends_with(TMP)
            || (!n.ends_with(GZ) && rotated.iter().any(|o| *o == format!("{n}{GZ}")));
        if unused {
            std::fs::remove_file(dir.join(n))?;
        } else {
            keep.push(n.clone());
        }
    }
    keep.sort();
    Ok(keep.into_iter().map(|n| dir.join(n)).collect())
}

/// Compresses `path` to `path.gz` through a temporary file, then removes
/// it.
fn compress(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    let tmp = PathBuf::from(format!("{}{GZ}{TMP}", path.display()));
    let result = (|| {
        let mut input = std::fs::File::open(path)?;
        let out = std::fs::File::create(&tmp)?;
        out.set_permissions(std::fs::Permissions::from_mode(mode))?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, format!("{}{GZ}", path.display()))?;
        std::fs::remove_file(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Prepares a rotation of `log`: cleans up, removes the oldest rotated
/// files beyond `max_files - 2`, compresses the rest; returns the name
/// the live log is to be renamed to.
pub fn prepare(
    log: &Path,
    max_files: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> io::Result<PathBuf> {
    let mut rotated = cleanup(log)?;
    let keep = max_files.saturating_sub(2);
    let excess = rotated.len().saturating_sub(keep);
    for old in rotated.drain(..excess) {
        std::fs::remove_file(old)?;
    }
    for r in &rotated {
        if !r.to_string_lossy().ends_with(GZ) {
            compress(r)?;
        }
    }
    Ok(PathBuf::from(format!(
        "{}.{}",
        log.display(),
        now.format("%Y%m%d-%H%M%S")
    )))
}

/// Rotates the logs of running containers every `policy.interval`.
pub(crate) async fn run(client: Client, policy: RotationPolicy) {
    loop {
        tokio::time::sleep(policy.interval).await;
        let Ok(containers) = calls::containers(&client, None).await else {
            continue;
        };
        for c in containers {
            if c.state != cri::ContainerState::ContainerRunning as i32 {
                continue;
            }
            if let Err(e) = rotate(&client, &c.id, &policy).await {
                tracing::warn!(container = %c.id, "log rotation: {e}");
            }
        }
    }
}

async fn rotate(client: &Client, id: &str, policy: &RotationPolicy) -> Result<(), String> {
    let Some(st) = calls::container_status(client, id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if st.log_path.is_empty() {
        return Ok(());
    }
    let log = PathBuf::from(&st.log_path);
    let (max_size, max_files) = (policy.max_size, policy.max_files);
    let l = log.clone();
    let target = tokio::task::spawn_blocking(move || -> io::Result<Option<PathBuf>> {
        match std::fs::metadata(&l) {
            Ok(m) if m.len() >= max_size => {}
            _ => return Ok(None),
        }
        let target = prepare(&l, max_files, chrono::Utc::now())?;
        std::fs::rename(&l, &target)?;
        Ok(Some(target))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{}: {e}", log.display()))?;
    let Some(target) = target else {
        return Ok(());
    };
    let req = client.request(cri::ReopenContainerLogRequest {
        container_id: id.to_string(),
    });
    if let Err(e) = client
        .call(
            "ReopenContainerLog",
            client.runtime.clone().reopen_container_log(req),
        )
        .await
    {
        // The runtime still writes to the renamed file: put it back.
        let (t, l) = (target.clone(), log.clone());
        let _ = tokio::task::spawn_blocking(move || std::fs::rename(t, l)).await;
        return Err(format!("ReopenContainerLog: {}", calls::message(&e)));
    }
    tracing::info!(container = %id, rotated = %target.display(), "log rotated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_max_files_compressing_all_but_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        for (i, when) in [
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:02Z",
            "2026-01-01T00:00:03Z",
            "2026-01-01T00:00:04Z",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(&log, format!("line {i}\n")).unwrap();
            let target = prepare(&log, 3, t(when)).unwrap();
            std::fs::rename(&log, &target).unwrap();
        }
        std::fs::write(&log, "live\n").unwrap();
        // max 3 files: the live log and the two newest rotated ones, the
        // older compressed.
        assert_eq!(
            names(dir.path()),
            ["0.log", "0.log.20260101-000003.gz", "0.log.20260101-000004"]
        );
        let gz = std::fs::File::open(dir.path().join("0.log.20260101-000003.gz")).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert_eq!(text, "line 2\n");
    }

    #[test]
    fn leftovers_of_an_interrupted_compression_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        std::fs::write(dir.path().join("1.log.20260101-000001"), "a").unwrap();
        std::fs::write(dir.path().join("1.log.20260101-000001.gz"), "a").unwrap();
        std::fs::write(dir.path().join("1.log.20260101-000002.gz.tmp"), "a").unwrap();
        std::fs::write(dir.path().join("2.log.20260101-000001"), "other").unwrap();
        let kept = cleanup(&log).unwrap();
        assert_eq!(kept, [dir.path().join("1.log.20260101-000001.gz")]);
        assert!(dir.path().join("2.log.20260101-000001").exists());
    }
}
