//! The server side of SPDY/3.1, as Kubernetes streaming uses it.
//!
//! `kubectl exec/attach/port-forward`, `crictl` and kubelet's streaming
//! proxy upgrade an HTTP/1.1 request with `Upgrade: SPDY/3.1` (the
//! sub-protocol, e.g. `v4.channel.k8s.io`, is picked from the
//! `X-Stream-Protocol-Version` request headers in that HTTP handshake,
//! not inside SPDY), then open one SPDY stream per channel. This crate
//! takes the upgraded byte stream and serves it:
//!
//! - [`frame`]: every frame's layout and an incremental, bounded codec;
//! - [`headers`]: name/value blocks and their per-connection zlib streams;
//! - [`session`]: [`Session`], [`Incoming`], [`PendingStream`], [`Stream`].
//!
//! It knows nothing of Kubernetes: the remote-command and port-forward
//! protocols are built on top, reading the stream headers `streamtype`,
//! `port` and `requestid`.
//!
//! ```no_run
//! # async fn serve(io: tokio::net::TcpStream) {
//! use berth_spdy::{Config, Headers, Session};
//! use tokio::io::AsyncWriteExt;
//! let (session, mut incoming) = Session::new(io, Config::default());
//! while let Some(pending) = incoming.accept().await {
//!     let kind = pending.headers().get("streamtype").unwrap_or("").to_owned();
//!     let mut stream = pending.accept(Headers::new()).await.unwrap();
//!     if kind == "stdout" {
//!         stream.write_all(b"hello\n").await.unwrap();
//!         stream.shutdown().await.unwrap(); // FIN
//!     }
//! }
//! session.closed().await.ok();
//! # }
//! ```
//!
//! # What the peers actually do (moby/spdystream, k8s.io/apimachinery)
//!
//! Every Kubernetes client and kubelet's own server speak SPDY through
//! moby/spdystream and its framer (a copy of Go's old `go.net/spdy`).
//! Read from their source, the behaviour this crate matches:
//!
//! - **Flow control: none.** spdystream never sends WINDOW_UPDATE nor
//!   SETTINGS, and it never counts windows: it writes one DATA frame per
//!   `Write` call (so up to 32 KiB from `io.Copy`) whatever the window.
//!   WINDOW_UPDATE and SETTINGS frames it receives are parsed and then
//!   dropped as "unhandled". Its backpressure is its reading: each stream's
//!   DATA is handed over through an unbuffered channel, so a stream whose
//!   reader stalls stalls the frame worker, then (after a 50-frame queue)
//!   the whole connection's reading, and so TCP.
//!
//!   So this session (a) never waits for a send window by default
//!   ([`SendFlowControl::Ignore`]): a sender that honoured the 64 KiB
//!   initial window would stop forever against spdystream; writers are
//!   held back by a bounded write queue, i.e. by TCP; (b) never treats the
//!   peer overrunning our receive window as an error, but bounds what a
//!   stream buffers ([`Config::stream_buffer`]) and stops reading the
//!   socket beyond it, as spdystream does; (c) still returns receive
//!   credit with WINDOW_UPDATE (per stream and for the session, stream id
//!   0, each half window read), which spdystream ignores harmlessly and
//!   which keeps a real SPDY/3.1 peer from stalling.
//!   [`SendFlowControl::Enforce`] honours windows, WINDOW_UPDATE and
//!   SETTINGS_INITIAL_WINDOW_SIZE for peers known to send them.
//! - **Frame types.** spdystream's framer fails the whole connection on a
//!   control type it does not know (NOOP, CREDENTIAL, anything new), on a
//!   PING with flags or id 0, and on header names that repeat or are not
//!   lowercase. This server therefore only ever sends SYN_REPLY,
//!   RST_STREAM, PING, GOAWAY, WINDOW_UPDATE and DATA, with lowercase
//!   unique names. It does not check the version of incoming control
//!   frames; we do (3, else the connection ends with GOAWAY).
//! - **Stream ids.** Clients use odd ids from 1, servers even from 2. A
//!   SYN_STREAM whose id is not above the last one is answered with
//!   RST_STREAM PROTOCOL_ERROR (a stream error, not the session error the
//!   spec asks for); so here, and for even ids too. After GOAWAY,
//!   SYN_STREAMs are ignored.
//! - **Replies.** kubelet's server (apimachinery `httpstream/spdy`
//!   `newSpdyStream`) lets its handler look at the headers, then either
//!   sends SYN_REPLY with *no* headers and no FIN, or refuses with
//!   `Reset()`, which is RST_STREAM CANCEL. [`PendingStream::accept`] with
//!   empty [`Headers`] and dropping a [`PendingStream`] do the same. The
//!   client waits up to 30 s for that reply before it writes.
//! - **Priority** is only a local queueing hint in spdystream and its
//!   clients always send 0; it is reported ([`PendingStream::priority`])
//!   and otherwise ignored.
//! - **Closing a stream.** `Close()` sends an empty DATA frame with FIN
//!   (half-close: the other side may still send); a stream is gone once
//!   both FINs have passed. `Reset()` sends RST_STREAM CANCEL; RST closes
//!   both ways at once, and frames for a stream already gone are dropped
//!   silently (here too). [`Stream`]'s `shutdown` is FIN; dropping a
//!   stream not closed both ways resets it with CANCEL.
//! - **Closing the connection.** apimachinery's `Close()` resets every
//!   stream (CANCEL), sends GOAWAY (OK, last id received) and closes the
//!   socket once no stream is left: [`Session::close`]. On *receiving*
//!   GOAWAY spdystream stops reading and closes when its streams are done;
//!   here the session keeps reading the open streams and closes once none
//!   is left ([`Session::goaway`] does the same from our side). PINGs are
//!   echoed when their id's parity is the peer's ([`Session::ping`] sends
//!   ours, even).
#![deny(unsafe_code)]

pub mod frame;
pub mod headers;
pub mod session;

pub use frame::{GoAwayStatus, RstStatus};
pub use headers::Headers;
pub use session::{
    Config, Error, Incoming, PendingStream, SendFlowControl, Session, Stream, DEFAULT_WINDOW,
};
