//! `stats`, `statsp` and `events`: container and pod usage, and the
//! runtime's container events as they happen.

use std::collections::HashMap;
use std::time::Duration;

use berth_cri::runtime::v1 as cri;
use clap::Args;

use crate::output::{human_size, print_structured, print_table, table, Format};
use crate::{ids, req, rpc, CliError, Clients, Global};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this container (an id or a unique prefix).
    pub id: Option<String>,
    /// Only containers of this pod.
    #[arg(long, short = 'p')]
    pub pod: Option<String>,
    /// Only containers with this label (k=v; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
    /// When the runtime has no CPU rate yet, sample this long to compute one.
    #[arg(long, short = 's', default_value = "1", value_parser = seconds)]
    pub seconds: Duration,
    /// Print again every --seconds until interrupted.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .parse()
        .map_err(|_| format!("invalid number of seconds {s:?}"))?;
    if !(0.0..=3600.0).contains(&n) {
        return Err(format!("{s} seconds is out of range (0..3600)"));
    }
    Ok(Duration::from_secs_f64(n))
}

/// CPU use in percent of one core: the runtime's rate, else the change of
/// the cumulative time between two samples.
fn cpu_percent(now: Option<&cri::CpuUsage>, before: Option<&cri::CpuUsage>) -> Option<f64> {
    let now = now?;
    if let Some(rate) = &now.usage_nano_cores {
        return Some(rate.value as f64 / 1e7);
    }
    let before = before?;
    let (n1, n0) = (
        now.usage_core_nano_seconds.as_ref()?.value,
        before.usage_core_nano_seconds.as_ref()?.value,
    );
    let dt = now.timestamp - before.timestamp;
    (dt > 0 && n1 >= n0).then(|| (n1 - n0) as f64 * 100.0 / dt as f64)
}

fn percent(p: Option<f64>) -> String {
    p.map_or("-".into(), |p| format!("{p:.2}"))
}

fn bytes(v: Option<&cri::UInt64Value>) -> String {
    v.map_or("-".into(), |v| human_size(v.value))
}

async fn container_stats(
    c: &mut Clients,
    g: &Global,
    filter: &cri::ContainerStatsFilter,
) -> Result<Vec<cri::ContainerStats>, CliError> {
    Ok(c.runtime
        .list_container_stats(req(
            cri::ListContainerStatsRequest {
                filter: Some(filter.clone()),
            },
            g,
        ))
        .await
        .map_err(rpc("ListContainerStats"))?
        .into_inner()
        .stats)
}

fn id_of(s: &cri::ContainerStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

pub async fn stats(c: &mut Clients, g: &Global, a: StatsArgs) -> Result<(), CliError> {
    let filter = cri::ContainerStatsFilter {
        id: match &a.id {
            Some(id) => ids::container(c, g, id).await?,
            None => String::new(),
        },
        pod_sandbox_id: match &a.pod {
            Some(p) => ids::pod(c, g, p).await?,
            None => String::new(),
        },
        label_selector: ids::labels(&a.label)?,
    };
    let mut before: HashMap<String, cri::CpuUsage> = HashMap::new();
    loop {
        let mut items = container_stats(c, g, &filter).await?;
        let needs_rate = items
            .iter()
            .any(|s| s.cpu.as_ref().is_some_and(|u| u.usage_nano_cores.is_none()));
        if needs_rate && before.is_empty() && a.output == Format::Table {
            before = cpu_samples(&items);
            tokio::time::sleep(a.seconds).await;
            items = container_stats(c, g, &filter).await?;
        }
        items.sort_by_key(id_of);
        if a.output != Format::Table {
            print_structured(&serde_json::json!({ "stats": items }), a.output)?;
        } else {
            let mut t = table(&[
                "CONTAINER",
                "NAME",
                "CPU %",
                "MEM",
                "DISK",
                "INODES",
                "SWAP",
            ]);
            for s in &items {
                let attr = s.attributes.clone().unwrap_or_default();
                let layer = s.writable_layer.clone().unwrap_or_default();
                t.add_row(vec![
                    ids::shown(&attr.id, false),
                    attr.metadata.unwrap_or_default().name,
                    percent(cpu_percent(s.cpu.as_ref(), before.get(&attr.id))),
                    bytes(s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref())),
                    bytes(layer.used_bytes.as_ref()),
                    layer
                        .inodes_used
                        .map_or("-".into(), |i| i.value.to_string()),
                    bytes(s.swap.as_ref().and_then(|w| w.swap_usage_bytes.as_ref())),
                ]);
            }
            print_table(&mut t);
        }
        if !a.watch {
            return Ok(());
        }
        before = cpu_samples(&items);
        tokio::time::sleep(a.seconds.max(Duration::from_millis(100))).await;
        println!();
    }
}

fn cpu_samples(items: &[cri::ContainerStats]) -> HashMap<String, cri::CpuUsage> {
    items
        .iter()
        .filter_map(|s| Some((id_of(s), s.cpu?)))
        .collect()
}

#[derive(Debug, Args)]
pub struct StatspArgs {
    /// Only this pod (an id or a unique prefix).
    pub id: Option<String>,
    /// Only pods with this label (k=v; repeatable).
    #[arg(long)]
    pub label: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
    /// When the runtime has no CPU rate yet, sample this long to compute one.
    #[arg(long, short = 's', default_value = "1", value_parser = seconds)]
    pub seconds: Duration,
}

async fn pod_stats(
    c: &mut Clients,
    g: &Global,
    filter: &cri::PodSandboxStatsFilter,
) -> Result<Vec<cri::PodSandboxStats>, CliError> {
    Ok(c.runtime
        .list_pod_sandbox_stats(req(
            cri::ListPodSandboxStatsRequest {
                filter: Some(filter.clone()),
            },
            g,
        ))
        .await
        .map_err(rpc("ListPodSandboxStats"))?
        .into_inner()
        .stats)
}

fn pod_id(s: &cri::PodSandboxStats) -> String {
    s.attributes
        .as_ref()
        .map(|a| a.id.clone())
        .unwrap_or_default()
}

pub async fn statsp(c: &mut Clients, g: &Global, a: StatspArgs) -> Result<(), CliError> {
    let filter = cri::PodSandboxStatsFilter {
        id: match &a.id {
            Some(id) => ids::pod(c, g, id).await?,
            None => String::new(),
        },
        label_selector: ids::labels(&a.label)?,
    };
    let mut items = pod_stats(c, g, &filter).await?;
    let cpu = |s: &cri::PodSandboxStats| s.linux.as_ref().and_then(|l| l.cpu);
    let mut before = HashMap::new();
    if a.output == Format::Table
        && items
            .iter()
            .any(|s| cpu(s).is_some_and(|u| u.usage_nano_cores.is_none()))
    {
        before = items
            .iter()
            .filter_map(|s| Some((pod_id(s), cpu(s)?)))
            .collect::<HashMap<_, _>>();
        tokio::time::sleep(a.seconds).await;
        items = pod_stats(c, g, &filter).await?;
    }
    items.sort_by_key(pod_id);
    if a.output != Format::Table {
        return print_structured(&serde_json::json!({ "stats": items }), a.output);
    }
    let mut t = table(&["POD", "POD ID", "CPU %", "MEM", "PROCS", "NET RX", "NET TX"]);
    for s in &items {
        let attr = s.attributes.clone().unwrap_or_default();
        let linux = s.linux.clone().unwrap_or_default();
        let net = linux.network.clone().unwrap_or_default();
        let sum = |f: fn(&cri::NetworkInterfaceUsage) -> Option<u64>| {
            net.interfaces
                .iter()
                .map(f)
                .sum::<Option<u64>>()
                .map(|value| cri::UInt64Value { value })
        };
        t.add_row(vec![
            attr.metadata.unwrap_or_default().name,
            ids::shown(&attr.id, false),
            percent(cpu_percent(linux.cpu.as_ref(), before.get(&attr.id))),
            bytes(
                linux
                    .memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes.as_ref()),
            ),
            linux
                .process
                .and_then(|p| p.process_count)
                .map_or("-".into(), |n| n.value.to_string()),
            bytes(sum(|i| i.rx_bytes.as_ref().map(|v| v.value)).as_ref()),
            bytes(sum(|i| i.tx_bytes.as_ref().map(|v| v.value)).as_ref()),
        ]);
    }
    print_table(&mut t);
    Ok(())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Output format: a line per event, or one JSON/YAML document per event.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

fn event_name(t: i32) -> &'static str {
    match cri::ContainerEventType::try_from(t) {
        Ok(cri::ContainerEventType::ContainerCreatedEvent) => "CREATED",
        Ok(cri::ContainerEventType::ContainerStartedEvent) => "STARTED",
        Ok(cri::ContainerEventType::ContainerStoppedEvent) => "STOPPED",
        Ok(cri::ContainerEventType::ContainerDeletedEvent) => "DELETED",
        Err(_) => "UNKNOWN",
    }
}

/// One line for an event: time, kind, what it happened to, and its pod.
pub fn event_line(e: &cri::ContainerEventResponse) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(e.created_at)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let pod = e.pod_sandbox_status.as_ref();
    let pod_id = pod.map(|p| p.id.as_str()).unwrap_or("");
    let meta = pod.and_then(|p| p.metadata.clone()).unwrap_or_default();
    let (what, name) = if e.container_id == pod_id {
        ("pod", meta.name.clone())
    } else {
        let name = e
            .containers_statuses
            .iter()
            .find(|c| c.id == e.container_id)
            .and_then(|c| c.metadata.clone())
            .map(|m| m.name)
            .unwrap_or_default();
        ("container", name)
    };
    format!(
        "{time} {:<8} {what:<9} {} {name} (pod {}/{})",
        event_name(e.container_event_type),
        ids::shown(&e.container_id, false),
        meta.namespace,
        meta.name,
    )
}

/// Follows the runtime's events until interrupted or the runtime ends the
/// stream (an error says why, for instance that this client fell behind).
pub async fn events(c: &mut Clients, _g: &Global, a: EventsArgs) -> Result<(), CliError> {
    // No deadline: a subscription lasts as long as the user wants it.
    let mut stream = c
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .map_err(rpc("GetContainerEvents"))?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(rpc("GetContainerEvents"))? {
        match a.output {
            Format::Table => println!("{}", event_line(&e)),
            Format::Json => println!(
                "{}",
                serde_json::to_string(&e).map_err(|x| CliError::Output(x.to_string()))?
            ),
            Format::Yaml => {
                println!("---");
                print_structured(&e, Format::Yaml)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(ts: i64, total: u64, rate: Option<u64>) -> cri::CpuUsage {
        cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: total }),
            usage_nano_cores: rate.map(|value| cri::UInt64Value { value }),
            psi: None,
        }
    }

    #[test]
    fn cpu_percent_from_rate_or_two_samples() {
        // Half a core.
        assert_eq!(
            cpu_percent(Some(&cpu(0, 0, Some(500_000_000))), None),
            Some(50.0)
        );
        let before = cpu(1_000_000_000, 1_000_000_000, None);
        let now = cpu(3_000_000_000, 2_000_000_000, None);
        assert_eq!(cpu_percent(Some(&now), Some(&before)), Some(50.0));
        assert_eq!(cpu_percent(Some(&now), None), None);
        // A counter that went back (a new container under the same id).
        assert_eq!(cpu_percent(Some(&before), Some(&now)), None);
    }

    #[test]
    fn event_lines_name_pods_and_containers() {
        let pod = cri::PodSandboxStatus {
            id: "p".repeat(64),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut e = cri::ContainerEventResponse {
            container_id: "p".repeat(64),
            container_event_type: cri::ContainerEventType::ContainerStartedEvent as i32,
            created_at: 1_700_000_000_123_000_000,
            pod_sandbox_status: Some(pod),
            containers_statuses: vec![cri::ContainerStatus {
                id: "c".repeat(64),
                metadata: Some(cri::ContainerMetadata {
                    name: "nginx".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }],
        };
        let line = event_line(&e);
        assert!(
            line.starts_with("2023-11-14T22:13:20.123Z STARTED  pod"),
            "{line}"
        );
        assert!(line.ends_with("web (pod default/web)"), "{line}");
        e.container_id = "c".repeat(64);
        e.container_event_type = cri::ContainerEventType::ContainerStoppedEvent as i32;
        let line = event_line(&e);
        assert!(line.contains("STOPPED  container ccccccccccccc "), "{line}");
        assert!(line.ends_with("nginx (pod default/web)"), "{line}");
    }
}
