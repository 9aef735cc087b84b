//! CheckpointContainer. A checkpoint is CRIU's dump of the container's
//! processes; Berth does not write one yet, and says why a caller cannot
//! have one here: CRIU missing, CRIU failing its own `criu check` on this
//! kernel (Debian 12's CRIU 3.17 does on the development VM: "Unexpected
//! rt vDSO area bounds"), or else Berth's own missing support.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::Runtime;

/// How long `criu check` may take.
const CRIU_CHECK: Duration = Duration::from_secs(20);

/// Why CRIU cannot checkpoint on this host, if it cannot.
async fn criu_unusable() -> Option<String> {
    let Some(criu) = crate::resolve_binary(std::path::Path::new("criu")) else {
        return Some("CRIU is not installed (no criu in PATH)".into());
    };
    let run = tokio::process::Command::new(&criu)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(CRIU_CHECK, run).await {
        Err(_) => Some(format!(
            "CRIU's `{} check` did not finish within {CRIU_CHECK:?}",
            criu.display()
        )),
        Ok(Err(e)) => Some(format!("CRIU cannot be run ({}): {e}", criu.display())),
        Ok(Ok(out)) if !out.status.success() => {
            let text = String::from_utf8_lossy(&out.stderr);
            let first = text
                .lines()
                .find(|l| l.starts_with("Error"))
                .or(text.lines().next())
                .unwrap_or("no output")
                .trim()
                .to_string();
            Some(format!(
                "CRIU fails its own check on this kernel (`{} check`: {first})",
                criu.display()
            ))
        }
        Ok(Ok(_)) => None,
    }
}

impl Runtime {
    /// CheckpointContainer: the container must exist; then Unimplemented
    /// with the reason.
    pub async fn checkpoint_container(&self, id: &str, location: &str) -> Result<()> {
        let rec = self.get_container(id)?;
        if location.is_empty() {
            return Err(Error::InvalidArgument(
                "a checkpoint needs a location (the archive to write)".into(),
            ));
        }
        let why = match criu_unusable().await {
            Some(why) => why,
            None => "CRIU works here, but Berth does not write checkpoints yet".into(),
        };
        Err(Error::Unimplemented(format!(
            "cannot checkpoint container {}: {why}",
            rec.id
        )))
    }
}
