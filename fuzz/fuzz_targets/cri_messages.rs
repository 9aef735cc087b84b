//! CRI requests off the wire (protobuf) as a client may send them, decoded
//! and turned into protobuf-JSON as the request recorder does: never a
//! panic.
#![no_main]

use berth_cri::methods::{decode, Which, PATHS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (_, method) = PATHS[selector as usize % PATHS.len()];
    let _ = decode(method, Which::Request, body);
    let _ = decode(method, Which::Response, body);
});
