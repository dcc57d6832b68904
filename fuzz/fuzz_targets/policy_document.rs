//! See `policy::fuzzing::policy_document` for the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = policy::fuzzing::policy_document(data) {
        panic!("{e}");
    }
});
