//! Images as the kubelet's image manager handles them: the pull policy
//! (Always, IfNotPresent, Never), pull back-off per pod and image,
//! serial or parallel pulls limited by QPS and burst, and credentials
//! from the pod's docker-config pull secrets and the node's file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use berth_cri::runtime::v1 as cri;
use berth_cri_client::Client;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::calls;
use crate::events::{EventType, PodRef, Recorder};

/// Why an image is not there for a container: the reason is what the
/// container's waiting state says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ImageError {
    /// ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName
    /// or ImageInspectError.
    pub reason: &'static str,
    pub message: String,
}

/// How pulls are limited (the kubelet's serializeImagePulls,
/// maxParallelImagePulls, registryPullQPS and registryBurst).
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Pulls at once (1: serial, the kubelet's default).
    pub parallel: usize,
    /// Pulls per second; 0: unlimited.
    pub qps: f64,
    pub burst: u32,
    /// The node's docker config file with credentials (the kubelet reads
    /// `config.json` from its root dir and `~/.docker`).
    pub docker_config: Option<PathBuf>,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            parallel: 1,
            qps: 5.0,
            burst: 10,
            docker_config: None,
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Pulls images for containers.
pub struct Images {
    client: Client,
    settings: PullSettings,
    backoff: Mutex<Backoff>,
    last_error: Mutex<BTreeMap<String, String>>,
    slots: tokio::sync::Semaphore,
    bucket: tokio::sync::Mutex<Bucket>,
}

/// Whether an image reference names a tag other than `latest` or a digest.
fn pinned(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    let name = image.rsplit('/').next().unwrap_or(image);
    match name.split_once(':') {
        Some((_, tag)) => tag != "latest",
        None => false,
    }
}

/// The pull policy of a container, defaulted as the API server does.
pub fn pull_policy(c: &Container) -> &str {
    match c.image_pull_policy.as_deref() {
        Some(p) if !p.is_empty() => p,
        _ if pinned(c.image.as_deref().unwrap_or("")) => "IfNotPresent",
        _ => "Always",
    }
}

impl Images {
    /// An image manager over a runtime.
    pub fn new(client: Client, settings: PullSettings) -> Images {
        let burst = settings.burst.max(1);
        Images {
            client,
            slots: tokio::sync::Semaphore::new(settings.parallel.max(1)),
            bucket: tokio::sync::Mutex::new(Bucket {
                tokens: f64::from(burst),
                last: Instant::now(),
            }),
            settings,
            backoff: Mutex::new(Backoff::new(BackoffPolicy::IMAGE_PULL)),
            last_error: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes sure the container's image is there, as its pull policy says;
    /// returns the image reference the runtime answered.
    pub async fn ensure(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox: &cri::PodSandboxConfig,
        pull_secrets: &[Secret],
        events: &Recorder,
    ) -> Result<String, ImageError> {
        let pref = PodRef::of(pod);
        let cname = container.name.as_str();
        let image = container.image.clone().unwrap_or_default();
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            let message =
                format!("Failed to apply default image tag {image:?}: invalid reference format");
            events.record(
                &pref,
                Some(cname),
                EventType::Warning,
                "InspectFailed",
                &message,
            );
            return Err(ImageError {
                reason: "InvalidImageName",
                message,
            });
        }
        let policy = pull_policy(container);
        let present = self.present(&image).await.map_err(|message| {
            events.record(
                &pref,
                Some(cname),
                EventType::Warning,
                "InspectFailed",
                &message,
            );
            ImageError {
                reason: "ImageInspectError",
                message,
            }
        })?;
        if policy != "Always" {
            if let Some(image_ref) = present {
                events.record(
                    &pref,
                    Some(cname),
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Container image {image:?} already present on machine and can be accessed by the pod"
                    ),
                );
                return Ok(image_ref);
            }
            if policy == "Never" {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                events.record(
                    &pref,
                    Some(cname),
                    EventType::Warning,
                    "ErrImageNeverPull",
                    &message,
                );
                return Err(ImageError {
                    reason: "ErrImageNeverPull",
                    message,
                });
            }
        }
        let uid = pref.uid.clone();
        let key = format!("{uid}_{image}");
        let now = SystemTime::now();
        let in_backoff = self
            .backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_backoff_since_update(&key, now);
        if in_backoff.is_some() {
            let mut message = format!("Back-off pulling image {image:?}");
            events.record(&pref, Some(cname), EventType::Normal, "BackOff", &message);
            if let Some(prev) = self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
            {
                message = format!("{message}: {prev}");
            }
            return Err(ImageError {
                reason: "ImagePullBackOff",
                message,
            });
        }
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        events.record(
            &pref,
            Some(cname),
            EventType::Normal,
            "Pulling",
            format!("Pulling image {image:?}"),
        );
        let waiting = Instant::now();
        let result = self.pull(&image, sandbox, pull_secrets).await;
        match result {
            Ok((image_ref, pulling)) => {
                let size = self.size(&image_ref).await;
                events.record(
                    &pref,
                    Some(cname),
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {:?} ({:?} including waiting). Image size: {size} bytes.",
                        truncate_ms(pulling),
                        truncate_ms(waiting.elapsed())
                    ),
                );
                self.backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .gc(SystemTime::now());
                Ok(image_ref)
            }
            Err(message) => {
                events.record(
                    &pref,
                    Some(cname),
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image {image:?}: {message}"),
                );
                self.backoff.lock().unwrap_or_else(|p| p.into_inner()).next(
                    &key,
                    SystemTime::now(),
                    SystemTime::now(),
                );
                self.last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, format!("ErrImagePull: {message}"));
                Err(ImageError {
                    reason: "ErrImagePull",
                    message,
                })
            }
        }
    }

    async fn present(&self, image: &str) -> Result<Option<String>, String> {
        calls::image_status(&self.client, image)
            .await
            .map(|i| i.map(|i| i.id))
            .map_err(|e| format!("Failed to inspect image {image:?}: {e}"))
    }

    /// The user an image runs as (ImageStatus), for runAsNonRoot checks.
    pub async fn user(&self, image_ref: &str) -> berth_criconfig::ImageUser {
        match calls::image_status(&self.client, image_ref).await {
            Ok(Some(i)) => berth_criconfig::ImageUser {
                uid: i.uid.map(|u| u.value),
                username: i.username,
            },
            _ => berth_criconfig::ImageUser::default(),
        }
    }

    async fn size(&self, image_ref: &str) -> u64 {
        match calls::image_status(&self.client, image_ref).await {
            Ok(Some(i)) => i.size,
            _ => 0,
        }
    }

    async fn take_token(&self) {
        if self.settings.qps <= 0.0 {
            return;
        }
        loop {
            let wait = {
                let mut b = self.bucket.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(b.last).as_secs_f64() * self.settings.qps;
                b.tokens = (b.tokens + refill).min(f64::from(self.settings.burst.max(1)));
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - b.tokens) / self.settings.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Pulls with each matching credential in turn (then anonymously),
    /// returning the reference and the time the pull itself took.
    async fn pull(
        &self,
        image: &str,
        sandbox: &cri::PodSandboxConfig,
        pull_secrets: &[Secret],
    ) -> Result<(String, Duration), String> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| "the image manager is shutting down".to_string())?;
        self.take_token().await;
        let started = Instant::now();
        let mut creds: Vec<cri::AuthConfig> = pull_secrets
            .iter()
            .flat_map(|s| credentials_from_secret(s, image))
            .collect();
        if let Some(path) = &self.settings.docker_config {
            let path = path.clone();
            let text = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .ok()
                .and_then(Result::ok);
            if let Some(text) = text {
                creds.extend(credentials_from_config(&text, image));
            }
        }
        let mut attempts: Vec<Option<cri::AuthConfig>> = creds.into_iter().map(Some).collect();
        if attempts.is_empty() {
            attempts.push(None);
        }
        let mut last = String::new();
        for auth in attempts {
            match self.client.pull(image, auth, Some(sandbox.clone())).await {
                Ok(r) => return Ok((r, started.elapsed())),
                Err(e) => {
                    last = match e.status() {
                        Some(s) => {
                            format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
                        }
                        None => e.to_string(),
                    }
                }
            }
        }
        Err(last)
    }
}

fn truncate_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The registry host and repository path of an image reference, with
/// Docker Hub's defaults.
pub fn registry_and_path(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), r.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    // Drop the tag from the last component only.
    let path = match rest.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{}", last.split(':').next().unwrap_or(last)),
        None => rest.split(':').next().unwrap_or(&rest).to_string(),
    };
    let host = match first.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => first,
    };
    (host, path)
}

/// Whether a docker-config key (`https://host/v1/`, `host`, `host/path`,
/// `*.host`) applies to an image.
pub fn key_matches(key: &str, image: &str) -> bool {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    let (khost, kpath) = match key.split_once('/') {
        Some((h, p)) => (h, p),
        None => (key, ""),
    };
    let khost = match khost {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    let (host, path) = registry_and_path(image);
    let host_ok = match khost.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && !head[..head.len() - 1].contains('.')),
        None => khost == host,
    };
    host_ok && (kpath.is_empty() || path == kpath || path.starts_with(&format!("{kpath}/")))
}

/// The credentials of a docker config (`{"auths": {...}}`, or the legacy
/// `.dockercfg` map) that apply to an image, the longest key first.
pub fn credentials_from_config(text: &[u8], image: &str) -> Vec<cri::AuthConfig> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let auths = v.get("auths").unwrap_or(&v);
    let Some(map) = auths.as_object() else {
        return Vec::new();
    };
    let mut found: Vec<(usize, cri::AuthConfig)> = Vec::new();
    for (key, entry) in map {
        if !key_matches(key, image) {
            continue;
        }
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        };
        let (mut username, mut password) = (field("username"), field("password"));
        let auth = field("auth");
        if username.is_empty() && !auth.is_empty() {
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.as_bytes()) {
                if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                    username = u.to_string();
                    password = p.to_string();
                }
            }
        }
        found.push((
            key.len(),
            cri::AuthConfig {
                username,
                password,
                auth: String::new(),
                server_address: registry_and_path(image).0,
                identity_token: field("identitytoken"),
                registry_token: field("registrytoken"),
            },
        ));
    }
    found.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    found.into_iter().map(|(_, a)| a).collect()
}

/// The credentials of a pull secret (type kubernetes.io/dockerconfigjson
/// or kubernetes.io/dockercfg) for an image.
pub fn credentials_from_secret(secret: &Secret, image: &str) -> Vec<cri::AuthConfig> {
    let Some(data) = &secret.data else {
        return Vec::new();
    };
    [".dockerconfigjson", ".dockercfg"]
        .iter()
        .filter_map(|k| data.get(*k))
        .flat_map(|v| credentials_from_config(&v.0, image))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_default_by_tag() {
        let c = |image: &str, policy: Option<&str>| Container {
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("localhost:5000/busybox", None)), "Always");
        assert_eq!(pull_policy(&c("b@sha256:00", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
    }

    #[test]
    fn registries_and_paths() {
        assert_eq!(
            registry_and_path("busybox:1.36"),
            ("docker.io".into(), "busybox".into())
        );
        assert_eq!(
            registry_and_path("127.0.0.1:5000/team/app:v1"),
            ("127.0.0.1:5000".into(), "team/app".into())
        );
        assert_eq!(
            registry_and_path("index.docker.io/library/x@sha256:ab"),
            ("docker.io".into(), "library/x".into())
        );
    }

    #[test]
    fn keys_match_as_the_kubelet_keyring() {
        assert!(key_matches("https://index.docker.io/v1/", "busybox"));
        assert!(key_matches("127.0.0.1:5000", "127.0.0.1:5000/a/b:1"));
        assert!(key_matches("reg.io/team", "reg.io/team/app"));
        assert!(!key_matches("reg.io/team", "reg.io/teamx/app"));
        assert!(!key_matches("reg.io", "other.io/app"));
        assert!(key_matches("*.reg.io", "eu.reg.io/app"));
        assert!(!key_matches("*.reg.io", "a.b.reg.io/app"));
        assert!(!key_matches("*.reg.io", "reg.io/app"));
    }

    #[test]
    fn credentials_from_auth_and_fields() {
        let cfg = br#"{"auths": {
            "127.0.0.1:5000": {"auth": "dTpw"},
            "127.0.0.1:5000/team": {"username": "t", "password": "q"},
            "other.io": {"auth": "eDp5"}}}"#;
        let found = credentials_from_config(cfg, "127.0.0.1:5000/team/app:1");
        let users: Vec<_> = found
            .iter()
            .map(|a| (a.username.as_str(), a.password.as_str()))
            .collect();
        assert_eq!(users, [("t", "q"), ("u", "p")]);
        assert_eq!(found[0].server_address, "127.0.0.1:5000");
        assert!(credentials_from_config(b"not json", "x").is_empty());
    }
}
