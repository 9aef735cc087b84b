//! sha256 digests in their `sha256:<hex>` form.

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An incremental sha256 that ends as `sha256:<hex>`.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// The hex part of a `sha256:<hex>` digest.
pub fn hex_part(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}
