//! `meshguard eval` and `replay` decide JWT rules as the filter does: at the time the request
//! says (`nowUnixSecs`, which the filter logs), `--now`, or the clock; and a replayed JWT
//! decision whose token was redacted from the log is reported as such, never as a change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Command, Output};

use serde_json::{json, Value};

const POLICY: &str = "envoy-config/policies/jwt.yaml";
const ISSUED: u64 = 1_800_000_000;

fn meshguard(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .args(args)
        .current_dir(harness::workspace_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        let mut input = input;
        input.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The valid token of `jwt.tests.yaml` (RS256, the harness's test key, issued at ISSUED, valid
/// for an hour).
fn token() -> String {
    let tests =
        std::fs::read_to_string(harness::workspace_root().join("envoy-config/policies/jwt.tests.yaml")).unwrap();
    let at = tests.find("Bearer ").unwrap() + "Bearer ".len();
    tests[at..].split('"').next().unwrap().to_string()
}

fn request(token: Option<&str>, now: Option<u64>) -> Value {
    let mut r = json!({"method": "GET", "path": "/api/items", "authority": "api.mesh.local", "headers": [["x-request-id", "r1"]]});
    if let Some(t) = token {
        r["headers"].as_array_mut().unwrap().push(json!(["authorization", format!("Bearer {t}")]));
    }
    if let Some(now) = now {
        r["nowUnixSecs"] = now.into();
    }
    r
}

fn eval(request: &Value, extra: &[&str]) -> (i32, Value) {
    let dir = harness::scratch_dir("cli-jwt").unwrap();
    let path = dir.join("request.json");
    std::fs::write(&path, request.to_string()).unwrap();
    let mut args = vec!["eval", "--policy", POLICY, "--request", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = meshguard(&args, None);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), serde_json::from_str(&stdout).unwrap_or(Value::Null))
}

#[test]
fn eval_decides_at_now_or_the_requests_time() {
    let t = token();
    let (code, d) = eval(&request(Some(&t), None), &["--now", &(ISSUED + 100).to_string()]);
    assert_eq!((code, d["outcome"].as_str()), (0, Some("allow")), "{d}");
    let (code, d) = eval(&request(Some(&t), None), &["--now", &(ISSUED + 3700).to_string()]);
    assert_eq!((code, d["findings"][0]["code"].as_str()), (1, Some("jwt_expired")), "{d}");
    let (code, d) = eval(&request(Some(&t), None), &["--now", &(ISSUED - 3600).to_string()]);
    assert_eq!((code, d["findings"][0]["code"].as_str()), (1, Some("jwt_not_yet_valid")), "{d}");
    // The request's own time, and --now over it.
    let (code, d) = eval(&request(Some(&t), Some(ISSUED + 100)), &[]);
    assert_eq!((code, d["outcome"].as_str()), (0, Some("allow")), "{d}");
    let (code, _) = eval(&request(Some(&t), Some(ISSUED + 100)), &["--now", &(ISSUED + 3700).to_string()]);
    assert_eq!(code, 1);
}

#[test]
fn replay_says_a_jwt_decision_cannot_be_replayed_because_the_token_was_not_logged() {
    let policy = harness::policy_file::load_policy(&harness::workspace_root().join(POLICY)).unwrap();
    let t = token();
    let mut log = String::new();
    for (id, token, now) in [("expired", Some(t.as_str()), ISSUED + 3700), ("missing", None, ISSUED + 100)] {
        let mut r = request(token, Some(now));
        r["headers"][0][1] = id.into();
        let owned: policy::view::request::OwnedRequest = serde_json::from_value(r).unwrap();
        let pairs = owned.pairs();
        let view = owned.view(&pairs);
        let line = policy.decision_log_line(&policy.evaluate(&view), &view, 0);
        assert!(!line.contains(&t), "the token is in the decision log: {line}");
        log.push_str(&format!(
            "[2026-11-30 07:00:00.000][15][info][wasm] wasm log meshguard: meshguard.decision {line}\n"
        ));
    }
    let out = meshguard(&["replay", "--policy", POLICY, "--output", "json"], Some(&log));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["requestId"], "expired");
    assert_eq!(
        (&rows[0]["replayable"], &rows[0]["notReplayable"]),
        (&json!(false), &json!("token not logged")),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["changed"], Value::Null);
    // A request without a token decides the same from its log line, at the logged time.
    assert_eq!(rows[1]["requestId"], "missing");
    assert_eq!((&rows[1]["replayable"], &rows[1]["changed"]), (&json!(true), &json!(false)), "{}", rows[1]);
    assert_eq!(rows[1]["after"]["code"], "jwt_missing");
    // The table says why too.
    let out = meshguard(&["replay", "--policy", POLICY, "--output", "table"], Some(&log));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("token not logged"), "{table}");
}
