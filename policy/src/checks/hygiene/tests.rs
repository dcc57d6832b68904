//! The request-hygiene guards through the public API: policy JSON in, decision out. Every guard
//! has a request that trips it and a near miss that must not, under the preset where it
//! rejects or strips; then the presets, dry-run and log, strips, and configuration errors.

use super::*;
use crate::checks::hygiene::Guard;
use crate::samples::ORDINARY_30;
use crate::testing::errors;
use crate::testing::policy;
use crate::{Decision, Direction, HeaderMutation, Peer, Policy, ReasonCode, Remedy, RequestView};
use serde_json::{json, Value};

fn preset(name: &str) -> Policy {
    policy(json!({"version": 1, "hygiene": {"preset": name}}))
}

/// The preset with these guard overrides, the whole check in dry-run: every guard that trips
/// is recorded (none ends the evaluation), so one guard can be observed at a time.
fn observe(name: &str, guards: Value) -> Policy {
    policy(json!({"version": 1, "hygiene": {"preset": name, "mode": "dry-run", "guards": guards}}))
}

/// A request as raw bytes: an ordinary HTTPS GET to start from.
#[derive(Clone)]
struct Req {
    pseudo: Vec<(Vec<u8>, Vec<u8>)>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    mtls: bool,
    uri_san: Option<Vec<u8>>,
    tls: bool,
    end_of_stream: bool,
    source_address: Option<Vec<u8>>,
}

fn req() -> Req {
    Req {
        pseudo: vec![
            (b":method".to_vec(), b"GET".to_vec()),
            (b":path".to_vec(), b"/api/items?page=2".to_vec()),
            (b":authority".to_vec(), b"api.example.com".to_vec()),
            (b":scheme".to_vec(), b"https".to_vec()),
        ],
        headers: vec![
            (b"user-agent".to_vec(), b"curl/8.5.0".to_vec()),
            (b"accept".to_vec(), b"*/*".to_vec()),
            (b"x-request-id".to_vec(), b"5d2c8b3e-4a1f-4c55-9b1e-2f7c9f1e0a11".to_vec()),
        ],
        mtls: false,
        uri_san: None,
        tls: true,
        end_of_stream: true,
        source_address: None,
    }
}

impl Req {
    fn pseudo(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let key = format!(":{name}").into_bytes();
        match self.pseudo.iter_mut().find(|(n, _)| *n == key) {
            Some(p) => p.1 = value.as_ref().to_vec(),
            None => self.pseudo.push((key, value.as_ref().to_vec())),
        }
        self
    }
    fn method(self, m: &str) -> Self {
        self.pseudo("method", m)
    }
    fn path(self, p: impl AsRef<[u8]>) -> Self {
        self.pseudo("path", p)
    }
    fn authority(self, a: impl AsRef<[u8]>) -> Self {
        self.pseudo("authority", a)
    }
    fn h(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }
    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| n != name.as_bytes());
        self
    }
    fn body(mut self) -> Self {
        self.end_of_stream = false;
        self
    }
    fn plaintext(mut self) -> Self {
        self.tls = false;
        self.mtls = false;
        self
    }
    fn mtls(mut self, uri: &str) -> Self {
        self.tls = true;
        self.mtls = true;
        self.uri_san = Some(uri.as_bytes().to_vec());
        self
    }
    fn from(mut self, source_address: &str) -> Self {
        self.source_address = Some(source_address.as_bytes().to_vec());
        self
    }
    fn eval(&self, p: &Policy) -> Decision {
        let pairs: Vec<(&[u8], &[u8])> =
            self.pseudo.iter().chain(&self.headers).map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let peer = Peer { mtls: self.mtls, uri_san: self.uri_san.as_deref() };
        let view = RequestView::new(&pairs, peer, Direction::Inbound)
            .with_end_of_stream(self.end_of_stream)
            .with_tls(self.tls)
            .with_source_address(self.source_address.as_deref());
        let d = p.evaluate(&view);
        // Whatever the decision, its log line is JSON.
        let line = p.decision_log_line(&d, &view, 0);
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        d
    }
    /// The reason codes of every finding.
    fn codes(&self, p: &Policy) -> Vec<ReasonCode> {
        self.eval(p).findings.iter().map(|f| f.code).collect()
    }
}

fn code_of(guard: &str) -> ReasonCode {
    Guard::ALL.iter().find(|g| g.name() == guard).unwrap_or_else(|| panic!("no guard {guard}")).code()
}

/// `attack` trips `guard` (and its finding names the guard's rule); `near_miss` does not.
fn case(p: &Policy, guard: &str, attack: Req, near_miss: Req) {
    let code = code_of(guard);
    let d = attack.eval(p);
    let f = d.findings.iter().find(|f| f.code == code);
    let f = f.unwrap_or_else(|| panic!("{guard}: the attack did not trip it: {:?}", d.findings));
    assert_eq!(f.rule, format!("hygiene.guards.{guard}"));
    let near = near_miss.codes(p);
    assert!(!near.contains(&code), "{guard}: the near miss tripped it: {near:?}");
}

#[test]
fn every_guard_can_be_named_in_a_policy() {
    for g in Guard::ALL {
        policy(json!({"version": 1, "hygiene": {"guards": {g.name(): {"enabled": true, "mode": "enforce"}}}}));
    }
}

#[test]
fn an_ordinary_request_trips_nothing_in_any_preset() {
    for name in ["sidecar", "gateway-strict", "audit"] {
        let p = preset(name);
        assert_eq!(req().codes(&p), vec![], "{name}");
        assert_eq!(req().plaintext().pseudo("scheme", "http").codes(&p), vec![], "{name}");
        assert_eq!(req().mtls("spiffe://cluster.local/ns/web/sa/web").codes(&p), vec![], "{name}");
    }
}

// The `gateway-strict` row of `make bench` sends these thirty ordinary headers on every
// request, so they must trip nothing.

#[test]
fn thirty_ordinary_headers_trip_nothing() {
    assert_eq!(ORDINARY_30.len(), 30);
    let with = |r: Req| ORDINARY_30.iter().fold(r, |r, (n, v)| r.h(n, v));
    // As the bench sends them: mTLS as workload web through the sidecar configuration, which
    // appends its XFCC element; and plaintext at a gateway.
    let web = "spiffe://cluster.local/ns/web/sa/web";
    let xfcc = "By=spiffe://cluster.local/ns/default/sa/api;Hash=d5b5;Subject=\"CN=web,O=meshguard\";URI=spiffe://cluster.local/ns/web/sa/web";
    for name in ["sidecar", "gateway-strict"] {
        let p = observe(name, json!({}));
        let r = with(
            req().authority("localhost").h("x-forwarded-proto", "https").mtls(web).h("x-forwarded-client-cert", xfcc),
        );
        assert_eq!(r.codes(&p), vec![], "{name}, mTLS");
        let r = with(req().plaintext().pseudo("scheme", "http").h("x-forwarded-proto", "http"));
        assert_eq!(r.codes(&p), vec![], "{name}, plaintext");
    }
}

#[test]
fn limits() {
    let p = observe("gateway-strict", json!({}));
    let many = (0..70).fold(req(), |r, i| r.h(format!("x-h{i}"), "v"));
    let some = (0..60).fold(req(), |r, i| r.h(format!("x-h{i}"), "v"));
    case(&p, "headerCount", many, some);
    case(
        &p,
        "headerBytes",
        req().h("x-a", "a".repeat(12_000)).h("x-b", "b".repeat(12_000)).h("x-c", "c".repeat(12_000)),
        req().h("x-a", "a".repeat(12_000)),
    );
    case(&p, "headerLength", req().h("cookie", "c".repeat(16_400)), req().h("cookie", "c".repeat(16_000)));
    case(&p, "pathLength", req().path(format!("/{}", "a".repeat(4100))), req().path(format!("/{}", "a".repeat(4000))));
    let q = |n: usize| format!("/s?{}", (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&"));
    case(&p, "queryParams", req().path(q(129)), req().path(q(128)));
    // Limits are per preset and overridable.
    let p = policy(json!({"version": 1, "hygiene": {"guards": {"pathLength": {"max": 10}}}}));
    assert_eq!(req().path("/0123456789").codes(&p), vec![ReasonCode::HygienePathTooLong]);
    assert_eq!(req().path("/012345678").codes(&p), vec![]);
}

#[test]
fn framing() {
    let p = observe("gateway-strict", json!({}));
    let post = || req().method("POST").body();
    case(&p, "contentLength", post().h("content-length", "1,1"), post().h("content-length", "2"));
    case(
        &p,
        "contentLength",
        post().h("content-length", "1").h("content-length", "1"),
        post().h("content-length", " 1"),
    );
    case(&p, "contentLength", post().h("content-length", "-1"), post().h("content-length", "0"));
    case(
        &p,
        "transferEncoding",
        post().h("transfer-encoding", "gzip, chunked"),
        post().h("transfer-encoding", "chunked"),
    );
    case(
        &p,
        "transferEncoding",
        post().h("transfer-encoding", "chunked").h("content-length", "3"),
        post().h("transfer-encoding", "Chunked"),
    );
    case(&p, "teHeader", req().h("te", "gzip"), req().h("te", "trailers"));
    case(&p, "teHeader", req().h("te", "trailers, deflate"), req().h("te", " trailers "));
    case(&p, "bodyOnGet", req().h("content-length", "5"), req().h("content-length", "0"));
    case(&p, "bodyOnGet", req().body(), req().method("POST").body());
    case(&p, "bodyOnGet", req().method("DELETE").h("content-length", "2"), req().method("DELETE"));
    case(&p, "bodyOnGet", req().method("HEAD").body(), req().method("PUT").h("content-length", "2"));
    let ws = || {
        req()
            .h("connection", "Upgrade")
            .h("upgrade", "websocket")
            .h("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .h("sec-websocket-version", "13")
            .body()
    };
    case(&p, "bodyOnUpgrade", ws().h("content-length", "3"), ws());
    assert!(!ws().codes(&p).contains(&ReasonCode::HygieneBodyOnGet), "an upgrade's open stream is not a body");
    // The sidecar preset lets DELETE and OPTIONS carry a body (some APIs do), not GET.
    let s = preset("sidecar");
    assert_eq!(req().method("DELETE").h("content-length", "2").codes(&s), vec![]);
    assert_eq!(req().h("content-length", "2").codes(&s), vec![ReasonCode::HygieneBodyOnGet]);
}

#[test]
fn header_names_and_values() {
    let p = observe("gateway-strict", json!({}));
    case(&p, "underscoreHeaders", req().h("x_forwarded_for", "1.2.3.4"), req().h("x-forwarded-for", "1.2.3.4"));
    case(&p, "underscoreHeaders", req().h("content_length", "5"), req().h("content-length", "0"));
    case(&p, "headerNames", req().h("x(a)", "1"), req().h("x-a!#$%&'*+.^`|~", "1"));
    case(&p, "headerNames", req().pseudo("evil", "1"), req().pseudo("protocol", "websocket").method("CONNECT"));
    case(&p, "controlBytes", req().h("x-a", "a\r\nx-injected: 1"), req().h("x-a", "a\tb"));
    case(&p, "controlBytes", req().h("x-a", b"a\x00b"), req().h("x-a", "a b"));
    case(&p, "controlBytes", req().h("x-a", b"a\x7fb"), req().h("x-a", "~"));
    case(&p, "nonAsciiValues", req().h("x-a", b"caf\xe9"), req().h("x-a", "caf\u{e9}"));
    case(&p, "nonAsciiValues", req().h("x-a", b"\xc0\xaf"), req().h("x-a", "plain"));
    let no_utf8 = observe("gateway-strict", json!({"nonAsciiValues": {"allowUtf8": false}}));
    case(&no_utf8, "nonAsciiValues", req().h("x-a", "caf\u{e9}"), req().h("x-a", "cafe"));
    case(&p, "valueWhitespace", req().h("x-a", " a"), req().h("x-a", "a b"));
    case(&p, "valueWhitespace", req().h("x-a", "a\t"), req().h("x-a", ""));
}

#[test]
fn singleton_headers() {
    let p = observe("gateway-strict", json!({}));
    let g = "singletonHeaders";
    case(&p, g, req().authority("a.example.com,b.example.com"), req().authority("a.example.com"));
    case(&p, g, req().h("host", "evil.example.com"), req().h("host", "api.example.com"));
    case(
        &p,
        g,
        req().authority("a").pseudo("authority", "a").h("host", "a").h("host", "a"),
        req().h("host", "api.example.com"),
    );
    case(
        &p,
        g,
        req().h("content-type", "text/plain,application/json"),
        req().h("content-type", "multipart/form-data; boundary=\"a,b\""),
    );
    case(&p, g, req().h("content-type", "a").h("content-type", "b"), req().h("content-type", "application/json"));
    case(
        &p,
        g,
        req().h("authorization", "Bearer a,Bearer b"),
        req().h("authorization", "Digest realm=\"r\", nonce=\"n\""),
    );
    case(
        &p,
        g,
        req().h("authorization", "Bearer a").h("authorization", "Bearer b"),
        req().h("authorization", "Bearer a.b.c"),
    );
    let extra = observe("gateway-strict", json!({"singletonHeaders": {"headers": ["X-Tenant"]}}));
    case(&extra, g, req().h("x-tenant", "a").h("x-tenant", "b"), req().h("x-tenant", "a"));
    case(&extra, g, req().h("x-tenant", "a,b"), req().h("x-tenant", "\"a,b\""));
}

#[test]
fn authority_and_scheme() {
    let p = observe("gateway-strict", json!({}));
    for bad in ["", "user@api.example.com", "a,b", "api.example.com:99999", "api.example.com:8o", "[::1", "[zz]", "a b"]
    {
        case(&p, "authority", req().authority(bad), req().authority("api.example.com:8443"));
    }
    case(&p, "authority", req().authority("[::1]x"), req().authority("[fd00::1]:8080"));
    case(&p, "scheme", req().plaintext(), req().plaintext().pseudo("scheme", "http"));
    case(&p, "scheme", req().pseudo("scheme", "ftp"), req().pseudo("scheme", "http"));
    case(&p, "scheme", req().pseudo("scheme", "HTTPS"), req().mtls("spiffe://cluster.local/ns/a/sa/b"));
    // Sidecar to sidecar, Istio sends `:scheme http` over mTLS: that is no contradiction.
    assert_eq!(
        req().pseudo("scheme", "http").mtls("spiffe://cluster.local/ns/a/sa/b").codes(&preset("sidecar")),
        vec![]
    );
}

#[test]
fn methods() {
    let p = observe("gateway-strict", json!({}));
    case(&p, "methodToken", req().method("get"), req().method("GET"));
    case(&p, "methodToken", req().method("G@T"), req().method("M-SEARCH"));
    case(&p, "methodToken", req().method(""), req().method("POST"));
    case(&p, "methodAllowlist", req().method("PROPFIND"), req().method("PATCH"));
    case(&p, "riskyMethods", req().method("TRACE"), req().method("OPTIONS"));
    case(&p, "riskyMethods", req().method("TRACK"), req().method("HEAD"));
    case(&p, "riskyMethods", req().method("CONNECT"), req().method("GET"));
    let trace_ok = policy(json!({"version": 1, "hygiene": {"guards": {"riskyMethods": {"allow": ["TRACE"]}}}}));
    assert_eq!(req().method("TRACE").codes(&trace_ok), vec![]);
    assert_eq!(req().method("TRACK").codes(&trace_ok), vec![ReasonCode::HygieneMethodRisky]);
    for h in ["x-http-method-override", "X-HTTP-Method", "x-method-override"] {
        case(
            &p,
            "methodOverride",
            req().method("POST").h(h, "DELETE"),
            req().method("POST").h("x-http-method-overrid", "DELETE"),
        );
    }
    // The sidecar preset has no method allowlist (WebDAV and custom methods pass).
    assert_eq!(req().method("PROPFIND").codes(&preset("sidecar")), vec![]);
}

#[test]
fn upgrades_and_expect() {
    let p = observe("gateway-strict", json!({}));
    let ws = || {
        req()
            .h("connection", "Upgrade")
            .h("upgrade", "websocket")
            .h("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .h("sec-websocket-version", "13")
            .body()
    };
    case(&p, "h2cUpgrade", req().h("connection", "Upgrade, HTTP2-Settings").h("upgrade", "h2c"), ws());
    case(&p, "h2cUpgrade", req().h("http2-settings", "AAMAAABkAAQAAP__"), req().h("x-http2", "1"));
    case(&p, "websocket", ws().method("POST"), ws());
    case(
        &p,
        "websocket",
        ws().without("sec-websocket-version").h("sec-websocket-version", "8"),
        ws().h("sec-websocket-protocol", "chat"),
    );
    case(
        &p,
        "websocket",
        ws().without("sec-websocket-key").h("sec-websocket-key", "short=="),
        ws().h("origin", "https://a.example"),
    );
    case(&p, "websocket", ws().without("sec-websocket-key"), ws());
    case(
        &p,
        "websocket",
        ws().without("connection"),
        ws().without("connection").h("connection", "keep-alive, Upgrade"),
    );
    // RFC 8441 (websocket over HTTP/2): extended CONNECT, no key.
    let h2ws = req()
        .method("CONNECT")
        .pseudo("protocol", "websocket")
        .h("upgrade", "websocket")
        .h("sec-websocket-version", "13");
    assert!(!h2ws.codes(&p).contains(&ReasonCode::HygieneWebsocketMalformed));
    let no_key = policy(json!({"version": 1, "hygiene": {"guards": {"websocket": {"requireKey": false}}}}));
    assert_eq!(ws().without("sec-websocket-key").codes(&no_key), vec![]);
    let post = || req().method("POST").h("content-length", "3");
    case(&p, "expect", post().h("expect", "100-continue, foo"), post().h("expect", "100-Continue"));
    case(&p, "expect", req().h("expect", "100-continue"), post().h("expect", "100-continue"));
    case(&p, "expect", post().h("expect", "100-continue").h("expect", "100-continue"), post());
    // The sidecar preset does not require a body with Expect (some clients send it anyway).
    assert_eq!(req().h("expect", "100-continue").codes(&preset("sidecar")), vec![]);
}

#[test]
fn path_confusion() {
    let p = observe("gateway-strict", json!({}));
    let ok = || req().path("/api/v1/items?next=%2F..%2F&q=%3B%25");
    case(&p, "encodedSlash", req().path("/admin%2Fusers"), ok());
    case(&p, "encodedSlash", req().path("/a%5cb"), ok());
    case(&p, "dotSegments", req().path("/public/../admin"), ok());
    case(&p, "dotSegments", req().path("/public/%2e%2E/admin"), req().path("/a/...b/.c"));
    case(&p, "dotSegments", req().path("/public/..;/admin"), ok());
    case(&p, "doubleSlash", req().path("//admin"), req().path("/admin/"));
    case(&p, "pathParameters", req().path("/admin;jsessionid=x"), ok());
    case(&p, "pathParameters", req().path("/admin%3Bx"), ok());
    case(&p, "doubleEncoding", req().path("/%252e%252e/admin"), req().path("/100%25"));
    case(&p, "encodedControl", req().path("/a%00.json"), req().path("/a%20b"));
    case(&p, "encodedControl", req().path("/a%0d%0aSet-Cookie:x"), ok());
    case(&p, "invalidUtf8", req().path("/a%C0%AFb"), req().path("/caf%C3%A9"));
    case(&p, "invalidUtf8", req().path("/a%ff"), ok());
    case(&p, "encodedDelimiters", req().path("/a%23b"), req().path("/a?b=%23"));
    case(&p, "encodedDelimiters", req().path("/a%3Fb"), ok());
    case(&p, "pathCharacters", req().path("/caf\u{e9}"), req().path("/a|b^c[d]"));
    case(&p, "pathCharacters", req().path("/a\\b"), ok());
    case(&p, "pathCharacters", req().path("/a#frag"), ok());
    case(&p, "pathCharacters", req().path("/a?x=\u{e9}"), ok());
}

#[test]
fn the_sidecar_preset_only_logs_the_path_spellings_ordinary_apps_use() {
    let s = preset("sidecar");
    for (path, code) in [
        ("/a//b", ReasonCode::HygienePathDoubleSlash),
        ("/a;jsessionid=1", ReasonCode::HygienePathParameter),
        ("/a%ff", ReasonCode::HygienePathInvalidUnicode),
        ("/a%3Fb", ReasonCode::HygienePathEncodedDelimiter),
    ] {
        let d = req().path(path).eval(&s);
        assert_eq!(d.outcome().as_str(), "allow", "{path}");
        assert_eq!(d.findings.len(), 1, "{path}: {:?}", d.findings);
        assert_eq!((d.findings[0].code, d.findings[0].remedy, d.findings[0].enforced), (code, Remedy::Log, false));
    }
    for path in ["/a%2Fb", "/a/%2e%2e/b", "/a%00", "/a%252F"] {
        assert_eq!(req().path(path).eval(&s).outcome().as_str(), "deny", "{path}");
    }
}

#[test]
fn trust_headers_from_a_client() {
    let p = observe("gateway-strict", json!({}));
    case(&p, "envoyHeaders", req().h("x-envoy-original-path", "/admin"), req().h("x-envoyish", "1"));
    case(&p, "envoyHeaders", req().h("X-Envoy-Retry-On", "5xx"), req().h("x-envoyish", "1"));
    // Envoy sets these two only on an edge listener (`use_remote_address: true`); on any other
    // the client's values pass, and the filter cannot tell which listener it is on.
    case(&p, "envoyHeaders", req().h("x-envoy-external-address", "10.0.0.1"), req());
    case(&p, "envoyHeaders", req().h("x-envoy-internal", "true"), req());
    case(
        &p,
        "peerMetadata",
        req().h("x-envoy-peer-metadata", "Cgk="),
        req().mtls("spiffe://cluster.local/ns/a/sa/b").h("x-envoy-peer-metadata", "Cgk="),
    );
    case(&p, "peerMetadata", req().h("x-envoy-peer-metadata-id", "sidecar~1"), req());
    case(&p, "forwardedRouting", req().h("x-forwarded-host", "evil.example"), req().h("x-forwarded-proto", "https"));
    case(&p, "forwardedRouting", req().h("x-forwarded-prefix", "/x"), req());
    case(&p, "forwardedRouting", req().h("forwarded", "for=1.2.3.4;host=evil"), req());
    case(&p, "urlOverride", req().h("x-original-url", "/admin"), req().h("x-original-uri-ish", "/"));
    case(&p, "urlOverride", req().h("x-rewrite-url", "/admin"), req());
    case(&p, "clientIp", req().h("x-real-ip", "10.0.0.1"), req().h("x-forwarded-for", "10.0.0.1"));
    case(&p, "clientIp", req().h("true-client-ip", "10.0.0.1"), req());
    case(
        &p,
        "proxyAuthorization",
        req().h("proxy-authorization", "Basic eDp5"),
        req().h("authorization", "Basic eDp5"),
    );
    case(&p, "requestId", req().without("x-request-id").h("x-request-id", "a b\"c"), req());
    case(
        &p,
        "requestId",
        req().h("x-request-id", "other"),
        req().without("x-request-id").h("x-request-id", "Root=1-5e1b4151-5ac6c58f5f0f3e"),
    );
    case(&p, "requestId", req().without("x-request-id").h("x-request-id", "a,b"), req().without("x-request-id"));
    case(
        &p,
        "requestId",
        req().without("x-request-id").h("x-request-id", "x".repeat(129)),
        req().without("x-request-id").h("x-request-id", "x".repeat(128)),
    );
}

#[test]
fn xfcc_elements_the_local_envoy_did_not_add() {
    const REAL: &str = "By=spiffe://cluster.local/ns/default/sa/api;Hash=abc;URI=spiffe://cluster.local/ns/web/sa/web";
    const FORGED: &str = "URI=spiffe://cluster.local/ns/ops/sa/admin";
    let web = "spiffe://cluster.local/ns/web/sa/web";
    let p = observe("gateway-strict", json!({}));
    // APPEND_FORWARD: the client's element first, the real one appended last.
    case(
        &p,
        "xfcc",
        req().mtls(web).h("x-forwarded-client-cert", format!("{FORGED},{REAL}")),
        req().mtls(web).h("x-forwarded-client-cert", REAL),
    );
    case(
        &p,
        "xfcc",
        req().mtls(web).h("x-forwarded-client-cert", FORGED).h("x-forwarded-client-cert", REAL),
        req().mtls(web),
    );
    // A quoted comma is one element.
    let quoted = format!("Subject=\"CN=a,O=b\";{REAL}");
    assert_eq!(req().mtls(web).h("x-forwarded-client-cert", &quoted).codes(&p), vec![]);
    // Not mTLS: Envoy adds nothing, so any XFCC is the client's.
    case(&p, "xfcc", req().h("x-forwarded-client-cert", REAL), req());
    case(&p, "xfcc", req().mtls(web).h("x-forwarded-client-cert", "Subject=\"unterminated"), req().mtls(web));

    // The strip keeps exactly the element the local Envoy appended.
    let p = preset("gateway-strict");
    let d = req().mtls(web).h("x-forwarded-client-cert", format!("{FORGED},{REAL}")).eval(&p);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(
        d.mutations,
        vec![HeaderMutation::Set { name: b"x-forwarded-client-cert".to_vec(), value: REAL.as_bytes().to_vec() }]
    );
    // ... and removes the header entirely on a plaintext connection.
    let d = req().plaintext().pseudo("scheme", "http").h("x-forwarded-client-cert", REAL).eval(&p);
    assert_eq!(d.mutations, vec![HeaderMutation::Remove { name: b"x-forwarded-client-cert".to_vec() }]);

    // A peer the policy trusts to forward XFCC (an ingress gateway) keeps the earlier elements.
    let gw = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let trusting = policy(
        json!({"version": 1, "hygiene": {"guards": {"xfcc": {"trustForwardedFrom": ["spiffe://cluster.local/ns/istio-system/sa/*"]}}}}),
    );
    assert!(trusting.needs().peer, "the trusted-forwarder list needs the peer's URI SAN");
    assert_eq!(req().mtls(gw).h("x-forwarded-client-cert", format!("{FORGED},{REAL}")).codes(&trusting), vec![]);
    assert_eq!(
        req().mtls(web).h("x-forwarded-client-cert", format!("{FORGED},{REAL}")).codes(&trusting),
        vec![ReasonCode::HygieneXfccUntrustedElement]
    );
}

#[test]
fn the_sidecar_preset_trusts_mtls_peers_and_strips_the_rest() {
    let s = preset("sidecar");
    let peer = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    let spoofy = |r: Req| {
        r.h("x-forwarded-host", "shop.example.com")
            .h("x-envoy-attempt-count", "1")
            .h("x-real-ip", "203.0.113.7")
            .h("x-envoy-peer-metadata", "Cgk=")
            .h("x_legacy", "1")
    };
    // From an mTLS peer (another sidecar, a gateway): believed.
    let d = spoofy(req().mtls(peer)).eval(&s);
    assert_eq!(d.findings.iter().map(|f| f.code).collect::<Vec<_>>(), vec![ReasonCode::HygieneUnderscoreHeader]);
    // From anyone else: every one stripped, the request goes on.
    let d = spoofy(req()).eval(&s);
    assert_eq!(d.outcome().as_str(), "allow");
    assert!(d.findings.iter().all(|f| f.remedy == Remedy::Strip && f.enforced), "{:?}", d.findings);
    let mut removed: Vec<String> = d.mutations.iter().map(|m| String::from_utf8_lossy(m.name()).into_owned()).collect();
    removed.sort();
    assert_eq!(
        removed,
        ["x-envoy-attempt-count", "x-envoy-peer-metadata", "x-forwarded-host", "x-real-ip", "x_legacy"]
    );
    assert!(d.mutations.iter().all(|m| matches!(m, HeaderMutation::Remove { .. })));
}

#[test]
fn strip_names_every_offending_header_once_in_lowercase() {
    let p = preset("sidecar");
    let d = req().h("X_A", "1").h("x_a", "2").h("x_b", "3").eval(&p);
    assert_eq!(
        d.mutations,
        vec![HeaderMutation::Remove { name: b"x_a".to_vec() }, HeaderMutation::Remove { name: b"x_b".to_vec() }]
    );
}

#[test]
fn modes_and_actions() {
    // A guard in dry-run records a would-deny and lets the request through.
    let p = policy(
        json!({"version": 1, "hygiene": {"preset": "gateway-strict", "guards": {"encodedSlash": {"mode": "dry-run"}}}}),
    );
    let d = req().path("/a%2Fb").eval(&p);
    assert_eq!((d.outcome().as_str(), d.enforced()), ("would_deny", false));
    assert_eq!(d.findings[0].rule, "hygiene.guards.encodedSlash");
    // The check's mode and the policy's mode win over an enforcing guard.
    for doc in [
        json!({"version": 1, "hygiene": {"preset": "gateway-strict", "mode": "dry-run"}}),
        json!({"version": 1, "mode": "dry-run", "hygiene": {"preset": "gateway-strict"}}),
    ] {
        let d = req().path("/a%2Fb").h("x-envoy-foo", "1").eval(&policy(doc));
        assert_eq!(d.outcome().as_str(), "would_deny");
        assert!(d.findings.iter().all(|f| !f.enforced));
        assert!(d.mutations.is_empty(), "a strip in dry-run strips nothing");
    }
    // The audit preset: every gateway-strict guard, all in dry-run; one guard can be enforced.
    let audit = preset("audit");
    let d = req().path("//a%2Fb").h("x_y", "1").h("x-envoy-foo", "1").eval(&audit);
    assert_eq!(d.outcome().as_str(), "would_deny");
    assert_eq!(d.findings.len(), 4, "{:?}", d.findings);
    assert!(d.mutations.is_empty());
    let one =
        policy(json!({"version": 1, "hygiene": {"preset": "audit", "guards": {"doubleSlash": {"mode": "enforce"}}}}));
    assert_eq!(req().path("//a%2Fb").eval(&one).outcome().as_str(), "deny");
    // log: recorded, never enforced, whatever the modes.
    let log = policy(
        json!({"version": 1, "hygiene": {"preset": "gateway-strict", "guards": {"encodedSlash": {"action": "log"}}}}),
    );
    let d = req().path("/a%2Fb").eval(&log);
    assert_eq!((d.outcome().as_str(), d.findings[0].remedy, d.findings[0].enforced), ("allow", Remedy::Log, false));
    // enabled: false
    let off = policy(
        json!({"version": 1, "hygiene": {"preset": "gateway-strict", "guards": {"encodedSlash": {"enabled": false}}}}),
    );
    assert_eq!(req().path("/a%2Fb").codes(&off), vec![]);
}

#[test]
fn the_first_enforced_rejection_ends_the_evaluation() {
    let p = policy(json!({
        "version": 1,
        "hygiene": {"preset": "gateway-strict", "guards": {"headerCount": {"mode": "dry-run", "max": 1}}},
        "identity": {"requirePeerIdentity": true}
    }));
    let d = req().method("get").path("/a%2Fb").eval(&p);
    let codes: Vec<_> = d.findings.iter().map(|f| (f.code, f.enforced)).collect();
    assert_eq!(codes, vec![(ReasonCode::HygieneTooManyHeaders, false), (ReasonCode::HygieneMethodInvalid, true)]);
    assert_eq!(d.primary().unwrap().code, ReasonCode::HygieneMethodInvalid);
    // Hygiene passes: the identity check runs next.
    assert_eq!(req().codes(&p), vec![ReasonCode::HygieneTooManyHeaders, ReasonCode::PeerIdentityMissing]);
}

#[test]
fn needs_follow_the_enabled_guards() {
    let n = preset("sidecar").needs();
    assert!(n.mtls && n.tls && !n.peer, "{n:?}");
    let n = policy(json!({"version": 1, "hygiene": {"preset": "gateway-strict", "guards": {
        "scheme": {"enabled": false}, "xfcc": {"enabled": false}, "peerMetadata": {"enabled": false}}}}))
    .needs();
    assert!(!n.mtls && !n.tls && !n.peer, "gateway-strict trusts no mTLS peer: {n:?}");
    let n = policy(json!({"version": 1})).needs();
    assert!(!n.mtls && !n.tls && !n.peer);
}

#[test]
fn configuration_errors_name_the_field() {
    let errs = errors(json!({"version": 1, "hygiene": {"guards": {
        "underscoreHeaders": {"action": "drop"}
    }}}));
    assert!(errs[0].starts_with("hygiene.guards.underscoreHeaders.action: unknown variant `drop`"), "{errs:?}");
    let errs = errors(json!({"version": 1, "hygiene": {"guards": {"underscoreHeader": {}}}}));
    assert!(errs[0].starts_with("hygiene.guards.underscoreHeader: unknown field `underscoreHeader`"), "{errs:?}");
    let errs = errors(json!({"version": 1, "hygiene": {"guards": {"pathLength": {"maximum": 3}}}}));
    assert!(errs[0].starts_with("hygiene.guards.pathLength.maximum: unknown field"), "{errs:?}");
    let errs = errors(json!({"version": 1, "hygiene": {"preset": "strict"}}));
    assert!(errs[0].starts_with("hygiene.preset: unknown variant `strict`"), "{errs:?}");
    let errs = errors(json!({"version": 1, "hygiene": {"guards": {
        "encodedSlash": {"action": "strip"},
        "pathLength": {"max": 0},
        "bodyOnGet": {"methods": ["GET", "get"]},
        "methodAllowlist": {"methods": []},
        "riskyMethods": {"allow": ["DELETE"]},
        "singletonHeaders": {"headers": ["x tenant"]},
        "envoyHeaders": {"allow": ["x-forwarded-for"]},
        "xfcc": {"trustForwardedFrom": ["not-spiffe"]}
    }}}));
    let paths: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "hygiene.guards.pathLength.max",
            "hygiene.guards.encodedSlash.action",
            "hygiene.guards.bodyOnGet.methods[1]",
            "hygiene.guards.methodAllowlist.methods",
            "hygiene.guards.riskyMethods.allow[0]",
            "hygiene.guards.singletonHeaders.headers[0]",
            "hygiene.guards.envoyHeaders.allow[0]",
            "hygiene.guards.xfcc.trustForwardedFrom[0]",
        ],
        "{errs:#?}"
    );
}

#[test]
fn identity_routes_match_one_canonical_path() {
    // With the path guards in log mode, the rules still see one canonical path: no spelling
    // escapes a deny rule.
    let p = policy(json!({
        "version": 1,
        "hygiene": {"preset": "audit"},
        "identity": {"requirePeerIdentity": false, "rules": [
            {"id": "no-admin", "action": "deny", "match": {"paths": [{"prefix": "/admin"}]}, "principals": ["*"]}
        ]}
    }));
    let web = "spiffe://cluster.local/ns/web/sa/web";
    for path in [
        "/admin",
        "/admin;jsessionid=1",
        "/public/..;/admin",
        "//admin",
        "/%61dmin",
        "/x/%2e%2e/admin",
        "/admin;x/users",
        "/;x/admin",
    ] {
        let d = req().path(path).mtls(web).eval(&p);
        assert!(d.enforced(), "{path}: {:?}", d.findings);
        assert_eq!(d.primary().unwrap().code, ReasonCode::PeerIdentityPrincipalDenied, "{path}");
    }
    assert!(!req().path("/administrator").mtls(web).eval(&p).enforced());
}

/// xorshift64*: deterministic noise.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"%",
            b"%2F",
            b"%2e",
            b"%25",
            b"%C0",
            b"%AF",
            b"%00",
            b"/",
            b"//",
            b"..",
            b".",
            b";",
            b"?",
            b"&",
            b"#",
            b",",
            b"\"",
            b"\\",
            b"=",
            b" ",
            b"\t",
            b"\r",
            b"\n",
            b"\0",
            b"\xff",
            b"\xc3\xa9",
            b"_",
            b"-",
            b"a",
            b"Z",
            b"0",
            b"9",
            b"chunked",
            b"trailers",
            b"websocket",
            b"h2c",
            b"100-continue",
            b"Bearer ",
            b"URI=",
            b"[",
            b"]",
            b":",
            b"@",
            b"for=",
            b"unknown",
            b"10.0.0.1",
            b"2001:db8::1",
            b"00-",
            b"4bf92f3577b34da6a3ce929d0e0e4736",
            b"00f067aa0ba902b7",
            b"Root=1-",
            b"[redacted]",
        ];
        let n = (self.next() % max as u64) as usize;
        let mut out = Vec::new();
        for _ in 0..n {
            if self.next() & 3 == 0 {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[(self.next() % PIECES.len() as u64) as usize]);
            }
        }
        out
    }
}

#[test]
fn never_panics_on_random_bytes() {
    const NAMES: &[&[u8]] = &[
        b":method",
        b":path",
        b":authority",
        b":scheme",
        b":protocol",
        b":x",
        b"content-length",
        b"transfer-encoding",
        b"te",
        b"host",
        b"content-type",
        b"authorization",
        b"expect",
        b"upgrade",
        b"connection",
        b"http2-settings",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"x-http-method-override",
        b"x-envoy-peer-metadata",
        b"x-envoy-foo",
        b"x-forwarded-client-cert",
        b"x-forwarded-host",
        b"forwarded",
        b"x-original-url",
        b"x-real-ip",
        b"proxy-authorization",
        b"x-request-id",
        b"x_under",
        b"",
        b"X-Tenant",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"cf-connecting-ip",
        b"x-forwarded-port",
        b"traceparent",
        b"tracestate",
        b"b3",
        b"x-b3-sampled",
        b"uber-trace-id",
        b"x-cloud-trace-context",
        b"x-amzn-trace-id",
        b"x-client-trace-id",
        b"x-envoy-force-trace",
        b"x-user",
        b"x-api-key",
    ];
    let strictest = policy(json!({"version": 1, "decisionLog": {"allowSampleRate": 1}, "hygiene": {
    "preset": "gateway-strict",
    "guards": {
        "nonAsciiValues": {"allowUtf8": false},
        "singletonHeaders": {"headers": ["x-tenant"]},
        "xfcc": {"trustForwardedFrom": ["spiffe://cluster.local/ns/*/sa/*"]},
        "headerCount": {"max": 8}, "queryParams": {"max": 2}
    }}}));
    let sidecar = preset("sidecar");
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for _ in 0..(g.next() % 12) {
            let name =
                if g.next() % 5 == 1 { g.bytes(12) } else { NAMES[(g.next() % NAMES.len() as u64) as usize].to_vec() };
            owned.push((name, g.bytes(40)));
        }
        let pairs: Vec<(&[u8], &[u8])> = owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let uri = g.bytes(30);
        let peer = Peer { mtls: round % 3 == 0, uri_san: (round % 2 == 0).then_some(uri.as_slice()) };
        let view = RequestView::new(&pairs, peer, Direction::Inbound)
            .with_end_of_stream(round % 5 != 0)
            .with_tls(round % 7 != 0);
        for p in [&strictest, &sidecar] {
            let d = p.evaluate(&view);
            for m in &d.mutations {
                assert!(pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case(m.name())), "mutation of an absent header");
            }
            let line = p.decision_log_line(&d, &view, 0);
            serde_json::from_str::<Value>(&line).unwrap();
        }
    }
}

/// `crate::fuzzing::hygiene` (the cargo-fuzz target's property) on generated bytes: mutations
/// name present headers, and a strip leaves nothing for its guard to find.
#[test]
fn strips_remove_everything_they_found() {
    let strict = policy(json!({"version": 1, "hygiene": {"preset": "gateway-strict", "guards": {
        "nonAsciiValues": {"allowUtf8": false, "action": "strip"}, "underscoreHeaders": {"action": "strip"},
        "envoyHeaders": {"action": "strip"}, "controlBytes": {"action": "strip"},
        "methodOverride": {"action": "strip"}, "h2cUpgrade": {"action": "strip"}, "teHeader": {"action": "strip"},
        "expect": {"action": "strip"}, "urlOverride": {"action": "strip"}}}}));
    let sidecar = preset("sidecar");
    let mut g = Gen(0x2545_f491_4f6c_dd1d);
    const NAMES: &[&str] = &[
        ":method:GET",
        ":path:/",
        ":authority:a",
        "x_a:",
        "x-envoy-a:",
        "x-envoy-peer-metadata:",
        "te:",
        "expect:",
        "upgrade:h2c",
        "http2-settings:",
        "x-http-method:",
        "x-forwarded-client-cert:",
        "x-real-ip:",
        "x-request-id:",
    ];
    for _ in 0..20_000 {
        let mut data = vec![(g.next() % 8) as u8];
        data.extend_from_slice(b"spiffe://cluster.local/ns/a/sa/b");
        for _ in 0..(g.next() % 8) {
            data.push(b'\n');
            data.extend_from_slice(NAMES[(g.next() % NAMES.len() as u64) as usize].as_bytes());
            data.extend(g.bytes(10).into_iter().filter(|&b| b != b'\n'));
        }
        for p in [&strict, &sidecar] {
            crate::fuzzing::hygiene(p, &data).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&data)));
        }
    }
}

// ----- Units -----

#[test]
fn guard_table_is_consistent() {
    let mut names = std::collections::HashSet::new();
    for &g in Guard::ALL {
        assert!(names.insert(g.name()), "duplicate guard {}", g.name());
        assert_eq!(g.rule(), format!("hygiene.guards.{}", g.name()));
        assert_eq!(g.code().check(), crate::reason::Check::Hygiene);
        assert_eq!(Guard::ALL.get(g as usize), Some(&g), "ALL is in declaration order");
    }
    let codes: std::collections::HashSet<_> = Guard::ALL.iter().map(|g| g.code()).collect();
    assert_eq!(codes.len(), Guard::ALL.len(), "one reason code per guard");
    let hygiene_codes = ReasonCode::ALL.iter().filter(|c| c.check() == crate::reason::Check::Hygiene).count();
    assert_eq!(hygiene_codes, Guard::ALL.len(), "every hygiene reason code belongs to a guard");
}

#[test]
fn classify_is_case_insensitive_and_allocation_free() {
    assert_eq!(classify(b"Content-Length"), Known::ContentLength);
    assert_eq!(classify(b"X-Envoy-Peer-Metadata-Id"), Known::PeerMetadata);
    assert_eq!(classify(b"x-envoy-original-path"), Known::Envoy);
    assert_eq!(classify(b"x-envoy-a-very-long-header-name-beyond-the-buffer"), Known::Envoy);
    assert_eq!(classify(b"a-very-long-header-name-beyond-the-stack-buffer"), Known::Other);
    assert_eq!(classify(b""), Known::Other);
}

#[test]
fn value_classes_agree_with_the_plain_definitions() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..200 {
        for _ in 0..50 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly printable, sometimes a tab, a control, DEL or a high byte.
                    match x % 40 {
                        0 => b'\t',
                        1 => (x >> 8) as u8 % 0x20,
                        2 => 0x7f,
                        3 => 0x80 | (x >> 8) as u8,
                        _ => 0x20 + ((x >> 8) as u8 % 0x5f),
                    }
                })
                .collect();
            let plain = (has_control(&v), v.iter().any(|&b| b >= 0x80));
            assert_eq!(value_classes(&v), plain, "{v:?}");
        }
    }
    for b in 0..=255u8 {
        assert_eq!(name_classes(&[b]), (!is_tchar(b), b == b'_'), "{b}");
        let v = [b'a', b'a', b'a', b'a', b'a', b'a', b'a', b];
        assert_eq!(value_classes(&v), (has_control(&v), b >= 0x80), "{b}");
    }
}

/// The guard reads the authority with the one authority parser. Where the guard's own
/// reader used to be laxer (`~`, port 0, leading zeros, empty labels, a numeric last label
/// that is no IPv4), it is now as strict as identity and egress; an IPv6 zone stays refused.
#[test]
fn authorities() {
    let valid = |a: &str| {
        let pairs: [(&[u8], &[u8]); 1] = [(b":authority", a.as_bytes())];
        authority_is_valid(&RequestView::new(&pairs, Default::default(), Default::default()))
    };
    for ok in
        ["api", "api.default.svc.cluster.local:8080", "10.0.0.5:80", "[::1]", "[fd00::1]:8080", "a_b.local", "x:1"]
    {
        assert!(valid(ok), "{ok}");
    }
    for bad in [
        "",
        "user@h",
        "a,b",
        "h x",
        "h\t",
        "h:99999",
        "h:8o",
        "h:",
        ":80",
        "[::1",
        "[zz]",
        "[::1]x",
        "[::1]:",
        "h:80:80",
        "a%2eb",
        "h/x",
        "[fe80::1%25eth0]",
        "h:-1",
        "h:123456",
        // Refused since the guard shares the authority parser:
        "a~b",
        "h:0",
        "h:080",
        "a..b",
        ".a",
        "a.123",
    ] {
        assert!(!valid(bad), "{bad:?}");
    }
}

#[test]
fn websocket_keys() {
    assert!(websocket_key_is_valid(b"dGhlIHNhbXBsZSBub25jZQ=="));
    for bad in [&b"dGhlIHNhbXBsZSBub25jZQ="[..], b"dGhlIHNhbXBsZSBub25jZR==", b"dGhlIHNhbXBsZSBub25j*Q==", b""] {
        assert!(!websocket_key_is_valid(bad), "{bad:?}");
    }
}

#[test]
fn authorization_merges() {
    assert!(!authorization_merged(b"Bearer abc.def.ghi"));
    assert!(!authorization_merged(br#"Digest username="a,b", realm="r", nonce="n", uri="/x,y", response="z""#));
    assert!(!authorization_merged(b"Basic dXNlcjpwYXNz"));
    assert!(authorization_merged(b"Bearer a,Bearer b"));
    assert!(authorization_merged(b"Basic x,y"));
    assert!(authorization_merged(br#"Digest realm="r",Basic eA=="#));
}

#[test]
fn content_lengths() {
    assert_eq!(parse_content_length(b"0"), Some(0));
    assert_eq!(parse_content_length(b" 42 "), Some(42));
    for bad in [&b""[..], b"1,1", b"-1", b"+1", b"0x10", b"1 1", b"9999999999999999"] {
        assert_eq!(parse_content_length(bad), None, "{bad:?}");
    }
}

// Issue 10: the five classes of preset gaps, each closed as a whole, and the sidecar false
// positive.

const WEB: &str = "spiffe://cluster.local/ns/web/sa/web";

fn removed(d: &Decision) -> Vec<String> {
    let mut names: Vec<String> = d.mutations.iter().map(|m| String::from_utf8_lossy(m.name()).into_owned()).collect();
    names.sort();
    names
}

#[test]
fn the_client_address_and_forwarding_families() {
    let p = observe("gateway-strict", json!({}));
    for h in [
        "x-client-ip",
        "client-ip",
        "X-Cluster-Client-IP",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "cf-pseudo-ipv4",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-forwarded",
        "forwarded-for",
        "x-appengine-user-ip",
        "cloudfront-viewer-address",
        "CloudFront-Viewer-Country",
        "cloudfront-viewer-ja3-fingerprint",
        "x-azure-clientip",
        "x-azure-socketip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "wl-proxy-client-ip",
        "fly-client-ip",
        "do-connecting-ip",
        "x-nf-client-connection-ip",
        "x-vercel-forwarded-for",
        "x-sucuri-clientip",
        "cluster-client-ip",
        "x-true-ip",
        "real-ip",
        "x-original-remote-addr",
        "X-Custom-IP-Authorization",
    ] {
        case(&p, "clientIp", req().h(h, "203.0.113.7"), req().h("x-forwarded-for", "203.0.113.7"));
    }
    for h in [
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-forwarded-protocol",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-url-scheme",
        "x-scheme",
        "front-end-https",
        "x-arr-ssl",
        "cloudfront-forwarded-proto",
        "x-original-host",
        "x-host",
        "x-http-host-override",
    ] {
        case(&p, "forwardedRouting", req().h(h, "evil.example"), req().h("x-forwarded-proto", "https"));
    }
    for h in ["x-original-uri", "x-forwarded-uri", "x-proxy-url", "X-HTTP-DestinationURL"] {
        case(&p, "urlOverride", req().h(h, "/admin"), req());
    }
    // The gateway strips the whole family; x-forwarded-for (Envoy appends to it) stays.
    let g = preset("gateway-strict");
    let d = req()
        .h("cf-connecting-ip", "1.2.3.4")
        .h("x-forwarded-port", "8443")
        .h("fastly-client-ip", "1.2.3.4")
        .h("x-forwarded-for", "1.2.3.4")
        .eval(&g);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(removed(&d), ["cf-connecting-ip", "fastly-client-ip", "x-forwarded-port"]);
    // The sidecar believes them from an mTLS peer and strips them from anyone else.
    let s = preset("sidecar");
    assert_eq!(req().mtls(WEB).h("cf-connecting-ip", "1.2.3.4").h("x-forwarded-port", "443").codes(&s), vec![]);
    let d = req().h("cf-connecting-ip", "1.2.3.4").h("x-forwarded-port", "443").eval(&s);
    assert_eq!(removed(&d), ["cf-connecting-ip", "x-forwarded-port"]);
}

#[test]
fn every_forwarded_for_entry_is_an_address() {
    for name in ["sidecar", "gateway-strict"] {
        let p = observe(name, json!({}));
        let ok = req().h("x-forwarded-for", "203.0.113.7, 10.0.0.1").h("x-forwarded-for", "[2001:db8::1]:443");
        for bad in ["evil.example", "127.0.0.1, <script>alert(1)</script>", "0x7f.0.0.1", "", "10.0.0.1,,10.0.0.2"] {
            case(&p, "forwardedFor", req().h("x-forwarded-for", bad), ok.clone());
            // From an mTLS peer too: no proxy writes these.
            case(&p, "forwardedFor", req().mtls(WEB).h("x-forwarded-for", bad), ok.clone().mtls(WEB));
        }
        // Every field, not only the first.
        case(&p, "forwardedFor", req().h("x-forwarded-for", "10.0.0.1").h("x-forwarded-for", "admin"), ok.clone());
        case(
            &p,
            "forwardedFor",
            req().mtls(WEB).h("forwarded", "for=evil.example;proto=https"),
            req().mtls(WEB).h("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https, for=_hidden, for=unknown"),
        );
        case(&p, "forwardedFor", req().mtls(WEB).h("forwarded", "for=1.2.3.4:80"), req().mtls(WEB));
    }
    assert_eq!(
        req().h("x-forwarded-for", "evil").codes(&preset("sidecar")),
        vec![ReasonCode::HygieneForwardedForInvalid]
    );
    // The single-address headers of the client-address family are addresses too, even from
    // an mTLS peer the sidecar believes them from.
    let s = preset("sidecar");
    for (h, bad) in [("x-real-ip", "evil.example"), ("cf-connecting-ip", "<script>"), ("true-client-ip", "1.2.3.4, x")]
    {
        assert_eq!(req().mtls(WEB).h(h, bad).codes(&s), vec![ReasonCode::HygieneForwardedForInvalid], "{h}");
    }
    for (h, ok) in [
        ("x-real-ip", "203.0.113.7"),
        ("cf-connecting-ip", "2001:db8::7"),
        ("x-original-forwarded-for", "1.2.3.4, 5.6.7.8"),
    ] {
        assert_eq!(req().mtls(WEB).h(h, ok).codes(&s), vec![], "{h}");
    }
    // Not the ones with shapes of their own.
    assert_eq!(
        req().mtls(WEB).h("cloudfront-viewer-address", "2001:db8::1:443").h("x-forwarded", "for=1.2.3.4").codes(&s),
        vec![]
    );
    // With action strip, only the bad header goes.
    let strip = policy(json!({"version": 1, "hygiene": {"guards": {"forwardedFor": {"action": "strip"}}}}));
    let d = req().mtls(WEB).h("x-real-ip", "evil").h("cf-connecting-ip", "10.0.0.1").eval(&strip);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(removed(&d), ["x-real-ip"]);
}

#[test]
fn the_gateway_strips_every_client_envoy_header() {
    let g = preset("gateway-strict");
    let d = req()
        .h("x-envoy-external-address", "10.0.0.1")
        .h("x-envoy-internal", "true")
        .h("x-envoy-original-dst-host", "10.0.0.9:80")
        .h("x-envoy-upstream-rq-timeout-ms", "1")
        .h("x-envoy-hedge-on-per-try-timeout", "true")
        .eval(&g);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(
        removed(&d),
        [
            "x-envoy-external-address",
            "x-envoy-hedge-on-per-try-timeout",
            "x-envoy-internal",
            "x-envoy-original-dst-host",
            "x-envoy-upstream-rq-timeout-ms"
        ]
    );
    // allow still lets an operator keep one.
    let keep = policy(json!({"version": 1, "hygiene": {"preset": "gateway-strict",
        "guards": {"envoyHeaders": {"allow": ["x-envoy-external-address"]}}}}));
    assert_eq!(req().h("x-envoy-external-address", "10.0.0.1").codes(&keep), vec![]);
}

#[test]
fn envoys_own_external_address_is_kept_at_an_edge() {
    let g = preset("gateway-strict");
    assert!(g.needs().source_address, "the filter reads source.address for this guard");
    // At an edge Envoy writes the header from source.address: the same address is Envoy's.
    for (value, source) in
        [("203.0.113.9", "203.0.113.9:51234"), ("2001:db8::7", "[2001:db8::7]:443"), ("2001:db8::7", "2001:db8::7")]
    {
        let d = req().h("x-envoy-external-address", value).from(source).eval(&g);
        assert!(d.findings.is_empty(), "{value} from {source}: {:?}", d.findings);
    }
    // Anything else is a client's, on any listener: stripped.
    for (value, source) in [
        ("10.0.0.1", Some("203.0.113.9:51234")),
        ("203.0.113.9", None),
        ("203.0.113.9, 10.0.0.1", Some("203.0.113.9:1")),
        ("203.0.113.9:51234", Some("203.0.113.9:51234")),
        ("::ffff:203.0.113.9", Some("203.0.113.9:1")),
        ("admin", Some("203.0.113.9:1")),
    ] {
        let mut r = req().h("x-envoy-external-address", value);
        if let Some(s) = source {
            r = r.from(s);
        }
        let d = r.eval(&g);
        assert_eq!(removed(&d), ["x-envoy-external-address"], "{value} from {source:?}");
    }
    // Other x-envoy-* headers are never Envoy's own on arrival.
    let d = req().h("x-envoy-internal", "true").from("10.0.0.1:1").eval(&g);
    assert_eq!(removed(&d), ["x-envoy-internal"]);
    // An operator's allow needs no address.
    let keep = policy(json!({"version": 1, "hygiene": {"preset": "gateway-strict",
        "guards": {"envoyHeaders": {"allow": ["x-envoy-external-address"]}}}}));
    assert!(!keep.needs().source_address);
}

#[test]
fn tracing_headers() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let good = || {
        req()
            .h("traceparent", TP)
            .h("tracestate", "rojo=00f067aa0ba902b7")
            .h("tracestate", "congo=t61rcWkgMzE")
            .h("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .h("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
            .h("x-b3-spanid", "e457b5a2e4d86bd1")
            .h("x-b3-parentspanid", "05e3ac9a4f6e3b90")
            .h("uber-trace-id", "5f0c3b6f8d1e2a9b:7a1d2c3e4f5a6b7c:0:1")
            .h("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1")
            .h("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")
            .h("x-datadog-trace-id", "1234567890123456789")
            .h("x-datadog-parent-id", "987654321")
            .h("x-datadog-origin", "synthetics")
    };
    for name in ["sidecar", "gateway-strict"] {
        let p = observe(name, json!({}));
        assert_eq!(good().codes(&p), vec![], "{name}");
        assert_eq!(good().mtls(WEB).codes(&p), vec![], "{name}");
        for (h, bad) in [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
            ("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            ("tracestate", "Vendor=<script>"),
            ("b3", "not-a-trace"),
            ("x-b3-traceid", "80F198EE56343BA8"),
            ("x-b3-spanid", "e457b5a2e4d86bd1,e457b5a2e4d86bd2"),
            ("uber-trace-id", "'; drop table"),
            ("x-cloud-trace-context", "abc/1;o=1"),
            ("x-amzn-trace-id", "Root=1 2"),
            ("x-datadog-trace-id", "-1"),
        ] {
            case(&p, "traceContext", req().h(h, bad), good());
        }
        // Repeated where it may not be (tracestate may: W3C lets it be split).
        case(&p, "traceContext", req().h("traceparent", TP).h("traceparent", TP), good());
    }
    // The strip removes every field of a bad kind, nothing else.
    let s = preset("sidecar");
    let d = good().h("x-b3-traceid", "zz").eval(&s);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(removed(&d), ["x-b3-traceid"]);

    // At the edge a client does not choose what is traced or its trace id.
    let p = observe("gateway-strict", json!({}));
    for (h, v) in [
        ("x-client-trace-id", "my-own-id"),
        ("x-envoy-force-trace", "true"),
        ("x-b3-sampled", "1"),
        ("x-b3-flags", "1"),
        ("x-datadog-sampling-priority", "2"),
    ] {
        case(&p, "traceForcing", req().h(h, v), good());
    }
    let g = preset("gateway-strict");
    let d = good().h("x-client-trace-id", "mine").h("x-b3-sampled", "1").h("x-envoy-force-trace", "true").eval(&g);
    assert_eq!(d.outcome().as_str(), "allow");
    assert_eq!(removed(&d), ["x-b3-sampled", "x-client-trace-id", "x-envoy-force-trace"]);
    // In the mesh, sampling flags are how sidecars propagate the decision.
    assert_eq!(req().mtls(WEB).h("x-b3-sampled", "1").h("x-b3-flags", "1").codes(&s), vec![]);
    assert_eq!(req().h("x-b3-sampled", "0").h("x-client-trace-id", "a").codes(&s), vec![]);
}

#[test]
fn identity_headers_are_single_at_the_gateway() {
    let p = observe("gateway-strict", json!({}));
    let g = "singletonHeaders";
    for h in [
        "x-user",
        "x-user-id",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-remote-user",
        "remote-user",
        "x-tenant",
        "X-Tenant-ID",
        "x-org-id",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-amz-security-token",
        "x-consumer-id",
        "x-ms-client-principal-id",
        "x-goog-authenticated-user-email",
    ] {
        case(&p, g, req().h(h, "alice").h(h, "bob"), req().h(h, "alice").h("cookie", "a=1").h("cookie", "b=2"));
        case(&p, g, req().h(h, "alice,bob"), req().h(h, "alice"));
    }
    case(
        &p,
        g,
        req().h("proxy-authorization", "Basic eDp5").h("proxy-authorization", "Basic eTp6"),
        req().h("proxy-authorization", "Basic eDp5"),
    );
    // Cookie may repeat (HTTP/2 splits it: RFC 9113 8.2.3).
    assert_eq!(req().h("cookie", "a=1").h("cookie", "b=2").codes(&p), vec![]);
    // The sidecar leaves them alone unless asked; listed headers still count.
    let s = observe("sidecar", json!({}));
    assert_eq!(req().h("x-user", "a").h("x-user", "b").codes(&s), vec![]);
    let s = observe("sidecar", json!({"singletonHeaders": {"identityHeaders": true}}));
    case(&s, g, req().h("x-user", "a").h("x-user", "b"), req().h("x-user", "a"));
    let s = observe("sidecar", json!({"singletonHeaders": {"headers": ["x-tenant-id"]}}));
    case(&s, g, req().h("x-tenant-id", "a").h("x-tenant-id", "b"), req().h("x-tenant-id", "a"));
    let off = observe("gateway-strict", json!({"singletonHeaders": {"identityHeaders": false}}));
    assert_eq!(req().h("x-user", "a").h("x-user", "b").codes(&off), vec![]);
}

#[test]
fn identity_list_matches_classify() {
    for (i, name) in IDENTITY.iter().enumerate() {
        assert_eq!(classify(name), Known::Identity(i as u8), "{}", String::from_utf8_lossy(name));
        assert!(name.len() <= 32);
    }
    assert!(IDENTITY.len() <= 64);
}

#[test]
fn injected_values_are_refused_in_both_presets() {
    for name in ["sidecar", "gateway-strict"] {
        let p = observe(name, json!({}));
        let g = "injectedValues";
        // What Envoy delivers after deleting a bare CR in `Bearer a\rX-Injected: 1`.
        case(
            &p,
            g,
            req().h("authorization", "Bearer aX-Injected: 1"),
            req().h("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"),
        );
        case(
            &p,
            g,
            req().h("authorization", "Basic dXNlcjpwYXNz X-Injected:1"),
            req().h("authorization", "SharedKey myaccount:ctzMq410TV3wS7upTBcunJTDLEJwMAZuFPfr0mrrA08="),
        );
        case(
            &p,
            g,
            req().h("proxy-authorization", "Basic eDp5X-Admin: 1"),
            req().h("authorization", "Digest username=\"a\", realm=\"r\", nonce=\"n\""),
        );
        case(&p, g, req().h("x-user", "aliceX-Role: admin"), req().h("x-user", "alice@example.com"));
        case(&p, g, req().h("x-api-key", "kX-Tenant:\tacme"), req().h("x-api-key", "AIzaSyA-1_bc"));
        // The raw forms never pass either (HTTP/2 or a codec that keeps them).
        for v in [&b"Bearer a\rX-Injected: 1"[..], b"Bearer a\nX-Injected: 1", b"Bearer a\x00b", b"a\x0bb"] {
            case(&p, "controlBytes", req().h("authorization", v), req().h("authorization", "Bearer a"));
        }
    }
}

#[test]
fn the_sidecar_takes_https_from_x_forwarded_proto_the_gateway_does_not() {
    // Envoy copied `x-forwarded-proto: https` into `:scheme` on a plaintext HTTP/1.1 request
    // (an ingress controller that terminated TLS, in front of a PERMISSIVE pod).
    let ingress = || req().plaintext().h("x-forwarded-proto", "https");
    let s = observe("sidecar", json!({}));
    assert_eq!(ingress().codes(&s), vec![]);
    case(&s, "scheme", req().plaintext(), ingress());
    case(&s, "scheme", req().plaintext().h("x-forwarded-proto", "http"), ingress());
    let g = observe("gateway-strict", json!({}));
    case(&g, "scheme", ingress(), req().plaintext().pseudo("scheme", "http").h("x-forwarded-proto", "http"));
    // HTTP/2 keeps `:scheme http`, yet the app would read https from the header.
    case(&g, "scheme", req().plaintext().pseudo("scheme", "http").h("x-forwarded-proto", "https"), req());
    case(&g, "scheme", req().h("x-forwarded-proto", "https").h("x-forwarded-proto", "https"), req());
    case(&g, "scheme", req().h("x-forwarded-proto", "javascript"), req().h("x-forwarded-proto", "https"));
    let trusting = observe("gateway-strict", json!({"scheme": {"trustForwardedProto": true}}));
    assert_eq!(ingress().codes(&trusting), vec![]);
}

/// Ingress-controller and service-to-service shapes: the sidecar refuses none of them; over
/// mTLS (a meshed ingress, another sidecar) it finds nothing at all; over plaintext (a
/// PERMISSIVE pod) it only strips the client-address and forwarding headers it documents.
#[test]
fn ingress_and_mesh_shapes_pass_the_sidecar_preset() {
    let shapes: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "nginx-ingress",
            vec![
                ("x-request-id", "5f8e9c0a3b2d4e1f9a8b7c6d5e4f3a2b"),
                ("x-real-ip", "203.0.113.7"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-host", "shop.example.com"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-scheme", "https"),
                ("x-scheme", "https"),
                ("x-original-forwarded-for", "198.51.100.2"),
            ],
        ),
        (
            "aws-alb",
            vec![
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-amzn-trace-id", "Root=1-67891233-abcdef012345678912345678"),
            ],
        ),
        (
            "gclb",
            vec![
                ("x-forwarded-for", "203.0.113.7, 34.120.1.1"),
                ("x-forwarded-proto", "https"),
                ("via", "1.1 google"),
                ("x-cloud-trace-context", "105445aa7843bc8bf206b12000100000/1;o=1"),
                ("traceparent", "00-105445aa7843bc8bf206b12000100000-00f067aa0ba902b7-01"),
            ],
        ),
        (
            "cloudflare",
            vec![
                ("cf-connecting-ip", "2001:db8::7"),
                ("cf-ray", "8c1f2e3d4a5b6c7d-FRA"),
                ("cf-ipcountry", "DE"),
                ("cf-visitor", "{\"scheme\":\"https\"}"),
                ("x-forwarded-for", "2001:db8::7, 172.70.1.1"),
                ("x-forwarded-proto", "https"),
                ("cdn-loop", "cloudflare"),
            ],
        ),
        ("azure-app-gateway", vec![("x-forwarded-for", "203.0.113.7:51234"), ("x-original-host", "shop.example.com")]),
        (
            "istio-outbound",
            vec![
                ("x-request-id", "5d2c8b3e-4a1f-4c55-9b1e-2f7c9f1e0a12"),
                ("x-envoy-attempt-count", "1"),
                ("x-envoy-peer-metadata-id", "sidecar~10.244.0.5~web-7d9c.default~default.svc.cluster.local"),
                ("x-envoy-peer-metadata", "ChQKCkNMVVNURVJfSUQSBhoES3ViZQ=="),
                ("x-forwarded-proto", "http"),
                (
                    "x-forwarded-client-cert",
                    "By=spiffe://cluster.local/ns/default/sa/api;Hash=d5b5;URI=spiffe://cluster.local/ns/web/sa/web",
                ),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "1"),
                ("traceparent", "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"),
            ],
        ),
        ("envoy-b3-single", vec![("b3", "80f198ee56343ba8-e457b5a2e4d86bd1-1")]),
        (
            "grpc",
            vec![
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", "1S"),
                ("grpc-accept-encoding", "gzip"),
                ("user-agent", "grpc-go/1.63.2"),
            ],
        ),
        (
            "datadog-jaeger",
            vec![
                ("x-datadog-trace-id", "1234567890123456789"),
                ("x-datadog-parent-id", "987654321"),
                ("x-datadog-sampling-priority", "1"),
                ("x-datadog-tags", "_dd.p.dm=-4"),
                ("uber-trace-id", "5f0c3b6f8d1e2a9b:7a1d2c3e4f5a6b7c:0:1"),
            ],
        ),
    ];
    let s = preset("sidecar");
    let documented = [ReasonCode::HygieneClientIpHeader, ReasonCode::HygieneForwardedRoutingHeader];
    for (label, headers) in &shapes {
        let with = |r: Req| headers.iter().fold(r, |r, (n, v)| r.without(n).h(n, v));
        let d = with(req().mtls(WEB).pseudo("scheme", "http")).eval(&s);
        assert_eq!(d.findings.len(), 0, "{label} over mTLS: {:?}", d.findings);
        if label.starts_with("istio") {
            continue; // a sidecar's own headers only ever travel over mTLS
        }
        let https = headers.iter().any(|(n, v)| *n == "x-forwarded-proto" && *v == "https");
        let plain = req().plaintext().pseudo("scheme", if https { "https" } else { "http" });
        let d = with(plain).eval(&s);
        assert_eq!(d.outcome().as_str(), "allow", "{label} over plaintext: {:?}", d.findings);
        assert!(
            d.findings.iter().all(|f| documented.contains(&f.code) && f.remedy == Remedy::Strip),
            "{label} over plaintext: {:?}",
            d.findings
        );
    }
    // The gateway strips or refuses only what it documents: the nginx shape loses its
    // client-address and forwarding headers and keeps the rest.
    let g = preset("gateway-strict");
    let nginx = shapes[0].1.iter().fold(req(), |r, (n, v)| r.without(n).h(n, v));
    let d = nginx.eval(&g);
    assert_eq!(d.outcome().as_str(), "allow", "{:?}", d.findings);
    assert_eq!(
        removed(&d),
        [
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-scheme",
            "x-original-forwarded-for",
            "x-real-ip",
            "x-scheme"
        ]
    );
}

#[test]
fn a_logged_credential_decides_again_as_on_the_wire() {
    // The log redacts Authorization; replaying the line must not trip injectedValues.
    for name in ["sidecar", "gateway-strict"] {
        let p = policy(json!({"version": 1, "hygiene": {"preset": name}, "decisionLog": {"allowSampleRate": 1}}));
        let r = req().h("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln").h("x-real-ip", "10.0.0.1");
        let pairs: Vec<(&[u8], &[u8])> =
            r.pseudo.iter().chain(&r.headers).map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let view = RequestView::new(&pairs, Peer { mtls: false, uri_san: None }, Direction::Inbound).with_tls(true);
        let d = p.evaluate(&view);
        let line: Value = serde_json::from_str(&p.decision_log_line(&d, &view, 0)).unwrap();
        assert!(line.get("replayable").is_none(), "{name}: {line}");
    }
    assert!(!trace::credentials_malformed(b"[redacted]"));
    assert!(!trace::credentials_malformed(b"[redacted],[redacted]"));
    assert!(trace::credentials_malformed(b"[redacted] X-A: 1"));
}
