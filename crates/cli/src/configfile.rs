//! crictl's pod and container config files: protobuf JSON (camelCase or
//! snake_case keys) or the same in YAML.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::CliError;

/// Reads a CRI message from a JSON or YAML file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("reading {}: {e}", path.display())))?;
    parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Parses JSON, or YAML when it is not JSON.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => serde_norway::from_str(text)
            .map_err(|yaml_err| format!("neither JSON ({json_err}) nor YAML ({yaml_err})"))?,
    };
    serde_json::from_value(value).map_err(|e| format!("not a valid config: {e}"))
}

#[cfg(test)]
mod tests {
    use berth_cri::runtime::v1 as cri;

    use super::*;

    #[test]
    fn crictl_pod_config_json_and_yaml() {
        // The pod config of crictl's documentation.
        let json = r#"{
            "metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
            "log_directory": "/tmp",
            "linux": {}
        }"#;
        let p: cri::PodSandboxConfig = parse(json).unwrap();
        assert_eq!(p.metadata.as_ref().unwrap().name, "nginx-sandbox");
        assert_eq!(p.metadata.as_ref().unwrap().attempt, 1);
        assert_eq!(p.log_directory, "/tmp");
        let yaml = "metadata:\n  name: nginx-sandbox\n  namespace: default\n  uid: abc\nlogDirectory: /tmp\nlinux: {}\n";
        let q: cri::PodSandboxConfig = parse(yaml).unwrap();
        assert_eq!(q.metadata.unwrap().uid, "abc");
        assert_eq!(q.log_directory, "/tmp");
    }

    #[test]
    fn crictl_container_config() {
        let json = r#"{
          "metadata": {"name": "busybox"},
          "image": {"image": "busybox"},
          "command": ["top"],
          "envs": [{"key": "A", "value": "b"}],
          "log_path": "busybox.log",
          "linux": {"security_context": {"run_as_user": {"value": 1000}}}
        }"#;
        let c: cri::ContainerConfig = parse(json).unwrap();
        assert_eq!(c.image.unwrap().image, "busybox");
        assert_eq!(c.command, ["top"]);
        assert_eq!(c.envs[0].key, "A");
        assert_eq!(c.log_path, "busybox.log");
        let sc = c.linux.unwrap().security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert!(parse::<cri::ContainerConfig>("{not json: [").is_err());
        assert!(parse::<cri::ContainerConfig>(r#"{"metadata": 5}"#).is_err());
    }
}
