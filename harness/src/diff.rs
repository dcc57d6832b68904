//! `meshguard diff OLD NEW [LOGS...]`: what changed between two policies, rule by rule, and,
//! given decision logs, which logged decisions change, grouped by rule and reason code.
//!
//! Rules are matched by `id` (identity.rules, egress.allow), so reordering is not a change and
//! an edited rule shows the fields that changed. Each logged request is decided under both
//! policies (not compared with the log, so the logs may come from any revision); lines the
//! filter marked not replayable are counted apart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::cli_io::{bad_input, code, exit, Output};
use crate::policy_file::load_policy_and_value;
use crate::replay::read_logs;

/// Every leaf of a document by path; lists of objects with an `id` are keyed by it
/// (`identity.rules[web-reads].principals`), other lists are one leaf.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, child, out);
            }
        }
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.get("id").and_then(Value::as_str).is_some()) =>
        {
            for item in items {
                let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
                flatten(&format!("{prefix}[{id}]"), item, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// The rule (or setting) a path belongs to: `identity.rules[web-reads]` for
/// `identity.rules[web-reads].principals`, the path itself for a setting.
fn unit_of(path: &str) -> &str {
    match path.find(']') {
        Some(i) => path.get(..=i).unwrap_or(path),
        None => path,
    }
}

/// The rule-by-rule changes: `(op, unit, detail)` with op `+`, `-` or `~`.
pub fn policy_changes(old: &Value, new: &Value) -> Vec<(char, String, String)> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let units = |m: &BTreeMap<String, Value>| -> BTreeMap<String, ()> {
        m.keys().filter(|k| k.contains('[')).map(|k| (unit_of(k).to_string(), ())).collect()
    };
    let (ua, ub) = (units(&a), units(&b));
    let mut out = Vec::new();
    for u in ua.keys().filter(|u| !ub.contains_key(*u)) {
        out.push(('-', u.clone(), "removed".to_string()));
    }
    for u in ub.keys().filter(|u| !ua.contains_key(*u)) {
        out.push(('+', u.clone(), "added".to_string()));
    }
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let unit = unit_of(k);
        if unit != k.as_str() && (!ua.contains_key(unit) || !ub.contains_key(unit)) {
            continue; // reported as a whole rule added or removed
        }
        let (va, vb) = (a.get(k), b.get(k));
        if va != vb {
            let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
            out.push(('~', k.clone(), format!("{} → {}", show(va), show(vb))));
        }
    }
    out
}

/// `meshguard diff`.
pub fn run(
    old_path: &Path,
    new_path: &Path,
    logs: &[PathBuf],
    fail_on_change: bool,
    output: Output,
) -> Result<ExitCode> {
    if crate::cli_io::is_stdin(old_path) && crate::cli_io::is_stdin(new_path) {
        return Err(bad_input("diff: OLD and NEW cannot both be standard input"));
    }
    let (old, old_doc) = load_policy_and_value(old_path)?;
    let (new, new_doc) = load_policy_and_value(new_path)?;
    let changes = policy_changes(&old_doc, &new_doc);
    let mut groups: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    let (mut total, mut changed, mut unreplayable) = (0u64, 0u64, 0u64);
    let mut malformed = 0u64;
    if !logs.is_empty() {
        let stats = read_logs(logs, |entry| {
            total += 1;
            let before = entry.decide(&old);
            if !entry.trustworthy_under(&old, &before) {
                unreplayable += 1;
                return Ok(());
            }
            let after = entry.decide(&new);
            if before.outcome() != after.outcome() || before.findings != after.findings {
                changed += 1;
                // The rule and code that explain the change: the new decision's, or, when it
                // now allows, the old decision's.
                let explain = after.primary().or_else(|| before.primary());
                let key = (
                    before.outcome().to_string(),
                    after.outcome().to_string(),
                    explain.map(|f| f.rule.clone()).unwrap_or_default(),
                    explain.map(|f| f.code.as_str().to_string()).unwrap_or_default(),
                );
                *groups.entry(key).or_default() += 1;
            }
            Ok(())
        })?;
        malformed = stats.malformed_count;
        for m in &stats.malformed {
            eprintln!("malformed: {m}");
        }
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Table => {
            writeln!(out, "policy: revision {} → {}", old.revision(), new.revision())?;
            if changes.is_empty() {
                writeln!(out, "  no rule or setting changed")?;
            }
            for (op, unit, detail) in &changes {
                writeln!(out, "  {op} {unit:<48} {detail}")?;
            }
            if !logs.is_empty() {
                writeln!(
                    out,
                    "decisions: {changed} of {total} logged change ({unreplayable} not replayable, {malformed} malformed lines)"
                )?;
                for ((before, after, rule, code_), n) in &groups {
                    writeln!(out, "  {n:>6}  {before:<10} → {after:<10}  rule {rule:<28} {code_}")?;
                }
            }
        }
        Output::Json => {
            let rows: Vec<Value> = changes
                .iter()
                .map(|(op, unit, detail)| {
                    json!({"op": match op { '+' => "added", '-' => "removed", _ => "changed" }, "path": unit, "detail": detail})
                })
                .collect();
            let grouped: Vec<Value> = groups
                .iter()
                .map(|((before, after, rule, code_), n)| {
                    json!({"before": before, "after": after, "rule": rule, "code": code_, "count": n})
                })
                .collect();
            writeln!(
                out,
                "{}",
                json!({
                    "old": old.revision(), "new": new.revision(), "policyChanges": rows,
                    "decisions": {"total": total, "changed": changed, "notReplayable": unreplayable,
                                  "malformed": malformed, "groups": grouped},
                })
            )?;
        }
    }
    if malformed > 0 {
        return Ok(code(exit::BAD_INPUT));
    }
    Ok(code(if fail_on_change && changed > 0 { exit::NO } else { exit::OK }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_matched_by_id() {
        let old = json!({"version": 1, "identity": {"rules": [
            {"id": "a", "action": "allow", "principals": ["x"]},
            {"id": "b", "action": "deny", "principals": ["y"]}]}});
        let new = json!({"version": 1, "mode": "dry-run", "identity": {"rules": [
            {"id": "b", "action": "deny", "principals": ["y", "z"]},
            {"id": "c", "action": "allow", "principals": ["x"]}]}});
        let got: Vec<(char, String)> = policy_changes(&old, &new).into_iter().map(|(o, u, _)| (o, u)).collect();
        assert_eq!(
            got,
            [
                ('-', "identity.rules[a]".to_string()),
                ('+', "identity.rules[c]".to_string()),
                ('~', "identity.rules[b].principals".to_string()),
                ('~', "mode".to_string()),
            ]
        );
    }
}
