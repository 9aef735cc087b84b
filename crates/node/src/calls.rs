//! The CRI calls the manager makes, each with the client's per-call
//! deadline and its method's name in errors.

use std::collections::HashMap;

use berth_cri::runtime::v1 as cri;
use berth_cri_client::{Client, ClientError};

/// Whether a call failed because the object does not exist.
pub fn not_found(e: &ClientError) -> bool {
    e.status()
        .is_some_and(|s| s.code() == tonic::Code::NotFound)
}

/// A failed call as the kubelet words a CRI error.
pub fn message(e: &ClientError) -> String {
    match e.status() {
        Some(s) => format!("rpc error: code = {:?} desc = {}", s.code(), s.message()),
        None => e.to_string(),
    }
}

/// ListPodSandbox, all or those with these labels.
pub async fn sandboxes(
    c: &Client,
    labels: Option<HashMap<String, String>>,
) -> Result<Vec<cri::PodSandbox>, ClientError> {
    let filter = labels.map(|label_selector| cri::PodSandboxFilter {
        label_selector,
        ..Default::default()
    });
    let req = c.request(cri::ListPodSandboxRequest { filter });
    Ok(
        c.call("ListPodSandbox", c.runtime.clone().list_pod_sandbox(req))
            .await?
            .items,
    )
}

/// ListContainers, all or those with these labels.
pub async fn containers(
    c: &Client,
    labels: Option<HashMap<String, String>>,
) -> Result<Vec<cri::Container>, ClientError> {
    let filter = labels.map(|label_selector| cri::ContainerFilter {
        label_selector,
        ..Default::default()
    });
    let req = c.request(cri::ListContainersRequest { filter });
    Ok(
        c.call("ListContainers", c.runtime.clone().list_containers(req))
            .await?
            .containers,
    )
}

/// PodSandboxStatus (not verbose).
pub async fn sandbox_status(
    c: &Client,
    id: &str,
) -> Result<Option<cri::PodSandboxStatus>, ClientError> {
    Ok(sandbox_status_response(c, id).await?.status)
}

/// PodSandboxStatus's whole answer: a runtime that sets its timestamp
/// (as the evented PLEG expects) also gives its containers' statuses.
pub async fn sandbox_status_response(
    c: &Client,
    id: &str,
) -> Result<cri::PodSandboxStatusResponse, ClientError> {
    let req = c.request(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: false,
    });
    c.call(
        "PodSandboxStatus",
        c.runtime.clone().pod_sandbox_status(req),
    )
    .await
}

/// ContainerStatus (not verbose).
pub async fn container_status(
    c: &Client,
    id: &str,
) -> Result<Option<cri::ContainerStatus>, ClientError> {
    let req = c.request(cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    });
    Ok(
        c.call("ContainerStatus", c.runtime.clone().container_status(req))
            .await?
            .status,
    )
}

/// ImageStatus: the image, if the runtime has it.
pub async fn image_status(c: &Client, image: &str) -> Result<Option<cri::Image>, ClientError> {
    let req = c.request(cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        verbose: false,
    });
    Ok(c.call("ImageStatus", c.image.clone().image_status(req))
        .await?
        .image)
}

/// RemoveContainer; one that is gone already is removed.
pub async fn remove_container(c: &Client, id: &str) -> Result<(), String> {
    let req = c.request(cri::RemoveContainerRequest {
        container_id: id.to_string(),
    });
    match c
        .call("RemoveContainer", c.runtime.clone().remove_container(req))
        .await
    {
        Err(e) if !not_found(&e) => Err(message(&e)),
        _ => Ok(()),
    }
}

/// RemovePodSandbox; one that is gone already is removed.
pub async fn remove_sandbox(c: &Client, id: &str) -> Result<(), String> {
    let req = c.request(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    });
    match c
        .call(
            "RemovePodSandbox",
            c.runtime.clone().remove_pod_sandbox(req),
        )
        .await
    {
        Err(e) if !not_found(&e) => Err(message(&e)),
        _ => Ok(()),
    }
}

/// StopPodSandbox; one that is gone already is stopped.
pub async fn stop_sandbox(c: &Client, id: &str) -> Result<(), String> {
    let req = c.request(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    });
    match c
        .call("StopPodSandbox", c.runtime.clone().stop_pod_sandbox(req))
        .await
    {
        Err(e) if !not_found(&e) => Err(message(&e)),
        _ => Ok(()),
    }
}

/// StopContainer with a grace period; one that is gone already is stopped.
pub async fn stop_container(c: &Client, id: &str, timeout: i64) -> Result<(), String> {
    let req = c.request(cri::StopContainerRequest {
        container_id: id.to_string(),
        timeout,
    });
    match c
        .call("StopContainer", c.runtime.clone().stop_container(req))
        .await
    {
        Err(e) if !not_found(&e) => Err(message(&e)),
        _ => Ok(()),
    }
}
