//! File descriptors sent over unix sockets (`SCM_RIGHTS`): a streaming
//! exec's stdio from the monitor to the daemon, and a terminal's master
//! from inside a container (or from an OCI runtime's `--console-socket`) to
//! the monitor.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Sends `data` with `fds` attached to its first byte. Returns how much of
/// `data` went out (the descriptors go with the first byte sent).
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(data)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)
}

/// Receives into `buf`; descriptors that came with it (close-on-exec) are
/// appended to `fds`. `Ok(0)` is the end of the stream.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let n = msg.bytes;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            for fd in got {
                // SAFETY: the kernel just installed `fd` in this process for
                // us; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(
            "more descriptors were sent than this side accepts",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_pipe_end_crosses_a_socket_and_still_works() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        assert_eq!(send(a.as_fd(), b"hello\n", &[w.as_fd()]).unwrap(), 6);
        drop(w);
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let n = recv(b.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 1);
        std::fs::File::from(fds.pop().unwrap())
            .write_all(b"through")
            .unwrap();
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "through");
    }

    #[test]
    fn no_descriptors_is_plain_data() {
        let (a, b) = UnixStream::pair().unwrap();
        send(a.as_fd(), b"x", &[]).unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        let mut fds = Vec::new();
        assert_eq!(recv(b.as_fd(), &mut buf, &mut fds).unwrap(), 1);
        assert!(fds.is_empty());
        assert_eq!(recv(b.as_fd(), &mut buf, &mut fds).unwrap(), 0);
    }
}
