//! Ids given on the command line: unique prefixes resolved against the
//! runtime's lists, and ages for tables.

use berth_cri::runtime::v1 as cri;

use crate::{connect::Clients, req, rpc, CliError, Global};

/// The one id in `ids` that is `wanted` or starts with it.
pub fn pick(ids: &[String], wanted: &str, what: &str) -> Result<String, CliError> {
    if wanted.is_empty() {
        return Err(CliError::Usage(format!("empty {what} id")));
    }
    if let Some(exact) = ids.iter().find(|i| *i == wanted) {
        return Ok(exact.clone());
    }
    let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::NotFound(format!("no {what} with id {wanted:?}"))),
        _ => Err(CliError::Usage(format!(
            "{what} id prefix {wanted:?} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// Every pod the runtime has.
pub async fn pods(c: &mut Clients, g: &Global) -> Result<Vec<cri::PodSandbox>, CliError> {
    Ok(c.runtime
        .list_pod_sandbox(req(cri::ListPodSandboxRequest { filter: None }, g))
        .await
        .map_err(rpc("ListPodSandbox"))?
        .into_inner()
        .items)
}

pub async fn pod_ids(c: &mut Clients, g: &Global) -> Result<Vec<String>, CliError> {
    Ok(pods(c, g).await?.into_iter().map(|p| p.id).collect())
}

pub async fn container_ids(c: &mut Clients, g: &Global) -> Result<Vec<String>, CliError> {
    Ok(c.runtime
        .list_containers(req(cri::ListContainersRequest { filter: None }, g))
        .await
        .map_err(rpc("ListContainers"))?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect())
}

/// What a command's ids name.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Pod,
    Container,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Container => "container",
        }
    }
}

/// The ids a command acts on: every one of `kind` with `all`, else each of
/// `wanted` resolved (one listing for all of them).
pub async fn targets(
    c: &mut Clients,
    g: &Global,
    kind: Kind,
    all: bool,
    wanted: &[String],
    verb: &str,
) -> Result<Vec<String>, CliError> {
    if !all && wanted.is_empty() {
        return Err(CliError::Usage(format!(
            "{verb}: give {} ids or --all",
            kind.noun()
        )));
    }
    let ids = match kind {
        Kind::Pod => pod_ids(c, g).await?,
        Kind::Container => container_ids(c, g).await?,
    };
    if all {
        return Ok(ids);
    }
    wanted.iter().map(|w| pick(&ids, w, kind.noun())).collect()
}

pub async fn pod(c: &mut Clients, g: &Global, wanted: &str) -> Result<String, CliError> {
    let ids = pod_ids(c, g).await?;
    pick(&ids, wanted, "pod")
}

pub async fn container(c: &mut Clients, g: &Global, wanted: &str) -> Result<String, CliError> {
    let ids = container_ids(c, g).await?;
    pick(&ids, wanted, "container")
}

/// "5 seconds ago", "3 minutes ago", "2 hours ago", "4 days ago".
pub fn age(created_ns: i64, now_ns: i64) -> String {
    let secs = (now_ns - created_ns).max(0) / 1_000_000_000;
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Ids shown in tables: 13 characters unless --no-trunc.
pub fn shown(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(13).collect()
    }
}

/// The output options `pods` and `ps` share.
#[derive(Debug, clap::Args)]
pub struct ListOpts {
    /// Ids only.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: crate::Format,
    /// Full ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// The most recent one only.
    #[arg(long, short = 'l')]
    pub latest: bool,
    /// The N most recent ones.
    #[arg(long)]
    pub last: Option<usize>,
}

impl ListOpts {
    /// Newest first, cut to --latest or --last.
    pub fn select<T>(&self, items: &mut Vec<T>, created: impl Fn(&T) -> i64) {
        items.sort_by_key(|x| std::cmp::Reverse(created(x)));
        if self.latest {
            items.truncate(1);
        } else if let Some(n) = self.last {
            items.truncate(n);
        }
    }
}

/// `k=v` labels from the command line.
pub fn labels(pairs: &[String]) -> Result<std::collections::HashMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::Usage(format!("label {p:?} is not key=value")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let ids = vec!["abc1".to_string(), "abd2".to_string()];
        assert_eq!(pick(&ids, "abc", "pod").unwrap(), "abc1");
        assert!(matches!(pick(&ids, "ab", "pod"), Err(CliError::Usage(_))));
        assert!(matches!(pick(&ids, "x", "pod"), Err(CliError::NotFound(_))));
    }

    #[test]
    fn ages() {
        let s = 1_000_000_000i64;
        assert_eq!(age(0, 5 * s), "5 seconds ago");
        assert_eq!(age(0, 60 * s), "1 minute ago");
        assert_eq!(age(0, 3600 * s), "An hour ago");
        assert_eq!(age(0, 7200 * s), "2 hours ago");
        assert_eq!(age(0, 3 * 86_400 * s), "3 days ago");
        assert_eq!(labels(&["a=b".into()]).unwrap()["a"], "b");
        assert!(labels(&["ab".into()]).is_err());
    }
}
