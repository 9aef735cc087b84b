//! `logs`: a container's CRI log file, as kubelet's `kubectl logs` shows it.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use berth_logs::{parse_line, Stream};
use clap::Args;

use crate::connect::Clients;
use crate::{ids, req, rpc, CliError, Global};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container (id or unique prefix).
    pub container: String,
    /// Keep printing what the container writes until it exits.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

/// One whole line (its `P` parts joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub time: String,
    pub stream: Stream,
    pub content: Vec<u8>,
}

/// Turns CRI records into whole lines; partial lines wait for their end.
#[derive(Default)]
pub struct Assembler {
    pending: [Option<Line>; 2],
    rest: Vec<u8>,
}

impl Assembler {
    /// Feeds raw file bytes; returns the lines they complete.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Line> {
        self.rest.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(nl) = self.rest.iter().position(|&b| b == b'\n') {
            let record: Vec<u8> = self.rest.drain(..=nl).collect();
            let Ok(r) = parse_line(&record[..record.len() - 1]) else {
                continue;
            };
            let slot = &mut self.pending[if r.stream == Stream::Stdout { 0 } else { 1 }];
            let line = slot.get_or_insert_with(|| Line {
                time: r.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                stream: r.stream,
                content: Vec::new(),
            });
            line.content.extend_from_slice(r.content);
            if !r.partial {
                out.push(slot.take().expect("just set"));
            }
        }
        out
    }

    /// The lines still waiting for their end (a stream that ended without
    /// a newline leaves its last line partial), oldest first.
    pub fn unfinished(&mut self) -> Vec<Line> {
        let mut rest: Vec<Line> = self.pending.iter_mut().filter_map(Option::take).collect();
        rest.sort_by(|a, b| a.time.cmp(&b.time));
        rest
    }
}

fn print(lines: impl IntoIterator<Item = Line>, timestamps: bool) {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for l in lines {
        let w: &mut dyn Write = if l.stream == Stream::Stdout {
            &mut out
        } else {
            &mut err
        };
        if timestamps {
            let _ = write!(w, "{} ", l.time);
        }
        let _ = w.write_all(&l.content);
        let _ = w.write_all(b"\n");
    }
    let _ = out.flush();
    let _ = err.flush();
}

async fn status(c: &mut Clients, g: &Global, id: &str) -> Result<cri::ContainerStatus, CliError> {
    c.runtime
        .container_status(req(
            cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            },
            g,
        ))
        .await
        .map_err(rpc("ContainerStatus"))?
        .into_inner()
        .status
        .ok_or_else(|| CliError::NotFound(format!("container {id} has no status")))
}

pub async fn logs(c: &mut Clients, g: &Global, a: LogsArgs) -> Result<(), CliError> {
    let id = ids::container(c, g, &a.container).await?;
    let st = status(c, g, &id).await?;
    if st.log_path.is_empty() {
        return Err(CliError::NotFound(format!(
            "container {id} has no log file (its pod has no log directory or it no log path)"
        )));
    }
    let path = std::path::PathBuf::from(&st.log_path);
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).map_err(|e| CliError::NotFound(format!("{}: {e}", p.display())))
    };
    let mut file = open(&path)?;
    let mut asm = Assembler::default();
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| CliError::Output(e.to_string()))?;
    let mut lines = asm.feed(&data);
    if !a.follow {
        lines.extend(asm.unfinished());
    }
    match a.tail {
        Some(n) => {
            let last: VecDeque<Line> = lines.into_iter().rev().take(n).collect();
            print(last.into_iter().rev(), a.timestamps);
        }
        None => print(lines, a.timestamps),
    }
    if !a.follow {
        return Ok(());
    }
    let mut inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
    let mut idle_polls = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut chunk = Vec::new();
        let _ = file.read_to_end(&mut chunk);
        if !chunk.is_empty() {
            idle_polls = 0;
            print(asm.feed(&chunk), a.timestamps);
            continue;
        }
        // Rotated (kubelet renamed it and the runtime reopened the path)?
        if let Ok(m) = std::fs::metadata(&path) {
            if m.ino() != inode {
                if let Ok(f) = open(&path) {
                    file = f;
                    inode = m.ino();
                    let _ = file.seek(SeekFrom::Start(0));
                    continue;
                }
            }
        }
        idle_polls += 1;
        if idle_polls % 5 == 0 {
            let st = status(c, g, &id).await?;
            if st.state != cri::ContainerState::ContainerRunning as i32 {
                let mut chunk = Vec::new();
                let _ = file.read_to_end(&mut chunk);
                print(asm.feed(&chunk), a.timestamps);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_records_join_and_streams_stay_apart() {
        let mut a = Assembler::default();
        let text = "2026-11-23T10:00:00.000000001Z stdout P hel\n\
                    2026-11-23T10:00:00.000000002Z stderr F oops\n\
                    2026-11-23T10:00:00.000000003Z stdout F lo\n\
                    2026-11-23T10:00:00.000000004Z stdout F \n\
                    2026-11-23T10:00:00.0000000";
        let lines = a.feed(text.as_bytes());
        let got: Vec<(Stream, String)> = lines
            .iter()
            .map(|l| (l.stream, String::from_utf8_lossy(&l.content).into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                (Stream::Stderr, "oops".to_string()),
                (Stream::Stdout, "hello".to_string()),
                (Stream::Stdout, String::new()),
            ]
        );
        assert_eq!(lines[1].time, "2026-11-23T10:00:00.000000001Z");
        // The cut record completes with the next read.
        let more = a.feed(b"05Z stdout F tail\n");
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].content, b"tail");
        // A stream that ended without a newline: its last record is P.
        assert!(a
            .feed(b"2026-11-23T10:00:00.000000006Z stderr P no end\n")
            .is_empty());
        let rest = a.unfinished();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            (rest[0].stream, &rest[0].content[..]),
            (Stream::Stderr, &b"no end"[..])
        );
        assert!(a.unfinished().is_empty());
    }
}
