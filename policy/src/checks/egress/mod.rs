//! Egress allowlist.
//!
//! Threats: data exfiltration and command-and-control from a compromised workload, and SSRF
//! into places no workload should reach: cloud instance-metadata endpoints (credentials),
//! link-local and loopback addresses, and arbitrary IPs behind a forged `Host` when Istio's
//! outbound policy is `ALLOW_ANY` (traffic then goes to `PassthroughCluster`, which connects
//! wherever the application connected, whatever the `Host` says). This check holds even when
//! Istio's own outbound policy, Sidecar `egress` or ServiceEntries are missing or wrong: a
//! request leaves only for a host a rule names, on a port, method, path and from a source
//! identity the rule allows.
//!
//! # Matching
//!
//! Hosts are parsed and normalized first ([`crate::parse::host`]): lowercase, one trailing dot
//! removed, the port split off, IDNA names in their `xn--` form only. Then:
//!
//! - `api.example.com` matches that host only; `*.example.com` matches one or more labels
//!   under `example.com` (`a.example.com`, `a.b.example.com`) and never `example.com` itself.
//!   Exact hosts are one hash lookup, wildcards one walk down a reversed-label trie: the cost
//!   of a decision does not grow with the number of rules.
//! - IP literals (every spelling), link-local and metadata addresses and `localhost` names are
//!   denied unless a rule names them exactly (a wildcard never covers them), and an IPv4
//!   spelled other than as a dotted quad of decimals, or an IPv6 with a zone, never matches.
//! - Of the rules that name the host, one must allow the port (the Istio cluster's, where the
//!   request really goes, else the authority's, else 80/443 by scheme; for a connection,
//!   `destination.port`), the method,
//!   the canonical path ([`crate::parse::path`]), the source identity, and, when Envoy routed the
//!   request to `PassthroughCluster` or `BlackHoleCluster`, say `passthrough: true`.
//!
//! # Where it applies
//!
//! `appliesTo: outbound` (the default) runs the check on listeners Envoy does not mark
//! `INBOUND` (`xds.listener_direction`; Istio marks every sidecar listener, and a listener that
//! does not say is treated as outbound: fail closed). `appliesTo: all` runs it on every
//! request and connection, for an egress gateway.
//!
//! # Source identity
//!
//! `sourceIdentity: peerCertificate` (default with `appliesTo: all`): the mTLS peer's SPIFFE
//! ID (`connection.uri_san_peer_certificate`), for an egress gateway that the sidecars reach
//! over Istio mTLS. `sourceIdentity: workload` (default with `appliesTo: outbound`): on an
//! outbound sidecar there is no peer certificate (the application talks plaintext to its own
//! sidecar), so the identity is the sidecar's own workload, built from Istio's node metadata
//! (`xds.node.metadata.NAMESPACE` and `SERVICE_ACCOUNT`) as
//! `spiffe://<egress.trustDomain>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`. That is what the
//! pod spec says, not what a certificate proves: strong enough against a compromised
//! application, not against someone who can change the pod (who can bypass the sidecar
//! anyway). For a proven identity, send egress through a gateway.
//!
//! # Routing consistency
//!
//! For Istio clusters (`outbound|<port>|<subset>|<host>`), the authority must agree with the
//! cluster: the same host (or one the cluster's `*.` wildcard covers), or a Kubernetes
//! short name of the cluster's service (`reviews` for `reviews.default.svc.cluster.local`, which
//! the allowlist then sees in full). The port the rules see is then the cluster's (an egress
//! gateway originating TLS legitimately sends `api.example.com:80` to port 443). A cluster of
//! another in-mesh service (a VirtualService sending `api.example.com` through the
//! egress gateway) is a mesh hop: the allowlist judges the authority and the gateway checks
//! again. Anything else is `egress_authority_mismatch`.
//!
//! # Dry-run
//!
//! `egress.mode: dry-run` (or the policy's) logs every finding as a would-deny. A rule in
//! dry-run never blocks: requests to its hosts that fail its conditions are would-denies
//! attributed to it, so a rule can be narrowed (or a new one tried) and watched before it is
//! enforced. Hosts no rule names are denied as ever.

pub mod credentials;
pub mod doc;

use std::borrow::Cow;

use crate::checks::{builtin, Check, Context, RuleIds};
use crate::decision::{Decision, Finding};
use crate::error::ConfigErrors;
use crate::matchers::hosts::HostTable;
use crate::matchers::principals::PrincipalSet;
use crate::matchers::route::{Match, RouteInput, RouteMatch, RouteMatchDoc};
use crate::parse::cluster::{parse_cluster, Cluster, ClusterHost};
use crate::parse::host::{parse_host, Host, HostClass, HostPattern};
use crate::parse::spiffe::{PrincipalPattern, SpiffeId};
use crate::reason::ReasonCode;
use crate::view::connection::ConnectionView;
use crate::view::request::{Direction, Peer, RequestView, Workload};
use crate::view::Needs;

use credentials::{CredentialAction, Credentials};
use doc::{AppliesTo, EgressDoc, SourceIdentity, DEFAULT_TRUST_DOMAIN};

#[derive(Debug)]
struct Rule {
    id: String,
    enforced: bool,
    ports: Vec<u16>,
    /// Methods only (hosts and paths empty), when the rule lists methods.
    methods: Option<RouteMatch>,
    /// Paths only, when the rule lists paths.
    paths: Option<RouteMatch>,
    sources: PrincipalSet,
    passthrough: bool,
    /// What requests it admits may carry (resolved against `egress.credentials.default`).
    credentials: CredentialAction,
}

impl Rule {
    /// A rule about methods or paths covers HTTP only: a TLS connection's are encrypted.
    fn http_only(&self) -> bool {
        self.methods.is_some() || self.paths.is_some()
    }
}

/// Why a rule that names the host does not admit the request; ordered by how far the
/// request got, so the explanation names the closest rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    Port,
    Passthrough,
    Blackhole,
    Method,
    Path,
    SourceMissing,
    SourceNotAllowed,
}

impl Miss {
    fn code(self) -> ReasonCode {
        match self {
            Miss::Port => ReasonCode::EgressPortNotAllowed,
            Miss::Passthrough => ReasonCode::EgressPassthroughCluster,
            Miss::Blackhole => ReasonCode::EgressBlackholeCluster,
            Miss::Method => ReasonCode::EgressMethodNotAllowed,
            Miss::Path => ReasonCode::EgressPathNotAllowed,
            Miss::SourceMissing => ReasonCode::EgressSourceIdentityMissing,
            Miss::SourceNotAllowed => ReasonCode::EgressSourceNotAllowed,
        }
    }
}

/// `reviews.default.svc.cluster.local`: a Kubernetes service FQDN (`<svc>.<ns>.svc.<domain>`).
fn is_k8s_service(name: &str) -> bool {
    let mut labels = name.split('.');
    labels.nth(2) == Some("svc") && labels.next().is_some()
}

/// `reviews`, `reviews.default` or `reviews.default.svc` for
/// `reviews.default.svc.cluster.local`.
fn is_short_name_of(short: &str, fqdn: &str) -> bool {
    is_k8s_service(fqdn)
        && fqdn.strip_prefix(short).is_some_and(|rest| rest.starts_with('.'))
        && short.split('.').count() <= 3
}

fn covered_by_wildcard(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix).is_some_and(|head| head.len() > 1 && head.ends_with('.'))
}

/// The compiled egress check.
#[derive(Debug)]
pub struct EgressAllowlist {
    enforced: bool,
    applies_to: AppliesTo,
    source: SourceIdentity,
    trust_domain: String,
    rules: Vec<Rule>,
    /// Which rules name which hosts.
    hosts: HostTable,
    /// Rules with `allowNoSni`.
    no_sni: Vec<u32>,
    any_sources: bool,
    has_dry_run_rules: bool,
    /// `egress.credentials`: the names and the default.
    credentials: Credentials,
}

/// The facts one decision is made from, HTTP or TLS alike.
struct Subject<'a> {
    port: Option<u16>,
    cluster: Option<&'a Cluster>,
    /// Method and canonical path (HTTP only).
    route: Option<&'a RouteInput<'a>>,
    peer: Peer<'a>,
    workload: Workload<'a>,
}

impl EgressAllowlist {
    /// Whether the filter must fetch the peer certificate / the node metadata for this check.
    pub fn needs_peer(&self) -> bool {
        self.any_sources && self.source == SourceIdentity::PeerCertificate
    }

    pub fn needs_workload(&self) -> bool {
        self.any_sources && self.source == SourceIdentity::Workload
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn applies_to(&self) -> AppliesTo {
        self.applies_to
    }

    fn applies(&self, direction: Direction) -> bool {
        match self.applies_to {
            AppliesTo::All => true,
            AppliesTo::Outbound => direction != Direction::Inbound,
        }
    }

    fn finding(&self, code: ReasonCode, rule: &str, enforced: bool) -> Finding {
        Finding::reject(code, rule, self.enforced && enforced)
    }

    /// The source's SPIFFE ID, if one can be established.
    fn source_id(&self, peer: &Peer<'_>, workload: &Workload<'_>) -> Option<SpiffeId> {
        match self.source {
            SourceIdentity::PeerCertificate => {
                if !peer.mtls {
                    return None;
                }
                SpiffeId::parse(peer.uri_san?).ok()
            }
            SourceIdentity::Workload => {
                let (ns, sa) = (workload.namespace?, workload.service_account?);
                let mut id = Vec::with_capacity(self.trust_domain.len() + ns.len() + sa.len() + 16);
                id.extend_from_slice(b"spiffe://");
                id.extend_from_slice(self.trust_domain.as_bytes());
                id.extend_from_slice(b"/ns/");
                id.extend_from_slice(ns);
                id.extend_from_slice(b"/sa/");
                id.extend_from_slice(sa);
                SpiffeId::parse(&id).ok()
            }
        }
    }

    /// Rules naming `host`, in rule order. Only exact entries name IP literals, `localhost`
    /// names and metadata names.
    fn candidates(&self, host: &Host, out: &mut Vec<u32>) {
        let Some(key) = host.match_key() else { return };
        self.hosts.collect(&key, host.class() == HostClass::Name, out);
    }

    fn check_rule(&self, rule: &Rule, s: &Subject<'_>, source: &mut Option<Option<SpiffeId>>) -> Result<(), Miss> {
        if !rule.ports.is_empty() && !s.port.is_some_and(|p| rule.ports.contains(&p)) {
            return Err(Miss::Port);
        }
        match s.cluster {
            Some(Cluster::Passthrough) if !rule.passthrough => return Err(Miss::Passthrough),
            Some(Cluster::Blackhole) if !rule.passthrough => return Err(Miss::Blackhole),
            _ => {}
        }
        if let Some(methods) = &rule.methods {
            if !s.route.is_some_and(|r| methods.matches(r) == Match::Yes) {
                return Err(Miss::Method);
            }
        }
        if let Some(paths) = &rule.paths {
            if !s.route.is_some_and(|r| paths.matches(r) == Match::Yes) {
                return Err(Miss::Path);
            }
        }
        if !rule.sources.is_empty() {
            let id = source.get_or_insert_with(|| self.source_id(&s.peer, &s.workload));
            match id {
                None => return Err(Miss::SourceMissing),
                Some(id) if !rule.sources.matches(id) => return Err(Miss::SourceNotAllowed),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Judge `candidates` (rules that name the destination): the rule that admits the request
    /// (the first enforced one, else the first in dry-run), or `None` with the findings of a
    /// refusal added.
    fn judge(&self, candidates: &[u32], s: &Subject<'_>, decision: &mut Decision) -> Option<&Rule> {
        let mut source = None;
        let mut dry_run_admits = None;
        let mut best_enforced: Option<(Miss, &Rule)> = None;
        let mut best_dry_run: Option<(Miss, &Rule)> = None;
        for rule in candidates.iter().filter_map(|&i| self.rules.get(i as usize)) {
            match self.check_rule(rule, s, &mut source) {
                Ok(()) if rule.enforced => {
                    self.note_principal(&source, decision);
                    return Some(rule);
                }
                Ok(()) => {
                    dry_run_admits.get_or_insert(rule);
                }
                Err(miss) => {
                    let best = if rule.enforced { &mut best_enforced } else { &mut best_dry_run };
                    if best.is_none_or(|(m, _)| miss > m) {
                        *best = Some((miss, rule));
                    }
                }
            }
        }
        self.note_principal(&source, decision);
        if dry_run_admits.is_some() {
            return dry_run_admits;
        }
        // A rule in dry-run never blocks: its misses are would-denies.
        if let Some((miss, rule)) = best_dry_run {
            decision.findings.push(self.finding(miss.code(), &rule.id, false));
        } else if let Some((miss, rule)) = best_enforced {
            decision.findings.push(self.finding(miss.code(), &rule.id, true));
        }
        None
    }

    fn note_principal(&self, source: &Option<Option<SpiffeId>>, decision: &mut Decision) {
        if let (Some(Some(id)), None) = (source, &decision.principal) {
            decision.principal = Some(id.as_str().to_string());
        }
    }

    fn not_named(&self, host: &Host, connection: bool) -> ReasonCode {
        match host.class() {
            HostClass::Name if connection => ReasonCode::EgressSniNotAllowed,
            HostClass::Name => ReasonCode::EgressHostNotAllowed,
            HostClass::Localhost => ReasonCode::EgressLocalhost,
            HostClass::Metadata => ReasonCode::EgressMetadataAddress,
            HostClass::LinkLocal => ReasonCode::EgressLinkLocalAddress,
            HostClass::Ip => ReasonCode::EgressIpLiteral,
        }
    }

    /// Whether any rule is in dry-run (for operators' summaries).
    pub fn has_dry_run_rules(&self) -> bool {
        self.has_dry_run_rules
    }
}

impl Check for EgressAllowlist {
    type Doc = EgressDoc;
    const SECTION: &'static str = "egress";

    fn compile(doc: &EgressDoc, cx: &Context, errs: &mut ConfigErrors) -> EgressAllowlist {
        let at = Self::SECTION;
        let mode = cx.enforcement(doc.mode);
        let source = doc.source_identity.unwrap_or(match doc.applies_to {
            AppliesTo::Outbound => SourceIdentity::Workload,
            AppliesTo::All => SourceIdentity::PeerCertificate,
        });
        let trust_domain = doc.trust_domain.clone().unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_string());
        if let Err(e) = crate::parse::spiffe::validate_trust_domain(&trust_domain) {
            errs.push(format!("{at}.trustDomain"), format!("not a valid trust domain: it {e}"));
        }
        let mut check = EgressAllowlist {
            enforced: mode.check(),
            applies_to: doc.applies_to,
            source,
            trust_domain,
            rules: Vec::with_capacity(doc.allow.len()),
            hosts: HostTable::default(),
            no_sni: Vec::new(),
            any_sources: false,
            has_dry_run_rules: false,
            credentials: Credentials::compile(doc.credentials.as_ref(), at, errs),
        };
        let mut ids = RuleIds::default();
        for (i, r) in doc.allow.iter().enumerate() {
            let rat = format!("{at}.allow[{i}]");
            let Ok(index) = u32::try_from(i) else {
                errs.push(&rat, "too many rules");
                break;
            };
            ids.check(&r.id, &rat, errs);
            if r.hosts.is_empty() && !r.allow_no_sni {
                errs.push(format!("{rat}.hosts"), "must list at least one host (api.example.com or *.example.com)");
            }
            for (j, h) in r.hosts.iter().enumerate() {
                match HostPattern::parse(h) {
                    Ok(pattern) => check.hosts.insert(&pattern, index),
                    Err(e) => errs.push(format!("{rat}.hosts[{j}]"), e),
                }
            }
            let mut ports = Vec::with_capacity(r.ports.len());
            for (j, &p) in r.ports.iter().enumerate() {
                match u16::try_from(p) {
                    Ok(p) if p > 0 => ports.push(p),
                    _ => errs.push(format!("{rat}.ports[{j}]"), "must be a port from 1 to 65535"),
                }
            }
            let methods = (!r.methods.is_empty()).then(|| {
                let doc = RouteMatchDoc { methods: r.methods.clone(), ..Default::default() };
                RouteMatch::compile(&doc, &rat, errs)
            });
            let paths = (!r.paths.is_empty()).then(|| {
                let doc = RouteMatchDoc { paths: r.paths.clone(), ..Default::default() };
                RouteMatch::compile(&doc, &rat, errs)
            });
            let mut sources = PrincipalSet::default();
            for (j, s) in r.sources.iter().enumerate() {
                match PrincipalPattern::parse(s) {
                    Ok(pat) => {
                        if let (SourceIdentity::Workload, Some(td)) = (source, pat.trust_domain()) {
                            if td != check.trust_domain {
                                errs.push(
                                    format!("{rat}.sources[{j}]"),
                                    format!("trust domain '{td}' is not {at}.trustDomain ('{}'), so this can never match a workload identity", check.trust_domain),
                                );
                            }
                        }
                        sources.insert(&pat);
                    }
                    Err(e) => errs.push(format!("{rat}.sources[{j}]"), e),
                }
            }
            if r.allow_no_sni {
                if ports.is_empty() && r.ports.is_empty() {
                    errs.push(format!("{rat}.ports"), "a rule with allowNoSni must list its ports");
                }
                if methods.is_some() || paths.is_some() {
                    errs.push(
                        format!("{rat}.allowNoSni"),
                        "a rule with methods or paths covers HTTP only and cannot admit a connection without SNI",
                    );
                }
                check.no_sni.push(index);
            }
            check.any_sources |= !sources.is_empty();
            let enforced = mode.rule(r.mode);
            check.has_dry_run_rules |= !enforced;
            check.rules.push(Rule {
                id: r.id.clone(),
                enforced,
                ports,
                methods,
                paths,
                sources,
                passthrough: r.passthrough,
                credentials: check.credentials.action(r.credentials),
            });
        }
        check
    }

    /// The direction and the cluster always; the peer certificate or the workload when rules
    /// name sources.
    fn needs(&self) -> Needs {
        Needs {
            peer: self.needs_peer(),
            direction: true,
            cluster: true,
            cluster_inbound: self.applies_to == AppliesTo::All,
            workload: self.needs_workload(),
            ..Needs::default()
        }
    }

    fn decides_connections(&self) -> bool {
        true
    }

    /// Add this check's findings for one HTTP request to `decision`.
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision) {
        if !self.applies(req.direction) {
            return;
        }
        let Ok(authority) = req.parsed_authority() else {
            decision.findings.push(self.finding(ReasonCode::EgressInvalidHost, builtin::EGRESS_HOST, true));
            return;
        };
        let cluster = req.cluster.filter(|c| !c.is_empty()).map(parse_cluster);
        let mut host = Cow::Borrowed(&authority.host);
        let mut port = authority.port;
        if let Some(Cluster::Istio { port: cluster_port, host: cluster_host }) = &cluster {
            let same = match cluster_host {
                ClusterHost::Exact(h) => *h == *host,
                ClusterHost::Wildcard(suffix) => host.name().is_some_and(|n| covered_by_wildcard(n, suffix)),
            };
            let cluster_fqdn = match cluster_host {
                ClusterHost::Exact(Host::Name(n)) => Some(n.as_str()),
                _ => None,
            };
            if same {
                port = Some(*cluster_port);
            } else if let (Some(fqdn), Some(short)) = (cluster_fqdn, host.name()) {
                if is_short_name_of(short, fqdn) {
                    // The allowlist sees the service's full name.
                    host = Cow::Owned(Host::Name(fqdn.to_string()));
                    port = Some(*cluster_port);
                } else if !is_k8s_service(fqdn) {
                    decision.findings.push(self.finding(
                        ReasonCode::EgressAuthorityMismatch,
                        builtin::EGRESS_AUTHORITY,
                        true,
                    ));
                    return;
                }
                // Otherwise a mesh hop (e.g. through the egress gateway): judge the authority.
            } else if !cluster_fqdn.is_some_and(is_k8s_service) {
                decision.findings.push(self.finding(
                    ReasonCode::EgressAuthorityMismatch,
                    builtin::EGRESS_AUTHORITY,
                    true,
                ));
                return;
            }
        }
        let port = port.unwrap_or(if req.scheme().eq_ignore_ascii_case(b"https") { 443 } else { 80 });
        let mut candidates = Vec::new();
        self.candidates(&host, &mut candidates);
        if candidates.is_empty() {
            let code = self.not_named(&host, false);
            decision.findings.push(self.finding(code, builtin::EGRESS_ALLOW, true));
            return;
        }
        let route = req.route_input();
        let subject = Subject {
            port: Some(port),
            cluster: cluster.as_ref(),
            route: Some(&route),
            peer: req.peer,
            workload: req.workload,
        };
        if let Some(rule) = self.judge(&candidates, &subject, decision) {
            let enforced = self.enforced && rule.enforced;
            self.credentials.evaluate(rule.credentials, &rule.id, enforced, req, decision);
        }
    }

    /// Add this check's findings for one TLS/TCP connection (its SNI) to `decision`.
    fn evaluate_connection(&self, conn: &ConnectionView<'_>, decision: &mut Decision) {
        if !self.applies(conn.direction) {
            return;
        }
        let subject = Subject {
            port: conn.destination_port,
            cluster: None,
            route: None,
            peer: conn.peer,
            workload: conn.workload,
        };
        let Some(sni) = conn.sni() else {
            if self.no_sni.is_empty() {
                decision.findings.push(self.finding(ReasonCode::EgressSniMissing, builtin::EGRESS_ALLOW, true));
            } else {
                self.judge(&self.no_sni, &subject, decision);
            }
            return;
        };
        let Ok(host) = parse_host(sni) else {
            decision.findings.push(self.finding(ReasonCode::EgressInvalidHost, builtin::EGRESS_HOST, true));
            return;
        };
        let mut candidates = Vec::new();
        self.candidates(&host, &mut candidates);
        candidates.retain(|&i| self.rules.get(i as usize).is_some_and(|r| !r.http_only()));
        if candidates.is_empty() {
            let code = self.not_named(&host, true);
            decision.findings.push(self.finding(code, builtin::EGRESS_ALLOW, true));
            return;
        }
        self.judge(&candidates, &subject, decision);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_credentials;
