//! See `policy::fuzzing::spiffe_id` for the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = policy::fuzzing::spiffe_id(data) {
        panic!("{e}");
    }
});
