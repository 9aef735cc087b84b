//! A server session against a small SPDY client written with the crate's
//! own codec, over an in-memory duplex pipe. The client behaves like
//! spdystream: odd stream ids, no WINDOW_UPDATE unless a test says so.

use berth_spdy::frame::{Data, Frame, FrameCodec, SynStream};
use berth_spdy::headers::{HeaderDecoder, HeaderEncoder};
use berth_spdy::{Config, GoAwayStatus, Headers, RstStatus, SendFlowControl, Session};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

const WAIT: Duration = Duration::from_secs(10);

struct Client {
    rd: FramedRead<ReadHalf<DuplexStream>, FrameCodec>,
    wr: FramedWrite<WriteHalf<DuplexStream>, FrameCodec>,
    enc: HeaderEncoder,
    dec: HeaderDecoder,
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        self.wr.send(frame).await.expect("client write");
    }

    async fn open(&mut self, id: u32, pairs: &[(&str, &str)], fin: bool) {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.append(*n, *v);
        }
        let header_block = self.enc.encode(&h).unwrap();
        self.send(Frame::SynStream(SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin,
            unidirectional: false,
            header_block,
        }))
        .await;
    }

    async fn data(&mut self, id: u32, bytes: &[u8], fin: bool) {
        self.send(Frame::Data(Data {
            stream_id: id,
            fin,
            data: Bytes::copy_from_slice(bytes),
        }))
        .await;
    }

    /// The next frame, `None` at EOF.
    async fn recv_any(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.rd.next())
            .await
            .expect("a frame in time")
            .map(|f| f.expect("a valid frame"))
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            match self.recv_any().await {
                Some(Frame::WindowUpdate { .. }) => continue,
                other => return other,
            }
        }
    }

    async fn expect_reply(&mut self, id: u32) -> Headers {
        match self.recv().await {
            Some(Frame::SynReply(r)) if r.stream_id == id => {
                self.dec.decode(&r.header_block).unwrap()
            }
            other => panic!("expected SYN_REPLY for {id}, got {other:?}"),
        }
    }

    async fn expect_rst(&mut self, stream_id: u32, status: RstStatus) {
        assert_eq!(
            self.recv().await,
            Some(Frame::RstStream { stream_id, status })
        );
    }

    async fn initial_window(&mut self, value: u32) {
        let entries = vec![berth_spdy::frame::Setting {
            flags: 0,
            id: berth_spdy::frame::setting::INITIAL_WINDOW_SIZE,
            value,
        }];
        self.send(Frame::Settings {
            clear: false,
            entries,
        })
        .await;
    }

    async fn grant(&mut self, stream_id: u32, delta: u32) {
        self.send(Frame::WindowUpdate { stream_id, delta }).await;
    }

    /// Reads DATA frames until `n` bytes came; returns how many did.
    async fn data_bytes(&mut self, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            match self.recv().await {
                Some(Frame::Data(d)) => got += d.data.len(),
                other => panic!("expected DATA, got {other:?}"),
            }
        }
        got
    }

    /// DATA of stream `id` until its FIN.
    async fn read_to_fin(&mut self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                Some(Frame::Data(d)) if d.stream_id == id => {
                    out.extend_from_slice(&d.data);
                    if d.fin {
                        return out;
                    }
                }
                other => panic!("expected DATA on {id}, got {other:?}"),
            }
        }
    }
}

fn pair(config: Config) -> (Session, berth_spdy::Incoming, Client) {
    let (server_io, client_io) = tokio::io::duplex(64 << 10);
    let (session, incoming) = Session::new(server_io, config);
    let (r, w) = tokio::io::split(client_io);
    let client = Client {
        rd: FramedRead::new(r, FrameCodec::default()),
        wr: FramedWrite::new(w, FrameCodec::default()),
        enc: HeaderEncoder::new(),
        dec: HeaderDecoder::default(),
    };
    (session, incoming, client)
}

/// The session ends without error and the client reads EOF.
async fn ends_cleanly(session: &Session, client: &mut Client) {
    tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("closed in time")
        .expect("an orderly end");
    assert_eq!(client.recv().await, None);
}

fn enforcing() -> Config {
    Config {
        send_flow_control: SendFlowControl::Enforce,
        ..Config::default()
    }
}

/// A session whose stream 1 is open: accepted, and its reply received.
async fn one_stream(config: Config) -> (Session, berth_spdy::Incoming, Client, berth_spdy::Stream) {
    let (session, mut incoming, mut client) = pair(config);
    client.open(1, &[], false).await;
    let stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    (session, incoming, client, stream)
}

async fn accept(incoming: &mut berth_spdy::Incoming) -> berth_spdy::Stream {
    let pending = tokio::time::timeout(WAIT, incoming.accept())
        .await
        .expect("a stream in time")
        .expect("a stream");
    pending.accept(Headers::new()).await.unwrap()
}

#[tokio::test]
async fn streams_carry_headers_and_data_both_ways_with_fin() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client
        .open(1, &[("streamtype", "stdin"), ("port", "80")], false)
        .await;
    let pending = incoming.accept().await.unwrap();
    assert_eq!(pending.id(), 1);
    assert_eq!(pending.headers().get("streamtype"), Some("stdin"));
    assert_eq!(pending.headers().get("port"), Some("80"));
    let mut stream = pending.accept(Headers::new()).await.unwrap();
    // kubelet replies with no headers.
    assert!(client.expect_reply(1).await.is_empty());

    client.data(1, b"hello ", false).await;
    client.data(1, b"world", true).await;
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello world");
    // EOF stays EOF.
    assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 0);

    // Half-closed: we may still write.
    stream.write_all(b"back").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"back");
    // Writing after FIN fails.
    assert!(stream.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn several_streams_are_independent() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    for id in [1, 3, 5] {
        client
            .open(id, &[("streamtype", &format!("s{id}"))], false)
            .await;
    }
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(accept(&mut incoming).await);
    }
    for id in [1, 3, 5] {
        client.expect_reply(id).await;
    }
    // Data arrives interleaved; each stream reads its own.
    for id in [5, 1, 3] {
        client.data(id, format!("to {id}").as_bytes(), true).await;
    }
    for s in &mut streams {
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, format!("to {}", s.id()));
        assert_eq!(
            s.headers().get("streamtype"),
            Some(&*format!("s{}", s.id()))
        );
    }
}

#[tokio::test]
async fn data_sent_before_the_reply_is_kept() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    client.data(1, b"early", true).await;
    let mut stream = accept(&mut incoming).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"early");
}

#[tokio::test]
async fn syn_stream_with_fin_is_half_closed_from_the_start() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[("streamtype", "error")], true).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    assert_eq!(stream.read(&mut [0; 4]).await.unwrap(), 0);
    stream.write_all(b"failed").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"failed");
}

#[tokio::test]
async fn peer_reset_fails_reads_and_writes() {
    let (_session, _incoming, mut client, mut stream) = one_stream(Config::default()).await;
    client
        .send(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        })
        .await;
    let err = stream.read(&mut [0; 4]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(err.to_string().contains("CANCEL"), "{err}");
    assert!(stream.write_all(b"x").await.is_err());
    // Frames for the gone stream are dropped without complaint.
    client.data(1, b"late", false).await;
    client.send(Frame::Ping { id: 7 }).await;
    assert_eq!(client.recv().await, Some(Frame::Ping { id: 7 }));
}

#[tokio::test]
async fn our_reset_reaches_the_peer() {
    let (_session, _incoming, mut client, mut stream) = one_stream(Config::default()).await;
    stream.reset(RstStatus::INTERNAL_ERROR);
    client.expect_rst(1, RstStatus::INTERNAL_ERROR).await;
    assert!(stream.write_all(b"x").await.is_err());
    assert!(stream.read(&mut [0; 1]).await.is_err());
}

#[tokio::test]
async fn refused_and_dropped_streams_are_reset() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    incoming
        .accept()
        .await
        .unwrap()
        .reset(RstStatus::REFUSED_STREAM);
    client.expect_rst(1, RstStatus::REFUSED_STREAM).await;
    // Dropping an unanswered stream refuses it as kubelet does: CANCEL.
    client.open(3, &[], false).await;
    drop(incoming.accept().await.unwrap());
    client.expect_rst(3, RstStatus::CANCEL).await;
    // Dropping an open stream that is not finished both ways cancels it.
    client.open(5, &[], false).await;
    let stream = accept(&mut incoming).await;
    client.expect_reply(5).await;
    drop(stream);
    client.expect_rst(5, RstStatus::CANCEL).await;
    // Nobody accepting any more: refused.
    drop(incoming);
    client.open(7, &[], false).await;
    client.expect_rst(7, RstStatus::REFUSED_STREAM).await;
}

#[tokio::test]
async fn stream_ids_must_be_odd_and_increasing() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.open(5, &[], false).await;
    let _five = accept(&mut incoming).await;
    client.expect_reply(5).await;
    for id in [3, 5, 8] {
        client.open(id, &[], false).await;
        client.expect_rst(id, RstStatus::PROTOCOL_ERROR).await;
    }
    // The session goes on.
    client.open(7, &[], false).await;
    assert_eq!(accept(&mut incoming).await.id(), 7);
}

#[tokio::test]
async fn pings_are_echoed_and_ours_are_answered() {
    let (session, _incoming, mut client) = pair(Config::default());
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Some(Frame::Ping { id: 1 }));
    // An even id is ours: not echoed (an unknown one is ignored).
    client.send(Frame::Ping { id: 4 }).await;
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.recv().await, Some(Frame::Ping { id: 3 }));

    let ping = tokio::spawn(async move {
        let rtt = session.ping().await;
        (session, rtt)
    });
    let Some(Frame::Ping { id }) = client.recv().await else {
        panic!("expected our PING");
    };
    assert_eq!(id % 2, 0);
    client.send(Frame::Ping { id }).await;
    let (_session, rtt) = ping.await.unwrap();
    rtt.unwrap();
}

#[tokio::test]
async fn settings_and_unknown_frames_are_tolerated() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.initial_window(1 << 20).await;
    // A NOOP and a CREDENTIAL frame, by hand.
    client
        .wr
        .get_mut()
        .write_all(b"\x80\x03\x00\x05\x00\x00\x00\x00")
        .await
        .unwrap();
    client
        .wr
        .get_mut()
        .write_all(b"\x80\x03\x00\x0a\x00\x00\x00\x02\x00\x00")
        .await
        .unwrap();
    client.open(1, &[], false).await;
    assert_eq!(accept(&mut incoming).await.id(), 1);
}

#[tokio::test]
async fn peer_goaway_ends_the_session_once_streams_finish() {
    let (session, mut incoming, mut client, mut stream) = one_stream(Config::default()).await;
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        })
        .await;
    assert!(incoming.accept().await.is_none());
    assert!(!session.is_closed());
    client.data(1, b"bye", true).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    stream.write_all(b"ok").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(client.read_to_fin(1).await, b"ok");
    ends_cleanly(&session, &mut client).await;
}

#[tokio::test]
async fn our_goaway_refuses_new_streams_and_drains() {
    let (session, mut incoming, mut client, mut stream) = one_stream(Config::default()).await;
    session.goaway();
    assert_eq!(
        client.recv().await,
        Some(Frame::GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::OK
        })
    );
    // Ignored: no reply, no stream.
    client.open(3, &[], false).await;
    assert!(incoming.accept().await.is_none());
    // The open stream still works; the queued data is written before the
    // connection closes.
    stream.write_all(&vec![7u8; 300 << 10]).await.unwrap();
    stream.shutdown().await.unwrap();
    client.data(1, b"", true).await;
    assert_eq!(client.read_to_fin(1).await.len(), 300 << 10);
    ends_cleanly(&session, &mut client).await;
}

#[tokio::test]
async fn close_resets_streams_sends_goaway_and_closes() {
    let (session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    client.open(3, &[], false).await;
    let mut one = accept(&mut incoming).await;
    let _three = accept(&mut incoming).await;
    client.expect_reply(1).await;
    client.expect_reply(3).await;
    session.close();
    let mut resets = Vec::new();
    loop {
        match client.recv().await {
            Some(Frame::RstStream { stream_id, status }) => {
                assert_eq!(status, RstStatus::CANCEL);
                resets.push(stream_id);
            }
            Some(Frame::GoAway {
                last_good_stream_id,
                status,
            }) => {
                assert_eq!((last_good_stream_id, status), (3, GoAwayStatus::OK));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    resets.sort();
    assert_eq!(resets, [1, 3]);
    assert_eq!(client.recv().await, None);
    tokio::time::timeout(WAIT, session.closed())
        .await
        .unwrap()
        .unwrap();
    assert!(one.read(&mut [0; 1]).await.is_err());
    assert!(one.write_all(b"x").await.is_err());
}

/// spdystream stops reading at a GOAWAY: a remote command's status,
/// written just before `close`, must come before it.
#[tokio::test]
async fn what_streams_wrote_before_close_precedes_the_goaway() {
    let (session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    let mut one = accept(&mut incoming).await;
    client.expect_reply(1).await;
    one.write_all(b"{\"status\":\"Success\"}").await.unwrap();
    one.shutdown().await.unwrap();
    drop(one);
    session.close();
    let mut seen = Vec::new();
    loop {
        match client.recv().await {
            Some(Frame::Data(d)) => seen.push(format!("data {} fin={}", d.data.len(), d.fin)),
            Some(Frame::RstStream { .. }) => seen.push("rst".into()),
            Some(Frame::GoAway { .. }) => {
                seen.push("goaway".into());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("data 20 fin=false"));
    assert_eq!(seen.last().map(String::as_str), Some("goaway"));
    assert!(seen.contains(&"data 0 fin=true".to_string()), "{seen:?}");
}

#[tokio::test]
async fn dropped_connection_ends_every_stream() {
    let (session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    client.open(3, &[], true).await;
    let mut one = accept(&mut incoming).await;
    let mut three = accept(&mut incoming).await;
    client.data(1, b"partial", false).await;
    // Let the data land before the connection goes.
    let mut buf = [0u8; 7];
    one.read_exact(&mut buf).await.unwrap();
    drop(client);
    let err = one.read(&mut [0; 8]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    // The stream the peer had finished reads EOF.
    assert_eq!(three.read(&mut [0; 8]).await.unwrap(), 0);
    assert!(one.write_all(b"x").await.is_err());
    assert!(three.write_all(b"x").await.is_err());
    assert!(incoming.accept().await.is_none());
    tokio::time::timeout(WAIT, session.closed())
        .await
        .unwrap()
        .unwrap();
    assert!(session.is_closed());
    assert!(session.ping().await.is_err());
}

#[tokio::test]
async fn dropping_every_handle_drops_the_connection() {
    let (session, incoming, mut client) = pair(Config::default());
    drop(session);
    drop(incoming);
    assert_eq!(client.recv_any().await, None);
}

/// Many megabytes each way without the client ever granting window, as
/// spdystream does: nothing may wait for a window.
#[tokio::test]
async fn large_transfers_never_wait_for_windows() {
    let (_session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[("streamtype", "stdout")], false).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    let payload: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        stream.write_all(&payload).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    let got = client.read_to_fin(1).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    let mut stream = writer.await.unwrap();

    // And the other way: 4 MiB in 32 KiB frames, as io.Copy writes them.
    let upload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 241) as u8).collect();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        got
    });
    for chunk in upload.chunks(32 << 10) {
        client.data(1, chunk, false).await;
    }
    client.data(1, b"", true).await;
    assert!(reader.await.unwrap() == upload);
    // Credit was returned (stream and session) even though unasked.
    let mut stream_credit = 0u64;
    let mut session_credit = 0u64;
    while let Ok(Some(Frame::WindowUpdate { stream_id, delta })) =
        tokio::time::timeout(Duration::from_millis(200), client.rd.next())
            .await
            .map(|f| f.map(Result::unwrap))
    {
        if stream_id == 0 {
            session_credit += u64::from(delta);
        } else {
            stream_credit += u64::from(delta);
        }
    }
    assert!(session_credit > 0, "no session WINDOW_UPDATE seen");
    assert!(stream_credit > 0, "no stream WINDOW_UPDATE seen");
}

/// A reader that does not keep up stops the session reading the socket:
/// the peer's writes back up instead of our memory growing.
#[tokio::test]
async fn a_slow_reader_pushes_back_on_the_peer() {
    let config = Config {
        stream_buffer: 64 << 10,
        ..Config::default()
    };
    let (_session, _incoming, mut client, mut stream) = one_stream(config).await;
    let total = 2 << 20;
    let send = tokio::spawn(async move {
        for _ in 0..total / (32 << 10) {
            client.data(1, &[1u8; 32 << 10], false).await;
        }
        client.data(1, b"", true).await;
        client
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!send.is_finished(), "2 MiB went into a 64 KiB buffer");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), total);
    send.await.unwrap();
}

/// A peer that stops reading stops our writers (bounded queue), rather
/// than our memory growing.
#[tokio::test]
async fn a_peer_that_does_not_read_stops_our_writers() {
    let (_session, _incoming, mut client, mut stream) = one_stream(Config::default()).await;
    let write = tokio::spawn(async move {
        stream.write_all(&vec![0u8; 8 << 20]).await.unwrap();
        stream
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished(), "8 MiB were accepted without a reader");
    client.data_bytes(8 << 20).await;
    write.await.unwrap();
}

/// `SendFlowControl::Enforce`: DATA waits for the peer's windows.
#[tokio::test]
async fn enforced_windows_wait_for_window_updates() {
    let (_session, _incoming, mut client, mut stream) = one_stream(enforcing()).await;
    let write = tokio::spawn(async move {
        stream.write_all(&vec![3u8; 200 << 10]).await.unwrap();
        stream.shutdown().await.unwrap();
        stream
    });
    let n = client.data_bytes(64 << 10).await;
    assert_eq!(n, 64 << 10, "the initial window is 64 KiB");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.rd.next())
            .await
            .is_err(),
        "nothing more before WINDOW_UPDATE"
    );
    // Stream window only: the session window still holds it back.
    client.grant(1, 1 << 20).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.rd.next())
            .await
            .is_err()
    );
    client.grant(0, 1 << 20).await;
    let rest = client.read_to_fin(1).await;
    assert_eq!(n + rest.len(), 200 << 10);
    write.await.unwrap();
}

#[tokio::test]
async fn settings_initial_window_moves_enforced_windows() {
    let (_session, _incoming, mut client, mut stream) = one_stream(enforcing()).await;
    // Session window first, so that only the stream window limits.
    client.grant(0, 1 << 20).await;
    client.initial_window(128 << 10).await;
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Some(Frame::Ping { id: 1 }));
    let write = tokio::spawn(async move {
        stream.write_all(&vec![3u8; 128 << 10]).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    assert_eq!(client.read_to_fin(1).await.len(), 128 << 10);
    write.await.unwrap();
}

#[tokio::test]
async fn protocol_errors_end_the_session_with_goaway() {
    for (name, bytes) in [
        (
            "bad version",
            &b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..],
        ),
        ("huge frame", &b"\x00\x00\x00\x01\x00\xff\xff\xff"[..]),
        (
            "bad header block",
            &b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00junk"[..],
        ),
    ] {
        let (session, _incoming, mut client) = pair(Config::default());
        client.wr.get_mut().write_all(bytes).await.unwrap();
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 0,
                status: GoAwayStatus::PROTOCOL_ERROR
            }),
            "{name}"
        );
        assert_eq!(client.recv().await, None, "{name}");
        let outcome = tokio::time::timeout(WAIT, session.closed()).await.unwrap();
        assert!(outcome.is_err(), "{name}");
    }
}

#[tokio::test]
async fn a_ping_flood_without_reading_is_cut_off() {
    let config = Config {
        max_pending_control: 16,
        ..Config::default()
    };
    let (server_io, client_io) = tokio::io::duplex(1024);
    let (session, _incoming) = Session::new(server_io, config);
    let (mut r, mut w) = tokio::io::split(client_io);
    let mut wire = bytes::BytesMut::new();
    for id in 0..100_000u32 {
        Frame::Ping { id: id * 2 + 1 }.encode(&mut wire).unwrap();
    }
    // Never read; write until the session gives up on us.
    let _ = tokio::time::timeout(WAIT, w.write_all(&wire)).await;
    let outcome = tokio::time::timeout(WAIT, session.closed()).await.unwrap();
    assert!(
        matches!(
            outcome.as_ref().map_err(|e| &**e),
            Err(berth_spdy::Error::ControlFlood(16))
        ),
        "{outcome:?}"
    );
    drop(r.read(&mut [0; 1]).await);
}

/// A reset (dropping a stream, `close`) comes after the data the stream
/// wrote before it, never ahead of it.
#[tokio::test]
async fn a_reset_never_overtakes_the_streams_data() {
    let (session, mut incoming, mut client) = pair(Config::default());
    client.open(1, &[], false).await;
    client.open(3, &[], false).await;
    let mut one = accept(&mut incoming).await;
    let mut three = accept(&mut incoming).await;
    one.write_all(&vec![1u8; 512 << 10]).await.unwrap();
    one.shutdown().await.unwrap();
    drop(one);
    three.write_all(&vec![3u8; 256 << 10]).await.unwrap();
    session.close();
    let (mut got, mut rst) = ([0usize; 4], [false; 4]);
    loop {
        match client.recv().await {
            Some(Frame::SynReply(_) | Frame::GoAway { .. }) => {}
            Some(Frame::Data(d)) => {
                let i = d.stream_id as usize;
                assert!(!rst[i], "DATA on {i} after its RST_STREAM");
                got[i] += d.data.len();
            }
            Some(Frame::RstStream { stream_id, status }) => {
                assert_eq!(status, RstStatus::CANCEL);
                rst[stream_id as usize] = true;
            }
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((got[1], got[3]), (512 << 10, 256 << 10));
    assert!(rst[1] && rst[3]);
}
