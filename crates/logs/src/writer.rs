//! Writing container output as CRI log records.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::Stream;

/// The longest record content before a line is cut into `P` parts
/// (containerd's default `max_container_log_line_size`).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

/// Turns the byte streams of a container's stdout and stderr into CRI log
/// records in one file. Output that does not end a line waits (per stream)
/// for the rest of the line, up to the line limit.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    max_line: usize,
    pending: [Vec<u8>; 2],
    record: Vec<u8>,
}

impl LogWriter {
    /// Opens (appending; creating with mode 0640) the log at `path`.
    pub fn open(path: &Path, max_line: usize) -> io::Result<LogWriter> {
        Ok(LogWriter {
            file: open(path)?,
            path: path.to_path_buf(),
            max_line: max_line.max(1),
            pending: [Vec::new(), Vec::new()],
            record: Vec::with_capacity(256),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes `data` read from `stream` at `now`, writing every record it completes.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: DateTime<Utc>) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = self.max_line - self.pending[stream.index()].len();
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= room => {
                    let (line, after) = rest.split_at(nl);
                    self.pending[stream.index()].extend_from_slice(line);
                    self.emit(stream, true, now)?;
                    rest = &after[1..];
                }
                _ if rest.len() < room => {
                    self.pending[stream.index()].extend_from_slice(rest);
                    rest = &[];
                }
                _ => {
                    // The line outgrows the limit: write what fits as a part.
                    let (part, after) = rest.split_at(room);
                    self.pending[stream.index()].extend_from_slice(part);
                    self.emit(stream, false, now)?;
                    rest = after;
                }
            }
        }
        Ok(())
    }

    /// At the end of a stream: what is left without a line ending is
    /// written as a partial (`P`) record, as containerd does: the line was
    /// never ended, and a reader joining records sees it unchanged.
    pub fn finish(&mut self, stream: Stream, now: DateTime<Utc>) -> io::Result<()> {
        if !self.pending[stream.index()].is_empty() {
            self.emit(stream, false, now)?;
        }
        Ok(())
    }

    /// Opens the path again (after kubelet renamed the file for rotation).
    /// Pending partial lines stay pending and go to the new file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open(&self.path)?;
        Ok(())
    }

    fn emit(&mut self, stream: Stream, full: bool, now: DateTime<Utc>) -> io::Result<()> {
        let mut content = std::mem::take(&mut self.pending[stream.index()]);
        if full && content.last() == Some(&b'\r') {
            content.pop();
        }
        self.record.clear();
        self.record
            .extend_from_slice(now.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
        self.record.push(b' ');
        self.record.extend_from_slice(stream.as_str().as_bytes());
        self.record
            .extend_from_slice(if full { b" F " } else { b" P " });
        self.record.extend_from_slice(&content);
        self.record.push(b'\n');
        content.clear();
        self.pending[stream.index()] = content;
        // One write per record: concurrent readers never see half a record.
        self.file.write_all(&self.record)
    }
}

fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_line;

    fn t(n: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, n).unwrap()
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn whole_lines_partial_writes_and_streams_interleaved() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, DEFAULT_MAX_LINE).unwrap();
        w.write(Stream::Stdout, b"hello\nwor", t(1)).unwrap();
        w.write(Stream::Stderr, b"oops\r\n", t(2)).unwrap();
        w.write(Stream::Stdout, b"ld\n\n", t(3)).unwrap();
        w.write(Stream::Stdout, b"no newline", t(4)).unwrap();
        w.finish(Stream::Stdout, t(5)).unwrap();
        w.finish(Stream::Stderr, t(5)).unwrap();
        assert_eq!(
            lines(&p),
            vec![
                "2026-11-18T11:06:40.000000001Z stdout F hello",
                "2026-11-18T11:06:40.000000002Z stderr F oops",
                "2026-11-18T11:06:40.000000003Z stdout F world",
                "2026-11-18T11:06:40.000000003Z stdout F ",
                "2026-11-18T11:06:40.000000005Z stdout P no newline",
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_into_parts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, 4).unwrap();
        w.write(Stream::Stdout, b"abcdefghij\nxy", t(0)).unwrap();
        w.write(Stream::Stdout, b"zw", t(0)).unwrap();
        w.write(Stream::Stdout, b"\n", t(0)).unwrap();
        let recs: Vec<_> = lines(&p)
            .iter()
            .map(|l| {
                let r = parse_line(l.as_bytes()).unwrap();
                (r.partial, String::from_utf8(r.content.to_vec()).unwrap())
            })
            .collect();
        assert_eq!(
            recs,
            vec![
                (true, "abcd".into()),
                (true, "efgh".into()),
                (false, "ij".into()),
                (true, "xyzw".into()),
                (false, "".into()),
            ]
        );
    }

    #[test]
    fn reopen_follows_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, DEFAULT_MAX_LINE).unwrap();
        w.write(Stream::Stdout, b"before\nhal", t(0)).unwrap();
        std::fs::rename(&p, d.path().join("0.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"f\n", t(0)).unwrap();
        assert_eq!(lines(&d.path().join("0.log.1")).len(), 1);
        let now = lines(&p);
        assert_eq!(now.len(), 1);
        assert!(now[0].ends_with("stdout F half"), "{now:?}");
    }
}
