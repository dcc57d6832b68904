//! Every attack of issue 11, with tokens minted here: RS256 (a fixed test key, since RSA key
//! generation is slow in debug builds), ES256 and EdDSA (generated), and raw Ed25519 signing
//! for headers jwt-simple would never write (`crit`, `jku`, `jwk`, `alg` lies...).

use std::sync::OnceLock;

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::decision::Decision;

pub(crate) const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";
const AUD: &str = "api.example.com";
const PEER: &str = "spiffe://cluster.local/ns/web/sa/web";
/// SHA-256 of the peer certificate, as Envoy gives it (hex) and as a token carries it.
const PEER_DIGEST_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const PEER_X5T: &str = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg";

pub(crate) struct Keys {
    pub rsa: RS256KeyPair,
    pub rsa_other: RS256KeyPair,
    pub es: ES256KeyPair,
    pub ed: Ed25519KeyPair,
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: RS256KeyPair::from_pem(include_str!("testdata/rsa-a.pem")).unwrap().with_key_id("rsa1"),
        rsa_other: RS256KeyPair::from_pem(include_str!("testdata/rsa-b.pem")).unwrap().with_key_id("rsa1"),
        es: ES256KeyPair::generate().with_key_id("ec1"),
        ed: Ed25519KeyPair::from_bytes(
            ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32])).as_ref(),
        )
        .unwrap()
        .with_key_id("ed1"),
    })
}

pub(crate) fn jwk(json: String, kid: &str) -> Value {
    let mut v: Value = serde_json::from_str(&json).unwrap();
    v["kid"] = kid.into();
    v
}

pub(crate) fn jwks() -> Value {
    let k = keys();
    json!({"keys": [
        jwk(k.rsa.public_key().to_jwk(), "rsa1"),
        jwk(k.es.public_key().to_jwk(), "ec1"),
        jwk(k.ed.public_key().to_jwk(), "ed1"),
    ]})
}

pub(crate) fn claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW - 10, "exp": NOW + 300, "scope": "read admin"})
}

/// A token signed by jwt-simple with `alg` (RS256, ES256, EdDSA) over exactly `payload`.
pub(crate) fn mint(alg: &str, payload: &Value) -> String {
    let mut c = Claims::with_custom_claims(payload.clone(), Duration::from_secs(0));
    (c.issued_at, c.expires_at, c.invalid_before) = (None, None, None);
    let k = keys();
    match alg {
        "RS256" => k.rsa.sign(c).unwrap(),
        "RS256-other" => k.rsa_other.sign(c).unwrap(),
        "ES256" => k.es.sign(c).unwrap(),
        "EdDSA" => k.ed.sign(c).unwrap(),
        other => panic!("{other}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

/// A token with any header, validly signed with the Ed25519 key `ed1`.
fn mint_raw(header: &Value, payload: &Value) -> String {
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let sk = ed25519_compact::SecretKey::from_slice(&keys().ed.to_bytes()).unwrap();
    format!("{signed}.{}", b64(sk.sign(signed.as_bytes(), None).as_ref()))
}

pub(crate) fn policy() -> Value {
    json!({
        "providers": [
            {"id": "corp", "issuer": ISS, "audiences": [AUD, "other.example.com"], "jwks": jwks()},
            {"id": "partner", "issuer": "https://partner.example", "audiences": [AUD],
             "jwks": {"keys": [jwk(keys().es.public_key().to_jwk(), "p1")]}},
            {"id": "remote", "issuer": "https://remote.example", "audiences": [AUD],
             "jwks": {"remote": {"cluster": "outbound|443||idp", "path": "/jwks.json"}}}
        ],
        "rules": [
            {"id": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "require": {"providers": ["corp"]},
             "claims": [{"name": "scope", "contains": "admin"}, {"name": "org.tier", "equals": "gold"}]},
            {"id": "bound", "match": {"paths": [{"prefix": "/bound"}]}, "require": {"providers": ["corp"]},
             "bind": {"certificate": "required", "peerIdentity": {"claim": "azp", "patterns": true}}},
            {"id": "public", "match": {"paths": [{"prefix": "/public"}]}, "optional": true},
            {"id": "remote", "match": {"paths": [{"prefix": "/remote"}]}, "require": {"providers": ["remote"]}},
            {"id": "shadow", "mode": "dry-run", "match": {"paths": [{"prefix": "/api/new"}]}, "require": {"providers": ["partner"]}},
            {"id": "api", "match": {"paths": [{"prefix": "/api"}]}, "require": {"providers": ["corp", "partner"]}}
        ],
        "tokenSources": [{"header": "authorization", "prefix": "Bearer "}, {"queryParam": "access_token"}],
        "forwardClaims": [{"claim": "sub", "header": "x-jwt-sub"}, {"claim": "org.tier", "header": "x-jwt-tier"}],
        "stripToken": true
    })
}

pub(crate) fn compile(doc: Value) -> Result<JwtCheck, ConfigErrors> {
    let doc: JwtDoc = serde_json::from_value(doc).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push("jwt", e.to_string());
        errs
    })?;
    let mut errs = ConfigErrors::default();
    let check = JwtCheck::compile_section(&doc, Mode::Enforce, "jwt", &mut errs);
    if errs.is_empty() {
        Ok(check)
    } else {
        Err(errs)
    }
}

/// One compiled check per test thread: the cache is per VM, and a VM is one thread.
fn check() -> &'static JwtCheck {
    thread_local!(static CHECK: &'static JwtCheck = Box::leak(Box::new(compile(policy()).unwrap())));
    CHECK.with(|c| *c)
}

pub(crate) struct Req<'a> {
    auth: Vec<String>,
    path: &'a str,
    peer: Option<&'a str>,
    digest: Option<&'a str>,
    now: u64,
}

pub(crate) fn req(path: &str) -> Req<'_> {
    Req { auth: vec![], path, peer: Some(PEER), digest: Some(PEER_DIGEST_HEX), now: NOW }
}

impl Req<'_> {
    pub(crate) fn bearer(mut self, token: &str) -> Self {
        self.auth.push(format!("Bearer {token}"));
        self
    }

    pub(crate) fn eval_with(&self, check: &JwtCheck) -> Decision {
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", self.path.as_bytes()),
            (b":authority", b"api.example.com"),
            (b":scheme", b"https"),
        ];
        headers.extend(self.auth.iter().map(|a| (&b"authorization"[..], a.as_bytes())));
        let peer = crate::view::request::Peer { mtls: self.peer.is_some(), uri_san: self.peer.map(str::as_bytes) };
        let input = RequestView::new(&headers, peer, crate::view::request::Direction::Inbound)
            .with_peer_cert_sha256(self.digest.map(str::as_bytes))
            .with_now(self.now);
        let mut d = Decision::default();
        check.evaluate_request(&input, &mut d);
        d
    }

    /// The reason code (None: allowed), checking the finding's shape.
    fn code(&self) -> Option<&'static str> {
        code_of(&self.eval_with(check()))
    }
}

pub(crate) fn code_of(d: &Decision) -> Option<&'static str> {
    assert!(d.findings.len() <= 1, "{d:?}");
    d.findings.first().map(|f| {
        assert_eq!(f.check, Check::Jwt);
        assert_eq!(f.remedy, Remedy::Reject);
        f.code.as_str()
    })
}

pub(crate) fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

#[test]
fn valid_tokens_of_each_algorithm_pass() {
    for alg in ["RS256", "ES256", "EdDSA"] {
        let t = mint(alg, &claims());
        assert_eq!(req("/api/x").bearer(&t).code(), None, "{alg}");
        // Twice: the second is a cache hit and decides the same.
        assert_eq!(req("/api/x").bearer(&t).code(), None, "{alg} cached");
    }
    let raw = mint_raw(&json!({"alg": "EdDSA", "kid": "ed1", "typ": "JWT"}), &claims());
    assert_eq!(req("/api/x").bearer(&raw).code(), None, "the raw minter itself is valid");
}

#[test]
fn missing_and_optional() {
    assert_eq!(req("/api/x").code(), Some("jwt_missing"));
    // Another scheme is not a token.
    let mut r = req("/api/x");
    r.auth.push("Basic YWxpY2U6cHc=".into());
    assert_eq!(r.code(), Some("jwt_missing"));
    assert_eq!(req("/public/x").code(), None, "optional: no token is fine");
    assert_eq!(req("/public/x").bearer("x.y.z").code(), Some("jwt_malformed"), "optional: a bad token is not");
    assert_eq!(req("/elsewhere").bearer("garbage").code(), None, "no rule: default allow");
    // The bearer scheme is case-insensitive.
    let mut r = req("/api/x");
    r.auth.push(format!("bearer {}", mint("ES256", &claims())));
    assert_eq!(r.code(), None);
}

#[test]
fn structure() {
    let t = mint("ES256", &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for (bad, why) in [
        (format!("{h}.{p}"), "two segments"),
        (format!("{h}.{p}.{s}.{s}"), "four segments"),
        (format!("{h}.{p}."), "empty signature"),
        (format!(".{p}.{s}"), "empty header"),
        (format!("{h}=.{p}.{s}"), "padding"),
        (format!("{h}.{p}.{s}="), "padded signature"),
        (format!("{h}.{}+.{s}", &p[..p.len() - 1]), "standard alphabet"),
        (format!("{h}.{p} .{s}"), "space"),
        (format!("{}.{p}.{s}", b64(b"[1]")), "header not an object"),
        (format!("{h}.{}.{s}", b64(b"not json")), "payload not JSON"),
        (" ".to_string(), "blank"),
    ] {
        assert_eq!(req("/api/x").bearer(&bad).code(), Some("jwt_malformed"), "{why}");
    }
    // Registered claims of the wrong type.
    for patch in
        [json!({"exp": "tomorrow"}), json!({"iss": 7}), json!({"aud": [1]}), json!({"nbf": -5}), json!({"sub": {}})]
    {
        let t = mint("ES256", &with(claims(), patch.clone()));
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_malformed"), "{patch}");
    }
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let big = "a".repeat(8193);
    assert_eq!(req("/api/x").bearer(&big).code(), Some("jwt_too_large"));
    let t = mint("ES256", &with(claims(), json!({"pad": "x".repeat(9000)})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_too_large"));
}

#[test]
fn two_tokens_are_denied() {
    let t = mint("ES256", &claims());
    assert_eq!(req("/api/x").bearer(&t).bearer(&t).code(), Some("jwt_multiple_tokens"));
    // Two Authorization headers as Envoy hands them over: folded into one value.
    let folded = format!("{t},Bearer {t}");
    assert_eq!(req("/api/x").bearer(&folded).code(), Some("jwt_multiple_tokens"));
    let folded = format!("{t}, Bearer {t}");
    assert_eq!(req("/api/x").bearer(&folded).code(), Some("jwt_multiple_tokens"));
    // A value that is not a token (no prefix) beside one token is not a second token.
    assert_eq!(req("/api/x").bearer(&format!("{t}, Basic YTpi")).code(), None);
    let path = format!("/api/x?access_token={t}");
    assert_eq!(req(&path).bearer(&t).code(), Some("jwt_multiple_tokens"));
    let path = format!("/api/x?a=1&access_token={t}&access_token={t}");
    assert_eq!(req(&path).code(), Some("jwt_multiple_tokens"));
    let path = format!("/api/x?a=1&access_token={t}");
    assert_eq!(req(&path).code(), None, "one token in the query is fine");
}

#[test]
fn algorithm_confusion_is_impossible() {
    let c = claims();
    // alg none, with and without a signature.
    let none_header = b64(json!({"alg": "none", "kid": "ed1"}).to_string().as_bytes());
    let body = b64(c.to_string().as_bytes());
    assert_eq!(req("/api/x").bearer(&format!("{none_header}.{body}.")).code(), Some("jwt_alg_not_allowed"));
    assert_eq!(req("/api/x").bearer(&format!("{none_header}.{body}.AAAA")).code(), Some("jwt_alg_not_allowed"));
    for alg in ["None", "NONE", "HS256", "HS384", "HS512", "ES256K", "RS1", ""] {
        let t = mint_raw(&json!({"alg": alg, "kid": "rsa1"}), &c);
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_alg_not_allowed"), "{alg}");
    }
    // HS256 with the RSA public key (as PEM, and as the JWK's n) as the HMAC secret.
    let pem = keys().rsa.public_key().to_pem().unwrap();
    for secret in [pem.as_bytes().to_vec(), keys().rsa.public_key().to_der().unwrap()] {
        let hs = HS256Key::from_bytes(&secret).with_key_id("rsa1");
        let mut cl = Claims::with_custom_claims(c.clone(), Duration::from_secs(0));
        (cl.issued_at, cl.expires_at, cl.invalid_before) = (None, None, None);
        let t = hs.authenticate(cl).unwrap();
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_alg_not_allowed"));
    }
    // An RS256 token naming the EC key, an ES256 token naming the RSA key, EdDSA naming EC.
    let rs = mint("RS256", &c);
    let rs_as_ec = rs.replacen(
        rs.split('.').next().unwrap(),
        &b64(json!({"alg": "RS256", "kid": "ec1", "typ": "JWT"}).to_string().as_bytes()),
        1,
    );
    assert_eq!(req("/api/x").bearer(&rs_as_ec).code(), Some("jwt_alg_not_allowed"));
    let t = mint_raw(&json!({"alg": "ES256", "kid": "rsa1"}), &c);
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_alg_not_allowed"));
    let t = mint_raw(&json!({"alg": "EdDSA", "kid": "ec1"}), &c);
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_alg_not_allowed"));
    // A provider restricted to ES256 refuses EdDSA even with a valid key for it.
    let mut doc = policy();
    doc["providers"][0]["algorithms"] = json!(["ES256"]);
    let strict = compile(doc).unwrap();
    assert_eq!(code_of(&req("/api/x").bearer(&mint("EdDSA", &c)).eval_with(&strict)), Some("jwt_alg_not_allowed"));
    assert_eq!(code_of(&req("/api/x").bearer(&mint("ES256", &c)).eval_with(&strict)), None);
}

#[test]
fn keys_come_from_the_policy_only() {
    let c = claims();
    // A kid naming no key of the provider.
    let t = mint_raw(&json!({"alg": "EdDSA", "kid": "nope"}), &c);
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_unknown_key"));
    // A kid of another provider's key.
    let t = mint_raw(&json!({"alg": "ES256", "kid": "p1"}), &c);
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_unknown_key"));
    // An attacker's key, embedded or pointed to, is never used: signed with another key, the
    // header naming it in every way, the token does not verify.
    let attacker = Ed25519KeyPair::generate();
    let attacker_jwk: Value = serde_json::from_str(&attacker.public_key().to_jwk()).unwrap();
    let mut cl = Claims::with_custom_claims(c.clone(), Duration::from_secs(0));
    (cl.issued_at, cl.expires_at, cl.invalid_before) = (None, None, None);
    let forged = attacker.with_key_id("ed1").sign(cl).unwrap();
    assert_eq!(req("/api/x").bearer(&forged).code(), Some("jwt_signature_invalid"));
    let payload = forged.split('.').nth(1).unwrap().to_string();
    let sig = forged.split('.').nth(2).unwrap().to_string();
    for extra in [
        json!({"jwk": attacker_jwk}),
        json!({"jku": "https://evil.example/jwks.json"}),
        json!({"x5u": "https://evil.example/cert.pem"}),
        json!({"x5c": ["MIIBszCCAVmgAwIBAgIU"]}),
    ] {
        let mut h = json!({"alg": "EdDSA", "kid": "ed1"});
        h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let t = format!("{}.{payload}.{sig}", b64(h.to_string().as_bytes()));
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_signature_invalid"), "{extra}");
    }
    // Without kid: fine with exactly one key for the algorithm...
    let t = mint_raw(&json!({"alg": "EdDSA"}), &c);
    assert_eq!(req("/api/x").bearer(&t).code(), None);
    // ...but not when two keys could apply.
    let mut doc = policy();
    let second = jwk(Ed25519KeyPair::generate().public_key().to_jwk(), "ed2");
    doc["providers"][0]["jwks"]["keys"].as_array_mut().unwrap().push(second);
    let two = compile(doc).unwrap();
    assert_eq!(code_of(&req("/api/x").bearer(&t).eval_with(&two)), Some("jwt_unknown_key"));
}

#[test]
fn crit_is_refused_even_when_signed() {
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let t = mint_raw(&json!({"alg": "EdDSA", "kid": "ed1", "crit": crit, "exp": 1}), &claims());
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_crit_unsupported"), "{crit}");
    }
    let t = mint_raw(&json!({"alg": "EdDSA", "kid": "ed1", "typ": "text/plain"}), &claims());
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_malformed"), "typ other than JWT");
    let t = mint_raw(&json!({"alg": "EdDSA", "kid": "ed1", "typ": "at+jwt"}), &claims());
    assert_eq!(req("/api/x").bearer(&t).code(), None, "RFC 9068 access tokens");
}

#[test]
fn signatures() {
    let c = claims();
    assert_eq!(req("/api/x").bearer(&mint("RS256-other", &c)).code(), Some("jwt_signature_invalid"));
    // A payload swapped under a valid header and signature.
    for alg in ["RS256", "ES256", "EdDSA"] {
        let good = mint(alg, &c);
        let evil = mint(alg, &with(c.clone(), json!({"sub": "root"})));
        let g: Vec<&str> = good.split('.').collect();
        let e: Vec<&str> = evil.split('.').collect();
        let t = format!("{}.{}.{}", g[0], e[1], g[2]);
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_signature_invalid"), "{alg}");
    }
}

#[test]
fn time() {
    let t = mint("ES256", &with(claims(), json!({"exp": null})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_exp_missing"));
    let t = mint("ES256", &with(claims(), json!({"exp": NOW - 61})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_expired"));
    let t = mint("ES256", &with(claims(), json!({"exp": NOW - 59})));
    assert_eq!(req("/api/x").bearer(&t).code(), None, "within the skew");
    let t = mint("ES256", &with(claims(), json!({"nbf": NOW + 61})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_not_yet_valid"));
    let t = mint("ES256", &with(claims(), json!({"nbf": NOW + 59})));
    assert_eq!(req("/api/x").bearer(&t).code(), None);
    let t = mint("ES256", &with(claims(), json!({"iat": NOW + 61})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_not_yet_valid"));
    let t = mint("ES256", &with(claims(), json!({"exp": (NOW + 300) as f64 + 0.5})));
    assert_eq!(req("/api/x").bearer(&t).code(), None, "a fractional NumericDate");
    // A cached token still expires.
    let t = mint("ES256", &with(claims(), json!({"exp": NOW + 100})));
    let mut r = req("/api/x").bearer(&t);
    assert_eq!(r.code(), None);
    r.now = NOW + 159;
    assert_eq!(r.code(), None);
    r.now = NOW + 160;
    assert_eq!(r.code(), Some("jwt_expired"));
    r.now = NOW;
    assert_eq!(r.code(), None, "the clock handed in decides, not a cached verdict");
}

#[test]
fn issuer_and_audience() {
    let t = mint("ES256", &with(claims(), json!({"iss": "https://evil.example"})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_issuer_not_allowed"));
    let t = mint("ES256", &with(claims(), json!({"iss": null})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_issuer_not_allowed"));
    let t = mint("ES256", &with(claims(), json!({"iss": "https://idp.example.com/"})));
    assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_issuer_not_allowed"), "exact match");
    // A partner token is accepted on /api (corp or partner) but not on /admin (corp only),
    // neither first nor from the cache.
    let mut cl =
        Claims::with_custom_claims(with(claims(), json!({"iss": "https://partner.example"})), Duration::from_secs(0));
    (cl.issued_at, cl.expires_at, cl.invalid_before) = (None, None, None);
    let partner = ES256KeyPair::from_bytes(&keys().es.to_bytes()).unwrap().with_key_id("p1").sign(cl).unwrap();
    assert_eq!(req("/admin/x").bearer(&partner).code(), Some("jwt_issuer_not_allowed"));
    assert_eq!(req("/api/x").bearer(&partner).code(), None);
    assert_eq!(req("/admin/x").bearer(&partner).code(), Some("jwt_issuer_not_allowed"), "after a cache hit");
    // Audiences.
    for aud in [json!("other.example.com"), json!(["x", "api.example.com"])] {
        let t = mint("ES256", &with(claims(), json!({"aud": aud})));
        assert_eq!(req("/api/x").bearer(&t).code(), None, "{aud}");
    }
    for aud in [json!("evil.example.com"), json!([]), json!(["API.example.com"]), Value::Null] {
        let t = mint("ES256", &with(claims(), json!({"aud": aud})));
        assert_eq!(req("/api/x").bearer(&t).code(), Some("jwt_audience_not_allowed"), "{aud}");
    }
}

#[test]
fn rule_claims() {
    let gold = with(claims(), json!({"org": {"tier": "gold"}}));
    assert_eq!(req("/admin/x").bearer(&mint("EdDSA", &gold)).code(), None);
    for patch in [
        json!({"org": {"tier": "silver"}}),
        json!({"org": null}),
        json!({"org": {"tier": "gold"}, "scope": "read"}),
        json!({"org": {"tier": "gold"}, "scope": "read administrator"}),
        json!({"org": {"tier": "gold"}, "scope": null}),
    ] {
        let t = mint("EdDSA", &with(claims(), patch.clone()));
        assert_eq!(req("/admin/x").bearer(&t).code(), Some("jwt_claims_not_satisfied"), "{patch}");
    }
    let t = mint("EdDSA", &with(gold, json!({"scope": ["read", "admin"]})));
    assert_eq!(req("/admin/x").bearer(&t).code(), None, "array claim");
    // The same token, cached by /api, still fails the /admin claims.
    let plain = mint("EdDSA", &claims());
    assert_eq!(req("/api/x").bearer(&plain).code(), None);
    assert_eq!(req("/admin/x").bearer(&plain).code(), Some("jwt_claims_not_satisfied"));
}

#[test]
fn certificate_and_identity_binding() {
    let bound = with(claims(), json!({"cnf": {"x5t#S256": PEER_X5T}, "azp": PEER}));
    let t = mint("RS256", &bound);
    assert_eq!(req("/bound/x").bearer(&t).code(), None);
    // The same token from another workload's certificate, or without mTLS.
    let mut r = req("/bound/x").bearer(&t);
    r.digest = Some("0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(r.code(), Some("jwt_binding_mismatch"));
    r.digest = None;
    assert_eq!(r.code(), Some("jwt_binding_mismatch"));
    r.digest = Some("not hex");
    assert_eq!(r.code(), Some("jwt_binding_mismatch"));
    // Required: a token without cnf.
    let t2 = mint("RS256", &with(bound.clone(), json!({"cnf": null})));
    assert_eq!(req("/bound/x").bearer(&t2).code(), Some("jwt_binding_mismatch"));
    // If present (the default, /api): a bound token from the wrong peer fails; unbound passes.
    let mut r = req("/api/x").bearer(&t);
    r.digest = Some("00");
    assert_eq!(r.code(), Some("jwt_binding_mismatch"));
    assert_eq!(req("/api/x").bearer(&t2).code(), None);
    let t3 = mint("RS256", &with(bound.clone(), json!({"cnf": {"x5t#S256": 5}})));
    assert_eq!(req("/api/x").bearer(&t3).code(), Some("jwt_binding_mismatch"));
    // SPIFFE binding: another peer, no peer, a claim naming someone else.
    let mut r = req("/bound/x").bearer(&t);
    r.peer = Some("spiffe://cluster.local/ns/batch/sa/batch");
    assert_eq!(r.code(), Some("jwt_peer_identity_mismatch"));
    r.peer = None;
    assert_eq!(r.code(), Some("jwt_peer_identity_mismatch"));
    for azp in [json!("spiffe://cluster.local/ns/web/sa/*"), json!("spiffe://cluster.local/ns/*/sa/web")] {
        let t = mint("RS256", &with(bound.clone(), json!({"azp": azp})));
        assert_eq!(req("/bound/x").bearer(&t).code(), None, "{azp}");
    }
    for azp in [
        json!("*"),
        json!("spiffe://cluster.local/ns/api/sa/*"),
        json!("spiffe://cluster.local/ns/web"),
        json!([PEER]),
        Value::Null,
    ] {
        let t = mint("RS256", &with(bound.clone(), json!({"azp": azp})));
        assert_eq!(req("/bound/x").bearer(&t).code(), Some("jwt_peer_identity_mismatch"), "{azp}");
    }
}

#[test]
fn remote_keys_fail_closed() {
    let t = mint("ES256", &with(claims(), json!({"iss": "https://remote.example"})));
    assert_eq!(req("/remote/x").bearer(&t).code(), Some("jwt_keys_unavailable"));
}

#[test]
fn claim_headers_are_removed_then_set_and_the_token_stripped() {
    let t = mint("ES256", &with(claims(), json!({"org": {"tier": "gold\r\nx-admin: 1"}})));
    let d = req("/api/x").bearer(&t).eval_with(check());
    assert_eq!(code_of(&d), None);
    assert_eq!(
        d.mutations,
        vec![
            HeaderMutation::Remove { name: b"x-jwt-sub".to_vec() },
            HeaderMutation::Remove { name: b"x-jwt-tier".to_vec() },
            HeaderMutation::Set { name: b"x-jwt-sub".to_vec(), value: b"alice".to_vec() },
            HeaderMutation::Remove { name: b"authorization".to_vec() },
        ],
        "a claim with CR/LF is never forwarded"
    );
    // Denied or not covered: the client's copies are still removed, nothing is set.
    for d in [req("/api/x").eval_with(check()), req("/elsewhere").eval_with(check())] {
        assert_eq!(d.mutations.len(), 2);
        assert!(d.mutations.iter().all(|m| matches!(m, HeaderMutation::Remove { .. })));
    }
    // A query token is cut out of :path.
    let path = format!("/api/x?a=1&access_token={t}&b=2");
    let d = req(&path).eval_with(check());
    assert_eq!(
        d.mutations.last(),
        Some(&HeaderMutation::Set { name: b":path".to_vec(), value: b"/api/x?a=1&b=2".to_vec() })
    );
}

#[test]
fn dry_run_rules_and_checks() {
    // /api/new: the enforced rule `api` accepts a corp token; the dry-run `shadow` (partner
    // only) would deny it.
    let t = mint("ES256", &claims());
    let d = req("/api/new/x").bearer(&t).eval_with(check());
    assert_eq!(d.findings.len(), 1);
    assert_eq!(
        (d.findings[0].code, d.findings[0].rule.as_str(), d.findings[0].enforced),
        (ReasonCode::JwtIssuerNotAllowed, "shadow", false)
    );
    assert!(!d.enforced());
    // The whole check in dry-run: a would-deny.
    let mut doc = policy();
    doc["mode"] = json!("dry-run");
    let dry = compile(doc).unwrap();
    let d = req("/api/x").eval_with(&dry);
    assert_eq!(d.findings.len(), 1);
    assert!(!d.findings[0].enforced);
    assert_eq!(d.outcome().as_str(), "would_deny");
    // The policy in dry-run wins over the check's mode.
    let doc: JwtDoc = serde_json::from_value(policy()).unwrap();
    let mut errs = ConfigErrors::default();
    let dry = JwtCheck::compile_section(&doc, Mode::DryRun, "jwt", &mut errs);
    assert!(errs.is_empty());
    assert_eq!(req("/api/x").eval_with(&dry).outcome().as_str(), "would_deny");
}

#[test]
fn default_deny_and_bad_authority() {
    let mut doc = policy();
    doc["defaultAction"] = json!("deny");
    doc["rules"][5]["match"]["hosts"] = json!(["api.example.com"]);
    let c = compile(doc).unwrap();
    let d = req("/elsewhere").eval_with(&c);
    assert_eq!((d.findings[0].code, d.findings[0].rule.as_str()), (ReasonCode::JwtNoMatchingRule, "jwt.defaultAction"));
    let headers: [(&[u8], &[u8]); 3] =
        [(b":method", b"GET"), (b":path", b"/api/x"), (b":authority", b"user@api.example.com")];
    let input = RequestView::new(&headers, Default::default(), crate::view::request::Direction::Inbound).with_now(NOW);
    let mut d = Decision::default();
    c.evaluate_request(&input, &mut d);
    assert_eq!(d.findings[0].code, ReasonCode::JwtAuthorityInvalid);
}

#[test]
fn the_token_never_reaches_a_finding_or_a_debug_print() {
    let t = mint("ES256", &with(claims(), json!({"exp": NOW - 1000})));
    let d = req("/api/x").bearer(&t).eval_with(check());
    let text = format!("{d:?}");
    assert!(!text.contains(&t) && !text.contains(t.split('.').nth(2).unwrap()), "{text}");
    // A cached token is not in the check's Debug either (the cache prints its size only).
    let t = mint("ES256", &claims());
    assert_eq!(req("/api/x").bearer(&t).code(), None);
    assert!(check().cached_tokens() > 0);
    let text = format!("{:?}", check());
    let as_bytes = format!("{:?}", &t.as_bytes()[..16]);
    assert!(!text.contains(t.split('.').nth(2).unwrap()) && !text.contains(as_bytes.trim_end_matches(']')), "{text}");
}

#[test]
fn the_cache_is_per_check_and_a_new_policy_starts_empty() {
    let c = compile(policy()).unwrap();
    let t = mint("EdDSA", &claims());
    assert_eq!(code_of(&req("/api/x").bearer(&t).eval_with(&c)), None);
    assert_eq!(c.cached_tokens(), 1);
    let again = compile(policy()).unwrap();
    assert_eq!(again.cached_tokens(), 0);
}

#[test]
fn policy_errors_name_the_field() {
    let errs = |doc: Value| -> Vec<String> {
        match compile(doc) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.path.clone()).collect(),
        }
    };
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}));
    let e = compile(doc).unwrap_err();
    assert_eq!(e.0[0].path, "jwt.providers[0].jwks.keys[3].kty");
    assert!(e.0[0].message.contains("kty: oct"), "{}", e.0[0].message);

    let mut doc = policy();
    let mut rsa = doc["providers"][0]["jwks"]["keys"][0].clone();
    rsa["n"] = json!("AQAB");
    rsa["kid"] = json!("small");
    doc["providers"][0]["jwks"]["keys"].as_array_mut().unwrap().push(rsa);
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[3].n"]);

    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][1]["x"] = json!("AAAA");
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[1].x"]);
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][1]["y"] = doc["providers"][0]["jwks"]["keys"][1]["x"].clone();
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[1].x"], "not on the curve");
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][2]["d"] = json!("AAAA");
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[2].d"], "private key");
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][2]["alg"] = json!("ES256");
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[2].alg"]);
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][1]["kid"] = json!("rsa1");
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[1].kid"]);
    let mut doc = policy();
    doc["providers"][0]["jwks"]["keys"][1]["crv"] = json!("secp256k1");
    assert_eq!(errs(doc), ["jwt.providers[0].jwks.keys[1].crv"]);
    let mut doc = policy();
    // PS256: the RSA JWK says `alg: RS256`; ES384: no P-384 key.
    doc["providers"][0]["algorithms"] = json!(["HS256", "none", "PS256", "ES384", "RS256"]);
    assert_eq!(
        errs(doc),
        [
            "jwt.providers[0].algorithms[0]",
            "jwt.providers[0].algorithms[1]",
            "jwt.providers[0].algorithms[2]",
            "jwt.providers[0].algorithms[3]"
        ]
    );
    assert!(keys().rsa.public_key().to_jwk().contains("\"alg\":\"RS256\""));
    let mut doc = policy();
    doc["providers"][1]["issuer"] = json!(ISS);
    doc["providers"][1]["audiences"] = json!([]);
    doc["rules"][0]["require"]["providers"] = json!(["corp", "nobody"]);
    doc["rules"][1]["require"] = Value::Null;
    doc["rules"][2]["claims"] = json!([{"name": "a", "contains": "x", "equals": "y"}]);
    doc["forwardClaims"] = json!([{"claim": "sub", "header": "authorization"}, {"claim": "sub", "header": "X-Up"}]);
    doc["tokenSources"] = json!([{"header": "x-token", "queryParam": "t"}]);
    assert_eq!(
        errs(doc),
        [
            "jwt.providers[1].issuer",
            "jwt.providers[1].audiences",
            "jwt.rules[0].require.providers[1]",
            "jwt.rules[1]",
            "jwt.rules[2].claims[0]",
            "jwt.tokenSources[0]",
            "jwt.forwardClaims[0].header",
            "jwt.forwardClaims[1].header",
        ]
    );
    assert!(serde_json::from_value::<JwtDoc>(with(policy(), json!({"issuer": "x"}))).is_err(), "unknown fields");
}

#[test]
fn the_cache_is_bounded() {
    let mut doc = policy();
    doc["cacheEntries"] = json!(3);
    let c = compile(doc).unwrap();
    for i in 0..10 {
        let t = mint("EdDSA", &with(claims(), json!({"jti": format!("t{i}")})));
        assert_eq!(code_of(&req("/api/x").bearer(&t).eval_with(&c)), None);
    }
    assert_eq!(c.cached_tokens(), 3);
    let mut doc = policy();
    doc["cacheEntries"] = json!(0);
    let c = compile(doc).unwrap();
    assert_eq!(code_of(&req("/api/x").bearer(&mint("EdDSA", &claims())).eval_with(&c)), None);
    assert_eq!(c.cached_tokens(), 0);
}

/// Every algorithm meshguard accepts verifies (and a token signed for one key does not verify
/// with another): RS256/384/512 and PS256/384/512 with one RSA key, ES384.
#[test]
fn every_supported_algorithm() {
    let pem = include_str!("testdata/rsa-a.pem");
    let other = include_str!("testdata/rsa-b.pem");
    let es384 = ES384KeyPair::generate();
    let mut rsa_jwk = jwk(keys().rsa.public_key().to_jwk(), "rsa");
    rsa_jwk.as_object_mut().unwrap().remove("alg");
    let doc = json!({
        "providers": [{"id": "corp", "issuer": ISS, "audiences": [AUD],
                       "jwks": {"keys": [rsa_jwk, jwk(es384.public_key().to_jwk(), "es384")]}}],
        "rules": [{"id": "all", "require": {"providers": ["corp"]}}]
    });
    let check = compile(doc).unwrap();
    let claims = || {
        let mut c = Claims::with_custom_claims(super::tests::claims(), Duration::from_secs(0));
        (c.issued_at, c.expires_at, c.invalid_before) = (None, None, None);
        c
    };
    let mint_with = |alg: &str, pem: &str| -> String {
        match alg {
            "RS256" => RS256KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            "RS384" => RS384KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            "RS512" => RS512KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            "PS256" => PS256KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            "PS384" => PS384KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            "PS512" => PS512KeyPair::from_pem(pem).unwrap().with_key_id("rsa").sign(claims()).unwrap(),
            other => panic!("{other}"),
        }
    };
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let good = mint_with(alg, pem);
        assert_eq!(code_of(&req("/x").bearer(&good).eval_with(&check)), None, "{alg}");
        let bad = mint_with(alg, other);
        assert_eq!(code_of(&req("/x").bearer(&bad).eval_with(&check)), Some("jwt_signature_invalid"), "{alg}");
        // The same signature presented under another RSA algorithm.
        let swapped_alg = if alg.starts_with("RS") { alg.replacen("RS", "PS", 1) } else { alg.replacen("PS", "RS", 1) };
        let parts: Vec<&str> = good.split('.').collect();
        let header = b64(json!({"alg": swapped_alg, "kid": "rsa", "typ": "JWT"}).to_string().as_bytes());
        let t = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            code_of(&req("/x").bearer(&t).eval_with(&check)),
            Some("jwt_signature_invalid"),
            "{alg} as {swapped_alg}"
        );
    }
    let t = es384.with_key_id("es384").sign(claims()).unwrap();
    assert_eq!(code_of(&req("/x").bearer(&t).eval_with(&check)), None, "ES384");
    let bad = ES384KeyPair::generate().with_key_id("es384").sign(claims()).unwrap();
    assert_eq!(code_of(&req("/x").bearer(&bad).eval_with(&check)), Some("jwt_signature_invalid"), "ES384");
}

/// The check wired into a `Policy`: registered after egress, a JWT deny replies with
/// `denyStatus` (401 by default) and other denies keep `denyResponse.status`, the clock is
/// always needed and the certificate digest only when a rule binds to it, and token headers
/// other than authorization never reach the decision log.
#[test]
fn wired_into_the_policy() {
    let mut jwt = policy();
    jwt["tokenSources"] = json!([{"header": "x-token"}, {"queryParam": "access_token"}]);
    let doc = json!({"version": 1, "identity": {"requirePeerIdentity": true}, "jwt": jwt});
    let p = crate::Policy::from_value(doc.clone()).unwrap();
    let needs = p.needs();
    assert!(needs.clock && needs.peer_cert_digest && needs.peer);
    let t = mint("ES256", &claims());
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":path", b"/api/x?access_token=abc.def.ghi&q=1"),
        (b":authority", b"api.example.com"),
        (b":scheme", b"https"),
        (b"x-token", t.as_bytes()),
    ];
    let peer = crate::view::request::Peer { mtls: true, uri_san: Some(PEER.as_bytes()) };
    let view = RequestView::new(&headers, peer, crate::view::request::Direction::Inbound).with_now(NOW);
    let d = p.evaluate(&view);
    assert_eq!(code_of(&d), Some("jwt_multiple_tokens"));
    assert_eq!(p.deny_status(&d), 401);
    let line = p.decision_log_line(&d, &view, 0);
    assert!(!line.contains(&t) && !line.contains("abc.def.ghi"), "{line}");
    assert!(line.contains("jwt_multiple_tokens"), "{line}");
    // Without a peer the identity check decides first, with denyResponse.status.
    let view = RequestView::new(&headers, Default::default(), crate::view::request::Direction::Inbound).with_now(NOW);
    let d = p.evaluate(&view);
    assert_eq!(d.findings[0].check, Check::PeerIdentity);
    assert_eq!(p.deny_status(&d), 403);
    // A custom status; no rule binding the certificate: no digest fetched.
    let mut jwt = policy();
    jwt["denyStatus"] = json!(498);
    for r in jwt["rules"].as_array_mut().unwrap() {
        r["bind"] = json!({"certificate": "ignore"});
    }
    let p = crate::Policy::from_value(json!({"version": 1, "jwt": jwt})).unwrap();
    assert!(p.needs().clock && !p.needs().peer_cert_digest && !p.needs().peer);
    let view =
        RequestView::new(&headers[..4], Default::default(), crate::view::request::Direction::Inbound).with_now(NOW);
    let d = p.evaluate(&view);
    assert_eq!((code_of(&d), p.deny_status(&d)), (Some("jwt_malformed"), 498));
    // A policy without a jwt section needs no clock.
    let p = crate::Policy::from_value(json!({"version": 1, "identity": {}})).unwrap();
    assert!(!p.needs().clock && !p.needs().peer_cert_digest);
    // Errors are reported under `jwt.`.
    let e = crate::Policy::from_value(json!({"version": 1, "jwt": {"providers": []}})).unwrap_err().to_string();
    assert!(e.contains("jwt.providers"), "{e}");
}
