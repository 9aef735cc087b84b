//! Capability sets of a container.
//!
//! The starting set is the runtime default (docker's and containerd's 14
//! capabilities). `add: ["ALL"]` starts from everything, `drop: ["ALL"]`
//! from nothing; then named adds are added and named drops removed. A
//! privileged container gets everything. "Everything" means every
//! capability this process may still grant, its bounding set: on a host
//! without CAP_SYS_RESOURCE (as in some VMs) a privileged container runs
//! without it instead of failing to start. Naming a capability the process
//! cannot grant is an error that says so.

use std::collections::BTreeSet;

/// Capability names by number (`CAP_` prefix omitted), as in
/// `linux/capability.h`.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities a non-privileged container gets by default.
pub const DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A capability the request names that cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("capability CAP_{0} cannot be granted: this runtime does not hold it (it is missing from its bounding set)")]
    NotHeld(String),
}

/// The capabilities this process can grant: its bounding set, read from
/// `/proc/self/status`, limited to the names known here.
pub fn grantable() -> BTreeSet<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    from_mask(mask)
}

/// The names of the capabilities set in `mask`.
pub fn from_mask(mask: u64) -> BTreeSet<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// `cap_net_raw`, `CAP_NET_RAW` and `NET_RAW` are the same capability.
fn canonical(name: &str) -> Result<&'static str, CapsError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|n| **n == bare)
        .copied()
        .ok_or_else(|| CapsError::Unknown(name.to_string()))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capabilities of a container (bounding = effective = permitted),
/// with `CAP_` names sorted, given the CRI request and what can be granted.
pub fn container_caps(
    privileged: bool,
    add: &[String],
    drop: &[String],
    grantable: &BTreeSet<&'static str>,
) -> Result<Vec<String>, CapsError> {
    let mut caps: BTreeSet<&'static str> = if privileged || add.iter().any(|a| is_all(a)) {
        grantable.clone()
    } else {
        DEFAULT
            .iter()
            .copied()
            .filter(|c| grantable.contains(c))
            .collect()
    };
    if !privileged {
        if drop.iter().any(|d| is_all(d)) {
            caps.clear();
        }
        for a in add.iter().filter(|a| !is_all(a)) {
            let c = canonical(a)?;
            if !grantable.contains(c) {
                return Err(CapsError::NotHeld(c.to_string()));
            }
            caps.insert(c);
        }
        for d in drop.iter().filter(|d| !is_all(d)) {
            caps.remove(canonical(d)?);
        }
    }
    Ok(caps.into_iter().map(|c| format!("CAP_{c}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn all_but_sys_resource() -> BTreeSet<&'static str> {
        let mut g = from_mask((1u64 << 41) - 1);
        g.remove("SYS_RESOURCE");
        g
    }

    #[test]
    fn defaults_adds_and_drops() {
        let g = all_but_sys_resource();
        let d = container_caps(false, &[], &[], &g).unwrap();
        assert_eq!(d.len(), 14);
        assert!(d.contains(&"CAP_NET_RAW".to_string()));
        let c = container_caps(
            false,
            &s(&["cap_sys_admin", "NET_ADMIN"]),
            &s(&["NET_RAW", "CAP_KILL"]),
            &g,
        )
        .unwrap();
        assert!(
            c.contains(&"CAP_SYS_ADMIN".to_string()) && c.contains(&"CAP_NET_ADMIN".to_string())
        );
        assert!(!c.contains(&"CAP_NET_RAW".to_string()) && !c.contains(&"CAP_KILL".to_string()));
    }

    #[test]
    fn all_in_add_or_drop() {
        let g = all_but_sys_resource();
        let c = container_caps(false, &s(&["ALL"]), &s(&["NET_RAW"]), &g).unwrap();
        assert_eq!(c.len(), g.len() - 1);
        let c = container_caps(false, &s(&["CHOWN"]), &s(&["all"]), &g).unwrap();
        assert_eq!(c, vec!["CAP_CHOWN".to_string()]);
        assert!(container_caps(false, &[], &s(&["ALL"]), &g)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn privileged_means_what_the_runtime_holds() {
        let g = all_but_sys_resource();
        let c = container_caps(true, &[], &s(&["ALL"]), &g).unwrap();
        assert_eq!(c.len(), 40);
        assert!(!c.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(
            container_caps(false, &s(&["SYS_RESOURCE"]), &[], &g),
            Err(CapsError::NotHeld("SYS_RESOURCE".into()))
        );
        assert_eq!(
            container_caps(false, &s(&["CAP_FLY"]), &[], &g),
            Err(CapsError::Unknown("CAP_FLY".into()))
        );
    }

    #[test]
    fn this_process_can_grant_something() {
        // Tests run as root: at least the defaults are in the bounding set.
        let g = grantable();
        assert!(DEFAULT.iter().all(|c| g.contains(c)), "{g:?}");
    }
}
