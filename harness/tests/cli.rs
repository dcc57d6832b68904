//! The `meshguard` command line as people use it: the real binary, its exit codes, stdout and
//! stderr. Every example policy under envoy-config/policies/ must pass `meshguard check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn meshguard(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshguard"));
    cmd.args(args).current_dir(harness::workspace_root());
    match stdin {
        None => cmd.output().unwrap(),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

const POLICY: &str = r#"
version: 1
identity:
  trustDomains: [cluster.local]
  rules:
    - id: web-reads
      action: allow
      match: { paths: [{ prefix: /api }], methods: [GET] }
      principals: ["spiffe://cluster.local/ns/web/sa/*"]
    - id: trial
      action: deny
      mode: dry-run
      match: { paths: [{ prefix: /api/trial }] }
      principals: ["*"]
"#;

fn request(method: &str, path: &str, uri_san: Option<&str>) -> String {
    json!({"method": method, "path": path, "authority": "api", "scheme": "https",
           "headers": [["user-agent", "test"]], "peer": {"mtls": uri_san.is_some(), "uriSan": uri_san},
           "direction": "inbound"})
    .to_string()
}

#[test]
fn every_example_policy_passes_check() {
    let dir = harness::workspace_root().join("envoy-config/policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml")
            || path.to_string_lossy().ends_with(harness::policy_test::SUFFIX)
        {
            continue;
        }
        let out = meshguard(&["check", path.to_str().unwrap()], None);
        assert!(out.status.success(), "{}: {}", path.display(), text(&out.stderr));
        assert!(text(&out.stdout).contains(": ok (revision "), "{}", text(&out.stdout));
        checked += 1;
    }
    assert!(checked >= 1, "no example policies in {}", dir.display());
}

#[test]
fn check_names_every_bad_field_and_exits_2() {
    let dir = harness::scratch_dir("cli").unwrap();
    let bad = write(
        &dir,
        "bad.yaml",
        "version: 1\ndenyResponse: {status: 200}\nidentity:\n  trustDomains: [Bad_TD!]\n  rules:\n    - id: a\n      action: allow\n      principals: [\"spiffe://x/../y\"]\n",
    );
    let out = meshguard(&["check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "an invalid policy is bad input, exit 2, in every command");
    let stderr = text(&out.stderr);
    let prefix = format!("{}: ", bad.display());
    assert!(stderr.lines().all(|l| l.starts_with(&prefix)), "every line names the file: {stderr}");
    let paths: Vec<&str> =
        stderr.lines().map(|l| l.strip_prefix(&prefix).unwrap().split(": ").next().unwrap()).collect();
    assert_eq!(
        paths,
        ["denyResponse.status", "identity.trustDomains[0]", "identity.rules[0].principals[0]"],
        "{stderr}"
    );

    let unknown = write(&dir, "unknown.yaml", "version: 1\nidentity:\n  rules:\n    - id: a\n      acton: allow\n");
    let out = meshguard(&["check", unknown.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with(&format!("{}: identity.rules[0].acton: unknown field `acton`", unknown.display())),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_prints_the_decision_and_exits_by_verdict() {
    let dir = harness::scratch_dir("cli").unwrap();
    let policy = write(&dir, "p.yaml", POLICY);
    let eval = |req: &str| {
        let r = write(&dir, "req.json", req);
        let out = meshguard(&["eval", "--policy", policy.to_str().unwrap(), "--request", r.to_str().unwrap()], None);
        let decision: Value = serde_json::from_str(&text(&out.stdout)).unwrap_or(Value::Null);
        (out.status.code(), decision)
    };

    let (code, d) = eval(&request("GET", "/api/items", Some("spiffe://cluster.local/ns/web/sa/web")));
    assert_eq!(
        (code, &d["verdict"], &d["enforced"], &d["findings"]),
        (Some(0), &json!("allow"), &json!(false), &json!([]))
    );

    // The route has an allow rule that does not admit batch.
    let (code, d) = eval(&request("GET", "/api/items", Some("spiffe://cluster.local/ns/batch/sa/batch")));
    assert_eq!(code, Some(1), "{d}");
    assert_eq!((&d["verdict"], &d["enforced"]), (&json!("deny"), &json!(true)));
    assert_eq!(d["principal"], "spiffe://cluster.local/ns/batch/sa/batch");
    assert_eq!(d["findings"][0]["check"], "peer_identity");
    assert_eq!(d["findings"][0]["code"], "peer_identity_principal_not_allowed");
    assert_eq!(d["findings"][0]["rule"], "web-reads");

    // A dry-run finding: a would-deny, exit 0.
    let (code, d) = eval(&request("GET", "/api/trial", Some("spiffe://cluster.local/ns/web/sa/web")));
    assert_eq!((code, &d["verdict"], &d["enforced"]), (Some(0), &json!("deny"), &json!(false)), "{d}");
    assert_eq!(d["findings"][0]["rule"], "trial");

    let (code, _) = eval(&request("GET", "/api/items", None));
    assert_eq!(code, Some(1));
    let (code, _) = eval("{\"method\": \"GET\"}");
    assert_eq!(code, Some(2), "a request without a path is a usage error");
    let (code, _) = eval("not json");
    assert_eq!(code, Some(2));
    let missing = meshguard(&["eval", "--policy", "/nonexistent.yaml", "--request", "/nonexistent.json"], None);
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn replay_re_decides_logged_requests_under_a_new_policy() {
    let dir = harness::scratch_dir("cli").unwrap();
    let old = policy::Policy::from_value(json!({"version": 1, "decisionLog": {"allowSampleRate": 1}})).unwrap();
    let new = write(&dir, "new.yaml", POLICY);
    // Two logged decisions, as Envoy's log has them.
    let mut log = String::new();
    for (id, caller) in [("r1", "web"), ("r2", "batch")] {
        let owned: policy::view::request::OwnedRequest = serde_json::from_str(&request(
            "GET",
            "/api/items?secret=x",
            Some(&format!("spiffe://cluster.local/ns/{caller}/sa/{caller}")),
        ))
        .unwrap();
        let mut owned = owned;
        owned.headers.push(("x-request-id".into(), id.into()));
        let pairs = owned.pairs();
        let view = owned.view(&pairs);
        let line = old.decision_log_line(&old.evaluate(&view), &view, 0);
        log.push_str(&format!(
            "[2026-11-22 07:00:00.000][15][info][wasm] wasm log meshguard meshguard: meshguard.decision {line}\n"
        ));
        log.push_str("[2026-11-22 07:00:00.000][15][info][main] unrelated line\n");
    }
    let out = meshguard(&["replay", "--policy", new.to_str().unwrap(), "--output", "json"], Some(&log));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((&rows[0]["requestId"], &rows[0]["changed"]), (&json!("r1"), &json!(false)));
    assert_eq!((&rows[1]["requestId"], &rows[1]["changed"]), (&json!("r2"), &json!(true)));
    assert_eq!(rows[1]["after"]["code"], "peer_identity_principal_not_allowed");
    assert!(text(&out.stderr).contains("replayed 2 decisions"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn render_refuses_an_invalid_policy() {
    let dir = harness::scratch_dir("cli").unwrap();
    let bad = write(&dir, "bad.yaml", "version: 2\n");
    let out = meshguard(&["render", "wasmplugin", "--policy", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with(&format!("{}: version: ", bad.display())), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The example policies ship with their unit tests; every case passes and every rule is
/// exercised. A case with a wrong expectation fails the run (exit 1) and says why.
#[test]
fn example_policies_pass_their_own_tests() {
    let out = meshguard(&["test", "envoy-config/policies", "--output", "json"], None);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    let policies = std::fs::read_dir(harness::workspace_root().join("envoy-config/policies"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".yaml") && !name.ends_with(harness::policy_test::SUFFIX)
        })
        .count();
    assert_eq!(files.len(), policies, "every example policy has a test file: {report}");
    assert!(report["passed"].as_u64().unwrap() >= 20, "{report}");
    for f in files {
        assert_eq!(f["uncoveredRules"], json!([]), "{f}");
    }

    let dir = harness::scratch_dir("cli").unwrap();
    let wrong = write(
        &dir,
        "wrong.tests.yaml",
        &format!(
            "policy: {}\ncases:\n  - name: plaintext\n    request: {{method: GET, path: /api}}\n    expect: {{outcome: allow}}\n  - name: web\n    request: {{method: GET, path: /api, peer: {{mtls: true, uriSan: 'spiffe://cluster.local/ns/web/sa/web'}}}}\n    expect: {{outcome: allow}}\n",
            harness::workspace_root().join("envoy-config/policies/demo.yaml").display()
        ),
    );
    let out = meshguard(&["test", wrong.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL  plaintext: outcome deny (expected allow)"), "{stdout}");
    assert!(stdout.contains("PASS  web") && stdout.contains("1 passed, 1 failed"), "{stdout}");
    assert!(stdout.contains("no case exercises identity: batch-never-admin"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `diff OLD NEW LOGS`: the rules that changed, and the logged decisions that change, grouped
/// by rule and reason code; `--fail-on-change` exits 1.
#[test]
fn diff_shows_rule_changes_and_the_decisions_they_change() {
    let dir = harness::scratch_dir("cli").unwrap();
    let old = write(&dir, "old.yaml", POLICY);
    let new = write(
        &dir,
        "new.yaml",
        &POLICY.replace(
            "principals: [\"spiffe://cluster.local/ns/web/sa/*\"]",
            "principals: [\"spiffe://cluster.local/ns/ops/sa/*\"]",
        ),
    );
    let logged = policy::Policy::from_value(json!({"version": 1, "decisionLog": {"allowSampleRate": 1}})).unwrap();
    let mut log = String::new();
    for (id, caller) in [("d1", "web"), ("d2", "web"), ("d3", "ops")] {
        let mut owned: policy::view::request::OwnedRequest = serde_json::from_str(&request(
            "GET",
            "/api/items",
            Some(&format!("spiffe://cluster.local/ns/{caller}/sa/{caller}")),
        ))
        .unwrap();
        owned.headers.push(("x-request-id".into(), id.into()));
        let pairs = owned.pairs();
        let view = owned.view(&pairs);
        log.push_str(&format!("{}\n", logged.decision_log_line(&logged.evaluate(&view), &view, 0)));
    }
    let log_path = write(&dir, "envoy.log", &log);
    let args = [old.to_str().unwrap(), new.to_str().unwrap(), log_path.to_str().unwrap()];
    let out = meshguard(&["diff", args[0], args[1], args[2], "--output", "json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["policyChanges"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["policyChanges"][0]["path"], "identity.rules[web-reads].principals");
    assert_eq!((&d["decisions"]["total"], &d["decisions"]["changed"]), (&json!(3), &json!(3)), "{d}");
    assert_eq!(
        d["decisions"]["groups"],
        json!([
            {"before": "allow", "after": "deny", "rule": "web-reads", "code": "peer_identity_principal_not_allowed", "count": 2},
            {"before": "deny", "after": "allow", "rule": "web-reads", "code": "peer_identity_principal_not_allowed", "count": 1},
        ])
    );
    let out = meshguard(&["diff", args[0], args[1], args[2], "--fail-on-change"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("~ identity.rules[web-reads].principals"), "{}", text(&out.stdout));
    let out = meshguard(&["diff", args[0], args[0], args[2], "--fail-on-change"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("no rule or setting changed"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = meshguard(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        for command in ["check", "replay", "learn", "diff", "test"] {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
}
