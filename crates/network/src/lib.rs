//! Pod networking: a network namespace per pod ([`netns`]) and the CNI
//! plugins that wire it ([`cni`]): loopback always, then the first network
//! configuration list found in the configured directory.
#![deny(unsafe_code)]

pub mod cni;
pub mod netns;

pub use cni::{Cni, CniError, PodNetwork, PortMapping, SetupResult};
pub use netns::{NetNs, NetNsError};
