//! Translating what kubelet asks for into what an OCI runtime runs.
//!
//! * [`user`]: the container's uid, gid and groups, resolved in the image's
//!   own `/etc/passwd` and `/etc/group` without ever leaving its rootfs;
//! * [`caps`]: the capability sets, from the runtime default, the CRI
//!   add/drop lists and privileged mode, bounded by what this process holds.
#![deny(unsafe_code)]

pub mod caps;
pub mod user;
