//! Credential scoping (`credentials` on egress rules) through the public API.

use super::credentials::{BUILTIN_HEADERS, BUILTIN_QUERY_PARAMS};
use crate::decision::{HeaderMutation, Outcome, Remedy};
use crate::testing::{errors, policy};
use crate::view::request::{OwnedDirection, OwnedRequest};
use crate::{Policy, ReasonCode};
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-Value-42";

fn egress(e: Value) -> Policy {
    policy(json!({"version": 1, "decisionLog": {"allowSampleRate": 1.0}, "egress": e}))
}

fn scoped(extra: Value) -> Policy {
    let mut e = json!({"allow": [
        {"id": "partner", "hosts": ["api.partner.com"], "credentials": "allow"},
        {"id": "telemetry", "hosts": ["collector.telemetry.net"], "credentials": "deny"},
        {"id": "cdn", "hosts": ["*.cdn.net"], "credentials": "strip"},
        {"id": "trial", "hosts": ["trial.example.net"], "credentials": "deny", "mode": "dry-run"},
        {"id": "silent", "hosts": ["silent.example.net"]},
    ]});
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    egress(e)
}

fn req(authority: &str, path: &str, headers: &[(&str, &str)]) -> OwnedRequest {
    OwnedRequest {
        method: "GET".into(),
        path: path.into(),
        authority: authority.into(),
        scheme: "http".into(),
        direction: OwnedDirection::Outbound,
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn decide(p: &Policy, r: &OwnedRequest) -> crate::Decision {
    let pairs = r.pairs();
    p.evaluate(&r.view(&pairs))
}

fn codes(d: &crate::Decision) -> Vec<(ReasonCode, String, bool)> {
    d.findings.iter().map(|f| (f.code, f.rule.clone(), f.enforced)).collect()
}

fn log_line(p: &Policy, r: &OwnedRequest) -> String {
    let pairs = r.pairs();
    let view = r.view(&pairs);
    let d = p.evaluate(&view);
    p.decision_log_line(&d, &view, 0)
}

#[test]
fn allow_lets_every_credential_through() {
    let p = scoped(json!({}));
    for (n, v) in [("authorization", "Bearer x"), ("cookie", "sid=1"), ("x-api-key", SECRET)] {
        let d = decide(&p, &req("api.partner.com", "/v1?access_token=x", &[(n, v)]));
        assert!(d.findings.is_empty() && d.mutations.is_empty(), "{n}: {d:?}");
    }
}

#[test]
fn deny_refuses_each_kind_of_credential() {
    let p = scoped(json!({}));
    for name in BUILTIN_HEADERS.iter().copied().chain(["Authorization", "COOKIE", "X-Api-Key"]) {
        let d = decide(&p, &req("collector.telemetry.net", "/v1/traces", &[(name, SECRET)]));
        assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsNotAllowed, "telemetry".into(), true)], "{name}");
        assert_eq!(d.outcome(), Outcome::Deny);
        assert!(d.mutations.is_empty());
    }
    // No credential: allowed, nothing logged against it.
    let d = decide(&p, &req("collector.telemetry.net", "/v1/traces?service=web", &[("x-trace", "1")]));
    assert!(d.findings.is_empty(), "{d:?}");
}

#[test]
fn credentials_in_the_query_are_refused_under_deny_and_strip() {
    let p = scoped(json!({}));
    for q in BUILTIN_QUERY_PARAMS {
        for host in ["collector.telemetry.net", "img.cdn.net"] {
            let d = decide(&p, &req(host, &format!("/x?a=1&{q}={SECRET}"), &[]));
            assert_eq!(d.findings.len(), 1, "{host} {q}: {d:?}");
            assert_eq!(d.findings[0].code, ReasonCode::EgressCredentialsInQuery, "{host} {q}");
            assert_eq!(d.outcome(), Outcome::Deny, "{host} {q}");
        }
    }
    for target in [
        "/x?ACCESS_TOKEN=1",
        "/x?acc%65ss_token=1",
        "/x?acc%45SS_token",
        "/x?a=1;key=2",
        "/x?X-Amz-Signature=abc&X-Amz-Credential=k",
    ] {
        let d = decide(&p, &req("collector.telemetry.net", target, &[]));
        assert_eq!(d.primary().map(|f| f.code), Some(ReasonCode::EgressCredentialsInQuery), "{target}");
    }
    // Not credentials: other names, values that look like names, fragments, paths.
    for target in [
        "/x?keys=1",
        "/x?monkey=1",
        "/x?q=access_token",
        "/x#access_token=1",
        "/x#f?access_token=1",
        "/x?a=1#access_token=1",
        "/access_token/x",
        "/x?%zz=1",
        "/x?",
    ] {
        let d = decide(&p, &req("collector.telemetry.net", target, &[]));
        assert!(d.findings.is_empty(), "{target}: {d:?}");
    }
    // Allow: a query credential goes through.
    assert!(decide(&p, &req("api.partner.com", "/x?key=1", &[])).findings.is_empty());
}

#[test]
fn strip_removes_every_credential_header_once_and_logs_names_only() {
    let p = scoped(json!({}));
    let r = req(
        "img.cdn.net",
        "/assets/a.png",
        &[
            ("Authorization", "Bearer abc"),
            ("cookie", "sid=1"),
            ("COOKIE", "b=2"),
            ("x-goog-api-key", SECRET),
            ("accept", "*/*"),
        ],
    );
    let d = decide(&p, &r);
    assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsStripped, "cdn".into(), true)]);
    assert_eq!(d.findings[0].remedy, Remedy::Strip);
    assert_eq!(d.outcome(), Outcome::Allow);
    let names: Vec<&[u8]> = d.mutations.iter().map(HeaderMutation::name).collect();
    assert_eq!(names, vec![&b"authorization"[..], b"cookie", b"x-goog-api-key"]);
    assert!(d.mutations.iter().all(|m| matches!(m, HeaderMutation::Remove { .. })));

    let line = log_line(&p, &r);
    assert!(!line.contains(SECRET) && !line.contains("Bearer abc") && !line.contains("sid=1"), "{line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["code"], "egress_credentials_stripped");
    assert_eq!(v["headerMutations"][2], json!({"op": "remove", "name": "x-goog-api-key"}));

    // The stripped request passes again untouched.
    let clean = req("img.cdn.net", "/assets/a.png", &[("accept", "*/*")]);
    assert!(decide(&p, &clean).findings.is_empty());
}

#[test]
fn a_strip_and_a_hygiene_strip_of_the_same_header_make_one_mutation() {
    let p = policy(json!({"version": 1,
        "hygiene": {"guards": {"proxyAuthorization": {"action": "strip"}}},
        "egress": {"allow": [{"id": "cdn", "hosts": ["*.cdn.net"], "credentials": "strip"}]}}));
    let d = decide(&p, &req("img.cdn.net", "/", &[("proxy-authorization", "Basic eA==")]));
    let found: Vec<ReasonCode> = d.findings.iter().map(|f| f.code).collect();
    assert_eq!(found, vec![ReasonCode::HygieneProxyAuthorization, ReasonCode::EgressCredentialsStripped]);
    assert_eq!(d.mutations, vec![HeaderMutation::Remove { name: b"proxy-authorization".to_vec() }]);
}

#[test]
fn dry_run_per_rule_and_per_section_only_logs() {
    let p = scoped(json!({}));
    let d = decide(&p, &req("trial.example.net", "/", &[("authorization", "Basic eDp5")]));
    assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsNotAllowed, "trial".into(), false)]);
    assert_eq!(d.outcome(), Outcome::WouldDeny);

    let p = scoped(json!({"credentials": {"mode": "dry-run"}}));
    let d = decide(&p, &req("collector.telemetry.net", "/", &[("authorization", "Basic eDp5")]));
    assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsNotAllowed, "telemetry".into(), false)]);
    assert_eq!(d.outcome(), Outcome::WouldDeny);
    let d = decide(&p, &req("img.cdn.net", "/", &[("cookie", "a=1")]));
    assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsStripped, "cdn".into(), false)]);
    assert!(d.mutations.is_empty(), "a strip in dry-run strips nothing");
    // The host part still enforces.
    assert_eq!(decide(&p, &req("evil.net", "/", &[])).outcome(), Outcome::Deny);

    let p = policy(
        json!({"version": 1, "egress": {"mode": "dry-run", "allow": [{"id": "t", "hosts": ["t.net"], "credentials": "deny"}]}}),
    );
    let d = decide(&p, &req("t.net", "/", &[("cookie", "a=1")]));
    assert_eq!(d.outcome(), Outcome::WouldDeny);
}

#[test]
fn the_default_is_allow_and_the_section_can_change_it() {
    // Existing policies keep working: a rule that says nothing lets credentials through.
    let p = scoped(json!({}));
    assert!(decide(&p, &req("silent.example.net", "/?key=1", &[("authorization", "Bearer x")])).findings.is_empty());
    // Fail-safe, one line: rules that say nothing deny; a rule that says allow still allows.
    let p = scoped(json!({"credentials": {"default": "deny"}}));
    let d = decide(&p, &req("silent.example.net", "/", &[("authorization", "Bearer x")]));
    assert_eq!(codes(&d), vec![(ReasonCode::EgressCredentialsNotAllowed, "silent".into(), true)]);
    assert!(decide(&p, &req("api.partner.com", "/", &[("authorization", "Bearer x")])).findings.is_empty());
    let p = scoped(json!({"credentials": {"default": "strip"}}));
    let d = decide(&p, &req("silent.example.net", "/", &[("authorization", "Bearer x")]));
    assert_eq!(d.findings[0].code, ReasonCode::EgressCredentialsStripped);
}

#[test]
fn configured_names_are_credentials_and_never_logged() {
    let p = scoped(json!({"credentials": {"headers": ["X-Tenant-Key"], "queryParams": ["Tenant_Key"]}}));
    let r = req("collector.telemetry.net", "/", &[("x-tenant-key", SECRET)]);
    assert_eq!(decide(&p, &r).primary().map(|f| f.code), Some(ReasonCode::EgressCredentialsNotAllowed));
    let line = log_line(&p, &r);
    assert!(!line.contains(SECRET), "{line}");
    let q = req("collector.telemetry.net", &format!("/?tenant_key={SECRET}"), &[]);
    assert_eq!(decide(&p, &q).primary().map(|f| f.code), Some(ReasonCode::EgressCredentialsInQuery));
    let line = log_line(&p, &q);
    assert!(!line.contains(SECRET), "{line}");
    // Every built-in credential header is redacted in decision logs, denied or not.
    for name in BUILTIN_HEADERS {
        let line = log_line(&p, &req("api.partner.com", "/", &[(name, SECRET)]));
        assert!(!line.contains(SECRET), "{name}: {line}");
    }
}

#[test]
fn the_first_admitting_rule_decides() {
    let p = egress(json!({"allow": [
        {"id": "uploads", "hosts": ["files.example.com"], "methods": ["PUT"], "credentials": "allow"},
        {"id": "reads", "hosts": ["*.example.com"], "credentials": "deny"},
    ]}));
    let mut r = req("files.example.com", "/", &[("authorization", "Bearer x")]);
    r.method = "PUT".into();
    assert!(decide(&p, &r).findings.is_empty());
    r.method = "GET".into();
    assert_eq!(decide(&p, &r).primary().map(|f| f.rule.clone()), Some("reads".into()));
}

#[test]
fn userinfo_is_never_a_destination_and_tls_is_out_of_reach() {
    let p = scoped(json!({}));
    let d = decide(&p, &req("user:pass@api.partner.com", "/", &[]));
    assert_eq!(d.primary().map(|f| f.code), Some(ReasonCode::EgressInvalidHost));
    // A refused destination is not judged for credentials too.
    let d = decide(&p, &req("evil.net", "/", &[("authorization", "x")]));
    assert_eq!(codes(&d), vec![(ReasonCode::EgressHostNotAllowed, "egress.allow".into(), true)]);
    // TLS passthrough: the SNI is admitted; headers are not visible.
    let c = crate::view::connection::OwnedConnection {
        sni: Some("collector.telemetry.net".into()),
        destination_port: Some(443),
        direction: OwnedDirection::Outbound,
        ..Default::default()
    };
    assert!(p.evaluate_connection(&c.view()).findings.is_empty());
}

#[test]
fn bad_names_and_actions_are_refused_with_their_paths() {
    let e = errors(json!({"version": 1, "egress": {
        "credentials": {"headers": ["ok", "bad name", ""], "queryParams": ["a=b", "ok"]},
        "allow": [{"id": "a", "hosts": ["a.com"]}]}}));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("egress.credentials.headers[1]"), "{e:?}");
    assert!(e[1].starts_with("egress.credentials.headers[2]"), "{e:?}");
    assert!(e[2].starts_with("egress.credentials.queryParams[0]"), "{e:?}");
    let e =
        errors(json!({"version": 1, "egress": {"allow": [{"id": "a", "hosts": ["a.com"], "credentials": "maybe"}]}}));
    assert!(e.iter().any(|m| m.contains("maybe")), "{e:?}");
    let e = errors(json!({"version": 1, "egress": {"credentials": {"zz": 1}}}));
    assert!(e.iter().any(|m| m.contains("zz")), "{e:?}");
}

#[test]
fn built_in_names_are_lowercase_and_unique() {
    for list in [BUILTIN_HEADERS, BUILTIN_QUERY_PARAMS] {
        let mut seen = std::collections::HashSet::new();
        for n in list {
            assert_eq!(n.to_ascii_lowercase(), *n);
            assert!(seen.insert(n), "{n} twice");
            assert!(n.len() <= 64);
        }
    }
}

#[test]
fn configured_names_are_within_the_budget() {
    let names: Vec<String> = (0..65).map(|i| format!("x-key-{i}")).collect();
    let e = errors(
        json!({"version": 1, "egress": {"credentials": {"headers": names}, "allow": [{"id": "a", "hosts": ["a.com"]}]}}),
    );
    assert!(e.iter().any(|m| m.starts_with("egress.credentials.headers[64]") && m.contains("budget")), "{e:?}");
    let names: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    policy(
        json!({"version": 1, "egress": {"credentials": {"queryParams": names}, "allow": [{"id": "a", "hosts": ["a.com"]}]}}),
    );
}
