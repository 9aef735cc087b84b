//! The monitor's JSON-lines messages: decoding any line never panics, and
//! a decoded request encodes to one that decodes to the same.
#![no_main]

use berth_monitor::protocol::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_vec(&req).unwrap();
        let again: Request = serde_json::from_slice(&text).unwrap();
        assert_eq!(serde_json::to_vec(&again).unwrap(), text);
    }
    let _ = serde_json::from_slice::<Reply>(data);
});
