//! Remote JWKS: keys handed in at run time, rotation, failed fetches keep the last good set.

use serde_json::{json, Value};

use super::remote::{authority_of_cluster, JwksUpdate};
use super::tests::{code_of, compile, jwk, keys, mint, policy, req, with};
use super::JwtCheck;

const REMOTE_ISS: &str = "https://remote.example";

fn remote_token(alg: &str) -> String {
    mint(alg, &with(super::tests::claims(), json!({"iss": REMOTE_ISS})))
}

fn set(check: &JwtCheck, set: &Value) -> Result<JwksUpdate, String> {
    check.set_jwks("remote", set.to_string().as_bytes())
}

fn code(check: &JwtCheck, token: &str) -> Option<&'static str> {
    code_of(&req("/remote/x").bearer(token).eval_with(check))
}

#[test]
fn remote_providers_are_listed_with_their_authority() {
    let check = compile(policy()).unwrap();
    let r = check.remote_jwks();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].provider.as_str(), r[0].cluster.as_str()), ("remote", "outbound|443||idp"));
    assert_eq!((r[0].path.as_str(), r[0].authority.as_str(), r[0].refresh_seconds), ("/jwks.json", "idp", 600));
    assert_eq!(authority_of_cluster("outbound|443||idp.example.com"), "idp.example.com");
    assert_eq!(authority_of_cluster("idp-cluster"), "idp-cluster");
    let mut doc = policy();
    doc["providers"][2]["jwks"]["remote"]["authority"] = json!("keys.example.com:8443");
    doc["providers"][2]["jwks"]["remote"]["refreshSeconds"] = json!(1);
    let r = compile(doc).unwrap().remote_jwks();
    assert_eq!((r[0].authority.as_str(), r[0].refresh_seconds), ("keys.example.com:8443", 1));
    for bad in [json!(0), json!(86401)] {
        let mut doc = policy();
        doc["providers"][2]["jwks"]["remote"]["refreshSeconds"] = bad;
        let e = compile(doc).unwrap_err();
        assert_eq!(e.0[0].path, "jwt.providers[2].jwks.remote.refreshSeconds");
    }
    let mut doc = policy();
    doc["providers"][2]["jwks"]["remote"]["authority"] = json!("a/b");
    assert_eq!(compile(doc).unwrap_err().0[0].path, "jwt.providers[2].jwks.remote.authority");
}

#[test]
fn fetched_keys_verify_and_rotation_drops_removed_keys_and_their_cached_tokens() {
    let check = compile(policy()).unwrap();
    let k = keys();
    // The key pairs' own kids: ES256 "ec1" (key a), EdDSA "ed1" (key b).
    let a = json!({"keys": [jwk(k.es.public_key().to_jwk(), "ec1")]});
    let b = json!({"keys": [jwk(k.ed.public_key().to_jwk(), "ed1")]});
    let ta = remote_token("ES256");
    let tb = remote_token("EdDSA");
    assert_eq!(code(&check, &ta), Some("jwt_keys_unavailable"), "before the first fetch");
    assert_eq!(set(&check, &a), Ok(JwksUpdate::Changed));
    assert_eq!(code(&check, &ta), None, "key a fetched");
    assert_eq!(code(&check, &ta), None, "and cached");
    assert_eq!(check.cached_tokens(), 1);
    assert_eq!(code(&check, &tb), Some("jwt_unknown_key"), "b not there yet");
    assert_eq!(set(&check, &a), Ok(JwksUpdate::Unchanged), "the same bytes: nothing changes");
    assert_eq!(check.cached_tokens(), 1, "an unchanged set keeps the cache");
    // Rotation: a removed, b added. a's cached token must not survive.
    assert_eq!(set(&check, &b), Ok(JwksUpdate::Changed));
    assert_eq!(check.cached_tokens(), 0, "the provider's cached tokens were dropped");
    assert_eq!(code(&check, &ta), Some("jwt_unknown_key"), "a's token after the rotation");
    assert_eq!(code(&check, &tb), None, "b's token");
    // Inline providers are unaffected.
    assert_eq!(code_of(&req("/api/x").bearer(&mint("ES256", &super::tests::claims())).eval_with(&check)), None);
}

#[test]
fn an_invalid_fetched_set_is_a_failed_fetch_and_the_last_good_one_stays() {
    let check = compile(policy()).unwrap();
    let k = keys();
    let good = json!({"keys": [jwk(k.es.public_key().to_jwk(), "ec1")]});
    let t = remote_token("ES256");
    // Nothing good yet: failures leave the provider without keys.
    assert!(set(&check, &json!({"keys": []})).is_err());
    assert_eq!(code(&check, &t), Some("jwt_keys_unavailable"));
    set(&check, &good).unwrap();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not a JSON object"),
        (b"{\"keys\": 3}".to_vec(), "missing or not an array"),
        (json!({"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}]}).to_string().into_bytes(), "oct"),
        (
            json!({"keys": [jwk(k.es.public_key().to_jwk(), "ec1"), {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]})
                .to_string()
                .into_bytes(),
            "jwks.keys[1]",
        ),
        (vec![b' '; super::remote::MAX_JWKS_BYTES + 1], "larger than"),
    ];
    for (body, why) in bad {
        let err = check.set_jwks("remote", &body).unwrap_err();
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("c2VjcmV0"), "no key material in the error: {err}");
        assert_eq!(code(&check, &t), None, "the last good set stays after: {why}");
    }
    assert!(check.set_jwks("corp", good.to_string().as_bytes()).is_err(), "an inline provider takes no fetched keys");
    assert!(check.set_jwks("nobody", good.to_string().as_bytes()).is_err());
}

#[test]
fn a_new_policy_carries_over_keys_of_an_unchanged_source_only() {
    let k = keys();
    let doc = json!({"version": 1, "jwt": policy()});
    let old = crate::Policy::from_value(doc.clone()).unwrap();
    let good = json!({"keys": [jwk(k.es.public_key().to_jwk(), "a")]});
    assert_eq!(old.set_jwks("remote", good.to_string().as_bytes()), Ok(JwksUpdate::Changed));
    assert_eq!(old.remote_jwks().len(), 1);
    let same = crate::Policy::from_value(doc.clone()).unwrap();
    assert_eq!(same.carry_jwks_from(&old), vec!["remote".to_string()]);
    assert_eq!(same.set_jwks("remote", good.to_string().as_bytes()), Ok(JwksUpdate::Unchanged));
    let mut moved = doc.clone();
    moved["jwt"]["providers"][2]["jwks"]["remote"]["path"] = json!("/other.json");
    let moved = crate::Policy::from_value(moved).unwrap();
    assert!(moved.carry_jwks_from(&old).is_empty(), "another path: start without keys");
    assert_eq!(moved.set_jwks("remote", good.to_string().as_bytes()), Ok(JwksUpdate::Changed));
    let fresh = crate::Policy::from_value(doc).unwrap();
    let none = crate::Policy::from_value(json!({"version": 1})).unwrap();
    assert!(fresh.carry_jwks_from(&none).is_empty());
    assert!(none.set_jwks("remote", b"{}").is_err());
}
