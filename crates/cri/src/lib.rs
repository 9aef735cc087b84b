//! The CRI `runtime.v1` wire schema and Berth's `berth.v1` extension,
//! generated at build time from `proto/`.
//!
//! Only this crate knows the wire format: the rest of Berth converts to its
//! own types at the gRPC edge. Every message also has protobuf-JSON serde
//! impls (camelCase out, both camelCase and snake_case in), which is what
//! crictl's config files and `-o json` use.
#![deny(unsafe_code)]

/// `package runtime.v1`: the Container Runtime Interface.
pub mod runtime {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.serde.rs"));
    }
}

/// `package berth.v1`: Berth's own services on the CRI socket.
pub mod berth {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("berth.v1");
        include!(concat!(env!("OUT_DIR"), "/berth.v1.serde.rs"));
    }
}

pub mod methods;

/// The encoded `FileDescriptorSet` of every compiled proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
