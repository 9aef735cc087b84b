//! The client against in-process gRPC servers on unix sockets: a runtime
//! that starts late, one without runtime.v1, a missing one, and deadlines.

use std::time::{Duration, Instant};

use berth_cri::runtime::v1 as cri;
use berth_cri::runtime::v1::image_service_server::{ImageService, ImageServiceServer};
use berth_cri::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use berth_cri_client::{Client, ClientError, Options};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// A runtime that answers Version, and ListContainers after a while.
struct SlowRuntime;

#[tonic::async_trait]
impl RuntimeService for SlowRuntime {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "slow".into(),
            runtime_version: "1".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn list_containers(
        &self,
        _: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(Response::new(Default::default()))
    }
}

/// An image service alone: no runtime.v1 on its socket.
struct ImagesOnly;

#[tonic::async_trait]
impl ImageService for ImagesOnly {}

fn serve_runtime(path: &std::path::Path) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(SlowRuntime))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
}

#[tokio::test]
async fn waits_for_a_runtime_that_is_starting() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rt.sock");
    let endpoint = format!("unix://{}", sock.display());
    let late = sock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        serve_runtime(&late);
    });
    let options = Options {
        start_wait: Duration::from_secs(10),
        ..Default::default()
    };
    let c = Client::connect(&endpoint, None, &options).await.unwrap();
    assert_eq!(c.version.runtime_name, "slow");
    assert_eq!(c.version.runtime_api_version, "v1");
}

#[tokio::test]
async fn a_missing_runtime_is_unreachable_at_once_without_start_wait() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}", dir.path().join("none.sock").display());
    let t = Instant::now();
    let e = Client::connect(&endpoint, None, &Options::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("none.sock"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let bad = Client::connect("tcp://127.0.0.1:1", None, &Options::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(bad, ClientError::InvalidEndpoint(_)), "{bad}");
}

#[tokio::test]
async fn a_socket_without_runtime_v1_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("img.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ImageServiceServer::new(ImagesOnly))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let e = Client::connect(
        &format!("unix://{}", sock.display()),
        None,
        &Options::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, ClientError::NotRuntimeV1 { .. }), "{e}");
    assert!(e.to_string().contains("runtime.v1"), "{e}");
}

#[tokio::test]
async fn calls_have_the_deadline_and_name_the_method() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rt.sock");
    serve_runtime(&sock);
    let options = Options {
        call_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let c = Client::connect(&format!("unix://{}", sock.display()), None, &options)
        .await
        .unwrap();
    let mut rt = c.runtime.clone();
    let t = Instant::now();
    let e = c
        .call(
            "ListContainers",
            rt.list_containers(c.request(cri::ListContainersRequest::default())),
        )
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(e.status().unwrap().code(), tonic::Code::DeadlineExceeded);
    assert!(e.to_string().starts_with("ListContainers: "), "{e}");
}
