//! Pod verbs: runp, pods, inspectp, stopp, rmp.

use std::path::PathBuf;

use berth_cri::runtime::v1 as cri;
use clap::Args;

use crate::connect::Clients;
use crate::output::{print_status, print_structured, print_table, table, Format};
use crate::{configfile, ids, req, rpc, CliError, Global};

#[derive(Debug, Args)]
pub struct RunpArgs {
    /// The pod config (crictl's JSON or YAML).
    pub config: PathBuf,
    /// The runtime handler.
    #[arg(long)]
    pub runtime: Option<String>,
}

pub async fn runp(c: &mut Clients, g: &Global, a: RunpArgs) -> Result<(), CliError> {
    let config: cri::PodSandboxConfig = configfile::load(&a.config)?;
    let id = run_pod(c, g, config, a.runtime.unwrap_or_default()).await?;
    println!("{id}");
    Ok(())
}

pub async fn run_pod(
    c: &mut Clients,
    g: &Global,
    config: cri::PodSandboxConfig,
    runtime_handler: String,
) -> Result<String, CliError> {
    Ok(c.runtime
        .run_pod_sandbox(req(
            cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler,
            },
            g,
        ))
        .await
        .map_err(rpc("RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id)
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Only the pod with this id (or id prefix).
    #[arg(long)]
    pub id: Option<String>,
    /// Only pods whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only pods in this namespace (substring).
    #[arg(long)]
    pub namespace: Option<String>,
    /// ready or notready.
    #[arg(long, short = 's')]
    pub state: Option<String>,
    /// Only pods with this label (key=value), repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    /// Only pods of this runtime handler.
    #[arg(long)]
    pub runtime: Option<String>,
    #[command(flatten)]
    pub list: ids::ListOpts,
}

fn pod_state(s: &str) -> Result<i32, CliError> {
    match s.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => Ok(cri::PodSandboxState::SandboxReady as i32),
        "notready" | "sandbox_notready" => Ok(cri::PodSandboxState::SandboxNotready as i32),
        other => Err(CliError::Usage(format!(
            "unknown pod state {other:?} (ready, notready)"
        ))),
    }
}

pub async fn pods(c: &mut Clients, g: &Global, a: PodsArgs) -> Result<(), CliError> {
    let filter = cri::PodSandboxFilter {
        id: a.id.clone().unwrap_or_default(),
        state: a
            .state
            .as_deref()
            .map(pod_state)
            .transpose()?
            .map(|state| cri::PodSandboxStateValue { state }),
        label_selector: ids::labels(&a.label)?,
    };
    let mut items = c
        .runtime
        .list_pod_sandbox(req(
            cri::ListPodSandboxRequest {
                filter: Some(filter),
            },
            g,
        ))
        .await
        .map_err(rpc("ListPodSandbox"))?
        .into_inner()
        .items;
    items.retain(|p| {
        let m = p.metadata.clone().unwrap_or_default();
        a.name.as_deref().is_none_or(|n| m.name.contains(n))
            && a.namespace
                .as_deref()
                .is_none_or(|n| m.namespace.contains(n))
            && a.runtime.as_deref().is_none_or(|r| p.runtime_handler == r)
    });
    a.list.select(&mut items, |p| p.created_at);
    if a.list.quiet {
        for p in &items {
            println!("{}", p.id);
        }
        return Ok(());
    }
    if a.list.output != Format::Table {
        return print_structured(&serde_json::json!({ "items": items }), a.list.output);
    }
    let now = ids::now_ns();
    let mut t = table(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for p in &items {
        let m = p.metadata.clone().unwrap_or_default();
        let state = if p.state == cri::PodSandboxState::SandboxReady as i32 {
            "Ready"
        } else {
            "NotReady"
        };
        t.add_row(vec![
            ids::shown(&p.id, a.list.no_trunc),
            ids::age(p.created_at, now),
            state.to_string(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
            if p.runtime_handler.is_empty() {
                "(default)".to_string()
            } else {
                p.runtime_handler.clone()
            },
        ]);
    }
    print_table(&mut t);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectpArgs {
    /// Pod ids (or unique prefixes).
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    pub output: Format,
}

pub async fn inspectp(c: &mut Clients, g: &Global, a: InspectpArgs) -> Result<(), CliError> {
    for id in ids::targets(c, g, ids::Kind::Pod, false, &a.ids, "inspectp").await? {
        let r = c
            .runtime
            .pod_sandbox_status(req(
                cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: true,
                },
                g,
            ))
            .await
            .map_err(rpc("PodSandboxStatus"))?
            .into_inner();
        print_status(&r.status, &r.info, a.output)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct StoppArgs {
    /// Pod ids (or unique prefixes).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

pub async fn stopp(c: &mut Clients, g: &Global, a: StoppArgs) -> Result<(), CliError> {
    for id in ids::targets(c, g, ids::Kind::Pod, false, &a.ids, "stopp").await? {
        stop_pod(c, g, &id).await?;
        println!("Stopped sandbox {id}");
    }
    Ok(())
}

async fn stop_pod(c: &mut Clients, g: &Global, id: &str) -> Result<(), CliError> {
    c.runtime
        .stop_pod_sandbox(req(
            cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            },
            g,
        ))
        .await
        .map_err(rpc("StopPodSandbox"))?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmpArgs {
    /// Pod ids (or unique prefixes).
    pub ids: Vec<String>,
    /// Remove every pod.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Stop running pods first (RemovePodSandbox stops them anyway).
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub async fn rmp(c: &mut Clients, g: &Global, a: RmpArgs) -> Result<(), CliError> {
    let targets = ids::targets(c, g, ids::Kind::Pod, a.all, &a.ids, "rmp").await?;
    for id in targets {
        if a.force {
            stop_pod(c, g, &id).await?;
        }
        c.runtime
            .remove_pod_sandbox(req(
                cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                },
                g,
            ))
            .await
            .map_err(rpc("RemovePodSandbox"))?;
        println!("Removed sandbox {id}");
    }
    Ok(())
}
