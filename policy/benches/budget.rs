//! The per-request worst case of the worst policy the budget accepts: path regexes of the
//! costliest shape (unanchored counted repetitions) up to the per-regex and whole-policy
//! compiled-size limits, decided on paths of growing length around the per-request regex cap
//! (`REGEX_WORK_LIMIT`).
//!
//! `cargo bench -p meshguard-policy --bench budget`. Numbers go to `policy/src/budget.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use policy::budget::{regex_compiled_size, REGEX_SIZE_LIMIT, REGEX_WORK_LIMIT};
use policy::view::request::OwnedRequest;
use policy::Policy;
use serde_json::json;

/// The largest `(?:.{n})x` within the per-regex limit.
fn costliest_regex() -> String {
    let mut n = 1;
    while regex_compiled_size(&format!("(?:.{{{}}})x", n + 1)).is_some_and(|s| s <= REGEX_SIZE_LIMIT) {
        n += 1;
    }
    format!("(?:.{{{n}}})x")
}

/// As many of them as the budget accepts, each in a deny rule (every rule runs: a path none of
/// them matches).
fn worst_policy() -> (Policy, usize) {
    let re = costliest_regex();
    for count in (1..=32).rev() {
        let rules: Vec<_> = (0..count)
            .map(|i| json!({"id": format!("r{i}"), "action": "deny", "match": {"paths": [{"regex": re}]}, "principals": ["*"]}))
            .collect();
        let doc = json!({"version": 1, "identity": {"requirePeerIdentity": false, "rules": rules}});
        if let Ok(p) = Policy::from_value(doc) {
            return (p, count);
        }
    }
    panic!("no regex policy accepted");
}

fn request(path_len: usize) -> OwnedRequest {
    OwnedRequest {
        method: "GET".into(),
        path: format!("/{}", "a".repeat(path_len - 1)),
        authority: "api.example.com".into(),
        scheme: "https".into(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let (p, count) = worst_policy();
    eprintln!(
        "worst policy: {count} × {} ({:?} bytes compiled each)",
        costliest_regex(),
        regex_compiled_size(&costliest_regex())
    );
    let mut g = c.benchmark_group("worst_regex_policy");
    g.sample_size(10);
    // The length at which the first regex alone reaches the cap, and lengths around it.
    let at_cap = (REGEX_WORK_LIMIT / regex_compiled_size(&costliest_regex()).unwrap() as u64) as usize;
    eprintln!("one regex reaches the cap at a {at_cap}-byte path");
    for len in [64, at_cap / count, at_cap, at_cap + 1, 8 * 1024, 60 * 1024] {
        let r = request(len);
        let pairs = r.pairs();
        g.bench_function(format!("path_{len}_bytes"), |b| b.iter(|| p.evaluate(black_box(&r.view(&pairs))).enforced()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
