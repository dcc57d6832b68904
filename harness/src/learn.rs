//! `meshguard learn`: from decision logs gathered in dry-run with every allow sampled
//! (`decisionLog.allowSampleRate: 1`), propose the least-privilege rules that would have
//! allowed exactly the observed traffic:
//!
//! - identity: one allow rule per observed route (host, path prefix of `--depth` canonical
//!   segments) and set of principals, with the methods they used; `defaultAction: deny`, so a
//!   route nobody was seen calling is refused;
//! - egress: one allow rule per source identity and port, with the hosts it reached (and
//!   `passthrough: true` where Envoy routed to PassthroughCluster). When the policy scopes
//!   credentials (`egress.credentials.default` is `deny` or `strip`), the hosts that were sent
//!   credentials (a credential header by name, or an `egress_credentials_*` finding) get a rule
//!   of their own with `credentials: allow`; the others keep the default. A credential in the
//!   query of a request no finding flagged cannot be seen in a log (the query is logged as a
//!   shape only).
//!
//! The proposal is the policy the logs were gathered under with `identity.rules` and
//! `egress.allow` replaced and both checks set to `mode: enforce` (a policy-wide `dry-run`
//! becomes `enforce`, with the hygiene check kept in dry-run); its comments say how many
//! logged requests each rule covers. `meshguard replay` of the same logs under it shows no
//! identity or egress deny (harness/tests/tuning.rs checks that). Requests no rule can allow
//! (no peer identity, a hygiene finding) are counted in the header comment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use policy::view::request::{OwnedDirection, OwnedRequest};
use serde_json::{json, Value};

use crate::cli_io::{bad_input, code, display_name, exit};
use crate::policy_file::load_policy_and_value;
use crate::replay::{read_logs, Subject};

/// Requests per host, whether any went to PassthroughCluster, and whether any carried
/// credentials.
type HostsSeen = BTreeMap<String, (u64, bool, bool)>;

#[derive(Default)]
struct Observed {
    /// (host or "", prefix) → method → principal → requests.
    routes: BTreeMap<(String, String), BTreeMap<String, BTreeMap<String, u64>>>,
    /// (source, port) → host → (requests, passthrough).
    egress: BTreeMap<(String, Option<u16>), HostsSeen>,
    no_identity: u64,
    hygiene: u64,
    unusable: u64,
}

/// The first `depth` segments of the canonical path, as a segment-aware prefix (`/` for the
/// root).
fn prefix_of(path: &str, depth: usize) -> String {
    let canonical = policy::parse::path::canonical(path.as_bytes());
    let canonical = String::from_utf8_lossy(&canonical).into_owned();
    let segments: Vec<&str> = canonical.split('/').filter(|s| !s.is_empty()).take(depth.max(1)).collect();
    if segments.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", segments.join("/"))
    }
}

/// The host of an authority, as rules name it (lowercase, no port, no trailing dot); None for
/// an IP literal or anything that is not a DNS name.
fn dns_host(authority: &str) -> Option<String> {
    let parsed = policy::parse::host::parse_authority(authority.as_bytes()).ok()?;
    parsed.host.name().map(str::to_string)
}

fn host_key(authority: &str) -> Option<(String, Option<u16>)> {
    let parsed = policy::parse::host::parse_authority(authority.as_bytes()).ok()?;
    Some((parsed.host.match_key()?, parsed.port))
}

/// The port the egress check sees for a request: the Istio cluster's, else the authority's,
/// else the scheme's.
fn egress_port(r: &OwnedRequest, authority_port: Option<u16>) -> Option<u16> {
    if let Some(cluster) = &r.cluster {
        let mut parts = cluster.split('|');
        if parts.next() == Some("outbound") {
            if let Some(port) = parts.next().and_then(|p| p.parse().ok()) {
                return Some(port);
            }
        }
    }
    authority_port.or(match r.scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })
}

fn slug(text: &str) -> String {
    let s: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        "root".to_string()
    } else {
        s
    }
}

/// `meshguard learn`.
pub fn run(policy_path: &Path, logs: &[PathBuf], depth: usize, out_path: Option<&Path>) -> Result<ExitCode> {
    if crate::cli_io::is_stdin(policy_path) && (logs.is_empty() || logs.iter().any(|l| crate::cli_io::is_stdin(l))) {
        return Err(bad_input("learn: the policy and the logs cannot both be standard input"));
    }
    let (_, doc) = load_policy_and_value(policy_path)?;
    let egress_doc = doc.get("egress").filter(|v| !v.is_null());
    let egress_all = egress_doc.and_then(|e| e.get("appliesTo")).and_then(Value::as_str) == Some("all");
    let workload_source = match egress_doc.and_then(|e| e.get("sourceIdentity")).and_then(Value::as_str) {
        Some(s) => s == "workload",
        None => !egress_all,
    };
    let trust_domain = egress_doc
        .and_then(|e| e.get("trustDomain"))
        .and_then(Value::as_str)
        .unwrap_or(policy::checks::egress::doc::DEFAULT_TRUST_DOMAIN)
        .to_string();
    let credential_headers: BTreeSet<String> = policy::checks::egress::credentials::BUILTIN_HEADERS
        .iter()
        .map(|h| h.to_string())
        .chain(
            egress_doc
                .and_then(|e| e.pointer("/credentials/headers"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase),
        )
        .collect();
    let scoped = matches!(
        egress_doc.and_then(|e| e.pointer("/credentials/default")).and_then(Value::as_str),
        Some("deny" | "strip")
    );
    let carries_credentials = |r: &OwnedRequest, record: &Value| {
        r.headers.iter().any(|(n, _)| credential_headers.contains(&n.to_ascii_lowercase()))
            || record["findings"].as_array().is_some_and(|f| {
                f.iter().any(|f| f["code"].as_str().is_some_and(|c| c.starts_with("egress_credentials_")))
            })
    };
    let identity_inbound_only = doc.pointer("/identity/appliesTo").and_then(Value::as_str) == Some("inbound");

    let mut seen = Observed::default();
    let source_of = |workload: &policy::view::request::OwnedWorkload, peer: Option<&str>| -> Option<String> {
        if workload_source {
            Some(format!(
                "spiffe://{trust_domain}/ns/{}/sa/{}",
                workload.namespace.as_deref()?,
                workload.service_account.as_deref()?
            ))
        } else {
            peer.map(str::to_string)
        }
    };
    let stats = read_logs(logs, |entry| {
        if entry.record["findings"].as_array().is_some_and(|f| f.iter().any(|f| f["check"] == "hygiene")) {
            seen.hygiene += 1;
        }
        match &entry.subject {
            Subject::Request(r) => {
                let outbound = matches!(r.direction, OwnedDirection::Outbound)
                    || (!matches!(r.direction, OwnedDirection::Inbound) && egress_doc.is_some());
                let identity_applies = !(identity_inbound_only && matches!(r.direction, OwnedDirection::Outbound));
                if doc.get("identity").is_some_and(|v| !v.is_null()) && identity_applies {
                    match entry.record["principal"].as_str() {
                        Some(principal) => {
                            let route = (dns_host(&r.authority).unwrap_or_default(), prefix_of(&r.path, depth));
                            *seen
                                .routes
                                .entry(route)
                                .or_default()
                                .entry(r.method.clone())
                                .or_default()
                                .entry(principal.to_string())
                                .or_default() += 1;
                        }
                        None => seen.no_identity += 1,
                    }
                }
                if egress_doc.is_some() && (outbound || egress_all) {
                    let source = source_of(&r.workload, r.peer.uri_san.as_deref());
                    match (source, host_key(&r.authority)) {
                        (Some(source), Some((host, port))) => {
                            let passthrough = r
                                .cluster
                                .as_deref()
                                .is_some_and(|c| c == "PassthroughCluster" || c == "BlackHoleCluster");
                            let e =
                                seen.egress.entry((source, egress_port(r, port))).or_default().entry(host).or_default();
                            e.0 += 1;
                            e.1 |= passthrough;
                            e.2 |= carries_credentials(r, &entry.record);
                        }
                        _ => seen.unusable += 1,
                    }
                }
            }
            // Upstream pinning's response-phase lines: nothing to learn an allowlist from.
            Subject::Upstream(_) => {}
            Subject::Connection(c) => {
                if egress_doc.is_some() {
                    let source = source_of(&c.workload, c.peer.uri_san.as_deref());
                    let host =
                        c.sni.as_deref().and_then(|s| policy::parse::host::parse_host(s.as_bytes()).ok()?.match_key());
                    match (source, host) {
                        (Some(source), Some(host)) => {
                            seen.egress.entry((source, c.destination_port)).or_default().entry(host).or_default().0 +=
                                1;
                        }
                        _ => seen.unusable += 1,
                    }
                }
            }
        }
        Ok(())
    })?;
    if stats.malformed_count > 0 {
        for m in &stats.malformed {
            eprintln!("malformed: {m}");
        }
        return Err(bad_input(format!(
            "{} lines look like decision lines but cannot be read: learning from part of the traffic \
             would propose rules that deny the rest",
            stats.malformed_count
        )));
    }
    if stats.decisions == 0 {
        return Err(bad_input("no decision lines in the logs: nothing to learn from"));
    }

    let mut comments: BTreeMap<String, String> = BTreeMap::new();
    let mut proposal = doc.clone();
    if let Some(identity) = proposal.get_mut("identity").filter(|v| !v.is_null()) {
        let mut rules = Vec::new();
        let mut used_ids = BTreeSet::new();
        for ((host, prefix), methods) in &seen.routes {
            // Methods that the same principals used share one rule.
            let mut by_principals: BTreeMap<Vec<String>, (Vec<String>, u64)> = BTreeMap::new();
            for (method, principals) in methods {
                let who: Vec<String> = principals.keys().cloned().collect();
                let e = by_principals.entry(who).or_default();
                e.0.push(method.clone());
                e.1 += principals.values().sum::<u64>();
            }
            for (principals, (methods, count)) in by_principals {
                let mut id = format!("learned-{}-{}", slug(prefix), slug(&methods.join("-")));
                let mut n = 2;
                while !used_ids.insert(id.clone()) {
                    id = format!("learned-{}-{}-{n}", slug(prefix), slug(&methods.join("-")));
                    n += 1;
                }
                comments.insert(id.clone(), format!("covers {count} logged requests"));
                let mut route = serde_json::Map::new();
                if !host.is_empty() {
                    route.insert("hosts".into(), json!([host]));
                }
                route.insert("paths".into(), json!([{ "prefix": prefix }]));
                route.insert("methods".into(), json!(methods));
                rules.push(json!({"id": id, "action": "allow", "match": route, "principals": principals}));
            }
        }
        identity["rules"] = Value::Array(rules);
        identity["defaultAction"] = "deny".into();
        identity["mode"] = "enforce".into();
    }
    if let Some(egress) = proposal.get_mut("egress").filter(|v| !v.is_null()) {
        let mut allow = Vec::new();
        for ((source, port), all_hosts) in &seen.egress {
            // Under credential scoping, the hosts that were sent credentials get their own rule.
            let groups: Vec<(HostsSeen, bool)> = if scoped {
                let (with, without): (HostsSeen, HostsSeen) = all_hosts.clone().into_iter().partition(|(_, v)| v.2);
                vec![(without, false), (with, true)]
            } else {
                vec![(all_hosts.clone(), false)]
            };
            for (hosts, credentials) in groups.into_iter().filter(|(h, _)| !h.is_empty()) {
                let ns_sa = source.rsplit("/ns/").next().unwrap_or(source);
                let mut id = format!("learned-{}-{}", slug(ns_sa), port.map_or("any".to_string(), |p| p.to_string()));
                if credentials {
                    id.push_str("-credentials");
                }
                let count: u64 = hosts.values().map(|(c, _, _)| c).sum();
                comments.insert(id.clone(), format!("covers {count} logged requests and connections"));
                let mut rule = serde_json::Map::new();
                rule.insert("id".into(), id.into());
                rule.insert("hosts".into(), json!(hosts.keys().collect::<Vec<_>>()));
                if let Some(port) = port {
                    rule.insert("ports".into(), json!([port]));
                }
                rule.insert("sources".into(), json!([source]));
                if hosts.values().any(|(_, p, _)| *p) {
                    rule.insert("passthrough".into(), true.into());
                }
                if credentials {
                    rule.insert("credentials".into(), "allow".into());
                }
                allow.push(Value::Object(rule));
            }
        }
        egress["allow"] = Value::Array(allow);
        egress["mode"] = "enforce".into();
    }

    // A dry-run policy's mode wins over its checks' modes: enforce at the top, and keep the
    // hygiene check where it was.
    if proposal.get("mode").and_then(Value::as_str) == Some("dry-run") {
        proposal["mode"] = "enforce".into();
        if let Some(hygiene) = proposal.get_mut("hygiene").filter(|v| v.is_object()) {
            if hygiene.get("mode").is_none() {
                hygiene["mode"] = "dry-run".into();
            }
        }
    }

    let mut text = format!(
        "# Proposed by `meshguard learn` from {} decision lines ({} lines read) under {}.\n\
         # identity.rules and egress.allow are replaced by least-privilege rules for exactly the\n\
         # observed traffic; both checks are set to enforce. Review, then `meshguard replay` the\n\
         # same logs under this file: no identity or egress decision should be a deny.\n",
        stats.decisions,
        stats.lines,
        display_name(policy_path)
    );
    if seen.no_identity > 0 {
        text.push_str(&format!("# {} requests had no peer identity: no rule can allow them.\n", seen.no_identity));
    }
    if seen.hygiene > 0 {
        text.push_str(&format!("# {} requests had hygiene findings: rules do not change those.\n", seen.hygiene));
    }
    if seen.unusable > 0 {
        text.push_str(&format!(
            "# {} egress requests had no usable host or source identity: not learned.\n",
            seen.unusable
        ));
    }
    let yaml = serde_norway::to_string(&proposal)?;
    for line in yaml.lines() {
        text.push_str(line);
        // A learned rule's `id:` line says how much traffic the rule covers.
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(id) = trimmed.strip_prefix("id: ") {
            if let Some(c) = comments.get(id.trim_matches('\'').trim_matches('"')) {
                text.push_str(&format!("  # {c}"));
            }
        }
        text.push('\n');
    }
    // The proposal must itself be a valid policy.
    if let Err(errs) = crate::policy_file::parse_document(&text).and_then(crate::policy_file::compile) {
        let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::bail!("the proposal does not validate (a bug in learn):\n{}", lines.join("\n"));
    }
    match out_path {
        Some(p) => {
            std::fs::write(p, &text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(code(exit::OK))
}
