//! The egress allowlist at scale: 10,000 allowed hosts (half exact, half `*.` wildcards) in
//! 1,000 rules, 1,000 source-identity patterns, compiled and decided natively.
//!
//! `cargo bench -p meshguard-policy --bench egress`. Compile is `Policy::from_json` on the
//! plugin-configuration bytes, exactly what the filter's `on_configure` does; a decision is
//! `Policy::evaluate` on a prepared request view (normalization included), what the filter does
//! per request after reading the headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use policy::view::connection::OwnedConnection;
use policy::view::request::{OwnedDirection, OwnedRequest};
use policy::Policy;

fn request(authority: &str, ns: &str) -> OwnedRequest {
    OwnedRequest {
        method: "GET".into(),
        path: "/v1/items?page=2".into(),
        authority: authority.into(),
        scheme: "http".into(),
        headers: vec![("user-agent".into(), "bench".into()), ("accept".into(), "*/*".into())],
        direction: OwnedDirection::Outbound,
        cluster: Some(format!("outbound|80||{authority}")),
        workload: policy::view::request::OwnedWorkload {
            namespace: Some(ns.into()),
            service_account: Some("app".into()),
        },
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let bytes = policy::samples::scale_egress(1000, 10).to_string().into_bytes();
    let mut g = c.benchmark_group("egress_10k_hosts_1k_patterns");
    g.sample_size(20);
    g.bench_function("compile", |b| b.iter(|| Policy::from_json(black_box(&bytes)).unwrap()));
    g.finish();

    let p = Policy::from_json(&bytes).unwrap();
    let mut g = c.benchmark_group("egress_10k_hosts_1k_patterns");
    let cases = [
        ("decide_allow_exact", request("h4.svc777.example.com", "ns777"), "allow"),
        ("decide_allow_wildcard", request("a.b.w3.svc999.example.org", "ns999"), "allow"),
        ("decide_deny_unknown_host", request("evil.example.net", "ns1"), "deny"),
        ("decide_deny_source", request("h4.svc777.example.com", "ns778"), "deny"),
        ("decide_deny_ip_literal", request("0x7f.1", "ns1"), "deny"),
    ];
    for (name, req, outcome) in &cases {
        let pairs = req.pairs();
        let view = req.view(&pairs);
        assert_eq!(p.evaluate(&view).outcome().as_str(), *outcome, "{name}");
        g.bench_function(*name, |b| b.iter(|| p.evaluate(black_box(&view))));
    }
    let conn = OwnedConnection {
        sni: Some("x.w5.svc500.example.org".into()),
        destination_port: Some(443),
        direction: OwnedDirection::Outbound,
        workload: policy::view::request::OwnedWorkload {
            namespace: Some("ns500".into()),
            service_account: Some("app".into()),
        },
        ..Default::default()
    };
    let view = conn.view();
    assert_eq!(p.evaluate_connection(&view).outcome().as_str(), "allow");
    g.bench_function("decide_sni_allow_wildcard", |b| b.iter(|| p.evaluate_connection(black_box(&view))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
