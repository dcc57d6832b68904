//! A request built from arbitrary bytes, decided by a policy that uses every identity feature;
//! see `policy::fuzzing::evaluate`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn policy() -> &'static policy::Policy {
    static POLICY: OnceLock<policy::Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        policy::Policy::from_json(
            br#"{"version":1,"decisionLog":{"allowSampleRate":1},"identity":{"trustDomains":["cluster.local"],"rules":[
            {"id":"d","action":"deny","match":{"paths":[{"prefix":"/admin"}]},"principals":["spiffe://cluster.local/ns/*/sa/*"]},
            {"id":"a","action":"allow","match":{"hosts":["*.svc"],"paths":[{"regex":"^/v[0-9]+/"}],"methods":["GET"]},"principals":["*"]}]}}"#,
        )
        .expect("the fuzz policy is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = policy::fuzzing::evaluate(policy(), data) {
        panic!("{e}");
    }
});
