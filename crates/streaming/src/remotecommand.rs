//! Kubernetes' remote-command protocol (exec and attach), whatever carries
//! it: the client's stdin, stdout, stderr, resize and error channels
//! ([`Channels`], made by the SPDY or WebSocket side) joined to a
//! [`Process`].
//!
//! The session: stdin is copied to the process until the client closes it;
//! stdout and stderr until the process's end of them; terminal sizes (a
//! stream of JSON objects `{"Width":..,"Height":..}`) are applied as they
//! come. When the process has exited and its output is drained, the status
//! goes on the error channel (JSON from v4 on, plain text on failure
//! before), then everything is closed. A client that goes away ends the
//! session at once, which kills an exec's process.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cache::Pending;
use crate::{Backend, Outcome, Process, Reader, Writer};

/// A process being started by the backend.
pub(crate) type Starting<'a> = Pin<Box<dyn Future<Output = Result<Process, String>> + Send + 'a>>;

/// What an exec or an attach is, and its process starting (`None` for a
/// port-forward).
pub(crate) fn start<'a, B: Backend>(
    pending: &'a Pending,
    backend: &'a B,
) -> Option<(What, Starting<'a>)> {
    match pending {
        Pending::Exec(r) => Some((What::Exec { cmd: r.cmd.clone() }, Box::pin(backend.exec(r)))),
        Pending::Attach(r) => Some((What::Attach, Box::pin(backend.attach(r)))),
        Pending::PortForward(_) => None,
    }
}

/// How long output may still flow once the process has exited (a
/// background child may hold it open for ever).
pub const DRAIN: Duration = Duration::from_secs(2);

/// The remote-command protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`: no status on success, no resize.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: resize.
    V3,
    /// `v4.channel.k8s.io`: the status as JSON, with the exit code.
    V4,
    /// `v5.channel.k8s.io` (WebSocket): v4 plus closing a channel.
    V5,
}

impl Version {
    /// The SPDY protocols served, in the kubelet's order of preference.
    pub const SPDY: [&'static str; 5] = [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];

    /// The version of a protocol name (without a `base64.` part).
    pub fn of(protocol: &str) -> Option<Version> {
        match protocol {
            "channel.k8s.io" | "" => Some(Version::V1),
            "v2.channel.k8s.io" => Some(Version::V2),
            "v3.channel.k8s.io" => Some(Version::V3),
            "v4.channel.k8s.io" => Some(Version::V4),
            "v5.channel.k8s.io" => Some(Version::V5),
            _ => None,
        }
    }

    /// Whether a terminal can be resized.
    pub fn resizes(self) -> bool {
        self >= Version::V3
    }
}

/// The client's channels; `None` where the session has none.
pub struct Channels {
    /// What the client types.
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Terminal sizes, as a stream of JSON objects.
    pub resize: Option<Reader>,
    /// Where the status goes; closed last.
    pub error: Writer,
    /// Resolves when the client has gone (the connection is closed).
    pub gone: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// What a session is, for the status message.
#[derive(Debug, Clone)]
pub enum What {
    Exec { cmd: Vec<String> },
    Attach,
}

/// A Kubernetes `Status`, as much of it as the clients read, in the field
/// order the kubelet writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Details {
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
}

impl Status {
    pub fn success() -> Status {
        Status {
            status: "Success".into(),
            message: String::new(),
            reason: String::new(),
            details: None,
            code: None,
        }
    }

    /// The status of a session that ended with `outcome`.
    pub fn of(what: &What, outcome: &Outcome) -> Status {
        match (what, outcome) {
            (What::Exec { .. }, Outcome::Exited(0)) | (What::Attach, Outcome::Detached) => {
                Status::success()
            }
            (What::Attach, Outcome::Exited(_)) => Status::success(),
            (What::Exec { cmd }, Outcome::Exited(code)) if (1..=255).contains(code) => Status {
                status: "Failure".into(),
                message: format!(
                    "command terminated with non-zero exit code: error executing command \
                     [{}], exit code {code}",
                    cmd.join(" ")
                ),
                reason: "NonZeroExitCode".into(),
                details: Some(Details {
                    causes: vec![Cause {
                        reason: "ExitCode".into(),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            (What::Exec { .. }, Outcome::Exited(code)) => Status::internal(
                what,
                &format!("the process ended without an exit code ({code})"),
            ),
            (What::Exec { .. }, Outcome::Detached) => {
                Status::internal(what, "the process ended without an exit code")
            }
            (_, Outcome::Failed(e)) => Status::internal(what, e),
        }
    }

    /// A failure of the runtime.
    pub fn internal(what: &What, error: &str) -> Status {
        let doing = match what {
            What::Exec { .. } => "error executing command in container",
            What::Attach => "error attaching to container",
        };
        Status {
            status: "Failure".into(),
            message: format!("Internal error occurred: {doing}: {error}"),
            reason: "InternalError".into(),
            details: None,
            code: Some(500),
        }
    }

    /// What goes on the error channel in `version`: JSON from v4 on;
    /// before, nothing on success and the message on failure.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        if version >= Version::V4 {
            serde_json::to_vec(self).unwrap_or_default()
        } else if self.status == "Success" {
            Vec::new()
        } else {
            self.message.clone().into_bytes()
        }
    }
}

/// A terminal size as clients send it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Size {
    #[serde(alias = "width")]
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(alias = "height")]
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Reads sizes from a stream of JSON objects until it ends or holds
/// something else; calls `apply` for each non-zero one.
pub async fn read_sizes(mut from: Reader, apply: impl Fn(u16, u16)) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        loop {
            match sizes.next() {
                Some(Ok(s)) => {
                    if s.width > 0 && s.height > 0 {
                        apply(s.width, s.height);
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => return,
                None => break,
            }
        }
        let used = sizes.byte_offset();
        buf.drain(..used);
        if buf.len() > 4096 {
            return;
        }
    }
}

/// Tasks aborted when dropped (a session dropped half-way leaves none).
struct AbortAll(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Copies until the end of `from`, then closes `to`.
async fn pump(mut from: Reader, mut to: Writer) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Runs one session: `process` (or why it could not start) joined to the
/// client's `channels`, until the process ends or the client goes.
pub async fn run(
    process: Result<Process, String>,
    channels: Channels,
    version: Version,
    what: What,
) {
    let Channels {
        stdin,
        stdout,
        stderr,
        resize,
        mut error,
        gone,
    } = channels;
    let mut process = match process {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(?what, "streaming session failed: {e}");
            let _ = error
                .write_all(&Status::internal(&what, &e).encode(version))
                .await;
            let _ = error.shutdown().await;
            return;
        }
    };
    let mut background = AbortAll(Vec::new());
    if let (Some(from), Some(to)) = (stdin, process.stdin.take()) {
        background.0.push(tokio::spawn(pump(from, to)));
    }
    if let (Some(sizes), Some(apply)) = (resize, process.resize.take()) {
        background.0.push(tokio::spawn(read_sizes(sizes, apply)));
    }
    let mut output = AbortAll(Vec::new());
    for (from, to) in [
        (process.stdout.take(), stdout),
        (process.stderr.take(), stderr),
    ] {
        match (from, to) {
            (Some(from), Some(to)) => output.0.push(tokio::spawn(pump(from, to))),
            (None, Some(mut to)) => {
                let _ = to.shutdown().await;
            }
            (Some(from), None) => {
                // Nobody reads it: drain it so that the process never blocks.
                output
                    .0
                    .push(tokio::spawn(pump(from, Box::pin(tokio::io::sink()))));
            }
            (None, None) => {}
        }
    }
    let outcome = tokio::select! {
        outcome = &mut process.done => outcome,
        // Every task is aborted with `background` and `output`.
        _ = gone => return,
    };
    drop(process);
    let drained = async {
        for t in &mut output.0 {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::debug!("output still open {DRAIN:?} after the process ended; closing it");
    }
    drop(background);
    drop(output);
    let status = Status::of(&what, &outcome);
    let _ = error.write_all(&status.encode(version)).await;
    let _ = error.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> What {
        What::Exec {
            cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
        }
    }

    #[test]
    fn v4_statuses_are_what_client_go_parses() {
        let ok = Status::of(&exec(), &Outcome::Exited(0));
        assert_eq!(ok.encode(Version::V4), br#"{"status":"Success"}"#);
        let three = Status::of(&exec(), &Outcome::Exited(3));
        assert_eq!(
            String::from_utf8(three.encode(Version::V4)).unwrap(),
            r#"{"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let failed = Status::of(&What::Attach, &Outcome::Failed("gone".into()));
        assert_eq!(
            String::from_utf8(failed.encode(Version::V5)).unwrap(),
            r#"{"status":"Failure","message":"Internal error occurred: error attaching to container: gone","reason":"InternalError","code":500}"#
        );
        assert_eq!(
            Status::of(&What::Attach, &Outcome::Exited(1)),
            Status::success()
        );
    }

    #[test]
    fn before_v4_only_failures_are_written_as_text() {
        assert!(Status::of(&exec(), &Outcome::Exited(0))
            .encode(Version::V3)
            .is_empty());
        assert_eq!(
            Status::of(&exec(), &Outcome::Exited(3)).encode(Version::V1),
            b"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }

    #[test]
    fn exit_codes_out_of_a_byte_are_internal_errors() {
        let s = Status::of(&exec(), &Outcome::Exited(-1));
        assert_eq!(s.reason, "InternalError");
        assert_eq!(
            Status::of(&exec(), &Outcome::Exited(255)).reason,
            "NonZeroExitCode"
        );
    }

    #[test]
    fn protocol_names() {
        assert_eq!(Version::of("v4.channel.k8s.io"), Some(Version::V4));
        assert_eq!(Version::of("channel.k8s.io"), Some(Version::V1));
        assert_eq!(Version::of("v6.channel.k8s.io"), None);
        assert!(Version::V3.resizes() && !Version::V2.resizes());
    }

    #[tokio::test]
    async fn sizes_split_across_reads_and_junk_ends_them() {
        let (mut w, r) = tokio::io::duplex(64);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        let reader = tokio::spawn(read_sizes(Box::pin(r), move |w, h| {
            g.lock().unwrap().push((w, h))
        }));
        w.write_all(b"{\"Width\":80,\"Hei").await.unwrap();
        tokio::task::yield_now().await;
        w.write_all(b"ght\":24}\n{\"width\":0,\"height\":5}{\"Width\":132,\"Height\":43}\n")
            .await
            .unwrap();
        // The reader may stop before all of it is taken.
        let _ = w.write_all(b"nonsense").await;
        reader.await.unwrap();
        assert_eq!(*got.lock().unwrap(), vec![(80, 24), (132, 43)]);
    }
}
