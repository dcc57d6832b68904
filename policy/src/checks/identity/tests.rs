//! The peer-identity check through the public API: policy JSON in, decision out.

use crate::testing::errors;
use crate::testing::policy;
use crate::view::request::OwnedRequest;
use crate::{Policy, ReasonCode};
use serde_json::json;

const WEB: &str = "spiffe://cluster.local/ns/web/sa/web";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/batch";
const ADMIN: &str = "spiffe://cluster.local/ns/ops/sa/admin";

struct Req(OwnedRequest);

impl Req {
    fn new(method: &str, path: &str) -> Self {
        Req(OwnedRequest {
            method: method.into(),
            path: path.into(),
            authority: "api.default.svc.cluster.local".into(),
            scheme: "https".into(),
            ..Default::default()
        })
    }
    fn mtls(mut self, uri: Option<&str>) -> Self {
        self.0.peer.mtls = true;
        self.0.peer.uri_san = uri.map(String::from);
        self
    }
    fn header(mut self, n: &str, v: &str) -> Self {
        self.0.headers.push((n.into(), v.into()));
        self
    }
    fn authority(mut self, a: &str) -> Self {
        self.0.authority = a.into();
        self
    }
    /// (code of the primary finding, enforced, principal)
    fn eval(&self, p: &Policy) -> (Option<ReasonCode>, bool, Option<String>) {
        let pairs = self.0.pairs();
        let d = p.evaluate(&self.0.view(&pairs));
        (d.primary().map(|f| f.code), d.enforced(), d.principal)
    }
    fn rule(&self, p: &Policy) -> Option<String> {
        let pairs = self.0.pairs();
        p.evaluate(&self.0.view(&pairs)).primary().map(|f| f.rule.clone())
    }
}

fn routes_policy() -> Policy {
    policy(json!({
        "version": 1,
        "identity": {
            "trustDomains": ["cluster.local"],
            "rules": [
                {"id": "no-batch-admin", "action": "deny", "match": {"paths": [{"prefix": "/admin"}]}, "principals": ["spiffe://cluster.local/ns/batch/sa/*"]},
                {"id": "ops-admin", "action": "allow", "match": {"paths": [{"prefix": "/admin"}]}, "principals": ["spiffe://cluster.local/ns/ops/sa/*", "spiffe://cluster.local/ns/batch/sa/batch"]},
                {"id": "web-reads", "action": "allow", "match": {"paths": [{"prefix": "/api/"}], "methods": ["GET"]}, "principals": ["spiffe://cluster.local/ns/web/sa/*"]}
            ]
        }
    }))
}

#[test]
fn requires_an_mtls_peer_by_default() {
    let p = policy(json!({"version": 1, "identity": {}}));
    assert_eq!(Req::new("GET", "/").eval(&p), (Some(ReasonCode::PeerIdentityMissing), true, None));
    assert_eq!(Req::new("GET", "/").mtls(None).eval(&p).0, Some(ReasonCode::PeerIdentityNoUriSan));
    assert_eq!(Req::new("GET", "/").mtls(Some("")).eval(&p).0, Some(ReasonCode::PeerIdentityNoUriSan));
    assert_eq!(
        Req::new("GET", "/").mtls(Some("https://example.com/x")).eval(&p).0,
        Some(ReasonCode::PeerIdentityInvalidSpiffeId)
    );
    assert_eq!(
        Req::new("GET", "/").mtls(Some("spiffe://cluster.local/ns/a/../b")).eval(&p).0,
        Some(ReasonCode::PeerIdentityInvalidSpiffeId)
    );
    assert_eq!(Req::new("GET", "/").mtls(Some(WEB)).eval(&p), (None, false, Some(WEB.into())));
}

#[test]
fn anonymous_peers_when_not_required() {
    let p = policy(json!({"version": 1, "identity": {"requirePeerIdentity": false}}));
    assert_eq!(Req::new("GET", "/").eval(&p), (None, false, None));
    assert_eq!(Req::new("GET", "/").mtls(None).eval(&p), (None, false, None));
    // A malformed identity is never tolerated.
    assert_eq!(
        Req::new("GET", "/").mtls(Some("spiffe://UPPER/x")).eval(&p).0,
        Some(ReasonCode::PeerIdentityInvalidSpiffeId)
    );
}

#[test]
fn trust_domains() {
    let p = policy(json!({"version": 1, "identity": {"trustDomains": ["cluster.local"]}}));
    assert_eq!(Req::new("GET", "/").mtls(Some(WEB)).eval(&p).0, None);
    let r = Req::new("GET", "/").mtls(Some("spiffe://other.example/ns/web/sa/web"));
    assert_eq!(r.eval(&p).0, Some(ReasonCode::PeerIdentityTrustDomainNotAllowed));
    assert_eq!(r.rule(&p).as_deref(), Some("identity.trustDomains"));
}

#[test]
fn two_uri_sans_seen_through_envoys_own_xfcc_element() {
    let p = policy(json!({"version": 1, "identity": {}}));
    let xfcc = format!("By=spiffe://cluster.local/ns/default/sa/api;Hash=ab;URI={WEB};URI={ADMIN}");
    let r = Req::new("GET", "/").mtls(Some(WEB)).header("x-forwarded-client-cert", &xfcc);
    assert_eq!(r.eval(&p).0, Some(ReasonCode::PeerIdentityMultipleUriSans));
    // One URI in Envoy's element: fine, whatever the client put before it.
    let xfcc = format!("URI={ADMIN};URI={WEB},By=spiffe://cluster.local/ns/default/sa/api;Hash=ab;URI={WEB}");
    let r = Req::new("GET", "/").mtls(Some(WEB)).header("x-forwarded-client-cert", &xfcc);
    assert_eq!(r.eval(&p), (None, false, Some(WEB.into())));
    // An element that is not about this certificate is ignored (it can only ever deny).
    let r = Req::new("GET", "/").mtls(Some(WEB)).header("x-forwarded-client-cert", &format!("URI={ADMIN};URI={BATCH}"));
    assert_eq!(r.eval(&p).0, None);
}

#[test]
fn xfcc_is_never_trusted_by_default() {
    let p = policy(json!({"version": 1, "identity": {}}));
    let r = Req::new("GET", "/").header("x-forwarded-client-cert", &format!("URI={ADMIN}"));
    assert_eq!(r.eval(&p).0, Some(ReasonCode::PeerIdentityMissing));
}

#[test]
fn xfcc_source_trusts_only_the_last_element() {
    let p = policy(json!({"version": 1, "identity": {"source": "xfcc", "rules": [
        {"id": "ops", "action": "allow", "principals": ["spiffe://cluster.local/ns/ops/sa/*"]}
    ]}}));
    // The request arrived over mTLS (the proxy's certificate), so Envoy appended the last element.
    let via_proxy = || Req::new("GET", "/").mtls(Some("spiffe://cluster.local/ns/istio-system/sa/gw"));
    let forged_first = format!("URI={ADMIN},By=spiffe://gw;URI={WEB}");
    assert_eq!(
        via_proxy().header("x-forwarded-client-cert", &forged_first).eval(&p).0,
        Some(ReasonCode::PeerIdentityPrincipalNotAllowed)
    );
    assert_eq!(
        via_proxy().header("x-forwarded-client-cert", &format!("By=spiffe://gw;URI={ADMIN}")).eval(&p),
        (None, false, Some(ADMIN.into()))
    );
    assert_eq!(via_proxy().eval(&p).0, Some(ReasonCode::PeerIdentityXfccInvalid));
    assert_eq!(
        via_proxy().header("x-forwarded-client-cert", "Subject=\"x").eval(&p).0,
        Some(ReasonCode::PeerIdentityXfccInvalid)
    );
    assert_eq!(
        via_proxy().header("x-forwarded-client-cert", &format!("URI={ADMIN};URI={WEB}")).eval(&p).0,
        Some(ReasonCode::PeerIdentityMultipleUriSans)
    );
}

/// On a plaintext connection Envoy adds no XFCC element, so every element, the last one
/// included, is the client's own: a forged identity must not get through.
#[test]
fn xfcc_source_never_trusts_a_plaintext_peer() {
    let p = policy(json!({"version": 1, "identity": {"source": "xfcc", "rules": [
        {"id": "ops", "action": "allow", "principals": ["spiffe://cluster.local/ns/ops/sa/*"]}
    ]}}));
    let forged = format!("By=spiffe://cluster.local/ns/default/sa/api;URI={ADMIN}");
    let r = Req::new("GET", "/").header("x-forwarded-client-cert", &forged);
    assert_eq!(r.eval(&p), (Some(ReasonCode::PeerIdentityMissing), true, None));
    let lenient = policy(json!({"version": 1, "identity": {"source": "xfcc", "requirePeerIdentity": false}}));
    assert_eq!(r.eval(&lenient), (None, false, None), "anonymous, never the forged principal");
}

#[test]
fn deny_beats_allow_and_allow_lists_close_the_route() {
    let p = routes_policy();
    let get = |path: &str, who: &str| Req::new("GET", path).mtls(Some(who)).eval(&p).0;
    assert_eq!(get("/admin/users", ADMIN), None);
    assert_eq!(get("/admin/users", BATCH), Some(ReasonCode::PeerIdentityPrincipalDenied), "deny beats allow");
    assert_eq!(get("/admin/users", WEB), Some(ReasonCode::PeerIdentityPrincipalNotAllowed));
    assert_eq!(get("/%61dmin/users", WEB), Some(ReasonCode::PeerIdentityPrincipalNotAllowed), "canonical path");
    assert_eq!(get("/api/x/../../admin", WEB), Some(ReasonCode::PeerIdentityPrincipalNotAllowed), "canonical path");
    assert_eq!(get("/api/items", WEB), None);
    assert_eq!(get("/api/items", BATCH), Some(ReasonCode::PeerIdentityPrincipalNotAllowed));
    assert_eq!(Req::new("POST", "/api/items").mtls(Some(WEB)).eval(&p).0, None, "no rule covers POST");
    assert_eq!(get("/other", BATCH), None, "no rule covers /other: default allow");
    assert_eq!(Req::new("GET", "/admin").mtls(Some(BATCH)).rule(&p).as_deref(), Some("no-batch-admin"));
    assert_eq!(Req::new("GET", "/admin").mtls(Some(WEB)).rule(&p).as_deref(), Some("ops-admin"));
}

#[test]
fn a_path_over_the_regex_cap_is_decided_the_fail_closed_way() {
    let p = policy(json!({
        "version": 1,
        "identity": {
            "rules": [
                {"id": "no-batch-exports", "action": "deny", "match": {"paths": [{"regex": "^/exports/[a-z]+$"}]}, "principals": ["spiffe://cluster.local/ns/batch/sa/*"]},
                {"id": "web-items", "action": "allow", "match": {"paths": [{"regex": "^/items/[0-9]+$"}]}, "principals": ["spiffe://cluster.local/ns/web/sa/*"]},
                {"id": "ops-items", "action": "allow", "match": {"paths": [{"prefix": "/items"}]}, "principals": ["spiffe://cluster.local/ns/ops/sa/*"]}
            ]
        }
    }));
    let get = |path: &str, who: &str| Req::new("GET", path).mtls(Some(who)).eval(&p).0;
    // Far within the cap (a few hundred bytes of compiled regex on a short path), the regexes
    // run as usual; far over it (the same regex on 64 KiB, on every target), they do not.
    let short = |prefix: &str| format!("{prefix}{}", "1".repeat(100));
    let long = |prefix: &str| format!("{prefix}{}", "1".repeat(64 * 1024));
    assert_eq!(get(&short("/items/"), WEB), None);
    assert_eq!(get(&short("/exports/"), BATCH), None, "digits: the deny regex does not match");
    assert_eq!(get(&format!("/exports/{}", "a".repeat(100)), BATCH), Some(ReasonCode::PeerIdentityPrincipalDenied));
    // Over it, a deny rule that could match applies...
    assert_eq!(get(&long("/exports/"), BATCH), Some(ReasonCode::PeerIdentityRouteUndecided));
    assert_eq!(Req::new("GET", &long("/exports/")).mtls(Some(BATCH)).rule(&p).as_deref(), Some("no-batch-exports"));
    // ...and an allow rule that could match does not admit, even its own principals,
    assert_eq!(get(&long("/items/"), WEB), Some(ReasonCode::PeerIdentityRouteUndecided));
    assert_eq!(Req::new("GET", &long("/items/")).mtls(Some(WEB)).rule(&p).as_deref(), Some("web-items"));
    // unless a rule that needs no regex admits the caller.
    assert_eq!(get(&long("/items/"), ADMIN), None);
    // A regex whose literal prefix the path lacks is decided without running, at any length.
    assert_eq!(get(&long("/other/"), WEB), None);
    assert_eq!(get(&long("/other/"), BATCH), None);
}

#[test]
fn a_malformed_authority_cannot_step_around_host_rules() {
    // Ops may call the admin API of api.*; nobody else. On a sidecar every Host reaches the app
    // (one catch-all virtual host), so a Host that no host rule can match must not fall through
    // to the default action.
    let p = policy(json!({"version": 1, "identity": {"rules": [
        {"id": "ops-admin", "action": "allow", "match": {"hosts": ["api.default.svc.cluster.local"], "paths": [{"prefix": "/admin"}]}, "principals": [ADMIN]}
    ]}}));
    let admin = |authority: &str, who: &str| Req::new("GET", "/admin").mtls(Some(who)).authority(authority).eval(&p).0;
    assert_eq!(admin("api.default.svc.cluster.local", ADMIN), None);
    assert_eq!(admin("API.default.svc.cluster.local.:8080", ADMIN), None, "normalized first");
    assert_eq!(admin("api.default.svc.cluster.local", WEB), Some(ReasonCode::PeerIdentityPrincipalNotAllowed));
    assert_eq!(admin("other.svc", WEB), None, "another host: no rule covers it");
    for hostile in [
        "api.default.svc.cluster.local@evil",
        "evil@api.default.svc.cluster.local",
        "api.default.svc.cluster.local:abc",
        "api.default.svc.cluster.local:08080",
        "api.default.svc.cluster.local,other.svc",
        "api.default.svc.cluster.local other",
        "api..default.svc.cluster.local",
        "0x7f.1",
        "[::1",
        "",
    ] {
        assert_eq!(admin(hostile, WEB), Some(ReasonCode::PeerIdentityAuthorityInvalid), "{hostile:?}");
        assert_eq!(Req::new("GET", "/admin").mtls(Some(WEB)).authority(hostile).rule(&p).as_deref(), Some("ops-admin"));
    }
    // Without host rules the authority does not matter to this check.
    assert_eq!(Req::new("GET", "/api/items").mtls(Some(WEB)).authority("a@b").eval(&routes_policy()).0, None);
}

#[test]
fn default_deny() {
    let p = policy(json!({"version": 1, "identity": {"defaultAction": "deny", "rules": [
        {"id": "web", "action": "allow", "match": {"hosts": ["*.default.svc.cluster.local"]}, "principals": [WEB]}
    ]}}));
    assert_eq!(Req::new("GET", "/").mtls(Some(WEB)).eval(&p).0, None);
    assert_eq!(
        Req::new("GET", "/").mtls(Some(WEB)).authority("other.ns.svc:80").eval(&p).0,
        Some(ReasonCode::PeerIdentityNoMatchingRule)
    );
}

#[test]
fn dry_run_everywhere() {
    // Whole policy in dry-run.
    let p = policy(json!({"version": 1, "mode": "dry-run", "identity": {}}));
    assert_eq!(Req::new("GET", "/").eval(&p), (Some(ReasonCode::PeerIdentityMissing), false, None));
    // The check in dry-run.
    let p = policy(json!({"version": 1, "identity": {"mode": "dry-run"}}));
    assert_eq!(Req::new("GET", "/").eval(&p), (Some(ReasonCode::PeerIdentityMissing), false, None));
    // One rule in dry-run: the enforcing rules decide, the dry-run rule only reports.
    let p = policy(json!({"version": 1, "identity": {"rules": [
        {"id": "new-lockdown", "action": "allow", "mode": "dry-run", "match": {"paths": [{"prefix": "/admin"}]}, "principals": [ADMIN]},
        {"id": "block-batch", "action": "deny", "match": {"paths": [{"prefix": "/admin"}]}, "principals": [BATCH]}
    ]}}));
    let web = Req::new("GET", "/admin").mtls(Some(WEB));
    assert_eq!(web.eval(&p), (Some(ReasonCode::PeerIdentityPrincipalNotAllowed), false, Some(WEB.into())));
    assert_eq!(web.rule(&p).as_deref(), Some("new-lockdown"));
    assert_eq!(Req::new("GET", "/admin").mtls(Some(ADMIN)).eval(&p).0, None);
    assert_eq!(
        Req::new("GET", "/admin").mtls(Some(BATCH)).eval(&p),
        (Some(ReasonCode::PeerIdentityPrincipalDenied), true, Some(BATCH.into()))
    );
    // A rule cannot escalate a dry-run check to enforce.
    let p = policy(json!({"version": 1, "identity": {"mode": "dry-run", "rules": [
        {"id": "r", "action": "deny", "mode": "enforce", "principals": ["*"]}
    ]}}));
    assert_eq!(
        Req::new("GET", "/").mtls(Some(WEB)).eval(&p),
        (Some(ReasonCode::PeerIdentityPrincipalDenied), false, Some(WEB.into()))
    );
}

#[test]
fn invalid_policies_name_the_field() {
    assert_eq!(errors(json!({"version": 1, "identity": {"bogus": 1}})).len(), 1);
    assert!(
        errors(json!({"version": 1, "identity": {"bogus": 1}}))[0].starts_with("identity"),
        "{:?}",
        errors(json!({"version": 1, "identity": {"bogus": 1}}))
    );
    assert!(errors(json!({"version": 1, "extra": true}))[0].contains("unknown field `extra`"));
    assert!(errors(json!({"identity": {}}))[0].contains("missing field `version`"));
    assert_eq!(errors(json!({"version": 2})), ["version: unsupported policy version 2 (this build understands 1)"]);
    assert!(errors(json!({"version": 1, "identity": {"requirePeerIdentity": "yes"}}))[0]
        .starts_with("identity.requirePeerIdentity: invalid type"));
    assert!(errors(json!({"version": 1, "identity": {"rules": [{"id": "a", "action": "allow", "principals": [7]}]}}))
        [0]
    .starts_with("identity.rules[0].principals[0]: invalid type"));
    let e = errors(json!({"version": 1, "denyResponse": {"status": 200}, "identity": {
    "trustDomains": ["cluster.local", "Bad.TD"],
    "rules": [
        {"id": "ok", "action": "allow", "principals": ["*"]},
        {"id": "ok", "action": "deny", "principals": ["spiffe://cluster.local/ns/*/sa/*", "spiffe://other/ns/x", "not-an-id"], "match": {"paths": [{"regex": "(["}]}},
        {"id": "empty", "action": "allow", "principals": []}
    ]}}));
    let paths: Vec<&str> = e.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "denyResponse.status",
            "identity.trustDomains[1]",
            "identity.rules[1].id",
            "identity.rules[1].principals[1]",
            "identity.rules[1].principals[2]",
            "identity.rules[1].match.paths[0].regex",
            "identity.rules[2].principals",
        ],
        "{e:#?}"
    );
    assert!(Policy::from_json(b"{not json").unwrap_err().to_string().contains("not valid JSON"));
    assert!(errors(json!({"version": 1, "mode": "audit"}))[0].starts_with("mode: unknown variant `audit`"));
}

#[test]
fn revision_ignores_formatting() {
    let a = Policy::from_json(br#"{"version":1,"identity":{"trustDomains":["cluster.local"]}}"#).unwrap();
    let b =
        Policy::from_json(b"{ \"identity\": { \"trustDomains\": [ \"cluster.local\" ] },\n \"version\": 1 }").unwrap();
    let c = Policy::from_json(br#"{"version":1,"identity":{"trustDomains":["other"]}}"#).unwrap();
    assert_eq!(a.revision(), b.revision());
    assert_ne!(a.revision(), c.revision());
    assert_eq!(a.revision().len(), 16);
}

#[test]
fn deny_body_and_log_line_hold_no_secrets() {
    let p = policy(json!({"version": 1, "decisionLog": {"redactHeaders": ["x-tenant-secret"]}, "identity": {}}));
    let r = Req::new("GET", "/login?token=s3cret&x=1")
        .header("authorization", "Bearer abc.def.ghi")
        .header("cookie", "session=s3cret")
        .header("x-tenant-secret", "s3cret")
        .header("x-custom", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
        .header("referer", "https://a.example/?token=s3cret")
        .header("x-request-id", "req-1");
    let pairs = r.0.pairs();
    let view = r.0.view(&pairs);
    let d = p.evaluate(&view);
    let line = p.decision_log_line(&d, &view, 1_795_332_044_999);
    assert!(!line.contains("s3cret") && !line.contains("abc.def") && !line.contains("eyJzdWIi"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["outcome"], "deny");
    assert_eq!(v["code"], "peer_identity_missing");
    assert_eq!(v["rule"], "identity.requirePeerIdentity");
    assert_eq!(v["requestId"], "req-1");
    assert_eq!(v["request"]["path"], "/login");
    assert_eq!(v["policyRevision"], p.revision());
    assert_eq!(v["time"], "2026-11-22T07:20:44.999Z");
    // The logged request replays to the same decision.
    let replayed: OwnedRequest = serde_json::from_value(v["request"].clone()).unwrap();
    assert_eq!(Req(replayed).eval(&p).0, Some(ReasonCode::PeerIdentityMissing));

    let body = String::from_utf8(p.deny_response().body(d.primary().map(|f| f.code), view.request_id())).unwrap();
    assert_eq!(body, "{\"code\":\"peer_identity_missing\",\"error\":\"access denied\",\"requestId\":\"req-1\"}\n");
    let quiet =
        policy(json!({"version": 1, "denyResponse": {"includeReasonCode": false, "status": 401, "message": "nope"}}));
    assert_eq!(quiet.deny_response().status, 401);
    assert_eq!(
        String::from_utf8(quiet.deny_response().body(d.primary().map(|f| f.code), Some(b"bad id\""))).unwrap(),
        "{\"error\":\"nope\"}\n"
    );
}

#[test]
fn allow_sampling_is_by_request_id() {
    let none = policy(json!({"version": 1}));
    let all = policy(json!({"version": 1, "decisionLog": {"allowSampleRate": 1.0}}));
    let half = policy(json!({"version": 1, "decisionLog": {"allowSampleRate": 0.5}}));
    let mut logged = 0;
    for i in 0..1000 {
        let r = Req::new("GET", "/").header("x-request-id", &format!("id-{i}"));
        let pairs = r.0.pairs();
        let view = r.0.view(&pairs);
        let d = none.evaluate(&view);
        assert!(!none.should_log(&d, &view));
        assert!(all.should_log(&d, &view));
        logged += usize::from(half.should_log(&d, &view));
        assert_eq!(half.should_log(&d, &view), half.should_log(&d, &view));
    }
    assert!((400..600).contains(&logged), "{logged}");
    assert!(errors(json!({"version": 1, "decisionLog": {"allowSampleRate": 1.5}}))[0]
        .starts_with("decisionLog.allowSampleRate"));
}
