//! The fuzzers' seed corpora (`fuzz/corpus/<target>/`), generated here from the requests,
//! paths, identities and policies the rest of the suite uses, so that `make fuzz` starts from
//! real traffic shapes instead of from nothing.
//!
//! This test checks, on stable, that every seed is in the repository (byte for byte, named by
//! its FNV-1a hash) and that every property of `policy::fuzzing` holds on every seed.
//! Regenerate after changing a seed: `MESHGUARD_WRITE_CORPUS=1 cargo test -p
//! meshguard-harness --test fuzz_corpus`. `make fuzz` reads these directories and writes what
//! it finds into `fuzz/target/corpus/<target>/`, never into the repository.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use policy::Policy;

/// The fuzz inputs' request encoding (see `policy::fuzzing::evaluate`): the peer's URI SAN on
/// the first line (its first byte's low bit: mTLS; empty: plaintext), then one `name:value`
/// header per line, pseudo-headers included.
fn request(uri_san: &str, method: &str, path: &str, authority: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{uri_san}\n:method:{method}\n:path:{path}\n:authority:{authority}\n:scheme:https");
    for (n, v) in headers {
        out.push_str(&format!("\n{n}:{v}"));
    }
    out.into_bytes()
}

const WEB: &str = "spiffe://cluster.local/ns/web/sa/web";
const BATCH: &str = "spiffe://cluster.local/ns/batch/sa/batch";

fn requests() -> Vec<Vec<u8>> {
    let ordinary: Vec<(&str, &str)> = policy::samples::ORDINARY_30.to_vec();
    let mut out = vec![
        request(WEB, "GET", "/api/items", "api.default.svc.cluster.local", &ordinary),
        request(WEB, "GET", "/v1/items", "api.default.svc", &[("x-request-id", "demo-1")]),
        request(WEB, "POST", "/api/items", "localhost", &[("content-type", "application/json"), ("content-length", "2")]),
        request("spiffe://cluster.local/ns/ops/sa/admin", "GET", "/admin/users", "localhost", &[]),
        request(BATCH, "GET", "/admin/users", "localhost", &[]),
        request(BATCH, "GET", "/%61dmin//users", "localhost", &[]),
        request(BATCH, "GET", "/x/../admin", "localhost", &[]),
        request("", "GET", "/api/items", "localhost", &[("user-agent", "curl/8")]),
        request("spiffe://Cluster.Local/ns/web/sa/web", "GET", "/api", "localhost", &[]),
        request("spiffe://other.domain/ns/web/sa/web", "GET", "/api", "localhost", &[]),
        request(WEB, "GET", "/healthz", "user:pass@api.svc", &[]),
        // Request hygiene: the shapes the guards are about.
        request(WEB, "GET", "/a%2Fb", "localhost", &[("content-length", "5")]),
        request(WEB, "GET", "/a/..;/admin", "localhost", &[("host", "evil.example")]),
        request(WEB, "GET", "/a;jsessionid=1/b", "localhost", &[("transfer-encoding", "chunked"), ("content-length", "3")]),
        request(WEB, "GET", "/%252e%252e/etc", "localhost", &[("content_length", "1")]),
        request(WEB, "GET", "/%00/%c0%ae%c0%ae/", "localhost", &[("x-envoy-original-path", "/admin")]),
        request(WEB, "TRACE", "/", "localhost", &[("x-http-method-override", "DELETE")]),
        request(WEB, "GET", "/", "localhost", &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c"), ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")]),
        request(WEB, "GET", "/ws", "localhost", &[("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-version", "13")]),
        request(
            WEB,
            "GET",
            "/",
            "localhost",
            &[(
                "x-forwarded-client-cert",
                "By=spiffe://cluster.local/ns/default/sa/api;URI=spiffe://cluster.local/ns/ops/sa/admin,By=spiffe://cluster.local/ns/default/sa/api;Hash=abc;URI=spiffe://cluster.local/ns/web/sa/web",
            )],
        ),
        request(WEB, "GET", "/", "localhost", &[("x-forwarded-host", "admin.internal"), ("x-original-url", "/admin?token=1")]),
        request(WEB, "GET", "/", "localhost", &[("x-real-ip", "127.0.0.1"), ("x-forwarded-for", "10.0.0.1, not-an-ip")]),
        request(WEB, "GET", "/", "localhost", &[("proxy-authorization", "Basic dXNlcjpwYXNz"), ("x-request-id", "a b\"c")]),
        request(WEB, "GET", "/", "localhost", &[("authorization", "Bearer a\rX-Injected: 1"), ("x-tenant", "a"), ("x-tenant", "b")]),
        request(WEB, "GET", "/", "localhost", &[("te", "trailers, gzip"), ("expect", "100-continue")]),
        request(WEB, "GET", "/a/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "localhost", &[("x-api-key", "k")]),
        request(WEB, "GET", "/caf\u{e9}", "localhost", &[("x-obs", "caf\u{e9}")]),
        request(WEB, "GET", "http://api.example.com/abs", "API.EXAMPLE.COM.:8443", &[("x-b3-sampled", "1")]),
        request(WEB, "GET", &format!("/{}", "a".repeat(300)), "localhost", &[]),
    ];
    // Bytes that are not UTF-8 in a value and in a name.
    let mut raw = request(WEB, "GET", "/", "localhost", &[]);
    raw.extend_from_slice(b"\nx-bin:\xff\xfe\nx\x80y:v");
    out.push(raw);
    out
}

fn paths() -> Vec<Vec<u8>> {
    [
        "/",
        "/api/items?page=2",
        "//admin",
        "/x/../admin",
        "/%61dmin",
        "/a%2Fb",
        "/a%2fb/%2e%2e/c",
        "/a/..;/b",
        "/a;b=c/d",
        "/%252e%252e/",
        "/%00",
        "/%c0%ae%c0%ae/",
        "/./a/./b/.",
        "/a/b/../../..",
        "/a#frag",
        "*",
        "http://h/a/b",
        "/%7e%7E/%41",
        "/\u{e9}t\u{e9}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn spiffe_ids() -> Vec<Vec<u8>> {
    [
        WEB,
        BATCH,
        "spiffe://cluster.local",
        "spiffe://Cluster.Local/ns/web/sa/web",
        "spiffe://cluster.local/ns/../sa/web",
        "spiffe://cluster.local/ns/%41/sa/web",
        "spiffe://cluster.local:8443/ns/web",
        "spiffe://cluster.local//ns",
        "spiffe://td/a/b/c/d/e/f",
        "SPIFFE://td/x",
        "spiffe://user@td/x",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn xfcc_values() -> Vec<Vec<u8>> {
    [
        "By=spiffe://cluster.local/ns/default/sa/api;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=spiffe://cluster.local/ns/web/sa/web",
        "By=spiffe://a/x;URI=spiffe://a/y,By=spiffe://a/x;URI=spiffe://a/z",
        "Hash=abc;Subject=\"CN=web,O=a\\\"b\";URI=spiffe://td/web;DNS=web.svc",
        "URI=spiffe://td/a\nURI=spiffe://td/b,URI=spiffe://td/c",
        "By=\"spiffe://a/x\";URI=\"spiffe://a/y;z\"",
        "",
        ";;,,",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn hosts() -> Vec<Vec<u8>> {
    [
        "api.example.com",
        "API.EXAMPLE.COM.",
        "api.example.com:8443",
        "api.example.com.evil.net",
        "user:pass@api.example.com",
        "0x7f.1",
        "2130706433",
        "127.1",
        "[::ffff:169.254.169.254]:80",
        "[fe80::1%25eth0]",
        "169.254.169.254",
        "metadata.google.internal",
        "localhost",
        "localhost4.localdomain4",
        "*.example.com\napi.example.com",
        "*.example.com\nexample.com",
        "api.example.com\nAPI.example.com.:443",
        "10.0.0.1\n10.0.0.1",
        "xn--bcher-kva.example",
        "a_b.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// The host's header-map serialization (proxy-wasm): pair count, then each name's and value's
/// length (u32 little-endian), then each name and value followed by a NUL.
fn header_map(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn header_maps() -> Vec<Vec<u8>> {
    let ordinary: Vec<(&[u8], &[u8])> =
        policy::samples::ORDINARY_30.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
    vec![
        header_map(&[]),
        header_map(&[
            (b":method", b"GET"),
            (b":path", b"/api/items"),
            (b":authority", b"localhost"),
            (b":scheme", b"https"),
        ]),
        header_map(&ordinary),
        header_map(&[(b"content-type", b"application/json")]),
        header_map(&[(b"x\xff", b"\x00\x01"), (b"", b"")]),
    ]
}

fn policies() -> Vec<Vec<u8>> {
    let root = harness::workspace_root().join("envoy-config/policies");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.to_string_lossy().ends_with(".tests.yaml"))
        .map(|p| harness::policy_file::load_value(&p).unwrap().to_string().into_bytes())
        .collect();
    out.extend(vectors().into_iter().map(|v| v.policy.to_string().into_bytes()));
    out.sort();
    out.push(policy::samples::scale_egress(3, 4).to_string().into_bytes());
    out.push(br#"{"version":1,"mode":"dry-run","identity":{"rules":[{"id":"r","action":"allow","principals":["*"],"match":{"paths":[{"regex":"^/v[0-9]+/"}]}}]}}"#.to_vec());
    out.push(br#"{"version":1,"hygiene":{"preset":"gateway-strict","guards":{"pathLength":{"max":64}}}}"#.to_vec());
    out.push(
        br#"{"version":2,"bogus":true,"identity":{"rules":[{"id":"","principals":["spiffe://x/../y"]}]}}"#.to_vec(),
    );
    out
}

/// The shared test vectors (policy/vectors/*.json): their policies and requests seed the
/// fuzzers too.
fn vectors() -> Vec<policy::vectors::VectorFile> {
    let dir = harness::workspace_root().join("policy/vectors");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

/// A vector's request in the fuzz inputs' encoding.
fn vector_request(r: &policy::view::request::OwnedRequest) -> Vec<u8> {
    let uri_san = if r.peer.mtls { r.peer.uri_san.clone().unwrap_or_else(|| "x".into()) } else { String::new() };
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    request(&uri_san, &r.method, &r.path, &r.authority, &headers)
}

fn fnv(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn corpora() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut c = BTreeMap::new();
    let mut reqs = requests();
    reqs.extend(vectors().iter().flat_map(|v| v.cases.iter().map(|c| vector_request(&c.request))));
    c.insert("evaluate", reqs.clone());
    c.insert("hygiene", reqs);
    c.insert("canonical_path", paths());
    c.insert("spiffe_id", spiffe_ids());
    c.insert("xfcc", xfcc_values());
    c.insert("host", hosts());
    c.insert("header_map", header_maps());
    c.insert("policy_document", policies());
    c
}

fn corpus_dir(target: &str) -> PathBuf {
    harness::workspace_root().join("fuzz/corpus").join(target)
}

#[test]
fn every_fuzz_target_has_its_seeds_in_the_repository() {
    let write = std::env::var_os("MESHGUARD_WRITE_CORPUS").is_some();
    let targets: Vec<String> = std::fs::read_dir(harness::workspace_root().join("fuzz/fuzz_targets"))
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let corpora = corpora();
    for target in &targets {
        assert!(corpora.contains_key(target.as_str()), "fuzz target {target} has no seeds here");
    }
    let mut missing = Vec::new();
    for (target, seeds) in &corpora {
        assert!(targets.iter().any(|t| t == target), "seeds for a fuzz target that does not exist: {target}");
        let dir = corpus_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for seed in seeds {
            let path = dir.join(fnv(seed));
            if write {
                std::fs::write(&path, seed).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(seed.as_slice()) {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "seed files missing or stale (MESHGUARD_WRITE_CORPUS=1 cargo test -p meshguard-harness --test fuzz_corpus):\n{}",
        missing.join("\n")
    );
}

/// The properties the fuzzers check hold on every seed (stable, no libFuzzer).
#[test]
fn the_fuzz_properties_hold_on_every_seed() {
    let evaluate = Policy::from_json(
        br#"{"version":1,"decisionLog":{"allowSampleRate":1},"identity":{"trustDomains":["cluster.local"],"rules":[
        {"id":"d","action":"deny","match":{"paths":[{"prefix":"/admin"}]},"principals":["spiffe://cluster.local/ns/*/sa/*"]},
        {"id":"a","action":"allow","match":{"hosts":["*.svc"],"paths":[{"regex":"^/v[0-9]+/"}],"methods":["GET"]},"principals":["*"]}]}}"#,
    )
    .unwrap();
    let sidecar = Policy::from_json(br#"{"version":1,"hygiene":{"preset":"sidecar"}}"#).unwrap();
    let strict = Policy::from_json(br#"{"version":1,"hygiene":{"preset":"gateway-strict"}}"#).unwrap();
    let c = corpora();
    let check = |target: &str, f: &dyn Fn(&[u8]) -> Result<(), String>| {
        for seed in &c[target] {
            f(seed).unwrap_or_else(|e| panic!("{target} seed {}: {e}", String::from_utf8_lossy(seed)));
        }
    };
    check("evaluate", &|d| policy::fuzzing::evaluate(&evaluate, d));
    check("hygiene", &|d| policy::fuzzing::hygiene(&sidecar, d).and_then(|()| policy::fuzzing::hygiene(&strict, d)));
    check("canonical_path", &policy::fuzzing::canonical_path);
    check("spiffe_id", &policy::fuzzing::spiffe_id);
    check("xfcc", &policy::fuzzing::xfcc);
    check("host", &policy::fuzzing::host);
    check("policy_document", &policy::fuzzing::policy_document);
    // The shipped example policies are seeds that compile.
    assert!(c["policy_document"].iter().filter(|p| Policy::from_json(p).is_ok()).count() >= 5);
}
