//! Reading CRI log records (for `berth logs`).

use chrono::{DateTime, FixedOffset};

use crate::Stream;

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    /// A part of a longer line (`P`); the line ends with the next `F`.
    pub partial: bool,
    pub content: &'a [u8],
}

/// A line that is not a CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CRI log record: {0}")]
pub struct ParseError(&'static str);

/// Parses one line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Result<LogRecord<'_>, ParseError> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = parts.next().ok_or(ParseError("empty line"))?;
    let stream = parts.next().ok_or(ParseError("no stream"))?;
    let tag = parts.next().ok_or(ParseError("no tag"))?;
    // The content may be empty, but the space before it is always there.
    let content = parts.next().ok_or(ParseError("no space after the tag"))?;
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or(ParseError("bad timestamp"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError("unknown stream")),
    };
    // Tags may carry more flags after ':' in the future; the first is F or P.
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"F") => false,
        Some(b"P") => true,
        _ => return Err(ParseError("unknown tag")),
    };
    Ok(LogRecord {
        time,
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubelet_reads() {
        let r = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!(r.stream, Stream::Stdout);
        assert!(!r.partial);
        assert_eq!(r.content, b"log content 1");
        let r = parse_line(b"2016-10-06T00:17:09.669794203Z stderr P ").unwrap();
        assert!(r.partial);
        assert_eq!(r.content, b"");
        assert!(parse_line(b"2016-10-06T00:17:09Z stdout F").is_err());
        assert!(parse_line(b"yesterday stdout F x").is_err());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdin F x").is_err());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdout X x").is_err());
    }
}
