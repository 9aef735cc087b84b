//! Real CNI plugins (Debian's containernetworking-plugins) wiring a real
//! network namespace, and leaving nothing behind on teardown.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_network::{Cni, NetNs, PodNetwork, PortMapping};

fn plugin_dirs() -> Vec<PathBuf> {
    vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()]
}

fn sh(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bridge network on its own bridge and subnet, addresses kept in `ipam_dir`.
fn write_conflist(dir: &Path, bridge: &str, ipam_dir: &Path) {
    std::fs::write(
        dir.join("10-test.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"berth-test","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.239.7.0/24"}}]],"dataDir":"{}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            ipam_dir.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn add_and_del_with_real_plugins_leave_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("net.d");
    let ipam = d.path().join("ipam");
    std::fs::create_dir_all(&conf).unwrap();
    let bridge = format!("bth{:x}", std::process::id() & 0xfffff);
    let cni = Cni::new(&conf, plugin_dirs());
    assert!(cni.reload().is_err(), "no configuration: not ready");
    write_conflist(&conf, &bridge, &ipam);
    assert_eq!(cni.reload().unwrap(), "berth-test");

    let links_before = sh(&["ip", "-o", "link"]).lines().count();
    let ns = NetNs::create(&d.path().join("netns"), "pod-a").unwrap();
    let pod = PodNetwork {
        id: format!("berthtest{}", std::process::id()),
        netns: ns.path().to_path_buf(),
        name: "web".into(),
        namespace: "default".into(),
        uid: "uid-1".into(),
        port_mappings: vec![PortMapping {
            host_port: 18_081,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }],
    };
    let r = cni.setup(&pod).await.unwrap();
    assert_eq!(r.ips.len(), 1);
    assert!(r.ips[0].starts_with("10.239.7."), "{:?}", r.ips);
    // The address is really on eth0 inside the namespace, and lo is up.
    let inside = sh(&[
        "nsenter",
        &format!("--net={}", ns.path().display()),
        "ip",
        "-o",
        "addr",
    ]);
    assert!(inside.contains(&r.ips[0]), "{inside}");
    assert!(
        inside.contains("lo ") && inside.contains("127.0.0.1"),
        "{inside}"
    );
    // The host port is forwarded.
    let nat = sh(&["iptables-save", "-t", "nat"]);
    assert!(nat.contains("18081"), "portmap rule missing:\n{nat}");
    assert!(
        std::fs::read_dir(ipam.join("berth-test")).unwrap().count() > 1,
        "address reserved"
    );

    cni.teardown(&pod, Some(&r.result)).await.unwrap();
    // Idempotent, also once the namespace is gone.
    ns.remove().unwrap();
    cni.teardown(&pod, Some(&r.result)).await.unwrap();
    cni.teardown(&pod, None).await.unwrap();

    let nat = sh(&["iptables-save", "-t", "nat"]);
    assert!(!nat.contains("18081"), "portmap rule left behind:\n{nat}");
    let reserved: Vec<_> = std::fs::read_dir(ipam.join("berth-test"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10.239."))
        .collect();
    assert!(reserved.is_empty(), "addresses left reserved: {reserved:?}");
    // Only the bridge itself remains (the bridge plugin never deletes it), no veth.
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    assert_eq!(sh(&["ip", "-o", "link"]).lines().count(), links_before);
}

#[tokio::test]
async fn a_failing_plugin_is_reported_and_undone() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    // host-local with no ranges fails on ADD.
    std::fs::write(
        conf.join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"bridge","bridge":"bthbad0","ipam":{"type":"host-local"}}]}"#,
    )
    .unwrap();
    let cni = Cni::new(&conf, plugin_dirs());
    cni.reload().unwrap();
    let ns = NetNs::create(&d.path().join("netns"), "pod-b").unwrap();
    let pod = PodNetwork {
        id: "berthbad".into(),
        netns: ns.path().to_path_buf(),
        name: "p".into(),
        namespace: "d".into(),
        uid: "u".into(),
        port_mappings: vec![],
    };
    let e = cni.setup(&pod).await.unwrap_err().to_string();
    assert!(e.contains("bridge") && e.contains("ADD"), "{e}");
    ns.remove().unwrap();
    let _ = Command::new("ip").args(["link", "del", "bthbad0"]).status();
    // A plugin that is not installed.
    std::fs::write(
        conf.join("00-missing.conflist"),
        r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let e = cni.reload().unwrap_err().to_string();
    assert!(e.contains("no-such-plugin"), "{e}");
}
