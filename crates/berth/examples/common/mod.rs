//! What the runtime benchmarks share: a runtime connected with the image
//! pulled, and medians.

use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Connects to `endpoint` and pulls `image`; the runtime client and the
/// image's spec.
pub async fn connect_and_pull(
    name: &str,
    endpoint: &str,
    image: &str,
) -> (RuntimeServiceClient<Channel>, Option<cri::ImageSpec>) {
    let c = berth_cli::connect(endpoint, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut images = c.image;
    let spec = Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    images
        .pull_image(cri::PullImageRequest {
            image: spec.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("{name}: pulling {image}: {s:?}"));
    (c.runtime, spec)
}

/// `[--image IMAGE] NAME=unix:///sock ...`: the image (busybox by
/// default) and each runtime's name and endpoint; panics with `usage`
/// when no runtime is given.
pub fn runtimes_from_args(usage: &str) -> (String, Vec<(String, String)>) {
    let mut args = std::env::args().skip(1);
    let mut image = "busybox:latest".to_string();
    let mut runtimes = Vec::new();
    while let Some(a) = args.next() {
        if a == "--image" {
            image = args.next().expect("--image IMAGE");
            continue;
        }
        let (name, endpoint) = a.split_once('=').expect("NAME=unix:///socket");
        runtimes.push((name.to_string(), endpoint.to_string()));
    }
    assert!(!runtimes.is_empty(), "usage: {usage}");
    (image, runtimes)
}

/// The middle value.
pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    quantile(v, 0.5)
}

/// The value below which `q` of them lie.
pub fn quantile<T: Copy + PartialOrd>(v: &[T], q: f64) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}
