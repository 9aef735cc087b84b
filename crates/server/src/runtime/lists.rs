//! ListPodSandbox, ListContainers, ListContainerStats and
//! ListPodSandboxStats, and their streaming forms: one body each, the
//! stream splits the same answer into messages (`crate::chunks`).

use berth_cri::runtime::v1 as cri;

use super::blocking;
use crate::convert;
use crate::error::ServerError;

pub(super) fn pods(
    rt: &berth_runtime::Runtime,
    filter: Option<cri::PodSandboxFilter>,
) -> Vec<cri::PodSandbox> {
    convert::pod_filter(filter)
        .map(|f| rt.list_pods(&f))
        .unwrap_or_default()
        .iter()
        .map(convert::pod_sandbox)
        .collect()
}

pub(super) fn containers(
    rt: &berth_runtime::Runtime,
    filter: Option<cri::ContainerFilter>,
) -> Vec<cri::Container> {
    let filter = match filter {
        None => Some(Default::default()),
        Some(f) => convert::container_filter(
            f.id,
            f.pod_sandbox_id,
            f.state.map(|s| s.state),
            f.label_selector,
        ),
    };
    filter
        .map(|f| rt.list_containers(&f))
        .unwrap_or_default()
        .iter()
        .map(convert::container)
        .collect()
}

/// cgroup files of every container: read off the async workers, so that
/// Status and the rest never wait behind them.
pub(super) async fn container_stats(
    rt: &berth_runtime::Runtime,
    filter: Option<cri::ContainerStatsFilter>,
) -> Result<Vec<cri::ContainerStats>, ServerError> {
    let filter = match filter {
        None => Some(Default::default()),
        Some(f) => convert::container_filter(f.id, f.pod_sandbox_id, None, f.label_selector),
    };
    let Some(filter) = filter else {
        return Ok(Vec::new());
    };
    let rt = rt.clone();
    let stats = blocking(move || rt.list_container_stats(&filter)).await?;
    Ok(stats.iter().map(convert::container_stats).collect())
}

pub(super) async fn pod_stats(
    rt: &berth_runtime::Runtime,
    filter: Option<cri::PodSandboxStatsFilter>,
) -> Result<Vec<cri::PodSandboxStats>, ServerError> {
    let filter = filter.unwrap_or_default();
    let filter = berth_runtime::PodFilter {
        id: filter.id,
        ready: None,
        labels: filter.label_selector.into_iter().collect(),
    };
    let rt = rt.clone();
    let stats = blocking(move || rt.list_pod_stats(&filter)).await?;
    Ok(stats.iter().map(convert::pod_stats).collect())
}
