//! The CRI container log format, as kubelet reads it:
//!
//! ```text
//! 2026-11-23T21:00:00.123456789Z stdout F a whole line
//! 2026-11-23T21:00:00.200000000Z stderr P the first 16 KiB of a long line…
//! 2026-11-23T21:00:00.200000001Z stderr F …and its end
//! ```
//!
//! One record per line: an RFC 3339 timestamp with nanoseconds (UTC, fixed
//! width), the stream, `F` for a full line or `P` for a part of a longer
//! one, a single space, and the content without its line ending (`\n` or
//! `\r\n`). Lines longer than the writer's limit are cut into `P` records.
//! The log path is the sandbox's `log_directory` joined with the
//! container's `log_path`; kubelet rotates by renaming the file and calling
//! ReopenContainerLog, which makes the writer open the path again.
#![deny(unsafe_code)]

mod reader;
mod writer;

pub use reader::{parse_line, LogRecord, ParseError};
pub use writer::{LogWriter, DEFAULT_MAX_LINE};

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The word used in the log file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}
