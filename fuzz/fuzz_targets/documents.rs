//! Registry documents (indexes, manifests, image configs) as a hostile
//! registry may serve them: parsing never panics.
#![no_main]

use berth_image::manifest::{parse_config, parse_document};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 6] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let _ = parse_document(TYPES[selector as usize % TYPES.len()], body);
    let _ = parse_config(body);
});
