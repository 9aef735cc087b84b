//! The on-disk format of pod and container records, and its migrations.
//!
//! - Version 1: a pod's `config`, a container's `config` and `resources`
//!   were the CRI's protobuf messages, in protobuf-JSON.
//! - Version 2: they are Berth's own model (`berth-podspec`); every other
//!   field is unchanged.
//!
//! A version 1 record is migrated when it is read (and written as version
//! 2 the next time it changes). Only the edge knows the wire format, so
//! the CRI configs of version 1 are read by a [`WireConfigs`] it supplies.

use std::sync::Arc;

use berth_podspec::{ContainerConfig, PodConfig, Resources};
use serde_json::Value;

/// The version pod and container records are written in.
pub const VERSION: u32 = 2;

/// Reads the CRI configs version 1 records kept (protobuf-JSON) into the
/// model, as the CRI server converts them at its edge.
pub trait WireConfigs: Send + Sync {
    fn pod_config(&self, v1: Value) -> Result<PodConfig, String>;
    fn container_config(&self, v1: Value) -> Result<ContainerConfig, String>;
    fn resources(&self, v1: Value) -> Result<Resources, String>;
}

/// Replaces `record[field]` with `convert(record[field])`, as JSON.
fn convert_field<T: serde::Serialize>(
    record: &mut Value,
    field: &str,
    convert: impl FnOnce(Value) -> Result<T, String>,
) -> Result<(), String> {
    let object = record
        .as_object_mut()
        .ok_or("the record is not a JSON object")?;
    let old = object.remove(field).unwrap_or(Value::Null);
    let new = convert(old).map_err(|e| format!("{field}: {e}"))?;
    let new = serde_json::to_value(new).map_err(|e| format!("{field}: {e}"))?;
    object.insert(field.to_string(), new);
    Ok(())
}

/// `record` of `version` in the current version's form: `v1` rewrites a
/// version 1 record in place.
fn migrate(
    version: u32,
    mut record: Value,
    v1: impl FnOnce(&mut Value) -> Result<(), String>,
) -> Result<Value, String> {
    match version {
        1 => v1(&mut record).map(|()| record),
        _ => Err(format!("no migration from version {version}")),
    }
}

/// A pod record of `version` in the current version's form.
pub fn migrate_pod(wire: &dyn WireConfigs, version: u32, record: Value) -> Result<Value, String> {
    migrate(version, record, |r| {
        convert_field(r, "config", |v| wire.pod_config(v))
    })
}

/// A container record of `version` in the current version's form.
pub fn migrate_container(
    wire: &dyn WireConfigs,
    version: u32,
    record: Value,
) -> Result<Value, String> {
    migrate(version, record, |r| {
        convert_field(r, "config", |v| wire.container_config(v))?;
        convert_field(r, "resources", |v| match v {
            Value::Null => Ok(None),
            v => wire.resources(v).map(Some),
        })
    })
}

/// The migrations of the pod and container record directories.
pub(crate) fn migrations(
    wire: Arc<dyn WireConfigs>,
) -> (berth_store::Migration, berth_store::Migration) {
    let w = wire.clone();
    (
        Arc::new(move |v, r| migrate_pod(&*w, v, r)),
        Arc::new(move |v, r| migrate_container(&*wire, v, r)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the one field the tests give: `name`.
    struct Fake;

    impl WireConfigs for Fake {
        fn pod_config(&self, v1: Value) -> Result<PodConfig, String> {
            let mut c = PodConfig::default();
            c.metadata.name = v1["metadata"]["name"].as_str().ok_or("no name")?.into();
            Ok(c)
        }
        fn container_config(&self, v1: Value) -> Result<ContainerConfig, String> {
            let mut c = ContainerConfig::default();
            c.metadata.name = v1["metadata"]["name"].as_str().ok_or("no name")?.into();
            Ok(c)
        }
        fn resources(&self, v1: Value) -> Result<Resources, String> {
            Ok(Resources {
                cpu_shares: v1["cpuShares"]
                    .as_str()
                    .ok_or("no shares")?
                    .parse()
                    .unwrap(),
                ..Default::default()
            })
        }
    }

    #[test]
    fn version_1_configs_become_the_model() {
        let pod =
            serde_json::json!({"id": "p", "config": {"metadata": {"name": "web"}}, "ready": true});
        let v2 = migrate_pod(&Fake, 1, pod).unwrap();
        assert_eq!(v2["config"]["metadata"]["name"], "web");
        assert_eq!(v2["ready"], true);

        let c = serde_json::json!({"id": "c", "config": {"metadata": {"name": "main"}}, "resources": {"cpuShares": "2"}});
        let v2 = migrate_container(&Fake, 1, c).unwrap();
        assert_eq!(v2["config"]["metadata"]["name"], "main");
        assert_eq!(v2["resources"]["cpu_shares"], 2);
        let c = serde_json::json!({"id": "c", "config": {"metadata": {"name": "main"}}, "resources": null});
        assert_eq!(
            migrate_container(&Fake, 1, c).unwrap()["resources"],
            Value::Null
        );

        let e = migrate_pod(&Fake, 1, serde_json::json!({"config": {}})).unwrap_err();
        assert!(e.contains("config: no name"), "{e}");
        assert!(migrate_pod(&Fake, 7, serde_json::json!({})).is_err());
    }
}
