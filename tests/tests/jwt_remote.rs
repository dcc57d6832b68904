//! Remote JWKS and key rotation end to end (issue 11, "Remote keys and rotation"): the filter
//! fetches the provider's JWKS through an Envoy cluster pointed at the harness's stand-in
//! identity provider ([`harness::idp::JwksServer`]), every second.
//!
//! Before a first good fetch (the provider answers 500) a token is denied with
//! `jwt_keys_unavailable`; once the provider serves key A, A's tokens pass; after a rotation
//! (A removed, B added) A's tokens are denied with `jwt_unknown_key` and B's pass; with the
//! provider serving a key set the key reader refuses (`kty: oct`), or down, the last good key
//! set stays (B still passes) and the failure counters climb. A new configuration with the
//! same source keeps the keys; one whose source moved starts without.
//! Every Envoy worker's VM fetches for itself, so each expectation is polled (with a
//! deadline) until it holds for several requests in a row.

use std::time::{Duration, Instant};

use harness::client::{self, Request};
use harness::idp::JwksServer;
use harness::jwt::{now_unix_secs, JwtAlg, TokenIssuer};
use harness::mesh::{ensure_wasm, Mesh, MeshOptions, PolicyUpdate};
use harness::Result;
use meshguard_e2e::{decision_for, finding_counter};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.mesh.local";
const AUDIENCE: &str = "api.mesh.local";
const CLUSTER: &str = "outbound|443||idp.mesh.local";
/// Long enough for every VM (main thread and workers) to fetch a few times at 1 s.
const DEADLINE: Duration = Duration::from_secs(20);
/// Requests in a row that must all show the expected outcome (they spread over the workers).
const IN_A_ROW: usize = 6;

fn policy() -> Value {
    json!({
        "version": 1,
        "jwt": {
            "providers": [{"id": "idp", "issuer": ISSUER, "audiences": [AUDIENCE],
                           "jwks": {"remote": {"cluster": CLUSTER, "path": "/.well-known/jwks.json", "refreshSeconds": 1}}}],
            "rules": [{"id": "api", "match": {"paths": [{"prefix": "/api"}]}, "require": {"providers": ["idp"]}}]
        }
    })
}

fn jwks(idp: &TokenIssuer, algs: &[JwtAlg]) -> Value {
    json!({"keys": algs.iter().map(|&a| idp.public_jwk(a)).collect::<Vec<_>>()})
}

/// (status, reason code of a deny body) of `GET /api/items` with this token.
fn send(mesh: &Mesh, id: &str, token: &str) -> Result<(u16, Option<String>)> {
    send_to(mesh, "/api/items", id, token)
}

fn send_to(mesh: &Mesh, path: &str, id: &str, token: &str) -> Result<(u16, Option<String>)> {
    let request =
        Request::get(path).with_header("x-request-id", id).with_header("authorization", format!("Bearer {token}"));
    let resp = client::send(mesh.listener_addr(), Some(&mesh.tls("web")?), &request)?;
    let code = if resp.status == 200 { None } else { resp.json()?["code"].as_str().map(str::to_string) };
    Ok((resp.status, code))
}

/// Polls until `IN_A_ROW` requests in a row with `token` get `want`; the last request's id.
fn settle(mesh: &Mesh, label: &str, token: &str, want: (u16, Option<&str>)) -> Result<String> {
    settle_at(mesh, "/api/items", label, token, want)
}

fn settle_at(mesh: &Mesh, path: &str, label: &str, token: &str, want: (u16, Option<&str>)) -> Result<String> {
    let deadline = Instant::now() + DEADLINE;
    let (mut in_a_row, mut n) = (0, 0);
    loop {
        n += 1;
        let id = format!("{label}-{n}");
        let got = send_to(mesh, path, &id, token)?;
        if (got.0, got.1.as_deref()) == want {
            in_a_row += 1;
            if in_a_row == IN_A_ROW {
                return Ok(id);
            }
        } else {
            in_a_row = 0;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: still {got:?} after {DEADLINE:?}, want {want:?}\n{}",
            mesh.envoy().log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// `meshguard_jwks_fetch_total{provider="idp",result=..}`, labelled by the mesh's stats tags
/// (`envoy-config/stats-tags.yaml`); 0 when absent.
fn fetches(mesh: &Mesh, result: &str) -> Result<u64> {
    let text = mesh.envoy().stats_prometheus()?;
    let (provider, result) = ("provider=\"idp\"".to_string(), format!("result=\"{result}\""));
    for line in text.lines().filter(|l| l.starts_with("meshguard_jwks_fetch_total{")) {
        if line.contains(&provider) && line.contains(&result) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            return Ok(value.parse::<f64>()? as u64);
        }
    }
    Ok(0)
}

fn failed_fetches(mesh: &Mesh) -> Result<u64> {
    Ok(fetches(mesh, "http_error")? + fetches(mesh, "no_response")?)
}

#[test]
fn remote_keys_are_fetched_rotated_and_kept_when_the_provider_fails() -> Result<()> {
    let idp = TokenIssuer::new(ISSUER)?;
    let mut server = JwksServer::start(500)?;
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        extra_clusters: vec![(CLUSTER.to_string(), server.addr())],
        ..MeshOptions::with_policy(policy().to_string())
    })?;
    let now = now_unix_secs();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600});
    let token_a = idp.mint(JwtAlg::ES256, &claims)?;
    let token_b = idp.mint(JwtAlg::EdDSA, &claims)?;

    // The provider answers 500: no key set yet, fail closed.
    let id = settle(&mesh, "unavailable", &token_a, (401, Some("jwt_keys_unavailable")))?;
    let line = decision_for(&mesh, &id)?;
    assert_eq!((line["code"].as_str(), line["rule"].as_str()), (Some("jwt_keys_unavailable"), Some("api")), "{line}");
    assert!(server.requests() > 0, "the filter asked the provider");
    assert!(failed_fetches(&mesh)? > 0, "the 500s were counted");
    assert_eq!(fetches(&mesh, "ok")?, 0);
    assert!(finding_counter(&mesh, "jwt", "jwt_keys_unavailable", "enforced")? >= IN_A_ROW as u64);

    // Key A served: A's tokens pass once every VM has fetched it.
    server.set_jwks(&jwks(&idp, &[JwtAlg::ES256]));
    settle(&mesh, "a-ok", &token_a, (200, None))?;
    assert!(fetches(&mesh, "ok")? > 0);
    let id = settle(&mesh, "b-before", &token_b, (401, Some("jwt_unknown_key")))?;
    assert_eq!(decision_for(&mesh, &id)?["code"], "jwt_unknown_key");

    // Rotation: A removed, B added. A's (cached) tokens are refused after the refresh.
    server.set_jwks(&jwks(&idp, &[JwtAlg::EdDSA]));
    let id = settle(&mesh, "a-rotated", &token_a, (401, Some("jwt_unknown_key")))?;
    assert_eq!(decision_for(&mesh, &id)?["code"], "jwt_unknown_key");
    settle(&mesh, "b-ok", &token_b, (200, None))?;

    // The provider serves a key set the key reader refuses (a symmetric key): a failed fetch
    // too; B stays.
    server.set_jwks(&json!({"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}));
    let deadline = Instant::now() + DEADLINE;
    while fetches(&mesh, "invalid")? < 2 {
        assert!(Instant::now() < deadline, "no invalid fetch counted\n{}", mesh.envoy().log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    settle(&mesh, "b-invalid", &token_b, (200, None))?;
    let log = mesh.envoy().log_contents();
    assert!(
        log.contains("result=invalid (jwks.keys[0].kty: symmetric keys (kty: oct) are refused"),
        "{}",
        mesh.envoy().log_tail(20)
    );
    assert!(!log.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQ"), "the served secret never reaches the log");

    // The provider goes down: fetches fail, the last good set (B) stays.
    let failed_before = failed_fetches(&mesh)?;
    let ok_before = fetches(&mesh, "ok")?;
    server.stop();
    let deadline = Instant::now() + DEADLINE;
    while failed_fetches(&mesh)? < failed_before + 3 {
        assert!(Instant::now() < deadline, "no failed fetch counted\n{}", mesh.envoy().log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in 0..IN_A_ROW {
        assert_eq!(send(&mesh, &format!("b-down-{n}"), &token_b)?, (200, None), "B kept with the provider down");
        assert_eq!(
            send(&mesh, &format!("a-down-{n}"), &token_a)?,
            (401, Some("jwt_unknown_key".to_string())),
            "A still refused"
        );
    }
    assert_eq!(fetches(&mesh, "ok")?, ok_before, "no good fetch while the provider is down");
    let log = mesh.envoy().log_contents();
    assert!(log.contains("meshguard: jwks fetch failed provider=idp"), "the failure is logged");
    assert!(log.contains("keeping the last good key set"), "{}", mesh.envoy().log_tail(30));
    assert!(!log.contains(&token_a) && !log.contains(&token_b), "no token in Envoy's log");

    // A new configuration with the same provider (same cluster and path) keeps B, with the
    // provider still down (no fetch can succeed): its new rule on /admin verifies B's token
    // (and then wants a claim B lacks) instead of denying with jwt_keys_unavailable. The old
    // configuration has no /admin rule and would let the request through.
    let mut same_source = policy();
    if let Some(rules) = same_source["jwt"]["rules"].as_array_mut() {
        rules
            .push(json!({"id": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "require": {"providers": ["idp"]},
                          "claims": [{"name": "scope", "contains": "admin"}]}));
    }
    assert_eq!(mesh.update_policy(&same_source.to_string())?, PolicyUpdate::Applied);
    let id = settle_at(&mesh, "/admin/x", "b-carried", &token_b, (401, Some("jwt_claims_not_satisfied")))?;
    assert_eq!(decision_for(&mesh, &id)?["rule"], "admin");
    settle(&mesh, "b-carried-api", &token_b, (200, None))?;
    // A provider whose source moved starts without keys (and the provider is down).
    let mut moved = policy();
    moved["jwt"]["providers"][0]["jwks"]["remote"]["path"] = json!("/keys");
    assert_eq!(mesh.update_policy(&moved.to_string())?, PolicyUpdate::Applied);
    settle(&mesh, "b-moved", &token_b, (401, Some("jwt_keys_unavailable")))?;
    Ok(())
}

#[test]
fn an_unknown_cluster_is_a_counted_failure_and_fails_closed() -> Result<()> {
    let idp = TokenIssuer::new(ISSUER)?;
    let mut doc = policy();
    doc["jwt"]["providers"][0]["jwks"]["remote"]["cluster"] = json!("outbound|443||nowhere.mesh.local");
    let mesh = Mesh::start(MeshOptions { wasm: Some(ensure_wasm()?), ..MeshOptions::with_policy(doc.to_string()) })?;
    let now = now_unix_secs();
    let token = idp.mint(JwtAlg::ES256, &json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": now + 600}))?;
    let deadline = Instant::now() + DEADLINE;
    let failed = || -> Result<u64> { Ok(fetches(&mesh, "dispatch_failed")? + failed_fetches(&mesh)?) };
    while failed()? < 2 {
        assert!(Instant::now() < deadline, "no failed fetch counted\n{}", mesh.envoy().log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    settle(&mesh, "nowhere", &token, (401, Some("jwt_keys_unavailable")))?;
    assert_eq!(fetches(&mesh, "ok")?, 0);
    let log = mesh.envoy().log_contents();
    assert!(
        log.contains("meshguard: jwks fetch failed provider=idp cluster=outbound|443||nowhere.mesh.local"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "no trap: {}", mesh.envoy().log_tail(30));
    Ok(())
}
