//! Image references as kubelet, crictl and image configs spell them:
//! parsing never panics, and a parsed reference prints as one that parses
//! to itself.
#![no_main]

use berth_image::reference::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ImageRef::parse(s) {
        let printed = r.to_string();
        let again = ImageRef::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} printed as {printed:?}, which does not parse: {e}"));
        assert_eq!(again.to_string(), printed, "not a fixed point: {s:?}");
    }
});
