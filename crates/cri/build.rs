//! Compiles the CRI schema with protox (pure Rust, no protoc), generating
//! prost messages, tonic clients and servers, and protobuf-JSON serde impls
//! (for crictl-style JSON/YAML config files and output).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/runtime/v1/api.proto", "proto/berth/v1/images.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = fds.encode_to_vec();
    std::fs::write(out.join("descriptors.bin"), &descriptor_bytes)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".runtime.v1", ".berth.v1"])?;
    Ok(())
}
