//! Berth's CRI server: the gRPC services kubelet and crictl call, and the
//! daemon that serves them on a unix socket.
//!
//! Every handler lives in its own file under [`image`] or [`runtime`] and
//! runs inside [`instrument::call`], which logs it and maps its error to a
//! gRPC code (in [`error`], the only place that knows the codes). The
//! CRI's messages become Berth's own types, and back, in [`convert`].
#![deny(unsafe_code)]

mod chunks;
pub mod convert;
pub mod daemon;
mod deadline;
pub mod error;
pub mod image;
pub mod instrument;
pub mod metrics;
mod progress;
mod record;
pub mod runtime;
mod stream;
