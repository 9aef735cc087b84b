//! SPDY/3 name/value header blocks and their connection-wide compression.
//!
//! A block, before compression (all integers 32-bit big-endian):
//!
//! ```text
//! | number of pairs | name length | name | value length | value | ... |
//! ```
//!
//! Names are lowercase, non-empty and unique within a block; a name with
//! several values carries them joined by single NUL bytes (so a value
//! never starts or ends with NUL, nor holds two in a row); an empty value
//! is allowed on its own.
//!
//! Every block of a connection, in each direction, goes through one zlib
//! stream primed with the SPDY/3 dictionary ([`dictionary`]), and each
//! block ends with a SYNC_FLUSH so that it can be inflated on its own. The
//! state therefore lives as long as the connection: one [`HeaderDecoder`]
//! for what the peer sends, one [`HeaderEncoder`] for what we send, each
//! used in wire order. An error leaves the decoder unusable (the peer's
//! zlib stream is lost), which is a connection error for the session.
//!
//! Inflating is bounded: a block that inflates to more than the decoder's
//! limit is refused without the rest being produced, and counts read
//! from the block are checked against the bytes present before anything is
//! allocated from them.
//!
//! Kubernetes streaming (k8s.io/apimachinery remotecommand and
//! portforward) names its streams with the headers `streamtype` (`error`,
//! `stdin`, `stdout`, `stderr`, `resize` for exec/attach; `data`, `error`
//! for port-forward), `port` and `requestid` (port-forward).

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::LazyLock;

/// The default bound on an inflated header block: 256 KiB.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 256 << 10;

/// Why a header block could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block zlib stream: {0}")]
    Zlib(String),
    #[error("header block inflates to more than {max} bytes")]
    TooLarge { max: usize },
    #[error("header block is truncated")]
    Truncated,
    #[error("header block announces {0} pairs, more than its bytes can hold")]
    BadCount(u32),
    #[error("header block has {0} bytes after its last pair")]
    TrailingBytes(usize),
    #[error("header name {0:?} is empty or not lowercase")]
    BadName(String),
    #[error("header name {0:?} appears twice")]
    DuplicateName(String),
    #[error("header {0:?} has an empty value among several, or a value with NUL")]
    BadValue(String),
    #[error("header block holds text that is not UTF-8")]
    NotUtf8,
    #[error("the peer's header compression context was lost by an earlier error")]
    Broken,
}

/// The name/value pairs of a SYN_STREAM, SYN_REPLY or HEADERS frame, in
/// order. Names are stored lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<String>)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name` (compared without regard to ASCII case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// Every value of `name`.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// Adds a value to `name` (lowercased), after any it has.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = lowercase(name.into());
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => self.entries.push((name, vec![value])),
        }
    }

    /// Sets `name` (lowercased) to this one value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = lowercase(name.into());
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, vec![value.into()]));
    }

    /// The names with their values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// How many distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The uncompressed block. Fails on an empty name, on a value holding
    /// NUL, and on an empty value among several: the wire cannot say them.
    pub fn to_block(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::new();
        put_len(&mut out, self.entries.len())?;
        for (name, values) in &self.entries {
            if name.is_empty() {
                return Err(HeaderError::BadName(name.clone()));
            }
            if values.iter().any(|v| v.contains('\0'))
                || (values.len() > 1 && values.iter().any(String::is_empty))
            {
                return Err(HeaderError::BadValue(name.clone()));
            }
            put_len(&mut out, name.len())?;
            out.extend_from_slice(name.as_bytes());
            let value = values.join("\0");
            put_len(&mut out, value.len())?;
            out.extend_from_slice(value.as_bytes());
        }
        Ok(out)
    }

    /// Reads an uncompressed block, checking every rule of the spec.
    pub fn from_block(mut raw: &[u8]) -> Result<Self, HeaderError> {
        let count = take_u32(&mut raw)?;
        // Each pair takes at least its two 4-byte lengths.
        if u64::from(count) * 8 > raw.len() as u64 {
            return Err(HeaderError::BadCount(count));
        }
        let mut headers = Headers::default();
        for _ in 0..count {
            let name = take_str(&mut raw)?;
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(HeaderError::BadName(name));
            }
            if headers.entries.iter().any(|(n, _)| *n == name) {
                return Err(HeaderError::DuplicateName(name));
            }
            let value = take_str(&mut raw)?;
            let values: Vec<String> = value.split('\0').map(str::to_owned).collect();
            if values.len() > 1 && values.iter().any(String::is_empty) {
                return Err(HeaderError::BadValue(name));
            }
            headers.entries.push((name, values));
        }
        if !raw.is_empty() {
            return Err(HeaderError::TrailingBytes(raw.len()));
        }
        Ok(headers)
    }
}

fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), HeaderError> {
    let len = u32::try_from(len).map_err(|_| HeaderError::TooLarge {
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn take_u32(raw: &mut &[u8]) -> Result<u32, HeaderError> {
    let (head, rest) = raw.split_first_chunk::<4>().ok_or(HeaderError::Truncated)?;
    *raw = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(raw: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(raw)? as usize;
    if len > raw.len() {
        return Err(HeaderError::Truncated);
    }
    let (s, rest) = raw.split_at(len);
    *raw = rest;
    String::from_utf8(s.to_vec()).map_err(|_| HeaderError::NotUtf8)
}

/// The words of the SPDY/3 dictionary (section 2.6.10.1 of the draft),
/// each of which it holds behind a 4-byte big-endian length...
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// ...followed by this text, without lengths.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413",
    "414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut d = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        d.extend_from_slice(&(word.len() as u32).to_be_bytes());
        d.extend_from_slice(word.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
});

/// The SPDY/3 zlib dictionary (1423 bytes, Adler-32 `0xe3c6a7c2`).
pub fn dictionary() -> &'static [u8] {
    &DICTIONARY
}

/// Compresses the blocks we send: one per connection, used in wire order.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for HeaderEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderEncoder").finish_non_exhaustive()
    }
}

impl HeaderEncoder {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // Before the first byte, as zlib requires: it cannot fail then.
        z.set_dictionary(dictionary())
            .expect("a fresh deflate stream takes a dictionary");
        Self { z }
    }

    /// The compressed block for `headers`, ending in a SYNC_FLUSH.
    pub fn encode(&mut self, headers: &Headers) -> Result<Bytes, HeaderError> {
        let raw = headers.to_block()?;
        let mut input = &raw[..];
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            input = &input[(self.z.total_in() - before) as usize..];
            // Room left after all input: the flush is complete.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out.into());
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// Inflates the blocks the peer sends: one per connection, used in wire
/// order, bounded by `max` bytes a block.
pub struct HeaderDecoder {
    z: Decompress,
    max: usize,
    broken: bool,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecoder")
            .field("max", &self.max)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEADER_BLOCK)
    }
}

impl HeaderDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            z: Decompress::new(true),
            max,
            broken: false,
        }
    }

    /// Inflates and parses one block.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(block)?;
        Headers::from_block(&raw)
    }

    /// Inflates one block without parsing it. Any error here breaks the
    /// decoder for good.
    pub fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        if self.broken {
            return Err(HeaderError::Broken);
        }
        let result = self.inflate_inner(block);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn inflate_inner(&mut self, mut input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        // Room for one byte past the limit tells "too large" from "exactly".
        let limit = self.max.saturating_add(1);
        let mut out = Vec::with_capacity(limit.min(input.len().saturating_mul(4).max(256)));
        loop {
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let status = match self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(status) => status,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    Status::Ok
                }
                Err(e) => return Err(HeaderError::Zlib(e.to_string())),
            };
            let consumed = (self.z.total_in() - in_before) as usize;
            input = &input[consumed..];
            if out.len() > self.max {
                return Err(HeaderError::TooLarge { max: self.max });
            }
            let room = out.len() < out.capacity();
            if input.is_empty() && room {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                // The peer ended its zlib stream: later blocks cannot follow.
                return Err(HeaderError::Zlib(
                    "zlib stream ended inside a session".into(),
                ));
            }
            if room && consumed == 0 && out.len() == out_before && status != Status::Ok {
                return Err(HeaderError::Zlib("no progress inflating".into()));
            }
            if !room {
                let grow = out.capacity().max(256).min(limit - out.len());
                out.reserve_exact(grow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Headers {
        let mut h = Headers::new();
        h.append("StreamType", "stdout");
        h.append("port", "8080");
        h.append("port", "9090");
        h.insert("requestid", "");
        h
    }

    #[test]
    fn dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32, as zlib puts it in a stream's header (FDICT).
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in d {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn block_layout_is_exact() {
        let mut h = Headers::new();
        h.append("streamtype", "error");
        h.append("a", "1");
        h.append("a", "2");
        let expected: &[u8] = b"\x00\x00\x00\x02\
            \x00\x00\x00\x0astreamtype\x00\x00\x00\x05error\
            \x00\x00\x00\x01a\x00\x00\x00\x031\x002";
        assert_eq!(h.to_block().unwrap(), expected);
        assert_eq!(Headers::from_block(expected).unwrap(), h);
        assert_eq!(h.get("StreamType"), Some("error"));
        assert_eq!(h.get_all("a"), ["1", "2"]);
        // No pairs: just the count.
        assert_eq!(Headers::new().to_block().unwrap(), [0, 0, 0, 0]);
    }

    #[test]
    fn compressed_blocks_inflate_with_a_fresh_zlib_and_the_dictionary() {
        let mut enc = HeaderEncoder::new();
        let first = enc.encode(&sample()).unwrap();
        let second = enc.encode(&sample()).unwrap();
        // zlib header with FDICT (0x20 in FLG) and the dictionary's id.
        assert_eq!(first[0] & 0x0f, 8, "deflate method");
        assert_ne!(first[1] & 0x20, 0, "FDICT");
        assert_eq!(first[2..6], [0xe3, 0xc6, 0xa7, 0xc2]);
        // Every block ends with a SYNC_FLUSH marker.
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        assert!(second.ends_with(&[0, 0, 0xff, 0xff]));

        // An independent inflater driven by hand.
        let mut z = Decompress::new(true);
        let mut out = Vec::with_capacity(4096);
        let err = z
            .decompress_vec(&first, &mut out, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
        z.set_dictionary(dictionary()).unwrap();
        let done = z.total_in() as usize;
        z.decompress_vec(&first[done..], &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, sample().to_block().unwrap());
        out.clear();
        z.decompress_vec(&second, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, sample().to_block().unwrap());
    }

    #[test]
    fn decoder_follows_the_encoder_across_blocks() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::default();
        for i in 0..20 {
            let mut h = sample();
            h.insert("n", i.to_string());
            let block = enc.encode(&h).unwrap();
            assert_eq!(dec.decode(&block).unwrap(), h);
        }
    }

    #[test]
    fn bad_blocks_are_errors() {
        let cases: &[(&[u8], HeaderError)] = &[
            (b"\x00\x00", HeaderError::Truncated),
            (b"\xff\xff\xff\xff", HeaderError::BadCount(u32::MAX)),
            (
                b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00",
                HeaderError::BadCount(2),
            ),
            (
                b"\x00\x00\x00\x01\x00\x00\x00\x09a\x00\x00\x00\x00",
                HeaderError::Truncated,
            ),
            (
                b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01x",
                HeaderError::BadName(String::new()),
            ),
            (
                b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x01x",
                HeaderError::BadName("A".into()),
            ),
            (
                b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x00",
                HeaderError::DuplicateName("a".into()),
            ),
            (
                b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x02x\x00",
                HeaderError::BadValue("a".into()),
            ),
            (
                b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x01\xff",
                HeaderError::NotUtf8,
            ),
            (
                b"\x00\x00\x00\x00\x00",
                HeaderError::TrailingBytes(1),
            ),
        ];
        for (raw, err) in cases {
            assert_eq!(Headers::from_block(raw).as_ref(), Err(err), "{raw:?}");
        }
        let mut h = Headers::new();
        h.append("a", "x\0y");
        assert!(h.to_block().is_err());
        let mut h = Headers::new();
        h.append("a", "");
        h.append("a", "x");
        assert!(h.to_block().is_err());
    }

    #[test]
    fn inflating_is_bounded() {
        // 100 KiB of one value compresses to little; the decoder stops at 4 KiB.
        let mut h = Headers::new();
        h.append("big", "x".repeat(100 << 10));
        let block = HeaderEncoder::new().encode(&h).unwrap();
        assert!(block.len() < 1024);
        let mut dec = HeaderDecoder::new(4096);
        assert_eq!(dec.decode(&block), Err(HeaderError::TooLarge { max: 4096 }));
        // And it stays broken: its zlib stream is out of step.
        assert_eq!(dec.decode(&block), Err(HeaderError::Broken));
    }

    #[test]
    fn garbage_is_a_zlib_error() {
        let mut dec = HeaderDecoder::default();
        assert!(matches!(
            dec.decode(b"not zlib at all"),
            Err(HeaderError::Zlib(_))
        ));
        // A stream without the dictionary flag still inflates (zlib allows
        // it), but the block must then parse.
        let mut dec = HeaderDecoder::default();
        assert!(dec.decode(&[]).is_err());
    }
}
