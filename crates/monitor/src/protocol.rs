//! What the daemon and a monitor say to each other.
//!
//! One request per connection on the monitor's unix socket: the daemon
//! writes one JSON line, the monitor answers with one JSON line and closes.
//! Requests that wait (stop, exec) simply answer later; the daemon sets its
//! own deadline. The monitor also persists every container's [`State`] in
//! `<pod dir>/containers/<id>.json`, so the daemon can read states without
//! asking, and after the monitor itself is gone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the monitor sets up the pod, written by the daemon to
/// `<pod dir>/pod.json` before it starts the monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodSpec {
    /// The sandbox id.
    pub id: String,
    /// A network namespace to join (a bind-mounted nsfs file); `None`
    /// means the host's.
    pub netns: Option<PathBuf>,
    /// A new IPC namespace (else the host's).
    pub new_ipc: bool,
    /// A new UTS namespace with this host name (else the host's).
    pub hostname: Option<String>,
    /// A pod-wide PID namespace whose PID 1 is the monitor's pod init
    /// (pods whose containers share their PID namespace: mode POD).
    pub new_pid: bool,
    /// Namespaced sysctls written inside the pod's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// How containers are run.
    pub handler: Handler,
    /// A pod user namespace with these maps: then the pod init creates the
    /// user namespace and the pod's network, IPC, UTS and PID namespaces
    /// inside it (so that it owns them), and `netns` is `None` (the daemon
    /// pins the pod init's network namespace afterwards for CNI).
    #[serde(default)]
    pub userns: Option<IdMaps>,
}

/// The uid and gid maps of a user namespace, as `/proc/PID/uid_map` lines:
/// (inside, outside, count).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMaps {
    pub uids: Vec<(u32, u32, u32)>,
    pub gids: Vec<(u32, u32, u32)>,
}

impl IdMaps {
    /// The text the kernel wants in `uid_map`/`gid_map`.
    pub fn format(lines: &[(u32, u32, u32)]) -> String {
        lines
            .iter()
            .map(|(i, o, n)| format!("{i} {o} {n}\n"))
            .collect()
    }
}

/// Who creates and starts containers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Handler {
    /// youki's libcontainer, inside the monitor.
    Builtin,
    /// An OCI runtime binary driven through its command line (runc, crun).
    Oci { path: PathBuf },
}

/// A request from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// Is the monitor alive? Answers [`Reply::Pong`].
    Ping,
    /// Creates a container from an OCI bundle (its `config.json` is final)
    /// with its output going to `log_path`.
    Create {
        id: String,
        bundle: PathBuf,
        log_path: Option<PathBuf>,
        /// Written to the init's `/proc/<pid>/oom_score_adj` (already clamped).
        oom_score_adj: Option<i32>,
        /// The memory cgroup directory whose OOM-kill counter tells OOMKilled.
        memory_cgroup: Option<PathBuf>,
        /// The container reads a stdin that attach sessions write to (else
        /// `/dev/null`).
        #[serde(default)]
        stdin: bool,
        /// The first attach session that closes stdin closes it for good.
        #[serde(default)]
        stdin_once: bool,
        /// The container's stdio is a terminal (the bundle's
        /// `process.terminal`); its output is logged as stdout.
        #[serde(default)]
        tty: bool,
    },
    /// Starts a created container.
    Start { id: String },
    /// Sends `signal`, waits up to `timeout_secs`, then SIGKILLs; answers
    /// when the container has exited.
    Stop {
        id: String,
        signal: i32,
        timeout_secs: u64,
    },
    /// Runs a process in a running container and returns its output.
    Exec {
        id: String,
        /// The OCI `process` object (JSON).
        process: serde_json::Value,
        /// 0 means no timeout.
        timeout_secs: u64,
    },
    /// Starts a process in a running container for a streaming exec. The
    /// answer is [`Reply::Started`], sent with the process's stdio as
    /// SCM_RIGHTS; the connection then stays open until the monitor writes
    /// [`Reply::Exited`]. Closing it first kills the process.
    ExecStream {
        id: String,
        /// The OCI `process` object (JSON); `terminal` asks for a pty.
        process: serde_json::Value,
        /// The process reads a pipe the caller writes (else `/dev/null`).
        stdin: bool,
    },
    /// Attaches to a container's stdio. The answer is [`Reply::Attached`];
    /// the connection then carries [`frame`]s both ways until the
    /// container exits ([`frame::EXIT`]) or the caller closes it.
    Attach {
        id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Opens the container's log file again (after rotation).
    ReopenLog { id: String },
    /// Watches the containers' states: the answer is [`Reply::Watching`]
    /// with every state now, then one [`Reply::State`] line per recorded
    /// change, until the monitor exits or the caller falls too far behind
    /// (the connection is then closed; watch again and compare).
    Watch,
    /// Kills the container if it runs and forgets it.
    Delete { id: String },
    /// Kills every container, forgets them and exits.
    Shutdown,
}

impl Request {
    /// How long the daemon waits for the answer: a wedged monitor (a stuck
    /// OCI runtime) fails the call instead of holding it, and the pod's
    /// locks, for ever. `None` only for an exec without a timeout, bounded
    /// by its caller's deadline instead.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        use std::time::Duration;
        /// Beyond a stop's or an exec's own timeout: SIGKILL and reaping.
        const SLACK: Duration = Duration::from_secs(40);
        match self {
            // Until the first answer; what follows lasts as long as the caller.
            Request::Ping | Request::Watch => Some(Duration::from_secs(5)),
            Request::Create { .. } | Request::Delete { .. } => Some(Duration::from_secs(120)),
            // Every container killed and deleted.
            Request::Shutdown => Some(Duration::from_secs(90)),
            Request::Start { .. } | Request::ReopenLog { .. } => Some(Duration::from_secs(60)),
            Request::Stop { timeout_secs, .. } => {
                Some(Duration::from_secs(*timeout_secs).saturating_add(SLACK))
            }
            Request::Exec {
                timeout_secs: 0, ..
            } => None,
            // Until the process runs or the stream is attached; what follows
            // lasts as long as the caller's stream.
            Request::ExecStream { .. } | Request::Attach { .. } => Some(Duration::from_secs(60)),
            Request::Exec { timeout_secs, .. } => {
                Some(Duration::from_secs(*timeout_secs).saturating_add(SLACK))
            }
        }
    }

    /// The request's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "Ping",
            Request::Create { .. } => "Create",
            Request::Start { .. } => "Start",
            Request::Stop { .. } => "Stop",
            Request::Exec { .. } => "Exec",
            Request::ExecStream { .. } => "ExecStream",
            Request::Attach { .. } => "Attach",
            Request::ReopenLog { .. } => "ReopenLog",
            Request::Watch => "Watch",
            Request::Delete { .. } => "Delete",
            Request::Shutdown => "Shutdown",
        }
    }
}

/// The monitor's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply")]
pub enum Reply {
    Pong {
        pid: i32,
        pod_init: Option<i32>,
    },
    Done,
    State(State),
    Exec(ExecResult),
    /// A streaming exec runs as `pid`; its stdio arrives with this line, one
    /// descriptor per entry of `fds`, in that order.
    Started {
        pid: i32,
        fds: Vec<FdRole>,
    },
    /// The streaming exec's process exited.
    Exited {
        exit_code: i32,
    },
    /// A watch began: every container's state at that moment.
    Watching {
        states: Vec<State>,
    },
    /// An attach session began; `tty` tells whether the container's stdio
    /// is a terminal (one output stream, resizable).
    Attached {
        tty: bool,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// What a descriptor passed with [`Reply::Started`] is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FdRole {
    /// The write end of the process's stdin.
    Stdin,
    /// The read end of its stdout.
    Stdout,
    /// The read end of its stderr.
    Stderr,
    /// The master side of its terminal: stdin, stdout and window size.
    Pty,
}

/// The binary frames of an attach session, after [`Reply::Attached`]:
/// one byte of kind, a big-endian `u32` length, then that many bytes.
pub mod frame {
    /// Caller to monitor: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Monitor to caller: the container's stdout (or terminal output).
    pub const STDOUT: u8 = 1;
    /// Monitor to caller: the container's stderr.
    pub const STDERR: u8 = 2;
    /// Monitor to caller: the container exited; the payload is its exit
    /// code as a big-endian `i32`. The last frame.
    pub const EXIT: u8 = 3;
    /// Caller to monitor: this session is done with stdin (a
    /// `stdin_once` container's stdin is then closed).
    pub const CLOSE_STDIN: u8 = 4;
    /// Caller to monitor: the terminal's new size, width then height, two
    /// big-endian `u16`.
    pub const RESIZE: u8 = 5;
    /// The header: kind and length.
    pub const HEADER: usize = 5;
    /// The largest payload either side sends or accepts.
    pub const MAX_PAYLOAD: usize = 64 * 1024;

    /// A frame's header.
    pub fn header(kind: u8, len: usize) -> [u8; HEADER] {
        let n = (len as u32).to_be_bytes();
        [kind, n[0], n[1], n[2], n[3]]
    }

    /// Kind and length from a header; `None` for a length over
    /// [`MAX_PAYLOAD`].
    pub fn parse_header(h: &[u8; HEADER]) -> Option<(u8, usize)> {
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        (len <= MAX_PAYLOAD).then_some((h[0], len))
    }
}

/// How a failed request should be reported.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Internal,
}

/// A container's lifecycle, as the monitor knows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// One container's runtime state. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub id: String,
    pub status: Status,
    pub pid: Option<i32>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// "OOMKilled", "Error", "Completed" once exited.
    pub reason: String,
    pub message: String,
}

/// The result of an exec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i32,
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// The socket, pod spec and state files of a pod directory.
pub mod paths {
    use std::path::{Path, PathBuf};

    pub fn socket(pod_dir: &Path) -> PathBuf {
        pod_dir.join(SOCKET)
    }

    /// The socket's file name in the pod directory.
    pub const SOCKET: &str = "monitor.sock";

    /// A path to `name` in `dir` short enough for `sockaddr_un` (108
    /// bytes), whatever the length of `dir`: through the fd of the opened
    /// directory. Keep `dir_fd` open while the path is used.
    pub fn short(dir_fd: &std::fs::File, name: &str) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()))
    }
    pub fn pod_spec(pod_dir: &Path) -> PathBuf {
        pod_dir.join("pod.json")
    }
    pub fn state(pod_dir: &Path, id: &str) -> PathBuf {
        pod_dir.join("containers").join(format!("{id}.json"))
    }
    pub fn states(pod_dir: &Path) -> PathBuf {
        pod_dir.join("containers")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_as_one_json_line() {
        let r = Request::Stop {
            id: "c1".into(),
            signal: 15,
            timeout_secs: 30,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"stop","id":"c1","signal":15,"timeout_secs":30}"#
        );
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Request::Stop { signal: 15, .. }));

        let e = Reply::Exec(ExecResult {
            exit_code: 1,
            stdout: b"out\n".to_vec(),
            stderr: vec![0, 255],
            timed_out: false,
        });
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let Reply::Exec(back) = serde_json::from_str(&line).unwrap() else {
            panic!("not an exec reply: {line}");
        };
        assert_eq!(back.stdout, b"out\n");
        assert_eq!(back.stderr, vec![0, 255]);
    }

    #[test]
    fn handler_spelling() {
        let h: Handler = serde_json::from_str(r#"{"kind":"oci","path":"/usr/sbin/runc"}"#).unwrap();
        assert_eq!(
            h,
            Handler::Oci {
                path: "/usr/sbin/runc".into()
            }
        );
        let h: Handler = serde_json::from_str(r#"{"kind":"builtin"}"#).unwrap();
        assert_eq!(h, Handler::Builtin);
    }
}
