//! The client side of the runtime's streaming URLs (Exec, Attach,
//! PortForward), over WebSocket with Kubernetes' channel framing.
//!
//! Remote commands offer `v5.channel.k8s.io` then `v4.channel.k8s.io`:
//! Berth picks v5, whose close signal ends the command's stdin; the
//! kubelet's streaming server (containerd, CRI-O) picks v4, which cannot
//! end stdin short of closing the connection. Port-forward uses
//! `v4.channel.k8s.io`, one WebSocket per forwarded connection.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Why a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the streaming URL {url:?} is not an http:// URL")]
    Url { url: String },
    #[error("connecting to the streaming server at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the streaming server broke the session: {0}")]
    Broken(String),
    #[error("the command failed: {0}")]
    Remote(String),
}

/// What a remote command reads and writes here.
pub struct Io {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
    /// Terminal sizes (columns, rows) to send.
    pub resize: Option<mpsc::UnboundedReceiver<(u16, u16)>>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket of a streaming URL offering `protocols`; the
/// protocol the server chose.
pub async fn connect(url: &str, protocols: &str) -> Result<(Ws, String), StreamError> {
    let ws_url = match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => return Err(StreamError::Url { url: url.into() }),
    };
    let failed = |detail: String| StreamError::Connect {
        url: url.into(),
        detail,
    };
    let mut req = ws_url
        .into_client_request()
        .map_err(|e| failed(e.to_string()))?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        protocols
            .parse()
            .map_err(|_| failed("bad protocol list".into()))?,
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

/// Runs a remote command (exec or attach) through its URL; its exit code
/// (`None`: an attach that ended without one).
pub async fn remote_command(url: &str, io: Io) -> Result<Option<i32>, StreamError> {
    let (ws, protocol) = connect(url, "v5.channel.k8s.io, v4.channel.k8s.io").await?;
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut stream) = ws.split();
    let Io {
        stdin,
        mut stdout,
        mut stderr,
        resize,
    } = io;
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut senders = Vec::new();
    if let Some(mut stdin) = stdin {
        let tx = out_tx.clone();
        senders.push(tokio::spawn(async move {
            if !send_channel(&mut stdin, 0, &tx).await {
                return;
            }
            if v5 {
                let _ = tx.send(Message::Binary(vec![255, 0].into())).await;
            }
        }));
    }
    if let Some(mut sizes) = resize {
        let tx = out_tx.clone();
        senders.push(tokio::spawn(async move {
            while let Some((w, h)) = sizes.recv().await {
                let mut m = vec![4u8];
                m.extend_from_slice(format!(r#"{{"Width":{w},"Height":{h}}}"#).as_bytes());
                if tx.send(Message::Binary(m.into())).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(out_tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut status = Vec::new();
    while let Some((channel, payload)) = next_frame(&mut stream).await? {
        let payload = &payload[..];
        let written = match channel {
            1 => stdout.write_all(payload).await.and(stdout.flush().await),
            2 => stderr.write_all(payload).await.and(stderr.flush().await),
            3 => {
                status.extend_from_slice(payload);
                Ok(())
            }
            _ => Ok(()),
        };
        written.map_err(|e| StreamError::Broken(format!("writing the output: {e}")))?;
    }
    for s in senders {
        s.abort();
    }
    writer.abort();
    exit_code(&status)
}

/// The next message's channel and payload; `None` at the close.
async fn next_frame<S>(stream: &mut S) -> Result<Option<(u8, Vec<u8>)>, StreamError>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        match msg.map_err(|e| StreamError::Broken(e.to_string()))? {
            Message::Binary(b) if !b.is_empty() => return Ok(Some((b[0], b[1..].to_vec()))),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// Sends what `from` reads as messages of `channel` until its end (`true`)
/// or until nobody takes them (`false`).
async fn send_channel<R: AsyncRead + Unpin>(
    from: &mut R,
    channel: u8,
    tx: &mpsc::Sender<Message>,
) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                let mut m = Vec::with_capacity(n + 1);
                m.push(channel);
                m.extend_from_slice(&buf[..n]);
                if tx.send(Message::Binary(m.into())).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// The exit code a Kubernetes `Status` on the error channel tells.
pub fn exit_code(status: &[u8]) -> Result<Option<i32>, StreamError> {
    if status.is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(status)
        .map_err(|_| StreamError::Remote(String::from_utf8_lossy(status).into_owned()))?;
    match v["status"].as_str() {
        Some("Success") => Ok(Some(0)),
        Some("Failure") if v["reason"] == "NonZeroExitCode" => {
            let code = v["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse().ok());
            code.map(Some)
                .ok_or_else(|| StreamError::Broken("a non-zero exit without its code".into()))
        }
        _ => Err(StreamError::Remote(
            v["message"].as_str().unwrap_or("unknown error").to_string(),
        )),
    }
}

/// Forwards one local connection to the pod's `port` through `url` (a
/// port-forward URL for that single port).
pub async fn forward<S>(url: &str, port: u16, local: S) -> Result<(), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (ws, _) = connect(url, "v4.channel.k8s.io").await?;
    let (mut sink, mut stream) = ws.split();
    let (mut from_local, mut to_local) = tokio::io::split(local);
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let upstream = tokio::spawn(async move {
        let reading = async {
            send_channel(&mut from_local, 0, &tx).await;
            // No half-close in v4: the pod's side stays until it closes.
            std::future::pending::<()>().await
        };
        let writing = async {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(reading, writing);
    });
    // Each channel first carries the port (two bytes, little-endian).
    let mut first = [true, true];
    let mut error = Vec::new();
    while let Ok(Some((channel, payload))) = next_frame(&mut stream).await {
        let payload = &payload[..];
        let Some(seen) = first.get_mut(usize::from(channel)) else {
            continue;
        };
        let payload = if std::mem::take(seen) {
            if payload.len() < 2 || u16::from_le_bytes([payload[0], payload[1]]) != port {
                upstream.abort();
                return Err(StreamError::Broken("the server named another port".into()));
            }
            &payload[2..]
        } else {
            payload
        };
        if channel == 0 {
            if to_local.write_all(payload).await.is_err() {
                break;
            }
        } else {
            error.extend_from_slice(payload);
        }
    }
    upstream.abort();
    let _ = to_local.shutdown().await;
    if error.is_empty() {
        Ok(())
    } else {
        Err(StreamError::Remote(
            String::from_utf8_lossy(&error).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_statuses() {
        assert_eq!(exit_code(b"").unwrap(), None);
        assert_eq!(exit_code(br#"{"status":"Success"}"#).unwrap(), Some(0));
        let three = br#"{"status":"Failure","message":"m","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exit_code(three).unwrap(), Some(3));
        let internal = br#"{"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","code":500}"#;
        assert!(matches!(exit_code(internal), Err(StreamError::Remote(m)) if m.contains("boom")));
        assert!(
            matches!(exit_code(b"plain text"), Err(StreamError::Remote(m)) if m == "plain text")
        );
    }
}
