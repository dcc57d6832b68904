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
