//! The egress allowlist through the public API: policy JSON in, decision out, for HTTP requests
//! (outbound sidecar, egress gateway) and TLS connections (the network filter's SNI).

use super::*;
use crate::testing::errors;
use crate::testing::policy;
use crate::view::connection::OwnedConnection;
use crate::view::request::{OwnedDirection, OwnedRequest};
use crate::{Policy, ReasonCode};
use serde_json::json;

fn egress(e: serde_json::Value) -> Policy {
    policy(json!({"version": 1, "egress": e}))
}

#[derive(Clone)]
struct Req(OwnedRequest);

impl Req {
    fn to(authority: &str) -> Self {
        Req(OwnedRequest {
            method: "GET".into(),
            path: "/".into(),
            authority: authority.into(),
            scheme: "http".into(),
            direction: OwnedDirection::Outbound,
            ..Default::default()
        })
    }
    fn method(mut self, m: &str) -> Self {
        self.0.method = m.into();
        self
    }
    fn path(mut self, p: &str) -> Self {
        self.0.path = p.into();
        self
    }
    fn https(mut self) -> Self {
        self.0.scheme = "https".into();
        self
    }
    fn cluster(mut self, c: &str) -> Self {
        self.0.cluster = Some(c.into());
        self
    }
    fn inbound(mut self) -> Self {
        self.0.direction = OwnedDirection::Inbound;
        self
    }
    fn unspecified(mut self) -> Self {
        self.0.direction = OwnedDirection::Unspecified;
        self
    }
    fn workload(mut self, ns: &str, sa: &str) -> Self {
        self.0.workload.namespace = Some(ns.into());
        self.0.workload.service_account = Some(sa.into());
        self
    }
    fn mtls(mut self, uri: &str) -> Self {
        self.0.peer.mtls = true;
        self.0.peer.uri_san = Some(uri.into());
        self
    }
    fn decide(&self, p: &Policy) -> crate::Decision {
        let pairs = self.0.pairs();
        p.evaluate(&self.0.view(&pairs))
    }
    /// The primary finding's code, or None when allowed (dry-run findings count).
    fn code(&self, p: &Policy) -> Option<ReasonCode> {
        self.decide(p).primary().map(|f| f.code)
    }
    fn rule(&self, p: &Policy) -> Option<String> {
        self.decide(p).primary().map(|f| f.rule.clone())
    }
    fn enforced(&self, p: &Policy) -> bool {
        self.decide(p).enforced()
    }
}

fn conn(sni: Option<&str>) -> OwnedConnection {
    OwnedConnection {
        sni: sni.map(String::from),
        destination_port: Some(443),
        direction: OwnedDirection::Outbound,
        ..Default::default()
    }
}

fn conn_code(p: &Policy, c: &OwnedConnection) -> Option<ReasonCode> {
    p.evaluate_connection(&c.view()).primary().map(|f| f.code)
}

fn basic() -> Policy {
    egress(json!({"allow": [
        {"id": "api", "hosts": ["api.example.com"]},
        {"id": "cdn", "hosts": ["*.cdn.example.net"]},
    ]}))
}

#[test]
fn hosts_match_after_normalization() {
    let p = basic();
    for a in [
        "api.example.com",
        "API.EXAMPLE.COM.",
        "Api.Example.Com:80",
        "api.example.com.:8080",
        "x.cdn.example.net",
        "a.b.cdn.example.net:443",
    ] {
        assert_eq!(Req::to(a).code(&p), None, "{a}");
    }
    for a in [
        "api.example.com.evil.net",
        "evilexample.com",
        "example.com",
        "cdn.example.net",
        "evilcdn.example.net",
        "www.example.com",
    ] {
        assert_eq!(Req::to(a).code(&p), Some(ReasonCode::EgressHostNotAllowed), "{a}");
        assert_eq!(Req::to(a).rule(&p).as_deref(), Some("egress.allow"), "{a}");
        assert!(Req::to(a).enforced(&p));
    }
}

#[test]
fn what_does_not_parse_as_a_host_is_denied() {
    let p = basic();
    for a in [
        "",
        "api.example.com:443@evil.net",
        "user:pw@api.example.com",
        "api.example.com:",
        "api.example.com:99999",
        "api.example.com..",
        "api.example.com/evil",
        "api%2Eexample.com",
        "bücher.example",
        "api.example.com\t",
        "::1",
        "[::1",
        "example.123",
        "*.cdn.example.net",
    ] {
        assert_eq!(Req::to(a).code(&p), Some(ReasonCode::EgressInvalidHost), "{a:?}");
        assert_eq!(Req::to(a).rule(&p).as_deref(), Some("egress.host"));
    }
}

#[test]
fn ip_literals_in_every_spelling_and_special_destinations() {
    let p = basic();
    for (a, code) in [
        ("10.0.0.1", ReasonCode::EgressIpLiteral),
        ("[2001:db8::1]:443", ReasonCode::EgressIpLiteral),
        ("8.8.8.8:53", ReasonCode::EgressIpLiteral),
        ("127.0.0.1", ReasonCode::EgressLocalhost),
        ("0x7f.1", ReasonCode::EgressLocalhost),
        ("127.1", ReasonCode::EgressLocalhost),
        ("2130706433", ReasonCode::EgressLocalhost),
        ("0177.0.0.1:8080", ReasonCode::EgressLocalhost),
        ("[::1]", ReasonCode::EgressLocalhost),
        ("0.0.0.0", ReasonCode::EgressLocalhost),
        ("localhost", ReasonCode::EgressLocalhost),
        ("LocalHost.:80", ReasonCode::EgressLocalhost),
        ("anything.localhost", ReasonCode::EgressLocalhost),
        ("169.254.169.254", ReasonCode::EgressMetadataAddress),
        ("0xa9.0xfe.0xa9.0xfe", ReasonCode::EgressMetadataAddress),
        ("2852039166", ReasonCode::EgressMetadataAddress),
        ("[::ffff:169.254.169.254]", ReasonCode::EgressMetadataAddress),
        ("[::ffff:a9fe:a9fe]:80", ReasonCode::EgressMetadataAddress),
        ("[fd00:ec2::254]", ReasonCode::EgressMetadataAddress),
        ("metadata.google.internal", ReasonCode::EgressMetadataAddress),
        ("METADATA.google.internal.", ReasonCode::EgressMetadataAddress),
        ("100.100.100.200", ReasonCode::EgressMetadataAddress),
        ("169.254.10.1", ReasonCode::EgressLinkLocalAddress),
        ("[fe80::1%25eth0]", ReasonCode::EgressLinkLocalAddress),
        ("[fe80::1]", ReasonCode::EgressLinkLocalAddress),
    ] {
        assert_eq!(Req::to(a).code(&p), Some(code), "{a}");
    }
}

#[test]
fn only_a_rule_naming_a_special_destination_exactly_allows_it() {
    let p = egress(json!({"allow": [
        {"id": "legacy", "hosts": ["10.0.0.1", "[2001:db8::1]", "localhost"]},
        {"id": "gcp", "hosts": ["metadata.google.internal"], "methods": ["GET"]},
        {"id": "internal", "hosts": ["*.google.internal", "*.localhost"]},
    ]}));
    assert_eq!(Req::to("10.0.0.1").code(&p), None);
    assert_eq!(Req::to("10.0.0.1:8080").code(&p), None);
    assert_eq!(Req::to("[2001:DB8:0::1]").code(&p), None);
    assert_eq!(Req::to("localhost:80").code(&p), None);
    assert_eq!(Req::to("metadata.google.internal").code(&p), None);
    // Other spellings of an allowed IP never match: parsers disagree on what they mean.
    for a in ["10.1", "012.0.0.1", "0x0a.0.0.1", "167772161", "10.0.0.01"] {
        assert_eq!(Req::to(a).code(&p), Some(ReasonCode::EgressIpLiteral), "{a}");
    }
    // A wildcard never covers a metadata or localhost name.
    assert_eq!(Req::to("x.localhost").code(&p), Some(ReasonCode::EgressLocalhost));
    assert_eq!(Req::to("other.google.internal").code(&p), None);
    assert_eq!(Req::to("metadata.google.internal").method("POST").code(&p), Some(ReasonCode::EgressMethodNotAllowed));
}

#[test]
fn ports_methods_and_canonical_paths() {
    let p = egress(json!({"allow": [
        {"id": "tls", "hosts": ["api.example.com"], "ports": [443]},
        {"id": "reads", "hosts": ["api.example.com"], "ports": [80, 8080], "methods": ["GET", "HEAD"], "paths": [{"prefix": "/v1"}, {"exact": "/health"}]},
    ]}));
    assert_eq!(Req::to("api.example.com:443").method("POST").path("/x").code(&p), None);
    assert_eq!(Req::to("api.example.com").https().method("DELETE").code(&p), None, "https defaults to 443");
    assert_eq!(Req::to("api.example.com").path("/v1/items").code(&p), None);
    assert_eq!(Req::to("api.example.com:8080").method("HEAD").path("/health").code(&p), None);
    for path in ["/v1", "/v1/", "/%76%31/x", "//v1/x", "/x/../v1/y", "/v1?q=1"] {
        assert_eq!(Req::to("api.example.com").path(path).code(&p), None, "{path}");
    }
    assert_eq!(Req::to("api.example.com:9090").code(&p), Some(ReasonCode::EgressPortNotAllowed));
    assert_eq!(Req::to("api.example.com:9090").rule(&p).as_deref(), Some("tls"));
    assert_eq!(
        Req::to("api.example.com").method("POST").path("/v1").code(&p),
        Some(ReasonCode::EgressMethodNotAllowed)
    );
    // The explanation names the rule the request came closest to.
    assert_eq!(Req::to("api.example.com").method("POST").rule(&p).as_deref(), Some("reads"));
    for path in ["/v2", "/v10", "/v1/../admin", "/%2e%2e/admin", "/health/x"] {
        assert_eq!(Req::to("api.example.com").path(path).code(&p), Some(ReasonCode::EgressPathNotAllowed), "{path}");
    }
}

#[test]
fn a_path_regex_over_the_per_request_cap_does_not_admit() {
    let p = egress(json!({"allow": [
        {"id": "items", "hosts": ["api.example.com"], "paths": [{"regex": "^/items/[0-9]+$"}]},
    ]}));
    let digits = |n: usize| format!("/items/{}", "1".repeat(n));
    assert_eq!(Req::to("api.example.com").path(&digits(100)).code(&p), None);
    // 64 KiB of path times the regex's compiled size is over the cap on every target.
    assert_eq!(Req::to("api.example.com").path(&digits(64 * 1024)).code(&p), Some(ReasonCode::EgressPathNotAllowed));
}

const WEB: &str = "spiffe://cluster.local/ns/web/sa/web";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/batch";

#[test]
fn sources_on_an_outbound_sidecar_are_the_workload() {
    let p = egress(json!({"allow": [
        {"id": "web-api", "hosts": ["api.example.com"], "sources": ["spiffe://cluster.local/ns/web/sa/*"]},
        {"id": "anyone-cdn", "hosts": ["cdn.example.com"]},
    ]}));
    assert!(p.needs().workload);
    assert!(!p.needs().peer);
    let d = Req::to("api.example.com").workload("web", "web").decide(&p);
    assert!(d.findings.is_empty());
    assert_eq!(d.principal.as_deref(), Some(WEB));
    assert_eq!(
        Req::to("api.example.com").workload("batch", "batch").code(&p),
        Some(ReasonCode::EgressSourceNotAllowed)
    );
    assert_eq!(Req::to("api.example.com").code(&p), Some(ReasonCode::EgressSourceIdentityMissing));
    // Node metadata that does not make a SPIFFE ID is no identity.
    assert_eq!(
        Req::to("api.example.com").workload("web/../x", "web").code(&p),
        Some(ReasonCode::EgressSourceIdentityMissing)
    );
    // The peer certificate is not what counts here.
    assert_eq!(Req::to("api.example.com").mtls(WEB).code(&p), Some(ReasonCode::EgressSourceIdentityMissing));
    assert_eq!(Req::to("cdn.example.com").code(&p), None);
}

#[test]
fn sources_at_an_egress_gateway_are_the_mtls_peer() {
    let p = egress(json!({"appliesTo": "all", "allow": [
        {"id": "web-api", "hosts": ["api.example.com"], "sources": [WEB, "spiffe://cluster.local/ns/ops/sa/*"]},
    ]}));
    assert!(p.needs().peer);
    assert_eq!(Req::to("api.example.com").inbound().mtls(WEB).code(&p), None, "appliesTo all: every listener");
    assert_eq!(Req::to("api.example.com").mtls(BATCH).code(&p), Some(ReasonCode::EgressSourceNotAllowed));
    assert_eq!(
        Req::to("api.example.com").workload("web", "web").code(&p),
        Some(ReasonCode::EgressSourceIdentityMissing)
    );
    assert_eq!(Req::to("api.example.com").mtls("not-spiffe").code(&p), Some(ReasonCode::EgressSourceIdentityMissing));
}

#[test]
fn thousand_source_patterns_in_one_rule() {
    let sources: Vec<String> = (0..1000).map(|i| format!("spiffe://cluster.local/ns/team{i}/sa/*")).collect();
    let p = egress(json!({"allow": [{"id": "many", "hosts": ["api.example.com"], "sources": sources}]}));
    assert_eq!(Req::to("api.example.com").workload("team999", "x").code(&p), None);
    assert_eq!(Req::to("api.example.com").workload("team1000", "x").code(&p), Some(ReasonCode::EgressSourceNotAllowed));
}

#[test]
fn direction() {
    let p = basic();
    assert!(p.needs().direction);
    assert_eq!(Req::to("evil.net").inbound().code(&p), None, "inbound traffic is not egress");
    assert_eq!(Req::to("evil.net").unspecified().code(&p), Some(ReasonCode::EgressHostNotAllowed), "fail closed");
}

#[test]
fn passthrough_and_blackhole_clusters() {
    let p = egress(json!({"allow": [
        {"id": "api", "hosts": ["api.example.com"]},
        {"id": "legacy", "hosts": ["legacy.example.com"], "passthrough": true},
    ]}));
    assert_eq!(Req::to("api.example.com").cluster("outbound|80||api.example.com").code(&p), None);
    assert_eq!(
        Req::to("api.example.com").cluster("PassthroughCluster").code(&p),
        Some(ReasonCode::EgressPassthroughCluster)
    );
    assert_eq!(Req::to("api.example.com").cluster("PassthroughCluster").rule(&p).as_deref(), Some("api"));
    assert_eq!(
        Req::to("api.example.com").cluster("BlackHoleCluster").code(&p),
        Some(ReasonCode::EgressBlackholeCluster)
    );
    assert_eq!(
        Req::to("api.example.com").cluster("InboundPassthroughClusterIpv4").code(&p),
        Some(ReasonCode::EgressPassthroughCluster)
    );
    assert_eq!(Req::to("legacy.example.com").cluster("PassthroughCluster").code(&p), None);
    assert_eq!(Req::to("evil.net").cluster("PassthroughCluster").code(&p), Some(ReasonCode::EgressHostNotAllowed));
}

#[test]
fn the_authority_must_agree_with_the_istio_cluster() {
    let p = egress(json!({"allow": [
        {"id": "api", "hosts": ["api.example.com", "*.wild.example.com"], "ports": [443, 80]},
        {"id": "mesh", "hosts": ["*.svc.cluster.local"]},
    ]}));
    let ok = |a: &str, c: &str| assert_eq!(Req::to(a).cluster(c).code(&p), None, "{a} via {c}");
    let bad = |a: &str, c: &str| {
        assert_eq!(Req::to(a).cluster(c).code(&p), Some(ReasonCode::EgressAuthorityMismatch), "{a} via {c}");
        assert_eq!(Req::to(a).cluster(c).rule(&p).as_deref(), Some("egress.authority"));
    };
    ok("api.example.com", "outbound|443||api.example.com");
    ok("API.example.com.:443", "outbound|443||api.example.com");
    ok("api.example.com", "outbound_.443_._.api.example.com");
    ok("a.wild.example.com", "outbound|80||*.wild.example.com");
    ok("reviews", "outbound|9080||reviews.default.svc.cluster.local");
    ok("reviews.default:9080", "outbound|9080|v1|reviews.default.svc.cluster.local");
    // Through the egress gateway (a VirtualService): the allowlist judges the authority.
    ok("api.example.com", "outbound|80||istio-egressgateway.istio-system.svc.cluster.local");
    ok("api.example.com", "some-plain-envoy-cluster");
    bad("api.example.com", "outbound|443||other.example.com");
    // The port the rules see is the cluster's: where the request really goes.
    ok("api.example.com:8443", "outbound|443||api.example.com");
    assert_eq!(
        Req::to("api.example.com:80").cluster("outbound|8443||api.example.com").code(&p),
        Some(ReasonCode::EgressPortNotAllowed)
    );
    bad("wild.example.com", "outbound|80||*.wild.example.com");
    bad("10.0.0.1", "outbound|80||api.example.com");
    bad("reviews:9999", "outbound|9080||api.example.com");
    // Port 9090 comes from the cluster when the authority has none.
    assert_eq!(
        Req::to("api.example.com").cluster("outbound|9090||api.example.com").code(&p),
        Some(ReasonCode::EgressPortNotAllowed)
    );
    assert_eq!(
        Req::to("evil.net").cluster("outbound|80||istio-egressgateway.istio-system.svc.cluster.local").code(&p),
        Some(ReasonCode::EgressHostNotAllowed)
    );
}

#[test]
fn dry_run_per_check_and_per_policy() {
    for p in [
        egress(json!({"mode": "dry-run", "allow": [{"id": "api", "hosts": ["api.example.com"], "methods": ["GET"]}]})),
        policy(
            json!({"version": 1, "mode": "dry-run", "egress": {"allow": [{"id": "api", "hosts": ["api.example.com"], "methods": ["GET"]}]}}),
        ),
    ] {
        let d = Req::to("evil.net").decide(&p);
        assert_eq!((d.outcome().as_str(), d.primary().unwrap().code), ("would_deny", ReasonCode::EgressHostNotAllowed));
        assert_eq!(Req::to("api.example.com").method("POST").decide(&p).outcome().as_str(), "would_deny");
        assert_eq!(Req::to("x:1:2").decide(&p).outcome().as_str(), "would_deny");
        assert_eq!(Req::to("api.example.com").decide(&p).outcome().as_str(), "allow");
    }
}

#[test]
fn a_rule_in_dry_run_never_blocks_its_hosts() {
    let p = egress(json!({"allow": [
        {"id": "api-reads", "hosts": ["api.example.com"], "methods": ["GET"]},
        {"id": "api-narrow", "mode": "dry-run", "hosts": ["api.example.com", "new.example.com"], "methods": ["GET", "POST"], "paths": [{"prefix": "/v2"}]},
    ]}));
    // Enforced rule admits: no finding at all.
    assert_eq!(Req::to("api.example.com").path("/v1").decide(&p).outcome().as_str(), "allow");
    // The dry-run rule admits what the enforced one does not.
    assert_eq!(Req::to("api.example.com").method("POST").path("/v2/x").decide(&p).outcome().as_str(), "allow");
    assert_eq!(Req::to("new.example.com").path("/v2").decide(&p).outcome().as_str(), "allow");
    // Neither admits: the dry-run rule lets it through, logged as a would-deny against it.
    let d = Req::to("new.example.com").path("/v1").decide(&p);
    assert_eq!(d.outcome().as_str(), "would_deny");
    let f = d.primary().unwrap();
    assert_eq!((f.code, f.rule.as_str(), f.enforced), (ReasonCode::EgressPathNotAllowed, "api-narrow", false));
    assert_eq!(Req::to("api.example.com").method("DELETE").path("/v2").decide(&p).outcome().as_str(), "would_deny");
    // Hosts no rule names are denied as ever.
    assert_eq!(Req::to("other.example.com").decide(&p).outcome().as_str(), "deny");
}

#[test]
fn egress_runs_after_an_enforced_identity_deny_is_found() {
    // An egress gateway: both checks run on every request.
    let p = policy(json!({"version": 1, "identity": {}, "egress": {"appliesTo": "all", "allow": []}}));
    let d = Req::to("evil.net").decide(&p);
    assert_eq!(d.findings.len(), 1, "the first enforced deny ends the evaluation: {d:?}");
    assert_eq!(d.findings[0].code, ReasonCode::PeerIdentityMissing);
    let p = policy(json!({"version": 1, "identity": {"mode": "dry-run"}, "egress": {"appliesTo": "all", "allow": []}}));
    let codes: Vec<_> = Req::to("evil.net").decide(&p).findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, [ReasonCode::PeerIdentityMissing, ReasonCode::EgressHostNotAllowed]);
}

#[test]
fn identity_and_outbound_egress_in_one_policy_split_by_direction() {
    // With egress on outbound listeners, an identity check that also ran there would deny every
    // outbound request (the downstream is the local app, in plaintext): refused, by name.
    let errs = errors(json!({"version": 1, "identity": {}, "egress": {"allow": []}}));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("identity.appliesTo: must be inbound"), "{errs:?}");

    let p = policy(json!({
        "version": 1,
        "identity": {"appliesTo": "inbound"},
        "egress": {"allow": [{"id": "api", "hosts": ["api.example.com"]}]},
    }));
    assert!(p.needs().direction);
    // Outbound: only egress.
    assert_eq!(Req::to("api.example.com").code(&p), None);
    assert_eq!(Req::to("evil.net").code(&p), Some(ReasonCode::EgressHostNotAllowed));
    // Inbound: only identity.
    assert_eq!(Req::to("evil.net").inbound().code(&p), Some(ReasonCode::PeerIdentityMissing));
    let web = "spiffe://cluster.local/ns/web/sa/web";
    assert_eq!(Req::to("evil.net").inbound().mtls(web).code(&p), None);
    // A listener that does not say which way it goes gets both: fail closed.
    let codes: Vec<_> = Req::to("evil.net").unspecified().decide(&p).findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, [ReasonCode::PeerIdentityMissing]);
}

#[test]
fn tls_connections_by_sni() {
    let p = egress(json!({"allow": [
        {"id": "api", "hosts": ["api.example.com", "*.cdn.example.net"], "ports": [443]},
        {"id": "http-only", "hosts": ["web.example.com"], "paths": [{"prefix": "/"}]},
        {"id": "db", "hosts": ["db.example.com"], "ports": [5432], "allowNoSni": true, "sources": [WEB]},
    ]}));
    assert_eq!(conn_code(&p, &conn(Some("api.example.com"))), None);
    assert_eq!(conn_code(&p, &conn(Some("API.Example.com."))), None);
    assert_eq!(conn_code(&p, &conn(Some("x.cdn.example.net"))), None);
    assert_eq!(conn_code(&p, &conn(Some("evil.net"))), Some(ReasonCode::EgressSniNotAllowed));
    assert_eq!(conn_code(&p, &conn(Some("api.example.com.evil.net"))), Some(ReasonCode::EgressSniNotAllowed));
    assert_eq!(
        conn_code(&p, &conn(Some("web.example.com"))),
        Some(ReasonCode::EgressSniNotAllowed),
        "a path rule cannot see inside TLS"
    );
    assert_eq!(conn_code(&p, &conn(Some("169.254.169.254"))), Some(ReasonCode::EgressMetadataAddress));
    assert_eq!(conn_code(&p, &conn(Some("::1"))), Some(ReasonCode::EgressLocalhost));
    assert_eq!(conn_code(&p, &conn(Some("bad sni"))), Some(ReasonCode::EgressInvalidHost));
    assert_eq!(conn_code(&p, &conn(Some("api.example.com:443"))), Some(ReasonCode::EgressInvalidHost));
    let mut c = conn(Some("api.example.com"));
    c.destination_port = Some(8443);
    assert_eq!(conn_code(&p, &c), Some(ReasonCode::EgressPortNotAllowed));
    c.destination_port = None;
    assert_eq!(conn_code(&p, &c), Some(ReasonCode::EgressPortNotAllowed), "an unknown port matches no port list");
    // No SNI: only allowNoSni rules, on their ports and for their sources.
    let mut c = conn(None);
    c.destination_port = Some(5432);
    assert_eq!(conn_code(&p, &c), Some(ReasonCode::EgressSourceIdentityMissing));
    c.workload.namespace = Some("web".into());
    c.workload.service_account = Some("web".into());
    assert_eq!(conn_code(&p, &c), None);
    c.sni = Some(String::new());
    assert_eq!(conn_code(&p, &c), None, "an empty SNI is no SNI");
    c.destination_port = Some(443);
    assert_eq!(conn_code(&p, &c), Some(ReasonCode::EgressPortNotAllowed));
    let strict = egress(json!({"allow": [{"id": "api", "hosts": ["api.example.com"]}]}));
    assert_eq!(conn_code(&strict, &conn(None)), Some(ReasonCode::EgressSniMissing));
    let mut inbound = conn(Some("evil.net"));
    inbound.direction = OwnedDirection::Inbound;
    assert_eq!(conn_code(&strict, &inbound), None);
    // No egress section: the network filter has nothing to enforce.
    assert_eq!(conn_code(&policy(json!({"version": 1})), &conn(Some("evil.net"))), None);
}

#[test]
fn decision_lines_replay() {
    let p = egress(json!({"allow": [{"id": "api", "hosts": ["api.example.com"], "sources": [WEB]}]}));
    let r = Req::to("evil.net").cluster("PassthroughCluster").workload("web", "web");
    let pairs = r.0.pairs();
    let view = r.0.view(&pairs);
    let d = p.evaluate(&view);
    let line: serde_json::Value = serde_json::from_str(&p.decision_log_line(&d, &view, 0)).unwrap();
    assert_eq!(line["code"], "egress_host_not_allowed");
    assert_eq!(line["request"]["cluster"], "PassthroughCluster");
    assert_eq!(line["request"]["workload"], json!({"namespace": "web", "serviceAccount": "web"}));
    assert_eq!(line["request"]["direction"], "outbound");
    let replayed: OwnedRequest = serde_json::from_value(line["request"].clone()).unwrap();
    let pairs = replayed.pairs();
    assert_eq!(p.evaluate(&replayed.view(&pairs)), d);

    let c = conn(Some("evil.net"));
    let d = p.evaluate_connection(&c.view());
    assert!(p.should_log_connection(&d, &c.view()));
    let line: serde_json::Value = serde_json::from_str(&p.connection_log_line(&d, &c.view(), 0)).unwrap();
    assert_eq!(line["code"], "egress_sni_not_allowed");
    assert_eq!(line["connection"]["sni"], "evil.net");
    assert_eq!(line["connection"]["destinationPort"], 443);
    let replayed: OwnedConnection = serde_json::from_value(line["connection"].clone()).unwrap();
    assert_eq!(p.evaluate_connection(&replayed.view()), d);
    // Older lines, without the new fields, still read.
    let old: OwnedRequest =
        serde_json::from_value(json!({"method": "GET", "path": "/", "direction": "inbound"})).unwrap();
    assert!(old.cluster.is_none());
}

#[test]
fn invalid_egress_sections_name_the_field() {
    let e = errors(json!({"version": 1, "egress": {
        "trustDomain": "Bad_TD!",
        "allow": [
            {"id": "ok", "hosts": ["api.example.com"]},
            {"id": "ok", "hosts": []},
            {"id": "bad id!", "hosts": ["a.com", "*.*.com", "0x7f.1", "bücher.de", "a.com:443", "[fe80::1%25eth0]"]},
            {"id": "ports", "hosts": ["a.com"], "ports": [0, 65536, 443], "methods": ["get"], "paths": [{"prefix": "/a/../b"}]},
            {"id": "src", "hosts": ["a.com"], "sources": ["spiffe://other.td/ns/x/sa/y", "nope"]},
            {"id": "nosni", "allowNoSni": true},
            {"id": "nosni2", "allowNoSni": true, "ports": [22], "paths": [{"prefix": "/"}]},
        ]
    }}));
    let paths: Vec<&str> = e.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "egress.trustDomain",
            "egress.allow[1].id",
            "egress.allow[1].hosts",
            "egress.allow[2].id",
            "egress.allow[2].hosts[1]",
            "egress.allow[2].hosts[2]",
            "egress.allow[2].hosts[3]",
            "egress.allow[2].hosts[4]",
            "egress.allow[2].hosts[5]",
            "egress.allow[3].ports[0]",
            "egress.allow[3].ports[1]",
            "egress.allow[3].methods[0]",
            "egress.allow[3].paths[0].prefix",
            "egress.allow[4].sources[0]",
            "egress.allow[4].sources[1]",
            "egress.allow[5].ports",
            "egress.allow[6].allowNoSni",
        ],
        "{e:#?}"
    );
    assert!(e.iter().any(|m| m.contains("xn--")), "{e:#?}");
    let e = errors(json!({"version": 1, "egress": {"allow": [{"id": "a", "hosts": ["a.com"], "zz": 1}]}}));
    assert!(e[0].starts_with("egress.allow[0]"), "{e:?}");
    let e = errors(json!({"version": 1, "egress": {"appliesTo": "inbound"}}));
    assert!(e[0].starts_with("egress.appliesTo"), "{e:?}");
}

#[test]
fn ten_thousand_hosts() {
    let rules = crate::samples::scale_egress_rules(1000, 10);
    let p = egress(json!({"allow": rules}));
    assert_eq!(Req::to("h4.svc777.example.com").workload("ns777", "x").code(&p), None);
    assert_eq!(Req::to("a.b.w3.svc999.example.org").workload("ns999", "x").code(&p), None);
    assert_eq!(
        Req::to("h4.svc777.example.com").workload("ns778", "x").code(&p),
        Some(ReasonCode::EgressSourceNotAllowed)
    );
    assert_eq!(
        Req::to("w3.svc999.example.org").workload("ns999", "x").code(&p),
        Some(ReasonCode::EgressHostNotAllowed)
    );
}

// ----- Units -----

#[test]
fn short_names_and_wildcards() {
    let fqdn = "reviews.default.svc.cluster.local";
    for short in ["reviews", "reviews.default", "reviews.default.svc"] {
        assert!(is_short_name_of(short, fqdn), "{short}");
    }
    assert!(!is_short_name_of("reviews.default.svc.cluster", fqdn));
    assert!(!is_short_name_of("review", fqdn));
    assert!(!is_short_name_of("api", "api.example.com"));
    assert!(covered_by_wildcard("a.example.com", "example.com"));
    assert!(covered_by_wildcard("a.b.example.com", "example.com"));
    assert!(!covered_by_wildcard("example.com", "example.com"));
    assert!(!covered_by_wildcard("evilexample.com", "example.com"));
}

/// The cluster name is a host call per request: an inbound request does not need it when the
/// check applies to outbound traffic only, and does at an egress gateway (`appliesTo: all`).
#[test]
fn the_cluster_is_needed_only_where_the_check_applies() {
    use crate::Direction;
    let outbound = egress(json!({"allow": [{"id": "a", "hosts": ["a.example.com"]}]})).needs();
    assert!(outbound.cluster_on(Direction::Outbound) && outbound.cluster_on(Direction::Unspecified));
    assert!(!outbound.cluster_on(Direction::Inbound));
    let all = egress(json!({"appliesTo": "all", "allow": [{"id": "a", "hosts": ["a.example.com"]}]})).needs();
    assert!(all.cluster_on(Direction::Inbound) && all.cluster_on(Direction::Outbound));
    let none = policy(json!({"version": 1, "identity": {}})).needs();
    assert!(!none.cluster_on(Direction::Outbound));
}
