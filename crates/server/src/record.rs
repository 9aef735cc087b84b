//! Recording the CRI calls a client makes (`record_requests` in the
//! configuration): one JSON line per unary call, with its request and
//! response in protobuf-JSON, its gRPC status code, when it arrived (`at`)
//! and how long it took to answer (`ms`, until the last byte of the
//! response was handed to the transport). The lab kubelet's
//! calls recorded so become the fixtures the integration tests replay
//! (`crates/berth/tests/fixtures/kubelet`). A debugging aid: off by
//! default, and the file holds whatever the client sent.
//!
//! For CreateContainer, the kind of every mount's host path (`file`,
//! `dir`) is recorded too, so that a replay can make the same paths. Every
//! start of the daemon writes a `{"daemonStarted": ...}` line first.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use berth_cri::methods::{self, Which};
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tonic::body::Body;
use tower::{Layer, Service};

/// The file calls are appended to.
pub struct Recorder {
    out: Mutex<File>,
    seq: AtomicU64,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        tracing::warn!(path = %path.display(), "recording every CRI call (record_requests)");
        // Each start of the daemon is marked: a replay restarts its daemon
        // where the recorded one was restarted (killed, say).
        let mut out = out;
        let mark = serde_json::json!({ "daemonStarted": chrono::Utc::now().to_rfc3339() });
        writeln!(out, "{mark}")?;
        Ok(Recorder {
            out: Mutex::new(out),
            seq: AtomicU64::new(0),
        })
    }

    fn write(&self, call: Call, request: &[u8], response: &[u8], code: i32) {
        let Call { method, at, took } = call;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let decode = |which, body: &[u8]| {
            first_message(body)
                .map(|m| methods::decode(method, which, m).map_err(|e| e.to_string()))
        };
        let mut line = serde_json::json!({
            "seq": seq,
            "method": method,
            "code": code,
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "ms": took.as_secs_f64() * 1000.0,
        });
        match decode(Which::Request, request) {
            Some(Ok(v)) => line["request"] = v,
            Some(Err(e)) => line["error"] = e.into(),
            None => {}
        }
        if code == 0 {
            if let Some(Ok(v)) = decode(Which::Response, response) {
                line["response"] = v;
            }
        }
        if method == "CreateContainer" {
            line["hostPaths"] = host_paths(&line["request"]);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(text.as_bytes()) {
            tracing::warn!(error = %e, "recording a CRI call");
        }
    }
}

/// When a recorded call arrived and how long it took to answer.
struct Call {
    method: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    took: std::time::Duration,
}

/// The first length-prefixed gRPC message of a body.
fn first_message(body: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?) as usize;
    body.get(5..5 + len)
}

fn host_paths(request: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for m in request["config"]["mounts"].as_array().into_iter().flatten() {
        if let Some(p) = m["hostPath"].as_str() {
            let kind = match std::fs::metadata(p) {
                Ok(md) if md.is_dir() => "dir",
                Ok(_) => "file",
                Err(_) => "missing",
            };
            out.insert(p.to_string(), kind.into());
        }
    }
    out.into()
}

/// The layer, for `tonic::transport::Server::layer`; passes calls through
/// untouched when there is no recorder.
#[derive(Clone, Default)]
pub struct RecordLayer {
    recorder: Option<Arc<Recorder>>,
}

impl RecordLayer {
    pub fn new(recorder: Option<Recorder>) -> RecordLayer {
        RecordLayer {
            recorder: recorder.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    inner: S,
    recorder: Option<Arc<Recorder>>,
}

impl<S> Service<Request<Body>> for Record<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = methods::name_of(req.uri().path());
        let (Some(recorder), Some(method)) = (self.recorder.clone(), method) else {
            return Box::pin(self.inner.call(req));
        };
        // The ready service answers this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let at = chrono::Utc::now();
            let started = std::time::Instant::now();
            let (parts, body) = req.into_parts();
            let request = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let req =
                Request::from_parts(parts, Body::new(http_body_util::Full::new(request.clone())));
            let resp = inner.call(req).await?;
            let (parts, body) = resp.into_parts();
            let header_code = grpc_status(&parts.headers);
            let tapped = Tap {
                inner: body,
                data: BytesMut::new(),
                done: Some(Box::new(move |data: &[u8], trailer_code: Option<i32>| {
                    let code = trailer_code.or(header_code).unwrap_or(0);
                    let call = Call {
                        method,
                        at,
                        took: started.elapsed(),
                    };
                    recorder.write(call, &request, data, code);
                })),
            };
            Ok(Response::from_parts(parts, Body::new(tapped)))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

type Done = Box<dyn FnOnce(&[u8], Option<i32>) + Send>;

/// A response body passed through unchanged, its data kept for the record.
struct Tap {
    inner: Body,
    data: BytesMut,
    done: Option<Done>,
}

impl Tap {
    fn finish(&mut self, code: Option<i32>) {
        if let Some(done) = self.done.take() {
            done(&self.data, code);
        }
    }
}

impl http_body::Body for Tap {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let d = d.clone();
                    self.data.extend_from_slice(&d);
                } else if let Some(t) = frame.trailers_ref() {
                    let code = grpc_status(t);
                    self.finish(code);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One framed gRPC message.
    fn framed(msg: &impl prost::Message) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn each_start_is_marked_and_calls_follow_as_json_lines() {
        use berth_cri::runtime::v1 as cri;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        for _ in 0..2 {
            let r = Recorder::create(&path).unwrap();
            let req = framed(&cri::ContainerStatusRequest {
                container_id: "abc".into(),
                verbose: false,
            });
            let call = Call {
                method: "ContainerStatus",
                at: chrono::DateTime::from_timestamp(1_700_000_000, 250_000_000).unwrap(),
                took: std::time::Duration::from_micros(1500),
            };
            r.write(call, &req, &[], 5);
        }
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        for start in [&lines[0], &lines[2]] {
            assert!(start["daemonStarted"].is_string(), "{start}");
        }
        for call in [&lines[1], &lines[3]] {
            assert_eq!(call["method"], "ContainerStatus");
            assert_eq!(call["code"], 5);
            assert_eq!(call["request"]["containerId"], "abc");
            assert!(call.get("response").is_none());
            assert_eq!(call["at"], "2023-11-14T22:13:20.250000Z");
            assert_eq!(call["ms"], 1.5);
        }
    }
}
