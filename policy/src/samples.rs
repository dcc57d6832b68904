//! Generated policies for benchmarks and scale tests: the criterion bench, `meshguard bench`
//! and the in-Envoy scale test all measure the same document.
#![doc(hidden)]

use serde_json::{json, Value};

/// An egress policy of `rules` rules with `hosts_per_rule` hosts each (even: exact
/// `h<j>.svc<i>.example.com`, odd: `*.w<j>.svc<i>.example.org`), ports 80 and 443, and one
/// source pattern each (`spiffe://cluster.local/ns/ns<i>/sa/*`). `scale_egress(1000, 10)`:
/// 10,000 hosts and 1,000 identity patterns.
pub fn scale_egress(rules: usize, hosts_per_rule: usize) -> Value {
    json!({"version": 1, "egress": {"allow": scale_egress_rules(rules, hosts_per_rule)}})
}

/// The `egress.allow` list of [`scale_egress`], to extend with rules of one's own.
pub fn scale_egress_rules(rules: usize, hosts_per_rule: usize) -> Vec<Value> {
    (0..rules)
        .map(|i| {
            let hosts: Vec<String> =
                (0..hosts_per_rule)
                    .map(|j| {
                        if j % 2 == 0 {
                            format!("h{j}.svc{i}.example.com")
                        } else {
                            format!("*.w{j}.svc{i}.example.org")
                        }
                    })
                    .collect();
            json!({
                "id": format!("rule-{i}"),
                "hosts": hosts,
                "ports": [80, 443],
                "sources": [format!("spiffe://cluster.local/ns/ns{i}/sa/*")],
            })
        })
        .collect()
}

/// Thirty ordinary request headers (a browser's, an API client's tracing and auth): the
/// `gateway-strict` row of `make bench` sends them on every request, and the hygiene tests
/// check that they trip nothing.
pub const ORDINARY_30: &[(&str, &str)] = &[
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    ),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("cache-control", "no-cache"),
    ("pragma", "no-cache"),
    ("upgrade-insecure-requests", "1"),
    ("sec-ch-ua", "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\""),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", "\"Linux\""),
    ("sec-fetch-site", "same-origin"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-user", "?1"),
    ("sec-fetch-dest", "document"),
    ("referer", "https://shop.example.com/products?page=1"),
    ("origin", "https://shop.example.com"),
    ("cookie", "session=0f3a9c1d2e; _ga=GA1.2.1234567890.1700000000; theme=dark; consent=yes"),
    ("authorization", "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl"),
    ("x-requested-with", "XMLHttpRequest"),
    ("if-none-match", "W/\"5e15153d-120f\""),
    ("if-modified-since", "Tue, 07 Jan 2020 01:01:01 GMT"),
    ("dnt", "1"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", "vendor=abc"),
    ("baggage", "userId=alice,region=eu"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ("x-correlation-id", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ("x-forwarded-for", "203.0.113.7"),
];
