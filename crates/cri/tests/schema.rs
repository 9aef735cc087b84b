//! Wire facts of the CRI schema that kubelet and crictl rely on.

use berth_cri::runtime::v1 as cri;
use prost::Message;

fn descriptors() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(berth_cri::FILE_DESCRIPTOR_SET).unwrap()
}

fn service_methods(name: &str) -> Vec<String> {
    descriptors()
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .filter(|s| s.name() == name)
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect()
}

#[test]
fn every_cri_rpc_is_present() {
    let rt = service_methods("RuntimeService");
    for m in [
        "Version",
        "RunPodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "PodSandboxStatus",
        "ListPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "ListContainers",
        "ContainerStatus",
        "UpdateContainerResources",
        "ReopenContainerLog",
        "ExecSync",
        "Exec",
        "Attach",
        "PortForward",
        "ContainerStats",
        "ListContainerStats",
        "PodSandboxStats",
        "ListPodSandboxStats",
        "UpdateRuntimeConfig",
        "Status",
        "CheckpointContainer",
        "GetContainerEvents",
        "ListMetricDescriptors",
        "ListPodSandboxMetrics",
        "RuntimeConfig",
        "UpdatePodSandboxResources",
        // v0.36 streaming list variants
        "StreamPodSandboxes",
        "StreamContainers",
        "StreamContainerStats",
        "StreamPodSandboxStats",
        "StreamPodSandboxMetrics",
    ] {
        assert!(rt.contains(&m.to_string()), "RuntimeService lacks {m}");
    }
    assert_eq!(rt.len(), 35, "{rt:?}");
    let img = service_methods("ImageService");
    for m in [
        "ListImages",
        "StreamImages",
        "ImageStatus",
        "PullImage",
        "RemoveImage",
        "ImageFsInfo",
    ] {
        assert!(img.contains(&m.to_string()), "ImageService lacks {m}");
    }
    assert_eq!(img.len(), 6, "{img:?}");
}

#[test]
fn field_numbers_match_the_wire_contract() {
    // PodSandboxConfig.metadata = 1, hostname = 2, log_directory = 3.
    let c = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "n".into(),
            uid: "u".into(),
            namespace: "ns".into(),
            attempt: 3,
        }),
        hostname: "h".into(),
        log_directory: "/l".into(),
        ..Default::default()
    };
    let b = c.encode_to_vec();
    // tag (1 << 3 | 2) = 0x0a for metadata, 0x12 for hostname, 0x1a for log_directory
    assert_eq!(b[0], 0x0a);
    assert!(b.windows(3).any(|w| w == [0x12, 1, b'h']));
    assert!(b.windows(4).any(|w| w == [0x1a, 2, b'/', b'l']));
    // ImageSpec carries the fields kubelet 1.36 sends.
    let s = cri::ImageSpec {
        image: "busybox".into(),
        user_specified_image: "busybox".into(),
        runtime_handler: "runc".into(),
        ..Default::default()
    };
    let back = cri::ImageSpec::decode(s.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn json_uses_protobuf_names() {
    let img = cri::Image {
        id: "sha256:x".into(),
        repo_tags: vec!["a:b".into()],
        uid: Some(cri::Int64Value { value: 5 }),
        ..Default::default()
    };
    let v = serde_json::to_value(&img).unwrap();
    assert_eq!(v["repoTags"][0], "a:b");
    // crictl config files use the original snake_case names; both parse.
    let c: cri::PodSandboxConfig = serde_json::from_str(
        r#"{"metadata":{"name":"p","namespace":"d","uid":"u1","attempt":1},"log_directory":"/tmp/x","linux":{}}"#,
    )
    .unwrap();
    assert_eq!(c.log_directory, "/tmp/x");
    assert_eq!(c.metadata.unwrap().attempt, 1);
}

#[test]
fn streaming_rpcs_are_server_streaming_only() {
    let fds = descriptors();
    let mut streaming = Vec::new();
    for m in fds
        .file
        .iter()
        .flat_map(|f| f.service.iter())
        .flat_map(|s| s.method.iter())
    {
        assert!(!m.client_streaming(), "{} is client-streaming", m.name());
        if m.server_streaming() {
            streaming.push(m.name().to_string());
        }
    }
    streaming.sort();
    assert_eq!(
        streaming,
        [
            "GetContainerEvents",
            "PullImageWithProgress",
            "StreamContainerStats",
            "StreamContainers",
            "StreamImages",
            "StreamPodSandboxMetrics",
            "StreamPodSandboxStats",
            "StreamPodSandboxes",
        ]
    );
}

#[test]
fn container_config_field_numbers() {
    let c = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "i".into(),
            ..Default::default()
        }),
        command: vec!["sh".into()],
        working_dir: "/w".into(),
        envs: vec![cri::KeyValue {
            key: "K".into(),
            value: "V".into(),
        }],
        log_path: "l".into(),
        tty: true,
        stop_signal: cri::Signal::Sigterm as i32,
        ..Default::default()
    };
    let b = c.encode_to_vec();
    let has = |w: &[u8]| b.windows(w.len()).any(|x| x == w);
    assert_eq!(b[0], 0x0a); // metadata = 1
    assert!(has(&[0x12, 3, 0x0a, 1, b'i'])); // image = 2 { image = 1 }
    assert!(has(&[0x1a, 2, b's', b'h'])); // command = 3
    assert!(has(&[0x2a, 2, b'/', b'w'])); // working_dir = 5
    assert!(has(&[0x32, 6, 0x0a, 1, b'K', 0x12, 1, b'V'])); // envs = 6 (KeyValue 1, 2)
    assert!(has(&[0x5a, 1, b'l'])); // log_path = 11
    assert!(has(&[0x70, 1])); // tty = 14, varint
    assert!(has(&[0x90, 0x01, 23])); // stop_signal = 18; SIGTERM is enum value 23 (not the POSIX number)
}

#[test]
fn image_spec_and_auth_field_numbers() {
    let s = cri::ImageSpec {
        user_specified_image: "u".into(),
        runtime_handler: "r".into(),
        image_ref: "x".into(),
        ..Default::default()
    };
    // 18 << 3 | 2 = 0x92 0x01; 19 -> 0x9a 0x01; 20 -> 0xa2 0x01
    assert_eq!(
        s.encode_to_vec(),
        [0x92, 0x01, 1, b'u', 0x9a, 0x01, 1, b'r', 0xa2, 0x01, 1, b'x']
    );
    let a = cri::AuthConfig {
        registry_token: "t".into(),
        ..Default::default()
    };
    assert_eq!(a.encode_to_vec(), [0x32, 1, b't']); // registry_token = 6
}

#[test]
fn berth_extension_wire_shape() {
    use berth_cri::berth::v1 as ext;
    let p = ext::PullProgress {
        event: Some(ext::pull_progress::Event::Layer(ext::LayerProgress {
            digest: "d".into(),
            total: 10,
            current: 5,
            phase: ext::LayerPhase::Downloading as i32,
        })),
    };
    assert_eq!(
        p.encode_to_vec(),
        [0x0a, 9, 0x0a, 1, b'd', 0x10, 10, 0x18, 5, 0x20, 1]
    );
    let done = ext::PullProgress {
        event: Some(ext::pull_progress::Event::Done(cri::PullImageResponse {
            image_ref: "sha256:a".into(),
        })),
    };
    assert_eq!(
        ext::PullProgress::decode(done.encode_to_vec().as_slice()).unwrap(),
        done
    );
    assert_eq!(ext::LayerPhase::AlreadyExists as i32, 4);
}

/// A server that overrides nothing still compiles and answers UNIMPLEMENTED.
struct Empty;
impl cri::runtime_service_server::RuntimeService for Empty {}
impl cri::image_service_server::ImageService for Empty {}
impl berth_cri::berth::v1::images_server::Images for Empty {}

#[test]
fn default_stubs_answer_unimplemented() {
    use cri::image_service_server::ImageService;
    use cri::runtime_service_server::RuntimeService;
    futures::executor::block_on(async {
        let e = Empty
            .version(tonic::Request::new(cri::VersionRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = Empty
            .get_container_events(tonic::Request::new(cri::GetEventsRequest::default()))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = Empty
            .pull_image(tonic::Request::new(cri::PullImageRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    });
    // The servers wrap an implementation of the trait.
    let _ = cri::runtime_service_server::RuntimeServiceServer::new(Empty);
    let _ = cri::image_service_server::ImageServiceServer::new(Empty);
    let _ = berth_cri::berth::v1::images_server::ImagesServer::new(Empty);
}

#[allow(dead_code)]
fn client_methods_exist(
    mut rt: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    mut img: cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    mut ext: berth_cri::berth::v1::images_client::ImagesClient<tonic::transport::Channel>,
) {
    drop(rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default()));
    drop(rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest::default()));
    drop(rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest::default()));
    drop(img.stream_images(cri::StreamImagesRequest::default()));
    drop(ext.pull_image_with_progress(cri::PullImageRequest::default()));
}
