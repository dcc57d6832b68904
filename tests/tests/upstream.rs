//! Upstream identity pinning end to end, through a real Envoy 1.40 (issue 12): the outbound
//! sidecar (`envoy-config/sidecar-outbound.yaml`) routes three in-mesh services on port 8080:
//!
//! - `payments` to its real endpoint, a TLS server with the SVID
//!   `spiffe://cluster.local/ns/prod/sa/payments`;
//! - `ledger` to an impostor (a poisoned registry entry) that holds a valid mesh certificate
//!   with the wrong SPIFFE ID, `spiffe://cluster.local/ns/attacker/sa/impostor`;
//! - `billing` to a plaintext endpoint (the HTTP echo).
//!
//! Envoy's upstream TLS checks only the chain (the control plane "forgot" the SAN), so what
//! stops the impostor is meshguard, in the response phase. The endpoints count what reached
//! them: the request did reach the impostor (the honest limit); its answer did not reach the
//! client.

use harness::client::{self, Request};
use harness::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions, PolicyUpdate};
use harness::Result;
use meshguard_e2e::{decisions, wait_decision};
use serde_json::{json, Value};

const PAYMENTS: &str = "payments.prod.svc.cluster.local:8080";
const LEDGER: &str = "ledger.prod.svc.cluster.local:8080";
const BILLING: &str = "billing.prod.svc.cluster.local:8080";
const IMPOSTOR_ID: &str = "spiffe://cluster.local/ns/attacker/sa/impostor";

fn policy(mode: &str) -> Value {
    json!({
        "version": 1,
        "upstream": {
            "mode": mode,
            "destinations": [
                {"id": "payments", "clusters": ["outbound|8080||payments.prod.svc.cluster.local"],
                 "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]},
                {"id": "ledger", "clusters": ["outbound|8080||ledger.prod.svc.cluster.local"],
                 "identities": ["spiffe://cluster.local/ns/prod/sa/ledger"]},
                {"id": "billing", "hosts": ["billing.prod.svc.cluster.local"],
                 "identities": ["spiffe://cluster.local/ns/prod/sa/*"]},
                // Routed to BlackHoleCluster: Envoy answers 503 itself, no endpoint ever does.
                {"id": "blackhole", "hosts": ["blackhole.example.com"],
                 "identities": ["spiffe://cluster.local/ns/prod/sa/*"]},
            ]
        }
    })
}

fn finding_counter(mesh: &Mesh, code: &str, mode: &str) -> Result<u64> {
    Ok(mesh.envoy().counter(&format!("meshguard.check.upstream.code.{code}.mode.{mode}.findings_total"))?.unwrap_or(0))
}

fn requests_at(mesh: &Mesh, label: &str) -> u64 {
    mesh.mesh_endpoint(label).map_or(0, |e| e.requests())
}

fn get(mesh: &Mesh, authority: &str, id: &str) -> Result<client::Response> {
    client::send(
        mesh.listener_addr(),
        None,
        &Request::get("/v1/x").with_authority(authority).with_header("x-request-id", id),
    )
}

#[test]
fn poisoned_endpoints_are_stopped_in_the_response_phase() -> Result<()> {
    let wasm = ensure_wasm()?;
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(wasm),
        kind: MeshKind::SidecarOutbound,
        ..MeshOptions::with_policy(policy("enforce").to_string())
    })?;
    let impostor_addr = mesh.mesh_endpoint("impostor").map(|e| e.addr().to_string()).unwrap_or_default();

    // The real endpoint: its answer comes through.
    let resp = get(&mesh, PAYMENTS, "pay-1")?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", mesh.envoy().log_tail(30));
    assert_eq!(resp.json()?["endpoint"], "payments", "{resp:?}");
    assert_eq!(requests_at(&mesh, "payments"), 1);

    // The impostor: a valid mesh certificate, the wrong SPIFFE ID.
    let resp = get(&mesh, LEDGER, "ledger-1")?;
    assert_eq!(resp.status, 502, "{resp:?}\n{}", mesh.envoy().log_tail(30));
    let body = resp.json()?;
    assert_eq!(body["code"], "upstream_identity_mismatch", "{body}");
    assert_eq!(body["requestId"], "ledger-1");
    assert!(!resp.text().contains("impostor"), "the impostor's answer leaked: {}", resp.text());
    assert_eq!(requests_at(&mesh, "impostor"), 1, "the honest limit: the request did reach the impostor");
    let line = wait_decision(&mesh, "the ledger request", |l| l["requestId"] == "ledger-1")?;
    assert_eq!(line["phase"], "response", "{line}");
    assert_eq!((line["outcome"].as_str(), line["check"].as_str()), (Some("deny"), Some("upstream")), "{line}");
    assert_eq!(line["code"], "upstream_identity_mismatch");
    assert_eq!(line["rule"], "ledger");
    assert_eq!(line["upstream"]["uriSan"], IMPOSTOR_ID, "the observed identity: {line}");
    assert_eq!(line["upstream"]["address"], impostor_addr.as_str(), "the observed address: {line}");
    assert_eq!(line["upstream"]["cluster"], "outbound|8080||ledger.prod.svc.cluster.local");
    assert!(line["upstream"]["tlsVersion"].as_str().is_some_and(|v| v.starts_with("TLSv1.")), "{line}");
    assert_eq!(finding_counter(&mesh, "upstream_identity_mismatch", "enforced")?, 1);

    // Plaintext where mTLS is required (matched by authority host).
    let echo_before = mesh.echo().request_count();
    let resp = get(&mesh, BILLING, "billing-1")?;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(resp.json()?["code"], "upstream_not_mtls");
    assert_eq!(mesh.echo().request_count(), echo_before + 1, "the plaintext endpoint got the request");
    let line = wait_decision(&mesh, "the billing request", |l| l["requestId"] == "billing-1")?;
    assert_eq!((line["code"].as_str(), line["rule"].as_str()), (Some("upstream_not_mtls"), Some("billing")), "{line}");
    assert_eq!(line["upstream"]["tlsVersion"], Value::Null, "{line}");
    assert_eq!(line["upstream"]["address"], mesh.upstream_addr().to_string().as_str(), "{line}");
    assert_eq!(finding_counter(&mesh, "upstream_not_mtls", "enforced")?, 1);

    // Envoy's access log says why the answer was replaced.
    let access = mesh.access_log();
    assert!(access.contains("meshguard_denied.upstream_identity_mismatch"), "{access}");
    assert!(access.contains("meshguard_denied.upstream_not_mtls"), "{access}");
    // Envoy's own answer (no endpoint at all) is not an upstream's: left alone, no alarm.
    let resp = get(&mesh, "blackhole.example.com", "blackhole-1")?;
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(!resp.text().contains("upstream_"), "{}", resp.text());
    // A destination no rule names is not pinned (api.example.com: plaintext, allowed).
    assert_eq!(get(&mesh, "api.example.com", "api-1")?.status, 200);
    // The allowed requests wrote no line (allowSampleRate 0): only the two denies.
    assert_eq!(decisions(&mesh).len(), 2, "{:#?}", decisions(&mesh));

    // Offline, the same decisions: `meshguard replay` re-decides the response lines, and
    // `meshguard eval` a request file that carries the observed upstream.
    let enforce = policy::Policy::from_value(policy("enforce")).map_err(|e| harness::Error::msg(e.to_string()))?;
    let log = mesh.work_dir().join("upstream-replay.log");
    std::fs::write(&log, mesh.envoy().log_contents())?;
    let mut replayed = Vec::new();
    harness::replay::read_logs(&[log], |entry| {
        let decision = entry.decide(&enforce);
        replayed.push((entry.record["requestId"].clone(), entry.outcome().to_string(), decision.outcome().as_str()));
        Ok(())
    })?;
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    assert!(replayed.iter().all(|(_, before, after)| before == after && *after == "deny"), "{replayed:?}");
    let file: policy::view::request::OwnedRequest = serde_json::from_value(json!({
        "method": "GET", "path": "/v1/x", "authority": LEDGER, "direction": "outbound",
        "cluster": "outbound|8080||ledger.prod.svc.cluster.local",
        "upstream": {"uriSan": IMPOSTOR_ID, "tlsVersion": "TLSv1.3", "address": impostor_addr}
    }))?;
    let offline = harness::offline::decide_request(&enforce, &file);
    assert_eq!(
        offline.primary().map(|f| (f.code.as_str(), f.rule.as_str())),
        Some(("upstream_identity_mismatch", "ledger"))
    );

    // Dry-run: the answer goes through, a would-deny is logged and counted.
    assert_eq!(mesh.update_policy(&policy("dry-run").to_string())?, PolicyUpdate::Applied);
    let resp = get(&mesh, LEDGER, "ledger-dry")?;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()?["endpoint"], "impostor");
    let line = wait_decision(&mesh, "the dry-run ledger request", |l| l["requestId"] == "ledger-dry")?;
    assert_eq!((line["outcome"].as_str(), line["enforced"].as_bool()), (Some("would_deny"), Some(false)), "{line}");
    assert_eq!(line["upstream"]["uriSan"], IMPOSTOR_ID);
    assert_eq!(finding_counter(&mesh, "upstream_identity_mismatch", "dry_run")?, 1);
    assert_eq!(get(&mesh, BILLING, "billing-dry")?.status, 200);
    assert_eq!(finding_counter(&mesh, "upstream_not_mtls", "dry_run")?, 1);
    Ok(())
}

/// With an egress check in the same policy, the request phase and the response phase each
/// write their own line: the request's (a sampled allow) and the upstream's (the deny).
#[test]
fn the_request_line_and_the_response_line_are_separate() -> Result<()> {
    let mut p = policy("enforce");
    p["decisionLog"] = json!({"allowSampleRate": 1.0});
    p["egress"] = json!({"allow": [{"id": "mesh", "hosts": ["*.svc.cluster.local"]}]});
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        kind: MeshKind::SidecarOutbound,
        ..MeshOptions::with_policy(p.to_string())
    })?;
    assert_eq!(get(&mesh, LEDGER, "ledger-2")?.status, 502);
    wait_decision(&mesh, "the response line", |l| l["requestId"] == "ledger-2" && l["phase"] == "response")?;
    let lines: Vec<Value> = decisions(&mesh).into_iter().filter(|l| l["requestId"] == "ledger-2").collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let request_line = lines.iter().find(|l| l.get("phase").is_none()).cloned().unwrap_or_default();
    assert_eq!(request_line["outcome"], "allow", "{lines:#?}");
    assert_eq!(request_line["request"]["cluster"], "outbound|8080||ledger.prod.svc.cluster.local");
    Ok(())
}
