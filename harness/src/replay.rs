//! Decision logs read back: `meshguard replay`, and the input of `diff` and `learn`.
//!
//! A replay never presents a guess as a change. Lines the filter marked `"replayable": false`
//! (the logged request, with its query dropped and secrets redacted, does not get the same
//! findings from the policy that logged it), and lines logged under the very revision being
//! replayed that now decide differently (a log written before that marking existed), are
//! reported apart as not replayable. Lines that look like decision lines but cannot be read
//! (truncated, wrapped, garbage, longer than [`MAX_LINE`]) are counted and named by file and
//! line, and make the replay exit 2 unless `--skip-malformed`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use policy::view::connection::OwnedConnection;
use policy::view::request::OwnedRequest;
use policy::view::upstream::OwnedUpstream;
use policy::{Decision, Policy};
use serde_json::{json, Value};

use crate::cli_io::{display_name, open_lines, read_line_bounded, Line};

/// The longest decision line read (a line with every header of a large request is well under
/// this); longer lines are malformed.
pub const MAX_LINE: usize = 1 << 20;
/// After this many bytes without a newline the input is not a log: the read stops.
pub const MAX_LINE_SKIP: u64 = 64 << 20;

/// What a decision line was about.
#[derive(Debug, Clone)]
pub enum Subject {
    Request(Box<OwnedRequest>),
    Connection(OwnedConnection),
    /// A response-phase line (upstream pinning, `"phase": "response"`): the upstream
    /// connection as observed, decided again by the upstream checks alone.
    Upstream(OwnedUpstream),
}

/// One decision line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `FILE:LINE`.
    pub at: String,
    pub record: Value,
    pub subject: Subject,
    /// False when the filter said the logged request does not decide like the real one.
    pub replayable: bool,
}

impl Entry {
    pub fn outcome(&self) -> &str {
        self.record["outcome"].as_str().unwrap_or("?")
    }
    pub fn revision(&self) -> &str {
        self.record["policyRevision"].as_str().unwrap_or("")
    }

    /// The decision `policy` makes for this line's request or connection, exactly as the
    /// filter would (it logged the direction and workload it used).
    pub fn decide(&self, policy: &Policy) -> Decision {
        match &self.subject {
            Subject::Connection(c) => crate::offline::decide_connection(policy, c),
            Subject::Request(r) => crate::offline::decide_request(policy, r),
            Subject::Upstream(u) => policy.evaluate_upstream(&u.view()),
        }
    }

    /// What a line that cannot be replayed lacks, in a few words: when the JWT check decided,
    /// as logged or as replayed (`decision`), the token was never logged (redacted), so the
    /// replay cannot verify it.
    pub fn not_replayable_because(&self, decision: &Decision) -> &'static str {
        let jwt = self.record["findings"].as_array().is_some_and(|f| f.iter().any(|f| f["check"] == "jwt"))
            || decision.findings.iter().any(|f| f.check == policy::Check::Jwt);
        if jwt {
            "token not logged"
        } else {
            "not replayable"
        }
    }

    /// Whether a replay of this line under `policy` can be trusted: the filter did not mark
    /// it, and if it was logged under this very revision, it decides as logged.
    pub fn trustworthy_under(&self, policy: &Policy, decision: &Decision) -> bool {
        self.replayable && !(self.revision() == policy.revision() && decision.outcome().as_str() != self.outcome())
    }
}

/// What reading the logs found besides decision lines.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub lines: u64,
    pub decisions: u64,
    /// Lines that look like decision lines and cannot be read: `FILE:LINE: why` (the first 20).
    pub malformed: Vec<String>,
    pub malformed_count: u64,
}

impl ReadStats {
    fn malformed(&mut self, at: &str, why: &str) {
        self.malformed_count += 1;
        if self.malformed.len() < 20 {
            self.malformed.push(format!("{at}: {why}"));
        }
    }
}

/// The decision-log JSON in a line of Envoy's log (after `meshguard.decision `) or a bare
/// JSON line; `None` for a line that is neither (Envoy's other log lines).
fn decision_json(line: &str) -> Option<&str> {
    match line.find("meshguard.decision") {
        Some(i) => Some(line.get(i + "meshguard.decision".len()..).unwrap_or_default().trim()),
        None if line.trim_start().starts_with('{') => Some(line.trim()),
        None => None,
    }
}

fn parse_entry(at: String, json_text: &str) -> Result<Entry, String> {
    let record: Value = serde_json::from_str(json_text).map_err(|e| format!("not a decision line: {e}"))?;
    if !record.is_object() || record.get("outcome").and_then(Value::as_str).is_none() {
        return Err("not a decision line: no `outcome`".into());
    }
    let subject =
        if let (Some("response"), Some(u)) = (record.get("phase").and_then(Value::as_str), record.get("upstream")) {
            Subject::Upstream(serde_json::from_value(u.clone()).map_err(|e| format!("upstream: {e}"))?)
        } else if let Some(c) = record.get("connection") {
            Subject::Connection(serde_json::from_value(c.clone()).map_err(|e| format!("connection: {e}"))?)
        } else if let Some(r) = record.get("request") {
            Subject::Request(Box::new(serde_json::from_value(r.clone()).map_err(|e| format!("request: {e}"))?))
        } else {
            return Err("a decision line without `request` or `connection`".into());
        };
    let replayable = record.get("replayable").and_then(Value::as_bool).unwrap_or(true);
    Ok(Entry { at, record, subject, replayable })
}

/// Read every decision line of `logs` (none, or `-`: standard input), calling `each` on each.
/// An unreadable file is an error naming it; a line that cannot be read is counted.
pub fn read_logs(logs: &[PathBuf], mut each: impl FnMut(Entry) -> Result<()>) -> Result<ReadStats> {
    let stdin = [PathBuf::from("-")];
    let logs = if logs.is_empty() { &stdin[..] } else { logs };
    let mut stats = ReadStats::default();
    let started = Instant::now();
    let mut last_progress = started;
    for path in logs {
        read_one(path, &mut stats, &mut each, started, &mut last_progress)?;
    }
    if last_progress != started {
        eprintln!();
    }
    Ok(stats)
}

fn read_one(
    path: &Path,
    stats: &mut ReadStats,
    each: &mut impl FnMut(Entry) -> Result<()>,
    started: Instant,
    last_progress: &mut Instant,
) -> Result<()> {
    let name = display_name(path);
    let mut reader = open_lines(path)?;
    let mut n = 0u64;
    loop {
        let line = read_line_bounded(&mut reader, MAX_LINE, MAX_LINE_SKIP)
            .map_err(|e| crate::cli_io::bad_input(format!("{name}:{}: {e}", n + 1)))?;
        let Some(line) = line else { break };
        n += 1;
        stats.lines += 1;
        let at = format!("{name}:{n}");
        match line {
            Line::TooLong => stats.malformed(&at, &format!("line longer than {MAX_LINE} bytes")),
            Line::Text(text) => {
                if let Some(json_text) = decision_json(&text) {
                    match parse_entry(at.clone(), json_text) {
                        Ok(entry) => {
                            stats.decisions += 1;
                            each(entry)?;
                        }
                        Err(why) => stats.malformed(&at, &why),
                    }
                }
            }
        }
        if n.is_multiple_of(1024) && last_progress.elapsed() > Duration::from_secs(2) {
            *last_progress = Instant::now();
            eprint!("\r{} decisions read ({:.0} s) ...", stats.decisions, started.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
        }
    }
    Ok(())
}

/// One replayed line, as `replay --output json` prints it.
pub fn row_json(entry: &Entry, policy: &Policy, decision: &Decision, trustworthy: bool) -> Value {
    let before = entry.outcome();
    let after = decision.outcome().as_str();
    json!({
        "at": entry.at,
        "requestId": entry.record["requestId"],
        "before": {"outcome": before, "code": entry.record["code"], "rule": entry.record["rule"], "policyRevision": entry.record["policyRevision"]},
        "after": {"outcome": after, "code": decision.primary().map(|f| f.code.as_str()), "rule": decision.primary().map(|f| f.rule.as_str()), "policyRevision": policy.revision()},
        "replayable": trustworthy,
        "changed": if trustworthy { Value::from(before != after) } else { Value::Null },
        "notReplayable": if trustworthy { Value::Null } else { entry.not_replayable_because(decision).into() },
    })
}
