//! The server side of SPDY/3.1, as Kubernetes streaming uses it.
//!
//! - [`frame`]: every frame's layout and an incremental, bounded codec;
//! - [`headers`]: name/value blocks and their per-connection zlib streams.
#![deny(unsafe_code)]

pub mod frame;
pub mod headers;

pub use frame::{GoAwayStatus, RstStatus};
pub use headers::Headers;
