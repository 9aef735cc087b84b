//! CRI container and pod configs as a client may send them (decoded from
//! protobuf), converted into Berth's model as the CRI server does at its
//! edge, turned into an OCI spec: converting and generating never panic,
//! and a spec the generator accepts has a process to run and serialises. The generator only
//! reads the host (mount sources, devices, profiles); the image root is a
//! small fixed tree with `/etc/passwd` and `/etc/group`.
#![no_main]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_cri::runtime::v1::{ContainerConfig, PodSandboxConfig};
use berth_oci::{CgroupSupport, Namespace, Namespaces, PodFiles, SpecInput};
use berth_server::convert;
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;
use prost::Message;

struct Fixed {
    rootfs: tempfile::TempDir,
    image: ImageConfiguration,
    grantable: BTreeSet<&'static str>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
        let image = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Env":["PATH=/bin"],"Cmd":["sh"],"User":"user"}}"#,
        )
        .unwrap();
        Fixed {
            rootfs,
            image,
            grantable: berth_oci::caps::grantable(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (container, sandbox) = rest.split_at(split);
    let (Ok(container), Ok(sandbox)) = (
        ContainerConfig::decode(container),
        PodSandboxConfig::decode(sandbox),
    ) else {
        return;
    };
    let (Ok(container), Ok(sandbox)) = (
        convert::container_config(container),
        convert::pod_config(sandbox),
    ) else {
        return;
    };
    let f = fixed();
    let input = SpecInput {
        container: &container,
        sandbox: &sandbox,
        image: &f.image,
        rootfs: f.rootfs.path(),
        namespaces: Namespaces {
            net: Namespace::New,
            ipc: Namespace::New,
            uts: Namespace::New,
            pid: Namespace::New,
            user: None,
        },
        pod_files: PodFiles::default(),
        cgroups_path: PathBuf::from("/kubepods/pod1/ctr1"),
        grantable: &f.grantable,
        oom_score_adj_min: 0,
        cgroup: CgroupSupport::everything(false, &["2MB"]),
        recursive_read_only: true,
    };
    if let Ok(generated) = berth_oci::generate(&input) {
        let process = generated.spec.process().as_ref().expect("a process");
        assert!(
            process.args().as_ref().is_some_and(|a| !a.is_empty()),
            "a spec without a command"
        );
        for m in generated.spec.mounts().as_deref().unwrap_or_default() {
            assert!(
                m.destination().is_absolute() || m.destination() == Path::new(""),
                "relative mount destination {:?}",
                m.destination()
            );
        }
        serde_json::to_vec(&generated.spec).expect("the spec serialises");
    }
});
