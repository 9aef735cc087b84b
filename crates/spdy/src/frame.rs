//! The SPDY/3.1 framing layer: every frame's wire layout, parsed and
//! written byte for byte, and an incremental codec over a buffer.
//!
//! Every frame starts with 8 bytes. A control frame has the top bit set:
//!
//! ```text
//! |1| version (15) = 3 | type (16) | flags (8) | length (24) | payload |
//! ```
//!
//! and a data frame has it clear:
//!
//! ```text
//! |0| stream id (31) | flags (8) | length (24) | data |
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) stay compressed here:
//! they are a connection-wide zlib stream that only [`crate::headers`]
//! reads and writes, in wire order. Reserved bits (`X` in the spec) are
//! ignored when read and written as zero; flag bits the spec does not
//! define are ignored. Control frame types the spec does not define here
//! (NOOP = 5 of SPDY/2, CREDENTIAL = 10 of SPDY/3, anything newer) are
//! skipped whole, as the spec asks of receivers.
//!
//! The decoder never allocates from a length it has not bounded: a frame
//! longer than [`FrameCodec::max_frame_len`] is an error before any byte of
//! its payload is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

/// The only protocol version spoken (SPDY/3 and SPDY/3.1 both say 3).
pub const VERSION: u16 = 3;
/// Every frame's fixed header.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest payload the 24-bit length field can describe.
pub const MAX_PAYLOAD_LEN: usize = 0x00ff_ffff;
/// The decoder's default bound on a frame's payload: 1 MiB. Go clients
/// (spdystream) write one DATA frame per `Write` call, and `io.Copy`
/// writes 32 KiB at a time.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;

/// Control frame type codes.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    /// SPDY/2 only; skipped.
    pub const NOOP: u16 = 5;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
    /// SPDY/3 client certificates; skipped.
    pub const CREDENTIAL: u16 = 10;
}

/// `FLAG_FIN` of SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;
/// `FLAG_UNIDIRECTIONAL` of SYN_STREAM: the receiver may not send on it.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// `FLAG_SETTINGS_CLEAR_SETTINGS` of SETTINGS.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("control frame of unsupported SPDY version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("{kind} frame with a payload of {len} bytes, which its layout does not allow")]
    BadLength { kind: &'static str, len: usize },
    #[error("SETTINGS frame announces {count} entries in {len} bytes")]
    BadSettingsCount { count: u32, len: usize },
    /// Reading the transport failed (the codec's `Decoder` contract), or it
    /// ended inside a frame.
    #[error("reading frames: {1}")]
    Io(std::io::ErrorKind, String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.kind(), e.to_string())
    }
}

/// RST_STREAM status codes (a newtype so that codes this version does not
/// name still round-trip).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const FRAME_TOO_LARGE: Self = Self(11);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Debug for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// GOAWAY status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// SETTINGS ids.
pub mod setting {
    pub const UPLOAD_BANDWIDTH: u32 = 1;
    pub const DOWNLOAD_BANDWIDTH: u32 = 2;
    pub const ROUND_TRIP_TIME: u32 = 3;
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const CURRENT_CWND: u32 = 5;
    pub const DOWNLOAD_RETRANS_RATE: u32 = 6;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
    pub const CLIENT_CERTIFICATE_VECTOR_SIZE: u32 = 8;
}

/// One SETTINGS entry: flags (8 bits: 1 = persist value, 2 = persisted),
/// id (24 bits), value (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// SYN_STREAM: the peer opens a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    pub stream_id: u32,
    pub associated_to: u32,
    /// 0 (highest) to 7.
    pub priority: u8,
    pub slot: u8,
    pub fin: bool,
    pub unidirectional: bool,
    /// The compressed name/value block.
    pub header_block: Bytes,
}

/// SYN_REPLY: the answer to a SYN_STREAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynReply {
    pub stream_id: u32,
    pub fin: bool,
    pub header_block: Bytes,
}

/// HEADERS: further headers on an open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersFrame {
    pub stream_id: u32,
    pub fin: bool,
    pub header_block: Bytes,
}

/// A DATA frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub stream_id: u32,
    pub fin: bool,
    pub data: Bytes,
}

/// A SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream(SynStream),
    SynReply(SynReply),
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers(HeadersFrame),
    /// Stream id 0 is the session's window (SPDY/3.1).
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data(Data),
}

impl Frame {
    /// The frame's name as the spec spells it, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::SynStream(_) => "SYN_STREAM",
            Frame::SynReply(_) => "SYN_REPLY",
            Frame::RstStream { .. } => "RST_STREAM",
            Frame::Settings { .. } => "SETTINGS",
            Frame::Ping { .. } => "PING",
            Frame::GoAway { .. } => "GOAWAY",
            Frame::Headers(_) => "HEADERS",
            Frame::WindowUpdate { .. } => "WINDOW_UPDATE",
            Frame::Data(_) => "DATA",
        }
    }

    /// Appends the frame's bytes to `dst`. Fails only when the payload does
    /// not fit the 24-bit length field.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        let payload_len = self.payload_len();
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(FrameError::TooLarge {
                len: payload_len,
                max: MAX_PAYLOAD_LEN,
            });
        }
        dst.reserve(FRAME_HEADER_LEN + payload_len);
        let (kind, flags) = match self {
            Frame::Data(d) => {
                dst.put_u32(d.stream_id & STREAM_ID_MASK);
                put_flags_len(dst, fin_flag(d.fin), payload_len);
                dst.put_slice(&d.data);
                return Ok(());
            }
            Frame::SynStream(s) => (
                kind::SYN_STREAM,
                fin_flag(s.fin)
                    | if s.unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    },
            ),
            Frame::SynReply(r) => (kind::SYN_REPLY, fin_flag(r.fin)),
            Frame::Headers(h) => (kind::HEADERS, fin_flag(h.fin)),
            Frame::RstStream { .. } => (kind::RST_STREAM, 0),
            Frame::Settings { clear, .. } => {
                (kind::SETTINGS, if *clear { FLAG_CLEAR_SETTINGS } else { 0 })
            }
            Frame::Ping { .. } => (kind::PING, 0),
            Frame::GoAway { .. } => (kind::GOAWAY, 0),
            Frame::WindowUpdate { .. } => (kind::WINDOW_UPDATE, 0),
        };
        dst.put_u16(0x8000 | VERSION);
        dst.put_u16(kind);
        put_flags_len(dst, flags, payload_len);
        match self {
            Frame::SynStream(s) => {
                dst.put_u32(s.stream_id & STREAM_ID_MASK);
                dst.put_u32(s.associated_to & STREAM_ID_MASK);
                dst.put_u8((s.priority & 0x07) << 5);
                dst.put_u8(s.slot);
                dst.put_slice(&s.header_block);
            }
            Frame::SynReply(SynReply {
                stream_id,
                header_block,
                ..
            })
            | Frame::Headers(HeadersFrame {
                stream_id,
                header_block,
                ..
            }) => {
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(status.0);
            }
            Frame::Settings { entries, .. } => {
                dst.put_u32(entries.len() as u32);
                for e in entries {
                    dst.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    dst.put_u32(e.value);
                }
            }
            Frame::Ping { id } => dst.put_u32(*id),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                dst.put_u32(last_good_stream_id & STREAM_ID_MASK);
                dst.put_u32(status.0);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                dst.put_u32(stream_id & STREAM_ID_MASK);
                dst.put_u32(delta & STREAM_ID_MASK);
            }
            Frame::Data(_) => unreachable!("written above"),
        }
        Ok(())
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::SynStream(s) => 10 + s.header_block.len(),
            Frame::SynReply(r) => 4 + r.header_block.len(),
            Frame::Headers(h) => 4 + h.header_block.len(),
            Frame::Settings { entries, .. } => 4 + 8 * entries.len(),
            Frame::Ping { .. } => 4,
            Frame::RstStream { .. } | Frame::GoAway { .. } | Frame::WindowUpdate { .. } => 8,
            Frame::Data(d) => d.data.len(),
        }
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

fn put_flags_len(dst: &mut BytesMut, flags: u8, len: usize) {
    // `len` was checked against MAX_PAYLOAD_LEN by the caller.
    dst.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Parses one control frame's payload (the 8-byte header already read).
/// `Ok(None)`: a type this implementation skips.
fn parse_control(kind: u16, flags: u8, mut p: Bytes) -> Result<Option<Frame>, FrameError> {
    let len = p.len();
    let need = |name: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(FrameError::BadLength { kind: name, len })
        }
    };
    let frame = match kind {
        kind::SYN_STREAM => {
            need("SYN_STREAM", len >= 10)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            let associated_to = p.get_u32() & STREAM_ID_MASK;
            let priority = p.get_u8() >> 5;
            let slot = p.get_u8();
            Frame::SynStream(SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin: flags & FLAG_FIN != 0,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                header_block: p,
            })
        }
        kind::SYN_REPLY | kind::HEADERS => {
            let name = if kind == kind::SYN_REPLY {
                "SYN_REPLY"
            } else {
                "HEADERS"
            };
            need(name, len >= 4)?;
            let stream_id = p.get_u32() & STREAM_ID_MASK;
            let fin = flags & FLAG_FIN != 0;
            if kind == kind::SYN_REPLY {
                Frame::SynReply(SynReply {
                    stream_id,
                    fin,
                    header_block: p,
                })
            } else {
                Frame::Headers(HeadersFrame {
                    stream_id,
                    fin,
                    header_block: p,
                })
            }
        }
        kind::RST_STREAM => {
            need("RST_STREAM", len == 8)?;
            Frame::RstStream {
                stream_id: p.get_u32() & STREAM_ID_MASK,
                status: RstStatus(p.get_u32()),
            }
        }
        kind::SETTINGS => {
            need("SETTINGS", len >= 4)?;
            let count = p.get_u32();
            // Exactly 8 bytes an entry: the count is checked against the
            // length before anything is allocated from it.
            if u64::from(count) * 8 != p.len() as u64 {
                return Err(FrameError::BadSettingsCount { count, len });
            }
            let entries = (0..count)
                .map(|_| {
                    let flags_id = p.get_u32();
                    Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0x00ff_ffff,
                        value: p.get_u32(),
                    }
                })
                .collect();
            Frame::Settings {
                clear: flags & FLAG_CLEAR_SETTINGS != 0,
                entries,
            }
        }
        kind::PING => {
            need("PING", len == 4)?;
            Frame::Ping { id: p.get_u32() }
        }
        kind::GOAWAY => {
            need("GOAWAY", len == 8)?;
            Frame::GoAway {
                last_good_stream_id: p.get_u32() & STREAM_ID_MASK,
                status: GoAwayStatus(p.get_u32()),
            }
        }
        kind::WINDOW_UPDATE => {
            need("WINDOW_UPDATE", len == 8)?;
            Frame::WindowUpdate {
                stream_id: p.get_u32() & STREAM_ID_MASK,
                delta: p.get_u32() & STREAM_ID_MASK,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

/// The incremental frame codec: [`Decoder`] yields whole frames from a
/// growing buffer (`Ok(None)` until one is complete), [`Encoder`] appends
/// them. Header blocks are left compressed.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec that refuses frames whose payload exceeds `max_frame_len`
    /// (capped at the 24-bit maximum).
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.min(MAX_PAYLOAD_LEN),
        }
    }

    /// The largest payload accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if src.len() < FRAME_HEADER_LEN {
                return Ok(None);
            }
            let first = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
            let flags = src[4];
            let len = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
            let control = first & 0x8000_0000 != 0;
            if control {
                let version = ((first >> 16) & 0x7fff) as u16;
                if version != VERSION {
                    return Err(FrameError::UnsupportedVersion(version));
                }
            }
            if len > self.max_frame_len {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_frame_len,
                });
            }
            if src.len() < FRAME_HEADER_LEN + len {
                src.reserve(FRAME_HEADER_LEN + len - src.len());
                return Ok(None);
            }
            src.advance(FRAME_HEADER_LEN);
            let payload = src.split_to(len).freeze();
            if !control {
                return Ok(Some(Frame::Data(Data {
                    stream_id: first & STREAM_ID_MASK,
                    fin: flags & FLAG_FIN != 0,
                    data: payload,
                })));
            }
            if let Some(frame) = parse_control(first as u16, flags, payload)? {
                return Ok(Some(frame));
            }
            // An unknown or obsolete control type: skipped whole.
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    /// The frame written is exactly `wire`, and `wire` parses to the frame.
    fn check(frame: Frame, wire: &str) {
        let wire = hex(wire);
        let mut buf = BytesMut::new();
        frame.encode(&mut buf).unwrap();
        assert_eq!(buf.as_ref(), &wire[..], "{}", frame.name());
        assert_eq!(decode_all(&wire).unwrap(), vec![frame]);
    }

    #[test]
    fn syn_stream_layout() {
        check(
            Frame::SynStream(SynStream {
                stream_id: 5,
                associated_to: 3,
                priority: 2,
                slot: 0,
                fin: true,
                unidirectional: true,
                header_block: Bytes::from_static(b"\xaa\xbb"),
            }),
            // version 3, type 1 | flags FIN+UNI, length 12 | id 5 | assoc 3 |
            // priority 2 << 5 = 0x40, slot 0 | block
            "8003 0001  03 00000c  00000005  00000003  40 00  aabb",
        );
    }

    #[test]
    fn syn_reply_and_headers_layout() {
        check(
            Frame::SynReply(SynReply {
                stream_id: 1,
                fin: false,
                header_block: Bytes::from_static(b"\x01"),
            }),
            "8003 0002  00 000005  00000001  01",
        );
        check(
            Frame::Headers(HeadersFrame {
                stream_id: 7,
                fin: true,
                header_block: Bytes::new(),
            }),
            "8003 0008  01 000004  00000007",
        );
    }

    #[test]
    fn rst_stream_layout() {
        check(
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::CANCEL,
            },
            "8003 0003  00 000008  00000003  00000005",
        );
    }

    #[test]
    fn settings_layout() {
        check(
            Frame::Settings {
                clear: true,
                entries: vec![
                    Setting {
                        flags: 0,
                        id: setting::INITIAL_WINDOW_SIZE,
                        value: 0x0001_0000,
                    },
                    Setting {
                        flags: 1,
                        id: setting::MAX_CONCURRENT_STREAMS,
                        value: 100,
                    },
                ],
            },
            // 2 entries: flags (8) then id (24), then value
            "8003 0004  01 000014  00000002  00000007 00010000  01000004 00000064",
        );
    }

    #[test]
    fn ping_goaway_window_update_layout() {
        check(Frame::Ping { id: 2 }, "8003 0006  00 000004  00000002");
        check(
            Frame::GoAway {
                last_good_stream_id: 9,
                status: GoAwayStatus::PROTOCOL_ERROR,
            },
            "8003 0007  00 000008  00000009  00000001",
        );
        check(
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x8000,
            },
            "8003 0009  00 000008  00000000  00008000",
        );
    }

    #[test]
    fn data_layout() {
        check(
            Frame::Data(Data {
                stream_id: 0x0102_0304,
                fin: true,
                data: Bytes::from_static(b"hi"),
            }),
            "01020304  01 000002  6869",
        );
        check(
            Frame::Data(Data {
                stream_id: 1,
                fin: false,
                data: Bytes::new(),
            }),
            "00000001  00 000000",
        );
    }

    #[test]
    fn reserved_bits_and_unknown_flags_are_ignored() {
        // X bits set on stream ids, unknown flag 0x80, unused priority bits.
        let frames = decode_all(&hex("8003 0001  83 00000a  80000005  80000000  3f 07")).unwrap();
        assert_eq!(
            frames,
            vec![Frame::SynStream(SynStream {
                stream_id: 5,
                associated_to: 0,
                priority: 1,
                slot: 7,
                fin: true,
                unidirectional: true,
                header_block: Bytes::new(),
            })]
        );
    }

    #[test]
    fn unknown_and_obsolete_control_frames_are_skipped() {
        let frames = decode_all(&hex(
            // NOOP (5), CREDENTIAL (10) with a payload, type 0x00ff, then PING
            "8003 0005 00 000000  8003 000a 00 000003 010203  8003 00ff 00 000001 ff  8003 0006 00 000004 00000001",
        ))
        .unwrap();
        assert_eq!(frames, vec![Frame::Ping { id: 1 }]);
    }

    #[test]
    fn incremental_decoding_waits_for_whole_frames() {
        let wire = hex("8003 0006 00 000004 0000002a  00000001 00 000003 616263");
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire {
            buf.put_u8(b);
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Frame::Ping { id: 42 });
        assert!(matches!(&out[1], Frame::Data(d) if d.data.as_ref() == b"abc"));
    }

    #[test]
    fn bad_version_is_an_error() {
        assert_eq!(
            decode_all(&hex("8002 0006 00 000004 00000001")),
            Err(FrameError::UnsupportedVersion(2))
        );
        // An unknown type of another version too: the version comes first.
        assert_eq!(
            decode_all(&hex("8004 00ff 00 000000")),
            Err(FrameError::UnsupportedVersion(4))
        );
    }

    #[test]
    fn huge_lengths_are_refused_before_buffering() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&hex("00000001 00 ffffff")[..]);
        assert_eq!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: 0xff_ffff,
                max: 1024
            })
        );
        assert!(buf.capacity() < 4096);
    }

    #[test]
    fn wrong_fixed_lengths_are_errors() {
        for wire in [
            "8003 0003 00 000004 00000001",             // RST_STREAM too short
            "8003 0006 00 000008 00000001 00000000",    // PING too long
            "8003 0007 00 000004 00000001",             // GOAWAY of SPDY/2 size
            "8003 0009 00 000004 00000001",             // WINDOW_UPDATE short
            "8003 0001 00 000009 00000001 00000000 00", // SYN_STREAM short
            "8003 0002 00 000003 000000",               // SYN_REPLY short
            "8003 0008 00 000000",                      // HEADERS empty
            "8003 0004 00 000000",                      // SETTINGS without count
        ] {
            assert!(
                matches!(decode_all(&hex(wire)), Err(FrameError::BadLength { .. })),
                "{wire}"
            );
        }
    }

    #[test]
    fn settings_counts_must_match_the_length() {
        for wire in [
            "8003 0004 00 00000c 00000002 00000007 00010000", // 2 announced, 1 present
            "8003 0004 00 000004 ffffffff",                   // absurd count
            "8003 0004 00 00000d 00000001 00000007 00010000 00",
        ] {
            assert!(
                matches!(
                    decode_all(&hex(wire)),
                    Err(FrameError::BadSettingsCount { .. })
                ),
                "{wire}"
            );
        }
    }

    #[test]
    fn truncated_input_is_incomplete_not_an_error() {
        let wire = hex("8003 0003 00 000008 00000003 000000");
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(codec.decode(&mut buf), Ok(None));
        // And `decode_eof` says the stream ended inside a frame.
        assert!(codec.decode_eof(&mut buf).is_err());
    }

    #[test]
    fn oversized_payloads_are_not_written() {
        let frame = Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; MAX_PAYLOAD_LEN + 1]),
        });
        assert!(matches!(
            frame.encode(&mut BytesMut::new()),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
