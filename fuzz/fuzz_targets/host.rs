//! See `policy::fuzzing::host` for the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = policy::fuzzing::host(data) {
        panic!("{e}");
    }
});
