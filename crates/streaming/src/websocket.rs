//! Kubernetes' channel framing over WebSocket.
//!
//! Every message is one channel's: its first byte is the channel number
//! and the rest the payload (binary messages), or, for the `base64.`
//! protocols, a text message of the channel as an ASCII digit followed by
//! the payload in base64. In `v5.channel.k8s.io` the client closes a
//! channel (stdin) with the two bytes `[255, channel]`.
//!
//! [`open`] turns a WebSocket into one reader per inbound channel and one
//! writer per outbound channel. The session ends (close code 1000) when
//! every outbound channel has been shut down, or when the client closes or
//! goes away: then every inbound channel reads its end, writes fail, and
//! `gone` resolves.

use std::collections::HashMap;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use std::sync::Arc;

use crate::cache::{Pending, Stdio};
use crate::remotecommand::{self, Channels, Version};
use crate::{Backend, Reader, Shared, Writer};

/// The remote-command channels.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// How much one channel buffers in each direction.
const BUFFER: usize = 64 * 1024;
/// The channel of the v5 close signal.
const CLOSE_CHANNEL: u8 = 255;

/// How a negotiated protocol frames channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// `[255, channel]` closes a channel.
    pub close_signal: bool,
}

/// One side of a session's channels.
pub struct Mux {
    pub readers: HashMap<u8, Reader>,
    pub writers: HashMap<u8, Writer>,
    /// Resolves when the client has gone.
    pub gone: oneshot::Receiver<()>,
    /// The relaying tasks, stopped (and the connection closed) when this is
    /// dropped.
    pub tasks: Tasks,
}

/// The relaying tasks of a connection: aborted when dropped, unless
/// [`Tasks::finish`] let the last messages and the close go out first.
pub struct Tasks {
    writing: Option<tokio::task::JoinHandle<()>>,
    reading: tokio::task::AbortHandle,
}

impl Tasks {
    /// Waits (a little) for every outbound message and the close to leave.
    pub async fn finish(mut self) {
        if let Some(w) = self.writing.take() {
            let _ = tokio::time::timeout(FINISH_TIMEOUT, w).await;
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(w) = &self.writing {
            w.abort();
        }
        self.reading.abort();
    }
}

/// How long the last messages of a session may take to leave.
const FINISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn encode(framing: Framing, channel: u8, payload: &[u8]) -> Message {
    if framing.base64 {
        let mut text = String::with_capacity(1 + payload.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(payload, &mut text);
        Message::Text(text.into())
    } else {
        let mut bin = Vec::with_capacity(1 + payload.len());
        bin.push(channel);
        bin.extend_from_slice(payload);
        Message::Binary(bin.into())
    }
}

/// The channel and payload of a client's message; `None` for one that
/// carries nothing usable.
fn decode(framing: Framing, msg: Message) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !framing.base64 && !b.is_empty() => Some((b[0], b[1..].to_vec())),
        Message::Text(t) if framing.base64 && !t.is_empty() => {
            let bytes = t.as_bytes();
            let channel = bytes[0].checked_sub(b'0')?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(&bytes[1..])
                .ok()?;
            Some((channel, payload))
        }
        _ => None,
    }
}

/// Starts relaying `ws`: `inbound` channels are read from the client,
/// `outbound` ones written to it; `initial` messages go out first.
pub fn open<S>(
    ws: WebSocketStream<S>,
    framing: Framing,
    inbound: &[u8],
    outbound: &[u8],
    initial: Vec<(u8, Vec<u8>)>,
) -> Mux
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let (gone_tx, gone) = oneshot::channel();

    let mut readers = HashMap::new();
    let mut feeds: HashMap<u8, DuplexStream> = HashMap::new();
    for &ch in inbound {
        let (ours, theirs) = tokio::io::duplex(BUFFER);
        let (theirs_r, _theirs_w) = tokio::io::split(theirs);
        readers.insert(ch, Box::pin(theirs_r) as Reader);
        feeds.insert(ch, ours);
    }
    let mut writers = HashMap::new();
    for &ch in outbound {
        let (ours, theirs) = tokio::io::duplex(BUFFER);
        let (_theirs_r, theirs_w) = tokio::io::split(theirs);
        writers.insert(ch, Box::pin(theirs_w) as Writer);
        let tx = out_tx.clone();
        tokio::spawn(async move {
            let (mut from, _keep) = tokio::io::split(ours);
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((ch, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(out_tx);

    // Writes: the initial messages, every outbound chunk, then the close.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let writing = tokio::spawn(async move {
        for (ch, payload) in initial {
            if sink.send(encode(framing, ch, &payload)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                next = out_rx.recv() => match next {
                    Some((ch, payload)) => {
                        if sink.send(encode(framing, ch, &payload)).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                _ = &mut stop_rx => return,
            }
        }
        say_goodbye(&mut sink).await;
    });

    // Reads: each inbound message to its channel, until the client closes.
    let reading = tokio::spawn(async move {
        let mut feeds = feeds;
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(m) => m,
            };
            let Some((ch, payload)) = decode(framing, msg) else {
                continue;
            };
            if framing.close_signal && ch == CLOSE_CHANNEL {
                if let [closed] = payload[..] {
                    if let Some(mut f) = feeds.remove(&closed) {
                        let _ = f.shutdown().await;
                    }
                }
                continue;
            }
            if let Some(f) = feeds.get_mut(&ch) {
                if payload.is_empty() {
                    continue;
                }
                if f.write_all(&payload).await.is_err() {
                    feeds.remove(&ch);
                }
            }
        }
        drop(feeds);
        let _ = stop_tx.send(());
        let _ = gone_tx.send(());
    });

    Mux {
        readers,
        writers,
        gone,
        tasks: Tasks {
            writing: Some(writing),
            reading: reading.abort_handle(),
        },
    }
}

/// Ends a session: close code 1000, which clients read as a clean end.
async fn say_goodbye<S>(sink: &mut futures::stream::SplitSink<WebSocketStream<S>, Message>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

/// The byte stream tunnelled through `ws` (`SPDY/3.1+portforward.k8s.io`):
/// each binary message is the next chunk of it; a close ends it.
pub(crate) fn tunnel<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let (mut from_app, mut to_app) = tokio::io::split(ours);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(b) if to_app.write_all(&b).await.is_err() => break,
                Message::Close(_) | Message::Text(_) => break,
                _ => {}
            }
        }
        let _ = to_app.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_app.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        say_goodbye(&mut sink).await;
    });
    theirs
}

/// Serves one upgraded WebSocket connection.
pub(crate) async fn session<S, B>(
    ws: WebSocketStream<S>,
    pending: Pending,
    version: Version,
    framing: Framing,
    shared: Arc<Shared<B>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let (Some(io), Some((what, process))) = (
        pending.stdio(),
        remotecommand::start(&pending, &shared.backend),
    ) else {
        if let Pending::PortForward(r) = &pending {
            crate::portforward::over_websocket(ws, framing, r.clone(), shared.clone()).await;
        }
        return;
    };
    let (channels, tasks) = remotecommand_channels(ws, framing, io);
    remotecommand::run(process.await, channels, version, what).await;
    tasks.finish().await;
}

/// The remote-command channels of a WebSocket: stdin and resize in, stdout,
/// stderr and error out; an empty message on the first output channel
/// tells the client the session is ready.
fn remotecommand_channels<S>(
    ws: WebSocketStream<S>,
    framing: Framing,
    Stdio {
        stdin,
        stdout,
        stderr,
        ..
    }: Stdio,
) -> (Channels, Tasks)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut outbound = vec![ERROR];
    if stdout {
        outbound.push(STDOUT);
    }
    if stderr {
        outbound.push(STDERR);
    }
    let ready = if stdout {
        STDOUT
    } else if stderr {
        STDERR
    } else {
        ERROR
    };
    let inbound: &[u8] = if stdin { &[STDIN, RESIZE] } else { &[RESIZE] };
    let mut mux = open(ws, framing, inbound, &outbound, vec![(ready, Vec::new())]);
    let gone = mux.gone;
    let channels = Channels {
        stdin: mux.readers.remove(&STDIN),
        stdout: mux.writers.remove(&STDOUT),
        stderr: mux.writers.remove(&STDERR),
        resize: mux.readers.remove(&RESIZE),
        error: mux
            .writers
            .remove(&ERROR)
            .unwrap_or_else(|| Box::pin(tokio::io::sink())),
        gone: Box::pin(async move {
            let _ = gone.await;
        }),
    };
    (channels, mux.tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: Framing = Framing {
        base64: false,
        close_signal: true,
    };
    const B64: Framing = Framing {
        base64: true,
        close_signal: false,
    };

    #[test]
    fn framing_both_ways() {
        assert_eq!(
            encode(BIN, 1, b"hi"),
            Message::Binary(vec![1, b'h', b'i'].into())
        );
        assert_eq!(encode(B64, 3, b"hi"), Message::Text("3aGk=".into()));
        assert_eq!(
            decode(B64, Message::Text("0aGk=".into())),
            Some((0, b"hi".to_vec()))
        );
        assert_eq!(decode(B64, Message::Text("0!!".into())), None);
        assert_eq!(decode(BIN, Message::Text("0aGk=".into())), None);
        assert_eq!(decode(BIN, Message::Binary(vec![].into())), None);
        assert_eq!(
            decode(BIN, Message::Binary(vec![255, 0].into())),
            Some((255, vec![0]))
        );
    }
}
