//! The checks, one folder each, and the one shape they share.
//!
//! A check is four things:
//!
//! - its section of the policy document ([`Check::Doc`], unknown fields refused), with its part
//!   of `policy/schema/policy.schema.json`;
//! - [`Check::compile`]: the section compiled once per configuration into lookup structures,
//!   recording *every* error with the JSON path of its field (`egress.allow[3].hosts[0]`);
//! - [`Check::needs`]: the connection facts it reads, so that the filter makes only the host
//!   calls some check will use;
//! - [`Check::evaluate`]: findings appended to the [`Decision`], reading request facts only
//!   through the [`RequestView`] (each computed at most once per request, by the one reader of
//!   its format in [`crate::parse`]).
//!
//! The registry ([`compile_all`]) fixes the order: request hygiene, peer identity, egress, JWT;
//! upstream pinning decides in the response phase ([`Check::evaluate_upstream`]).
//! Adding a check is one folder here (`doc.rs`, `mod.rs`, `tests.rs`, opening with the threat it
//! answers), one line in [`compile_all`], its reason codes in [`crate::reason`] and its schema
//! part.
//!
//! The conventions every check follows live here too: how modes combine ([`Enforcement`]),
//! what a rule id may be ([`RuleIds`]), and the ids of the built-in rules ([`builtin`]).

pub mod egress;
pub mod hygiene;
pub mod identity;
pub mod jwt;
pub mod upstream;

use std::collections::HashSet;
use std::fmt;

use crate::decision::Decision;
use crate::document::{Mode, PolicyDocument};
use crate::error::ConfigErrors;
use crate::view::{ConnectionView, Needs, RequestView, UpstreamView};

/// The shape of a check. See the module documentation.
pub trait Check: fmt::Debug + Sized {
    /// The check's section of the policy document.
    type Doc;
    /// The section's name: the root of its fields' JSON paths.
    const SECTION: &'static str;

    /// Compile the section. Every error goes to `errs` with its JSON path; the value returned
    /// is only used when `errs` stays empty.
    fn compile(doc: &Self::Doc, cx: &Context, errs: &mut ConfigErrors) -> Self;

    /// The connection facts the check reads.
    fn needs(&self) -> Needs;

    /// Add this check's findings for one HTTP request.
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision);

    /// Whether the check decides TLS/TCP connections too (the network filter).
    fn decides_connections(&self) -> bool {
        false
    }

    /// Add this check's findings for one connection, as it opens.
    fn evaluate_connection(&self, _conn: &ConnectionView<'_>, _decision: &mut Decision) {}

    /// Whether the check decides the upstream connection too (the response phase: the first
    /// moment the connection to the endpoint exists).
    fn decides_upstream(&self) -> bool {
        false
    }

    /// Add this check's findings for one request's upstream connection, in the response phase.
    fn evaluate_upstream(&self, _up: &UpstreamView<'_>, _decision: &mut Decision) {}

    /// Whether the check has anything to say about this destination (`up` holds the cluster
    /// and authority only, in the request phase): when none does, the filter reads nothing in
    /// the response phase.
    fn pins_upstream(&self, _up: &UpstreamView<'_>) -> bool {
        self.decides_upstream()
    }

    /// The status of a deny this check decides, when it is not the policy's
    /// `denyResponse.status` (JWT: `jwt.denyStatus`, 401 by default).
    fn deny_status(&self) -> Option<(crate::reason::Check, u16)> {
        None
    }

    /// Lowercase names of headers whose values the decision log must never hold, besides the
    /// built-in list (JWT: its token-source headers).
    fn redacted_headers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Key sets this check fetches at run time (JWT: `jwks.remote` providers).
    fn remote_jwks(&self) -> Vec<jwt::remote::RemoteJwks> {
        Vec::new()
    }

    /// Install a fetched key set for `provider`; `None` when this check has no such provider.
    fn set_jwks(&self, _provider: &str, _body: &[u8]) -> Option<Result<jwt::remote::JwksUpdate, String>> {
        None
    }

    /// The fetched key set in force for `provider`: its cluster, path and body.
    fn jwks_body(&self, _provider: &str) -> Option<(&str, &str, std::sync::Arc<[u8]>)> {
        None
    }
}

/// A compiled check as the policy holds it: [`Check`] without its document type. Not `Debug`:
/// a `dyn` vtable's `Debug::fmt` keeps every compiled check's Debug code in meshguard.wasm,
/// which never prints one (`Policy`'s Debug names the checks instead).
pub(crate) trait Compiled {
    fn needs(&self) -> Needs;
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision);
    fn decides_connections(&self) -> bool;
    fn evaluate_connection(&self, conn: &ConnectionView<'_>, decision: &mut Decision);
    fn decides_upstream(&self) -> bool;
    fn evaluate_upstream(&self, up: &UpstreamView<'_>, decision: &mut Decision);
    fn pins_upstream(&self, up: &UpstreamView<'_>) -> bool;
    fn deny_status(&self) -> Option<(crate::reason::Check, u16)>;
    fn redacted_headers(&self) -> Vec<String>;
    fn remote_jwks(&self) -> Vec<jwt::remote::RemoteJwks>;
    fn set_jwks(&self, provider: &str, body: &[u8]) -> Option<Result<jwt::remote::JwksUpdate, String>>;
    fn jwks_body(&self, provider: &str) -> Option<(&str, &str, std::sync::Arc<[u8]>)>;
}

impl<C: Check> Compiled for C {
    fn needs(&self) -> Needs {
        Check::needs(self)
    }
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision) {
        Check::evaluate(self, req, decision);
    }
    fn decides_connections(&self) -> bool {
        Check::decides_connections(self)
    }
    fn evaluate_connection(&self, conn: &ConnectionView<'_>, decision: &mut Decision) {
        Check::evaluate_connection(self, conn, decision);
    }
    fn decides_upstream(&self) -> bool {
        Check::decides_upstream(self)
    }
    fn evaluate_upstream(&self, up: &UpstreamView<'_>, decision: &mut Decision) {
        Check::evaluate_upstream(self, up, decision);
    }
    fn pins_upstream(&self, up: &UpstreamView<'_>) -> bool {
        Check::pins_upstream(self, up)
    }
    fn deny_status(&self) -> Option<(crate::reason::Check, u16)> {
        Check::deny_status(self)
    }
    fn redacted_headers(&self) -> Vec<String> {
        Check::redacted_headers(self)
    }
    fn remote_jwks(&self) -> Vec<jwt::remote::RemoteJwks> {
        Check::remote_jwks(self)
    }
    fn set_jwks(&self, provider: &str, body: &[u8]) -> Option<Result<jwt::remote::JwksUpdate, String>> {
        Check::set_jwks(self, provider, body)
    }
    fn jwks_body(&self, provider: &str) -> Option<(&str, &str, std::sync::Arc<[u8]>)> {
        Check::jwks_body(self, provider)
    }
}

/// The registry: every check the document configures, compiled, in evaluation order.
pub(crate) fn compile_all(doc: &PolicyDocument, errs: &mut ConfigErrors) -> Vec<Box<dyn Compiled>> {
    let cx = Context { policy_mode: doc.mode };
    let mut checks: Vec<Box<dyn Compiled>> = Vec::new();
    register::<hygiene::RequestHygiene>(doc.hygiene.as_ref(), &cx, errs, &mut checks);
    register::<identity::PeerIdentity>(doc.identity.as_ref(), &cx, errs, &mut checks);
    register::<egress::EgressAllowlist>(doc.egress.as_ref(), &cx, errs, &mut checks);
    register::<jwt::JwtCheck>(doc.jwt.as_ref(), &cx, errs, &mut checks);
    register::<upstream::UpstreamPinning>(doc.upstream.as_ref(), &cx, errs, &mut checks);
    checks
}

fn register<C: Check + 'static>(
    doc: Option<&C::Doc>,
    cx: &Context,
    errs: &mut ConfigErrors,
    out: &mut Vec<Box<dyn Compiled>>,
) {
    if let Some(doc) = doc {
        out.push(Box::new(C::compile(doc, cx, errs)));
    }
}

/// What every check's compilation is handed besides its own section.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The whole policy's `mode`.
    pub policy_mode: Mode,
}

impl Context {
    /// How a check whose section says `mode` enforces: a policy in dry-run makes every check
    /// dry-run; otherwise the check's own `mode` (default enforce).
    pub fn enforcement(&self, check_mode: Option<Mode>) -> Enforcement {
        Enforcement { check: self.policy_mode == Mode::Enforce && check_mode.unwrap_or(Mode::Enforce) == Mode::Enforce }
    }
}

/// Modes combine downwards: a rule (or guard) enforces only when the policy, its check and the
/// rule itself all say enforce. A finding that is not enforced is logged as a would-deny and
/// changes nothing for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforcement {
    check: bool,
}

impl Enforcement {
    /// Whether the check as a whole enforces (its built-in rules do when it does).
    pub fn check(self) -> bool {
        self.check
    }

    /// Whether a rule with this `mode` enforces.
    pub fn rule(self, rule_mode: Option<Mode>) -> bool {
        self.check && rule_mode.unwrap_or(Mode::Enforce) == Mode::Enforce
    }
}

/// Rule ids: 1 to 64 characters of `[A-Za-z0-9._-]`, unique within a check. They appear in
/// decision logs and deny counters, so they must be short, printable and unambiguous.
#[derive(Debug, Default)]
pub struct RuleIds<'d> {
    seen: HashSet<&'d str>,
}

impl<'d> RuleIds<'d> {
    /// Check rule `id` at `at` (the rule's path, without `.id`).
    pub fn check(&mut self, id: &'d str, at: &str, errs: &mut ConfigErrors) {
        if !is_rule_id(id) {
            errs.push(format!("{at}.id"), "must be 1 to 64 characters of [A-Za-z0-9._-]");
        } else if !self.seen.insert(id) {
            errs.push(format!("{at}.id"), format!("duplicate rule id '{id}'"));
        }
    }
}

/// Whether `id` has the form of a rule id (uniqueness aside).
pub fn is_rule_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The ids of the built-in rules: the path, in the policy document, of the setting that
/// decided. Decision logs, counters and the docs name them; they never change.
pub mod builtin {
    /// `identity.requirePeerIdentity`: no peer identity, or not one valid SPIFFE ID.
    pub const IDENTITY_REQUIRE: &str = "identity.requirePeerIdentity";
    /// `identity.source`: the XFCC element the identity should come from is unusable.
    pub const IDENTITY_SOURCE: &str = "identity.source";
    /// `identity.trustDomains`: a peer from a trust domain not listed.
    pub const IDENTITY_TRUST_DOMAINS: &str = "identity.trustDomains";
    /// `identity.defaultAction`: a route no rule covers, under `defaultAction: deny`.
    pub const IDENTITY_DEFAULT_ACTION: &str = "identity.defaultAction";
    /// `egress.host`: the authority or SNI is not a host at all.
    pub const EGRESS_HOST: &str = "egress.host";
    /// `egress.authority`: the authority does not agree with the cluster Envoy routed to.
    pub const EGRESS_AUTHORITY: &str = "egress.authority";
    /// `egress.allow`: no rule names the destination.
    pub const EGRESS_ALLOW: &str = "egress.allow";
    // Upstream pinning has no built-in rule: every finding names the `upstream.destinations`
    // rule that pinned the destination (its `id`).
}
