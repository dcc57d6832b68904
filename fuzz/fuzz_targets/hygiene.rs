//! A request built from arbitrary bytes, decided by the strictest hygiene settings and by the
//! sidecar preset; see `policy::fuzzing::hygiene`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn policies() -> &'static [policy::Policy; 2] {
    static POLICIES: OnceLock<[policy::Policy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let strict = policy::Policy::from_json(
            br#"{"version":1,"decisionLog":{"allowSampleRate":1},"hygiene":{"preset":"gateway-strict","guards":{
            "nonAsciiValues":{"allowUtf8":false},"singletonHeaders":{"headers":["x-tenant"]},
            "xfcc":{"trustForwardedFrom":["spiffe://cluster.local/ns/*/sa/*"]},
            "underscoreHeaders":{"action":"strip"},"envoyHeaders":{"action":"strip"},"controlBytes":{"action":"strip"},
            "methodOverride":{"action":"strip"},"h2cUpgrade":{"action":"strip"},"teHeader":{"action":"strip"}}}}"#,
        )
        .expect("the strict fuzz policy is valid");
        let sidecar = policy::Policy::from_json(br#"{"version":1,"hygiene":{"preset":"sidecar"}}"#)
            .expect("the sidecar fuzz policy is valid");
        [strict, sidecar]
    })
}

fuzz_target!(|data: &[u8]| {
    for p in policies() {
        if let Err(e) = policy::fuzzing::hygiene(p, data) {
            panic!("{e}");
        }
    }
});
