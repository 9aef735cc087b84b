//! The kubelet's runtime manager over any CRI runtime (Berth, containerd,
//! CRI-O), and `berth node`, which runs the Pod manifests of a directory
//! as a kubelet runs static pods.
//!
//! - [`status`]: what the runtime holds of a pod (GetPods, GetPodStatus);
//! - [`actions`]: computePodActions, pure;
//! - [`manager`]: SyncPod, KillPod, container start and kill, hooks;
//! - [`backoff`]: the crash-loop and image pull back-offs;
//! - [`images`]: pull policies, pull back-off, credentials;
//! - [`gc`]: containers, sandboxes and images; [`logs`]: log rotation;
//! - [`podcgroup`]: the pod's cgroup, created with its limits and removed;
//! - [`apistatus`]: the pod's API status (phase, conditions);
//! - [`agent`]: `berth node` itself; [`http`]: its status endpoint.

pub mod actions;
pub mod agent;
pub mod apistatus;
pub mod backoff;
pub mod calls;
pub mod cli;
pub mod events;
pub mod gc;
pub mod http;
pub mod images;
pub mod logs;
pub mod manager;
pub mod podcgroup;
pub mod status;

pub use agent::{Node, NodeError, NodeOptions, PodReport};
