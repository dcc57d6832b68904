use serde_json::json;

use crate::decision::Outcome;
use crate::testing::{errors, policy};
use crate::view::upstream::UpstreamView;
use crate::Policy;

const PAYMENTS: &str = "outbound|8080||payments.prod.svc.cluster.local";
const PAYMENTS_ID: &[u8] = b"spiffe://cluster.local/ns/prod/sa/payments";

fn pinning() -> Policy {
    policy(json!({"version": 1, "upstream": {"destinations": [
        {"id": "payments", "clusters": [PAYMENTS], "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]},
        {"id": "prod-any", "clusters": ["outbound|*|*|*.prod.svc.cluster.local"], "identities": ["spiffe://cluster.local/ns/prod/sa/*"]},
        {"id": "partner", "hosts": ["api.partner.example"], "identities": ["spiffe://partner.example/ns/api/sa/gw"]},
        {"id": "legacy", "clusters": ["outbound|80||legacy.old.svc.cluster.local"], "requireMtls": false,
         "identities": ["spiffe://cluster.local/ns/old/sa/legacy"]},
        {"id": "trial", "mode": "dry-run", "clusters": ["outbound|9090||trial.staging.svc.cluster.local"],
         "identities": ["spiffe://cluster.local/ns/prod/sa/trial"]},
    ]}}))
}

fn up<'a>(cluster: &'a str, san: Option<&'a [u8]>, tls: bool) -> UpstreamView<'a> {
    UpstreamView {
        cluster: Some(cluster.as_bytes()),
        authority: Some(b"payments.prod.svc.cluster.local:8080"),
        uri_san: san,
        tls_version: tls.then_some(&b"TLSv1.3"[..]),
        address: Some(b"127.0.0.1:4000"),
    }
}

fn code(p: &Policy, u: &UpstreamView<'_>) -> Option<(&'static str, String, bool)> {
    let d = p.evaluate_upstream(u);
    d.primary().map(|f| (f.code.as_str(), f.rule.clone(), f.enforced))
}

#[test]
fn the_pinned_identity_passes_and_others_are_refused() {
    let p = pinning();
    assert!(p.needs().upstream && p.has_upstream());
    assert_eq!(code(&p, &up(PAYMENTS, Some(PAYMENTS_ID), true)), None);
    // A valid mesh identity, but not the one pinned: the poisoned endpoint.
    assert_eq!(
        code(&p, &up(PAYMENTS, Some(b"spiffe://cluster.local/ns/attacker/sa/impostor"), true)),
        Some(("upstream_identity_mismatch", "payments".into(), true))
    );
    // TLS without a URI SAN, or with one that is not a SPIFFE ID.
    for san in [None, Some(&b"https://payments.prod"[..]), Some(b"")] {
        assert_eq!(code(&p, &up(PAYMENTS, san, true)).map(|c| c.0), Some("upstream_identity_mismatch"));
    }
    // Plaintext.
    assert_eq!(code(&p, &up(PAYMENTS, None, false)), Some(("upstream_not_mtls", "payments".into(), true)));
    let mut empty_version = up(PAYMENTS, Some(PAYMENTS_ID), true);
    empty_version.tls_version = Some(b"");
    assert_eq!(code(&p, &empty_version).map(|c| c.0), Some("upstream_not_mtls"));
}

#[test]
fn destinations_are_found_by_cluster_pattern_and_authority() {
    let p = pinning();
    // The first rule in document order wins: payments is pinned tighter than prod-any.
    let other_prod = b"spiffe://cluster.local/ns/prod/sa/ledger";
    assert_eq!(code(&p, &up(PAYMENTS, Some(other_prod), true)).map(|c| c.1), Some("payments".into()));
    // Any port, any subset, any host under the wildcard.
    assert_eq!(code(&p, &up("outbound|80|v2|ledger.prod.svc.cluster.local", Some(other_prod), true)), None);
    assert_eq!(
        code(
            &p,
            &up("outbound|80|v2|ledger.prod.svc.cluster.local", Some(b"spiffe://cluster.local/ns/dev/sa/x"), true)
        )
        .map(|c| c.1),
        Some("prod-any".into())
    );
    // Another port of payments is not the payments rule, but prod-any still covers it.
    assert_eq!(code(&p, &up("outbound|9000||payments.prod.svc.cluster.local", Some(other_prod), true)), None);
    // Istio's SNI form of the cluster name.
    assert_eq!(
        code(&p, &up("outbound_.8080_._.payments.prod.svc.cluster.local", Some(other_prod), true)).map(|c| c.1),
        Some("payments".into())
    );
    // By authority: a cluster with another name (an egress gateway's).
    let mut partner = up("egress-partner", Some(b"spiffe://partner.example/ns/api/sa/gw"), true);
    partner.authority = Some(b"API.Partner.example:443");
    assert_eq!(code(&p, &partner), None);
    partner.uri_san = Some(b"spiffe://evil.example/ns/api/sa/gw");
    assert_eq!(code(&p, &partner).map(|c| c.1), Some("partner".into()));
    // Not pinned: nothing to say, whatever the connection.
    for cluster in ["outbound|80||web.dev.svc.cluster.local", "PassthroughCluster", "BlackHoleCluster", "x"] {
        let mut u = up(cluster, None, false);
        u.authority = Some(b"web.dev");
        assert_eq!(code(&p, &u), None, "{cluster}");
    }
    let none = UpstreamView::default();
    assert_eq!(code(&p, &none), None);
}

#[test]
fn the_request_phase_knows_which_destinations_are_pinned() {
    let p = pinning();
    let dest = |cluster: &'static str, authority: &'static [u8]| UpstreamView {
        cluster: Some(cluster.as_bytes()),
        authority: Some(authority),
        ..UpstreamView::default()
    };
    assert!(p.pins_upstream(&dest(PAYMENTS, b"payments.prod.svc.cluster.local:8080")));
    assert!(p.pins_upstream(&dest("outbound|80||x.prod.svc.cluster.local", b"x")));
    assert!(p.pins_upstream(&dest("PassthroughCluster", b"api.partner.example")));
    assert!(!p.pins_upstream(&dest("outbound|80||api.example.com", b"api.example.com")));
    assert!(!p.pins_upstream(&dest("PassthroughCluster", b"evil.example")));
    let plain = policy(json!({"version": 1, "hygiene": {"preset": "sidecar"}}));
    assert!(!plain.pins_upstream(&dest(PAYMENTS, b"payments")));
}

#[test]
fn plaintext_when_allowed_and_dry_run_rules() {
    let p = pinning();
    let legacy = "outbound|80||legacy.old.svc.cluster.local";
    assert_eq!(code(&p, &up(legacy, None, false)), None, "requireMtls: false lets plaintext through");
    assert_eq!(
        code(&p, &up(legacy, Some(b"spiffe://cluster.local/ns/x/sa/y"), true)).map(|c| c.0),
        Some("upstream_identity_mismatch"),
        "but over TLS the identity is still pinned"
    );
    let d = p.evaluate_upstream(&up("outbound|9090||trial.staging.svc.cluster.local", None, false));
    assert_eq!(d.outcome(), Outcome::WouldDeny);
    assert_eq!(d.primary().map(|f| f.rule.as_str()), Some("trial"));

    let dry = policy(json!({"version": 1, "upstream": {"mode": "dry-run", "destinations": [
        {"id": "payments", "clusters": [PAYMENTS], "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]}]}}));
    assert_eq!(dry.evaluate_upstream(&up(PAYMENTS, None, false)).outcome(), Outcome::WouldDeny);
    let whole = policy(json!({"version": 1, "mode": "dry-run", "upstream": {"destinations": [
        {"id": "payments", "clusters": [PAYMENTS], "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]}]}}));
    assert_eq!(whole.evaluate_upstream(&up(PAYMENTS, None, false)).outcome(), Outcome::WouldDeny);
}

#[test]
fn the_request_phase_is_untouched_and_costs_nothing_without_the_section() {
    let p = pinning();
    let pairs: Vec<(&[u8], &[u8])> =
        vec![(b":method", b"GET"), (b":path", b"/"), (b":authority", b"payments"), (b":scheme", b"http")];
    let view = crate::RequestView::new(&pairs, Default::default(), Default::default());
    assert!(p.evaluate(&view).findings.is_empty());
    let plain = policy(json!({"version": 1, "egress": {"allow": [{"id": "a", "hosts": ["a.example"]}]}}));
    assert!(!plain.needs().upstream && !plain.has_upstream());
    assert!(plain.evaluate_upstream(&up(PAYMENTS, None, false)).findings.is_empty());
}

#[test]
fn compile_errors_name_their_field() {
    let errs = errors(json!({"version": 1, "upstream": {"destinations": [
        {"id": "a b", "identities": ["spiffe://cluster.local/ns/*x"]},
        {"id": "c", "clusters": ["inbound|8080||x", "outbound|08||x.svc", "outbound|80|v1|x.svc", "outbound|80||bad host"],
         "hosts": ["a.example:80"], "identities": ["*"]},
        {"id": "d", "clusters": ["outbound|80||d.svc"], "requireMtls": false},
        {"id": "d", "clusters": ["outbound|80||d.svc"], "extra": 1},
    ]}}));
    let joined = errs.join("\n");
    assert!(joined.contains("unknown field `extra`"), "{joined}");
    let errs = errors(json!({"version": 1, "upstream": {"destinations": [
        {"id": "a b", "identities": ["spiffe://cluster.local/ns/*x"]},
        {"id": "c", "clusters": ["inbound|8080||x", "outbound|08||x.svc", "outbound|80|v1|x.svc", "outbound|80||bad host"],
         "hosts": ["a.example:80"], "identities": ["*"]},
        {"id": "d", "clusters": ["outbound|80||d.svc"], "requireMtls": false},
        {"id": "d", "clusters": ["outbound|80||d.svc"]},
    ]}}));
    let has = |path: &str| errs.iter().any(|e| e.starts_with(&format!("{path}:")));
    for path in [
        "upstream.destinations[0].id",
        "upstream.destinations[0].clusters",
        "upstream.destinations[0].identities[0]",
        "upstream.destinations[1].clusters[0]",
        "upstream.destinations[1].clusters[1]",
        "upstream.destinations[1].clusters[2]",
        "upstream.destinations[1].clusters[3]",
        "upstream.destinations[1].hosts[0]",
        "upstream.destinations[2].identities",
        "upstream.destinations[3].id",
    ] {
        assert!(has(path), "no error at {path}: {errs:#?}");
    }
    assert_eq!(errs.len(), 10, "{errs:#?}");
    assert!(errors(json!({"version": 1, "upstream": {}})).iter().any(|e| e.starts_with("upstream.destinations:")));
}

#[test]
fn the_response_line_holds_the_observed_identity_and_address() {
    let p = pinning();
    let u = up(PAYMENTS, Some(b"spiffe://cluster.local/ns/attacker/sa/impostor"), true);
    let d = p.evaluate_upstream(&u);
    assert!(p.should_log_upstream(&d));
    let line: serde_json::Value = serde_json::from_str(&p.upstream_log_line(&d, &u, Some(b"req-1"), 0)).unwrap();
    assert_eq!(line["phase"], "response");
    assert_eq!(line["outcome"], "deny");
    assert_eq!(line["check"], "upstream");
    assert_eq!(line["code"], "upstream_identity_mismatch");
    assert_eq!(line["rule"], "payments");
    assert_eq!(line["requestId"], "req-1");
    assert_eq!(line["upstream"]["uriSan"], "spiffe://cluster.local/ns/attacker/sa/impostor");
    assert_eq!(line["upstream"]["address"], "127.0.0.1:4000");
    assert_eq!(line["upstream"]["cluster"], PAYMENTS);
    assert_eq!(line["upstream"]["tlsVersion"], "TLSv1.3");
    // And it reads back as the same upstream.
    let back: crate::view::upstream::OwnedUpstream = serde_json::from_value(line["upstream"].clone()).unwrap();
    assert_eq!(p.evaluate_upstream(&back.view()).findings, d.findings);
    let allowed = p.evaluate_upstream(&up(PAYMENTS, Some(PAYMENTS_ID), true));
    assert!(!p.should_log_upstream(&allowed));
}

#[test]
fn a_request_file_carries_the_upstream_facts() {
    let r: crate::view::request::OwnedRequest = serde_json::from_value(json!({
        "method": "GET", "path": "/", "authority": "payments.prod.svc.cluster.local:8080",
        "cluster": PAYMENTS, "upstream": {"uriSan": "spiffe://cluster.local/ns/attacker/sa/impostor",
        "tlsVersion": "TLSv1.3", "address": "10.0.0.9:8080"}}))
    .unwrap();
    let u = r.upstream_view().unwrap();
    assert_eq!(u.cluster, Some(PAYMENTS.as_bytes()));
    assert_eq!(u.authority, Some(&b"payments.prod.svc.cluster.local:8080"[..]));
    assert_eq!(code(&pinning(), &u).map(|c| c.0), Some("upstream_identity_mismatch"));
    assert!(serde_json::from_value::<crate::view::request::OwnedRequest>(
        json!({"method": "GET", "path": "/", "upstream": {"uriSAN": "x"}})
    )
    .is_err());
}
