//! Kubernetes' streaming protocols over SPDY/3.1 (`berth-spdy`): the
//! client opens one stream per channel, named by its `streamtype` header,
//! and waits for each reply before it opens the next.
//!
//! Remote command: the streams a session needs (error, then stdin, stdout,
//! stderr, resize, as the cached request asks) are accepted within
//! [`STREAM_CREATION_TIMEOUT`], then [`remotecommand::run`] joins them to
//! the process; the session ends as the kubelet's does: status written,
//! unfinished streams reset, GOAWAY, close.
//!
//! Port forward: an error stream and a data stream per connection of the
//! client, paired by `requestid`; each pair gets its own connection into
//! the pod. A failure is written on the error stream, then both streams
//! are reset (the client then drops the whole session, as with the
//! kubelet).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_spdy::{Config, Headers, Incoming, PendingStream, RstStatus, Session, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::cache::Pending;
use crate::portforward;
use crate::remotecommand::{self, Channels, Version, What};
use crate::{Backend, PortForwardRequest, Reader, Shared, Writer, STREAM_CREATION_TIMEOUT};

/// How long the status and the last output may take to leave once the
/// session is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve<S, B>(io: S, pending: Pending, version: Version, shared: Arc<Shared<B>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let (session, incoming) = Session::new(io, Config::default());
    // Dropped before its end (the stream idle for too long), the
    // connection goes at once, and with it everything it holds.
    let guard = AbortOnDrop(session);
    let session = &guard.0;
    match (
        pending.stdio(),
        remotecommand::start(&pending, &shared.backend),
    ) {
        (Some(io), Some((what, process))) => {
            let wants = Wants {
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
                resize: io.tty && version.resizes(),
            };
            remote_command(session, incoming, wants, version, what, process).await;
        }
        _ => {
            if let Pending::PortForward(r) = &pending {
                port_forward(session, incoming, r.clone(), shared.clone()).await;
            }
        }
    }
    session.close();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.closed()).await;
    drop(guard);
}

struct AbortOnDrop(Session);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The channels a remote-command session waits for (besides error).
#[derive(Debug, Clone, Copy)]
struct Wants {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

/// The streams of a remote-command session, as the client opened them.
#[derive(Default)]
struct Opened {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Opened {
    fn slot(&mut self, kind: &str, wants: Wants) -> Option<&mut Option<Stream>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" if wants.stdin => Some(&mut self.stdin),
            "stdout" if wants.stdout => Some(&mut self.stdout),
            "stderr" if wants.stderr => Some(&mut self.stderr),
            "resize" if wants.resize => Some(&mut self.resize),
            _ => None,
        }
    }

    fn complete(&self, wants: Wants) -> bool {
        self.error.is_some()
            && (!wants.stdin || self.stdin.is_some())
            && (!wants.stdout || self.stdout.is_some())
            && (!wants.stderr || self.stderr.is_some())
            && (!wants.resize || self.resize.is_some())
    }
}

fn reader(s: Stream) -> Reader {
    Box::pin(s)
}

fn writer(s: Stream) -> Writer {
    Box::pin(s)
}

async fn remote_command(
    session: &Session,
    mut incoming: Incoming,
    wants: Wants,
    version: Version,
    what: What,
    process: impl std::future::Future<Output = Result<crate::Process, String>>,
) {
    let mut opened = Opened::default();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !opened.complete(wants) {
        let next = tokio::time::timeout_at(deadline, incoming.accept()).await;
        let Ok(Some(stream)) = next else {
            tracing::info!("timed out waiting for the client to create streams");
            return;
        };
        let kind = stream.headers().get("streamtype").unwrap_or("").to_string();
        match opened.slot(&kind, wants) {
            Some(slot) if slot.is_none() => match stream.accept(Headers::new()).await {
                Ok(s) => *slot = Some(s),
                Err(_) => return,
            },
            // Unknown, unwanted or repeated: refused.
            _ => {
                tracing::debug!(streamtype = %kind, "refusing a stream");
                stream.reset(RstStatus::CANCEL);
            }
        }
    }
    let Some(error) = opened.error else {
        return;
    };
    // Version 1 clients never read the error stream.
    let error: Writer = if version == Version::V1 {
        error.reset(RstStatus::CANCEL);
        Box::pin(tokio::io::sink())
    } else {
        writer(error)
    };
    let gone = session.closed();
    let channels = Channels {
        stdin: opened.stdin.map(reader),
        stdout: opened.stdout.map(writer),
        stderr: opened.stderr.map(writer),
        resize: opened.resize.map(reader),
        error,
        gone: Box::pin(async move {
            let _ = gone.await;
        }),
    };
    // Streams still coming (none expected) are refused.
    tokio::spawn(async move { while incoming.accept().await.is_some() {} });
    remotecommand::run(process.await, channels, version, what).await;
}

/// What a port-forward stream says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    data: bool,
    port: u16,
    request: String,
}

/// Reads a stream's `streamtype`, `port` and `requestid` headers (a
/// missing request id is derived from the stream id, as the kubelet does).
fn named(id: u32, headers: &Headers) -> Result<Named, String> {
    let data = match headers.get("streamtype") {
        Some("data") => true,
        Some("error") => false,
        other => return Err(format!("invalid stream type {other:?}")),
    };
    let port = headers
        .get("port")
        .ok_or("the port header is missing")?
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("the port header is not a port")?;
    let request = match headers.get("requestid") {
        Some(r) => r.to_string(),
        None if data => id.saturating_sub(2).to_string(),
        None => id.to_string(),
    };
    Ok(Named {
        data,
        port,
        request,
    })
}

/// The two streams of one forwarded connection, as they arrive.
struct Pair {
    since: Instant,
    error: Option<Stream>,
    data: Option<(Stream, u16)>,
}

async fn port_forward<B: Backend>(
    session: &Session,
    mut incoming: Incoming,
    req: PortForwardRequest,
    shared: Arc<Shared<B>>,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let gone = session.closed();
    tokio::pin!(gone);
    loop {
        let stream: PendingStream = tokio::select! {
            next = incoming.accept() => match next {
                Some(s) => s,
                None => break,
            },
            _ = tick.tick() => {
                expire(&mut pairs).await;
                continue;
            }
            _ = &mut gone => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let n = match named(stream.id(), stream.headers()) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("refusing a port-forward stream: {e}");
                stream.reset(RstStatus::PROTOCOL_ERROR);
                continue;
            }
        };
        let Ok(accepted) = stream.accept(Headers::new()).await else {
            break;
        };
        let pair = pairs.entry(n.request.clone()).or_insert_with(|| Pair {
            since: Instant::now(),
            error: None,
            data: None,
        });
        let duplicate = if n.data {
            pair.data.replace((accepted, n.port)).is_some()
        } else {
            pair.error.replace(accepted).is_some()
        };
        if duplicate {
            let kind = if n.data { "data" } else { "error" };
            if let Some(mut e) = pairs.remove(&n.request).and_then(|p| p.error) {
                let text = format!(
                    "error processing stream for request {}: {kind} stream already assigned",
                    n.request
                );
                let _ = e.write_all(text.as_bytes()).await;
                e.reset(RstStatus::CANCEL);
            }
            continue;
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Some(Pair {
                error: Some(error),
                data: Some((data, port)),
                ..
            }) = pairs.remove(&n.request)
            else {
                continue;
            };
            let shared = shared.clone();
            let pod = req.pod_id.clone();
            forwards
                .spawn(async move { forward_pair(&shared.backend, &pod, port, data, error).await });
        }
    }
    // The client is gone: so is every connection it forwarded.
    forwards.shutdown().await;
}

/// Pairs still incomplete after [`STREAM_CREATION_TIMEOUT`] are dropped.
async fn expire(pairs: &mut HashMap<String, Pair>) {
    let old: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.since.elapsed() >= STREAM_CREATION_TIMEOUT)
        .map(|(k, _)| k.clone())
        .collect();
    for k in old {
        if let Some(mut e) = pairs.remove(&k).and_then(|p| p.error) {
            let text = format!("(request={k}) timed out waiting for streams");
            let _ = e.write_all(text.as_bytes()).await;
            e.reset(RstStatus::CANCEL);
        }
    }
}

async fn forward_pair<B: Backend>(
    backend: &B,
    pod: &str,
    port: u16,
    data: Stream,
    mut error: Stream,
) {
    let conn = match portforward::connect(backend, pod, port).await {
        Ok(c) => c,
        Err(e) => {
            let _ = error
                .write_all(portforward::error_message(port, pod, &e).as_bytes())
                .await;
            error.reset(RstStatus::CANCEL);
            data.reset(RstStatus::CANCEL);
            return;
        }
    };
    let (from, to) = tokio::io::split(data);
    match portforward::relay(conn, Box::pin(from), Box::pin(to)).await {
        Ok(()) => {
            let _ = error.shutdown().await;
        }
        Err(e) => {
            let _ = error
                .write_all(portforward::error_message(port, pod, &e).as_bytes())
                .await;
            error.reset(RstStatus::CANCEL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.append(*k, *v);
        }
        h
    }

    #[test]
    fn port_forward_stream_headers() {
        let h = headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "7")]);
        assert_eq!(
            named(3, &h),
            Ok(Named {
                data: true,
                port: 80,
                request: "7".into()
            })
        );
        let h = headers(&[("streamtype", "data"), ("port", "80")]);
        assert_eq!(named(5, &h).unwrap().request, "3");
        let h = headers(&[("streamtype", "error"), ("port", "80")]);
        assert_eq!(named(5, &h).unwrap().request, "5");
        for bad in [
            headers(&[("streamtype", "data"), ("port", "0")]),
            headers(&[("streamtype", "data"), ("port", "70000")]),
            headers(&[("streamtype", "data")]),
            headers(&[("streamtype", "stdout"), ("port", "80")]),
        ] {
            assert!(named(1, &bad).is_err());
        }
    }
}
