//! The decision log: one JSON line per deny and would-deny (and sampled allows).
//!
//! Threat: the log itself leaking secrets. A decision line never holds Authorization, Cookie,
//! tokens or query strings: those header values are redacted (as many `[redacted]` elements as
//! the value had comma-separated ones), anything that looks like a JWT is redacted wherever it
//! appears, and the path is logged without its query; `queryShape` keeps only the query's
//! length, its parameter count and whether it held bytes a query may not (see [`query_shape`]). The `request` object
//! has the shape `meshguard eval --request` reads, so logged traffic can be replayed offline;
//! a line whose logged request would not get the same findings (because of what was left out)
//! carries `"replayable": false`.

use serde_json::{json, Map, Value};

use crate::decision::{Decision, HeaderMutation};
use crate::policy::{LogSettings, Policy};
use crate::view::connection::ConnectionView;
use crate::view::request::{RequestView, Workload};
use crate::view::upstream::UpstreamView;

pub mod redact;

pub use redact::{printable_id, ALWAYS_REDACTED, REDACTED};

/// The most bytes of one header value a line holds, and of all header values together:
/// a request with a hundred long headers must not write a hundred-kilobyte line. A line
/// that was cut says `"truncated": true`.
const MAX_LOGGED_VALUE: usize = 256;
const MAX_LOGGED_HEADERS: usize = 8 * 1024;

/// A stable bucket in 0..1_000_000 for sampling, from the request id.
pub fn sample_bucket(request_id: &[u8]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in request_id {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 1_000_000) as u32
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// The request as logged (and as `meshguard eval` reads it back).
pub fn request_json(settings: &LogSettings, req: &RequestView<'_>) -> Value {
    logged_request(settings, req).0
}

/// [`request_json`]; whether it is exactly what the checks read (nothing redacted, cut or
/// left out, no query): then a replay decides on the very same request; and whether a size
/// bound cut it.
fn logged_request(settings: &LogSettings, req: &RequestView<'_>) -> (Value, bool, bool) {
    let utf8 = |v: Option<&[u8]>| v.is_none_or(|v| std::str::from_utf8(v).is_ok());
    let mut exact = req.path() == crate::parse::path::without_query(req.path())
        && req.headers.iter().filter(|(n, _)| n.starts_with(b":")).count() == 4
        && [":method", ":path", ":authority", ":scheme"].iter().all(|p| req.header(p).is_some_and(|v| utf8(Some(v))))
        && utf8(req.peer.uri_san)
        && utf8(req.cluster)
        && utf8(req.workload.namespace)
        && utf8(req.workload.service_account);
    let mut obj = Map::new();
    obj.insert("method".into(), text(req.method()).into());
    let path = crate::parse::path::without_query(req.path());
    let logged_path = redact::path(path);
    exact &= logged_path.as_bytes() == path;
    obj.insert("path".into(), logged_path.into());
    if let Some(shape) = query_shape(req.path()) {
        obj.insert("queryShape".into(), shape.into());
    }
    let logged_authority = redact::authority(req.authority());
    exact &= logged_authority.as_bytes() == req.authority();
    obj.insert("authority".into(), logged_authority.into());
    obj.insert("scheme".into(), text(req.scheme()).into());
    if !settings.include_headers && req.headers.iter().any(|(n, _)| !n.starts_with(b":")) {
        exact = false;
    }
    let mut truncated = false;
    if settings.include_headers {
        let mut binary = Vec::new();
        let mut budget = MAX_LOGGED_HEADERS;
        let mut headers = Vec::new();
        for (i, (n, v)) in req.headers.iter().filter(|(n, _)| !n.starts_with(b":")).enumerate() {
            if budget == 0 {
                truncated = true;
                break;
            }
            let name = text(n);
            let lower = name.to_ascii_lowercase();
            let redacted = settings.redact.contains(&lower) || redact::secret_name(&lower) || redact::secret_value(v);
            let value = if redacted {
                // As many redacted elements as the value had comma-separated ones: a
                // comma-merged duplicate (two Authorization headers) stays one.
                let elements = v.iter().filter(|&&b| b == b',').count() + 1;
                vec![REDACTED; elements].join(",")
            } else if redact::URL_HEADERS.contains(&lower.as_str()) {
                // URLs in headers may carry query strings, userinfo and tokens.
                redact::url(v)
            } else {
                let cut = v.get(..MAX_LOGGED_VALUE.min(budget)).unwrap_or(v);
                truncated |= cut.len() < v.len();
                // Bytes that are not UTF-8 (obs-text) are kept exactly, in hex, so that a
                // replay decides on what the filter saw.
                if std::str::from_utf8(n).is_err() || std::str::from_utf8(cut).is_err() {
                    binary.push(json!([i, crate::view::request::to_hex(n), crate::view::request::to_hex(cut)]));
                }
                text(cut)
            };
            exact &= value.as_bytes() == *v;
            budget = budget.saturating_sub(n.len() + value.len());
            headers.push(json!([name, value]));
        }
        exact &= !truncated;
        obj.insert("headers".into(), Value::Array(headers));
        if !binary.is_empty() {
            obj.insert("binaryHeaders".into(), Value::Array(binary));
        }
    }
    let mut peer = json!({"mtls": req.peer.mtls, "uriSan": req.peer.uri_san.map(text), "tls": req.tls});
    if let (Some(digest), Some(p)) = (req.peer_cert_sha256, peer.as_object_mut()) {
        p.insert("certSha256".into(), text(digest).into());
    }
    obj.insert("peer".into(), peer);
    obj.insert("direction".into(), req.direction.as_str().into());
    obj.insert("endOfStream".into(), req.end_of_stream.into());
    if let Some(cluster) = req.cluster {
        obj.insert("cluster".into(), text(cluster).into());
    }
    if req.workload != Workload::default() {
        obj.insert("workload".into(), workload_json(&req.workload));
    }
    if req.now_unix_secs != 0 {
        obj.insert("nowUnixSecs".into(), req.now_unix_secs.into());
    }
    if let Some(address) = req.source_address {
        obj.insert("sourceAddress".into(), text(address).into());
    }
    (Value::Object(obj), exact, truncated)
}

/// What the checks need of the query, none of its content: the part of the target that
/// [`crate::parse::path::without_query`] cuts off, with every byte of the query replaced by `x`,
/// except `?` and `&` (they make its parameters) and bytes a query may not hold (a space in
/// their place). Same length, same parameter count, same validity; `None` without a query.
/// A fragment before the query is kept as it is (it is not the query; no client sends one).
fn query_shape(raw_path: &[u8]) -> Option<String> {
    let cut = raw_path.get(crate::parse::path::without_query(raw_path).len()..).unwrap_or_default();
    if cut.is_empty() {
        return None;
    }
    let q = cut.iter().position(|&b| b == b'?').unwrap_or(cut.len());
    let (fragment, query) = cut.split_at(q);
    let mut out = String::with_capacity(cut.len());
    out.extend(fragment.iter().map(|&b| if b.is_ascii() && b > 0x20 && b != 0x7f { char::from(b) } else { ' ' }));
    out.extend(query.iter().enumerate().map(|(i, &b)| match b {
        b'?' if i == 0 => '?',
        b'&' => '&',
        b if b <= 0x20 || b >= 0x7f || b == b'#' => ' ',
        _ => 'x',
    }));
    Some(out)
}

fn workload_json(w: &Workload<'_>) -> Value {
    json!({"namespace": w.namespace.map(text), "serviceAccount": w.service_account.map(text)})
}

/// A connection as logged (and as `meshguard eval --connection` reads it back).
pub fn connection_json(conn: &ConnectionView<'_>) -> Value {
    let mut obj = Map::new();
    obj.insert("sni".into(), conn.sni.map(text).into());
    obj.insert("destinationPort".into(), conn.destination_port.into());
    obj.insert("peer".into(), json!({"mtls": conn.peer.mtls, "uriSan": conn.peer.uri_san.map(text)}));
    obj.insert("direction".into(), conn.direction.as_str().into());
    if conn.workload != Workload::default() {
        obj.insert("workload".into(), workload_json(&conn.workload));
    }
    Value::Object(obj)
}

/// The decision-log line of a connection (the network filter).
pub(crate) fn record_connection(
    policy: &Policy,
    decision: &Decision,
    conn: &ConnectionView<'_>,
    unix_millis: u64,
) -> String {
    let mut line = summary(policy, decision, unix_millis);
    line.insert("connection".into(), connection_json(conn));
    Value::Object(line).to_string()
}

/// An upstream connection as logged (and as `meshguard replay` reads it back): the identity
/// and address observed, the cluster and authority they were judged by. Lossy text: these are
/// Envoy's own renderings (a certificate SAN, `ip:port`), never secrets.
pub fn upstream_json(up: &UpstreamView<'_>) -> Value {
    let t = |v: Option<&[u8]>| v.map(text);
    json!({
        "cluster": t(up.cluster),
        "authority": up.authority.map(|a| redact::authority(a.get(..MAX_LOGGED_VALUE).unwrap_or(a))),
        "uriSan": t(up.uri_san.map(|v| v.get(..MAX_LOGGED_VALUE).unwrap_or(v))),
        "tlsVersion": t(up.tls_version),
        "address": t(up.address),
    })
}

/// The response-phase decision line of a request (upstream pinning).
pub(crate) fn record_upstream(
    policy: &Policy,
    decision: &Decision,
    up: &UpstreamView<'_>,
    request_id: Option<&[u8]>,
    unix_millis: u64,
) -> String {
    let mut line = summary(policy, decision, unix_millis);
    line.insert("phase".into(), "response".into());
    line.insert("requestId".into(), request_id.and_then(printable_id).into());
    line.insert("upstream".into(), upstream_json(up));
    Value::Object(line).to_string()
}

/// The fields every decision line has, request or connection.
fn summary(policy: &Policy, decision: &Decision, unix_millis: u64) -> Map<String, Value> {
    let primary = decision.primary();
    let mut line = Map::new();
    line.insert("time".into(), rfc3339_millis(unix_millis).into());
    line.insert("outcome".into(), decision.outcome().as_str().into());
    line.insert("verdict".into(), decision.verdict().as_str().into());
    line.insert("enforced".into(), decision.enforced().into());
    line.insert("check".into(), primary.map(|f| f.check.as_str()).into());
    line.insert("code".into(), primary.map(|f| f.code.as_str()).into());
    line.insert("rule".into(), primary.map(|f| f.rule.as_str()).into());
    line.insert("findings".into(), findings_json(decision));
    line.insert("principal".into(), decision.principal.clone().into());
    line.insert("policyRevision".into(), policy.revision().into());
    line
}

/// The findings of a decision as logs and `meshguard eval` show them.
pub fn findings_json(decision: &Decision) -> Value {
    decision
        .findings
        .iter()
        .map(|f| {
            json!({"check": f.check.as_str(), "code": f.code.as_str(), "rule": f.rule, "enforced": f.enforced, "action": f.remedy.as_str()})
        })
        .collect()
}

/// Which headers a decision removes or rewrites: names only, never values.
pub fn mutations_json(decision: &Decision) -> Value {
    decision
        .mutations
        .iter()
        .map(|m| match m {
            HeaderMutation::Remove { name } => json!({"op": "remove", "name": text(name)}),
            HeaderMutation::Set { name, .. } => json!({"op": "set", "name": text(name)}),
        })
        .collect()
}

/// The decision-log line.
pub(crate) fn record(
    policy: &Policy,
    settings: &LogSettings,
    decision: &Decision,
    req: &RequestView<'_>,
    unix_millis: u64,
) -> String {
    let (request, exact, truncated) = logged_request(settings, req);
    // Only a request logged with something left out can decide differently.
    let replayable = exact || replays_the_same(policy, decision, &request);
    let mut line = summary(policy, decision, unix_millis);
    line.insert("requestId".into(), req.request_id().and_then(printable_id).into());
    line.insert("headerMutations".into(), mutations_json(decision));
    line.insert("request".into(), request);
    if !replayable {
        line.insert("replayable".into(), false.into());
    }
    if truncated {
        line.insert("truncated".into(), true.into());
    }
    Value::Object(line).to_string()
}

/// Whether the request as logged (query dropped, secrets redacted, headers maybe left out)
/// gets the same findings from the same policy as the request the filter saw. When it does
/// not (a query-length limit, two Authorization values, a JWT-shaped header a guard reads),
/// the line says `"replayable": false`, so that `meshguard replay` never presents what the
/// redaction changed as a change of policy. Costs one more evaluation per logged line that
/// left something out (a query, a redacted value, headers); none for the others.
fn replays_the_same(policy: &Policy, decision: &Decision, logged: &Value) -> bool {
    let Ok(mut back) = serde_json::from_value::<crate::view::request::OwnedRequest>(logged.clone()) else {
        return false;
    };
    back.apply_query_shape();
    let pairs = back.pairs();
    let again = policy.evaluate(&back.view(&pairs));
    again.findings == decision.findings
}

/// Every decision-log line is this prefix and one JSON object, in Envoy's log. Stable: log
/// pipelines, `meshguard replay` and the tests find decisions by `meshguard.decision {`.
pub const DECISION_LOG_PREFIX: &str = "meshguard.decision ";

/// The decision's JSON object in a line of Envoy's log (what follows [`DECISION_LOG_PREFIX`]),
/// or `None` when the line holds no decision.
pub fn decision_json(line: &str) -> Option<&str> {
    const MARK: &str = "meshguard.decision {";
    let at = line.find(MARK)?;
    line.get(at + DECISION_LOG_PREFIX.len()..)
}

/// `2026-11-22T07:20:44.123Z` from milliseconds since the Unix epoch.
pub fn rfc3339_millis(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let millis = unix_millis % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaks an outside audit found, each in a denied request's line and deny body.
    #[test]
    fn secrets_never_reach_a_line_or_a_deny_body() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLWJ5dGVz";
        let policy = crate::testing::policy(json!({"version": 1, "hygiene": {"preset": "sidecar"},
            "identity": {"requirePeerIdentity": true}}));
        let path = format!("/a%2Fb/{jwt}/x;jsessionid=SESSIONSECRET/y%3Ftoken=QUERYSECRET?q=QSECRET");
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", path.as_bytes()),
            (b":authority", b"user:PASSWORD@api"),
            (b":scheme", b"http"),
            (b"x-request-id", jwt.as_bytes()),
            (b"x-original-url", b"/admin?token=URLSECRET"),
            (b"referer", b"https://u:REFPASS@example.com/cb?code=REFSECRET"),
            (b"api-key", b"APIKEYSECRET"),
            (b"x-goog-api-key", b"GOOGSECRET"),
            (b"x-custom", b"Bearer BEARERSECRET"),
        ];
        let view = RequestView::new(&pairs, Default::default(), Default::default());
        let decision = policy.evaluate(&view);
        assert!(decision.enforced(), "{decision:?}");
        let line = policy.decision_log_line(&decision, &view, 0);
        let body =
            String::from_utf8(policy.deny_response().body(decision.primary().map(|f| f.code), view.request_id()))
                .unwrap();
        for secret in [
            jwt,
            "SESSIONSECRET",
            "QUERYSECRET",
            "QSECRET",
            "PASSWORD",
            "URLSECRET",
            "REFPASS",
            "REFSECRET",
            "APIKEYSECRET",
            "GOOGSECRET",
            "BEARERSECRET",
        ] {
            assert!(!line.contains(secret), "{secret} in {line}");
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["requestId"], Value::Null);
        assert_eq!(v["request"]["authority"], "[redacted]@api");
    }

    /// 96 headers of 600 non-UTF-8 bytes wrote 176 KB; a line is now bounded and says so.
    #[test]
    fn a_line_is_bounded_and_says_when_it_was_cut() {
        let policy = crate::testing::policy(json!({"version": 1, "hygiene": {"preset": "sidecar"}}));
        let value = vec![0xffu8; 600];
        let names: Vec<String> = (0..96).map(|i| format!("x-h{i}")).collect();
        let mut pairs: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"GET"), (b":path", b"/"), (b":authority", b"api"), (b":scheme", b"http")];
        pairs.extend(names.iter().map(|n| (n.as_bytes(), value.as_slice())));
        let view = RequestView::new(&pairs, Default::default(), Default::default());
        let decision = policy.evaluate(&view);
        assert!(!decision.findings.is_empty());
        let line = policy.decision_log_line(&decision, &view, 0);
        assert!(line.len() < 32 * 1024, "{} bytes", line.len());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn decision_lines_are_found_after_the_prefix() {
        let line = "[2026-11-30 info][wasm] wasm log meshguard: meshguard.decision {\"outcome\":\"deny\"}";
        assert_eq!(decision_json(line), Some("{\"outcome\":\"deny\"}"));
        assert_eq!(decision_json("meshguard.decision {}"), Some("{}"));
        assert_eq!(decision_json("meshguard.decisions {}"), None);
        assert_eq!(decision_json("meshguard.decision x"), None);
        assert_eq!(decision_json("meshguard: policy accepted"), None);
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_millis(1_795_332_044_999), "2026-11-22T07:20:44.999Z");
    }

    #[test]
    fn request_ids() {
        assert_eq!(printable_id(b"abc-123"), Some("abc-123"));
        assert_eq!(printable_id(b"a\"b"), None);
        assert_eq!(printable_id(b"a b"), None);
        assert_eq!(printable_id(b""), None);
        assert_eq!(printable_id(&[b'a'; 129]), None);
    }

    #[test]
    fn logged_requests_replay_byte_for_byte() {
        use crate::view::request::OwnedRequest;
        let settings = LogSettings { allow_per_million: 0, include_headers: true, redact: Default::default() };
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":path", b"/a?secret=1"),
            (b":authority", b"h"),
            (b":scheme", b"https"),
            (b"x-a", b"caf\xe9"),
            (b"x\xffb", b"v"),
            (b"x-c", b"a\x01b \xc3\xa9"),
        ];
        let peer = crate::Peer { mtls: true, uri_san: Some(b"spiffe://td/x") };
        let view = RequestView::new(&pairs, peer, crate::Direction::Inbound).with_end_of_stream(false).with_tls(true);
        let logged = request_json(&settings, &view);
        let mut back: OwnedRequest = serde_json::from_value(logged).unwrap();
        back.apply_query_shape();
        let replayed = back.pairs();
        assert_eq!(replayed.get(4..), pairs.get(4..));
        let v = back.view(&replayed);
        assert_eq!((v.end_of_stream, v.tls, v.peer.mtls), (false, true, true));
        assert_eq!(v.path(), b"/a?xxxxxxxx", "the query is never logged, only its shape");
    }

    #[test]
    fn lines_whose_redaction_changes_the_findings_say_so() {
        let policy = Policy::from_value(
            serde_json::json!({"version": 1, "decisionLog": {"allowSampleRate": 1}, "hygiene": {"preset": "gateway-strict"}}),
        )
        .unwrap();
        let line = |pairs: &[(&[u8], &[u8])]| -> Value {
            let view = RequestView::new(pairs, crate::Peer::default(), crate::Direction::Inbound).with_tls(true);
            let decision = policy.evaluate(&view);
            serde_json::from_str(&policy.decision_log_line(&decision, &view, 0)).unwrap()
        };
        let base: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"GET"), (b":path", b"/a"), (b":authority", b"h"), (b":scheme", b"https")];
        let plain = line(&base);
        assert_eq!(plain["outcome"], "allow", "{plain}");
        assert!(plain.get("replayable").is_none(), "{plain}");

        // 200 query parameters: denied; the log has the query's shape, not its content, and
        // decides the same.
        let query = format!("/a?{}", vec!["secret=1"; 200].join("&"));
        let mut many = base.clone();
        many[1] = (b":path", query.as_bytes());
        let logged = line(&many);
        assert_eq!(logged["outcome"], "deny");
        assert!(logged.get("replayable").is_none(), "{logged}");
        assert!(!logged.to_string().contains("secret"));

        // Two Authorization values merged into one: the redacted value keeps its two elements.
        let mut two = base.clone();
        two.push((b"authorization", b"Bearer a, Bearer b"));
        let logged = line(&two);
        assert_eq!(logged["outcome"], "deny", "{logged}");
        assert!(logged.get("replayable").is_none(), "{logged}");
        assert!(!logged.to_string().contains("Bearer"));

        // Without headers in the log, a header finding cannot be decided again.
        let quiet = Policy::from_value(serde_json::json!({"version": 1, "hygiene": {"preset": "gateway-strict"},
            "decisionLog": {"includeHeaders": false}}))
        .unwrap();
        let mut underscore = base.clone();
        underscore.push((b"x_user", b"admin"));
        let view = RequestView::new(&underscore, crate::Peer::default(), crate::Direction::Inbound).with_tls(true);
        let decision = quiet.evaluate(&view);
        let logged: Value = serde_json::from_str(&quiet.decision_log_line(&decision, &view, 0)).unwrap();
        assert_eq!((&logged["outcome"], &logged["replayable"]), (&json!("deny"), &json!(false)), "{logged}");
    }

    #[test]
    fn query_shapes_keep_the_facts_not_the_content() {
        assert_eq!(query_shape(b"/a"), None);
        assert_eq!(query_shape(b"/a?token=s3cr3t&b=1").as_deref(), Some("?xxxxxxxxxxxx&xxx"));
        assert_eq!(query_shape(b"/a?x y\xff#f").as_deref(), Some("?x x  x"));
        for target in [&b"/a?p=1&&q=2&"[..], b"/a?x y", b"/a?", b"/a#frag?x=1"] {
            let shaped = format!("/a{}", query_shape(target).unwrap());
            assert_eq!(shaped.len(), target.len());
            assert_eq!(
                crate::parse::target::analyze(shaped.as_bytes()),
                crate::parse::target::analyze(target),
                "{shaped}"
            );
        }
    }

    #[test]
    fn jwt_shapes() {
        assert!(redact::looks_like_jwt(b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        assert!(!redact::looks_like_jwt(b"application/json"));
    }
}
