//! SIGCHLD as a readable pipe: the handler writes a byte to a self-pipe the
//! event loop waits on. tokio's signal driver would do the same, but its
//! registry keeps a watch channel for every signal number (SIGRTMAX of
//! them, ~20 kB of heap) in every monitor for its whole life; a monitor
//! only ever waits for this one signal.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use tokio::net::unix::pipe;

/// The write end of the self-pipe, for the handler (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // SAFETY: only async-signal-safe calls (errno access and write(2));
    // errno is restored so the interrupted code sees its own. A full pipe
    // (EAGAIN) already holds a pending wake-up, which is all that matters.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        let byte = 1u8;
        libc::write(fd, std::ptr::addr_of!(byte).cast(), 1);
        *errno = saved;
    }
}

/// Wakes up when a child changed state (one wake-up may stand for many).
pub struct ChildSignals {
    rx: pipe::Receiver,
}

impl ChildSignals {
    /// Installs the handler. Call once, from the event loop's thread.
    pub fn install() -> io::Result<ChildSignals> {
        let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
        let (r, w) = rustix::pipe::pipe_with(flags)?;
        let rx = pipe::Receiver::from_owned_fd(r)?;
        // The write end stays open for the process's life: the handler may
        // run at any moment.
        let old = WAKE_FD.swap(w.into_raw_fd(), Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: `old` came from an earlier install's into_raw_fd and
            // nothing else owns it.
            unsafe { libc::close(old) };
        }
        let action = SigAction::new(
            SigHandler::Handler(on_sigchld),
            SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
            SigSet::empty(),
        );
        // SAFETY: the handler only does async-signal-safe work.
        unsafe { sigaction(Signal::SIGCHLD, &action) }.map_err(io::Error::from)?;
        Ok(ChildSignals { rx })
    }

    /// Waits for the next SIGCHLD (returns at once if one came since the
    /// last call).
    pub async fn recv(&mut self) -> io::Result<()> {
        loop {
            self.rx.readable().await?;
            let mut drained = false;
            let mut buf = [0u8; 64];
            loop {
                match self.rx.try_read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => drained = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if drained {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_up_when_a_child_exits() {
        let mut signals = ChildSignals::install().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), signals.recv())
            .await
            .expect("SIGCHLD within 10 s")
            .unwrap();
        child.wait().unwrap();
        // Drained: no wake-up is pending any more.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), signals.recv()).await;
        assert!(pending.is_err(), "a stale wake-up was left in the pipe");
    }
}
