//! Garbage collection as the kubelet does it: dead containers beyond the
//! newest per pod and container (and older than the minimum age), dead
//! sandboxes no container refers to except each pod's newest, and
//! images, least recently used first, when the image filesystem is
//! fuller than the high threshold, down to the low one; never an image a
//! container uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_cri::runtime::v1 as cri;
use berth_cri_client::{Client, ClientError};

use crate::agent::Shared;
use crate::calls;
use crate::status::{time_of, POD_UID_LABEL};

/// The collection's thresholds (the kubelet's defaults).
#[derive(Debug, Clone)]
pub struct GcPolicy {
    /// How often to collect (the kubelet: 1 minute).
    pub period: Duration,
    /// A dead container is removed only when older than this.
    pub min_age: Duration,
    /// Dead containers kept per pod and container name.
    pub max_per_pod_container: usize,
    /// Image collection starts above this percentage of the image
    /// filesystem...
    pub image_high_percent: u8,
    /// ...and frees down to this one.
    pub image_low_percent: u8,
    /// An unused image is removed only when unused for this long.
    pub image_min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            period: Duration::from_secs(60),
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            image_high_percent: 85,
            image_low_percent: 80,
            image_min_age: Duration::from_secs(120),
        }
    }
}

/// One dead container in the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadContainer {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub created_at: SystemTime,
}

/// The dead containers to remove: per (pod, name), all but the newest
/// `keep`, among those older than `min_age`.
pub fn containers_to_remove(
    dead: &[DeadContainer],
    keep: usize,
    min_age: Duration,
    now: SystemTime,
) -> Vec<String> {
    let mut units: BTreeMap<(&str, &str), Vec<&DeadContainer>> = BTreeMap::new();
    for d in dead {
        let old_enough = now
            .duration_since(d.created_at)
            .is_ok_and(|age| age >= min_age);
        if old_enough {
            units.entry((&d.pod_uid, &d.name)).or_default().push(d);
        }
    }
    let mut out = Vec::new();
    for (_, mut list) in units {
        list.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        out.extend(list.into_iter().skip(keep).map(|d| d.id.clone()));
    }
    out
}

/// Collects every `policy.period` until the task is dropped.
pub(crate) async fn run(shared: Arc<Shared>, policy: GcPolicy) {
    let mut last_used: HashMap<String, SystemTime> = HashMap::new();
    loop {
        tokio::time::sleep(policy.period).await;
        if !shared.loaded() {
            continue;
        }
        if let Err(e) = collect_containers(&shared, &policy).await {
            tracing::warn!("container garbage collection: {e}");
        }
        if let Err(e) = collect_images(&shared.manager.client, &policy, &mut last_used).await {
            tracing::warn!("image garbage collection: {e}");
        }
    }
}

async fn collect_containers(shared: &Shared, policy: &GcPolicy) -> Result<(), ClientError> {
    let client = &shared.manager.client;
    let containers = calls::containers(client, None).await?;
    let desired: BTreeSet<String> = shared.desired_uids().into_iter().collect();
    let now = SystemTime::now();
    let dead: Vec<DeadContainer> = containers
        .iter()
        .filter(|c| c.state != cri::ContainerState::ContainerRunning as i32)
        .filter_map(|c| {
            let uid = c.labels.get(POD_UID_LABEL)?;
            // Pods without a manifest are ended by their own path.
            if !desired.contains(uid) {
                return None;
            }
            Some(DeadContainer {
                id: c.id.clone(),
                pod_uid: uid.clone(),
                name: c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                created_at: time_of(c.created_at).unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .collect();
    for id in containers_to_remove(&dead, policy.max_per_pod_container, policy.min_age, now) {
        if let Err(e) = shared.manager.remove_container(&id).await {
            tracing::warn!(container = %id, "garbage collection: {e}");
        }
    }
    // Dead sandboxes with no container, but each pod's newest.
    let sandboxes = calls::sandboxes(client, None).await?;
    let used: BTreeSet<&str> = containers
        .iter()
        .map(|c| c.pod_sandbox_id.as_str())
        .collect();
    let mut by_pod: BTreeMap<&str, Vec<&cri::PodSandbox>> = BTreeMap::new();
    for s in &sandboxes {
        if let Some(uid) = s.labels.get(POD_UID_LABEL) {
            if desired.contains(uid) {
                by_pod.entry(uid).or_default().push(s);
            }
        }
    }
    for (_, mut list) in by_pod {
        list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        for s in list.into_iter().skip(1) {
            if s.state != cri::PodSandboxState::SandboxReady as i32 && !used.contains(s.id.as_str())
            {
                if let Err(e) = shared.manager.remove_sandbox(&s.id).await {
                    tracing::warn!(sandbox = %s.id, "garbage collection: {e}");
                }
            }
        }
    }
    Ok(())
}

/// Capacity of the filesystem holding `path`, in bytes.
fn capacity(path: &str) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() as u64 * st.fragment_size() as u64)
}

async fn collect_images(
    client: &Client,
    policy: &GcPolicy,
    last_used: &mut HashMap<String, SystemTime>,
) -> Result<(), ClientError> {
    let now = SystemTime::now();
    let containers = calls::containers(client, None).await?;
    let images = client
        .call(
            "ListImages",
            client
                .image
                .clone()
                .list_images(client.request(cri::ListImagesRequest { filter: None })),
        )
        .await?
        .images;
    let in_use: BTreeSet<&str> = containers
        .iter()
        .flat_map(|c| [c.image_ref.as_str(), c.image_id.as_str()])
        .filter(|s| !s.is_empty())
        .collect();
    for img in &images {
        if in_use.contains(img.id.as_str()) || !last_used.contains_key(&img.id) {
            last_used.insert(img.id.clone(), now);
        }
    }
    last_used.retain(|id, _| images.iter().any(|i| &i.id == id));
    let fs = client
        .call(
            "ImageFsInfo",
            client
                .image
                .clone()
                .image_fs_info(client.request(cri::ImageFsInfoRequest {})),
        )
        .await?;
    let Some(usage) = fs.image_filesystems.first() else {
        return Ok(());
    };
    let used = usage.used_bytes.as_ref().map_or(0, |u| u.value);
    let mount = usage
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .unwrap_or_default();
    let Some(cap) = tokio::task::spawn_blocking(move || capacity(&mount))
        .await
        .ok()
        .flatten()
    else {
        return Ok(());
    };
    if cap == 0 || used * 100 < cap * u64::from(policy.image_high_percent) {
        return Ok(());
    }
    let mut to_free = used.saturating_sub(cap * u64::from(policy.image_low_percent) / 100);
    let mut candidates: Vec<&cri::Image> = images
        .iter()
        .filter(|i| !i.pinned && !in_use.contains(i.id.as_str()))
        .filter(|i| {
            last_used.get(&i.id).is_some_and(|t| {
                now.duration_since(*t)
                    .is_ok_and(|a| a >= policy.image_min_age)
            })
        })
        .collect();
    candidates.sort_by_key(|i| last_used.get(&i.id).copied());
    tracing::info!(
        used,
        capacity = cap,
        to_free,
        "image filesystem above its high threshold"
    );
    for img in candidates {
        if to_free == 0 {
            break;
        }
        let removed = client
            .call(
                "RemoveImage",
                client
                    .image
                    .clone()
                    .remove_image(client.request(cri::RemoveImageRequest {
                        image: Some(cri::ImageSpec {
                            image: img.id.clone(),
                            ..Default::default()
                        }),
                    })),
            )
            .await;
        match removed {
            Ok(_) => {
                tracing::info!(image = %img.id, size = img.size, "removed an unused image");
                to_free = to_free.saturating_sub(img.size);
                last_used.remove(&img.id);
            }
            Err(e) => tracing::warn!(image = %img.id, "garbage collection: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(id: &str, pod: &str, name: &str, at: u64) -> DeadContainer {
        DeadContainer {
            id: id.into(),
            pod_uid: pod.into(),
            name: name.into(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
        }
    }

    #[test]
    fn keeps_the_newest_per_pod_and_name() {
        let list = [
            dead("a1", "p", "a", 1),
            dead("a3", "p", "a", 3),
            dead("a2", "p", "a", 2),
            dead("b1", "p", "b", 1),
            dead("q1", "q", "a", 1),
        ];
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut out = containers_to_remove(&list, 1, Duration::ZERO, now);
        out.sort();
        assert_eq!(out, ["a1", "a2"]);
        // Too young to go.
        let out = containers_to_remove(&list, 1, Duration::from_secs(98), now);
        assert_eq!(out, ["a1"]);
        assert!(containers_to_remove(&list, 5, Duration::ZERO, now).is_empty());
    }
}
