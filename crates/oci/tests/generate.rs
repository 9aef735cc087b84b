//! `berth_oci::generate` end to end: container config (berth-podspec) + pod +
//! image + rootfs in, OCI spec out, on this host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_oci::{
    caps, exec_process, generate, validate_userns, ErrorKind, Generated, IdMap, Namespace,
    Namespaces, PodFiles, SpecError, SpecInput, UserNs,
};
use berth_podspec::{
    Capabilities as CriCapability, ContainerConfig, ContainerMetadata,
    ContainerSecurityContext as LinuxContainerSecurityContext, Device, EnvVar as KeyValue,
    HugepageLimit, IdMapping, ImageSpec, LinuxContainerConfig,
    LinuxPodConfig as LinuxPodSandboxConfig, Mount as CriMount, MountPropagation, NamespaceMode,
    PodConfig as PodSandboxConfig, PodMetadata as PodSandboxMetadata,
    PodSecurityContext as LinuxSandboxSecurityContext, ProfileType,
    Resources as LinuxContainerResources, SecurityProfile, UserNamespace,
};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Mount, Spec,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Fixture

struct Fixture {
    rootfs: TempDir,
    image: ImageConfiguration,
    sandbox: PodSandboxConfig,
    container: ContainerConfig,
    grantable: BTreeSet<&'static str>,
    namespaces: Namespaces,
    pod_files: PodFiles,
    oom_score_adj_min: i32,
    cgroup: berth_oci::CgroupSupport,
    recursive_read_only: bool,
}

/// Every capability but CAP_SYS_RESOURCE, like the VM the lab runs on.
fn all_but_sys_resource() -> BTreeSet<&'static str> {
    let mut g = caps::from_mask((1u64 << 41) - 1);
    g.remove("SYS_RESOURCE");
    g
}

fn image(config: serde_json::Value) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": config,
    }))
    .unwrap()
}

impl Fixture {
    fn new() -> Self {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             nobody:x:65534:65534:nobody:/:/bin/false\n\
             user:x:1000:1000::/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:root\nuser:x:1000:\ngroup1:x:50000:user\nnogroup:x:65534:\n",
        )
        .unwrap();
        Fixture {
            rootfs,
            image: image(serde_json::json!({
                "Env": ["PATH=/usr/bin:/bin", "IMAGE_ONLY=1", "SHARED=image"],
                "Cmd": ["sh"],
                "StopSignal": "SIGQUIT",
            })),
            sandbox: PodSandboxConfig {
                metadata: PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "pod-uid".into(),
                    namespace: "pod-ns".into(),
                    attempt: 2,
                },
                hostname: "podhost".into(),
                ..Default::default()
            },
            container: ContainerConfig {
                metadata: ContainerMetadata {
                    name: "ctr".into(),
                    attempt: 2,
                },
                image: ImageSpec {
                    image: "sha256:abc".into(),
                    user_specified_image: "busybox:1.29-2".into(),
                },
                command: vec!["top".into()],
                ..Default::default()
            },
            grantable: all_but_sys_resource(),
            namespaces: Namespaces {
                net: Namespace::Join("/var/run/netns/pod".into()),
                ipc: Namespace::Join("/proc/42/ns/ipc".into()),
                uts: Namespace::Join("/proc/42/ns/uts".into()),
                pid: Namespace::Join("/proc/42/ns/pid".into()),
                user: None,
            },
            pod_files: PodFiles::default(),
            oom_score_adj_min: 0,
            cgroup: berth_oci::CgroupSupport::everything(true, &["2MB"]),
            recursive_read_only: true,
        }
    }

    fn input(&self) -> SpecInput<'_> {
        SpecInput {
            container: &self.container,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: self.rootfs.path(),
            namespaces: self.namespaces.clone(),
            pod_files: self.pod_files.clone(),
            cgroups_path: PathBuf::from("/kubepods/pod1/ctr1"),
            grantable: &self.grantable,
            oom_score_adj_min: self.oom_score_adj_min,
            cgroup: self.cgroup.clone(),
            recursive_read_only: self.recursive_read_only,
        }
    }

    fn generate(&self) -> Result<Generated, SpecError> {
        generate(&self.input())
    }

    fn spec(&self) -> Spec {
        self.generate().unwrap().spec
    }

    /// The container's security context, created if absent.
    fn sc(&mut self) -> &mut LinuxContainerSecurityContext {
        self.container
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    /// The container's resources, created if absent.
    fn resources(&mut self) -> &mut LinuxContainerResources {
        self.container
            .linux
            .get_or_insert_with(LinuxContainerConfig::default)
            .resources
            .get_or_insert_with(Default::default)
    }

    /// The pod's security context, created if absent.
    fn pod_sc(&mut self) -> &mut LinuxSandboxSecurityContext {
        self.sandbox
            .linux
            .get_or_insert_with(LinuxPodSandboxConfig::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    fn privileged(&mut self) {
        self.pod_sc().privileged = true;
        self.sc().privileged = true;
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn args(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().args().clone().unwrap()
}

fn env(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

fn caps_of(spec: &Spec) -> BTreeSet<String> {
    let c = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    c.bounding()
        .clone()
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn mount<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(destination))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn seccomp(spec: &Spec) -> Option<LinuxSeccomp> {
    spec.linux().as_ref().unwrap().seccomp().clone()
}

fn kind(r: Result<Generated, SpecError>) -> (ErrorKind, String) {
    let e = r.expect_err("generate should have failed");
    (e.kind(), e.to_string())
}

fn profile(kind: ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: kind,
        localhost_ref: localhost_ref.into(),
    })
}

// ---------------------------------------------------------------------------
// The whole spec of a default container

#[test]
fn a_default_container() {
    let f = Fixture::new();
    let g = f.generate().unwrap();
    let spec = &g.spec;
    assert_eq!(spec.version(), oci_spec::runtime::VERSION);
    assert_eq!(spec.hostname(), &None, "the pod's UTS namespace has it");
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), f.rootfs.path());
    assert_eq!(root.readonly(), Some(false));

    let p = spec.process().as_ref().unwrap();
    assert_eq!(args(spec), ["top"]);
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.user().uid(), 0);
    assert_eq!(p.user().gid(), 0);
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[0, 10][..]));
    assert_eq!(p.no_new_privileges(), None, "absent, not false");
    assert_eq!(p.rlimits(), &None);
    assert_eq!(p.oom_score_adj(), None);
    assert_eq!(p.apparmor_profile(), &None);
    assert_eq!(
        caps_of(spec),
        caps::DEFAULT.iter().map(|c| format!("CAP_{c}")).collect()
    );
    assert_eq!(
        g.identity,
        berth_oci::Identity {
            uid: 0,
            gid: 0,
            additional_gids: vec![0, 10]
        }
    );
    assert_eq!(g.stop_signal.as_deref(), Some("SIGQUIT"));

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod1/ctr1"))
    );
    assert_eq!(linux.seccomp(), &None, "no seccomp asked: unconfined");
    assert_eq!(linux.sysctl(), &None);
    assert_eq!(linux.rootfs_propagation(), &None);
    assert_eq!(linux.uid_mappings(), &None);
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/sys".to_string()));

    let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect();
    assert_eq!(ns[0], (LinuxNamespaceType::Mount, None));
    assert!(ns.contains(&(
        LinuxNamespaceType::Network,
        Some("/var/run/netns/pod".into())
    )));
    assert!(ns.contains(&(LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc".into()))));
    assert!(ns.contains(&(LinuxNamespaceType::Uts, Some("/proc/42/ns/uts".into()))));
    assert!(ns.contains(&(LinuxNamespaceType::Pid, Some("/proc/42/ns/pid".into()))));
    assert!(!ns.iter().any(|(t, _)| *t == LinuxNamespaceType::User));

    let destinations: Vec<&Path> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().as_path())
        .collect();
    assert_eq!(
        destinations,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup"
        ]
        .map(Path::new)
    );
    assert!(options(mount(spec, "/sys").unwrap()).contains(&"ro".to_string()));
    assert!(options(mount(spec, "/sys/fs/cgroup").unwrap()).contains(&"ro".to_string()));
    assert_eq!(
        mount(spec, "/dev/shm").unwrap().typ().as_deref(),
        Some("tmpfs")
    );

    let devices = linux.devices().as_ref().unwrap();
    assert_eq!(devices.len(), 6);
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules[0].to_string(), "a *:* rwm");
    assert!(!rules[0].allow());
    assert!(rules
        .iter()
        .any(|r| r.allow() && r.to_string() == "c 1:3 rwm"));

    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.container-name"], "ctr");
    assert_eq!(a["io.kubernetes.cri.sandbox-name"], "pod");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "pod-ns");
    assert_eq!(a["io.kubernetes.cri.sandbox-uid"], "pod-uid");
    assert_eq!(a["io.kubernetes.cri.image-name"], "busybox:1.29-2");
}

#[test]
fn a_nil_linux_config_is_fine() {
    let mut f = Fixture::new();
    f.container.linux = None;
    f.container.command.clear();
    let spec = f.spec();
    assert_eq!(args(&spec), ["sh"]);
    assert_eq!(caps_of(&spec).len(), 14);
}

#[test]
fn the_json_has_no_inheritable_or_ambient_caps() {
    let mut f = Fixture::new();
    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["NET_ADMIN"]),
        add_ambient_capabilities: strings(&["NET_ADMIN"]),
        ..Default::default()
    });
    let json = serde_json::to_value(f.spec()).unwrap();
    let c = &json["process"]["capabilities"];
    assert_eq!(c["inheritable"], serde_json::json!([]));
    assert_eq!(c["ambient"], serde_json::json!([]));
    let bounding = c["bounding"].as_array().unwrap();
    assert_eq!(bounding.len(), 15);
    assert!(bounding.contains(&serde_json::json!("CAP_NET_ADMIN")));
    for set in ["effective", "permitted"] {
        let mut a: Vec<String> = serde_json::from_value(c[set].clone()).unwrap();
        let mut b: Vec<String> = serde_json::from_value(c["bounding"].clone()).unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{set}");
    }
    assert!(json["process"].get("noNewPrivileges").is_none());
    assert!(json.get("hostname").is_none());
    // And it reads back as the same spec.
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, f.spec());
}

// ---------------------------------------------------------------------------
// Process

#[test]
fn command_and_args_merge_with_the_image() {
    /// CRI command, CRI args, image config, resulting argv.
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        serde_json::Value,
        Vec<&'a str>,
    );
    let cases: [Case; 7] = [
        // CRI command replaces Entrypoint, and drops Cmd.
        (
            &["top"],
            &[],
            serde_json::json!({"Entrypoint": ["ep"], "Cmd": ["cmd"]}),
            vec!["top"],
        ),
        // CRI args replace Cmd.
        (
            &[],
            &["-x"],
            serde_json::json!({"Entrypoint": ["ep"], "Cmd": ["cmd"]}),
            vec!["ep", "-x"],
        ),
        (
            &["c"],
            &["a"],
            serde_json::json!({"Entrypoint": ["ep"], "Cmd": ["cmd"]}),
            vec!["c", "a"],
        ),
        // Neither: the image's Entrypoint + Cmd.
        (
            &[],
            &[],
            serde_json::json!({"Entrypoint": ["ep"], "Cmd": ["cmd"]}),
            vec!["ep", "cmd"],
        ),
        (
            &[],
            &[],
            serde_json::json!({"Cmd": ["cmd", "x"]}),
            vec!["cmd", "x"],
        ),
        // `[""]` is no entrypoint.
        (
            &[],
            &[],
            serde_json::json!({"Entrypoint": [""], "Cmd": ["cmd"]}),
            vec!["cmd"],
        ),
        (&[], &["only"], serde_json::json!({}), vec!["only"]),
    ];
    for (command, a, img, want) in cases {
        let mut f = Fixture::new();
        f.container.command = strings(command);
        f.container.args = strings(a);
        f.image = image(img);
        assert_eq!(args(&f.spec()), want, "{command:?} {a:?}");
    }
    let mut f = Fixture::new();
    f.container.command.clear();
    f.image = image(serde_json::json!({"Env": ["A=1"]}));
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("no command specified"), "{msg}");
    f.image = image(serde_json::json!({"Entrypoint": [""]}));
    assert!(matches!(f.generate(), Err(SpecError::NoCommand)));
}

#[test]
fn environment_layers() {
    let mut f = Fixture::new();
    f.container.envs = vec![
        KeyValue {
            key: "SHARED".into(),
            value: "container".into(),
        },
        KeyValue {
            key: "EMPTY".into(),
            value: String::new(),
        },
    ];
    let e = env(&f.spec());
    assert_eq!(
        e,
        [
            "PATH=/usr/bin:/bin",
            "HOSTNAME=podhost",
            "IMAGE_ONLY=1",
            "SHARED=container",
            "EMPTY="
        ]
    );
    // A tty adds TERM, which the image or the CRI may override.
    f.container.tty = true;
    let spec = f.spec();
    assert!(env(&spec).contains(&"TERM=xterm".to_string()));
    assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
    // No PATH in the image: the default one.
    f.image = image(serde_json::json!({"Cmd": ["sh"]}));
    assert!(env(&f.spec())[0].starts_with("PATH=/usr/local/sbin:"));
    // No pod hostname: the host's.
    f.sandbox.hostname.clear();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(env(&f.spec()).contains(&format!("HOSTNAME={}", host.trim())));
}

#[test]
fn bad_environment_entries() {
    for (key, value, why) in [
        ("", "v", "non-empty"),
        ("A=B", "v", "non-empty"),
        ("K", "a\0b", "NUL"),
    ] {
        let mut f = Fixture::new();
        f.container.envs = vec![KeyValue {
            key: key.into(),
            value: value.into(),
        }];
        let (k, msg) = kind(f.generate());
        assert_eq!(k, ErrorKind::InvalidArgument, "{key:?}");
        assert!(msg.contains(why), "{msg}");
    }
}

#[test]
fn working_directory() {
    let mut f = Fixture::new();
    f.image = image(serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/srv"}));
    let cwd = |f: &Fixture| f.spec().process().as_ref().unwrap().cwd().clone();
    assert_eq!(cwd(&f), Path::new("/srv"));
    f.container.working_dir = "/work".into();
    assert_eq!(cwd(&f), Path::new("/work"));
    f.container.working_dir = "relative".into();
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(
        msg.contains("working_dir") && msg.contains("absolute"),
        "{msg}"
    );
}

#[test]
fn users_and_groups() {
    let mut f = Fixture::new();
    f.sc().run_as_user = Some(1001);
    let g = f.generate().unwrap();
    assert_eq!((g.identity.uid, g.identity.gid), (1001, 0));
    let u = g.spec.process().as_ref().unwrap().user().clone();
    assert_eq!((u.uid(), u.gid()), (1001, 0));

    f.sc().run_as_group = Some(1002);
    assert_eq!(f.generate().unwrap().identity.gid, 1002);

    // A name is looked up in the image and wins over a uid.
    f.sc().run_as_username = "nobody".into();
    f.sc().run_as_group = None;
    let id = f.generate().unwrap().identity;
    assert_eq!((id.uid, id.gid), (65534, 65534));

    // Merge: the image's groups for the user, plus the requested ones.
    let mut f = Fixture::new();
    f.sc().run_as_user = Some(1000);
    f.sc().supplemental_groups = vec![1234];
    let id = f.generate().unwrap().identity;
    assert_eq!(id.additional_gids, [1000, 1234, 50000]);
    // Strict: only the requested ones (and the primary group).
    f.sc().supplemental_groups_policy = berth_podspec::SupplementalGroupsPolicy::Strict;
    let g = f.generate().unwrap();
    assert_eq!(g.identity.additional_gids, [1000, 1234]);
    assert_eq!(
        g.spec
            .process()
            .as_ref()
            .unwrap()
            .user()
            .additional_gids()
            .as_deref(),
        Some(&[1000, 1234][..])
    );
}

#[test]
fn bad_users() {
    let mut f = Fixture::new();
    f.sc().run_as_group = Some(1002);
    let e = f.generate().unwrap_err();
    assert!(matches!(e, SpecError::GroupWithoutUser(1002)), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("without run_as_user"), "{e}");

    let mut f = Fixture::new();
    f.sc().run_as_username = "ghost".into();
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::NotFound);
    assert!(msg.contains("ghost"), "{msg}");

    let mut f = Fixture::new();
    f.sc().run_as_user = Some(-1);
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);

    let mut f = Fixture::new();
    f.sc().run_as_user = Some(0);
    f.sc().supplemental_groups = vec![1 << 40];
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);

    // An /etc/group that cannot be read (a symlink loop) is the image's
    // problem, not the request's.
    let f = Fixture::new();
    let group = f.rootfs.path().join("etc/group");
    std::fs::remove_file(&group).unwrap();
    std::os::unix::fs::symlink("group", &group).unwrap();
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::FailedPrecondition);
    assert!(msg.contains("etc/group"), "{msg}");
}

#[test]
fn capabilities_add_and_drop() {
    let mut f = Fixture::new();
    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["NET_ADMIN", "sys_admin"]),
        drop_capabilities: strings(&["NET_RAW"]),
        ..Default::default()
    });
    let c = caps_of(&f.spec());
    assert!(c.contains("CAP_NET_ADMIN") && c.contains("CAP_SYS_ADMIN"));
    assert!(!c.contains("CAP_NET_RAW"));

    f.sc().capabilities = Some(CriCapability {
        drop_capabilities: strings(&["ALL"]),
        ..Default::default()
    });
    assert!(caps_of(&f.spec()).is_empty());

    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["ALL"]),
        ..Default::default()
    });
    let c = caps_of(&f.spec());
    assert_eq!(c.len(), 40);
    assert!(!c.contains("CAP_SYS_RESOURCE"), "not held by the runtime");

    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["SYS_RESOURCE"]),
        ..Default::default()
    });
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::FailedPrecondition);
    assert!(msg.contains("CAP_SYS_RESOURCE"), "{msg}");

    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["FLY"]),
        ..Default::default()
    });
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);
}

#[test]
fn never_a_capability_the_runtime_does_not_hold() {
    let grantable: BTreeSet<&'static str> =
        ["CHOWN", "KILL", "NET_BIND_SERVICE", "SETUID", "SYS_CHROOT"].into();
    let requests: Vec<(bool, Vec<String>, Vec<String>)> = vec![
        (false, vec![], vec![]),
        (false, strings(&["ALL"]), vec![]),
        (false, strings(&["ALL"]), strings(&["KILL"])),
        (false, strings(&["KILL", "CHOWN"]), vec![]),
        (true, vec![], vec![]),
        (true, strings(&["ALL"]), strings(&["ALL"])),
    ];
    for (privileged, add, drop) in requests {
        let mut f = Fixture::new();
        f.grantable = grantable.clone();
        if privileged {
            f.privileged();
        }
        f.sc().capabilities = Some(CriCapability {
            add_capabilities: add.clone(),
            drop_capabilities: drop.clone(),
            ..Default::default()
        });
        let spec = f.spec();
        let c = caps_of(&spec);
        assert!(!c.is_empty() || drop.contains(&"ALL".to_string()) && !privileged);
        for cap in &c {
            let bare = cap.strip_prefix("CAP_").unwrap();
            assert!(
                grantable.contains(bare),
                "{cap} granted for {privileged} {add:?} {drop:?}"
            );
        }
        let json = serde_json::to_value(&spec).unwrap();
        for set in ["bounding", "effective", "permitted"] {
            for cap in json["process"]["capabilities"][set].as_array().unwrap() {
                let cap = cap.as_str().unwrap().strip_prefix("CAP_").unwrap();
                assert!(grantable.contains(cap), "{set}: {cap}");
            }
        }
    }
}

#[test]
fn no_new_privileges_and_oom_score_adj() {
    let mut f = Fixture::new();
    f.sc().no_new_privs = true;
    f.resources().oom_score_adj = -997;
    let spec = f.spec();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(
        p.oom_score_adj(),
        Some(0),
        "clamped to the runtime's minimum"
    );

    f.resources().oom_score_adj = 900;
    assert_eq!(
        f.spec().process().as_ref().unwrap().oom_score_adj(),
        Some(900)
    );
    f.oom_score_adj_min = -500;
    f.resources().oom_score_adj = -997;
    assert_eq!(
        f.spec().process().as_ref().unwrap().oom_score_adj(),
        Some(-500)
    );
    f.resources().oom_score_adj = -200;
    assert_eq!(
        f.spec().process().as_ref().unwrap().oom_score_adj(),
        Some(-200)
    );
    f.resources().oom_score_adj = 2000;
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("oom_score_adj"), "{msg}");
}

#[test]
fn exec_processes_inherit_the_container_settings() {
    let mut f = Fixture::new();
    f.sc().run_as_user = Some(1000);
    f.sc().no_new_privs = true;
    f.sc().capabilities = Some(CriCapability {
        drop_capabilities: strings(&["ALL"]),
        ..Default::default()
    });
    f.container.working_dir = "/tmp".into();
    let spec = f.spec();
    let container = spec.process().as_ref().unwrap();
    let p = exec_process(&spec, strings(&["id", "-G"]), false);
    assert_eq!(p.args().as_deref(), Some(&strings(&["id", "-G"])[..]));
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.env(), container.env());
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!(p.user(), container.user());
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.capabilities(), container.capabilities());
    assert!(p
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .as_ref()
        .unwrap()
        .is_empty());
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.rlimits(), container.rlimits());

    let p = exec_process(&spec, strings(&["sh"]), true);
    assert_eq!(p.terminal(), Some(true));
    let e = p.env().clone().unwrap();
    assert_eq!(e.iter().filter(|v| v.starts_with("TERM=")).count(), 1);
    assert!(e.contains(&"TERM=xterm".to_string()));

    // Without a process in the spec: still a complete, harmless one.
    let mut empty = Spec::default();
    empty.set_process(None);
    let p = exec_process(&empty, strings(&["ls"]), false);
    assert_eq!(p.args().as_deref(), Some(&strings(&["ls"])[..]));
    let c = p.capabilities().clone().unwrap();
    assert!(c.bounding().as_ref().unwrap().is_empty());
    assert!(c.inheritable().as_ref().unwrap().is_empty());
    assert_eq!(p.rlimits(), &None);
}

// ---------------------------------------------------------------------------
// Privileged

#[test]
fn privileged_needs_a_privileged_pod() {
    let mut f = Fixture::new();
    f.sc().privileged = true;
    let e = f.generate().unwrap_err();
    assert!(matches!(e, SpecError::PrivilegedNotAllowed));
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(e.to_string().contains("privileged"), "{e}");
}

#[test]
fn privileged_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let block = dir.path().join("block-host-name.json");
    std::fs::write(
        &block,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut f = Fixture::new();
    f.privileged();
    f.sc().seccomp = profile(ProfileType::Localhost, block.to_str().unwrap());
    f.sc().masked_paths = strings(&["/bin/ls"]);
    let spec = f.spec();
    assert_eq!(caps_of(&spec).len(), f.grantable.len());
    assert_eq!(seccomp(&spec), None, "privileged ignores seccomp");
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths(), &None);
    assert_eq!(linux.readonly_paths(), &None);
    assert!(options(mount(&spec, "/sys").unwrap()).contains(&"rw".to_string()));
    assert!(options(mount(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert_eq!(rules[0].to_string(), "a *:* rwm");
    let devices = linux.devices().as_ref().unwrap();
    assert!(devices.len() >= 6);
    assert!(devices
        .iter()
        .any(|d| d.path() == Path::new("/dev/null") && d.major() == 1 && d.minor() == 3));
    // No path twice.
    let paths: BTreeSet<&PathBuf> = devices.iter().map(|d| d.path()).collect();
    assert_eq!(paths.len(), devices.len());
}

// ---------------------------------------------------------------------------
// Seccomp

fn write_profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const BLOCK_CHMOD: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}"#;

#[test]
fn seccomp_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let chmod = write_profile(dir.path(), "block-chmod.json", BLOCK_CHMOD);

    // nil: unconfined.
    let mut f = Fixture::new();
    assert_eq!(seccomp(&f.spec()), None);

    // Unconfined.
    f.sc().seccomp = profile(ProfileType::Unconfined, "");
    assert_eq!(seccomp(&f.spec()), None);

    // RuntimeDefault: the built-in profile.
    f.sc().seccomp = profile(ProfileType::RuntimeDefault, "");
    let s = seccomp(&f.spec()).unwrap();
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(libc::EPERM as u32));
    let allowed: Vec<&String> = s
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names())
        .collect();
    for name in ["read", "write", "execve", "chmod", "wait4", "exit_group"] {
        assert!(allowed.iter().any(|n| *n == name), "{name}");
    }
    for name in ["mount", "sethostname", "reboot", "kexec_load", "keyctl"] {
        assert!(!allowed.iter().any(|n| *n == name), "{name} allowed");
    }

    // Localhost, absolute path (as critest sends it), and with the prefix.
    for reference in [
        chmod.display().to_string(),
        format!("localhost/{}", chmod.display()),
    ] {
        f.sc().seccomp = profile(ProfileType::Localhost, &reference);
        let s = seccomp(&f.spec()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(s.architectures(), &None);
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].names(), &strings(&["chmod", "fchmodat"]));
        assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(rules[0].errno_ret(), None, "EPERM by default");
    }
}

#[test]
fn seccomp_profile_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    let missing = dir.path().join("missing.json");
    f.sc().seccomp = profile(ProfileType::Localhost, missing.to_str().unwrap());
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::NotFound);
    assert!(msg.contains("missing.json"), "{msg}");

    let bad = write_profile(dir.path(), "bad.json", "{not json");
    f.sc().seccomp = profile(ProfileType::Localhost, bad.to_str().unwrap());
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("bad.json"), "{msg}");

    let unknown = write_profile(
        dir.path(),
        "unknown.json",
        r#"{"defaultAction":"SCMP_ACT_FLY","syscalls":[]}"#,
    );
    f.sc().seccomp = profile(ProfileType::Localhost, unknown.to_str().unwrap());
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);

    f.sc().seccomp = profile(ProfileType::Localhost, "relative/profile.json");
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("absolute"), "{msg}");

    f.sc().seccomp = profile(ProfileType::Localhost, "");
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);

    f.sc().seccomp = profile(ProfileType::RuntimeDefault, "/some/profile.json");
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(
        msg.contains("only allowed with profile type Localhost"),
        "{msg}"
    );
}

#[test]
#[allow(deprecated)]
fn deprecated_seccomp_profile_path() {
    let dir = tempfile::tempdir().unwrap();
    let chmod = write_profile(dir.path(), "block-chmod.json", BLOCK_CHMOD);
    let mut f = Fixture::new();
    for (path, default_action) in [
        ("runtime/default", Some(LinuxSeccompAction::ScmpActErrno)),
        ("docker/default", Some(LinuxSeccompAction::ScmpActErrno)),
        ("unconfined", None),
        ("", None),
        (
            &format!("localhost/{}", chmod.display()),
            Some(LinuxSeccompAction::ScmpActAllow),
        ),
    ] {
        f.sc().seccomp_profile_path = path.to_string();
        assert_eq!(
            seccomp(&f.spec()).map(|s| s.default_action()),
            default_action,
            "{path}"
        );
    }
    f.sc().seccomp_profile_path = "bogus".into();
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("seccomp_profile_path"), "{msg}");
    // The structured field wins over the string.
    f.sc().seccomp_profile_path = "runtime/default".into();
    f.sc().seccomp = profile(ProfileType::Unconfined, "");
    assert_eq!(seccomp(&f.spec()), None);
}

#[test]
fn the_container_profile_wins_over_the_pod_one() {
    let dir = tempfile::tempdir().unwrap();
    let chmod = write_profile(dir.path(), "block-chmod.json", BLOCK_CHMOD);
    let mut f = Fixture::new();
    f.pod_sc().seccomp = profile(ProfileType::Localhost, chmod.to_str().unwrap());
    // The container says nothing: the pod's applies.
    assert_eq!(
        seccomp(&f.spec()).unwrap().default_action(),
        LinuxSeccompAction::ScmpActAllow
    );
    f.sc().seccomp = profile(ProfileType::Unconfined, "");
    assert_eq!(seccomp(&f.spec()), None);
    f.sc().seccomp = profile(ProfileType::RuntimeDefault, "");
    assert_eq!(
        seccomp(&f.spec()).unwrap().default_action(),
        LinuxSeccompAction::ScmpActErrno
    );
    // The pod's deprecated string too.
    let mut f = Fixture::new();
    #[allow(deprecated)]
    {
        f.pod_sc().seccomp_profile_path = "runtime/default".into();
    }
    assert!(seccomp(&f.spec()).is_some());
}

#[test]
fn docker_format_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        _ => "SCMP_ARCH_X86",
    };
    let goarch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => "386",
    };
    let text = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": arch, "subArchitectures": ["SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        ],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "", "includes": {}, "excludes": {}},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_only"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": [goarch]}},
            {"names": ["other_arch"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["old"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        ],
        "unknownTopLevelKey": {"anything": true},
    });
    let p = write_profile(dir.path(), "docker.json", &text.to_string());
    let mut f = Fixture::new();
    f.sc().seccomp = profile(ProfileType::Localhost, p.to_str().unwrap());
    let s = seccomp(&f.spec()).unwrap();
    assert_eq!(s.default_errno_ret(), Some(1));
    let arches = serde_json::to_value(s.architectures()).unwrap();
    assert_eq!(arches, serde_json::json!([arch, "SCMP_ARCH_X32"]));
    let names: Vec<&str> = s
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|r| r.names().iter().map(String::as_str))
        .collect();
    assert_eq!(
        names,
        [
            "read",
            "write",
            "getpid",
            "chown",
            "arch_only",
            "old",
            "personality",
            "clone3"
        ]
    );
    let rules = s.syscalls().as_ref().unwrap();
    let personality = rules
        .iter()
        .find(|r| r.names()[0] == "personality")
        .unwrap();
    let a = personality.args().as_ref().unwrap()[0];
    assert_eq!(
        (a.index(), a.value(), a.op()),
        (0, 8, LinuxSeccompOperator::ScmpCmpEq)
    );
    assert_eq!(rules.last().unwrap().errno_ret(), Some(38));

    // With CAP_SYS_ADMIN the mount rule applies and the chown one does not.
    f.sc().capabilities = Some(CriCapability {
        add_capabilities: strings(&["SYS_ADMIN"]),
        ..Default::default()
    });
    let s = seccomp(&f.spec()).unwrap();
    let names: Vec<&String> = s
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|r| r.names())
        .collect();
    assert!(names.iter().any(|n| *n == "mount"));
    assert!(!names.iter().any(|n| *n == "chown"));

    // `name` and `names` together are refused.
    let both = write_profile(
        dir.path(),
        "both.json",
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    f.sc().seccomp = profile(ProfileType::Localhost, both.to_str().unwrap());
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("both"), "{msg}");
}

#[test]
fn the_default_profile_round_trips_through_json() {
    let caps: Vec<String> = caps::DEFAULT.iter().map(|c| format!("CAP_{c}")).collect();
    let profile = berth_oci::seccomp::default_profile(&caps);
    let json = serde_json::to_string_pretty(&profile).unwrap();
    let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
    assert_eq!(back, profile);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            v["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
    }
    // Written to a file, it loads back as a Localhost profile unchanged.
    let dir = tempfile::tempdir().unwrap();
    let path = write_profile(dir.path(), "default.json", &json);
    let mut f = Fixture::new();
    f.sc().seccomp = profile_ref(&path);
    assert_eq!(seccomp(&f.spec()).unwrap(), profile);
}

fn profile_ref(path: &Path) -> Option<SecurityProfile> {
    profile(ProfileType::Localhost, path.to_str().unwrap())
}

#[test]
fn the_default_profile_follows_the_capabilities() {
    let rules_for = |caps: &[&str]| {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        berth_oci::seccomp::default_profile(&caps)
            .syscalls()
            .clone()
            .unwrap()
    };
    let plain = rules_for(&["CAP_CHOWN"]);
    let clone_rules: Vec<_> = plain
        .iter()
        .filter(|r| r.names() == &strings(&["clone"]))
        .collect();
    // clone only without CLONE_NEW* flags, in OCI's (runc's) spelling:
    // value is the mask, valueTwo the expected result.
    assert_eq!(clone_rules.len(), 1);
    let a = clone_rules[0].args().as_ref().unwrap()[0];
    assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(
        (a.index(), a.value(), a.value_two()),
        (0, 0x7E02_0000, Some(0))
    );
    let clone3 = plain
        .iter()
        .find(|r| r.names() == &strings(&["clone3"]))
        .unwrap();
    assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
    assert!(!plain
        .iter()
        .any(|r| r.names().contains(&"mount".to_string())));

    let admin = rules_for(&["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]);
    let unconditional: Vec<&String> = admin
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names())
        .collect();
    for name in [
        "mount",
        "clone",
        "clone3",
        "sethostname",
        "kcmp",
        "settimeofday",
    ] {
        assert!(unconditional.iter().any(|n| *n == name), "{name}");
    }
    assert!(!admin
        .iter()
        .any(|r| r.action() == LinuxSeccompAction::ScmpActErrno));
}

// ---------------------------------------------------------------------------
// Mounts

fn cri_mount(host: &Path, container: &str) -> CriMount {
    CriMount {
        host_path: host.to_str().unwrap().into(),
        container_path: container.into(),
        ..Default::default()
    }
}

#[test]
fn cri_bind_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let link = dir.path().join("vol-symlink");
    std::os::unix::fs::symlink(&vol, &link).unwrap();

    let mut f = Fixture::new();
    let mut ro = cri_mount(&vol, "/mnt/ro");
    ro.readonly = true;
    ro.selinux_relabel = true;
    let mut rro = cri_mount(&vol, "/mnt/rro");
    rro.readonly = true;
    rro.recursive_read_only = true;
    f.container.mounts = vec![
        cri_mount(&vol, "/data"),
        ro,
        rro,
        cri_mount(&link, "/linked"),
    ];
    let spec = f.spec();
    let canonical = std::fs::canonicalize(&vol).unwrap();
    let m = mount(&spec, "/data").unwrap();
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(m.source().as_deref(), Some(canonical.as_path()));
    assert_eq!(options(m), ["rbind", "rprivate", "rw"]);
    assert_eq!(
        options(mount(&spec, "/mnt/ro").unwrap()),
        ["rbind", "rprivate", "ro"]
    );
    assert_eq!(
        options(mount(&spec, "/mnt/rro").unwrap()),
        ["rbind", "rprivate", "rro"]
    );
    // The symlink is resolved on the host.
    assert_eq!(
        mount(&spec, "/linked").unwrap().source().as_deref(),
        Some(canonical.as_path())
    );
}

#[test]
fn mounts_are_sorted_parents_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![
        cri_mount(dir.path(), "/a/b/c"),
        cri_mount(dir.path(), "/a"),
        cri_mount(dir.path(), "/x/y"),
        cri_mount(dir.path(), "/a/b"),
    ];
    let spec = f.spec();
    let binds: Vec<&Path> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .map(|m| m.destination().as_path())
        .collect();
    assert_eq!(binds, ["/a", "/x/y", "/a/b", "/a/b/c"].map(Path::new));
    // System mounts stay first.
    assert_eq!(
        spec.mounts().as_ref().unwrap()[0].destination(),
        Path::new("/proc")
    );
}

#[test]
fn pod_files_and_what_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, name).unwrap();
        p
    };
    let shm = dir.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    let mut f = Fixture::new();
    f.pod_files = PodFiles {
        hostname: Some(file("hostname")),
        resolv_conf: Some(file("resolv.conf")),
        hosts: Some(file("hosts")),
        shm: Some(shm.clone()),
    };
    let spec = f.spec();
    for (dest, src) in [
        ("/etc/hostname", "hostname"),
        ("/etc/resolv.conf", "resolv.conf"),
        ("/etc/hosts", "hosts"),
    ] {
        let m = mount(&spec, dest).unwrap();
        assert_eq!(m.source().as_deref(), Some(dir.path().join(src).as_path()));
        assert_eq!(options(m), ["rbind", "rprivate", "rw"]);
    }
    let m = mount(&spec, "/dev/shm").unwrap();
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(m.source().as_deref(), Some(shm.as_path()));
    let count = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
        .count();
    assert_eq!(count, 1);

    // A read-only rootfs: the pod's /etc files are read-only too, /dev/shm is not.
    f.sc().readonly_rootfs = true;
    let spec = f.spec();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(
        options(mount(&spec, "/etc/hosts").unwrap()),
        ["rbind", "rprivate", "ro"]
    );
    assert_eq!(
        options(mount(&spec, "/dev/shm").unwrap()),
        ["rbind", "rprivate", "rw"]
    );

    // A CRI mount over a pod file replaces it.
    let own = dir.path().join("own-hosts");
    std::fs::write(&own, "x").unwrap();
    f.container.mounts = vec![cri_mount(&own, "/etc/hosts")];
    let spec = f.spec();
    let hosts: Vec<&Mount> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].source().as_deref(),
        Some(std::fs::canonicalize(&own).unwrap().as_path())
    );

    // A missing pod file is the runtime's fault.
    f.pod_files.hosts = Some(dir.path().join("gone"));
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::FailedPrecondition);
    assert!(msg.contains("gone"), "{msg}");
}

#[test]
fn a_cri_dev_mount_replaces_the_dev_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = Fixture::new();
    f.container.mounts = vec![cri_mount(dir.path(), "/dev")];
    let spec = f.spec();
    let under_dev: Vec<&Mount> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination().starts_with("/dev"))
        .collect();
    assert_eq!(under_dev.len(), 1);
    assert_eq!(under_dev[0].typ().as_deref(), Some("bind"));
    assert!(mount(&spec, "/proc").is_some() && mount(&spec, "/sys").is_some());
}

#[test]
fn bad_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(CriMount, bool, ErrorKind, &str)> = vec![
        (
            cri_mount(&dir.path().join("missing"), "/m"),
            true,
            ErrorKind::NotFound,
            "does not exist",
        ),
        (
            cri_mount(dir.path(), "relative"),
            true,
            ErrorKind::InvalidArgument,
            "not an absolute path",
        ),
        (
            CriMount {
                recursive_read_only: true,
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "recursive read-only mount conflicts with RW mount",
        ),
        (
            CriMount {
                readonly: true,
                recursive_read_only: true,
                propagation: MountPropagation::HostToContainer,
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "recursive read-only mount needs private propagation",
        ),
        (
            CriMount {
                readonly: true,
                recursive_read_only: true,
                propagation: MountPropagation::Bidirectional,
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "recursive read-only mount needs private propagation",
        ),
        (
            CriMount {
                readonly: true,
                recursive_read_only: true,
                ..cri_mount(dir.path(), "/m")
            },
            false,
            ErrorKind::InvalidArgument,
            "does not support recursive read-only mounts",
        ),
        (
            CriMount {
                uid_mappings: vec![IdMapping {
                    host_id: 1000,
                    container_id: 0,
                    length: 1,
                }],
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "ID-mapped",
        ),
        (
            CriMount {
                host_path: String::new(),
                image: Some(ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "image volume",
        ),
        (
            CriMount {
                host_path: String::new(),
                ..cri_mount(dir.path(), "/m")
            },
            true,
            ErrorKind::InvalidArgument,
            "host_path is empty",
        ),
    ];
    for (m, rro, want, text) in cases {
        let mut f = Fixture::new();
        f.recursive_read_only = rro;
        f.container.mounts = vec![m];
        let (k, msg) = kind(f.generate());
        assert_eq!(k, want, "{msg}");
        assert!(msg.contains(text), "{msg} lacks {text:?}");
    }
}

// ---------------------------------------------------------------------------
// Devices, masked paths, resources, namespaces

#[test]
fn cri_devices() {
    let mut f = Fixture::new();
    f.container.devices = vec![Device {
        container_path: "/dev/xnull".into(),
        host_path: "/dev/null".into(),
        permissions: "mrw".into(),
    }];
    let spec = f.spec();
    let linux = spec.linux().as_ref().unwrap();
    let devices = linux.devices().as_ref().unwrap();
    assert_eq!(devices.len(), 7);
    let x = devices
        .iter()
        .find(|d| d.path() == Path::new("/dev/xnull"))
        .unwrap();
    assert_eq!((x.major(), x.minor()), (1, 3));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.last().unwrap().to_string(), "c 1:3 mrw");

    f.container.devices[0].host_path = "/dev/does-not-exist".into();
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::NotFound);
    assert!(msg.contains("/dev/does-not-exist"), "{msg}");
}

#[test]
fn masked_and_readonly_paths_as_given() {
    let mut f = Fixture::new();
    f.sc().masked_paths = strings(&["/bin/ls"]);
    f.sc().readonly_paths = strings(&["/tmp"]);
    let spec = f.spec();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.masked_paths().as_deref(),
        Some(&strings(&["/bin/ls"])[..])
    );
    assert_eq!(
        linux.readonly_paths().as_deref(),
        Some(&strings(&["/tmp"])[..])
    );
    // Empty lists: the defaults.
    f.sc().readonly_paths.clear();
    let spec = f.spec();
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .readonly_paths()
            .as_ref()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn resources() {
    let mut f = Fixture::new();
    *f.resources() = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 15 << 20,
        memory_swap_limit_in_bytes: 15 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: berth_podspec::Map::from([("memory.high".to_string(), "10M".to_string())]),
        oom_score_adj: 0,
    };
    let spec = f.spec();
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(cpu.period(), Some(100_000));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let mem = r.memory().unwrap();
    assert_eq!(mem.limit(), Some(15 << 20));
    assert_eq!(mem.swap(), Some(15 << 20));
    let h = &r.hugepage_limits().clone().unwrap()[0];
    assert_eq!((h.page_size().as_str(), h.limit()), ("2MB", 4 << 20));
    assert_eq!(r.unified().clone().unwrap()["memory.high"], "10M");
    assert_eq!(r.pids(), &None);

    // No swap limit given: equal to the memory limit (no swap).
    f.resources().memory_swap_limit_in_bytes = 0;
    let mem = |f: &Fixture| {
        f.spec()
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .unwrap()
    };
    assert_eq!(mem(&f).swap(), Some(15 << 20));
    f.resources().memory_swap_limit_in_bytes = 32 << 20;
    assert_eq!(mem(&f).swap(), Some(32 << 20));
    f.resources().memory_swap_limit_in_bytes = -1;
    assert_eq!(mem(&f).swap(), Some(-1));
    // No swap controller: no swap limit at all.
    f.cgroup.swap = false;
    assert_eq!(mem(&f).swap(), None);
    assert_eq!(mem(&f).limit(), Some(15 << 20));

    f.cgroup.swap = true;
    f.resources().memory_swap_limit_in_bytes = 1 << 20;
    let (k, msg) = kind(f.generate());
    assert_eq!(k, ErrorKind::InvalidArgument);
    assert!(msg.contains("memory_swap_limit_in_bytes"), "{msg}");

    let mut f = Fixture::new();
    f.resources().cpu_shares = -2;
    assert_eq!(kind(f.generate()).0, ErrorKind::InvalidArgument);

    // No resources: no limits.
    let f = Fixture::new();
    let r = f
        .spec()
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .clone()
        .unwrap();
    assert_eq!((r.cpu(), r.memory()), (&None, &None));
}

#[test]
fn pod_sysctls_stay_out_of_container_specs() {
    let mut f = Fixture::new();
    f.sandbox
        .linux
        .get_or_insert_with(Default::default)
        .sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    assert_eq!(f.spec().linux().as_ref().unwrap().sysctl(), &None);
}

#[test]
fn namespaces_host_new_and_joined() {
    let mut f = Fixture::new();
    f.namespaces = Namespaces {
        net: Namespace::Host,
        ipc: Namespace::Host,
        uts: Namespace::Host,
        pid: Namespace::New,
        user: None,
    };
    let spec = f.spec();
    let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .filter(|(t, _)| *t != LinuxNamespaceType::Cgroup)
        .collect();
    assert_eq!(
        ns,
        [
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Pid, None)
        ]
    );
    assert_eq!(spec.hostname(), &None);
}

#[test]
fn a_user_namespace() {
    let mut f = Fixture::new();
    f.namespaces.user = Some(UserNs {
        uid_mappings: vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 100_000,
        }],
        gid_mappings: vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 100_000,
        }],
        path: Some("/proc/42/ns/user".into()),
    });
    let spec = f.spec();
    let linux = spec.linux().as_ref().unwrap();
    let uid = linux.uid_mappings().as_ref().unwrap()[0];
    assert_eq!(
        (uid.container_id(), uid.host_id(), uid.size()),
        (0, 1000, 100_000)
    );
    assert_eq!(linux.gid_mappings().as_ref().unwrap().len(), 1);
    let user = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .unwrap();
    assert_eq!(user.path().as_deref(), Some(Path::new("/proc/42/ns/user")));
    assert!(options(mount(&spec, "/dev/pts").unwrap()).contains(&"gid=5".to_string()));

    // Host network + user namespace: sysfs cannot be mounted, /sys is bound.
    // A gid map without gid 5: no gid=5 for /dev/pts.
    f.namespaces.net = Namespace::Host;
    f.namespaces.user = Some(UserNs {
        uid_mappings: vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 1,
        }],
        gid_mappings: vec![IdMap {
            container_id: 0,
            host_id: 1000,
            size: 1,
        }],
        path: None,
    });
    let spec = f.spec();
    let sys = mount(&spec, "/sys").unwrap();
    assert_eq!(sys.typ().as_deref(), Some("bind"));
    assert_eq!(options(sys)[..2], strings(&["rbind", "rro"]));
    assert!(!options(mount(&spec, "/dev/pts").unwrap()).contains(&"gid=5".to_string()));
    let user = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .cloned()
        .unwrap();
    assert_eq!(user.path(), &None);
}

#[test]
fn user_namespace_options() {
    let mapping = |container_id, host_id, length| IdMapping {
        host_id,
        container_id,
        length,
    };
    let userns = |mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>| UserNamespace {
        mode,
        uids,
        gids,
    };
    assert_eq!(validate_userns(None).unwrap(), None);
    assert_eq!(
        validate_userns(Some(&userns(NamespaceMode::Node, vec![], vec![]))).unwrap(),
        None
    );
    let ok = validate_userns(Some(&userns(
        NamespaceMode::Pod,
        vec![mapping(0, 1000, 100_000)],
        vec![mapping(0, 2000, 65536)],
    )))
    .unwrap()
    .unwrap();
    assert_eq!(
        ok,
        UserNs {
            uid_mappings: vec![IdMap {
                container_id: 0,
                host_id: 1000,
                size: 100_000
            }],
            gid_mappings: vec![IdMap {
                container_id: 0,
                host_id: 2000,
                size: 65536
            }],
            path: None,
        }
    );
    let two = vec![mapping(0, 1000, 100_000), mapping(0, 2000, 100_000)];
    for (opts, text) in [
        (
            userns(NamespaceMode::Pod, two.clone(), two),
            "exactly one UID mapping",
        ),
        (
            userns(
                NamespaceMode::Pod,
                vec![mapping(1, 1000, 100_000)],
                vec![mapping(1, 1000, 100_000)],
            ),
            "container id 0",
        ),
        (
            userns(
                NamespaceMode::Pod,
                vec![mapping(0, 1000, 0)],
                vec![mapping(0, 1000, 1)],
            ),
            "length 0",
        ),
        (
            userns(NamespaceMode::Pod, vec![mapping(0, 1000, 10)], vec![]),
            "exactly one GID mapping",
        ),
        (
            userns(NamespaceMode::Container, vec![], vec![]),
            "unsupported user namespace mode CONTAINER",
        ),
        (
            userns(NamespaceMode::Target, vec![], vec![]),
            "unsupported user namespace mode TARGET",
        ),
        (
            userns(NamespaceMode::Node, vec![mapping(0, 0, 1)], vec![]),
            "mode NODE takes no mappings",
        ),
    ] {
        let e = validate_userns(Some(&opts)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains(text), "{e} lacks {text:?}");
    }
}

#[test]
fn libcontainer_compat() {
    let mut f = Fixture::new();
    f.sc().seccomp = profile(ProfileType::RuntimeDefault, "");
    let mut spec = f.spec();
    let before = seccomp(&spec).unwrap();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_rootfs_propagation(Some("rshared".into()));
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_no_new_privileges(Some(false));
    berth_oci::compat::for_libcontainer(&mut spec);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("shared"));
    assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), None);
    // The default profile's clone rule, in libcontainer's spelling.
    let clone_args = |s: &LinuxSeccomp| -> Vec<(u64, Option<u64>)> {
        s.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| r.names() == &strings(&["clone"]))
            .map(|r| {
                let a = r.args().as_ref().unwrap()[0];
                (a.value(), a.value_two())
            })
            .collect()
    };
    assert_eq!(clone_args(&before), [(0x7E02_0000, Some(0))]);
    let after = linux.seccomp().as_ref().unwrap();
    assert_eq!(clone_args(after), [(0, Some(0x7E02_0000))]);
    // Nothing else changes.
    assert_eq!(
        after.syscalls().as_ref().unwrap().len(),
        before.syscalls().as_ref().unwrap().len()
    );
    assert_eq!(after.default_action(), before.default_action());

    // A profile file's masked comparison is swapped.
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(
        dir.path(),
        "masked.json",
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW",
            "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    f.sc().seccomp = profile_ref(&p);
    let mut spec = f.spec();
    berth_oci::compat::for_libcontainer(&mut spec);
    let s = seccomp(&spec).unwrap();
    let a = s.syscalls().as_ref().unwrap()[0].args().as_ref().unwrap()[0];
    assert_eq!((a.value(), a.value_two()), (0, Some(2_114_060_288)));
}
