//! The shipped JSON Schema (policy/schema/policy.schema.json) is kept in step with the parser:
//! for every object the schema describes, the parser must know exactly the same field names,
//! and the schema must close every object (`additionalProperties: false`), as the parser does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};

fn schema() -> Value {
    serde_json::from_str(include_str!("../schema/policy.schema.json")).unwrap()
}

/// The field names serde expects at the object `path` leads to, read from the error an
/// unknown field produces there ("expected one of `a`, `b`").
fn parser_fields(doc_with_unknown: Value) -> Vec<String> {
    let err = policy::Policy::from_value(doc_with_unknown).unwrap_err().to_string();
    let list = err
        .split("expected one of ")
        .nth(1)
        .or_else(|| err.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("{err}"));
    let mut fields: Vec<String> =
        list.replace(" or ", ", ").split(", ").map(|f| f.trim_matches(|c| c == '`' || c == ' ').to_string()).collect();
    fields.sort();
    fields
}

fn schema_fields(obj: &Value) -> Vec<String> {
    assert_eq!(obj["additionalProperties"], json!(false), "every object is closed: {obj}");
    let mut fields: Vec<String> = obj["properties"].as_object().unwrap().keys().cloned().collect();
    fields.sort();
    fields
}

#[test]
fn schema_and_parser_know_the_same_fields() {
    let s = schema();
    let defs = &s["$defs"];
    let rule = |extra: Value| json!({"version": 1, "identity": {"rules": [extra]}});
    let egress_rule = |extra: Value| json!({"version": 1, "egress": {"allow": [extra]}});
    let cases: Vec<(&Value, Value)> = vec![
        (&s, json!({"version": 1, "zz": 1})),
        (&s["properties"]["denyResponse"], json!({"version": 1, "denyResponse": {"zz": 1}})),
        (&s["properties"]["decisionLog"], json!({"version": 1, "decisionLog": {"zz": 1}})),
        (&s["properties"]["identity"], json!({"version": 1, "identity": {"zz": 1}})),
        (&defs["identityRule"], rule(json!({"id": "a", "action": "allow", "principals": ["*"], "zz": 1}))),
        (&defs["routeMatch"], rule(json!({"id": "a", "action": "allow", "principals": ["*"], "match": {"zz": 1}}))),
        (
            &defs["pathMatch"],
            rule(json!({"id": "a", "action": "allow", "principals": ["*"], "match": {"paths": [{"zz": 1}]}})),
        ),
        (&s["properties"]["egress"], json!({"version": 1, "egress": {"zz": 1}})),
        (
            &s["properties"]["egress"]["properties"]["credentials"],
            json!({"version": 1, "egress": {"credentials": {"zz": 1}}}),
        ),
        (&defs["egressRule"], egress_rule(json!({"id": "a", "hosts": ["a.com"], "zz": 1}))),
        (&defs["pathMatch"], egress_rule(json!({"id": "a", "hosts": ["a.com"], "paths": [{"zz": 1}]}))),
        (&s["properties"]["upstream"], json!({"version": 1, "upstream": {"zz": 1}})),
        (
            &defs["upstreamDestination"],
            json!({"version": 1, "upstream": {"destinations": [{"id": "a", "hosts": ["a.com"], "zz": 1}]}}),
        ),
    ];
    let jwt = |patch: Value| {
        let mut j = json!({"providers": [{"id": "p", "issuer": "i", "audiences": ["a"], "jwks": {"keys": []}}],
                           "rules": [{"id": "r", "optional": true}]});
        for (k, v) in patch.as_object().unwrap() {
            j[k] = v.clone();
        }
        json!({"version": 1, "jwt": j})
    };
    let provider = |extra: Value| {
        let mut p = json!({"id": "p", "issuer": "i", "audiences": ["a"], "jwks": {"keys": []}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        jwt(json!({"providers": [p]}))
    };
    let jwt_rule = |extra: Value| {
        let mut r = json!({"id": "r", "optional": true});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        jwt(json!({"rules": [r]}))
    };
    let jwt_cases: Vec<(&Value, Value)> = vec![
        (&s["properties"]["jwt"], json!({"version": 1, "jwt": {"zz": 1}})),
        (&defs["jwtProvider"], provider(json!({"zz": 1}))),
        (&defs["jwtJwks"], provider(json!({"jwks": {"zz": 1}}))),
        (&defs["jwtRemoteJwks"], provider(json!({"jwks": {"remote": {"cluster": "c", "path": "/", "zz": 1}}}))),
        (&defs["jwtRule"], jwt_rule(json!({"zz": 1}))),
        (&defs["jwtRequire"], jwt_rule(json!({"require": {"providers": ["p"], "zz": 1}}))),
        (&defs["jwtClaim"], jwt_rule(json!({"claims": [{"name": "n", "zz": 1}]}))),
        (&defs["jwtBind"], jwt_rule(json!({"bind": {"zz": 1}}))),
        (&defs["jwtPeerIdentity"], jwt_rule(json!({"bind": {"peerIdentity": {"claim": "azp", "zz": 1}}}))),
        (&defs["routeMatch"], jwt_rule(json!({"match": {"zz": 1}}))),
        (&defs["jwtTokenSource"], jwt(json!({"tokenSources": [{"zz": 1}]}))),
        (&defs["jwtForwardClaim"], jwt(json!({"forwardClaims": [{"claim": "c", "header": "h", "zz": 1}]}))),
    ];
    let guard = |name: &str| json!({"version": 1, "hygiene": {"guards": {name: {"zz": 1}}}});
    let hygiene_cases: Vec<(&Value, Value)> = vec![
        (&s["properties"]["hygiene"], json!({"version": 1, "hygiene": {"zz": 1}})),
        (&defs["hygieneGuards"], json!({"version": 1, "hygiene": {"guards": {"zz": 1}}})),
        (&defs["guard"], guard("encodedSlash")),
        (&defs["limitGuard"], guard("headerCount")),
        (&defs["methodsGuard"], guard("bodyOnGet")),
        (&defs["methodsGuard"], guard("methodAllowlist")),
        (&defs["riskyMethodsGuard"], guard("riskyMethods")),
        (&defs["singletonHeadersGuard"], guard("singletonHeaders")),
        (&defs["nonAsciiGuard"], guard("nonAsciiValues")),
        (&defs["websocketGuard"], guard("websocket")),
        (&defs["expectGuard"], guard("expect")),
        (&defs["trustGuard"], guard("forwardedRouting")),
        (&defs["envoyHeadersGuard"], guard("envoyHeaders")),
        (&defs["xfccGuard"], guard("xfcc")),
    ];
    // Every guard in the schema points at the shape the parser gives it.
    for (name, shape) in defs["hygieneGuards"]["properties"].as_object().unwrap() {
        let def = shape["$ref"].as_str().unwrap().trim_start_matches("#/$defs/");
        assert_eq!(schema_fields(&defs[def]), parser_fields(guard(name)), "guard {name} ({def})");
    }
    for (obj, doc) in cases.into_iter().chain(hygiene_cases).chain(jwt_cases) {
        assert_eq!(schema_fields(obj), parser_fields(doc.clone()), "for {doc}");
    }
}
