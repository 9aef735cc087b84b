//! The daemon: lock the root and the socket, open the stores, serve the CRI
//! on a unix socket, and shut down cleanly on SIGTERM/SIGINT.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_config::{Config, LogFormat};
use berth_cri::berth::v1::images_server::ImagesServer;
use berth_cri::runtime::v1::image_service_server::ImageServiceServer;
use berth_cri::runtime::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::image::Images;
use crate::runtime::Runtime;

/// Largest gRPC message accepted or sent (kubelet allows 16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is in use by another berth daemon{holder}; stop it first or pass another --root/--listen")]
    Locked {
        what: &'static str,
        path: PathBuf,
        holder: String,
    },
    #[error("socket {path} is in use by {holder}; stop it or pass another --listen")]
    SocketInUse { path: PathBuf, holder: String },
    #[error("socket_group {0:?} does not exist")]
    NoSuchGroup(String),
    #[error(transparent)]
    Config(#[from] berth_config::Error),
    #[error("opening the image store: {0}")]
    Images(#[from] berth_image::Error),
    #[error("opening the runtime state: {0}")]
    Runtime(#[from] berth_runtime::Error),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("starting the streaming server: {0}")]
    Streaming(#[from] berth_streaming::Error),
    #[error("metrics.address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Sets up `tracing` from the configuration's level and format.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .or_else(|_| tracing_subscriber::EnvFilter::try_new("info"))
        .expect("the info filter is valid");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// An exclusive advisory lock on a file, held while this value lives. The
/// file records the holder's pid so that a refused second daemon can say who.
struct PidLock {
    _file: File,
}

impl PidLock {
    fn acquire(path: &Path, what: &'static str) -> Result<PidLock, DaemonError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open lock file", path))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let holder = if pid.is_empty() {
                String::new()
            } else {
                format!(
                    " (pid {pid}{})",
                    comm(pid).map(|c| format!(", {c}")).unwrap_or_default()
                )
            };
            return Err(DaemonError::Locked {
                what,
                path: path.to_path_buf(),
                holder,
            });
        }
        file.set_len(0).map_err(io("truncate lock file", path))?;
        file.rewind().map_err(io("write lock file", path))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write lock file", path))?;
        Ok(PidLock { _file: file })
    }
}

fn comm(pid: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Which process has a listening unix socket bound at `path`, from
/// /proc/net/unix and /proc/*/fd.
fn socket_holder(path: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    let p = path.to_str()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 8 && cols[7] == p).then(|| cols[6].to_string())
    })?;
    let needle = format!("socket:[{inode}]");
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == needle.as_str()) {
                return Some(format!(
                    "pid {pid}{}",
                    comm(&pid).map(|c| format!(" ({c})")).unwrap_or_default()
                ));
            }
        }
    }
    None
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io("create directory", path))
}

/// Binds the CRI socket: refuses if a live process serves it, replaces a
/// stale file, and applies mode 0600 (0660 with `socket_group`).
fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, DaemonError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            let holder = socket_holder(path).unwrap_or_else(|| "another process".into());
            return Err(DaemonError::SocketInUse {
                path: path.to_path_buf(),
                holder,
            });
        }
        fs::remove_file(path).map_err(io("remove stale socket", path))?;
    }
    // Create the socket with no access for others from the first instant.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(io("bind", path))?;
    let mode = match group {
        Some(g) => {
            let grp = nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| DaemonError::NoSuchGroup(g.to_string()))?;
            nix::unistd::chown(path, None, Some(grp.gid))
                .map_err(|e| io("chown", path)(std::io::Error::from(e)))?;
            0o660
        }
        None => 0o600,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))?;
    Ok(listener)
}

/// Reaps zombie children nobody waits for: orphans re-parented to the
/// daemon (it is a child subreaper). Children the daemon spawned itself are
/// reaped by their owners right away, so only a zombie seen on two scans in
/// a row is taken.
async fn reap_orphans() {
    let me = std::process::id().to_string();
    let mut seen: std::collections::HashSet<i32> = Default::default();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let mut zombies = std::collections::HashSet::new();
        let Ok(task_children) = fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
            continue;
        };
        let mut children: Vec<i32> = task_children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        // Children of the runtime's other threads are listed per thread.
        if let Ok(tasks) = fs::read_dir(format!("/proc/{me}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                    children.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
                }
            }
        }
        for pid in children {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
            if state == Some("Z") {
                zombies.insert(pid);
            }
        }
        for pid in zombies.intersection(&seen) {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(*pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        seen = zombies;
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let socket = config.socket_path()?;
    make_dir(&config.root, 0o711)?;
    make_dir(&config.state, 0o711)?;
    if let Some(dir) = socket.parent() {
        make_dir(dir, 0o711)?;
    }
    let _root_lock = PidLock::acquire(&config.root.join("berth.lock"), "root directory")?;
    let mut socket_lock_path = socket.clone().into_os_string();
    socket_lock_path.push(".lock");
    let _socket_lock = PidLock::acquire(Path::new(&socket_lock_path), "socket")?;

    // Orphans of what the daemon starts (monitors, CNI plugins' children)
    // come back to it instead of to a PID 1 that may never reap them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
    tokio::spawn(reap_orphans());
    let settings = berth_image::Settings::from_config(&config)?;
    let images = berth_image::ImageService::open(&config.root.join("images"), settings).await?;
    let v1_records = std::sync::Arc::new(crate::convert::V1Records);
    let runtime = berth_runtime::Runtime::open(&config, images.clone(), v1_records).await?;
    // After the runtime has said which snapshots its containers use.
    images.garbage_collect().await?;
    let listener = bind_socket(&socket, config.socket_group.as_deref())?;
    tracing::info!(
        socket = %socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        "berth daemon serving CRI v1"
    );

    let streaming = berth_streaming::Server::start(
        berth_streaming::Config {
            address: std::net::SocketAddr::new(config.stream.address, config.stream.port),
            idle_timeout: config.stream.idle_timeout,
            tls: config
                .stream
                .tls_cert_file
                .clone()
                .zip(config.stream.tls_key_file.clone())
                .map(|(cert_file, key_file)| berth_streaming::Tls {
                    cert_file,
                    key_file,
                }),
        },
        crate::stream::StreamBackend {
            rt: runtime.clone(),
        },
    )
    .await?;
    let _metrics = match config.metrics.address {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            tracing::info!(address = %addr, "serving Prometheus metrics at /metrics");
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                listener,
                runtime.clone(),
                images.clone(),
            ))))
        }
        None => None,
    };
    let images = Images::new(images, runtime.clone());
    let runtime = Runtime::new(&config, runtime, streaming);
    let shutdown = async {
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight calls"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight calls"),
        }
    };
    let recorder = match &config.record_requests {
        Some(p) => Some(crate::record::Recorder::create(p).map_err(io("opening", p))?),
        None => None,
    };
    let served = tonic::transport::Server::builder()
        .layer(crate::deadline::DeadlineLayer)
        .layer(crate::record::RecordLayer::new(recorder))
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::new(images.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(ImagesServer::new(images))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = fs::remove_file(&socket);
    tracing::info!("berth daemon stopped");
    served.map_err(DaemonError::from)
}
