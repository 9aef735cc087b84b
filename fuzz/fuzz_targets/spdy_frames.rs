//! SPDY/3.1 frames and header blocks from a peer: decoding any bytes never
//! panics; a decoded frame encodes to bytes that decode to the same frame;
//! a header block that inflates and parses encodes (through a fresh zlib
//! context) to one that gives the same headers back.
#![no_main]

use berth_spdy::frame::{Frame, FrameCodec};
use berth_spdy::headers::{HeaderDecoder, HeaderEncoder, Headers};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Encode `headers` afresh and read them back.
fn round_trip_headers(headers: &Headers) {
    let raw = headers.to_block().expect("parsed headers are writable");
    assert_eq!(&Headers::from_block(&raw).unwrap(), headers);
    let block = HeaderEncoder::new().encode(headers).unwrap();
    let again = HeaderDecoder::default().decode(&block).unwrap();
    assert_eq!(&again, headers);
}

fuzz_target!(|data: &[u8]| {
    // As a frame stream, with one connection-wide inflate context.
    let mut codec = FrameCodec::new(64 << 10);
    let mut inflater = HeaderDecoder::new(64 << 10);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire).expect("a decoded frame fits");
        let again = FrameCodec::default()
            .decode(&mut wire)
            .unwrap()
            .expect("a whole frame");
        assert_eq!(again, frame);
        assert!(wire.is_empty());
        let block = match &frame {
            Frame::SynStream(s) => &s.header_block,
            Frame::SynReply(r) => &r.header_block,
            Frame::Headers(h) => &h.header_block,
            _ => continue,
        };
        if let Ok(headers) = inflater.decode(block) {
            round_trip_headers(&headers);
        }
    }
    // As one header block, compressed and not.
    if let Ok(headers) = HeaderDecoder::new(64 << 10).decode(data) {
        round_trip_headers(&headers);
    }
    if let Ok(headers) = Headers::from_block(data) {
        round_trip_headers(&headers);
    }
});
