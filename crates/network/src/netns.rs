//! Persistent network namespaces, bind-mounted on a file (as `ip netns`
//! does) so that they outlive the thread that made them and can be handed
//! to CNI plugins and containers by path.

use std::fs;
use std::path::{Path, PathBuf};

/// A network namespace failure.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid network namespace name {0:?}")]
    Name(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NetNsError + 'a {
    move |source| NetNsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A network namespace pinned at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// Creates a new network namespace pinned at `dir/name`.
    pub fn create(dir: &Path, name: &str) -> Result<NetNs, NetNsError> {
        let path = mount_point(dir, name)?;
        let target = path.clone();
        // unshare(CLONE_NEWNET) moves only the calling thread: do it on a
        // thread of its own, which pins the namespace and then exits.
        // The thread also brings up `lo`, as the CNI loopback plugin would.
        let made = std::thread::spawn(move || -> std::io::Result<()> {
            unshare::new_net_namespace()?;
            crate::loopback::up_in_current_namespace()?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")));
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(io("create network namespace", &path)(e));
        }
        Ok(NetNs { path })
    }

    /// The namespace pinned at `path` (not checked).
    /// Pins an existing network namespace (`/proc/PID/ns/net` of a process
    /// that created it) on `dir/name`, so that it can be named to CNI and
    /// outlives that process.
    pub fn pin(dir: &Path, name: &str, source: &Path) -> Result<NetNs, NetNsError> {
        let path = mount_point(dir, name)?;
        if let Err(e) = rustix::mount::mount_bind(source, &path) {
            let _ = fs::remove_file(&path);
            return Err(io("bind-mount the network namespace on", &path)(e.into()));
        }
        let ns = NetNs { path };
        if let Err(e) = ns.loopback_up() {
            let _ = ns.remove();
            return Err(e);
        }
        Ok(ns)
    }

    /// Brings up `lo` inside the namespace, from a thread that enters it
    /// and exits.
    pub fn loopback_up(&self) -> Result<(), NetNsError> {
        let ns = fs::File::open(&self.path).map_err(io("open", &self.path))?;
        std::thread::spawn(move || -> std::io::Result<()> {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            crate::loopback::up_in_current_namespace()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("loopback thread panicked")))
        .map_err(io("bring up lo in", &self.path))
    }

    pub fn at(path: impl Into<PathBuf>) -> NetNs {
        NetNs { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if a namespace is mounted at the path.
    pub fn exists(&self) -> bool {
        // A pinned namespace is an nsfs mount: its inode differs from the
        // empty file's and it lives on the nsfs device.
        // `f_type` is i64 on x86_64 and narrower elsewhere.
        #[allow(clippy::unnecessary_cast)]
        match rustix::fs::statfs(&self.path) {
            Ok(st) => st.f_type as i64 == 0x6e73_6673, // NSFS_MAGIC
            Err(_) => false,
        }
    }

    /// Unmounts and removes the namespace file. Removing one that is already
    /// gone succeeds.
    pub fn remove(&self) -> Result<(), NetNsError> {
        match rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io("unmount", &self.path)(e.into())),
        }
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &self.path)(e)),
            _ => Ok(()),
        }
    }
}

/// The empty file `dir/name` a namespace is bind-mounted on.
fn mount_point(dir: &Path, name: &str) -> Result<PathBuf, NetNsError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(NetNsError::Name(name.to_string()));
    }
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io("create", &path))?;
    Ok(path)
}

#[allow(unsafe_code)]
mod unshare {
    /// Moves the calling thread into a new network namespace.
    pub(super) fn new_net_namespace() -> std::io::Result<()> {
        // SAFETY: only CLONE_NEWNET is unshared. The hazard `unshare_unsafe`
        // guards against is CLONE_FILES (a thread losing the shared fd
        // table); a new network namespace does not affect file descriptors
        // or memory, and this thread exits right after pinning it.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let ns = NetNs::create(d.path(), "pod1").unwrap();
        assert!(ns.exists());
        let mine = fs::read_link("/proc/self/ns/net").unwrap();
        let pinned = fs::metadata(ns.path()).unwrap();
        let own = fs::metadata("/proc/self/ns/net").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            pinned.ino(),
            own.ino(),
            "a new namespace, not ours ({mine:?})"
        );
        ns.remove().unwrap();
        assert!(!ns.exists());
        assert!(!ns.path().exists());
        ns.remove().unwrap();
        assert!(NetNs::create(d.path(), "../x").is_err());
    }

    /// `ip -o link show lo` inside the namespace at `path`.
    fn lo_in(path: &Path) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .expect("nsenter and ip (util-linux, iproute2)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn loopback_is_up_in_created_and_pinned_namespaces() {
        let d = tempfile::tempdir().unwrap();
        let ns = NetNs::create(d.path(), "pod1").unwrap();
        assert!(lo_in(ns.path()).contains(",UP,"), "{}", lo_in(ns.path()));

        // A namespace somebody else made (here: with lo down) gets lo up
        // when it is pinned.
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .unwrap();
        let source = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        for _ in 0..100 {
            if fs::read_link(&source).ok() != fs::read_link("/proc/self/ns/net").ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!lo_in(&source).contains(",UP,"));
        let pinned = NetNs::pin(d.path(), "pod2", &source).unwrap();
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(lo_in(pinned.path()).contains(",UP,"));
        // Up already: nothing to do, no error.
        pinned.loopback_up().unwrap();
        ns.remove().unwrap();
        pinned.remove().unwrap();
    }
}
