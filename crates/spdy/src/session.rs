//! A server-side SPDY/3.1 session over one upgraded connection.
//!
//! [`Session::new`] splits the connection and spawns one task that runs a
//! reader and a writer side by side:
//!
//! - the reader decodes frames, inflates header blocks in wire order,
//!   hands new streams to [`Incoming`], queues DATA into the streams'
//!   bounded buffers, answers PINGs and applies RST_STREAM, SETTINGS,
//!   WINDOW_UPDATE and GOAWAY;
//! - the writer takes frames from two queues and writes them in batches:
//!   a *control* queue (PING replies, RST_STREAM, GOAWAY, WINDOW_UPDATE)
//!   served first, and a bounded, ordered *stream* queue (SYN_REPLY,
//!   HEADERS, DATA) into which [`Stream`] writers put their frames. Header
//!   blocks are compressed as they are written, so in wire order.
//!
//! Memory is bounded by configuration, never by the peer: a stream buffers
//! at most [`Config::stream_buffer`] unread bytes (then the reader stops
//! reading the socket, and TCP pushes back on the peer); the stream queue
//! holds at most [`Config::write_queue`] frames of at most
//! [`Config::max_data_frame`] bytes (then writers wait, and a peer that
//! stops reading stops our writers); control frames the peer provokes
//! (PING replies, refusals) may pile up to [`Config::max_pending_control`],
//! beyond which the connection is dropped as a flood; window updates are
//! coalesced, one queued per stream at most.
//!
//! Closing the connection, for whatever reason, ends every stream: readers
//! get their buffered data, then an error (or EOF when the peer had
//! finished), writers fail, pending pings fail, and [`Session::closed`]
//! resolves. Dropping every handle (session, incoming, streams) drops the
//! connection.

use crate::frame::{
    setting, Data, Frame, FrameCodec, FrameError, GoAwayStatus, RstStatus, SynReply,
    DEFAULT_MAX_FRAME_LEN,
};
use crate::headers::{
    HeaderDecoder, HeaderEncoder, HeaderError, Headers, DEFAULT_MAX_HEADER_BLOCK,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, PollSender};

/// The initial stream and session windows of SPDY/3.1: 64 KiB.
pub const DEFAULT_WINDOW: u32 = 64 << 10;
/// The largest window SPDY allows.
const MAX_WINDOW: i64 = 0x7fff_ffff;
/// How long the writer may take to flush after the reader ended.
const LINGER: Duration = Duration::from_secs(1);
/// How many bytes the writer gathers before one write.
const WRITE_BATCH: usize = 256 << 10;

/// Whether our DATA waits for the peer's flow-control windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendFlowControl {
    /// Never wait for a window, as spdystream (and so kubelet's own
    /// server) does: its peers never send WINDOW_UPDATE, so a sender that
    /// waited would stop for good after 64 KiB. Backpressure comes from
    /// TCP instead.
    #[default]
    Ignore,
    /// SPDY/3.1 proper: a stream's DATA waits until both its window and the
    /// session's have room (WINDOW_UPDATE, SETTINGS_INITIAL_WINDOW_SIZE).
    /// Only for peers known to send WINDOW_UPDATE.
    Enforce,
}

/// A session's limits and behaviour. The defaults suit Kubernetes
/// streaming against spdystream clients.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest frame payload accepted (a larger one is a connection
    /// error).
    pub max_frame_len: usize,
    /// The largest inflated header block accepted.
    pub max_header_block: usize,
    /// Writes are cut into DATA frames of at most this many bytes.
    pub max_data_frame: usize,
    /// Unread bytes a stream may hold before the session stops reading.
    pub stream_buffer: usize,
    /// Stream frames (at most `max_data_frame` bytes each) queued for the
    /// writer before stream writers wait.
    pub write_queue: usize,
    /// Peer streams open at once; more are refused (REFUSED_STREAM).
    pub max_concurrent_streams: usize,
    /// New streams waiting in [`Incoming`] before the session stops reading.
    pub accept_backlog: usize,
    /// Control frames the peer provoked but has not yet let us write; more
    /// is taken for a flood and drops the connection.
    pub max_pending_control: usize,
    /// See [`SendFlowControl`].
    pub send_flow_control: SendFlowControl,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            max_data_frame: 32 << 10,
            stream_buffer: 1 << 20,
            write_queue: 32,
            max_concurrent_streams: 256,
            accept_backlog: 32,
            max_pending_control: 1024,
            send_flow_control: SendFlowControl::Ignore,
        }
    }
}

/// Why a session ended or an operation on it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY connection i/o: {0}")]
    Io(#[from] io::Error),
    #[error("SPDY framing: {0}")]
    Frame(#[from] FrameError),
    #[error("SPDY header block: {0}")]
    Header(#[from] HeaderError),
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    #[error("the peer provoked more than {0} control frames without reading them")]
    ControlFlood(usize),
    #[error("the SPDY connection is closed")]
    Closed,
}

/// Shared by every handle of a session.
struct Shared {
    config: Config,
    state: Mutex<SessionState>,
    ctrl_tx: mpsc::UnboundedSender<Control>,
    /// Control frames queued and not yet taken by the writer.
    ctrl_len: AtomicUsize,
    data_tx: mpsc::Sender<Outgoing>,
    /// Ends both loops at once.
    stop: CancellationToken,
    /// No more streams will be delivered (GOAWAY either way, or closed).
    no_more_streams: CancellationToken,
    outcome: watch::Sender<Option<Result<(), Arc<Error>>>>,
}

#[derive(Default)]
struct SessionState {
    streams: HashMap<u32, Arc<StreamShared>>,
    /// The highest stream id the peer opened (for ordering and GOAWAY).
    last_peer_id: u32,
    goaway_sent: bool,
    /// Close the connection once no stream is left.
    draining: bool,
    shutdown_queued: bool,
    closed: bool,
    /// Session receive credit not yet returned by WINDOW_UPDATE.
    recv_unacked: u32,
    recv_update_queued: bool,
    /// Send windows, counted only under [`SendFlowControl::Enforce`].
    send_window: i64,
    initial_send_window: i64,
    window_waiters: Vec<Waker>,
    next_ping: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
}

/// Frames served before stream frames.
enum Control {
    Frame(Frame),
    /// Return the receive credit gathered so far: a stream's, or the
    /// session's (`None`).
    WindowUpdate(Option<Arc<StreamShared>>),
    /// Write what is queued (stream frames too when `drain`), then close.
    Shutdown {
        drain: bool,
    },
}

/// Frames of a stream, in order.
enum Outgoing {
    Reply {
        stream: Arc<StreamShared>,
        headers: Headers,
    },
    Data {
        stream: Arc<StreamShared>,
        fin: bool,
        data: Bytes,
    },
}

/// One stream's state, shared by its handle and the session.
struct StreamShared {
    id: u32,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    recv: VecDeque<Bytes>,
    recv_buffered: usize,
    /// The peer sent FIN.
    recv_fin: bool,
    /// Receive credit not yet returned by WINDOW_UPDATE.
    recv_unacked: u32,
    recv_update_queued: bool,
    /// We sent FIN (or may never send: unidirectional).
    send_fin: bool,
    /// Reset by the peer (with its status) or by us.
    reset: Option<Reset>,
    conn_closed: bool,
    /// The application gave the stream up (dropped): incoming data is
    /// thrown away.
    abandoned: bool,
    send_window: i64,
    /// Frames of this stream in the write queue, not yet written.
    queued: usize,
    /// A reset to write once they are: a reset must not overtake the
    /// stream's own data (Go peers write synchronously, so theirs never do).
    rst_after_queued: Option<RstStatus>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The session's reader, waiting for buffer room.
    room_waker: Option<Waker>,
}

#[derive(Clone, Copy, Debug)]
enum Reset {
    ByPeer(RstStatus),
    ByUs(RstStatus),
}

impl StreamState {
    fn closed_both_ways(&self) -> bool {
        self.reset.is_some() || (self.send_fin && self.recv_fin)
    }

    fn wake_all(&mut self) {
        for w in [
            self.read_waker.take(),
            self.write_waker.take(),
            self.room_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }

    /// The application consumed `n` bytes: whether a WINDOW_UPDATE for
    /// the stream is due (half a window gathered, none queued).
    fn credit(&mut self, n: u32) -> bool {
        self.recv_unacked = self.recv_unacked.saturating_add(n);
        let due =
            self.recv_unacked >= DEFAULT_WINDOW / 2 && !self.recv_fin && !self.recv_update_queued;
        if due {
            self.recv_update_queued = true;
        }
        due
    }

    fn write_error(&self) -> Option<io::Error> {
        if let Some(reset) = self.reset {
            return Some(reset_error(reset));
        }
        if self.conn_closed {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            ));
        }
        if self.send_fin {
            return Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream already finished (FIN sent)",
            ));
        }
        None
    }
}

fn reset_error(reset: Reset) -> io::Error {
    match reset {
        Reset::ByPeer(status) => io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("SPDY stream reset by the peer: {status}"),
        ),
        Reset::ByUs(status) => io::Error::new(
            io::ErrorKind::NotConnected,
            format!("SPDY stream was reset: {status}"),
        ),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind;
    // carrying on is no worse than poisoning every handle.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Queues a control frame the application asked for.
    fn control(&self, c: Control) {
        self.ctrl_len.fetch_add(1, Ordering::Relaxed);
        // Fails only once the writer is gone: nothing to send then.
        let _ = self.ctrl_tx.send(c);
    }

    /// Queues a control frame the peer provoked, refusing floods.
    fn peer_control(&self, f: Frame) -> Result<(), Error> {
        let max = self.config.max_pending_control;
        if self.ctrl_len.load(Ordering::Relaxed) >= max {
            return Err(Error::ControlFlood(max));
        }
        self.control(Control::Frame(f));
        Ok(())
    }

    fn rst(&self, stream_id: u32, status: RstStatus) {
        self.control(Control::Frame(Frame::RstStream { stream_id, status }));
    }

    /// Resets a stream from our side: now, or after its queued frames.
    fn reset_stream(&self, stream: &StreamShared, s: &mut StreamState, status: RstStatus) {
        s.reset = Some(Reset::ByUs(status));
        s.recv.clear();
        s.recv_buffered = 0;
        s.wake_all();
        if s.queued > 0 {
            s.rst_after_queued = Some(status);
        } else {
            self.rst(stream.id, status);
        }
    }

    /// Forgets a stream that is closed both ways; ends a draining session
    /// whose last stream this was.
    fn forget(&self, id: u32) {
        let mut st = lock(&self.state);
        st.streams.remove(&id);
        self.maybe_finish_draining(&mut st);
    }

    fn maybe_finish_draining(&self, st: &mut SessionState) {
        if st.draining && st.streams.is_empty() && !st.shutdown_queued && !st.closed {
            st.shutdown_queued = true;
            self.control(Control::Shutdown { drain: true });
        }
    }

    /// Sends GOAWAY once: no new stream is accepted after it.
    fn send_goaway(&self, st: &mut SessionState, status: GoAwayStatus) {
        if !st.goaway_sent && !st.closed {
            st.goaway_sent = true;
            self.control(Control::Frame(Frame::GoAway {
                last_good_stream_id: st.last_peer_id,
                status,
            }));
        }
        self.no_more_streams.cancel();
    }

    /// The application consumed `n` bytes: the session's credit is
    /// returned once half a window has gathered.
    fn session_consumed(&self, n: u32) {
        let mut st = lock(&self.state);
        st.recv_unacked = st.recv_unacked.saturating_add(n);
        if st.recv_unacked >= DEFAULT_WINDOW / 2 && !st.recv_update_queued && !st.closed {
            st.recv_update_queued = true;
            self.control(Control::WindowUpdate(None));
        }
    }
}

/// Closes the connection when the last handle goes.
struct Liveness {
    stop: CancellationToken,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The application's handle on a session.
pub struct Session {
    shared: Arc<Shared>,
    outcome: watch::Receiver<Option<Result<(), Arc<Error>>>>,
    _live: Arc<Liveness>,
}

/// The streams the peer opens, in order (SYN_STREAM).
pub struct Incoming {
    rx: mpsc::Receiver<PendingStream>,
    shared: Arc<Shared>,
    _live: Arc<Liveness>,
}

impl Session {
    /// Starts serving `io`, which has already been upgraded to `SPDY/3.1`.
    /// Spawns the session's task on the current tokio runtime.
    pub fn new<T>(io: T, config: Config) -> (Session, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(config.write_queue.max(1));
        let (incoming_tx, incoming_rx) = mpsc::channel(config.accept_backlog.max(1));
        let (outcome_tx, outcome_rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            state: Mutex::new(SessionState {
                send_window: i64::from(DEFAULT_WINDOW),
                initial_send_window: i64::from(DEFAULT_WINDOW),
                next_ping: 2,
                ..SessionState::default()
            }),
            config,
            ctrl_tx,
            ctrl_len: AtomicUsize::new(0),
            data_tx,
            stop: stop.clone(),
            no_more_streams: CancellationToken::new(),
            outcome: outcome_tx,
        });
        let live = Arc::new(Liveness { stop });
        let (reader, writer) = tokio::io::split(io);
        let driver = Driver {
            shared: shared.clone(),
            live: Arc::downgrade(&live),
        };
        tokio::spawn(driver.run(reader, writer, ctrl_rx, data_rx, incoming_tx));
        (
            Session {
                shared: shared.clone(),
                outcome: outcome_rx,
                _live: live.clone(),
            },
            Incoming {
                rx: incoming_rx,
                shared,
                _live: live,
            },
        )
    }

    /// Sends GOAWAY: the peer's new streams are ignored from now on, and
    /// the connection closes once every open stream has finished.
    pub fn goaway(&self) {
        let mut st = lock(&self.shared.state);
        self.shared.send_goaway(&mut st, GoAwayStatus::OK);
        st.draining = true;
        self.shared.maybe_finish_draining(&mut st);
    }

    /// Closes now, as kubelet's server does: resets every open stream
    /// (CANCEL), sends GOAWAY and closes the connection. What streams wrote
    /// before is still written first (each reset follows its stream's
    /// data), as it would have been by Go's synchronous writes; a peer
    /// that does not read can hold that up, which [`abort`](Self::abort)
    /// cuts short.
    pub fn close(&self) {
        let mut st = lock(&self.shared.state);
        if st.closed || st.shutdown_queued {
            return;
        }
        for (_, stream) in st.streams.drain() {
            let mut s = lock(&stream.state);
            if s.reset.is_none() {
                self.shared.reset_stream(&stream, &mut s, RstStatus::CANCEL);
            }
        }
        self.shared.send_goaway(&mut st, GoAwayStatus::OK);
        st.shutdown_queued = true;
        self.shared.control(Control::Shutdown { drain: true });
    }

    /// Drops the connection at once, without writing anything more.
    pub fn abort(&self) {
        self.shared.stop.cancel();
    }

    /// Resolves when the connection has ended: `Ok` for an orderly end
    /// (EOF from the peer, [`close`](Self::close), [`goaway`](Self::goaway)
    /// drained), else what broke it.
    pub fn closed(&self) -> impl Future<Output = Result<(), Arc<Error>>> + Send + 'static {
        let mut rx = self.outcome.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
                Err(_) => Err(Arc::new(Error::Closed)),
            }
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Sends a PING (even id: ours) and waits for the peer's echo.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = lock(&self.shared.state);
            if st.closed {
                return Err(Error::Closed);
            }
            let id = st.next_ping;
            st.next_ping = if id >= 0x7fff_fffe { 2 } else { id + 2 };
            st.pings.insert(id, tx);
            id
        };
        let start = Instant::now();
        self.shared.control(Control::Frame(Frame::Ping { id }));
        rx.await.map_err(|_| Error::Closed)?;
        Ok(start.elapsed())
    }
}

impl Incoming {
    /// The next stream the peer opened, or `None` once no more can come
    /// (GOAWAY sent or received, connection closed).
    pub async fn accept(&mut self) -> Option<PendingStream> {
        tokio::select! {
            biased;
            s = self.rx.recv() => s,
            _ = self.shared.no_more_streams.cancelled() => self.rx.try_recv().ok(),
        }
    }
}

/// A stream the peer opened (SYN_STREAM) that awaits our answer:
/// [`accept`](Self::accept) replies (SYN_REPLY), [`reset`](Self::reset)
/// refuses. Dropping it refuses it with CANCEL, as kubelet does.
pub struct PendingStream {
    stream: Option<Stream>,
    unidirectional: bool,
}

impl PendingStream {
    pub fn id(&self) -> u32 {
        self.stream().id()
    }

    /// The SYN_STREAM's headers. Kubernetes names its streams with
    /// `streamtype`, and port-forward adds `port` and `requestid`.
    pub fn headers(&self) -> &Headers {
        self.stream().headers()
    }

    /// 0 (highest) to 7. spdystream clients always send 0.
    pub fn priority(&self) -> u8 {
        self.stream().priority
    }

    fn stream(&self) -> &Stream {
        self.stream.as_ref().expect("present until consumed")
    }

    /// Replies with SYN_REPLY and `headers` (kubelet sends none) and
    /// returns the open stream. Data the peer sent meanwhile is kept.
    pub async fn accept(mut self, headers: Headers) -> Result<Stream, Error> {
        let stream = self.stream.take().expect("present until consumed");
        if !self.unidirectional {
            lock(&stream.inner.state).queued += 1;
            stream
                .shared
                .data_tx
                .send(Outgoing::Reply {
                    stream: stream.inner.clone(),
                    headers,
                })
                .await
                .map_err(|_| Error::Closed)?;
        }
        Ok(stream)
    }

    /// Refuses the stream with RST_STREAM and `status`.
    pub fn reset(mut self, status: RstStatus) {
        if let Some(stream) = self.stream.take() {
            stream.reset(status);
        }
    }
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.reset(RstStatus::CANCEL);
        }
    }
}

/// An open stream: [`AsyncRead`] gives the peer's DATA (EOF on its FIN,
/// an error on RST_STREAM or when the connection ends before FIN);
/// [`AsyncWrite`] sends DATA frames, and `shutdown` sends FIN. Dropping a
/// stream that is not closed both ways resets it (CANCEL).
pub struct Stream {
    inner: Arc<StreamShared>,
    shared: Arc<Shared>,
    headers: Headers,
    priority: u8,
    sender: PollSender<Outgoing>,
    _live: Arc<Liveness>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.inner.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PendingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PendingStream").field(&self.stream).finish()
    }
}

impl Stream {
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The SYN_STREAM's headers (see [`PendingStream::headers`]).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Resets the stream (RST_STREAM with `status`): buffered data is
    /// dropped, reads and writes fail from now on. Does nothing on a
    /// stream already closed both ways.
    pub fn reset(&self, status: RstStatus) {
        {
            let mut s = lock(&self.inner.state);
            if s.closed_both_ways() || s.conn_closed {
                return;
            }
            self.shared.reset_stream(&self.inner, &mut s, status);
        }
        self.shared.forget(self.inner.id);
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        fin: bool,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = lock(&self.inner.state).write_error() {
            return Poll::Ready(Err(e));
        }
        if ready!(self.sender.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            )));
        }
        let enforce = self.shared.config.send_flow_control == SendFlowControl::Enforce;
        let mut session = enforce.then(|| lock(&self.shared.state));
        let mut s = lock(&self.inner.state);
        if let Some(e) = s.write_error() {
            self.sender.abort_send();
            return Poll::Ready(Err(e));
        }
        let mut n = buf.len().min(self.shared.config.max_data_frame.max(1));
        if let Some(session) = session.as_mut().filter(|_| !buf.is_empty()) {
            let room = s.send_window.min(session.send_window).max(0);
            n = n.min(usize::try_from(room).unwrap_or(usize::MAX));
            if n == 0 {
                self.sender.abort_send();
                s.write_waker = Some(cx.waker().clone());
                if !session
                    .window_waiters
                    .iter()
                    .any(|w| w.will_wake(cx.waker()))
                {
                    session.window_waiters.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            session.send_window -= n as i64;
            s.send_window -= n as i64;
        }
        if fin {
            s.send_fin = true;
        }
        s.queued += 1;
        let done = s.closed_both_ways();
        drop(s);
        drop(session);
        let frame = Outgoing::Data {
            stream: self.inner.clone(),
            fin,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        if self.sender.send_item(frame).is_err() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY connection closed",
            )));
        }
        if done {
            self.shared.forget(self.inner.id);
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut s = lock(&this.inner.state);
        if let Some(front) = s.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            if front.is_empty() {
                s.recv.pop_front();
            }
            s.recv_buffered -= n;
            if let Some(w) = s.room_waker.take() {
                w.wake();
            }
            // The session lock is never taken under a stream's.
            let n = n as u32;
            let update = s.credit(n);
            drop(s);
            if update {
                this.shared
                    .control(Control::WindowUpdate(Some(this.inner.clone())));
            }
            this.shared.session_consumed(n);
            return Poll::Ready(Ok(()));
        }
        if let Some(reset) = s.reset {
            return Poll::Ready(Err(reset_error(reset)));
        }
        if s.recv_fin {
            return Poll::Ready(Ok(()));
        }
        if s.conn_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "SPDY connection closed before the stream's FIN",
            )));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.get_mut().poll_send(cx, false, buf)
    }

    /// Stream frames are handed to the session's writer in order; there is
    /// nothing to flush per stream.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends FIN (an empty DATA frame with FLAG_FIN) once.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let s = lock(&this.inner.state);
            if s.send_fin && s.reset.is_none() {
                return Poll::Ready(Ok(()));
            }
        }
        ready!(this.poll_send(cx, true, &[]))?;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let unfinished = {
            let mut s = lock(&self.inner.state);
            s.abandoned = true;
            s.recv.clear();
            s.recv_buffered = 0;
            if let Some(w) = s.room_waker.take() {
                w.wake();
            }
            !s.closed_both_ways() && !s.conn_closed
        };
        if unfinished {
            self.reset(RstStatus::CANCEL);
        }
    }
}

/// The session's task: the reader and the writer.
struct Driver {
    shared: Arc<Shared>,
    live: Weak<Liveness>,
}

impl Driver {
    async fn run<R, W>(
        self,
        reader: R,
        writer: W,
        ctrl_rx: mpsc::UnboundedReceiver<Control>,
        data_rx: mpsc::Receiver<Outgoing>,
        incoming_tx: mpsc::Sender<PendingStream>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let shared = self.shared.clone();
        let read = async {
            let result = self.read_loop(reader, incoming_tx).await;
            match &result {
                Err(Error::Frame(_) | Error::Header(_) | Error::Protocol(_)) => {
                    let mut st = lock(&shared.state);
                    shared.send_goaway(&mut st, GoAwayStatus::PROTOCOL_ERROR);
                }
                Err(Error::ControlFlood(_)) => {
                    // It does not read: writing more would only wait.
                    shared.stop.cancel();
                }
                _ => {}
            }
            shared.control(Control::Shutdown { drain: false });
            // Give the writer a moment to say goodbye, then stop it.
            tokio::select! {
                _ = shared.stop.cancelled() => {}
                _ = tokio::time::sleep(LINGER) => shared.stop.cancel(),
            }
            result
        };
        let write = write_loop(&shared, writer, ctrl_rx, data_rx);
        let (read, write) = tokio::join!(read, write);
        let outcome = match (read, write) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(Arc::new(e)),
            (Ok(()), Ok(())) => Ok(()),
        };
        if let Err(e) = &outcome {
            tracing::debug!(error = %e, "SPDY session ended");
        }
        finish(&shared, outcome);
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        incoming_tx: mpsc::Sender<PendingStream>,
    ) -> Result<(), Error> {
        let shared = &self.shared;
        let mut frames = FramedRead::new(reader, FrameCodec::new(shared.config.max_frame_len));
        let mut headers = HeaderDecoder::new(shared.config.max_header_block);
        let mut incoming = Some(incoming_tx);
        loop {
            let frame = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return Ok(()),
                f = frames.next() => f,
            };
            let frame = match frame {
                None => return Ok(()),
                Some(Err(FrameError::Io(kind, message))) => {
                    return Err(Error::Io(io::Error::new(kind, message)))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Frame::SynStream(syn) => {
                    let raw = headers.inflate(&syn.header_block)?;
                    if let Some(pending) = self.open(&syn, &raw)? {
                        let Some(tx) = &incoming else {
                            continue;
                        };
                        let sent = tokio::select! {
                            r = tx.send(pending) => r,
                            _ = shared.stop.cancelled() => return Ok(()),
                        };
                        if let Err(refused) = sent {
                            // Nobody accepts streams any more.
                            incoming = None;
                            refused.0.reset(RstStatus::REFUSED_STREAM);
                        }
                    }
                }
                Frame::SynReply(r) => {
                    // We open no streams; keep the zlib stream in step.
                    headers.decode(&r.header_block)?;
                }
                Frame::Headers(h) => {
                    headers.decode(&h.header_block)?;
                    if h.fin {
                        self.peer_fin(h.stream_id);
                    }
                }
                Frame::Data(d) => self.data(d).await?,
                Frame::RstStream { stream_id, status } => self.peer_reset(stream_id, status),
                Frame::Settings { entries, .. } => {
                    for e in entries {
                        if e.id == setting::INITIAL_WINDOW_SIZE {
                            self.initial_window(e.value);
                        }
                    }
                }
                Frame::Ping { id } => {
                    if id % 2 == 1 {
                        shared.peer_control(Frame::Ping { id })?;
                    } else if let Some(tx) = lock(&shared.state).pings.remove(&id) {
                        let _ = tx.send(());
                    }
                }
                Frame::GoAway { .. } => {
                    let mut st = lock(&shared.state);
                    st.draining = true;
                    shared.no_more_streams.cancel();
                    shared.maybe_finish_draining(&mut st);
                }
                Frame::WindowUpdate { stream_id, delta } => self.window_update(stream_id, delta),
            }
        }
    }

    /// A SYN_STREAM: the stream to hand to the application, if any.
    fn open(
        &self,
        syn: &crate::frame::SynStream,
        raw: &[u8],
    ) -> Result<Option<PendingStream>, Error> {
        let shared = &self.shared;
        let id = syn.stream_id;
        let mut st = lock(&shared.state);
        if st.goaway_sent || st.draining {
            // After GOAWAY new streams are ignored (the spec's rule).
            return Ok(None);
        }
        if id == 0 {
            return Err(Error::Protocol("SYN_STREAM with stream id 0"));
        }
        if id % 2 == 0 || id <= st.last_peer_id {
            // spdystream answers an out-of-order id with this too.
            drop(st);
            shared.peer_control(Frame::RstStream {
                stream_id: id,
                status: RstStatus::PROTOCOL_ERROR,
            })?;
            return Ok(None);
        }
        st.last_peer_id = id;
        let refuse = |st: MutexGuard<'_, SessionState>, status| {
            drop(st);
            shared.peer_control(Frame::RstStream {
                stream_id: id,
                status,
            })
        };
        let Ok(headers) = Headers::from_block(raw) else {
            refuse(st, RstStatus::PROTOCOL_ERROR)?;
            return Ok(None);
        };
        let Some(live) = self.live.upgrade() else {
            refuse(st, RstStatus::REFUSED_STREAM)?;
            return Ok(None);
        };
        if st.streams.len() >= shared.config.max_concurrent_streams {
            refuse(st, RstStatus::REFUSED_STREAM)?;
            return Ok(None);
        }
        let inner = Arc::new(StreamShared {
            id,
            state: Mutex::new(StreamState {
                recv_fin: syn.fin,
                send_fin: syn.unidirectional,
                send_window: st.initial_send_window,
                ..StreamState::default()
            }),
        });
        st.streams.insert(id, inner.clone());
        drop(st);
        Ok(Some(PendingStream {
            stream: Some(Stream {
                inner,
                shared: shared.clone(),
                headers,
                priority: syn.priority,
                sender: PollSender::new(shared.data_tx.clone()),
                _live: live,
            }),
            unidirectional: syn.unidirectional,
        }))
    }

    fn stream(&self, id: u32) -> Option<Arc<StreamShared>> {
        lock(&self.shared.state).streams.get(&id).cloned()
    }

    async fn data(&self, d: Data) -> Result<(), Error> {
        let len = d.data.len();
        let Some(stream) = self.stream(d.stream_id) else {
            // A stream already closed or reset (frames cross on the wire),
            // or one never opened: dropped, as spdystream does. Its bytes
            // still count against the session window.
            self.shared.session_consumed(len as u32);
            return Ok(());
        };
        // Wait for room: this is where a reader that does not keep up
        // pushes back on the peer through TCP.
        let limit = self.shared.config.stream_buffer;
        let room = std::future::poll_fn(|cx| {
            let mut s = lock(&stream.state);
            if s.recv_buffered < limit || s.abandoned || s.reset.is_some() {
                Poll::Ready(())
            } else {
                s.room_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        tokio::select! {
            _ = room => {}
            _ = self.shared.stop.cancelled() => return Ok(()),
        }
        let done = {
            let mut s = lock(&stream.state);
            if s.abandoned || s.reset.is_some() || s.recv_fin {
                drop(s);
                self.shared.session_consumed(len as u32);
                return Ok(());
            }
            if len > 0 {
                s.recv.push_back(d.data);
                s.recv_buffered += len;
            }
            if d.fin {
                s.recv_fin = true;
            }
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            s.closed_both_ways()
        };
        if done {
            self.shared.forget(stream.id);
        }
        Ok(())
    }

    fn peer_fin(&self, id: u32) {
        let Some(stream) = self.stream(id) else {
            return;
        };
        let done = {
            let mut s = lock(&stream.state);
            s.recv_fin = true;
            if let Some(w) = s.read_waker.take() {
                w.wake();
            }
            s.closed_both_ways()
        };
        if done {
            self.shared.forget(id);
        }
    }

    fn peer_reset(&self, id: u32, status: RstStatus) {
        let Some(stream) = self.stream(id) else {
            return;
        };
        {
            let mut s = lock(&stream.state);
            s.reset = Some(Reset::ByPeer(status));
            s.recv.clear();
            s.recv_buffered = 0;
            s.wake_all();
        }
        self.shared.forget(id);
    }

    /// SETTINGS_INITIAL_WINDOW_SIZE: every stream's send window moves by
    /// the difference (SPDY/3.1 section 2.6.4).
    fn initial_window(&self, value: u32) {
        let value = i64::from(value).min(MAX_WINDOW);
        let mut st = lock(&self.shared.state);
        let delta = value - st.initial_send_window;
        st.initial_send_window = value;
        for stream in st.streams.values() {
            let mut s = lock(&stream.state);
            s.send_window = (s.send_window + delta).min(MAX_WINDOW);
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
    }

    fn window_update(&self, id: u32, delta: u32) {
        let delta = i64::from(delta);
        let mut st = lock(&self.shared.state);
        if id == 0 {
            st.send_window = (st.send_window + delta).min(MAX_WINDOW);
            for w in st.window_waiters.drain(..) {
                w.wake();
            }
        } else if let Some(stream) = st.streams.get(&id) {
            let mut s = lock(&stream.state);
            s.send_window = (s.send_window + delta).min(MAX_WINDOW);
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
    }
}

/// Takes frames from the queues and writes them, batched, until told to
/// shut down or stopped.
async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared,
    mut io: W,
    mut ctrl_rx: mpsc::UnboundedReceiver<Control>,
    mut data_rx: mpsc::Receiver<Outgoing>,
) -> Result<(), Error> {
    let mut enc = HeaderEncoder::new();
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        let mut shutdown = None;
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            Some(c) = ctrl_rx.recv() => {
                shared.ctrl_len.fetch_sub(1, Ordering::Relaxed);
                drain_before_goaway(&c, &mut data_rx, &mut enc, &mut buf)?;
                shutdown = encode_control(shared, c, &mut buf)?;
            }
            Some(d) = data_rx.recv() => encode_outgoing(&mut enc, d, &mut buf)?,
            else => return Ok(()),
        }
        while buf.len() < WRITE_BATCH && shutdown.is_none() {
            if let Ok(c) = ctrl_rx.try_recv() {
                shared.ctrl_len.fetch_sub(1, Ordering::Relaxed);
                drain_before_goaway(&c, &mut data_rx, &mut enc, &mut buf)?;
                shutdown = encode_control(shared, c, &mut buf)?;
            } else if let Ok(d) = data_rx.try_recv() {
                encode_outgoing(&mut enc, d, &mut buf)?;
            } else {
                break;
            }
        }
        if shutdown == Some(true) {
            // Everything the streams queued before the last one closed.
            while let Ok(d) = data_rx.try_recv() {
                encode_outgoing(&mut enc, d, &mut buf)?;
            }
        }
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            r = async {
                io.write_all(&buf).await?;
                io.flush().await?;
                if shutdown.is_some() {
                    io.shutdown().await?;
                }
                Ok::<_, io::Error>(())
            } => r?,
        }
        buf.clear();
        if shutdown.is_some() {
            shared.stop.cancel();
            return Ok(());
        }
    }
}

/// Before a GOAWAY, every stream frame already queued: spdystream stops
/// reading at a GOAWAY, so what follows it is lost (a remote command's
/// exit status among it).
fn drain_before_goaway(
    c: &Control,
    data_rx: &mut mpsc::Receiver<Outgoing>,
    enc: &mut HeaderEncoder,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    if matches!(c, Control::Frame(Frame::GoAway { .. })) {
        while let Ok(d) = data_rx.try_recv() {
            encode_outgoing(enc, d, buf)?;
        }
    }
    Ok(())
}

/// Returns `Some(drain)` for a shutdown request.
fn encode_control(shared: &Shared, c: Control, buf: &mut BytesMut) -> Result<Option<bool>, Error> {
    let frame = match c {
        Control::Frame(f) => f,
        Control::Shutdown { drain } => return Ok(Some(drain)),
        Control::WindowUpdate(Some(stream)) => {
            let mut s = lock(&stream.state);
            s.recv_update_queued = false;
            let delta = std::mem::take(&mut s.recv_unacked);
            if delta == 0 || s.recv_fin || s.reset.is_some() {
                return Ok(None);
            }
            Frame::WindowUpdate {
                stream_id: stream.id,
                delta,
            }
        }
        Control::WindowUpdate(None) => {
            let mut st = lock(&shared.state);
            st.recv_update_queued = false;
            let delta = std::mem::take(&mut st.recv_unacked);
            if delta == 0 {
                return Ok(None);
            }
            Frame::WindowUpdate {
                stream_id: 0,
                delta,
            }
        }
    };
    frame.encode(buf)?;
    Ok(None)
}

fn encode_outgoing(enc: &mut HeaderEncoder, d: Outgoing, buf: &mut BytesMut) -> Result<(), Error> {
    let (stream, frame) = match d {
        Outgoing::Reply { stream, headers } => {
            let frame = Frame::SynReply(SynReply {
                stream_id: stream.id,
                fin: false,
                header_block: enc.encode(&headers)?,
            });
            (stream, frame)
        }
        Outgoing::Data { stream, fin, data } => {
            let frame = Frame::Data(Data {
                stream_id: stream.id,
                fin,
                data,
            });
            (stream, frame)
        }
    };
    frame.encode(buf)?;
    let mut s = lock(&stream.state);
    s.queued -= 1;
    if s.queued == 0 {
        if let Some(status) = s.rst_after_queued.take() {
            Frame::RstStream {
                stream_id: stream.id,
                status,
            }
            .encode(buf)?;
        }
    }
    Ok(())
}

/// The connection is gone: every stream, ping and waiter learns it.
fn finish(shared: &Shared, outcome: Result<(), Arc<Error>>) {
    let streams: Vec<_> = {
        let mut st = lock(&shared.state);
        st.closed = true;
        st.pings.clear();
        for w in st.window_waiters.drain(..) {
            w.wake();
        }
        st.streams.drain().map(|(_, s)| s).collect()
    };
    for stream in streams {
        let mut s = lock(&stream.state);
        s.conn_closed = true;
        s.wake_all();
    }
    shared.no_more_streams.cancel();
    shared.stop.cancel();
    shared.outcome.send_replace(Some(outcome));
}
