//! JWT request authentication end to end, through a real Envoy 1.40 (the sidecar inbound of
//! the harness mesh), with tokens minted by the harness's stand-in identity provider (RS256,
//! ES256, EdDSA) and forged ones for every attack of issue 11.
//!
//! Each case asserts what an operator sees: the status the client got (401 for a JWT deny),
//! the reason code in the deny body and in the decision-log line, the per-code counter read
//! from Envoy's admin `/stats/prometheus`, and what the echo upstream (the application)
//! received: the forwarded claim header, never a client-supplied one, and no token.

use harness::client::{self, Request};
use harness::jwt::{cert_der, forge, now_unix_secs, x5t_s256, JwtAlg, TokenIssuer};
use harness::mesh::{ensure_wasm, Mesh, MeshOptions};
use harness::Result;
use meshguard_e2e::{decision_for, finding_counter, prom_counter, wait_prom_counter};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.mesh.local";
const AUDIENCE: &str = "api.mesh.local";

fn policy(idp: &TokenIssuer, mode: &str) -> Value {
    json!({
        "version": 1,
        "jwt": {
            "mode": mode,
            "providers": [{"id": "mesh-idp", "issuer": ISSUER, "audiences": [AUDIENCE], "jwks": idp.jwks()}],
            "rules": [
                {"id": "bound", "match": {"paths": [{"prefix": "/bound"}]}, "require": {"providers": ["mesh-idp"]},
                 "bind": {"certificate": "required"}},
                {"id": "api", "match": {"paths": [{"prefix": "/api"}]}, "require": {"providers": ["mesh-idp"]},
                 "claims": [{"name": "scope", "contains": "items:read"}]}
            ],
            "forwardClaims": [{"claim": "sub", "header": "x-jwt-sub"}],
            "stripToken": true
        }
    })
}

fn start(policy: &Value) -> Result<Mesh> {
    Mesh::start(MeshOptions { wasm: Some(ensure_wasm()?), ..MeshOptions::with_policy(policy.to_string()) })
}

fn claims(now: u64) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "scope": "items:read"})
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().into_iter().flatten() {
        if v.is_null() {
            base.as_object_mut().map(|o| o.remove(k));
        } else {
            base[k] = v.clone();
        }
    }
    base
}

/// Sends `GET path` from workload `caller` (mTLS) with these Authorization values, and a
/// spoofed forwarded-claim header.
fn send(mesh: &Mesh, caller: &str, id: &str, path: &str, tokens: &[&str]) -> Result<client::Response> {
    let mut request = Request::get(path).with_header("x-request-id", id).with_header("x-jwt-sub", "mallory");
    for t in tokens {
        request = request.with_header("authorization", format!("Bearer {t}"));
    }
    client::send(mesh.listener_addr(), Some(&mesh.tls(caller)?), &request)
}

#[test]
fn valid_tokens_pass_and_every_attack_is_denied_with_its_code() -> Result<()> {
    let idp = TokenIssuer::new(ISSUER)?;
    let mesh = start(&policy(&idp, "enforce"))?;
    let now = now_unix_secs();
    let good = claims(now);

    // Valid tokens of each algorithm: 200, the application got the verified `sub` (not the
    // client's spoofed one) and no token.
    for alg in JwtAlg::ALL {
        let id = format!("ok-{}", alg.as_str());
        let resp = send(&mesh, "web", &id, "/api/items", &[&idp.mint(alg, &good)?])?;
        assert_eq!(resp.status, 200, "{id}: {resp:?}\n{}", mesh.envoy().log_tail(20));
    }
    let received = mesh.echo().received();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.header_all("x-jwt-sub"), ["alice"], "{r:?}");
        assert_eq!(r.header("authorization"), None, "stripToken: {r:?}");
    }

    let rsa_pem = idp.rsa_public_pem()?;
    let mut attacks: Vec<(&str, Vec<String>, &str)> = vec![
        ("missing", vec![], "jwt_missing"),
        ("malformed", vec!["not.a.token".into()], "jwt_malformed"),
        ("none", vec![forge(&json!({"alg": "none", "kid": "rs256-1"}), &good, None)], "jwt_alg_not_allowed"),
        (
            "hs256-public-key",
            vec![forge(&json!({"alg": "HS256", "kid": "rs256-1"}), &good, Some(rsa_pem.as_bytes()))],
            "jwt_alg_not_allowed",
        ),
        ("rs256-vs-ec-key", vec![idp.mint_with_kid(JwtAlg::RS256, JwtAlg::ES256.kid(), &good)?], "jwt_alg_not_allowed"),
        ("unknown-kid", vec![idp.mint_with_kid(JwtAlg::ES256, "retired-7", &good)?], "jwt_unknown_key"),
        (
            "expired",
            vec![idp.mint(JwtAlg::ES256, &with(good.clone(), json!({"iat": now - 7200, "exp": now - 3600})))?],
            "jwt_expired",
        ),
        (
            "nbf-future",
            vec![idp.mint(JwtAlg::EdDSA, &with(good.clone(), json!({"nbf": now + 3600})))?],
            "jwt_not_yet_valid",
        ),
        (
            "wrong-iss",
            vec![idp.mint(JwtAlg::RS256, &with(good.clone(), json!({"iss": "https://evil.example"})))?],
            "jwt_issuer_not_allowed",
        ),
        (
            "wrong-aud",
            vec![idp.mint(JwtAlg::ES256, &with(good.clone(), json!({"aud": "other.mesh.local"})))?],
            "jwt_audience_not_allowed",
        ),
        (
            "missing-claim",
            vec![idp.mint(JwtAlg::EdDSA, &with(good.clone(), json!({"scope": null})))?],
            "jwt_claims_not_satisfied",
        ),
    ];
    let valid = idp.mint(JwtAlg::ES256, &good)?;
    attacks.push(("two-tokens", vec![valid.clone(), valid.clone()], "jwt_multiple_tokens"));

    for (id, tokens, code) in &attacks {
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let resp = send(&mesh, "web", id, "/api/items", &refs)?;
        assert_eq!(resp.status, 401, "{id}: {resp:?}");
        let body = resp.json()?;
        assert_eq!(body["code"], *code, "{id}: {body}");
        let line = decision_for(&mesh, id)?;
        assert_eq!((line["outcome"].as_str(), line["check"].as_str()), (Some("deny"), Some("jwt")), "{line}");
        assert_eq!((line["code"].as_str(), line["rule"].as_str()), (Some(*code), Some("api")), "{id}: {line}");
        let text = line.to_string();
        for t in tokens.iter().filter(|t| t.len() > 20) {
            let signature = t.rsplit('.').next().unwrap_or_default();
            assert!(
                !text.contains(t.as_str()) && (signature.is_empty() || !text.contains(signature)),
                "{id} leaks the token: {text}"
            );
        }
    }
    for (id, _, code) in &attacks {
        let expected = attacks.iter().filter(|(_, _, c)| c == code).count() as u64;
        assert_eq!(finding_counter(&mesh, "jwt", code, "enforced")?, expected, "{id}: counter for {code}");
    }
    // None of them reached the application.
    assert_eq!(mesh.echo().received().len(), 3);
    let total = 3 + attacks.len() as u64;
    assert_eq!(wait_prom_counter(&mesh, "meshguard_requests_total", total)?, total);
    assert_eq!(prom_counter(&mesh, "meshguard_denied_total")?, attacks.len() as u64);

    // RFC 8705: a token bound to web's certificate works from web, and not from batch.
    let web_cert = cert_der(&mesh.pki().workload("web")?.cert)?;
    let bound = idp.mint(JwtAlg::ES256, &with(good.clone(), json!({"cnf": {"x5t#S256": x5t_s256(&web_cert)}})))?;
    let resp = send(&mesh, "web", "bound-web", "/bound/x", &[&bound])?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", mesh.envoy().log_tail(20));
    let resp = send(&mesh, "batch", "bound-batch", "/bound/x", &[&bound])?;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert_eq!(resp.json()?["code"], "jwt_binding_mismatch");
    let line = decision_for(&mesh, "bound-batch")?;
    assert_eq!((line["code"].as_str(), line["rule"].as_str()), (Some("jwt_binding_mismatch"), Some("bound")), "{line}");
    assert!(line["request"]["peer"]["certSha256"].is_string(), "the digest Envoy gave: {line}");
    // An unbound token on the rule that requires binding.
    let resp = send(&mesh, "web", "bound-none", "/bound/x", &[&valid])?;
    assert_eq!((resp.status, resp.json()?["code"].clone()), (401, json!("jwt_binding_mismatch")));
    assert_eq!(finding_counter(&mesh, "jwt", "jwt_binding_mismatch", "enforced")?, 2);
    Ok(())
}

#[test]
fn dry_run_lets_bad_tokens_through_and_logs_would_deny() -> Result<()> {
    let idp = TokenIssuer::new(ISSUER)?;
    let mesh = start(&policy(&idp, "dry-run"))?;
    let now = now_unix_secs();
    let expired = idp.mint(JwtAlg::RS256, &with(claims(now), json!({"iat": now - 7200, "exp": now - 3600})))?;
    let resp = send(&mesh, "web", "dry-expired", "/api/items", &[&expired])?;
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = send(&mesh, "web", "dry-missing", "/api/items", &[])?;
    assert_eq!(resp.status, 200, "{resp:?}");
    for (id, code) in [("dry-expired", "jwt_expired"), ("dry-missing", "jwt_missing")] {
        let line = decision_for(&mesh, id)?;
        assert_eq!((line["outcome"].as_str(), line["enforced"].as_bool()), (Some("would_deny"), Some(false)), "{line}");
        assert_eq!(line["code"], code, "{line}");
        assert_eq!(finding_counter(&mesh, "jwt", code, "dry_run")?, 1, "{code}");
        assert_eq!(finding_counter(&mesh, "jwt", code, "enforced")?, 0, "{code}");
    }
    // Both reached the application, with the spoofed claim header removed (never forwarded
    // from the client) and no claim set (nothing verified).
    let received = mesh.echo().received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.header("x-jwt-sub"), None, "{r:?}");
    }
    Ok(())
}
