//! Upstream identity pinning at an egress gateway, through a real Envoy 1.40 (issue 12). The
//! gateway (`envoy-config/egress-gateway.yaml`: mTLS from the source workload) routes a
//! partner's services, each an Istio ServiceEntry on port 443 whose DestinationRule originates
//! mTLS (`outbound|443||<host>`):
//!
//! - `pay.partner.example.com` to its real endpoint, a TLS server with the SVID
//!   `spiffe://cluster.local/ns/prod/sa/payments`;
//! - `ledger.partner.example.com` to an impostor (a poisoned ServiceEntry) that holds a valid
//!   mesh certificate with the wrong SPIFFE ID, `spiffe://cluster.local/ns/attacker/sa/impostor`;
//! - `billing.partner.example.com` to a plaintext endpoint (the HTTP echo).
//!
//! The DestinationRule "forgot" its subjectAltNames: Envoy checks only the chain, so what stops
//! the impostor is meshguard, in the response phase. The policy pins by authority host, by an
//! exact cluster name and by a wildcard cluster pattern. The endpoints count what reached them:
//! the request did reach the impostor (the honest limit); its answer did not reach the caller.

use harness::client::{self, Request, TlsIdentity};
use harness::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions, PolicyUpdate};
use harness::Result;
use meshguard_e2e::{decisions, wait_decision};
use serde_json::{json, Value};

const PAY: &str = "pay.partner.example.com";
const LEDGER: &str = "ledger.partner.example.com";
const BILLING: &str = "billing.partner.example.com";
const IMPOSTOR_ID: &str = "spiffe://cluster.local/ns/attacker/sa/impostor";
const LEDGER_CLUSTER: &str = "outbound|443||ledger.partner.example.com";

fn upstream(mode: &str) -> Value {
    json!({
        "mode": mode,
        "destinations": [
            // By the authority host.
            {"id": "partner-pay", "hosts": [PAY],
             "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]},
            // By the exact cluster name the gateway routes it to.
            {"id": "partner-ledger", "clusters": [LEDGER_CLUSTER],
             "identities": ["spiffe://cluster.local/ns/prod/sa/ledger"]},
            // Every other partner service, by a cluster pattern (any port, any host under it).
            {"id": "partner-any", "clusters": ["outbound|*||*.partner.example.com"],
             "identities": ["spiffe://cluster.local/ns/prod/sa/*"]},
        ]
    })
}

/// A gateway policy: who may reach the partner (the proven source identity), and what the
/// partner's endpoints must be.
fn gateway_policy() -> Value {
    json!({
        "version": 1,
        "egress": {
            "appliesTo": "all",
            "sourceIdentity": "peerCertificate",
            "allow": [
                {"id": "web-partner", "hosts": ["*.partner.example.com"], "sources": ["spiffe://cluster.local/ns/web/sa/web"]},
                {"id": "api", "hosts": ["api.example.com"]},
            ]
        },
        "upstream": upstream("enforce"),
    })
}

fn finding_counter(mesh: &Mesh, code: &str, mode: &str) -> Result<u64> {
    Ok(mesh.envoy().counter(&format!("meshguard.check.upstream.code.{code}.mode.{mode}.findings_total"))?.unwrap_or(0))
}

fn requests_at(mesh: &Mesh, label: &str) -> u64 {
    mesh.mesh_endpoint(label).map_or(0, |e| e.requests())
}

/// A request from the `web` workload, over mTLS as its sidecar sends it to the gateway.
fn get(mesh: &Mesh, authority: &str) -> Result<client::Response> {
    let tls = TlsIdentity::workload(mesh.pki(), "web")?;
    client::send(mesh.listener_addr(), Some(&tls), &Request::get("/v1/x").with_authority(authority))
}

#[test]
fn the_egress_gateway_stops_poisoned_partner_endpoints() -> Result<()> {
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        kind: MeshKind::EgressGateway,
        ..MeshOptions::with_policy(gateway_policy().to_string())
    })?;
    let impostor_addr = mesh.mesh_endpoint("impostor").map(|e| e.addr().to_string()).unwrap_or_default();
    let tail = || mesh.envoy().log_tail(30);

    // The right endpoint (pinned by host): its answer comes through.
    let resp = get(&mesh, PAY)?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", tail());
    assert_eq!(resp.json()?["endpoint"], "payments", "{resp:?}");
    assert_eq!(requests_at(&mesh, "payments"), 1);

    // The impostor (pinned by cluster name): a valid mesh certificate, the wrong SPIFFE ID.
    let resp = get(&mesh, LEDGER)?;
    assert_eq!(resp.status, 502, "{resp:?}\n{}", tail());
    let body = resp.json()?;
    assert_eq!(body["code"], "upstream_identity_mismatch", "{body}");
    assert!(!resp.text().contains("impostor"), "the impostor's answer leaked: {}", resp.text());
    assert_eq!(requests_at(&mesh, "impostor"), 1, "the honest limit: the request did reach the impostor");
    // The gateway (use_remote_address) makes its own x-request-id: the 502 names it.
    let request_id = body["requestId"].as_str().unwrap_or_default().to_string();
    assert!(!request_id.is_empty(), "{body}");
    let line = wait_decision(&mesh, "the ledger request", |l| l["requestId"] == request_id.as_str())?;
    assert_eq!(line["phase"], "response", "{line}");
    assert_eq!((line["outcome"].as_str(), line["check"].as_str()), (Some("deny"), Some("upstream")), "{line}");
    assert_eq!(
        (line["code"].as_str(), line["rule"].as_str()),
        (Some("upstream_identity_mismatch"), Some("partner-ledger"))
    );
    assert_eq!(line["upstream"]["uriSan"], IMPOSTOR_ID, "the observed identity: {line}");
    assert_eq!(line["upstream"]["address"], impostor_addr.as_str(), "the observed address: {line}");
    assert_eq!(line["upstream"]["cluster"], LEDGER_CLUSTER, "{line}");
    assert_eq!(line["upstream"]["authority"], LEDGER, "{line}");
    assert!(line["upstream"]["tlsVersion"].as_str().is_some_and(|v| v.starts_with("TLSv1.")), "{line}");
    assert_eq!(finding_counter(&mesh, "upstream_identity_mismatch", "enforced")?, 1);

    // Plaintext where mTLS is required (pinned by the wildcard cluster pattern).
    let echo_before = mesh.echo().request_count();
    let resp = get(&mesh, BILLING)?;
    assert_eq!(resp.status, 502, "{resp:?}\n{}", tail());
    let body = resp.json()?;
    assert_eq!(body["code"], "upstream_not_mtls", "{body}");
    assert_eq!(mesh.echo().request_count(), echo_before + 1, "the plaintext endpoint got the request");
    let request_id = body["requestId"].as_str().unwrap_or_default().to_string();
    let line = wait_decision(&mesh, "the billing request", |l| l["requestId"] == request_id.as_str())?;
    assert_eq!(
        (line["code"].as_str(), line["rule"].as_str()),
        (Some("upstream_not_mtls"), Some("partner-any")),
        "{line}"
    );
    assert_eq!(line["upstream"]["tlsVersion"], Value::Null, "{line}");
    assert_eq!(line["upstream"]["address"], mesh.upstream_addr().to_string().as_str(), "{line}");
    assert_eq!(line["upstream"]["cluster"], "outbound|443||billing.partner.example.com", "{line}");
    assert_eq!(finding_counter(&mesh, "upstream_not_mtls", "enforced")?, 1);

    // Envoy's access log says why the answers were replaced.
    let access = mesh.access_log();
    assert!(access.contains("meshguard_denied.upstream_identity_mismatch"), "{access}");
    assert!(access.contains("meshguard_denied.upstream_not_mtls"), "{access}");
    // A destination no rule names is not pinned (api.example.com: plaintext, allowed).
    assert_eq!(get(&mesh, "api.example.com")?.status, 200);
    // The egress check still runs first: a source the rule does not name never gets there.
    let batch = TlsIdentity::workload(mesh.pki(), "batch")?;
    let impostor_before = requests_at(&mesh, "impostor");
    let resp = client::send(mesh.listener_addr(), Some(&batch), &Request::get("/v1/x").with_authority(LEDGER))?;
    assert_eq!((resp.status, resp.json()?["code"].clone()), (403, json!("egress_source_not_allowed")), "{resp:?}");
    assert_eq!(requests_at(&mesh, "impostor"), impostor_before, "a request denied up front reaches no endpoint");
    let line = wait_decision(&mesh, "the batch request", |l| l["code"] == "egress_source_not_allowed")?;
    assert_eq!(line["principal"], "spiffe://cluster.local/ns/batch/sa/batch", "{line}");
    // Lines: the two upstream denies and the egress deny; allowed requests write none.
    assert_eq!(decisions(&mesh).len(), 3, "{:#?}", decisions(&mesh));

    // Offline, the same decisions: `meshguard replay` re-decides the gateway's lines (both
    // phases), and `meshguard eval` a request file that carries the observed upstream.
    let enforce = policy::Policy::from_value(gateway_policy()).map_err(|e| harness::Error::msg(e.to_string()))?;
    let log = mesh.work_dir().join("upstream-gateway-replay.log");
    std::fs::write(&log, mesh.envoy().log_contents())?;
    let mut replayed = Vec::new();
    harness::replay::read_logs(&[log], |entry| {
        let decision = entry.decide(&enforce);
        replayed.push((entry.record["code"].clone(), entry.outcome().to_string(), decision.outcome().as_str()));
        Ok(())
    })?;
    assert_eq!(replayed.len(), 3, "{replayed:?}");
    assert!(replayed.iter().all(|(_, before, after)| before == after && *after == "deny"), "{replayed:?}");
    let file: policy::view::request::OwnedRequest = serde_json::from_value(json!({
        "method": "GET", "path": "/v1/x", "authority": LEDGER, "direction": "outbound",
        "cluster": LEDGER_CLUSTER,
        "peer": {"mtls": true, "uriSan": "spiffe://cluster.local/ns/web/sa/web"},
        "upstream": {"uriSan": IMPOSTOR_ID, "tlsVersion": "TLSv1.3", "address": impostor_addr}
    }))?;
    let offline = harness::offline::decide_request(&enforce, &file);
    assert_eq!(
        offline.primary().map(|f| (f.code.as_str(), f.rule.as_str())),
        Some(("upstream_identity_mismatch", "partner-ledger"))
    );

    // Dry-run (and no egress section: the response phase reads the cluster itself): the
    // answer goes through, a would-deny is logged and counted.
    let dry = json!({"version": 1, "upstream": upstream("dry-run")});
    assert_eq!(mesh.update_policy(&dry.to_string())?, PolicyUpdate::Applied);
    let resp = get(&mesh, LEDGER)?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", tail());
    assert_eq!(resp.json()?["endpoint"], "impostor");
    assert_eq!(requests_at(&mesh, "impostor"), impostor_before + 1);
    let line = wait_decision(&mesh, "the dry-run ledger request", |l| l["outcome"] == "would_deny")?;
    assert_eq!(line["enforced"], false, "{line}");
    assert_eq!(
        (line["code"].as_str(), line["rule"].as_str()),
        (Some("upstream_identity_mismatch"), Some("partner-ledger"))
    );
    assert_eq!(line["upstream"]["uriSan"], IMPOSTOR_ID, "{line}");
    assert_eq!(line["upstream"]["cluster"], LEDGER_CLUSTER, "{line}");
    assert_eq!(line["upstream"]["address"], impostor_addr.as_str(), "{line}");
    assert_eq!(finding_counter(&mesh, "upstream_identity_mismatch", "dry_run")?, 1);
    assert_eq!(get(&mesh, BILLING)?.status, 200);
    assert_eq!(finding_counter(&mesh, "upstream_not_mtls", "dry_run")?, 1);
    // The right endpoint raises nothing in either mode.
    assert_eq!(get(&mesh, PAY)?.status, 200);
    assert_eq!(finding_counter(&mesh, "upstream_identity_mismatch", "dry_run")?, 1);
    assert_eq!(requests_at(&mesh, "payments"), 2);
    Ok(())
}
