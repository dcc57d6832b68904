//! The host's serialized header map is parsed without trusting it: no input may panic, and
//! anything that parses must serialize back to exactly the same bytes (so the parser accepts
//! one encoding per map and never reads outside its slices).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard::header_map;

fuzz_target!(|data: &[u8]| {
    if let Some(pairs) = header_map::parse(data) {
        if !data.is_empty() {
            assert_eq!(header_map::serialize(&pairs).as_deref(), Some(data));
        }
        for (name, value) in &pairs {
            let range = data.as_ptr_range();
            assert!(name.is_empty() || range.contains(&name.as_ptr()));
            assert!(value.is_empty() || range.contains(&value.as_ptr()));
        }
    }
});
