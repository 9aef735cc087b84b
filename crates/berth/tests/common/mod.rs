//! Starts a real `berth daemon` on a temporary root and talks to it over its
//! unix socket, as kubelet and crictl do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A daemon process with its own root, state and socket.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub config: String,
}

impl Daemon {
    /// Starts a daemon with `config` (TOML) and waits for its socket.
    pub fn start(config: &str) -> Daemon {
        let mut dir = tempfile::Builder::new()
            .prefix("berth-it-")
            .tempdir()
            .unwrap();
        // BERTH_TEST_KEEP=1 keeps the daemon's directory for a post-mortem.
        if std::env::var_os("BERTH_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let mut d = Daemon {
            dir,
            child: None,
            config: String::new(),
        };
        // Pod networks stay in the test's directory, never in /etc/cni.
        let config = if config.contains("[cni]") {
            config.to_string()
        } else {
            format!("{config}\n[cni]\nconf_dir = \"{{dir}}/cni\"\n")
        };
        d.config = config.replace("{dir}", &d.dir.path().to_string_lossy());
        d.spawn();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("state/berth.sock")
    }
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
    /// The directory of unpacked layers.
    pub fn snapshots(&self) -> PathBuf {
        self.root().join("images/snapshots")
    }

    /// The command line to start another daemon on the same root.
    pub fn command(&self) -> Command {
        let cfg = self.dir.path().join("config.toml");
        std::fs::write(&cfg, &self.config).unwrap();
        let mut c = Command::new(BERTH);
        c.arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--listen")
            .arg(self.endpoint())
            .arg("--log-level")
            .arg("debug");
        c
    }

    /// (Re)starts the process and waits until it serves.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not serve within 30s:\n{}", self.log());
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    /// A client as the kubelet's: 16 MiB messages.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(channel(&self.socket()).await).max_decoding_message_size(16 << 20)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(channel(&self.socket()).await)
    }

    /// Runs `berth <args>` against this daemon.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().unwrap()
    }

    /// `berth <args>` against this daemon, to spawn.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BERTH);
        c.arg("--runtime-endpoint").arg(self.endpoint()).args(args);
        c
    }
}

impl Drop for Daemon {
    /// Also after a failed test: the daemon, then whatever its pods left
    /// (monitors, containers, mounts), so that one failure does not leak
    /// into the next tests.
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("BERTH_TEST_KEEP").is_some() {
            return;
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        for line in host_traces_of(&dir, None) {
            if let Some(pid) = line
                .strip_prefix("process ")
                .and_then(|r| r.split(':').next())
                .and_then(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Containers with a PID namespace of their own outlive a killed
        // monitor: kill what runs in their cgroups (named by container id,
        // under /berth or the kubelet's pod cgroups).
        let ids: Vec<String> = std::fs::read_dir(self.root().join("runtime/rootfs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            kill_container_cgroups(Path::new("/sys/fs/cgroup/memory"), &ids, 0);
        }
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// SIGKILLs the processes of every cgroup below `dir` named after one of
/// `ids` (a few levels deep: `kubepods/burstable/pod<uid>/<id>`).
fn kill_container_cgroups(dir: &Path, ids: &[String], depth: usize) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.contains(&name) {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        } else if depth < 3 && (depth > 0 || name == "berth" || name == "kubepods") {
            kill_container_cgroups(&e.path(), ids, depth + 1);
        }
    }
}

pub async fn channel(socket: &Path) -> Channel {
    let p = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

pub fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// PullImage with optional credentials.
pub async fn pull(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(cri::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

pub async fn status(c: &mut ImageServiceClient<Channel>, image: &str) -> Option<cri::Image> {
    c.image_status(cri::ImageStatusRequest {
        image: spec(image),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

pub async fn remove(c: &mut ImageServiceClient<Channel>, image: &str) {
    c.remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

/// Entries of the snapshot store other than committed snapshots (staging leftovers).
pub fn leftovers(daemon: &Daemon) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(daemon.snapshots()) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect()
}

/// Committed snapshots.
pub fn snapshot_count(daemon: &Daemon) -> usize {
    std::fs::read_dir(daemon.snapshots())
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// A bridge CNI network private to one test: its own bridge and subnet.
pub struct TestNetwork {
    pub bridge: String,
    pub conf_dir: PathBuf,
    /// The CNI network's name (portmap tags its iptables rules with it).
    pub name: String,
}

impl TestNetwork {
    /// Writes a bridge + host-local + portmap conflist under `dir/cni`.
    pub fn create(dir: &Path) -> TestNetwork {
        let n: u32 = rand::random();
        let bridge = format!("bt{:08x}", n);
        let subnet = format!("10.{}.{}.0/24", 100 + (n >> 24) % 100, (n >> 8) % 250);
        let conf_dir = dir.join("cni");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let name = format!("berth-test-{n:08x}");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": dir.join("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(conf_dir.join("10-test.conflist"), conf.to_string()).unwrap();
        TestNetwork {
            bridge,
            conf_dir,
            name,
        }
    }

    /// Interfaces attached to the bridge (the pods' host-side veths).
    pub fn veths(&self) -> Vec<String> {
        let dir = format!("/sys/class/net/{}/brif", self.bridge);
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestNetwork {
    /// Also after a failed test, whose pods never had CNI DEL: the bridge,
    /// and the hostPort rules portmap tagged with this network's name.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let rules = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let tag = format!("\\\"{}\\\"", self.name);
        let mut chains = Vec::new();
        for rule in rules.lines().filter(|l| l.contains(&tag)) {
            let Some(rest) = rule.strip_prefix("-A ") else {
                continue;
            };
            chains.extend(
                rest.split_whitespace()
                    .skip_while(|w| *w != "-j")
                    .nth(1)
                    .map(str::to_string),
            );
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -t nat -D {rest}"))
                .stderr(Stdio::null())
                .status();
        }
        for chain in chains.iter().filter(|c| c.starts_with("CNI-DN-")) {
            for args in [["-F", chain.as_str()], ["-X", chain.as_str()]] {
                let _ = Command::new("iptables")
                    .args(["-t", "nat"])
                    .args(args)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// What a daemon may leave behind on the host, for leak checks: mounts and
/// processes that mention its directory.
pub fn host_traces(d: &Daemon) -> Vec<String> {
    let dir = d.dir.path().to_string_lossy().into_owned();
    host_traces_of(&dir, d.child.as_ref().map(|c| c.id()))
}

fn host_traces_of(dir: &str, daemon_pid: Option<u32>) -> Vec<String> {
    let dir = dir.to_string();
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(|l| format!("mount: {l}"))
        .collect();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if Some(pid) == daemon_pid {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) {
            out.push(format!("process {pid}: {cmdline}"));
        }
        // A pod init's command line names nothing: it is the daemon's if
        // it was handed back to the daemon (the subreaper) or its parent
        // names the directory.
        if cmdline.starts_with("berth-pause") {
            let ppid = std::fs::read_to_string(e.path().join("status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse::<u32>().ok());
            let parent = ppid
                .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_default();
            if ppid.is_some() && (ppid == daemon_pid || parent.contains(&dir)) {
                out.push(format!("pod init {pid} of {ppid:?}"));
            }
        }
    }
    out
}
