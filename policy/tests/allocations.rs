//! What one decision allocates on the allow path, counted with a counting global allocator.
//! Every allocation is a call into the allocator inside the Wasm VM on every request, so the
//! common paths are held to a budget here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use policy::view::request::OwnedRequest;
use policy::Policy;

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(policy: &Policy, request: &OwnedRequest) -> usize {
    let pairs = request.pairs();
    let view = request.view(&pairs);
    let before = COUNT.with(Cell::get);
    let decision = policy.evaluate(&view);
    let after = COUNT.with(Cell::get);
    assert!(!decision.enforced() && decision.findings.is_empty(), "{decision:?}");
    after - before
}

fn demo() -> Policy {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy-config/policies/demo.yaml")).unwrap();
    // The demo policy is YAML; the identity part in JSON here.
    let _ = text;
    Policy::from_value(serde_json::json!({
        "version": 1,
        "identity": {
            "trustDomains": ["cluster.local"],
            "rules": [
                {"id": "batch-never-admin", "action": "deny", "match": {"paths": [{"prefix": "/admin"}]}, "principals": ["spiffe://cluster.local/ns/batch/sa/*"]},
                {"id": "web-reads-api", "action": "allow", "match": {"hosts": ["localhost"], "paths": [{"prefix": "/api"}], "methods": ["GET", "HEAD"]}, "principals": ["spiffe://cluster.local/ns/web/sa/web"]}
            ]
        }
    }))
    .unwrap()
}

#[test]
fn identity_allow_path() {
    let req: OwnedRequest = serde_json::from_value(serde_json::json!({
        "method": "GET", "path": "/api/items", "authority": "localhost", "scheme": "https",
        "headers": [["x-forwarded-client-cert", "By=spiffe://cluster.local/ns/default/sa/api;Hash=abc;Subject=\"\";URI=spiffe://cluster.local/ns/web/sa/web"], ["x-request-id", "bench"]],
        "peer": {"mtls": true, "uriSan": "spiffe://cluster.local/ns/web/sa/web"}
    }))
    .unwrap();
    let n = allocations(&demo(), &req);
    eprintln!("identity allow path: {n} allocations");
}

/// Credential scoping costs no allocation on the common path: a rule with `credentials: deny`
/// (one pass over the headers and the query) allocates exactly what a rule without it does.
#[test]
fn egress_credential_scoping_allocates_nothing_more() {
    let policy = |credentials: &str| {
        let mut rule = serde_json::json!({"id": "telemetry", "hosts": ["collector.telemetry.net"]});
        if !credentials.is_empty() {
            rule["credentials"] = credentials.into();
        }
        Policy::from_value(serde_json::json!({"version": 1, "egress": {"allow": [rule]}})).unwrap()
    };
    let req: OwnedRequest = serde_json::from_value(serde_json::json!({
        "method": "POST", "path": "/v1/traces?service=web&env=prod", "authority": "collector.telemetry.net",
        "direction": "outbound",
        "headers": [["content-type", "application/x-protobuf"], ["user-agent", "otel-exporter/1.0"], ["x-request-id", "bench"], ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]]
    }))
    .unwrap();
    let plain = allocations(&policy(""), &req);
    let deny = allocations(&policy("deny"), &req);
    let strip = allocations(&policy("strip"), &req);
    eprintln!("egress allow path: {plain} allocations; with credentials deny: {deny}; strip: {strip}");
    assert_eq!((deny, strip), (plain, plain));
}

/// The hygiene guards on an ordinary request carrying every header family they classify
/// (client address, forwarding, tracing, identity, credentials): one pass, no allocation of
/// their own. The two counted are the request view's (the parsed authority's host name and
/// the canonical path), the same before issue 10's header families were added.
#[test]
fn hygiene_allow_path() {
    let mut headers: Vec<(String, String)> =
        policy::samples::ORDINARY_30.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    for (n, v) in [
        ("x-forwarded-for", "203.0.113.7, [2001:db8::1]:443"),
        ("forwarded", "for=\"[2001:db8::1]:443\";proto=https"),
        ("x-forwarded-proto", "https"),
        ("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
        ("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1"),
        ("x-api-key", "AIzaSyA-1_bc"),
        ("x-user", "alice@example.com"),
        ("x-request-id", "5d2c8b3e-4a1f-4c55-9b1e-2f7c9f1e0a11"),
    ] {
        headers.push((n.to_string(), v.to_string()));
    }
    let req: OwnedRequest = serde_json::from_value(serde_json::json!({
        "method": "GET", "path": "/api/items?page=2", "authority": "localhost", "scheme": "https",
        "headers": headers,
        "peer": {"mtls": true, "uriSan": "spiffe://cluster.local/ns/web/sa/web"}
    }))
    .unwrap();
    for preset in ["sidecar", "gateway-strict"] {
        let p = Policy::from_value(serde_json::json!({"version": 1, "hygiene": {"preset": preset,
            "guards": {"forwardedRouting": {"enabled": false}, "clientIp": {"enabled": false}}}}))
        .unwrap();
        let n = allocations(&p, &req);
        eprintln!("hygiene allow path ({preset}): {n} allocations");
        assert!(n <= 2, "{preset}: {n}");
    }
}
