//! Spawning helper processes that cannot outlive the test process.

use std::io;
use std::process::{Child, Command};

/// Spawns `cmd` so that it is killed if the test process dies without running
/// destructors (e.g. killed by a CI timeout).
///
/// On Linux this uses `PR_SET_PDEATHSIG`. That signal fires when the *thread*
/// that forked the child exits, so all spawns go through one dedicated thread
/// that lives as long as the process; otherwise a registry started by one
/// test thread and shared with others would die with the first thread.
pub(crate) fn spawn_bound_to_test(cmd: Command) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        linux::spawn(cmd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut cmd = cmd;
        cmd.spawn()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command};
    use std::sync::mpsc::{channel, Sender};
    use std::sync::OnceLock;

    type Job = (Command, Sender<io::Result<Child>>);

    pub(super) fn spawn(mut cmd: Command) -> io::Result<Child> {
        static SPAWNER: OnceLock<io::Result<Sender<Job>>> = OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("testkit-spawner".to_owned())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .map(|_| tx)
        });
        let spawner = match spawner {
            Ok(tx) => tx,
            Err(err) => return Err(io::Error::new(err.kind(), err.to_string())),
        };

        let die_with_test = || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, no pointers.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec and only makes the
        // async-signal-safe prctl(2) system call; it allocates nothing and
        // touches no state of the parent.
        unsafe {
            cmd.pre_exec(die_with_test);
        }
        let (reply_tx, reply_rx) = channel();
        spawner
            .send((cmd, reply_tx))
            .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| io::Error::other("testkit spawner thread is gone"))?
    }
}
