//! Links `berth` as a position-dependent executable (x86_64 Linux).
//!
//! Every pod's monitor is this binary. As a PIE, each process relocates
//! the binary's pointer tables at start (`.data.rel.ro`, vtables, static
//! tables of rustls, tonic, serde...), which turns hundreds of kB of
//! shareable file pages into private dirty memory per process. Without PIE
//! the addresses are fixed at link time, the pages stay clean and shared by
//! every monitor and the daemon (see docs/monitor-prototype.md).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("x86_64-") && target.contains("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
