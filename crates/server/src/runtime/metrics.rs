//! ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics
//! over `berth_runtime::metrics`.

use berth_cri::runtime::v1 as cri;
use berth_runtime::metrics::{Metric, MetricKind};

pub(super) fn descriptors() -> Vec<cri::MetricDescriptor> {
    berth_runtime::metrics::descriptors()
        .into_iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: d.label_keys.iter().map(|k| k.to_string()).collect(),
        })
        .collect()
}

fn metric(m: &Metric) -> cri::Metric {
    cri::Metric {
        name: m.name.to_string(),
        timestamp: m.timestamp,
        metric_type: match m.kind {
            MetricKind::Counter => cri::MetricType::Counter,
            MetricKind::Gauge => cri::MetricType::Gauge,
        } as i32,
        label_values: m.label_values.clone(),
        value: Some(cri::UInt64Value { value: m.value }),
    }
}

/// Every ready pod's metrics (cgroup files: run it off the async workers).
pub(super) fn pod_metrics(rt: &berth_runtime::Runtime) -> Vec<cri::PodSandboxMetrics> {
    rt.pod_metrics()
        .iter()
        .map(|p| cri::PodSandboxMetrics {
            pod_sandbox_id: p.pod_id.clone(),
            metrics: p.metrics.iter().map(metric).collect(),
            container_metrics: p
                .containers
                .iter()
                .map(|(id, ms)| cri::ContainerMetrics {
                    container_id: id.clone(),
                    metrics: ms.iter().map(metric).collect(),
                })
                .collect(),
        })
        .collect()
}
