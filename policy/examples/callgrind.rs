//! The per-request cost in instructions, for `valgrind --tool=callgrind` (instruction counts
//! are stable on a busy machine, wall-clock is not):
//!
//! ```sh
//! cargo build --release -p meshguard-policy --example callgrind
//! for n in 0 10000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/callgrind $n 2>&1 | grep refs; done
//! ```
//!
//! (refs(10000) - refs(0)) / 10000 is one decision: a gateway-strict hygiene check, a
//! 1,000-host egress allowlist and an identity check, thirty ordinary headers, the request view
//! built anew each time (normalization included), as the filter does per request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use policy::view::request::{OwnedDirection, OwnedRequest};
use policy::Policy;
use serde_json::json;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let doc = json!({
        "version": 1,
        "hygiene": {"preset": "gateway-strict"},
        "egress": {"appliesTo": "all", "allow": policy::samples::scale_egress_rules(100, 10)},
    });
    let p = Policy::from_json(doc.to_string().as_bytes()).unwrap();
    let mut headers: Vec<(String, String)> =
        policy::samples::ORDINARY_30.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
    headers.retain(|(k, _)| k != "host");
    let req = OwnedRequest {
        method: "GET".into(),
        path: "/v1/items?page=2".into(),
        authority: "h4.svc77.example.com".into(),
        scheme: "https".into(),
        headers,
        direction: OwnedDirection::Outbound,
        cluster: Some("outbound|443||h4.svc77.example.com".into()),
        workload: policy::view::request::OwnedWorkload {
            namespace: Some("ns77".into()),
            service_account: Some("app".into()),
        },
        ..Default::default()
    };
    let pairs = req.pairs();
    let mut outcome = String::new();
    for _ in 0..n {
        let view = req.view(std::hint::black_box(&pairs));
        outcome = p.evaluate(std::hint::black_box(&view)).outcome().as_str().to_string();
    }
    println!("{n} decisions: {outcome}");
}
