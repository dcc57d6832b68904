//! Credential scoping on egress, end to end through a real Envoy 1.40's outbound sidecar
//! (`envoy-config/sidecar-outbound.yaml`): which destinations may receive Authorization,
//! cookies, API-key headers and credential query parameters. "The internet" is the echo
//! upstream; its answer is what it received, so a test proves which headers arrived.

use harness::client::{self, Request, Response};
use harness::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions};
use harness::Result;
use meshguard_e2e::decision_for as decision;
use serde_json::{json, Value};

/// What no log line or counter may ever hold.
const SECRET: &str = "sk-live-7f3a9c1e5b2d4f60";

fn policy() -> Value {
    json!({
        "version": 1,
        "decisionLog": {"allowSampleRate": 1.0},
        "egress": {
            "credentials": {"headers": ["x-partner-key"]},
            "allow": [
                // The partner API receives its key.
                {"id": "partner", "hosts": ["api.example.com"], "credentials": "allow"},
                // The telemetry collector never does (PassthroughCluster in the local mesh).
                {"id": "telemetry", "hosts": ["telemetry.example.net"], "passthrough": true, "credentials": "deny"},
                // The CDN gets requests without credentials.
                {"id": "cdn", "hosts": ["*.cdn.example.com"], "credentials": "strip"},
                // Being tried out: logs only.
                {"id": "trial", "mode": "dry-run", "hosts": ["trial.example.net"], "passthrough": true, "credentials": "deny"},
                // Says nothing: the documented default, allow.
                {"id": "legacy", "hosts": ["legacy.example.net"], "passthrough": true},
            ]
        }
    })
}

fn finding_counter(mesh: &Mesh, code: &str, mode: &str) -> Result<u64> {
    Ok(mesh.envoy().counter(&format!("meshguard.check.egress.code.{code}.mode.{mode}.findings_total"))?.unwrap_or(0))
}

/// The values of header `name` the echo upstream received.
fn received(resp: &Response, name: &str) -> Result<Vec<String>> {
    let echo = resp.json()?;
    let headers = echo["headers"].as_array().cloned().unwrap_or_default();
    Ok(headers
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .filter_map(|h| h[1].as_str().map(String::from))
        .collect())
}

fn send(mesh: &Mesh, id: &str, authority: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut req = Request::new("POST", path).with_authority(authority).with_header("x-request-id", id);
    for (n, v) in headers {
        req = req.with_header(n, v);
    }
    client::send(mesh.listener_addr(), None, &req)
}

#[test]
fn credentials_reach_only_the_destinations_allowed_to_receive_them() -> Result<()> {
    let wasm = ensure_wasm()?;
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(wasm),
        kind: MeshKind::SidecarOutbound,
        ..MeshOptions::with_policy(policy().to_string())
    })?;
    let bearer = format!("Bearer {SECRET}");
    let ctx = |resp: &Response| format!("{resp:?}\n{}", mesh.access_log());

    // Allowed with credentials: 200, and the partner received them, unchanged.
    let resp = send(
        &mesh,
        "partner",
        "api.example.com",
        "/v1/charges",
        &[("authorization", &bearer), ("x-partner-key", SECRET)],
    )?;
    assert_eq!(resp.status, 200, "{}", ctx(&resp));
    assert_eq!(received(&resp, "authorization")?, vec![bearer.clone()]);
    assert_eq!(received(&resp, "x-partner-key")?, vec![SECRET.to_string()]);

    // Scoped out with deny: 403 with the reason code, and nothing reached the internet.
    let before = mesh.echo().request_count();
    for (id, path, headers, code) in [
        ("telemetry-key", "/v1/traces", vec![("x-partner-key", SECRET)], "egress_credentials_not_allowed"),
        ("telemetry-cookie", "/v1/traces", vec![("Cookie", "session=1")], "egress_credentials_not_allowed"),
        ("telemetry-query", "/v1/traces?access_token=sk-live-7f3a9c1e5b2d4f60", vec![], "egress_credentials_in_query"),
        ("cdn-signed-url", "/assets/a.png?sig=sk-live-7f3a9c1e5b2d4f60", vec![], "egress_credentials_in_query"),
    ] {
        let authority = if id.starts_with("cdn") { "img.cdn.example.com" } else { "telemetry.example.net" };
        let resp = send(&mesh, id, authority, path, &headers)?;
        assert_eq!(resp.status, 403, "{id}: {}", ctx(&resp));
        assert_eq!(resp.json()?["code"], code, "{id}: {}", ctx(&resp));
    }
    assert_eq!(mesh.echo().request_count(), before, "a refused request reached the internet");
    // The same destination without credentials: 200.
    let resp = send(&mesh, "telemetry-clean", "telemetry.example.net", "/v1/traces?service=web", &[])?;
    assert_eq!(resp.status, 200, "{}", ctx(&resp));

    // Strip: 200, and the CDN never saw a credential header; the rest arrived.
    let resp = send(
        &mesh,
        "cdn-strip",
        "img.cdn.example.com",
        "/assets/a.png",
        &[
            ("Authorization", &bearer),
            ("cookie", "sid=sk-live-7f3a9c1e5b2d4f60"),
            ("X-Goog-Api-Key", SECRET),
            ("accept", "image/png"),
        ],
    )?;
    assert_eq!(resp.status, 200, "{}", ctx(&resp));
    for name in ["authorization", "cookie", "x-goog-api-key"] {
        assert_eq!(received(&resp, name)?, Vec::<String>::new(), "{name} reached the CDN: {}", ctx(&resp));
    }
    assert_eq!(received(&resp, "accept")?, vec!["image/png".to_string()]);
    assert!(!resp.text().contains(SECRET), "{}", resp.text());

    // Dry-run rule: 200, the header arrived, a would-deny logged.
    let resp = send(&mesh, "trial", "trial.example.net", "/", &[("authorization", &bearer)])?;
    assert_eq!(resp.status, 200, "{}", ctx(&resp));
    assert_eq!(received(&resp, "authorization")?, vec![bearer.clone()]);
    // A rule that says nothing: credentials allowed (the default).
    let resp = send(&mesh, "legacy", "legacy.example.net", "/", &[("authorization", &bearer)])?;
    assert_eq!(resp.status, 200, "{}", ctx(&resp));
    assert_eq!(received(&resp, "authorization")?, vec![bearer.clone()]);

    // The decision log: reason codes and rule ids, header names, never a value.
    let line = decision(&mesh, "telemetry-key")?;
    assert_eq!(
        (line["outcome"].as_str(), line["code"].as_str(), line["rule"].as_str()),
        (Some("deny"), Some("egress_credentials_not_allowed"), Some("telemetry"))
    );
    let logged = line["request"]["headers"].as_array().cloned().unwrap_or_default();
    assert!(logged.contains(&json!(["x-partner-key", "[redacted]"])), "logged by name, value redacted: {line}");
    let line = decision(&mesh, "telemetry-query")?;
    assert_eq!(line["code"], "egress_credentials_in_query");
    let line = decision(&mesh, "cdn-strip")?;
    assert_eq!((line["outcome"].as_str(), line["code"].as_str()), (Some("allow"), Some("egress_credentials_stripped")));
    assert_eq!(line["findings"][0]["action"], "strip");
    assert_eq!(
        line["headerMutations"],
        json!([{"op": "remove", "name": "authorization"}, {"op": "remove", "name": "cookie"}, {"op": "remove", "name": "x-goog-api-key"}])
    );
    let line = decision(&mesh, "trial")?;
    assert_eq!(
        (line["outcome"].as_str(), line["code"].as_str(), line["rule"].as_str()),
        (Some("would_deny"), Some("egress_credentials_not_allowed"), Some("trial"))
    );
    let line = decision(&mesh, "legacy")?;
    assert_eq!(line["outcome"], "allow");
    let log = mesh.envoy().log_contents();
    assert!(log.contains("egress_credentials_stripped"), "the decision lines are in this log");
    assert!(!log.contains(SECRET), "a credential reached Envoy's log:\n{}", mesh.envoy().log_tail(40));

    // Counted per reason code, from Envoy's admin endpoint; no stat name holds a value.
    assert_eq!(mesh.envoy().wait_counter("meshguard_denied_total", 4)?, 4);
    assert_eq!(finding_counter(&mesh, "egress_credentials_not_allowed", "enforced")?, 2);
    assert_eq!(finding_counter(&mesh, "egress_credentials_in_query", "enforced")?, 2);
    assert_eq!(finding_counter(&mesh, "egress_credentials_stripped", "enforced")?, 1);
    assert_eq!(finding_counter(&mesh, "egress_credentials_not_allowed", "dry_run")?, 1);
    assert_eq!(mesh.envoy().counter("meshguard_would_deny_total")?, Some(1));
    let stats = mesh.envoy().stats()?;
    assert!(stats.iter().all(|(name, _)| !name.contains(SECRET) && !name.contains("sk-live")));
    Ok(())
}

/// The words of a shell line, with single quotes (what the demo's curl lines use).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// `meshguard up --outbound` prints curl lines for credential scoping: each does what its
/// comment says, through the real Envoy with the shipped `egress.yaml`.
#[test]
fn the_demo_curl_lines_do_what_they_say() -> Result<()> {
    let path = harness::workspace_root().join("envoy-config/policies/egress.yaml");
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        kind: MeshKind::SidecarOutbound,
        ..MeshOptions::with_policy(harness::policy_file::load_json(&path)?)
    })?;
    let http = mesh.listener_addr().to_string();
    let lines = harness::egress_demo::credential_lines(&http);
    let curls: Vec<&String> = lines.iter().filter(|l| l.trim_start().starts_with("curl")).collect();
    assert_eq!(curls.len(), 4, "{lines:?}");
    for line in curls {
        let (command, comment) = line.split_once('#').unwrap_or((line, ""));
        let words = shell_words(command.trim());
        let mut method = "GET".to_string();
        let mut headers = Vec::new();
        let mut url = None;
        let mut it = words.iter().skip(1);
        while let Some(w) = it.next() {
            match w.as_str() {
                "-s" => {}
                "-X" => method = it.next().cloned().unwrap_or_default(),
                "-H" => headers.push(it.next().cloned().unwrap_or_default()),
                other => url = Some(other.to_string()),
            }
        }
        let url = url.unwrap_or_default();
        let target = url.strip_prefix(&format!("http://{http}")).unwrap_or_else(|| panic!("{line}"));
        let mut req = Request::new(&method, target);
        for h in &headers {
            let (name, value) = h.split_once(": ").unwrap_or_else(|| panic!("{line}"));
            req = if name == "Host" { req.with_authority(value) } else { req.with_header(name, value) };
        }
        let resp = client::send(mesh.listener_addr(), None, &req)?;
        let said_code = comment.split_whitespace().find(|w| w.starts_with("egress_"));
        match said_code {
            Some(code) if !comment.contains("200") => {
                assert_eq!(resp.status, 403, "{line}: {}", ctx_of(&mesh, &resp));
                assert_eq!(resp.json()?["code"], code, "{line}");
            }
            _ => {
                assert_eq!(resp.status, 200, "{line}: {}", ctx_of(&mesh, &resp));
                for h in headers.iter().filter(|h| !h.starts_with("Host")) {
                    let (name, value) = h.split_once(": ").unwrap_or_default();
                    let want = if comment.contains("stripped") { vec![] } else { vec![value.to_string()] };
                    assert_eq!(received(&resp, name)?, want, "{line}");
                }
            }
        }
    }
    Ok(())
}

fn ctx_of(mesh: &Mesh, resp: &Response) -> String {
    format!("{resp:?}\n{}", mesh.access_log())
}

/// At an egress gateway (`appliesTo: all`, sources proven by the mTLS certificate), the same
/// rules: the credential headers a sidecar forwards are stripped before the request leaves
/// the mesh, or the request is refused.
#[test]
fn the_egress_gateway_scopes_credentials_too() -> Result<()> {
    let policy = json!({
        "version": 1,
        "egress": {
            "appliesTo": "all",
            "sourceIdentity": "peerCertificate",
            "credentials": {"default": "deny"},
            "allow": [
                {"id": "web-api", "hosts": ["api.example.com"], "sources": ["spiffe://cluster.local/ns/web/sa/web"], "credentials": "allow"},
                {"id": "partner", "hosts": ["partner.example.org"], "credentials": "strip"},
                {"id": "telemetry", "hosts": ["telemetry.example.org"]},
            ]
        }
    });
    let mesh = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        kind: MeshKind::EgressGateway,
        ..MeshOptions::with_policy(policy.to_string())
    })?;
    let tls = harness::client::TlsIdentity::workload(mesh.pki(), "web")?;
    let bearer = format!("Bearer {SECRET}");
    let send = |authority: &str| {
        let req = Request::new("GET", "/v1/x")
            .with_authority(authority)
            .with_header("authorization", &bearer)
            .with_header("x-api-key", SECRET);
        client::send(mesh.listener_addr(), Some(&tls), &req)
    };
    let resp = send("api.example.com")?;
    assert_eq!(resp.status, 200, "{}", ctx_of(&mesh, &resp));
    assert_eq!(received(&resp, "authorization")?, vec![bearer.clone()]);
    assert_eq!(received(&resp, "x-api-key")?, vec![SECRET.to_string()]);
    let resp = send("partner.example.org")?;
    assert_eq!(resp.status, 200, "{}", ctx_of(&mesh, &resp));
    assert_eq!(received(&resp, "authorization")?, Vec::<String>::new(), "{}", ctx_of(&mesh, &resp));
    assert_eq!(received(&resp, "x-api-key")?, Vec::<String>::new());
    let before = mesh.echo().request_count();
    let resp = send("telemetry.example.org")?;
    assert_eq!(resp.status, 403, "{}", ctx_of(&mesh, &resp));
    assert_eq!(resp.json()?["code"], "egress_credentials_not_allowed");
    assert_eq!(mesh.echo().request_count(), before);
    assert_eq!(mesh.envoy().wait_counter("meshguard_denied_total", 1)?, 1);
    assert_eq!(finding_counter(&mesh, "egress_credentials_stripped", "enforced")?, 1);
    assert_eq!(finding_counter(&mesh, "egress_credentials_not_allowed", "enforced")?, 1);
    assert!(!mesh.envoy().log_contents().contains(SECRET));
    Ok(())
}
