//! Pull benchmark: the same ~100 MB multi-layer image from a local registry
//! into Berth and into a peer CRI runtime (containerd), alternating the two
//! in one run, each pull from a clean store. Prints medians and the ratio.
//!
//!     scripts/bench-pull.sh [--runs N] [--size-mb M] [--peer unix:///…/containerd.sock]
//!
//! Without a reachable peer, Berth alone is measured.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_client::ImageServiceClient;
use berth_testkit::{fixtures, ManifestFormat, Registry};
use tonic::transport::Channel;

struct Args {
    runs: usize,
    size_mb: usize,
    peer: Option<String>,
    berth: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        runs: 5,
        size_mb: 100,
        peer: Some("unix:///var/tmp/critest-lab/containerd/run/containerd.sock".into()),
        berth: std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("berth"))
            .unwrap(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--runs" => a.runs = v.parse().expect("--runs N"),
            "--size-mb" => a.size_mb = v.parse().expect("--size-mb M"),
            "--peer" => a.peer = (!v.is_empty()).then_some(v),
            "--berth" => a.berth = v.into(),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

async fn connect(endpoint: &str) -> Option<ImageServiceClient<Channel>> {
    let path = endpoint
        .strip_prefix("unix://")
        .unwrap_or(endpoint)
        .to_string();
    let ch = tonic::transport::Endpoint::try_from("http://localhost")
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .ok()?;
    let mut c = ImageServiceClient::new(ch);
    c.list_images(cri::ListImagesRequest { filter: None })
        .await
        .ok()?;
    Some(c)
}

fn spec(i: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: i.into(),
        ..Default::default()
    })
}

async fn timed_pull(c: &mut ImageServiceClient<Channel>, image: &str) -> Duration {
    // Start from a clean store: no image, no layers.
    let _ = c
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    c.pull_image(cri::PullImageRequest {
        image: spec(image),
        auth: None,
        sandbox_config: None,
    })
    .await
    .expect("pull");
    let d = t.elapsed();
    let _ = c
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await;
    d
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let a = args();
    let reg = Registry::start();
    eprintln!("building and pushing a {} MB image ...", a.size_mb);
    let pushed = fixtures::big(a.size_mb)
        .push(&reg, "bench/big:1", ManifestFormat::Oci)
        .await
        .expect("push");
    let image = format!("{}/bench/big:1", reg.host());
    let compressed: u64 = pushed.layers.iter().map(|l| l.size).sum();

    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let sock = dir.path().join("berth.sock");
    let mut daemon = Command::new(&a.berth)
        .args(["daemon", "--log-level", "warn", "--config"])
        .arg(dir.path().join("none.toml"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("start berth daemon (build it: cargo build --release --bin berth)");
    let _ = std::fs::write(dir.path().join("none.toml"), "");
    let mut berth = None;
    for _ in 0..300 {
        if let Some(c) = connect(&format!("unix://{}", sock.display())).await {
            berth = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut berth = berth.expect("berth daemon did not come up");
    let mut peer = match &a.peer {
        Some(p) => connect(p).await,
        None => None,
    };
    if peer.is_none() {
        eprintln!("peer not reachable ({:?}): measuring Berth alone", a.peer);
    }

    let (mut tb, mut tp) = (Vec::new(), Vec::new());
    for i in 0..a.runs {
        let b = timed_pull(&mut berth, &image).await;
        tb.push(b);
        let p = match peer.as_mut() {
            Some(c) => {
                let p = timed_pull(c, &image).await;
                tp.push(p);
                format!("{:>8.0} ms", p.as_secs_f64() * 1e3)
            }
            None => "       -".into(),
        };
        eprintln!(
            "run {:>2}: berth {:>8.0} ms   peer {p}",
            i + 1,
            b.as_secs_f64() * 1e3
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    let mb = compressed as f64 / 1e6;
    let mb_b = median(&mut tb);
    println!(
        "pull + unpack of {mb:.1} MB in {} layers, median of {} runs",
        pushed.layers.len(),
        a.runs
    );
    println!(
        "  berth       {:>8.0} ms  ({:.0} MB/s)",
        mb_b.as_secs_f64() * 1e3,
        mb / mb_b.as_secs_f64()
    );
    if !tp.is_empty() {
        let mp = median(&mut tp);
        println!(
            "  containerd  {:>8.0} ms  ({:.0} MB/s)",
            mp.as_secs_f64() * 1e3,
            mb / mp.as_secs_f64()
        );
        println!(
            "  berth / containerd = {:.2}",
            mb_b.as_secs_f64() / mp.as_secs_f64()
        );
    }
}
