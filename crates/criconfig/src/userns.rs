//! User namespace ID ranges for pods with `hostUsers: false`, allocated as
//! the kubelet's user namespace manager does: one aligned block of
//! `ids_per_pod` IDs per pod, at a random free slot of the kubelet's range.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// One pod's mapping: container IDs `0..length` map to host IDs `host_id..host_id+length`
/// (the same for UIDs and GIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernsMapping {
    /// The first host ID.
    pub host_id: u32,
    /// How many IDs.
    pub length: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdMappingFile {
    host_id: u32,
    container_id: u32,
    length: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsernsFile {
    uid_mappings: Vec<IdMappingFile>,
    gid_mappings: Vec<IdMappingFile>,
}

impl UsernsMapping {
    /// The mapping in the format of the kubelet's `<pods_dir>/<uid>/userns` file.
    pub fn to_kubelet_file(&self) -> String {
        let one = || {
            vec![IdMappingFile {
                host_id: self.host_id,
                container_id: 0,
                length: self.length,
            }]
        };
        let file = UsernsFile {
            uid_mappings: one(),
            gid_mappings: one(),
        };
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads a kubelet `userns` file: one UID and one GID mapping from
    /// container ID 0, identical.
    pub fn from_kubelet_file(text: &str) -> Result<UsernsMapping, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid(format!("user namespace file: {why}"));
        let file: UsernsFile = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let (Some(u), Some(g)) = (file.uid_mappings.first(), file.gid_mappings.first()) else {
            return Err(bad("no mappings"));
        };
        if file.uid_mappings.len() != 1 || file.gid_mappings.len() != 1 {
            return Err(bad("exactly one UID and one GID mapping expected"));
        }
        if u.container_id != 0
            || g.container_id != 0
            || u.host_id != g.host_id
            || u.length != g.length
        {
            return Err(bad(
                "UID and GID mappings must be equal and start at container ID 0",
            ));
        }
        Ok(UsernsMapping {
            host_id: u.host_id,
            length: u.length,
        })
    }
}

/// Allocates per-pod ID blocks. Persist it by saving [`UsernsAllocator::allocations`]
/// and restoring with [`UsernsAllocator::with_allocations`].
#[derive(Debug, Clone)]
pub struct UsernsAllocator {
    first_slot: u32,
    slots: u32,
    ids_per_pod: u32,
    by_pod: BTreeMap<String, u32>,
}

impl UsernsAllocator {
    /// The kubelet's defaults without a `kubelet` entry in /etc/subuid:
    /// host IDs 2^31..2^32 in blocks of 65536.
    pub fn kubelet_default() -> UsernsAllocator {
        // Both values are multiples of 65536 and the range is not empty.
        UsernsAllocator {
            first_slot: (1u32 << 31) / 65536,
            slots: (1u32 << 31) / 65536,
            ids_per_pod: 65536,
            by_pod: BTreeMap::new(),
        }
    }

    /// An allocator over host IDs `first_id..first_id+length` in blocks of
    /// `ids_per_pod`, checked as the kubelet checks them (multiples of 65536,
    /// aligned, never mapping host ID 0).
    pub fn new(
        first_id: u32,
        length: u32,
        ids_per_pod: u32,
    ) -> Result<UsernsAllocator, ConfigError> {
        if ids_per_pod == 0 || ids_per_pod % 65536 != 0 {
            return Err(ConfigError::Invalid(format!(
                "user namespace length {ids_per_pod} is not a multiple of 65536"
            )));
        }
        if first_id % ids_per_pod != 0 {
            return Err(ConfigError::Invalid(format!(
                "user namespace first ID {first_id} is not a multiple of {ids_per_pod}"
            )));
        }
        if first_id < ids_per_pod {
            return Err(ConfigError::Invalid(format!(
                "user namespace first ID {first_id} must be at least {ids_per_pod}"
            )));
        }
        if length % ids_per_pod != 0 || length == 0 {
            return Err(ConfigError::Invalid(format!(
                "user namespace range length {length} is not a positive multiple of {ids_per_pod}"
            )));
        }
        Ok(UsernsAllocator {
            first_slot: first_id / ids_per_pod,
            slots: length / ids_per_pod,
            ids_per_pod,
            by_pod: BTreeMap::new(),
        })
    }

    /// Restores earlier allocations (pod UID and first host ID); entries outside the range or
    /// misaligned are rejected.
    pub fn with_allocations(
        mut self,
        allocations: impl IntoIterator<Item = (String, UsernsMapping)>,
    ) -> Result<UsernsAllocator, ConfigError> {
        for (uid, m) in allocations {
            self.record(&uid, m)?;
        }
        Ok(self)
    }

    /// Records an existing allocation for a pod.
    pub fn record(&mut self, pod_uid: &str, m: UsernsMapping) -> Result<(), ConfigError> {
        let slot = m.host_id / self.ids_per_pod;
        if m.host_id % self.ids_per_pod != 0
            || m.length != self.ids_per_pod
            || slot < self.first_slot
            || slot >= self.first_slot + self.slots
        {
            return Err(ConfigError::Invalid(format!(
                "user namespace mapping {}+{} of pod {pod_uid} is outside the allocator's range",
                m.host_id, m.length
            )));
        }
        if let Some(other) = self
            .by_pod
            .iter()
            .find(|(u, s)| **s == slot && u.as_str() != pod_uid)
        {
            return Err(ConfigError::Invalid(format!(
                "user namespace mapping {} of pod {pod_uid} is already used by pod {}",
                m.host_id, other.0
            )));
        }
        self.by_pod.insert(pod_uid.to_string(), slot);
        Ok(())
    }

    /// The pod's mapping, allocating a random free block the first time.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<UsernsMapping, ConfigError> {
        if let Some(slot) = self.by_pod.get(pod_uid) {
            return Ok(self.mapping(*slot));
        }
        let used: std::collections::HashSet<u32> = self.by_pod.values().copied().collect();
        if used.len() as u64 >= u64::from(self.slots) {
            return Err(ConfigError::Invalid(
                "no free user namespace range left".to_string(),
            ));
        }
        let start = rand::rng().random_range(0..self.slots);
        for i in 0..self.slots {
            let slot = self.first_slot + (start + i) % self.slots;
            if !used.contains(&slot) {
                self.by_pod.insert(pod_uid.to_string(), slot);
                return Ok(self.mapping(slot));
            }
        }
        Err(ConfigError::Invalid(
            "no free user namespace range left".to_string(),
        ))
    }

    /// Frees a pod's block.
    pub fn release(&mut self, pod_uid: &str) {
        self.by_pod.remove(pod_uid);
    }

    /// Every allocation, for persisting.
    pub fn allocations(&self) -> Vec<(String, UsernsMapping)> {
        self.by_pod
            .iter()
            .map(|(u, s)| (u.clone(), self.mapping(*s)))
            .collect()
    }

    fn mapping(&self, slot: u32) -> UsernsMapping {
        UsernsMapping {
            host_id: slot * self.ids_per_pod,
            length: self.ids_per_pod,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_aligned_blocks() {
        let mut a = UsernsAllocator::new(65536, 65536 * 3, 65536).unwrap();
        let x = a.allocate("a").unwrap();
        let y = a.allocate("b").unwrap();
        let z = a.allocate("c").unwrap();
        assert_eq!(a.allocate("a").unwrap(), x, "stable per pod");
        let mut ids = vec![x.host_id, y.host_id, z.host_id];
        ids.sort();
        assert_eq!(ids, vec![65536, 131072, 196608]);
        assert!(a.allocate("d").is_err());
        a.release("b");
        assert_eq!(a.allocate("d").unwrap(), y);
        let restored = UsernsAllocator::new(65536, 65536 * 3, 65536)
            .unwrap()
            .with_allocations(a.allocations())
            .unwrap();
        assert_eq!(restored.allocations(), a.allocations());
        assert!(UsernsAllocator::new(0, 65536, 65536).is_err());
        assert!(UsernsAllocator::new(65536, 65536, 1000).is_err());
        let m = UsernsMapping {
            host_id: 2417557504,
            length: 65536,
        };
        assert_eq!(
            UsernsMapping::from_kubelet_file(&m.to_kubelet_file()).unwrap(),
            m
        );
        assert!(UsernsMapping::from_kubelet_file("{}").is_err());
        let d = UsernsAllocator::kubelet_default().with_allocations([(
            "p".to_string(),
            UsernsMapping {
                host_id: 2417557504,
                length: 65536,
            },
        )]);
        assert!(d.is_ok());
    }
}
