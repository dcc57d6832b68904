//! Peer identity.
//!
//! Threats: an mTLS downgrade (a peer reaching the workload in plaintext through Istio's
//! PERMISSIVE mode), a certificate that carries no SPIFFE identity, two identities or a
//! malformed one, a peer from a foreign trust domain, and a valid peer calling a route it may
//! not call. This holds even when Istio's own PeerAuthentication or AuthorizationPolicy is
//! missing or wrong: the check reads what Envoy verified on this very connection.

pub mod doc;

use std::borrow::Cow;
use std::collections::HashSet;

use crate::checks::{builtin, Check, Context, RuleIds};
use crate::decision::{Decision, Finding};
use crate::document::Action;
use crate::error::ConfigErrors;
use crate::matchers::route::{Match, RouteInput, RouteMatch};
use crate::parse::spiffe::{PrincipalPattern, SpiffeId};
use crate::parse::xfcc::first_uris;
use crate::reason::ReasonCode;
use crate::view::request::{Direction, RequestView};
use crate::view::Needs;

use doc::{IdentityAppliesTo, IdentityDoc, IdentitySource};

#[derive(Debug)]
struct Rule {
    id: String,
    action: Action,
    enforced: bool,
    route: RouteMatch,
    principals: Vec<PrincipalPattern>,
}

impl Rule {
    fn admits(&self, principal: Option<&SpiffeId>) -> bool {
        principal.is_some_and(|p| self.principals.iter().any(|pat| pat.matches(p)))
    }
}

/// The compiled peer-identity check.
#[derive(Debug)]
pub struct PeerIdentity {
    enforced: bool,
    require: bool,
    trust_domains: HashSet<String>,
    source: IdentitySource,
    applies_to: IdentityAppliesTo,
    default_deny: bool,
    rules: Vec<Rule>,
    has_dry_run_rules: bool,
}

/// Outcome of the route rules for one principal.
enum RouteOutcome<'r> {
    Allow,
    Deny(&'r str, ReasonCode),
}

impl PeerIdentity {
    fn finding(&self, code: ReasonCode, rule: &str, enforced: bool) -> Finding {
        Finding::reject(code, rule, self.enforced && enforced)
    }

    /// Establish the peer's SPIFFE ID, or say why there is none. `Ok(None)`: an anonymous
    /// peer the policy tolerates.
    fn establish(&self, req: &RequestView<'_>) -> Result<Option<SpiffeId>, (ReasonCode, &'static str)> {
        const REQUIRE: &str = builtin::IDENTITY_REQUIRE;
        const SOURCE: &str = builtin::IDENTITY_SOURCE;
        let uri: Cow<'_, [u8]> = match self.source {
            IdentitySource::PeerCertificate => {
                if !req.peer.mtls {
                    return if self.require { Err((ReasonCode::PeerIdentityMissing, REQUIRE)) } else { Ok(None) };
                }
                let Some(uri) = req.peer.uri_san.filter(|u| !u.is_empty()) else {
                    return if self.require { Err((ReasonCode::PeerIdentityNoUriSan, REQUIRE)) } else { Ok(None) };
                };
                // Envoy's property holds only the first URI SAN. Under APPEND_FORWARD with
                // `uri: true`, the element Envoy appended to XFCC lists them all: when the last
                // element describes this very certificate, make sure it is the only URI. This can
                // only ever deny, so a forged element gains a client nothing.
                if let Some(Ok([first, second])) = req.xfcc().ok().and_then(|e| e.last).map(first_uris) {
                    if first.as_deref() == Some(uri) && second.is_some() {
                        return Err((ReasonCode::PeerIdentityMultipleUriSans, REQUIRE));
                    }
                }
                Cow::Borrowed(uri)
            }
            IdentitySource::Xfcc => {
                // Envoy appends its own element (APPEND_FORWARD) or sets the header
                // (SANITIZE_SET) only for a TLS peer with a verified certificate. On any other
                // connection the whole header came from the client, the last element included,
                // so there is nothing the local Envoy vouches for.
                if !req.peer.mtls {
                    return if self.require { Err((ReasonCode::PeerIdentityMissing, REQUIRE)) } else { Ok(None) };
                }
                let [first, second] = match req.xfcc().map(|e| e.last.map(first_uris)) {
                    Ok(Some(Ok(uris))) => uris,
                    Ok(None) if !self.require => return Ok(None),
                    Ok(None | Some(Err(_))) | Err(_) => return Err((ReasonCode::PeerIdentityXfccInvalid, SOURCE)),
                };
                match (first, second) {
                    (None, _) if !self.require => return Ok(None),
                    (None, _) => return Err((ReasonCode::PeerIdentityNoUriSan, REQUIRE)),
                    (Some(_), Some(_)) => return Err((ReasonCode::PeerIdentityMultipleUriSans, REQUIRE)),
                    (Some(uri), None) => uri,
                }
            }
        };
        let id = SpiffeId::parse(&uri).map_err(|_| (ReasonCode::PeerIdentityInvalidSpiffeId, REQUIRE))?;
        if !self.trust_domains.is_empty() && !self.trust_domains.contains(id.trust_domain()) {
            return Err((ReasonCode::PeerIdentityTrustDomainNotAllowed, builtin::IDENTITY_TRUST_DOMAINS));
        }
        Ok(Some(id))
    }

    /// Explicit deny rules beat allow rules; a route with allow rules denies every principal
    /// none of them admits; a route no rule covers gets the default action.
    fn route_outcome<'r>(
        &'r self,
        input: &RouteInput<'_>,
        principal: Option<&SpiffeId>,
        include_dry_run: bool,
    ) -> RouteOutcome<'r> {
        // An authority that is not a host cannot be matched against the rules that name hosts,
        // and on a sidecar (one catch-all virtual host) it still reaches the app: refused, or a
        // malformed Host would step around every host-restricted rule.
        if input.host.is_none() {
            if let Some(rule) = self.rules.iter().find(|r| (include_dry_run || r.enforced) && r.route.has_hosts()) {
                return RouteOutcome::Deny(&rule.id, ReasonCode::PeerIdentityAuthorityInvalid);
            }
        }
        let mut first_allow: Option<&str> = None;
        let mut undecided: Option<&str> = None;
        let mut allowed = false;
        for rule in self.rules.iter().filter(|r| include_dry_run || r.enforced) {
            // An undecided route (a regex over its per-request cap) is read the fail-closed
            // way: a deny rule applies, an allow rule does not admit.
            let covered = match rule.route.matches(input) {
                Match::No => continue,
                Match::Yes => true,
                Match::Undecided => false,
            };
            match rule.action {
                Action::Deny if rule.admits(principal) => {
                    let code = if covered {
                        ReasonCode::PeerIdentityPrincipalDenied
                    } else {
                        ReasonCode::PeerIdentityRouteUndecided
                    };
                    return RouteOutcome::Deny(&rule.id, code);
                }
                Action::Deny => {}
                Action::Allow if covered => {
                    first_allow.get_or_insert(&rule.id);
                    allowed |= rule.admits(principal);
                }
                Action::Allow => {
                    undecided.get_or_insert(&rule.id);
                }
            }
        }
        match (allowed, undecided, first_allow) {
            (true, _, _) => RouteOutcome::Allow,
            (false, Some(rule), _) => RouteOutcome::Deny(rule, ReasonCode::PeerIdentityRouteUndecided),
            (false, None, Some(rule)) => RouteOutcome::Deny(rule, ReasonCode::PeerIdentityPrincipalNotAllowed),
            (false, None, None) if self.default_deny => {
                RouteOutcome::Deny(builtin::IDENTITY_DEFAULT_ACTION, ReasonCode::PeerIdentityNoMatchingRule)
            }
            (false, None, None) => RouteOutcome::Allow,
        }
    }
    pub fn applies_to(&self) -> IdentityAppliesTo {
        self.applies_to
    }
}

impl Check for PeerIdentity {
    type Doc = IdentityDoc;
    const SECTION: &'static str = "identity";

    fn compile(doc: &IdentityDoc, cx: &Context, errs: &mut ConfigErrors) -> PeerIdentity {
        let at = Self::SECTION;
        let mode = cx.enforcement(doc.mode);
        let mut trust_domains = HashSet::new();
        for (i, td) in doc.trust_domains.iter().enumerate() {
            if let Err(e) = crate::parse::spiffe::validate_trust_domain(td) {
                errs.push(format!("{at}.trustDomains[{i}]"), format!("not a valid trust domain: it {e}"));
            }
            trust_domains.insert(td.clone());
        }
        let mut ids = RuleIds::default();
        let mut rules = Vec::with_capacity(doc.rules.len());
        for (i, r) in doc.rules.iter().enumerate() {
            let rat = format!("{at}.rules[{i}]");
            ids.check(&r.id, &rat, errs);
            if r.principals.is_empty() {
                errs.push(
                    format!("{rat}.principals"),
                    "must list at least one principal (use \"*\" for any peer identity)",
                );
            }
            let mut principals = Vec::with_capacity(r.principals.len());
            for (j, p) in r.principals.iter().enumerate() {
                match PrincipalPattern::parse(p) {
                    Ok(pat) => {
                        if let (Some(trust_domain), false) = (pat.trust_domain(), trust_domains.is_empty()) {
                            if !trust_domains.contains(trust_domain) {
                                errs.push(format!("{rat}.principals[{j}]"), format!("trust domain '{trust_domain}' is not in {at}.trustDomains, so this can never match"));
                            }
                        }
                        principals.push(pat);
                    }
                    Err(e) => errs.push(format!("{rat}.principals[{j}]"), e),
                }
            }
            let route = RouteMatch::compile(&r.route, &format!("{rat}.match"), errs);
            let enforced = mode.rule(r.mode);
            rules.push(Rule { id: r.id.clone(), action: r.action, enforced, route, principals });
        }
        let has_dry_run_rules = rules.iter().any(|r| !r.enforced);
        PeerIdentity {
            enforced: mode.check(),
            require: doc.require_peer_identity,
            trust_domains,
            source: doc.source,
            applies_to: doc.applies_to,
            default_deny: doc.default_action == Action::Deny,
            rules,
            has_dry_run_rules,
        }
    }

    /// The peer certificate always; the listener's direction with `appliesTo: inbound`.
    fn needs(&self) -> Needs {
        Needs { peer: true, direction: self.applies_to == IdentityAppliesTo::Inbound, ..Needs::default() }
    }

    /// Add this check's findings to `decision`.
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision) {
        // Only a listener Envoy marks OUTBOUND is skipped: UNSPECIFIED (gateways, or a
        // property Envoy could not read) still runs the check.
        if self.applies_to == IdentityAppliesTo::Inbound && req.direction == Direction::Outbound {
            return;
        }
        let principal = match self.establish(req) {
            Ok(p) => p,
            Err((code, rule)) => {
                decision.findings.push(self.finding(code, rule, true));
                return;
            }
        };
        decision.principal = principal.as_ref().map(|p| p.as_str().to_string());
        if self.rules.is_empty() && !self.default_deny {
            return;
        }
        let input = req.route_input();
        // Rules in dry-run never change the enforced outcome: the enforced decision comes from
        // the enforcing rules alone, and a shadow pass with every rule shows what enforcing the
        // dry-run ones would do (as Envoy's RBAC shadow engine does).
        match self.route_outcome(&input, principal.as_ref(), false) {
            RouteOutcome::Deny(rule, code) => decision.findings.push(self.finding(code, rule, true)),
            RouteOutcome::Allow if self.has_dry_run_rules => {
                if let RouteOutcome::Deny(rule, code) = self.route_outcome(&input, principal.as_ref(), true) {
                    decision.findings.push(self.finding(code, rule, false));
                }
            }
            RouteOutcome::Allow => {}
        }
    }
}

#[cfg(test)]
mod tests;
