//! The egress allowlist end to end, through a real Envoy 1.40:
//!
//! - an outbound sidecar (`envoy-config/sidecar-outbound.yaml`): HTTP by Host to Istio-shaped
//!   clusters, PassthroughCluster and BlackHoleCluster, with the workload's identity from the
//!   node metadata; and TLS passthrough where meshguard runs as a NETWORK filter on the SNI;
//! - an egress gateway (`envoy-config/egress-gateway.yaml`) that the source workload reaches
//!   over mTLS, so rules match its proven SPIFFE ID.
//!
//! "The internet" is an echo server on loopback (and a TLS echo); a test proves what reached it.
//! One Envoy per test function, many requests through it.

use std::time::{Duration, Instant};

use harness::client::{self, Request};
use harness::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions};
use harness::Result;
use serde_json::{json, Value};

fn start(kind: MeshKind, policy: Value) -> Result<Mesh> {
    let wasm = ensure_wasm()?;
    Mesh::start(MeshOptions { wasm: Some(wasm), kind, ..MeshOptions::with_policy(policy.to_string()) })
}

/// The decision-log lines so far, parsed.
fn decisions(mesh: &Mesh) -> Vec<Value> {
    harness::demo::decision_lines(&mesh.envoy().log_contents()).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits (the log is flushed every 100 ms) for a decision line that `pred` accepts.
fn wait_decision(mesh: &Mesh, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = decisions(mesh).into_iter().find(|l| pred(l)) {
            return Ok(line);
        }
        if Instant::now() > deadline {
            return Err(harness::Error::msg(format!("no decision line for {what}\n{}", mesh.envoy().log_tail(40))));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counter(mesh: &Mesh, name: &str) -> Result<u64> {
    Ok(mesh.envoy().counter(name)?.unwrap_or(0))
}

fn finding_counter(mesh: &Mesh, code: &str, mode: &str) -> Result<u64> {
    counter(mesh, &format!("meshguard.check.egress.code.{code}.mode.{mode}.findings_total"))
}

fn sidecar_policy() -> Value {
    json!({
        "version": 1,
        "decisionLog": {"allowSampleRate": 1.0},
        "egress": {
            "allow": [
                {"id": "web-api", "hosts": ["api.example.com"], "ports": [80, 443], "sources": ["spiffe://cluster.local/ns/web/sa/*"]},
                {"id": "batch-only", "hosts": ["batch.cdn.example.com"], "sources": ["spiffe://cluster.local/ns/batch/sa/*"]},
                {"id": "cdn-assets", "hosts": ["*.cdn.example.com"], "methods": ["GET"], "paths": [{"prefix": "/assets/"}]},
                {"id": "mesh", "hosts": ["*.svc.cluster.local"]},
                {"id": "legacy", "hosts": ["legacy.example.net"], "passthrough": true},
                {"id": "trial", "mode": "dry-run", "hosts": ["trial.example.net"], "passthrough": true, "methods": ["PUT"]},
                {"id": "moved", "hosts": ["moved.example.com"]},
            ]
        }
    })
}

struct Case {
    authority: &'static str,
    method: &'static str,
    path: &'static str,
    status: u16,
    code: Option<&'static str>,
}

const fn case(
    authority: &'static str,
    method: &'static str,
    path: &'static str,
    status: u16,
    code: Option<&'static str>,
) -> Case {
    Case { authority, method, path, status, code }
}

#[test]
fn outbound_sidecar_http() -> Result<()> {
    let mesh = start(MeshKind::SidecarOutbound, sidecar_policy())?;
    let cases = [
        // Allowed: the web workload's own API, any spelling of the host.
        case("api.example.com", "GET", "/v1/items", 200, None),
        case("API.Example.COM", "POST", "/v1/items", 200, None),
        case("api.example.com:80", "GET", "/", 200, None),
        case("img.cdn.example.com", "GET", "/assets/logo.png", 200, None),
        case("img.cdn.example.com", "GET", "/x/../assets//a.css", 200, None),
        case("httpbin", "GET", "/get", 200, None),
        case("httpbin.default:80", "GET", "/get", 200, None),
        case("legacy.example.net", "GET", "/", 200, None),
        // A rule in dry-run lets it through and logs a would-deny.
        case("trial.example.net", "GET", "/", 200, None),
        // Denied.
        case("evil.example.org", "GET", "/", 403, Some("egress_host_not_allowed")),
        // Envoy's route table does not strip the trailing dot (no strip_trailing_host_dot, as
        // in Istio): the request goes to PassthroughCluster, and the rule naming the host
        // does not allow passthrough.
        case("api.example.com.", "GET", "/", 403, Some("egress_passthrough_cluster")),
        case("api.example.com.evil.net", "GET", "/", 403, Some("egress_host_not_allowed")),
        case("evilexample.com", "GET", "/", 403, Some("egress_host_not_allowed")),
        case("cdn.example.com", "GET", "/assets/x", 403, Some("egress_host_not_allowed")),
        case("img.cdn.example.com", "POST", "/assets/x", 403, Some("egress_method_not_allowed")),
        case("img.cdn.example.com", "GET", "/admin", 403, Some("egress_path_not_allowed")),
        case("img.cdn.example.com", "GET", "/assets/../admin", 403, Some("egress_path_not_allowed")),
        case("api.example.com:8080", "GET", "/", 403, Some("egress_port_not_allowed")),
        case("batch.cdn.example.com", "GET", "/assets/x", 200, None),
        case("127.0.0.1", "GET", "/", 403, Some("egress_localhost")),
        case("0x7f.1", "GET", "/", 403, Some("egress_localhost")),
        case("2130706433", "GET", "/", 403, Some("egress_localhost")),
        case("localhost", "GET", "/", 403, Some("egress_localhost")),
        case("169.254.169.254", "GET", "/latest/meta-data/", 403, Some("egress_metadata_address")),
        case("[::ffff:169.254.169.254]", "GET", "/", 403, Some("egress_metadata_address")),
        case("[fd00:ec2::254]", "GET", "/", 403, Some("egress_metadata_address")),
        case("metadata.google.internal", "GET", "/computeMetadata/v1/", 403, Some("egress_metadata_address")),
        case("10.1.2.3", "GET", "/", 403, Some("egress_ip_literal")),
        case("blackhole.example.com", "GET", "/", 403, Some("egress_host_not_allowed")),
        case("moved.example.com", "GET", "/", 403, Some("egress_authority_mismatch")),
    ];
    let mut allowed = 0;
    for c in &cases {
        let before = mesh.echo().request_count();
        let id = format!("{}_{}{}", c.method, c.authority, c.path);
        let req = Request::new(c.method, c.path).with_authority(c.authority).with_header("x-request-id", &id);
        let resp = client::send(mesh.listener_addr(), None, &req)?;
        let ctx = || format!("{} {} {}: {resp:?}\n{}", c.method, c.authority, c.path, mesh.access_log());
        assert_eq!(resp.status, c.status, "{}", ctx());
        if let Some(code) = c.code {
            assert_eq!(resp.json()?["code"], code, "{}", ctx());
            assert_eq!(mesh.echo().request_count(), before, "a denied request reached the internet: {}", ctx());
        } else {
            allowed += 1;
            let echo = resp.json()?;
            assert_eq!(echo["method"], c.method, "{}", ctx());
        }
    }
    assert_eq!(mesh.echo().request_count(), allowed);

    let line =
        wait_decision(&mesh, "the metadata request", |l| l["requestId"] == "GET_169.254.169.254/latest/meta-data/")?;
    assert_eq!(line["outcome"], "deny");
    assert_eq!(line["check"], "egress");
    assert_eq!(line["code"], "egress_metadata_address");
    assert_eq!(line["rule"], "egress.allow");
    assert_eq!(line["request"]["direction"], "outbound", "xds.listener_direction of an OUTBOUND listener");
    assert_eq!(line["request"]["cluster"], "PassthroughCluster");
    let line = wait_decision(&mesh, "the trial request", |l| l["requestId"] == "GET_trial.example.net/")?;
    assert_eq!((line["outcome"].as_str(), line["rule"].as_str()), (Some("would_deny"), Some("trial")));
    assert_eq!(line["code"], "egress_method_not_allowed");
    let line = wait_decision(&mesh, "the API request", |l| l["requestId"] == "GET_api.example.com/v1/items")?;
    assert_eq!(line["outcome"], "allow");
    assert_eq!(line["principal"], "spiffe://cluster.local/ns/web/sa/web", "the workload from the node metadata");
    assert_eq!(line["request"]["cluster"], "outbound|80||api.example.com");
    assert_eq!(line["request"]["workload"], json!({"namespace": "web", "serviceAccount": "web"}));
    let line =
        wait_decision(&mesh, "the batch-only request", |l| l["requestId"] == "GET_batch.cdn.example.com/assets/x")?;
    assert_eq!(line["outcome"], "allow", "cdn-assets admits it even though batch-only does not: {line}");
    let line = wait_decision(&mesh, "the blackhole request", |l| l["requestId"] == "GET_blackhole.example.com/")?;
    assert_eq!(line["request"]["cluster"], "BlackHoleCluster");

    // Counted per finding, and in the totals.
    assert_eq!(finding_counter(&mesh, "egress_localhost", "enforced")?, 4);
    assert_eq!(finding_counter(&mesh, "egress_metadata_address", "enforced")?, 4);
    assert_eq!(finding_counter(&mesh, "egress_method_not_allowed", "dry_run")?, 1);
    assert_eq!(finding_counter(&mesh, "egress_authority_mismatch", "enforced")?, 1);
    assert_eq!(counter(&mesh, "meshguard_denied_total")?, 20);
    assert_eq!(counter(&mesh, "meshguard_would_deny_total")?, 1);
    let prom = mesh.envoy().stats_prometheus()?;
    assert!(
        prom.contains("meshguard_check_egress_code_egress_host_not_allowed_mode_enforced_findings_total{} 5"),
        "{prom}"
    );
    Ok(())
}
