//! GetContainerEvents: every event of the runtime (`berth_runtime::events`)
//! from the moment of the call, until the caller goes. A caller that falls
//! more than `berth_runtime::events::EVENT_BACKLOG` events behind gets
//! RESOURCE_EXHAUSTED saying how many it missed, and must list again (the
//! kubelet's evented PLEG then relists and subscribes anew).

use berth_cri::runtime::v1 as cri;
use berth_runtime::{Event, EventKind};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::chunks::ListStream;
use crate::convert;

/// A subscription, as the CRI stream.
pub(super) fn subscribe(rt: &berth_runtime::Runtime) -> ListStream<cri::ContainerEventResponse> {
    let rx = rt.subscribe_events();
    tracing::info!(method = "GetContainerEvents", "subscribed");
    let stream = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(event) => Some((Ok(to_cri(&event)), Some(rx))),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    method = "GetContainerEvents",
                    missed,
                    "a subscriber fell behind; ending its stream"
                );
                let status = Status::resource_exhausted(format!(
                    "this subscriber fell behind and missed {missed} container events; \
                     list pods and containers again and subscribe anew"
                ));
                Some((Err(status), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    Box::pin(stream)
}

fn to_cri(e: &Event) -> cri::ContainerEventResponse {
    let kind = match e.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    cri::ContainerEventResponse {
        container_id: e.container_id.clone(),
        container_event_type: kind as i32,
        created_at: e.created_at,
        pod_sandbox_status: e.pod.as_ref().map(convert::pod_status),
        containers_statuses: e.containers.iter().map(convert::container_status).collect(),
    }
}
