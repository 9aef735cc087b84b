//! The CNI side of pod networking: the first network configuration list in
//! the configuration directory (lexical order of `*.conflist`, `*.conf`,
//! `*.json`, as libcni picks it), run plugin by plugin with the result of
//! one passed to the next. `lo` is already up: [`crate::NetNs`] brings it
//! up when it creates or pins a namespace, so no `loopback` plugin runs.
//!
//! The ADD result is returned to the caller, who persists it with the pod
//! and hands it back to DEL (CNI 1.0 wants `prevResult` on DEL), so a
//! teardown after a daemon restart releases exactly what was allocated.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// How long one plugin invocation may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// The interface name inside the pod.
pub const POD_IFNAME: &str = "eth0";

/// A CNI failure.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network configuration in {0} (NetworkReady is false until one exists)")]
    NoConfig(PathBuf),
    #[error("invalid CNI configuration {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    NoPlugin { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} {command} failed: {msg} (code {code}){details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: i64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command}: {detail}")]
    Exec {
        plugin: String,
        command: &'static str,
        detail: String,
    },
    #[error("CNI teardown of {id} failed: {errors}")]
    Teardown { id: String, errors: String },
}

/// A port a pod asks to have forwarded from the host (`portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty", default)]
    pub host_ip: String,
}

/// What the plugins need to know about a pod.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The sandbox id (CNI_CONTAINERID).
    pub id: String,
    /// The pod's network namespace (may be gone at teardown).
    pub netns: PathBuf,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub port_mappings: Vec<PortMapping>,
}

/// What ADD produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupResult {
    /// The pod's addresses, without prefix length, IPv4 first.
    pub ips: Vec<String>,
    /// The final CNI result, to persist and give back to teardown.
    pub result: Value,
}

#[derive(Debug, Clone)]
struct NetworkList {
    name: String,
    version: String,
    plugins: Vec<Value>,
    source: PathBuf,
}

/// The CNI configuration and plugin directories.
#[derive(Debug)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    current: RwLock<Option<NetworkList>>,
}

impl Cni {
    pub fn new(conf_dir: impl Into<PathBuf>, bin_dirs: Vec<PathBuf>) -> Cni {
        Cni {
            conf_dir: conf_dir.into(),
            bin_dirs,
            current: RwLock::new(None),
        }
    }

    /// Re-reads the configuration directory; `Ok` when a usable network
    /// exists and every plugin it names is installed. The error is the
    /// NetworkReady message.
    pub fn reload(&self) -> Result<String, CniError> {
        let list = self.load()?;
        for p in list.plugins.iter().map(plugin_type) {
            self.find_plugin(&p)?;
        }
        let name = list.name.clone();
        tracing::debug!(network = %name, file = %list.source.display(), "CNI configuration loaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(list);
        Ok(name)
    }

    fn load(&self) -> Result<NetworkList, CniError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        });
        files.sort();
        let mut first_error = None;
        for f in files {
            match parse_config_file(&f) {
                Ok(l) => return Ok(l),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping CNI configuration");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| CniError::NoConfig(self.conf_dir.clone())))
    }

    fn find_plugin(&self, name: &str) -> Result<PathBuf, CniError> {
        if name.is_empty() || name.contains('/') {
            return Err(CniError::NoPlugin {
                plugin: name.into(),
                dirs: self.dirs_string(),
            });
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::NoPlugin {
                plugin: name.into(),
                dirs: self.dirs_string(),
            })
    }

    fn dirs_string(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn network(&self) -> Result<NetworkList, CniError> {
        if let Some(l) = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(l);
        }
        self.reload()?;
        self.network()
    }

    /// Wires the pod network into `pod.netns` (whose `lo` is up). On failure,
    /// whatever the plugins did is torn down again before returning.
    pub async fn setup(&self, pod: &PodNetwork) -> Result<SetupResult, CniError> {
        let list = self.network()?;
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let conf = plugin_conf(&list, plugin, prev.as_ref(), pod);
            match self.exec("ADD", &conf, pod, POD_IFNAME).await {
                Ok(r) => prev = Some(r),
                Err(e) => {
                    if let Err(t) = self.teardown_list(&list, pod, prev.as_ref()).await {
                        tracing::warn!(pod = %pod.id, error = %t, "cleanup after a failed CNI ADD");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.unwrap_or(Value::Null);
        Ok(SetupResult {
            ips: result_ips(&result),
            result,
        })
    }

    /// Runs DEL for every plugin, last first, with the result `setup`
    /// returned. Idempotent, and works when the namespace is already gone.
    pub async fn teardown(&self, pod: &PodNetwork, prev: Option<&Value>) -> Result<(), CniError> {
        let list = self.network()?;
        self.teardown_list(&list, pod, prev).await
    }

    async fn teardown_list(
        &self,
        list: &NetworkList,
        pod: &PodNetwork,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            let conf = plugin_conf(list, plugin, prev.filter(|v| !v.is_null()), pod);
            if let Err(e) = self.exec("DEL", &conf, pod, POD_IFNAME).await {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::Teardown {
                id: pod.id.clone(),
                errors: errors.join("; "),
            })
        }
    }

    async fn exec(
        &self,
        command: &'static str,
        conf: &Value,
        pod: &PodNetwork,
        ifname: &str,
    ) -> Result<Value, CniError> {
        let plugin = plugin_type(conf);
        let bin = self.find_plugin(&plugin)?;
        // A namespace that is gone is passed as empty, as libcni does: DEL
        // then releases what lives outside it (addresses, host rules).
        let netns = if command == "DEL" && !pod.netns.exists() {
            String::new()
        } else {
            pod.netns.display().to_string()
        };
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.id, pod.uid
        );
        let exec_err = |detail: String| CniError::Exec {
            plugin: plugin.clone(),
            command,
            detail,
        };
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.id)
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", self.dirs_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| exec_err(format!("cannot run {}: {e}", bin.display())))?;
        let input = serde_json::to_vec(conf).expect("JSON values serialise");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(&input)
            .await
            .map_err(|e| exec_err(format!("writing its configuration: {e}")))?;
        drop(stdin);
        let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| exec_err(format!("no answer within {PLUGIN_TIMEOUT:?}")))?
            .map_err(|e| exec_err(e.to_string()))?;
        tracing::debug!(
            pod = %pod.id,
            plugin = %plugin,
            command,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "CNI plugin ran"
        );
        if !out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(CniError::Plugin {
                plugin,
                command,
                code: v["code"].as_i64().unwrap_or(-1),
                msg: v["msg"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("exit status {}", out.status)),
                details: match (v["details"].as_str(), stderr.trim()) {
                    (Some(d), _) if !d.is_empty() => format!(": {d}"),
                    (_, s) if !s.is_empty() => format!(": {s}"),
                    _ => String::new(),
                },
            });
        }
        if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| exec_err(format!("unreadable result: {e}")))
    }
}

fn plugin_type(conf: &Value) -> String {
    conf["type"].as_str().unwrap_or_default().to_string()
}

/// The configuration one plugin of the list receives.
fn plugin_conf(
    list: &NetworkList,
    plugin: &Value,
    prev: Option<&Value>,
    pod: &PodNetwork,
) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(list.name);
    conf["cniVersion"] = json!(list.version);
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if conf["capabilities"]["portMappings"].as_bool() == Some(true) && !pod.port_mappings.is_empty()
    {
        conf["runtimeConfig"] = json!({ "portMappings": pod.port_mappings });
    }
    conf
}

/// The addresses in a CNI result (0.3+ `ips`, or 0.2 `ip4`/`ip6`), IPv4 first.
fn result_ips(r: &Value) -> Vec<String> {
    let mut ips: Vec<String> = r["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .map(|s| s.split('/').next().unwrap_or(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    for key in ["ip4", "ip6"] {
        if let Some(s) = r[key]["ip"].as_str() {
            ips.push(s.split('/').next().unwrap_or(s).to_string());
        }
    }
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

fn parse_config_file(path: &Path) -> Result<NetworkList, CniError> {
    let bad = |reason: String| CniError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let name = v["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(bad("no \"name\"".into()));
    }
    let version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    let plugins = match v.get("plugins") {
        Some(Value::Array(p)) if !p.is_empty() => p.clone(),
        Some(_) => return Err(bad("\"plugins\" must be a non-empty list".into())),
        // A single-plugin `.conf`.
        None => vec![v.clone()],
    };
    if let Some(p) = plugins.iter().find(|p| plugin_type(p).is_empty()) {
        return Err(bad(format!("a plugin without \"type\": {p}")));
    }
    Ok(NetworkList {
        name,
        version,
        plugins,
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_valid_file_in_lexical_order() {
        let d = tempfile::tempdir().unwrap();
        let cni = Cni::new(d.path(), vec![PathBuf::from("/usr/lib/cni")]);
        assert!(matches!(cni.load(), Err(CniError::NoConfig(_))));
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            d.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-single.conf"),
            r#"{"cniVersion":"0.4.0","name":"single","type":"ptp"}"#,
        )
        .unwrap();
        let l = cni.load().unwrap();
        assert_eq!(l.name, "net");
        assert_eq!(l.plugins.len(), 2);
        std::fs::remove_file(d.path().join("10-net.conflist")).unwrap();
        let l = cni.load().unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len()), ("single", 1));
    }

    #[test]
    fn plugin_configuration_chains_results_and_capabilities() {
        let list = NetworkList {
            name: "n".into(),
            version: "1.0.0".into(),
            plugins: vec![],
            source: PathBuf::new(),
        };
        let pod = PodNetwork {
            id: "abc".into(),
            netns: "/x".into(),
            name: "p".into(),
            namespace: "d".into(),
            uid: "u".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
        };
        let pm = json!({"type":"portmap","capabilities":{"portMappings":true}});
        let prev = json!({"ips":[{"address":"10.1.0.5/24"}]});
        let c = plugin_conf(&list, &pm, Some(&prev), &pod);
        assert_eq!(c["name"], "n");
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        let br = plugin_conf(&list, &json!({"type":"bridge"}), None, &pod);
        assert!(br.get("runtimeConfig").is_none());
    }

    #[test]
    fn result_addresses() {
        let r = json!({"ips":[{"address":"fd00::5/64"},{"address":"10.1.0.5/24"}]});
        assert_eq!(result_ips(&r), vec!["10.1.0.5", "fd00::5"]);
        let old = json!({"ip4":{"ip":"10.2.0.9/16"}});
        assert_eq!(result_ips(&old), vec!["10.2.0.9"]);
        assert!(result_ips(&Value::Null).is_empty());
    }
}
