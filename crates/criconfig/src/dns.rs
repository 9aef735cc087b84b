//! Pod DNS (kubelet `pkg/kubelet/network/dns`) and the pod's hostname.

use std::path::Path;

use berth_cri::runtime::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use crate::error::ConfigError;
use crate::node::NodeSettings;

const MAX_DNS_NAMESERVERS: usize = 3;
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
const HOSTNAME_MAX_LEN: usize = 63;

/// The parts of a resolver file the kubelet uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses in order.
    pub servers: Vec<String>,
    /// The last `search` line's domains (without trailing dots; "." dropped).
    pub searches: Vec<String>,
    /// `options` entries in order, a later entry replacing an earlier one of the same name.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolver file text.
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some((&key, values)) = fields.split_first() else {
                continue;
            };
            match key {
                "nameserver" => {
                    if let Some(v) = values.first() {
                        rc.servers.push(v.to_string());
                    }
                }
                "search" => {
                    rc.searches = values
                        .iter()
                        .filter(|s| **s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                "options" => {
                    for v in values {
                        let name = v.split(':').next().unwrap_or_default();
                        rc.options.retain(|o| o.split(':').next() != Some(name));
                        rc.options.push(v.to_string());
                    }
                }
                _ => {}
            }
        }
        rc
    }

    /// Reads and parses a resolver file (blocking).
    pub fn read(path: &Path) -> std::io::Result<ResolvConf> {
        Ok(ResolvConf::parse(&std::fs::read_to_string(path)?))
    }
}

fn omit_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

fn merge_options(
    existing: &[String],
    pod: &[k8s_openapi::api::core::v1::PodDNSConfigOption],
) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| {
        if let Some(e) = merged.iter_mut().find(|(n, _)| n == name) {
            e.1 = value.to_string();
        } else {
            merged.push((name.to_string(), value.to_string()));
        }
    };
    for op in existing {
        match op.split_once(':') {
            Some((n, v)) => set(n, v),
            None => set(op, ""),
        }
    }
    for op in pod {
        set(
            op.name.as_deref().unwrap_or_default(),
            op.value.as_deref().unwrap_or_default(),
        );
    }
    merged
        .into_iter()
        .map(|(n, v)| if v.is_empty() { n } else { format!("{n}:{v}") })
        .collect()
}

/// The pod's DNS config for each dnsPolicy, as the kubelet computes it:
/// ClusterFirst (cluster DNS servers, `<ns>.svc.<domain>` searches,
/// `ndots:5`; falls back to the host's resolver when no cluster DNS is
/// configured or the pod uses the host network), ClusterFirstWithHostNet,
/// Default (the host's resolver) and None, then merged with `dnsConfig`
/// and cut to the resolver limits. Options merge in order of first appearance
/// (the kubelet's order is a Go map's, so random).
pub fn pod_dns_config(pod: &Pod, node: &NodeSettings) -> Result<cri::DnsConfig, ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let host_network = spec.host_network.unwrap_or(false);
    let mut cfg = cri::DnsConfig {
        servers: node.host_dns.servers.clone(),
        searches: node.host_dns.searches.clone(),
        options: node.host_dns.options.clone(),
    };
    #[derive(PartialEq)]
    enum Kind {
        None,
        Cluster,
        Host,
    }
    let kind = match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "None" => Kind::None,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        "ClusterFirst" if !host_network => Kind::Cluster,
        "ClusterFirst" | "Default" => Kind::Host,
        other => {
            tracing::warn!(policy = other, "invalid dnsPolicy; using ClusterFirst");
            Kind::Cluster
        }
    };
    let mut use_host = kind == Kind::Host;
    match kind {
        Kind::None => cfg = cri::DnsConfig::default(),
        Kind::Cluster if !node.cluster_dns.is_empty() => {
            cfg.servers = node.cluster_dns.clone();
            if !node.cluster_domain.is_empty() {
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                let mut s = vec![
                    format!("{ns}.svc.{}", node.cluster_domain),
                    format!("svc.{}", node.cluster_domain),
                    node.cluster_domain.clone(),
                ];
                s.extend(cfg.searches);
                cfg.searches = omit_duplicates(s);
            }
            cfg.options = vec!["ndots:5".to_string()];
        }
        Kind::Cluster => use_host = true,
        Kind::Host => {}
    }
    if use_host && node.resolv_conf.as_os_str().is_empty() {
        for ip in &node.node_ips {
            cfg.servers.push(if ip.is_ipv6() {
                "::1".into()
            } else {
                "127.0.0.1".into()
            });
        }
        if cfg.servers.is_empty() {
            cfg.servers.push("127.0.0.1".into());
        }
        cfg.searches = vec![".".into()];
    }
    if let Some(pc) = &spec.dns_config {
        let mut servers = cfg.servers;
        servers.extend(pc.nameservers.iter().flatten().cloned());
        cfg.servers = omit_duplicates(servers);
        let mut searches = cfg.searches;
        searches.extend(pc.searches.iter().flatten().cloned());
        cfg.searches = omit_duplicates(searches);
        cfg.options = merge_options(&cfg.options, pc.options.as_deref().unwrap_or_default());
    }
    cfg.servers.truncate(MAX_DNS_NAMESERVERS);
    cfg.searches.truncate(MAX_DNS_SEARCH_PATHS);
    let mut total = 0;
    let mut keep = 0;
    for (i, s) in cfg.searches.iter().enumerate() {
        total += s.len() + usize::from(i > 0);
        if total > MAX_DNS_SEARCH_LIST_CHARS {
            break;
        }
        keep = i + 1;
    }
    cfg.searches.truncate(keep);
    Ok(cfg)
}

fn truncate_hostname(name: &str) -> Result<String, ConfigError> {
    if name.len() <= HOSTNAME_MAX_LEN {
        return Ok(name.to_string());
    }
    let cut: String = name.chars().take(HOSTNAME_MAX_LEN).collect();
    let trimmed = cut.trim_end_matches(['-', '.']);
    if trimmed.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "hostname {name:?} is invalid"
        )));
    }
    Ok(trimmed.to_string())
}

/// The pod's hostname and domain (kubelet `GeneratePodHostNameAndDomain`):
/// `spec.hostnameOverride`, else `spec.hostname`, else the pod name, cut to
/// 63 characters; the domain is `<subdomain>.<ns>.svc.<clusterDomain>` when
/// `spec.subdomain` is set.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    node: &NodeSettings,
) -> Result<(String, String), ConfigError> {
    let spec = pod.spec.as_ref().ok_or(ConfigError::MissingField("spec"))?;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(over) = spec.hostname_override.as_deref() {
        return Ok((truncate_hostname(over)?, String::new()));
    }
    let hostname = truncate_hostname(
        spec.hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(name),
    )?;
    let domain = match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) => format!(
            "{sub}.{}.svc.{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            node.cluster_domain
        ),
        None => String::new(),
    };
    Ok((hostname, domain))
}

/// The hostname the sandbox gets (kubelet `GetNodenameForKernel`): the FQDN
/// when `setHostnameAsFQDN` is true (at most 64 characters).
pub(crate) fn kernel_hostname(pod: &Pod, node: &NodeSettings) -> Result<String, ConfigError> {
    let (host, domain) = pod_hostname_and_domain(pod, node)?;
    let fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    if fqdn && !domain.is_empty() {
        let full = format!("{host}.{domain}");
        if full.len() > 64 {
            return Err(ConfigError::Invalid(format!(
                "failed to construct FQDN from pod hostname and cluster domain, FQDN {full} is too long (64 characters is the max, {} characters requested)",
                full.len()
            )));
        }
        return Ok(full);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn node() -> NodeSettings {
        let mut n = NodeSettings::detect("vm", &PathBuf::from("/tmp/x"));
        n.resolv_conf = PathBuf::from("/etc/resolv.conf");
        n.host_dns =
            ResolvConf::parse("nameserver 1.1.1.1\nsearch example.com. .\noptions ndots:2 edns0\n");
        n.cluster_dns = vec!["10.0.0.10".into()];
        n.cluster_domain = "cluster.local".into();
        n
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn parses_resolv_conf() {
        let rc = ResolvConf::parse("# c\nnameserver 1.1.1.1\nnameserver 8.8.8.8 # x\nsearch a b.\nsearch c\noptions ndots:1 rotate\noptions ndots:3\n");
        assert_eq!(rc.servers, ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(rc.searches, ["c"]);
        assert_eq!(rc.options, ["rotate", "ndots:3"]);
    }

    #[test]
    fn policies() {
        let n = node();
        let c = pod_dns_config(&pod(serde_json::json!({"containers": []})), &n).unwrap();
        assert_eq!(c.servers, ["10.0.0.10"]);
        assert_eq!(
            c.searches,
            [
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.com"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
        let h = pod_dns_config(
            &pod(serde_json::json!({"containers": [], "hostNetwork": true})),
            &n,
        )
        .unwrap();
        assert_eq!(h.servers, ["1.1.1.1"]);
        assert_eq!(h.options, ["ndots:2", "edns0"]);
        let none = pod_dns_config(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["x"], "options": [{"name": "ndots", "value": "1"}]}})),
            &n,
        )
        .unwrap();
        assert_eq!(none.servers, ["9.9.9.9"]);
        assert_eq!(none.searches, ["x"]);
        assert_eq!(none.options, ["ndots:1"]);
        let mut no_cluster = n.clone();
        no_cluster.cluster_dns.clear();
        let f = pod_dns_config(&pod(serde_json::json!({"containers": []})), &no_cluster).unwrap();
        assert_eq!(f.servers, ["1.1.1.1"]);
    }

    #[test]
    fn hostnames() {
        let n = node();
        let p = pod(
            serde_json::json!({"containers": [], "hostname": "h", "subdomain": "s", "setHostnameAsFQDN": true}),
        );
        assert_eq!(
            pod_hostname_and_domain(&p, &n).unwrap(),
            ("h".into(), "s.ns.svc.cluster.local".into())
        );
        assert_eq!(kernel_hostname(&p, &n).unwrap(), "h.s.ns.svc.cluster.local");
        assert_eq!(
            truncate_hostname(&format!("{}-x", "a".repeat(62))).unwrap(),
            "a".repeat(62)
        );
    }
}
