//! What youki's libcontainer 0.7 reads differently from the OCI runtime
//! spec (and runc). [`crate::generate`] writes standard OCI; a caller that
//! runs the spec with libcontainer passes it through [`for_libcontainer`]
//! first.

use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompOperator, Spec};

/// Rewrites `spec` for libcontainer 0.7:
///
/// * `linux.rootfsPropagation`: libcontainer knows `shared`, `slave`,
///   `private` and `unbindable`, and refuses OCI's `rshared`, `rslave`,
///   `rprivate` (its propagation is recursive anyway);
/// * seccomp `SCMP_CMP_MASKED_EQ`: runc reads `value` as the mask and
///   `valueTwo` as the expected result, libcontainer the other way round,
///   so the two are swapped (Berth's default profile is written to work
///   either way, so this changes nothing for it);
/// * `process.noNewPrivileges: false`: libcontainer treats any value as
///   "set" when ordering seccomp after the capability drop, so `false` is
///   removed (absent means false).
pub fn for_libcontainer(spec: &mut Spec) {
    if let Some(linux) = spec.linux_mut() {
        let mapped = linux.rootfs_propagation().as_deref().map(|p| {
            match p {
                "rshared" => "shared",
                "rslave" => "slave",
                "rprivate" => "private",
                "runbindable" => "unbindable",
                other => other,
            }
            .to_string()
        });
        linux.set_rootfs_propagation(mapped);
        if let Some(mut seccomp) = linux.seccomp().clone() {
            if let Some(mut syscalls) = seccomp.syscalls().clone() {
                for s in &mut syscalls {
                    if let Some(mut args) = s.args().clone() {
                        for a in &mut args {
                            if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                                *a = LinuxSeccompArgBuilder::default()
                                    .index(a.index())
                                    .op(a.op())
                                    .value(a.value_two().unwrap_or(0))
                                    .value_two(a.value())
                                    .build()
                                    .expect("a seccomp arg builder cannot fail: every field has a default");
                            }
                        }
                        s.set_args(Some(args));
                    }
                }
                seccomp.set_syscalls(Some(syscalls));
            }
            linux.set_seccomp(Some(seccomp));
        }
    }
    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
}
