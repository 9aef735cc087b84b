//! Terminals of streaming execs (and of containers with `tty`).
//!
//! As with runc, the terminal is created inside the container: a process
//! that has joined the container's mount namespace opens its
//! `/dev/ptmx` (the container's own devpts instance), sends the master to
//! the monitor over a unix socket and makes the slave its controlling
//! terminal and its stdio. The daemon then holds the master: what it writes
//! is the terminal's input, what it reads its output, and it sets the
//! window size on it ([`Master`]).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Opens a new terminal in the devpts instance of the current mount
/// namespace: (master, slave). Both are close-on-exec.
pub fn open() -> io::Result<(OwnedFd, OwnedFd)> {
    let master: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid pointer given.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; we own it.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Makes `slave` the controlling terminal of a new session of the calling
/// process. Called in a forked child before it executes its command.
pub fn become_session_leader(slave: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setsid has no memory effects.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a terminal's window size (columns, rows); the foreground process
/// group gets SIGWINCH.
pub fn resize(master: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer given.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A terminal's master side in the daemon, read and written without
/// blocking; clones share it.
#[derive(Clone)]
pub struct Master(Arc<AsyncFd<File>>);

impl Master {
    /// Takes a master received from a monitor. Needs a tokio runtime.
    pub fn new(master: OwnedFd) -> io::Result<Master> {
        rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK)?;
        // SAFETY: the AsyncFd owns the File, so its descriptor stays open
        // and the same for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register(File::from(master)) }.map_err(io::Error::from)?;
        Ok(Master(Arc::new(fd)))
    }

    /// Sets the window size (columns, rows); errors are only logged.
    pub fn resize(&self, width: u16, height: u16) {
        if let Err(e) = resize(self.0.get_ref().as_fd(), width, height) {
            tracing::debug!("resizing a terminal: {e}");
        }
    }
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = match self.0.poll_read_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match ready.try_io(|fd| (&mut fd.get_ref()).read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every slave descriptor is closed: the end of the output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = match self.0.poll_write_ready(cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => return Poll::Pending,
            };
            match ready.try_io(|fd| (&mut fd.get_ref()).write(data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A terminal has no half-close: its input ends with the session.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn what_the_slave_writes_the_master_reads_and_sizes_apply() {
        let (master, slave) = open().unwrap();
        std::fs::File::from(slave.try_clone().unwrap())
            .write_all(b"hi\n")
            .unwrap();
        let mut buf = [0u8; 16];
        let n = std::fs::File::from(master.try_clone().unwrap())
            .read(&mut buf)
            .unwrap();
        // The line discipline turns "\n" into "\r\n".
        assert_eq!(&buf[..n], b"hi\r\n");
        resize(master.as_fd(), 120, 40).unwrap();
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer.
        let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (120, 40));
    }
}
