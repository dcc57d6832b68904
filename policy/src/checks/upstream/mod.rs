//! Upstream identity pinning.
//!
//! Threat: service-discovery poisoning. A tampered registry or control plane (a rogue
//! ServiceEntry, a hijacked EndpointSlice, a wrong DestinationRule) points a service name at an
//! endpoint of its choosing: an attacker's pod that holds a valid mesh certificate of its own,
//! or a plaintext listener. Envoy then connects wherever xDS says, and verifies the upstream's
//! SAN only if the same control plane asked it to. This check holds even when the control plane
//! is wrong: the policy (signed, delivered apart from xDS) lists, per destination, the SPIFFE
//! IDs its endpoints may present and whether the connection must be mTLS, and the data plane
//! compares them with what the upstream connection really is.
//!
//! # When it decides, and its honest limit
//!
//! The upstream connection exists only once Envoy has picked an endpoint and connected, so the
//! decision is made in the **response phase** (`on_http_response_headers`), from
//! `upstream.uri_san_peer_certificate`, `upstream.tls_version` and `upstream.address`. By then
//! the request has reached that endpoint: the check cannot un-send it. What it does is stop the
//! answer (the client gets a local 502 instead of whatever the impostor said) and make the
//! alarm loud: a decision-log line with the observed identity and address, and a counter.
//!
//! # Matching
//!
//! A destination is named by Istio cluster names (`outbound|8080||payments.prod.svc.cluster.local`;
//! the port and subset may be `*`, an empty subset means any, the host may be `*.` and a DNS
//! name) and/or authority hosts (for an egress gateway, or clusters with other names). The
//! first destination, in document order, that names the request's cluster or authority pins
//! it; a destination no rule names is not pinned. Host lookups are one hash lookup plus one
//! label-trie walk ([`HostTable`]), identities a segment trie ([`PrincipalSet`]).
//!
//! - A plaintext upstream (no `upstream.tls_version`) is `upstream_not_mtls` unless the rule
//!   says `requireMtls: false`; then it is let through (migration from PERMISSIVE).
//! - Over TLS, when the rule lists `identities`, the upstream certificate's first URI SAN must
//!   be a valid SPIFFE ID one of them matches, else `upstream_identity_mismatch`.
//!
//! # Dry-run
//!
//! `upstream.mode: dry-run` (or the policy's, or a rule's own `mode`) logs would-denies and lets
//! the answer through.

pub mod doc;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use crate::checks::{Check, Context, RuleIds};
use crate::decision::{Decision, Finding};
use crate::error::ConfigErrors;
use crate::matchers::hosts::HostTable;
use crate::matchers::principals::PrincipalSet;
use crate::parse::cluster::{parse_cluster, Cluster, ClusterHost};
use crate::parse::host::{parse_authority, HostClass, HostPattern};
use crate::parse::spiffe::{PrincipalPattern, SpiffeId};
use crate::reason::ReasonCode;
use crate::view::{Needs, RequestView, UpstreamView};

use doc::UpstreamDoc;

#[derive(Debug)]
struct Rule {
    id: String,
    enforced: bool,
    identities: PrincipalSet,
    require_mtls: bool,
}

/// One `clusters[j]` entry: which rule, and on which port (`None`: any).
#[derive(Debug, Clone, Copy)]
struct ClusterEntry {
    rule: u32,
    port: Option<u16>,
}

/// The compiled upstream pinning check.
#[derive(Debug)]
pub struct UpstreamPinning {
    rules: Vec<Rule>,
    /// Cluster host patterns → indexes into `cluster_entries`.
    cluster_hosts: HostTable,
    cluster_entries: Vec<ClusterEntry>,
    /// Clusters whose own host is a wildcard (`outbound|443||*.example.com`), by that
    /// wildcard's suffix → indexes into `cluster_entries`.
    wildcard_clusters: HashMap<String, Vec<u32>>,
    /// Authority host patterns → rule indexes.
    hosts: HostTable,
}

/// Why a cluster pattern is refused.
const CLUSTER_SYNTAX: &str =
    "must be an Istio cluster name outbound|<port>|<subset>|<host> (port and subset may be '*', host may be *.domain)";

/// `outbound|<port>|<subset>|<host>` → (port or any, host pattern, the host as written).
fn parse_cluster_pattern(raw: &str) -> Result<(Option<u16>, HostPattern, String), String> {
    let rest = raw.strip_prefix("outbound|").ok_or(CLUSTER_SYNTAX)?;
    let mut parts = rest.splitn(3, '|');
    let (Some(port), Some(subset), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(CLUSTER_SYNTAX.into());
    };
    let port = match port {
        "*" => None,
        p => match p.parse::<u16>() {
            Ok(p) if p > 0 && p.to_string() == port => Some(p),
            _ => return Err(format!("the port '{port}' is not a number from 1 to 65535 or '*'")),
        },
    };
    if !(subset.is_empty() || subset == "*") {
        return Err(
            "name the subset as '*' or leave it empty: pinning is per service, its subsets share its identities".into(),
        );
    }
    let pattern = HostPattern::parse(host).map_err(|e| format!("the host: {e}"))?;
    Ok((port, pattern, host.to_ascii_lowercase()))
}

impl UpstreamPinning {
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The first rule (in document order) that names the destination.
    fn rule_for(&self, up: &UpstreamView<'_>) -> Option<&Rule> {
        let mut found: Option<u32> = None;
        let mut keep = |r: u32| {
            if found.is_none_or(|f| r < f) {
                found = Some(r);
            }
        };
        if let Some(Cluster::Istio { port, host }) = up.cluster.map(parse_cluster) {
            let mut entries = Vec::new();
            match &host {
                ClusterHost::Exact(h) => {
                    if let Some(key) = h.match_key() {
                        self.cluster_hosts.collect(&key, h.class() == HostClass::Name, &mut entries);
                    }
                }
                ClusterHost::Wildcard(suffix) => {
                    if let Some(e) = self.wildcard_clusters.get(suffix) {
                        entries.extend_from_slice(e);
                    }
                }
            }
            for e in entries.iter().filter_map(|&i| self.cluster_entries.get(i as usize)) {
                if e.port.is_none_or(|p| p == port) {
                    keep(e.rule);
                }
            }
        }
        if !self.hosts.is_empty() {
            if let Some(host) = up.authority.and_then(|a| parse_authority(a).ok()).map(|a| a.host) {
                if let Some(key) = host.match_key() {
                    let mut rules = Vec::new();
                    self.hosts.collect(&key, host.class() == HostClass::Name, &mut rules);
                    if let Some(&first) = rules.first() {
                        keep(first);
                    }
                }
            }
        }
        found.and_then(|r| self.rules.get(r as usize))
    }
}

impl Check for UpstreamPinning {
    type Doc = UpstreamDoc;
    const SECTION: &'static str = "upstream";

    fn compile(doc: &UpstreamDoc, cx: &Context, errs: &mut ConfigErrors) -> UpstreamPinning {
        let at = Self::SECTION;
        let mode = cx.enforcement(doc.mode);
        let mut check = UpstreamPinning {
            rules: Vec::with_capacity(doc.destinations.len()),
            cluster_hosts: HostTable::default(),
            cluster_entries: Vec::new(),
            wildcard_clusters: HashMap::new(),
            hosts: HostTable::default(),
        };
        if doc.destinations.is_empty() {
            errs.push(format!("{at}.destinations"), "must list at least one destination to pin");
        }
        let mut ids = RuleIds::default();
        for (i, d) in doc.destinations.iter().enumerate() {
            let rat = format!("{at}.destinations[{i}]");
            let Ok(index) = u32::try_from(i) else {
                errs.push(&rat, "too many destinations");
                break;
            };
            ids.check(&d.id, &rat, errs);
            if d.clusters.is_empty() && d.hosts.is_empty() {
                errs.push(
                    format!("{rat}.clusters"),
                    "a destination must name at least one cluster (outbound|8080||payments.prod.svc.cluster.local) or host",
                );
            }
            for (j, c) in d.clusters.iter().enumerate() {
                match parse_cluster_pattern(c) {
                    Ok((port, HostPattern::Suffix(suffix), _)) if c.ends_with(&format!("|*.{suffix}")) => {
                        // A wildcard cluster pattern names every cluster of a host under it,
                        // and the wildcard cluster itself.
                        let Ok(entry) = u32::try_from(check.cluster_entries.len()) else { break };
                        check.cluster_entries.push(ClusterEntry { rule: index, port });
                        check.cluster_hosts.insert(&HostPattern::Suffix(suffix.clone()), entry);
                        check.wildcard_clusters.entry(suffix).or_default().push(entry);
                    }
                    Ok((port, pattern, _)) => {
                        let Ok(entry) = u32::try_from(check.cluster_entries.len()) else { break };
                        check.cluster_entries.push(ClusterEntry { rule: index, port });
                        check.cluster_hosts.insert(&pattern, entry);
                    }
                    Err(e) => errs.push(format!("{rat}.clusters[{j}]"), e),
                }
            }
            for (j, h) in d.hosts.iter().enumerate() {
                match HostPattern::parse(h) {
                    Ok(pattern) => check.hosts.insert(&pattern, index),
                    Err(e) => errs.push(format!("{rat}.hosts[{j}]"), e),
                }
            }
            let mut identities = PrincipalSet::default();
            for (j, s) in d.identities.iter().enumerate() {
                match PrincipalPattern::parse(s) {
                    Ok(p) => identities.insert(&p),
                    Err(e) => errs.push(format!("{rat}.identities[{j}]"), e),
                }
            }
            if d.identities.is_empty() && !d.require_mtls {
                errs.push(
                    format!("{rat}.identities"),
                    "a destination with requireMtls: false must list identities, or it pins nothing",
                );
            }
            check.rules.push(Rule {
                id: d.id.clone(),
                enforced: mode.rule(d.mode),
                identities,
                require_mtls: d.require_mtls,
            });
        }
        check
    }

    fn needs(&self) -> Needs {
        Needs { upstream: true, ..Needs::default() }
    }

    /// Nothing to decide before the upstream connection exists.
    fn evaluate(&self, _req: &RequestView<'_>, _decision: &mut Decision) {}

    fn decides_upstream(&self) -> bool {
        true
    }

    fn pins_upstream(&self, up: &UpstreamView<'_>) -> bool {
        self.rule_for(up).is_some()
    }

    fn evaluate_upstream(&self, up: &UpstreamView<'_>, decision: &mut Decision) {
        let Some(rule) = self.rule_for(up) else { return };
        let code = if !up.tls() {
            if !rule.require_mtls {
                return;
            }
            ReasonCode::UpstreamNotMtls
        } else if rule.identities.is_empty() {
            return;
        } else {
            match up.uri_san.and_then(|san| SpiffeId::parse(san).ok()) {
                Some(id) if rule.identities.matches(&id) => return,
                _ => ReasonCode::UpstreamIdentityMismatch,
            }
        };
        decision.findings.push(Finding::reject(code, &rule.id, rule.enforced));
    }
}
