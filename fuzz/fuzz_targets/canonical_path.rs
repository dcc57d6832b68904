//! See `policy::fuzzing::canonical_path` for the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = policy::fuzzing::canonical_path(data) {
        panic!("{e}");
    }
});
