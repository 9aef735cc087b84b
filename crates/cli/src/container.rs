//! Container verbs: create, start, ps, inspect, stop, rm, exec, update, run.

use std::io::Write;
use std::path::PathBuf;

use berth_cri::runtime::v1 as cri;
use clap::Args;

use crate::connect::Clients;
use crate::output::{print_status, print_structured, print_table, table, Format};
use crate::sandbox::run_pod;
use crate::{configfile, ids, req, rpc, CliError, Global};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The pod to create the container in (id or unique prefix).
    pub pod: String,
    /// The container config (crictl's JSON or YAML).
    pub container_config: PathBuf,
    /// The pod's config (crictl's JSON or YAML).
    pub pod_config: PathBuf,
    /// Fail instead of pulling a missing image.
    #[arg(long)]
    pub no_pull: bool,
}

/// Pulls the container's image if the runtime does not have it.
async fn ensure_image(
    c: &mut Clients,
    g: &Global,
    config: &cri::ContainerConfig,
    pod: &cri::PodSandboxConfig,
    no_pull: bool,
) -> Result<(), CliError> {
    let image = config.image.clone().unwrap_or_default();
    if image.image.is_empty() {
        return Err(CliError::Usage(
            "the container config names no image".into(),
        ));
    }
    if crate::images::present(c, g, Some(image.clone())).await? {
        return Ok(());
    }
    if no_pull {
        return Err(CliError::NotFound(format!(
            "image {} is not present",
            image.image
        )));
    }
    c.image
        .pull_image(cri::PullImageRequest {
            image: Some(image),
            auth: None,
            sandbox_config: Some(pod.clone()),
        })
        .await
        .map_err(rpc("PullImage"))?;
    Ok(())
}

async fn create_in(
    c: &mut Clients,
    g: &Global,
    pod_id: String,
    config: cri::ContainerConfig,
    pod: cri::PodSandboxConfig,
    no_pull: bool,
) -> Result<String, CliError> {
    ensure_image(c, g, &config, &pod, no_pull).await?;
    Ok(c.runtime
        .create_container(req(
            cri::CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(config),
                sandbox_config: Some(pod),
            },
            g,
        ))
        .await
        .map_err(rpc("CreateContainer"))?
        .into_inner()
        .container_id)
}

pub async fn create(c: &mut Clients, g: &Global, a: CreateArgs) -> Result<(), CliError> {
    let pod_id = ids::pod(c, g, &a.pod).await?;
    let config: cri::ContainerConfig = configfile::load(&a.container_config)?;
    let pod: cri::PodSandboxConfig = configfile::load(&a.pod_config)?;
    let id = create_in(c, g, pod_id, config, pod, a.no_pull).await?;
    println!("{id}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Container ids (or unique prefixes).
    #[arg(required = true)]
    pub ids: Vec<String>,
}

async fn start_one(c: &mut Clients, g: &Global, id: &str) -> Result<(), CliError> {
    c.runtime
        .start_container(req(
            cri::StartContainerRequest {
                container_id: id.to_string(),
            },
            g,
        ))
        .await
        .map_err(rpc("StartContainer"))?;
    Ok(())
}

pub async fn start(c: &mut Clients, g: &Global, a: IdsArgs) -> Result<(), CliError> {
    for id in ids::targets(c, g, ids::Kind::Container, false, &a.ids, "start").await? {
        start_one(c, g, &id).await?;
        println!("{id}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Include exited and created containers.
    #[arg(long, short = 'a')]
    pub all: bool,
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only containers of this pod (id or prefix).
    #[arg(long, short = 'p')]
    pub pod: Option<String>,
    /// created, running, exited or unknown.
    #[arg(long, short = 's')]
    pub state: Option<String>,
    #[arg(long)]
    pub label: Vec<String>,
    /// Only containers whose image contains this.
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub list: ids::ListOpts,
}

fn container_state(s: &str) -> Result<i32, CliError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "created" => cri::ContainerState::ContainerCreated,
        "running" => cri::ContainerState::ContainerRunning,
        "exited" => cri::ContainerState::ContainerExited,
        "unknown" => cri::ContainerState::ContainerUnknown,
        other => {
            return Err(CliError::Usage(format!(
                "unknown container state {other:?} (created, running, exited, unknown)"
            )))
        }
    } as i32)
}

fn state_name(s: i32) -> &'static str {
    match cri::ContainerState::try_from(s) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

pub async fn ps(c: &mut Clients, g: &Global, a: PsArgs) -> Result<(), CliError> {
    let pod = match &a.pod {
        Some(p) => ids::pod(c, g, p).await?,
        None => String::new(),
    };
    let state = match (&a.state, a.all) {
        (Some(s), _) => Some(container_state(s)?),
        (None, false) => Some(cri::ContainerState::ContainerRunning as i32),
        (None, true) => None,
    };
    let filter = cri::ContainerFilter {
        id: a.id.clone().unwrap_or_default(),
        state: state.map(|state| cri::ContainerStateValue { state }),
        pod_sandbox_id: pod,
        label_selector: ids::labels(&a.label)?,
    };
    let mut items = c
        .runtime
        .list_containers(req(
            cri::ListContainersRequest {
                filter: Some(filter),
            },
            g,
        ))
        .await
        .map_err(rpc("ListContainers"))?
        .into_inner()
        .containers;
    items.retain(|x| {
        let m = x.metadata.clone().unwrap_or_default();
        let image = x.image.clone().unwrap_or_default().image;
        a.name.as_deref().is_none_or(|n| m.name.contains(n))
            && a.image.as_deref().is_none_or(|i| image.contains(i))
    });
    a.list.select(&mut items, |x| x.created_at);
    if a.list.quiet {
        for x in &items {
            println!("{}", x.id);
        }
        return Ok(());
    }
    if a.list.output != Format::Table {
        return print_structured(&serde_json::json!({ "containers": items }), a.list.output);
    }
    let pods: std::collections::HashMap<String, String> = ids::pods(c, g)
        .await?
        .into_iter()
        .map(|p| (p.id, p.metadata.unwrap_or_default().name))
        .collect();
    let now = ids::now_ns();
    let mut t = table(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]);
    for x in &items {
        let m = x.metadata.clone().unwrap_or_default();
        t.add_row(vec![
            ids::shown(&x.id, a.list.no_trunc),
            x.image.clone().unwrap_or_default().image,
            ids::age(x.created_at, now),
            state_name(x.state).to_string(),
            m.name,
            m.attempt.to_string(),
            ids::shown(&x.pod_sandbox_id, a.list.no_trunc),
            pods.get(&x.pod_sandbox_id).cloned().unwrap_or_default(),
        ]);
    }
    print_table(&mut t);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long, short = 'o', value_enum, default_value = "json")]
    pub output: Format,
}

pub async fn inspect(c: &mut Clients, g: &Global, a: InspectArgs) -> Result<(), CliError> {
    for id in ids::targets(c, g, ids::Kind::Container, false, &a.ids, "inspect").await? {
        let r = c
            .runtime
            .container_status(req(
                cri::ContainerStatusRequest {
                    container_id: id,
                    verbose: true,
                },
                g,
            ))
            .await
            .map_err(rpc("ContainerStatus"))?
            .into_inner();
        print_status(&r.status, &r.info, a.output)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Seconds between the stop signal and SIGKILL (0: at once).
    #[arg(long, default_value_t = 10)]
    pub time: i64,
}

pub async fn stop(c: &mut Clients, g: &Global, a: StopArgs) -> Result<(), CliError> {
    for id in ids::targets(c, g, ids::Kind::Container, false, &a.ids, "stop").await? {
        let mut r = tonic::Request::new(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: a.time,
        });
        r.set_timeout(g.timeout + std::time::Duration::from_secs(a.time.max(0) as u64));
        c.runtime
            .stop_container(r)
            .await
            .map_err(rpc("StopContainer"))?;
        println!("{id}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub ids: Vec<String>,
    /// Remove every container.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Stop running containers first (at once).
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub async fn rm(c: &mut Clients, g: &Global, a: RmArgs) -> Result<(), CliError> {
    let targets = ids::targets(c, g, ids::Kind::Container, a.all, &a.ids, "rm").await?;
    for id in targets {
        if a.force {
            c.runtime
                .stop_container(req(
                    cri::StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    },
                    g,
                ))
                .await
                .map_err(rpc("StopContainer"))?;
        }
        c.runtime
            .remove_container(req(
                cri::RemoveContainerRequest {
                    container_id: id.clone(),
                },
                g,
            ))
            .await
            .map_err(rpc("RemoveContainer"))?;
        println!("{id}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Send this process's stdin to the command (through the streaming
    /// server).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the command in a terminal (through the streaming server).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Seconds before the command is killed (0: no limit).
    #[arg(long = "exec-timeout", default_value_t = 0)]
    pub exec_timeout: i64,
    /// The container (id or unique prefix).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Runs the command through ExecSync, or with `-i`/`-t` through the
/// streaming server; returns its exit code.
pub async fn exec(c: &mut Clients, g: &Global, a: ExecArgs) -> Result<i32, CliError> {
    let id = ids::container(c, g, &a.container).await?;
    if a.interactive || a.tty {
        return crate::interactive::exec(c, g, id, a.cmd, a.interactive, a.tty).await;
    }
    let mut r = tonic::Request::new(cri::ExecSyncRequest {
        container_id: id,
        cmd: a.cmd,
        timeout: a.exec_timeout,
    });
    if a.exec_timeout > 0 {
        r.set_timeout(g.timeout + std::time::Duration::from_secs(a.exec_timeout as u64));
    }
    let out = c
        .runtime
        .exec_sync(r)
        .await
        .map_err(rpc("ExecSync"))?
        .into_inner();
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    Ok(out.exit_code)
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long)]
    pub cpu_shares: Option<i64>,
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<i64>,
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
}

pub async fn update(c: &mut Clients, g: &Global, a: UpdateArgs) -> Result<(), CliError> {
    let resources = cri::LinuxContainerResources {
        cpu_shares: a.cpu_shares.unwrap_or(0),
        cpu_quota: a.cpu_quota.unwrap_or(0),
        cpu_period: a.cpu_period.unwrap_or(0),
        cpuset_cpus: a.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: a.cpuset_mems.clone().unwrap_or_default(),
        memory_limit_in_bytes: a.memory.unwrap_or(0),
        ..Default::default()
    };
    for id in ids::targets(c, g, ids::Kind::Container, false, &a.ids, "update").await? {
        c.runtime
            .update_container_resources(req(
                cri::UpdateContainerResourcesRequest {
                    container_id: id.clone(),
                    linux: Some(resources.clone()),
                    ..Default::default()
                },
                g,
            ))
            .await
            .map_err(rpc("UpdateContainerResources"))?;
        println!("{id}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container config (crictl's JSON or YAML).
    pub container_config: PathBuf,
    /// The pod config (crictl's JSON or YAML).
    pub pod_config: PathBuf,
    /// The runtime handler of the pod.
    #[arg(long)]
    pub runtime: Option<String>,
    #[arg(long)]
    pub no_pull: bool,
}

/// Pod + container in one go; prints the container id.
pub async fn run(c: &mut Clients, g: &Global, a: RunArgs) -> Result<(), CliError> {
    let config: cri::ContainerConfig = configfile::load(&a.container_config)?;
    let pod: cri::PodSandboxConfig = configfile::load(&a.pod_config)?;
    ensure_image(c, g, &config, &pod, a.no_pull).await?;
    let pod_id = run_pod(c, g, pod.clone(), a.runtime.unwrap_or_default()).await?;
    let id = create_in(c, g, pod_id, config, pod, true).await?;
    start_one(c, g, &id).await?;
    println!("{id}");
    Ok(())
}
