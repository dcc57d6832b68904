//! `meshguard test`: policy unit tests a team keeps next to its policy (like `opa test`).
//!
//! A test file (`NAME.tests.yaml`, YAML or JSON) names its policy and lists cases:
//!
//! ```yaml
//! policy: demo.yaml              # relative to this file (or `meshguard test --policy P`)
//! cases:
//!   - name: web reads the API
//!     request: {method: GET, path: /api/items, authority: api.default.svc.cluster.local,
//!               peer: {mtls: true, uriSan: "spiffe://cluster.local/ns/web/sa/web"}, direction: inbound}
//!     expect: {outcome: allow}
//!   - name: batch never reaches admin
//!     request: {method: GET, path: /admin, peer: {mtls: true, uriSan: "spiffe://cluster.local/ns/batch/sa/batch"}}
//!     expect: {outcome: deny, codes: [peer_identity_principal_denied], rules: [batch-never-admin]}
//! ```
//!
//! `request` is what `meshguard eval --request` reads, `connection` what `eval --connection`
//! reads. `expect.outcome` is `allow`, `deny` or `would_deny`; `codes` and `rules`, when given,
//! are the reason codes and rule ids of the findings, exactly (in any order; `[]`: none).
//!
//! Rule coverage: an identity rule is exercised when a case's findings name it, under the
//! policy or under the policy with that rule's action flipped (an allow rule a case passes
//! through denies it when flipped); an egress rule, a JWT rule or an upstream destination when
//! a finding names it or a case decides differently without it. Rules no case exercises are
//! listed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use policy::view::connection::OwnedConnection;
use policy::view::request::OwnedRequest;
use policy::{Decision, Policy};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cli_io::{bad_input, code, display_name, exit, read_text, Output};
use crate::offline::{decide_connection, decide_request, DIRECTION_REQUIRED};
use crate::policy_file::{load_policy_and_value, parse_document};

/// The file name ending that marks a test file when a directory is given.
pub const SUFFIX: &str = ".tests.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    policy: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    request: Option<Value>,
    #[serde(default)]
    connection: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    codes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rules: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Allow,
    Deny,
    WouldDeny,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::WouldDeny => "would_deny",
        }
    }
}

/// A case ready to run: its input parsed.
enum Input {
    Request(Box<OwnedRequest>),
    Connection(OwnedConnection),
}

fn decide(policy: &Policy, input: &Input) -> Decision {
    match input {
        Input::Request(r) => decide_request(policy, r),
        Input::Connection(c) => decide_connection(policy, c),
    }
}

/// Test files under `paths` (files as given; directories searched for `*.tests.yaml`).
fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| bad_input(format!("{}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(SUFFIX)))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(bad_input(format!("{}: no *{SUFFIX} files", path.display())));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn parse_input(case: &Case, policy: &Policy, at: &str) -> Result<Input> {
    let needs_direction = policy.needs().direction;
    match (&case.request, &case.connection) {
        (Some(r), None) => {
            if needs_direction && r.get("direction").is_none() {
                return Err(bad_input(format!("{at}.request.direction: {DIRECTION_REQUIRED}")));
            }
            let r: OwnedRequest =
                serde_json::from_value(r.clone()).map_err(|e| bad_input(format!("{at}.request: {e}")))?;
            Ok(Input::Request(Box::new(r)))
        }
        (None, Some(c)) => {
            if needs_direction && c.get("direction").is_none() {
                return Err(bad_input(format!("{at}.connection.direction: {DIRECTION_REQUIRED}")));
            }
            let c: OwnedConnection =
                serde_json::from_value(c.clone()).map_err(|e| bad_input(format!("{at}.connection: {e}")))?;
            Ok(Input::Connection(c))
        }
        _ => Err(bad_input(format!("{at}: a case has exactly one of `request` and `connection`"))),
    }
}

/// Why `decision` does not meet `expect`, if it does not.
fn failure(expect: &Expect, decision: &Decision) -> Option<String> {
    let mut why = Vec::new();
    if decision.outcome().as_str() != expect.outcome.as_str() {
        why.push(format!("outcome {} (expected {})", decision.outcome().as_str(), expect.outcome.as_str()));
    }
    let codes: BTreeSet<String> = decision.findings.iter().map(|f| f.code.as_str().to_string()).collect();
    if let Some(want) = &expect.codes {
        let want: BTreeSet<String> = want.iter().cloned().collect();
        if want != codes {
            why.push(format!("codes {codes:?} (expected {want:?})"));
        }
    }
    let rules: BTreeSet<String> = decision.findings.iter().map(|f| f.rule.clone()).collect();
    if let Some(want) = &expect.rules {
        let want: BTreeSet<String> = want.iter().cloned().collect();
        if want != rules {
            why.push(format!("rules {rules:?} (expected {want:?})"));
        }
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

/// The sections whose rules coverage is about, and the name of each one's rule list.
const RULE_LISTS: [(&str, &str); 4] =
    [("identity", "rules"), ("egress", "allow"), ("jwt", "rules"), ("upstream", "destinations")];

/// The rules of a policy document that coverage is about: `(section, index, id)`.
fn rules_of(doc: &Value) -> Vec<(&'static str, usize, String)> {
    let mut out = Vec::new();
    for (section, list) in RULE_LISTS {
        if let Some(rules) = doc.get(section).and_then(|s| s.get(list)).and_then(Value::as_array) {
            for (i, r) in rules.iter().enumerate() {
                if let Some(id) = r.get("id").and_then(Value::as_str) {
                    out.push((section, i, id.to_string()));
                }
            }
        }
    }
    out
}

/// The rules no case exercises (see the module doc).
fn uncovered(doc: &Value, policy: &Policy, inputs: &[Input]) -> Vec<String> {
    let base: Vec<Decision> = inputs.iter().map(|i| decide(policy, i)).collect();
    let named: BTreeSet<&str> = base.iter().flat_map(|d| d.findings.iter().map(|f| f.rule.as_str())).collect();
    let mut out = Vec::new();
    for (section, i, id) in rules_of(doc) {
        if named.contains(id.as_str()) {
            continue;
        }
        let mut mutant = doc.clone();
        let exercised = match section {
            "identity" => {
                let Some(rule) = mutant.pointer_mut(&format!("/identity/rules/{i}")) else { continue };
                let flipped = if rule.get("action").and_then(Value::as_str) == Some("deny") { "allow" } else { "deny" };
                rule["action"] = flipped.into();
                Policy::from_value(mutant)
                    .is_ok_and(|p| inputs.iter().any(|input| decide(&p, input).findings.iter().any(|f| f.rule == id)))
            }
            _ => {
                let list = RULE_LISTS.iter().find(|(s, _)| *s == section).map_or("allow", |(_, l)| l);
                if let Some(list) = mutant.pointer_mut(&format!("/{section}/{list}")).and_then(Value::as_array_mut) {
                    if i < list.len() {
                        list.remove(i);
                    }
                }
                Policy::from_value(mutant)
                    .is_ok_and(|p| inputs.iter().zip(&base).any(|(input, d)| decide(&p, input) != *d))
            }
        };
        if !exercised {
            out.push(format!("{section}: {id}"));
        }
    }
    out
}

/// `meshguard test`.
pub fn run(paths: &[PathBuf], policies: &[PathBuf], output: Output) -> Result<ExitCode> {
    let files = test_files(paths)?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut reports = Vec::new();
    let mut out = std::io::stdout().lock();
    for file in &files {
        let name = display_name(file);
        let text = read_text(file)?;
        let value = parse_document(&text)
            .map_err(|errs| bad_input(errs.iter().map(|e| format!("{name}: {e}")).collect::<Vec<_>>().join("\n")))?;
        let tests: TestFile = parse_test_file(value).map_err(|e| bad_input(format!("{name}: {e}")))?;
        let policy_paths: Vec<PathBuf> = if !policies.is_empty() {
            policies.to_vec()
        } else if let Some(p) = &tests.policy {
            vec![file.parent().unwrap_or(Path::new(".")).join(p)]
        } else {
            return Err(bad_input(format!("{name}: names no `policy:` (or give --policy)")));
        };
        for policy_path in &policy_paths {
            let (policy, doc) = load_policy_and_value(policy_path)?;
            let mut inputs = Vec::new();
            for (i, case) in tests.cases.iter().enumerate() {
                inputs.push(parse_input(case, &policy, &format!("{name}: cases[{i}]"))?);
            }
            let mut case_reports = Vec::new();
            if output == Output::Table {
                writeln!(out, "{name} against {} (revision {})", display_name(policy_path), policy.revision())?;
            }
            for (case, input) in tests.cases.iter().zip(&inputs) {
                let decision = decide(&policy, input);
                let why = failure(&case.expect, &decision);
                if why.is_some() {
                    failed += 1;
                } else {
                    passed += 1;
                }
                if output == Output::Table {
                    match &why {
                        None => writeln!(out, "  PASS  {}", case.name)?,
                        Some(w) => writeln!(out, "  FAIL  {}: {w}", case.name)?,
                    }
                }
                case_reports.push(json!({
                    "name": case.name,
                    "passed": why.is_none(),
                    "failure": why,
                    "expected": case.expect,
                    "actual": {
                        "outcome": decision.outcome().as_str(),
                        "codes": decision.findings.iter().map(|f| f.code.as_str()).collect::<Vec<_>>(),
                        "rules": decision.findings.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
                    },
                }));
            }
            let uncovered = uncovered(&doc, &policy, &inputs);
            let total_rules = rules_of(&doc).len();
            if output == Output::Table {
                if uncovered.is_empty() {
                    writeln!(out, "  coverage: every rule ({total_rules}) exercised")?;
                } else {
                    writeln!(
                        out,
                        "  coverage: {} of {total_rules} rules exercised; no case exercises {}",
                        total_rules - uncovered.len(),
                        uncovered.join(", ")
                    )?;
                }
            }
            reports.push(json!({
                "file": name,
                "policy": display_name(policy_path),
                "revision": policy.revision(),
                "cases": case_reports,
                "rules": total_rules,
                "uncoveredRules": uncovered,
            }));
        }
    }
    match output {
        Output::Table => writeln!(out, "{passed} passed, {failed} failed")?,
        Output::Json => {
            writeln!(out, "{}", json!({"files": reports, "passed": passed, "failed": failed}))?;
        }
    }
    Ok(code(if failed > 0 { exit::NO } else { exit::OK }))
}

/// Deserialize a test file, naming the path of the first error.
fn parse_test_file(value: Value) -> Result<TestFile, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}
