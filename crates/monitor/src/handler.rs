//! The two ways a monitor runs containers: youki's libcontainer in this
//! process, or an OCI runtime binary (runc, crun) through its command line.
//!
//! Either way the container's init and exec processes end up as children
//! of the monitor (libcontainer clones them with `CLONE_PARENT`; runc's are
//! re-parented to the monitor, a child subreaper, when runc exits), so the
//! monitor reaps them and knows their exit codes.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Spec;

use crate::protocol::Handler;

/// What an exec needs to know.
pub struct Exec<'a> {
    pub id: &'a str,
    /// The container's init pid.
    pub init: i32,
    pub bundle: &'a Path,
    /// The OCI process JSON file.
    pub process: &'a Path,
    /// Where an external runtime writes the new pid.
    pub pid_file: &'a Path,
}

/// A handler's failure, with the runtime's own words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

fn err(what: &str, e: impl std::fmt::Display) -> HandlerError {
    HandlerError(format!("{what}: {e}"))
}

/// The output fds a new process gets.
pub struct Stdio3 {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A [`Handler`] bound to its state directory.
pub enum Runner {
    Builtin { root: PathBuf },
    Oci { path: PathBuf, root: PathBuf },
}

impl Runner {
    pub fn new(handler: &Handler, pod_dir: &Path) -> Runner {
        match handler {
            Handler::Builtin => Runner::Builtin {
                root: pod_dir.join("libcontainer"),
            },
            Handler::Oci { path } => Runner::Oci {
                path: path.clone(),
                root: pod_dir.join("oci"),
            },
        }
    }

    /// Creates the container; returns its init pid, and with `tty` the
    /// master of the terminal that is its stdio (then `stdio` is not
    /// used). The init waits for [`Runner::start`] before it runs the
    /// container's process.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Stdio3,
        tty: bool,
    ) -> Result<(i32, Option<OwnedFd>), HandlerError> {
        let console = tty
            .then(|| ConsoleSocket::bind(&bundle.join("console.sock")))
            .transpose()?;
        let pid = match self {
            Runner::Builtin { root } => {
                adapt_for_libcontainer(bundle)?;
                std::fs::create_dir_all(root).map_err(|e| err("creating the state dir", e))?;
                let c = ContainerBuilder::new(id.to_string(), SyscallType::default())
                    .with_root_path(root)
                    .map_err(|e| err("libcontainer", e))?
                    .with_console_socket(console.as_ref().map(|c| c.path.clone()))
                    .with_stdin(stdio.stdin)
                    .with_stdout(stdio.stdout)
                    .with_stderr(stdio.stderr)
                    .as_init(bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
                    .map_err(|e| err("creating the container", e))?;
                c.pid()
                    .map(|p| p.as_raw())
                    .ok_or_else(|| HandlerError("libcontainer reported no init pid".into()))?
            }
            Runner::Oci { path, root } => {
                let pid_file = bundle.join("init.pid");
                let _ = std::fs::remove_file(&pid_file);
                let log = bundle.join("runtime.log");
                let _ = std::fs::remove_file(&log);
                let mut cmd = Command::new(path);
                cmd.arg("--root")
                    .arg(root)
                    .arg("--log")
                    .arg(&log)
                    .args(["--log-format", "json", "create", "--bundle"])
                    .arg(bundle)
                    .arg("--pid-file")
                    .arg(&pid_file);
                if let Some(c) = &console {
                    cmd.arg("--console-socket").arg(&c.path);
                }
                let status = cmd
                    .arg(id)
                    .stdin(Stdio::from(stdio.stdin))
                    .stdout(Stdio::from(stdio.stdout))
                    .stderr(Stdio::from(stdio.stderr))
                    .status()
                    .map_err(|e| err(&format!("running {}", path.display()), e))?;
                if !status.success() {
                    return Err(HandlerError(format!(
                        "{} create: {}",
                        path.display(),
                        last_error(&log).unwrap_or_else(|| status.to_string())
                    )));
                }
                read_pid(&pid_file)?
            }
        };
        let master = console.map(ConsoleSocket::receive).transpose()?;
        Ok((pid, master))
    }

    /// Lets a created container run its process.
    pub fn start(&self, id: &str) -> Result<(), HandlerError> {
        match self {
            Runner::Builtin { root } => {
                let mut c =
                    Container::load(root.join(id)).map_err(|e| err("loading the container", e))?;
                c.start().map_err(|e| err("starting the container", e))
            }
            Runner::Oci { path, root } => run(path, root, &["start", id]),
        }
    }

    /// Starts `process` (an OCI process JSON file) in the running container;
    /// returns its pid once it has been executed, and with `tty` the master
    /// of the terminal it got (its stdio then; `stdio` is not used).
    pub fn exec(
        &self,
        exec: Exec<'_>,
        stdio: Stdio3,
        tty: bool,
    ) -> Result<(i32, Option<OwnedFd>), HandlerError> {
        let Exec {
            id,
            init,
            bundle,
            process,
            pid_file,
        } = exec;
        match self {
            Runner::Builtin { .. } => {
                let spec = Spec::load(bundle.join("config.json"))
                    .map_err(|e| err("reading config.json", e))?;
                let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
                let text = std::fs::read(process).map_err(|e| err("reading the process", e))?;
                let process =
                    serde_json::from_slice(&text).map_err(|e| err("parsing the process", e))?;
                let (ours, theirs) = match tty {
                    true => {
                        let (a, b) = std::os::unix::net::UnixStream::pair()
                            .map_err(|e| err("socketpair", e))?;
                        (Some(a), Some(OwnedFd::from(b)))
                    }
                    false => (None, None),
                };
                let pid = crate::nsexec::exec(init, seccomp, process, stdio, theirs)?;
                let master = ours.map(|s| receive_master(&s)).transpose()?;
                Ok((pid, master))
            }
            Runner::Oci { path, root } => {
                let log = pid_file.with_extension("log");
                let console = tty
                    .then(|| ConsoleSocket::bind(&pid_file.with_extension("sock")))
                    .transpose()?;
                let mut cmd = Command::new(path);
                cmd.arg("--root")
                    .arg(root)
                    .arg("--log")
                    .arg(&log)
                    .args(["--log-format", "json", "exec", "--detach", "--pid-file"])
                    .arg(pid_file)
                    .arg("--process")
                    .arg(process);
                if let Some(c) = &console {
                    cmd.arg("--tty").arg("--console-socket").arg(&c.path);
                }
                let status = cmd
                    .arg(id)
                    .stdin(Stdio::from(stdio.stdin))
                    .stdout(Stdio::from(stdio.stdout))
                    .stderr(Stdio::from(stdio.stderr))
                    .status()
                    .map_err(|e| err(&format!("running {}", path.display()), e))?;
                let result = if status.success() {
                    let pid = read_pid(pid_file);
                    match console.map(|c| c.receive()).transpose() {
                        Ok(master) => pid.map(|p| (p, master)),
                        Err(e) => Err(e),
                    }
                } else {
                    Err(HandlerError(format!(
                        "{} exec: {}",
                        path.display(),
                        last_error(&log).unwrap_or_else(|| status.to_string())
                    )))
                };
                let _ = std::fs::remove_file(&log);
                let _ = std::fs::remove_file(pid_file);
                result
            }
        }
    }

    /// Removes the container's runtime state and cgroup, killing whatever
    /// is left in it. A container the runtime doesn't know is fine.
    pub fn delete(&self, id: &str) -> Result<(), HandlerError> {
        match self {
            Runner::Builtin { root } => {
                let dir = root.join(id);
                if !dir.exists() {
                    return Ok(());
                }
                let mut c = Container::load(dir).map_err(|e| err("loading the container", e))?;
                c.delete(true).map_err(|e| err("deleting the container", e))
            }
            Runner::Oci { path, root } => {
                if !root.join(id).exists() {
                    return Ok(());
                }
                run(path, root, &["delete", "--force", id])
            }
        }
    }
}

/// What libcontainer 0.7 reads differently (see `berth_oci::compat`), and
/// it writes `oomScoreAdj` into the *calling* process: the monitor writes it
/// into the init itself instead.
fn adapt_for_libcontainer(bundle: &Path) -> Result<(), HandlerError> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|e| err("reading config.json", e))?;
    if let Some(p) = spec.process_mut() {
        p.set_oom_score_adj(None);
    }
    berth_oci::compat::for_libcontainer(&mut spec);
    bind_cgroup_v1(&mut spec)?;
    spec.save(&path).map_err(|e| err("writing config.json", e))
}

/// libcontainer 0.7 mounts a cgroup v1 tree by reading `/proc/<its pid>`
/// in the host's procfs, which fails (or reads a stranger) when the
/// container joins the pod's PID namespace. On v1 hosts the `cgroup` mount
/// becomes what runc makes of it: a tmpfs with a read-only bind of the
/// container's own cgroup directory of each controller.
fn bind_cgroup_v1(spec: &mut Spec) -> Result<(), HandlerError> {
    use oci_spec::runtime::MountBuilder;
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("memory").is_dir() {
        return Ok(());
    }
    let Some(cg_path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) else {
        return Ok(());
    };
    let Some(mounts) = spec.mounts().clone() else {
        return Ok(());
    };
    let Some(at) = mounts
        .iter()
        .position(|m| m.typ().as_deref() == Some("cgroup"))
    else {
        return Ok(());
    };
    let dest = mounts[at].destination().clone();
    let mut controllers: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| err("listing /sys/fs/cgroup", e))?
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The hierarchies libcontainer creates the container's cgroup in.
        .filter(|n| {
            n.split(',').all(|c| {
                matches!(
                    c,
                    "cpu"
                        | "cpuacct"
                        | "cpuset"
                        | "memory"
                        | "devices"
                        | "freezer"
                        | "blkio"
                        | "pids"
                )
            })
        })
        .collect();
    controllers.sort();
    let mut new = vec![MountBuilder::default()
        .destination(&dest)
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec![
            "nosuid".into(),
            "noexec".into(),
            "nodev".into(),
            "mode=755".into(),
        ])
        .build()
        .map_err(|e| err("cgroup tmpfs mount", e))?];
    let rel = cg_path.strip_prefix("/").unwrap_or(&cg_path).to_path_buf();
    for c in controllers {
        new.push(
            MountBuilder::default()
                .destination(dest.join(&c))
                .typ("bind")
                .source(root.join(&c).join(&rel))
                .options(vec![
                    "rbind".into(),
                    "ro".into(),
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                ])
                .build()
                .map_err(|e| err("cgroup bind mount", e))?,
        );
    }
    let mut mounts = mounts;
    mounts.splice(at..=at, new);
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn run(path: &Path, root: &Path, args: &[&str]) -> Result<(), HandlerError> {
    let out = Command::new(path)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(&format!("running {}", path.display()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HandlerError(format!(
            "{} {}: {}",
            path.display(),
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn read_pid(file: &Path) -> Result<i32, HandlerError> {
    let text = std::fs::read_to_string(file).map_err(|e| err("reading the pid file", e))?;
    text.trim()
        .parse()
        .map_err(|_| HandlerError(format!("bad pid file {}: {text:?}", file.display())))
}

/// The last `error` message in a runc-style JSON log.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_string))
}

/// A listening socket an OCI runtime's `--console-socket` connects to, to
/// send the master of the terminal it created in the container. Removed
/// when dropped.
struct ConsoleSocket {
    /// Where it is.
    real: PathBuf,
    /// What the runtime is given: a short path through this process's
    /// descriptor of the directory (`sockaddr_un` takes 108 bytes).
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
    _dir: File,
}

impl ConsoleSocket {
    fn bind(real: &Path) -> Result<ConsoleSocket, HandlerError> {
        use std::os::fd::AsRawFd;
        let _ = std::fs::remove_file(real);
        let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(HandlerError(format!("bad socket path {}", real.display())));
        };
        let dir =
            File::open(parent).map_err(|e| err(&format!("opening {}", parent.display()), e))?;
        let through =
            |who: &str| PathBuf::from(format!("/proc/{who}/fd/{}", dir.as_raw_fd())).join(name);
        let listener = std::os::unix::net::UnixListener::bind(through("self"))
            .map_err(|e| err(&format!("binding {}", real.display()), e))?;
        Ok(ConsoleSocket {
            real: real.to_path_buf(),
            path: through(&std::process::id().to_string()),
            listener,
            _dir: dir,
        })
    }

    /// The master the runtime sent; it has exited, so its connection is
    /// waiting in the backlog or was never made.
    fn receive(self) -> Result<OwnedFd, HandlerError> {
        self.listener
            .set_nonblocking(true)
            .map_err(|e| err("console socket", e))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| err("the runtime sent no terminal", e))?;
        receive_master(&conn)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.real);
    }
}

/// The terminal master sent on `sock` by a process that has already sent
/// it (or died): never waits.
fn receive_master(sock: &std::os::unix::net::UnixStream) -> Result<OwnedFd, HandlerError> {
    use std::os::fd::AsFd;
    sock.set_nonblocking(true)
        .map_err(|e| err("console socket", e))?;
    let mut buf = [0u8; 256];
    let mut fds = Vec::new();
    match crate::fdpass::recv(sock.as_fd(), &mut buf, &mut fds) {
        Ok(_) if !fds.is_empty() => Ok(fds.swap_remove(0)),
        Ok(_) => Err(HandlerError(
            "no terminal came with the console message".into(),
        )),
        Err(e) => Err(err("receiving the terminal", e)),
    }
}

/// `/dev/null` for stdin.
pub fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(File::open("/dev/null")?.into())
}
