//! `meshguard learn` for egress: decision lines of an outbound sidecar in dry-run (HTTP
//! requests and TLS connections, every one a would-deny under an empty allowlist) become one
//! allow rule per source identity and port; replaying the same lines under the proposal
//! allows every one of them, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn learned_egress_rules_allow_exactly_the_observed_traffic() {
    let dir = harness::scratch_dir("learn").unwrap();
    let gathered = json!({"version": 1, "mode": "dry-run", "decisionLog": {"allowSampleRate": 1.0},
        "egress": {"appliesTo": "outbound", "sourceIdentity": "workload", "allow": []}});
    let policy = policy::Policy::from_value(gathered.clone()).unwrap();
    let policy_path = dir.join("gathered.json");
    std::fs::write(&policy_path, gathered.to_string()).unwrap();

    let request = |sa: &str, authority: &str, cluster: &str, id: &str| {
        json!({"method": "GET", "path": "/v1/x", "authority": authority, "scheme": "http",
               "headers": [["x-request-id", id]], "direction": "outbound", "cluster": cluster,
               "workload": {"namespace": sa, "serviceAccount": sa}})
    };
    let mut log = String::new();
    let observed = [
        request("web", "api.example.com", "outbound|443||api.example.com", "e1"),
        request("web", "api.example.com", "outbound|443||api.example.com", "e2"),
        request("web", "other.example.com", "PassthroughCluster", "e3"),
        request("batch", "reports.example.com:8443", "PassthroughCluster", "e4"),
    ];
    for r in &observed {
        let owned: policy::view::request::OwnedRequest = serde_json::from_value(r.clone()).unwrap();
        let pairs = owned.pairs();
        let view = owned.view(&pairs);
        let d = policy.evaluate(&view);
        assert_eq!(d.outcome().as_str(), "would_deny");
        log.push_str(&format!("meshguard.decision {}\n", policy.decision_log_line(&d, &view, 0)));
    }
    let conn: policy::view::connection::OwnedConnection = serde_json::from_value(json!({
        "sni": "files.example.com", "destinationPort": 443, "direction": "outbound",
        "workload": {"namespace": "web", "serviceAccount": "web"}}))
    .unwrap();
    let d = policy.evaluate_connection(&conn.view());
    log.push_str(&format!("meshguard.decision {}\n", policy.connection_log_line(&d, &conn.view(), 0)));
    let log_path = dir.join("envoy.log");
    std::fs::write(&log_path, &log).unwrap();

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(args)
            .current_dir(harness::workspace_root())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let proposed = dir.join("proposed.yaml");
    let out = run(&[
        "learn",
        "--policy",
        policy_path.to_str().unwrap(),
        log_path.to_str().unwrap(),
        "--out",
        proposed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(&proposed).unwrap();
    let doc: Value = serde_norway::from_str(&yaml).unwrap();
    let rules = doc["egress"]["allow"].as_array().unwrap();
    let summary: Vec<(String, Value, Value, Value)> = rules
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["hosts"].clone(), r["ports"].clone(), r["sources"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "learned-batch-sa-batch-8443".to_string(),
                json!(["reports.example.com"]),
                json!([8443]),
                json!(["spiffe://cluster.local/ns/batch/sa/batch"])
            ),
            (
                "learned-web-sa-web-80".to_string(),
                json!(["other.example.com"]),
                json!([80]),
                json!(["spiffe://cluster.local/ns/web/sa/web"])
            ),
            (
                "learned-web-sa-web-443".to_string(),
                json!(["api.example.com", "files.example.com"]),
                json!([443]),
                json!(["spiffe://cluster.local/ns/web/sa/web"])
            ),
        ],
        "{yaml}"
    );
    assert!(yaml.contains("learned-web-sa-web-443  # covers 3 logged requests and connections"), "{yaml}");
    assert_eq!(doc["mode"], "enforce");

    let out = run(&["replay", "--policy", proposed.to_str().unwrap(), log_path.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    for row in &rows {
        assert_eq!(row["after"]["outcome"], "allow", "{row}");
    }
    // Least privilege: batch may not use web's hosts, nor web batch's port.
    let proposal = harness::policy_file::load_policy(&proposed).unwrap();
    for (sa, authority, cluster) in [
        ("batch", "api.example.com", "outbound|443||api.example.com"),
        ("web", "reports.example.com:8443", "PassthroughCluster"),
        ("web", "evil.example.org", "PassthroughCluster"),
    ] {
        let owned: policy::view::request::OwnedRequest =
            serde_json::from_value(request(sa, authority, cluster, "x")).unwrap();
        let d = harness::offline::decide_request(&proposal, &owned);
        assert_eq!(d.outcome().as_str(), "deny", "{sa} -> {authority}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Learning from part of the traffic would propose rules that deny the rest: unreadable
/// decision lines, or none at all, are refused (exit 2).
#[test]
fn learn_refuses_logs_it_cannot_read_whole() {
    let dir = harness::scratch_dir("learn").unwrap();
    let log = dir.join("bad.log");
    std::fs::write(&log, "meshguard.decision {\"outcome\": \"allow\", \"requ\n").unwrap();
    let empty = dir.join("empty.log");
    std::fs::write(&empty, "[info] nothing here\n").unwrap();
    for (path, message) in [(&log, "cannot be read"), (&empty, "no decision lines")] {
        let out = Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["learn", "--policy", "envoy-config/policies/demo.yaml", path.to_str().unwrap()])
            .current_dir(harness::workspace_root())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Under credential scoping (`egress.credentials.default: deny`), hosts that were sent
/// credentials get a rule of their own with `credentials: allow`; the others keep the default,
/// so the proposal still refuses credentials to them. Replaying the logs allows every line.
#[test]
fn learned_egress_rules_scope_credentials() {
    let dir = harness::scratch_dir("learn").unwrap();
    let gathered = json!({"version": 1, "mode": "dry-run", "decisionLog": {"allowSampleRate": 1.0},
        "egress": {"credentials": {"default": "deny", "headers": ["x-partner-key"]}, "allow": []}});
    let policy = policy::Policy::from_value(gathered.clone()).unwrap();
    let policy_path = dir.join("gathered.json");
    std::fs::write(&policy_path, gathered.to_string()).unwrap();
    let request = |authority: &str, headers: Value| {
        json!({"method": "POST", "path": "/v1/x", "authority": authority, "scheme": "https",
               "headers": headers, "direction": "outbound",
               "workload": {"namespace": "web", "serviceAccount": "web"}})
    };
    let observed = [
        request("api.partner.com", json!([["X-Partner-Key", "k-1"]])),
        request("api.cloud.com", json!([["authorization", "Bearer abc"]])),
        request("telemetry.example.net", json!([["content-type", "application/json"]])),
    ];
    let mut log = String::new();
    for r in &observed {
        let owned: policy::view::request::OwnedRequest = serde_json::from_value(r.clone()).unwrap();
        let pairs = owned.pairs();
        let view = owned.view(&pairs);
        let d = policy.evaluate(&view);
        log.push_str(&format!("meshguard.decision {}\n", policy.decision_log_line(&d, &view, 0)));
    }
    assert!(!log.contains("k-1") && !log.contains("Bearer abc"), "{log}");
    let log_path = dir.join("envoy.log");
    std::fs::write(&log_path, &log).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(args)
            .current_dir(harness::workspace_root())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let proposed = dir.join("proposed.yaml");
    let out = run(&[
        "learn",
        "--policy",
        policy_path.to_str().unwrap(),
        log_path.to_str().unwrap(),
        "--out",
        proposed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = std::fs::read_to_string(&proposed).unwrap();
    let doc: Value = serde_norway::from_str(&yaml).unwrap();
    let summary: Vec<(Value, Value, Value)> = doc["egress"]["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["hosts"].clone(), r["credentials"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("learned-web-sa-web-443"), json!(["telemetry.example.net"]), Value::Null),
            (json!("learned-web-sa-web-443-credentials"), json!(["api.cloud.com", "api.partner.com"]), json!("allow")),
        ],
        "{yaml}"
    );
    let out = run(&["replay", "--policy", proposed.to_str().unwrap(), log_path.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row["after"]["outcome"] == "allow"), "{rows:?}");
    // Least privilege: the telemetry endpoint still may not receive credentials.
    let proposal = harness::policy_file::load_policy(&proposed).unwrap();
    let owned: policy::view::request::OwnedRequest =
        serde_json::from_value(request("telemetry.example.net", json!([["authorization", "Bearer x"]]))).unwrap();
    let d = harness::offline::decide_request(&proposal, &owned);
    assert_eq!(d.primary().map(|f| f.code.as_str()), Some("egress_credentials_not_allowed"));
    std::fs::remove_dir_all(dir).unwrap();
}
