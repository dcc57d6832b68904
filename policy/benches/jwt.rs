//! The JWT check natively: a first verification (no cache) for RS256 (2048-bit), ES256 and
//! EdDSA, and the cached path (the verified-token cache hit, with the time, audience, rule
//! claims and binding still checked). Target for the cached path: at most 1 µs.
//!
//! `cargo bench -p meshguard-policy --bench jwt`. Each iteration is one
//! `JwtCheck::evaluate`, what the filter does per request after reading the headers
//! (rule matching and path canonicalisation included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jwt_simple::prelude::*;
use policy::checks::jwt::{JwtCheck, JwtDoc};
use policy::document::Mode;
use policy::{ConfigErrors, Decision, Direction, Peer, RequestView};
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;

fn jwk(json: String, kid: &str) -> Value {
    let mut v: Value = serde_json::from_str(&json).unwrap();
    v["kid"] = kid.into();
    v
}

fn check(jwks: Value, cache_entries: usize) -> JwtCheck {
    let doc: JwtDoc = serde_json::from_value(json!({
        "providers": [{"id": "corp", "issuer": "https://idp.example.com", "audiences": ["api.example.com"], "jwks": jwks}],
        "rules": [{"id": "api", "match": {"paths": [{"prefix": "/api"}]}, "require": {"providers": ["corp"]},
                   "claims": [{"name": "scope", "contains": "items:write"}]}],
        "forwardClaims": [{"claim": "sub", "header": "x-jwt-sub"}],
        "cacheEntries": cache_entries
    }))
    .unwrap();
    let mut errs = ConfigErrors::default();
    let c = JwtCheck::compile_section(&doc, Mode::Enforce, "jwt", &mut errs);
    assert!(errs.is_empty(), "{errs}");
    c
}

fn bench(c: &mut Criterion) {
    let rsa = RS256KeyPair::from_pem(include_str!("../src/checks/jwt/testdata/rsa-a.pem")).unwrap().with_key_id("rsa1");
    let es = ES256KeyPair::generate().with_key_id("ec1");
    let ed = Ed25519KeyPair::generate().with_key_id("ed1");
    let jwks = json!({"keys": [
        jwk(rsa.public_key().to_jwk(), "rsa1"), jwk(es.public_key().to_jwk(), "ec1"), jwk(ed.public_key().to_jwk(), "ed1")
    ]});
    let payload = json!({"iss": "https://idp.example.com", "aud": "api.example.com", "sub": "alice",
                         "iat": NOW - 10, "exp": NOW + 3600, "scope": "items:read items:write"});
    let claims = || {
        let mut c = Claims::with_custom_claims(payload.clone(), Duration::from_secs(0));
        (c.issued_at, c.expires_at, c.invalid_before) = (None, None, None);
        c
    };
    let tokens = [
        ("rs256", rsa.sign(claims()).unwrap()),
        ("es256", es.sign(claims()).unwrap()),
        ("eddsa", ed.sign(claims()).unwrap()),
    ];
    let uncached = check(jwks.clone(), 0);
    let cached = check(jwks, 256);

    // The header value is built once: an iteration is the check alone.
    let tokens: Vec<(&str, String)> = tokens.iter().map(|(n, t)| (*n, format!("Bearer {t}"))).collect();
    let run = |check: &JwtCheck, auth: &str| {
        let headers: [(&[u8], &[u8]); 5] = [
            (b":method", b"POST"),
            (b":path", b"/api/items/42"),
            (b":authority", b"api.example.com"),
            (b":scheme", b"https"),
            (b"authorization", auth.as_bytes()),
        ];
        // A new view per request, as in the filter: the canonical path is computed each time.
        let input = RequestView::new(&headers, Peer::default(), Direction::Inbound).with_now(NOW);
        let mut d = Decision::default();
        check.evaluate_request(black_box(&input), &mut d);
        d
    };
    for (name, token) in &tokens {
        assert!(run(&uncached, token).findings.is_empty(), "{name}");
    }

    let mut g = c.benchmark_group("jwt");
    for (name, token) in &tokens {
        g.bench_function(format!("first_verification_{name}"), |b| b.iter(|| run(&uncached, token)));
    }
    for (name, token) in &tokens {
        g.bench_function(format!("cached_{name}"), |b| b.iter(|| run(&cached, token)));
    }
    g.finish();

    // The same, in this thread's CPU time rather than wall-clock time: on a shared machine
    // (CI, six engineers on two cores) wall-clock time counts the waits for a core too.
    let mut g = c.benchmark_group("jwt_thread_cpu_time");
    for (name, token) in &tokens {
        g.bench_function(format!("first_verification_{name}"), |b| {
            b.iter_custom(|iters| cpu_time(|| (0..iters).for_each(|_| drop(run(&uncached, token)))))
        });
    }
    for (name, token) in &tokens {
        g.bench_function(format!("cached_{name}"), |b| {
            b.iter_custom(|iters| cpu_time(|| (0..iters).for_each(|_| drop(run(&cached, token)))))
        });
    }
    g.finish();
}

/// The CPU time this thread spent in `f` (CLOCK_THREAD_CPUTIME_ID).
fn cpu_time(f: impl FnOnce()) -> std::time::Duration {
    fn now() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
    let start = now();
    f();
    now().saturating_sub(start)
}

criterion_group!(benches, bench);
criterion_main!(benches);
