//! Pod networking: a network namespace per pod ([`netns`]) with `lo` up
//! (`loopback.rs`, done natively instead of by the CNI loopback plugin) and
//! the CNI plugins that wire it ([`cni`]): the first network configuration
//! list found in the configured directory.
#![deny(unsafe_code)]

pub mod cni;
mod loopback;
pub mod netns;

pub use cni::{Cni, CniError, PodNetwork, PortMapping, SetupResult};
pub use netns::{NetNs, NetNsError};
