//! Translating what kubelet asks for into what an OCI runtime runs.
//!
//! * [`spec`]: [`generate`] turns a container config, its pod's config (both
//!   in Berth's own model, `berth-podspec`),
//!   the image config and what the runtime decided (namespaces, pod files,
//!   cgroup) into an OCI runtime spec; [`exec_process`] gives an exec the
//!   container's process settings; [`validate_userns`] checks a pod's user
//!   namespace options;
//! * [`user`]: the container's uid, gid and groups, resolved in the image's
//!   own `/etc/passwd` and `/etc/group` without ever leaving its rootfs;
//! * [`caps`]: the capability sets, from the runtime default, the CRI
//!   add/drop lists and privileged mode, bounded by what this process holds;
//! * [`seccomp`]: which profile applies, Berth's default profile, profile
//!   files;
//! * [`compat`]: rewriting a spec for youki's libcontainer.
#![deny(unsafe_code)]

pub mod caps;
pub mod compat;
mod devices;
mod error;
mod host;
mod mounts;
pub mod resources;
pub mod seccomp;
pub mod spec;
pub mod user;

pub use error::{ErrorKind, SpecError};
pub use resources::CgroupSupport;
pub use spec::{
    exec_process, generate, validate_userns, Generated, IdMap, Namespace, Namespaces, PodFiles,
    SpecInput, UserNs,
};
pub use user::Identity;
