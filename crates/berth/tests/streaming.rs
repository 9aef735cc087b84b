//! Exec, Attach and PortForward through the socket and the streaming
//! server, with real containers: over WebSocket (Berth's own client, as
//! `berth exec -it` uses it) and over SPDY/3.1 (a small client here that
//! behaves as client-go's: one stream at a time, each after the previous
//! one's reply).

mod common;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_cli::stream::{self, Io};
use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use berth_spdy::frame::{Data, Frame, FrameCodec, SynStream};
use berth_spdy::headers::HeaderEncoder;
use berth_spdy::Headers;
use berth_testkit::{fixtures, Compression, Layer, ManifestFormat, Registry, TarWriter};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    _reg: Registry,
    d: Daemon,
    _net: TestNetwork,
    rt: RuntimeServiceClient<Channel>,
    image: String,
    pod: String,
}

/// A daemon, a pod and busybox with the applets these tests use.
async fn env(name: &str) -> Env {
    env_with(name, "").await
}

async fn env_with(name: &str, config: &str) -> Env {
    let reg = Registry::start();
    let mut extra = TarWriter::new();
    for applet in ["nc", "httpd", "stty", "tty", "seq"] {
        extra.symlink(&format!("bin/{applet}"), "busybox");
    }
    fixtures::busybox_builder()
        .layer(Layer::from_tar(extra.finish(), Compression::Gzip))
        .build()
        .push(&reg, "tests/busybox:stream", ManifestFormat::Oci)
        .await
        .unwrap();
    let d = Daemon::start(config);
    let net = TestNetwork::create(d.dir.path());
    let image = format!("{}/tests/busybox:stream", reg.host());
    pull(&mut d.images().await, &image, None).await.unwrap();
    let mut rt = d.runtime().await;
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(name, &d)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("RunPodSandbox: {s:?}\n{}", d.log()))
        .into_inner()
        .pod_sandbox_id;
    Env {
        _reg: reg,
        d,
        _net: net,
        rt,
        image,
        pod,
    }
}

fn pod_config(name: &str, d: &Daemon) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "tests".into(),
            attempt: 0,
        }),
        log_directory: d.dir.path().join("logs").to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// Creates and starts a container running `cmd`.
async fn container(e: &mut Env, name: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(&e.image),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        stdin,
        stdin_once: stdin,
        tty,
        ..Default::default()
    };
    let id =
        e.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: e.pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config("p", &e.d)),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    e.rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|s| panic!("StartContainer: {s:?}\n{}", e.d.log()));
    id
}

fn exec_request(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn exec_url(e: &mut Env, req: cri::ExecRequest) -> String {
    e.rt.exec(req).await.unwrap().into_inner().url
}

/// A shared buffer that is an `AsyncWrite`.
#[derive(Clone, Default)]
struct Sink(Arc<std::sync::Mutex<Vec<u8>>>, Arc<AtomicUsize>);

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn len(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut v = self.0.lock().unwrap();
        if v.len() < 1 << 20 {
            v.extend_from_slice(b);
        }
        self.1.fetch_add(b.len(), Ordering::Relaxed);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a remote command over WebSocket; (exit code, stdout, stderr).
async fn ws_run(
    url: &str,
    stdin: Option<&'static [u8]>,
    resize: Option<(u16, u16)>,
) -> (Option<i32>, Sink, Sink) {
    let (out, err) = (Sink::default(), Sink::default());
    let resize = resize.map(|s| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(s).unwrap();
        // Kept open: the session, not the sizes, decides the end.
        std::mem::forget(tx);
        rx
    });
    let io = Io {
        stdin: stdin.map(|b| Box::new(b) as _),
        stdout: Box::new(out.clone()),
        stderr: Box::new(err.clone()),
        resize,
    };
    let code = tokio::time::timeout(WAIT, stream::remote_command(url, io))
        .await
        .expect("the session ends")
        .expect("the session works");
    (code, out, err)
}

/// A connection to the streaming server, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A SPDY/3.1 client after `Upgrade: SPDY/3.1`, as client-go's.
struct Spdy {
    rd: FramedRead<ReadHalf<Box<dyn Conn>>, FrameCodec>,
    wr: FramedWrite<WriteHalf<Box<dyn Conn>>, FrameCodec>,
    enc: HeaderEncoder,
    next_id: u32,
    /// DATA per stream, and which ended (FIN or RST).
    data: HashMap<u32, Vec<u8>>,
    ended: HashMap<u32, &'static str>,
}

/// Upgrades a streaming URL to SPDY offering `protocols`; the HTTP status
/// line and the client (on 101).
async fn spdy_connect(url: &str, protocols: &[&str]) -> (String, Option<Spdy>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, _) = rest.split_at(rest.find('/').unwrap());
    let conn = tokio::net::TcpStream::connect(host).await.unwrap();
    spdy_upgrade(Box::new(conn), url, protocols).await
}

/// The upgrade on `conn`, a connection to `url`'s server.
async fn spdy_upgrade(
    mut conn: Box<dyn Conn>,
    url: &str,
    protocols: &[&str],
) -> (String, Option<Spdy>) {
    let rest = url.split_once("://").unwrap().1;
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if conn.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return (head, None);
    }
    let (r, w) = tokio::io::split(conn);
    let client = Spdy {
        rd: FramedRead::new(r, FrameCodec::new(1 << 20)),
        wr: FramedWrite::new(w, FrameCodec::new(1 << 20)),
        enc: HeaderEncoder::new(),
        next_id: 1,
        data: HashMap::new(),
        ended: HashMap::new(),
    };
    (head, Some(client))
}

impl Spdy {
    /// Opens a stream and waits for its reply; its id.
    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let mut h = Headers::new();
        for (k, v) in headers {
            h.append(*k, *v);
        }
        let header_block = self.enc.encode(&h).unwrap();
        self.wr
            .send(Frame::SynStream(SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                header_block,
            }))
            .await
            .unwrap();
        loop {
            match self.next().await {
                Some(Frame::SynReply(r)) if r.stream_id == id => return id,
                Some(Frame::RstStream { stream_id, .. }) if stream_id == id => {
                    panic!("stream {id} {headers:?} refused")
                }
                Some(_) => {}
                None => panic!("the connection ended before stream {id} was replied"),
            }
        }
    }

    async fn send(&mut self, id: u32, bytes: &[u8], fin: bool) {
        self.wr
            .send(Frame::Data(Data {
                stream_id: id,
                fin,
                data: bytes::Bytes::copy_from_slice(bytes),
            }))
            .await
            .unwrap();
    }

    /// The next frame (DATA, FIN and RST recorded), answering PINGs.
    async fn next(&mut self) -> Option<Frame> {
        // A reset connection ends it as EOF does.
        let f = tokio::time::timeout(WAIT, self.rd.next())
            .await
            .expect("a frame in time")?
            .ok()?;
        match &f {
            Frame::Data(d) => {
                self.data
                    .entry(d.stream_id)
                    .or_default()
                    .extend_from_slice(&d.data);
                if d.fin {
                    self.ended.insert(d.stream_id, "fin");
                }
            }
            Frame::RstStream { stream_id, .. } => {
                self.ended.entry(*stream_id).or_insert("rst");
            }
            _ => {}
        }
        Some(f)
    }

    /// Reads until every stream of `ids` has ended, or the connection.
    async fn until_ended(&mut self, ids: &[u32]) {
        while !ids.iter().all(|i| self.ended.contains_key(i)) {
            if self.next().await.is_none() {
                return;
            }
        }
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default())
            .into_owned()
    }
}

/// Processes on the host whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Polls `cond` until it holds or `WAIT` passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn exec_over_websocket_and_spdy() {
    let mut e = env("exec").await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;

    // WebSocket v5: stdin, its end, both outputs and the exit code.
    let cmd = ["sh", "-c", "cat; echo err >&2; exit 3"];
    let url = exec_url(&mut e, exec_request(&c, &cmd, true, false)).await;
    let (code, out, err) = ws_run(&url, Some(b"hello\n"), None).await;
    assert_eq!(
        (code, out.text(), err.text()),
        (Some(3), "hello\n".into(), "err\n".into())
    );

    // The same URL again: used up.
    let (head, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // A terminal of the container's own devpts, resized by the client.
    let cmd = [
        "sh",
        "-c",
        "until [ \"$(stty size)\" = '40 120' ]; do sleep 0.05; done; tty; exit 7",
    ];
    let url = exec_url(&mut e, exec_request(&c, &cmd, true, true)).await;
    let (code, out, _) = ws_run(&url, None, Some((120, 40))).await;
    assert_eq!(code, Some(7));
    assert!(out.text().contains("/dev/pts/0"), "{:?}", out.text());

    // SPDY v4, streams opened one by one as client-go does.
    let cmd = ["sh", "-c", "cat; echo err >&2; exit 4"];
    let url = exec_url(&mut e, exec_request(&c, &cmd, true, false)).await;
    let (head, spdy) = spdy_connect(&url, &["v5.channel.k8s.io-not", "v4.channel.k8s.io"]).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let mut s = spdy.unwrap();
    let error = s.open(&[("streamtype", "error")]).await;
    let stdin = s.open(&[("streamtype", "stdin")]).await;
    let stdout = s.open(&[("streamtype", "stdout")]).await;
    let stderr = s.open(&[("streamtype", "stderr")]).await;
    s.send(stdin, b"over spdy\n", false).await;
    s.send(stdin, b"", true).await;
    s.until_ended(&[stdout, stderr, error]).await;
    assert_eq!(s.text(stdout), "over spdy\n");
    assert_eq!(s.text(stderr), "err\n");
    let status: serde_json::Value = serde_json::from_str(&s.text(error)).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "4");

    // The CLI: `berth exec -i`, stdin piped, the command's exit code.
    let mut child = std::process::Command::new(BERTH)
        .args(["--runtime-endpoint", &e.d.endpoint(), "exec", "-i", &c])
        .args(["sh", "-c", "cat; exit 9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Written, then closed (dropped): the command's stdin ends.
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"from the cli\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the cli\n");
    assert_eq!(out.status.code(), Some(9));

    // No protocol in common: 403 with the accepted ones.
    let url = exec_url(&mut e, exec_request(&c, &["true"], false, false)).await;
    let (head, _) = spdy_connect(&url, &["v9.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"));
}

#[tokio::test]
async fn the_streaming_server_can_serve_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let config = format!(
        "[stream]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    let mut e = env_with("tls", &config).await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;
    let url = exec_url(
        &mut e,
        exec_request(&c, &["echo", "over tls"], false, false),
    )
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = url.split_once("://").unwrap().1.split('/').next().unwrap();
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (head, s) = spdy_upgrade(Box::new(conn), &url, &["v4.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut s = s.unwrap();
    let error = s.open(&[("streamtype", "error")]).await;
    let stdout = s.open(&[("streamtype", "stdout")]).await;
    let stderr = s.open(&[("streamtype", "stderr")]).await;
    s.until_ended(&[stdout, stderr, error]).await;
    assert_eq!(s.text(stdout), "over tls\n");
    assert_eq!(s.text(error), r#"{"status":"Success"}"#);
}

#[tokio::test]
async fn bad_streaming_requests_are_refused_at_the_rpc() {
    let mut e = env("refused").await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;
    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| {
        r.map(|_| ()).map_err(|s| s.code())
    };
    let mut both = exec_request(&c, &["true"], false, true);
    both.stderr = true;
    assert_eq!(
        code(e.rt.exec(both).await),
        Err(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(
            e.rt.exec(exec_request(&c, &[] as &[&str], false, false))
                .await
        ),
        Err(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(
            e.rt.exec(exec_request("nope", &["true"], false, false))
                .await
        ),
        Err(tonic::Code::NotFound)
    );
    let pf =
        e.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: e.pod.clone(),
            port: vec![70000],
        })
        .await;
    assert_eq!(
        pf.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::InvalidArgument)
    );
    // A stopped container has nothing to exec into.
    e.rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        code(e.rt.exec(exec_request(&c, &["true"], false, false)).await),
        Err(tonic::Code::FailedPrecondition)
    );
    // An unknown token.
    let url = format!(
        "{}/exec/{}",
        exec_base(&mut e).await,
        "AAAAAAAAAAAAAAAAAAAAAAAA"
    );
    let (head, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

/// `http://host:port` of the streaming server.
async fn exec_base(e: &mut Env) -> String {
    let c = container(e, "base", &["sleep", "100000"], false, false).await;
    let url = exec_url(e, exec_request(&c, &["true"], false, false)).await;
    url[..url.find("/exec/").unwrap()].to_string()
}

#[tokio::test]
async fn attach_relays_stdio_and_stdin_once_closes_it() {
    let mut e = env("attach").await;
    let c = container(&mut e, "sh", &["sh"], true, false).await;
    let url =
        e.rt.attach(cri::AttachRequest {
            container_id: c.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (code, out, err) =
        ws_run(&url, Some(b"echo attached; echo oops >&2; exit 5\n"), None).await;
    assert_eq!(out.text(), "attached\n");
    assert_eq!(err.text(), "oops\n");
    assert_eq!(
        code,
        Some(0),
        "an attach ends with Success, whatever the exit code"
    );
    let st =
        e.rt.container_status(cri::ContainerStatusRequest {
            container_id: c,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        (st.state, st.exit_code),
        (cri::ContainerState::ContainerExited as i32, 5)
    );
}

#[tokio::test]
async fn port_forward_over_websocket_and_spdy() {
    let mut e = env("forward").await;
    container(
        &mut e,
        "web",
        &["httpd", "-f", "-p", "8080", "-h", "/etc"],
        false,
        false,
    )
    .await;
    let pf_url = |rt: &mut RuntimeServiceClient<Channel>, pod: String, port: Vec<i32>| {
        let mut rt = rt.clone();
        async move {
            rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod,
                port,
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };
    let get = b"GET /passwd HTTP/1.0\r\n\r\n";
    // WebSocket (v4 channels), polling until httpd listens.
    let mut answer = String::new();
    let deadline = Instant::now() + WAIT;
    while !answer.contains("root:x:0:0") {
        assert!(
            Instant::now() < deadline,
            "no answer through port-forward: {answer:?}"
        );
        let url = pf_url(&mut e.rt, e.pod.clone(), vec![8080]).await;
        let (mut local, remote) = tokio::io::duplex(64 << 10);
        let fwd = tokio::spawn(async move { stream::forward(&url, 8080, remote).await });
        local.write_all(get).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, local.read_to_end(&mut buf)).await;
        answer = String::from_utf8_lossy(&buf).into_owned();
        let _ = fwd.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // SPDY: an error and a data stream per connection; the ports are the
    // streams' (crictl asks for none).
    let url = pf_url(&mut e.rt, e.pod.clone(), vec![]).await;
    let (head, s) = spdy_connect(&url, &["portforward.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut s = s.unwrap();
    let error = s
        .open(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ])
        .await;
    s.send(error, b"", true).await;
    let data = s
        .open(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        .await;
    s.send(data, get, true).await;
    s.until_ended(&[data, error]).await;
    assert!(s.text(data).contains("root:x:0:0"), "{}", s.text(data));
    assert_eq!(s.text(error), "");
    // A port nobody listens on: the kubelet's message, both streams reset.
    let error = s
        .open(&[("streamtype", "error"), ("port", "9"), ("requestid", "1")])
        .await;
    let data = s
        .open(&[("streamtype", "data"), ("port", "9"), ("requestid", "1")])
        .await;
    s.until_ended(&[data, error]).await;
    assert!(
        s.text(error).starts_with("error forwarding port 9 to pod "),
        "{}",
        s.text(error)
    );
}

#[tokio::test]
async fn a_client_that_goes_away_takes_its_exec_with_it() {
    let mut e = env("gone").await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;
    let daemon = e.d.pid();
    let fds_before = open_fds(daemon);
    let url = exec_url(&mut e, exec_request(&c, &["sleep", "4242.5"], true, false)).await;
    let (head, s) = spdy_connect(&url, &["v4.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut s = s.unwrap();
    for t in ["error", "stdin", "stdout", "stderr"] {
        s.open(&[("streamtype", t)]).await;
    }
    eventually("the exec runs", || {
        !processes_with("sleep 4242.5").is_empty()
    })
    .await;
    drop(s);
    eventually("the exec is killed", || {
        processes_with("sleep 4242.5").is_empty()
    })
    .await;
    eventually("the daemon closes what it held", || {
        open_fds(daemon) <= fds_before
    })
    .await;
}

#[tokio::test]
async fn idle_streams_are_closed_and_their_exec_killed() {
    let mut e = env_with("idle", "[stream]\nidle_timeout = \"1s\"\n").await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;
    let url = exec_url(&mut e, exec_request(&c, &["sleep", "4343.5"], false, false)).await;
    let (head, s) = spdy_connect(&url, &["v4.channel.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut s = s.unwrap();
    for t in ["error", "stdout", "stderr"] {
        s.open(&[("streamtype", t)]).await;
    }
    // Nothing crosses the connection: the server closes it.
    while s.next().await.is_some() {}
    eventually("the idle exec is killed", || {
        processes_with("sleep 4343.5").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_hundred_execs_stream_ten_megabytes_each() {
    let mut e = env("load").await;
    let c = container(&mut e, "main", &["sleep", "100000"], false, false).await;
    let daemon = e.d.pid();
    let fds_before = open_fds(daemon);
    const SIZE: usize = 10_000_000;
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let req = exec_request(&c, &["head", "-c", "10000000", "/dev/zero"], false, false);
        let url = exec_url(&mut e, req).await;
        sessions.spawn(async move {
            let (code, out, err) = ws_run(&url, None, None).await;
            (code, out.len(), err.len())
        });
    }
    while let Some(r) = sessions.join_next().await {
        assert_eq!(r.unwrap(), (Some(0), SIZE, 0));
    }
    eventually("no exec is left", || {
        processes_with("head -c 10000000").is_empty()
    })
    .await;
    eventually("the daemon closes what it held", || {
        open_fds(daemon) <= fds_before
    })
    .await;
}
