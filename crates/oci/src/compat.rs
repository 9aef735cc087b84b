//! What youki's libcontainer 0.7 reads differently from the OCI runtime
//! spec (and runc). [`crate::generate`] writes standard OCI; a caller that
//! runs the spec with libcontainer passes it through [`for_libcontainer`]
//! first.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompOperator, Spec};

use crate::seccomp::arg;

/// Rewrites `spec` for libcontainer 0.7:
///
/// * `linux.rootfsPropagation`: libcontainer knows `shared`, `slave`,
///   `private` and `unbindable`, and refuses OCI's `rshared`, `rslave`,
///   `rprivate` (its propagation is recursive anyway);
/// * seccomp `SCMP_CMP_MASKED_EQ`: runc (and libseccomp's convention)
///   reads `value` as the mask and `valueTwo` as the expected result,
///   libcontainer the other way round, so the two are swapped. Unswapped,
///   libcontainer compares `arg & 0` with `0`, which always matches: the
///   default profile's "clone without `CLONE_NEW*` flags" rule would let
///   every `clone` through, user namespaces included (seen by running
///   both forms under libcontainer and runc);
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
            swap_masked_operands(&mut seccomp);
            linux.set_seccomp(Some(seccomp));
        }
    }
    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
}

/// Swaps `value` and `valueTwo` of every masked comparison.
fn swap_masked_operands(seccomp: &mut LinuxSeccomp) {
    let Some(mut syscalls) = seccomp.syscalls().clone() else {
        return;
    };
    for rule in &mut syscalls {
        let Some(mut args) = rule.args().clone() else {
            continue;
        };
        for a in args
            .iter_mut()
            .filter(|a| a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq)
        {
            // An absent `valueTwo` is 0.
            *a = arg(
                a.index(),
                a.op(),
                a.value_two().unwrap_or(0),
                Some(a.value()),
            );
        }
        rule.set_args(Some(args));
    }
    seccomp.set_syscalls(Some(syscalls));
}
