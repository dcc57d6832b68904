//! JWT request authentication: a second line behind Istio's RequestAuthentication, bound to
//! the mTLS peer.
//!
//! Threats: a RequestAuthentication without an AuthorizationPolicy lets requests *without* a
//! token through; a control-plane compromise or bad merge removes it; algorithm confusion
//! (`none`, HS256 with a public key as the secret, an RS256 token against an EC key, keys named
//! by the token itself through `jku`/`x5u`/`x5c`/`jwk`); expired or future tokens; tokens for
//! another audience; spoofed claim headers; and tokens stolen from one workload and replayed
//! from another (RFC 8705 certificate binding, token-to-SPIFFE-ID binding).
//!
//! The check is pure: the time is handed in ([`RequestView::now_unix_secs`]), and so is the
//! peer certificate's digest ([`RequestView::peer_cert_sha256`]).
//!
//! # Wiring
//!
//! - Registered after egress ([`crate::checks::compile_all`]); it reads the request through
//!   the [`RequestView`]: the token sources' headers, `:path` as received (query included; the
//!   view's canonical path for rule matching), `:authority`, `:method`.
//! - [`Needs`]: the clock always; `connection.sha256_peer_certificate_digest` when
//!   [`JwtCheck::needs_peer_certificate_digest`] (any rule whose `bind.certificate` is not
//!   `ignore`: the default `ifPresent` counts), `connection.uri_san_peer_certificate` when
//!   [`JwtCheck::needs_peer_uri_san`].
//! - Deny: status [`JwtCheck::deny_status`] (401 by default) when the primary finding is a JWT
//!   one ([`crate::Policy::deny_status`]). Mutations (forwarded-claim headers removed, then
//!   set; the token stripped) come in [`Decision::mutations`], applied only when the request
//!   is not refused.
//! - Logs: the token-source headers join the redacted headers (see `Policy::from_value`); a
//!   query-parameter token never reaches a log (the log keeps the query's shape only).

pub mod cache;
pub mod doc;
pub mod keys;
pub mod remote;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
pub mod verify;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use crate::decision::{Decision, Finding, HeaderMutation, Remedy};
use crate::document::{Action, Mode};
use crate::error::ConfigErrors;
use crate::matchers::route::{RouteInput, RouteMatch};
use crate::parse::spiffe::{PrincipalPattern, SpiffeId};
use crate::parse::token::is_tchar;
use crate::reason::{Check, ReasonCode};
use crate::view::{Needs, RequestView};

use doc::CertificateBinding;
pub use doc::JwtDoc;
use keys::Alg;
pub use verify::{Provider, Verified};

#[derive(Debug)]
enum Source {
    Header { name: Vec<u8>, prefix: Option<Vec<u8>> },
    Query { name: Vec<u8> },
}

#[derive(Debug)]
enum ClaimTest {
    Contains(String),
    Equals(String),
}

#[derive(Debug)]
struct Rule {
    id: String,
    enforced: bool,
    route: RouteMatch,
    optional: bool,
    /// Indexes of the providers whose tokens this rule accepts.
    providers: Vec<usize>,
    claims: Vec<(String, ClaimTest)>,
    certificate: CertificateBinding,
    peer_identity: Option<(String, bool)>,
}

#[derive(Debug)]
struct Forward {
    claim: String,
    header: Vec<u8>,
}

/// The compiled JWT check.
#[derive(Debug)]
pub struct JwtCheck {
    enforced: bool,
    default_deny: bool,
    providers: Vec<Provider>,
    rules: Vec<Rule>,
    has_dry_run_rules: bool,
    sources: Vec<Source>,
    skew: u64,
    max_token_bytes: usize,
    forward: Vec<Forward>,
    strip_token: bool,
    deny_status: u16,
    /// Per VM (a VM runs one thread; so does every native caller of one `Policy`), mutable
    /// through `&self`; a new policy is a new check, so a new, empty cache.
    cache: RefCell<cache::TokenCache>,
}

enum Outcome<'r> {
    /// Allowed; with the verified token and the index of the source it came from, if any.
    Allow(Option<(Arc<Verified>, usize)>),
    Deny(&'r str, ReasonCode),
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase())
}

/// Headers a forwarded claim may never overwrite.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "x-forwarded-client-cert",
    "x-request-id",
];

impl JwtCheck {
    pub fn compile_section(doc: &JwtDoc, policy_mode: Mode, at: &str, errs: &mut ConfigErrors) -> JwtCheck {
        let check_mode = if policy_mode == Mode::DryRun { Mode::DryRun } else { doc.mode.unwrap_or(Mode::Enforce) };
        let providers = compile_providers(doc, at, errs);
        let rules = compile_rules(doc, &providers, check_mode, at, errs);
        let sources = compile_sources(doc, at, errs);
        if doc.clock_skew_seconds > 3600 {
            errs.push(format!("{at}.clockSkewSeconds"), "at most 3600 seconds");
        }
        if !(256..=65536).contains(&doc.max_token_bytes) {
            errs.push(format!("{at}.maxTokenBytes"), "between 256 and 65536 bytes");
        }
        if doc.cache_entries > 100_000 {
            errs.push(format!("{at}.cacheEntries"), "at most 100000 (0 turns the cache off)");
        }
        if !(400..=599).contains(&doc.deny_status) {
            errs.push(format!("{at}.denyStatus"), "must be a 4xx or 5xx status");
        }
        let mut forward = Vec::with_capacity(doc.forward_claims.len());
        let mut seen = HashSet::new();
        for (i, f) in doc.forward_claims.iter().enumerate() {
            let fat = format!("{at}.forwardClaims[{i}]");
            if f.claim.is_empty() {
                errs.push(format!("{fat}.claim"), "must name a claim");
            }
            let header = f.header.as_str();
            if !valid_header_name(header) {
                errs.push(format!("{fat}.header"), "must be a lowercase HTTP header name");
            } else if RESERVED_HEADERS.contains(&header) || header.starts_with("x-envoy-") {
                errs.push(format!("{fat}.header"), format!("'{header}' is a header meshguard does not overwrite"));
            } else if sources.iter().any(|s| matches!(s, Source::Header { name, .. } if name == header.as_bytes())) {
                errs.push(format!("{fat}.header"), "is also a token source");
            } else if !seen.insert(header) {
                errs.push(format!("{fat}.header"), format!("duplicate header '{header}'"));
            }
            forward.push(Forward { claim: f.claim.clone(), header: header.as_bytes().to_vec() });
        }
        let has_dry_run_rules = rules.iter().any(|r| !r.enforced);
        JwtCheck {
            enforced: check_mode == Mode::Enforce,
            default_deny: doc.default_action == Action::Deny,
            providers,
            rules,
            has_dry_run_rules,
            sources,
            skew: doc.clock_skew_seconds,
            max_token_bytes: doc.max_token_bytes,
            forward,
            strip_token: doc.strip_token,
            deny_status: doc.deny_status,
            cache: RefCell::new(cache::TokenCache::new(doc.cache_entries)),
        }
    }

    /// The status of a JWT deny (`denyStatus`, 401 by default).
    pub fn deny_status(&self) -> u16 {
        self.deny_status
    }

    /// Lowercase names of the headers tokens are read from (`authorization` included when
    /// it is a source).
    pub fn token_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.sources.iter().filter_map(|s| match s {
            Source::Header { name, .. } => Some(name.as_slice()),
            Source::Query { .. } => None,
        })
    }

    /// Whether a rule binds tokens to the peer certificate (the filter then fetches
    /// `connection.sha256_peer_certificate_digest`).
    pub fn needs_peer_certificate_digest(&self) -> bool {
        self.rules.iter().any(|r| r.certificate != CertificateBinding::Ignore)
    }

    /// Whether a rule binds tokens to the peer's SPIFFE ID (`connection.uri_san_peer_certificate`).
    pub fn needs_peer_uri_san(&self) -> bool {
        self.rules.iter().any(|r| r.peer_identity.is_some())
    }

    /// The headers claims are forwarded in (removed from every request first).
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.forward.iter().map(|f| f.header.as_slice())
    }

    /// Verified tokens in the cache now.
    pub fn cached_tokens(&self) -> usize {
        self.cache.try_borrow().map(|c| c.len()).unwrap_or(0)
    }

    /// The providers whose keys are fetched ([`remote`]).
    pub fn remote_jwks(&self) -> Vec<remote::RemoteJwks> {
        self.providers
            .iter()
            .filter_map(|p| {
                p.remote.as_ref().map(|r| remote::RemoteJwks {
                    provider: p.id.clone(),
                    cluster: r.cluster.clone(),
                    path: r.path.clone(),
                    authority: r.authority.clone(),
                    refresh_seconds: r.refresh_seconds,
                })
            })
            .collect()
    }

    /// Install a fetched JWKS for the remote provider `provider` (see [`remote::RemoteKeys::set`]).
    /// A changed key set drops the provider's cached tokens: a token verified with a key the
    /// rotation removed must be verified again.
    pub fn set_jwks(&self, provider: &str, body: &[u8]) -> Result<remote::JwksUpdate, String> {
        let (index, remote) = self
            .providers
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.remote.as_ref().filter(|_| p.id == provider).map(|r| (i, r)))
            .ok_or_else(|| format!("no provider '{provider}' with jwks.remote"))?;
        let update = remote.set(body)?;
        if update == remote::JwksUpdate::Changed {
            if let Ok(mut c) = self.cache.try_borrow_mut() {
                c.remove_provider(index);
            } else {
                // Never keep a cache that may hold tokens of a removed key.
                return Err("token cache busy".to_string());
            }
        }
        Ok(update)
    }

    /// The body of the key set in force for a remote provider, with its cluster and path.
    pub fn jwks_body(&self, provider: &str) -> Option<(&str, &str, std::sync::Arc<[u8]>)> {
        let p = self.providers.iter().find(|p| p.id == provider)?;
        let r = p.remote.as_ref()?;
        Some((r.cluster.as_str(), r.path.as_str(), r.body()?))
    }

    fn finding(&self, code: ReasonCode, rule: &str, enforced: bool) -> Finding {
        Finding {
            check: Check::Jwt,
            code,
            rule: rule.to_string(),
            enforced: self.enforced && enforced,
            remedy: Remedy::Reject,
        }
    }

    /// Add this check's findings (and header mutations) to `decision`.
    pub fn evaluate_request(&self, input: &RequestView<'_>, decision: &mut Decision) {
        // Forwarded-claim headers never come from the client.
        for f in &self.forward {
            decision.mutations.push(HeaderMutation::Remove { name: f.header.clone() });
        }
        let route = input.route_input();
        // Rules in dry-run never change the enforced outcome: the enforced decision comes from
        // the enforcing rules alone, and a shadow pass with every rule shows what enforcing the
        // dry-run ones would do. A check in dry-run has one pass, with every rule.
        let outcome = self.decide(&route, input, !self.enforced);
        let verified = match outcome {
            Outcome::Deny(rule, code) => {
                decision.findings.push(self.finding(code, rule, true));
                return;
            }
            Outcome::Allow(verified) => verified,
        };
        if self.enforced && self.has_dry_run_rules {
            if let Outcome::Deny(rule, code) = self.decide(&route, input, true) {
                decision.findings.push(self.finding(code, rule, false));
            }
        }
        if let Some((v, source)) = verified {
            self.forward_claims(&v, decision);
            if self.strip_token {
                self.strip(source, input, decision);
            }
        }
    }

    fn forward_claims(&self, v: &Verified, decision: &mut Decision) {
        for f in &self.forward {
            let value = match verify::claim(&v.claims, &f.claim) {
                Some(serde_json::Value::String(s)) => s.clone().into_bytes(),
                Some(other @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    other.to_string().into_bytes()
                }
                Some(other @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => {
                    other.to_string().into_bytes()
                }
                _ => continue,
            };
            // Only printable ASCII reaches a header (no CR/LF, no control byte, no obs-text).
            if value.is_empty() || !value.iter().all(|&b| (0x20..0x7f).contains(&b)) || value.len() > 4096 {
                continue;
            }
            decision.mutations.push(HeaderMutation::Set { name: f.header.clone(), value });
        }
    }

    fn strip(&self, source: usize, input: &RequestView<'_>, decision: &mut Decision) {
        match self.sources.get(source) {
            Some(Source::Header { name, .. }) => decision.mutations.push(HeaderMutation::Remove { name: name.clone() }),
            Some(Source::Query { name }) => {
                let raw = input.path();
                let (path, query) = match raw.iter().position(|&b| b == b'?') {
                    Some(q) => (raw.get(..q).unwrap_or_default(), raw.get(q + 1..).unwrap_or_default()),
                    None => return,
                };
                let kept: Vec<&[u8]> =
                    query.split(|&b| b == b'&').filter(|pair| query_name(pair) != name.as_slice()).collect();
                let mut value = path.to_vec();
                if !kept.is_empty() {
                    value.push(b'?');
                    value.extend_from_slice(&kept.join(&b'&'));
                }
                decision.mutations.push(HeaderMutation::Set { name: b":path".to_vec(), value });
            }
            None => {}
        }
    }

    fn decide<'r>(&'r self, route: &RouteInput<'_>, input: &RequestView<'_>, include_dry_run: bool) -> Outcome<'r> {
        let mut rules = self.rules.iter().filter(|r| include_dry_run || r.enforced);
        // An authority that is not a host cannot be matched against rules that name hosts: a
        // malformed Host must not step around them.
        if route.host.is_none() {
            if let Some(rule) = rules.clone().find(|r| r.route.has_hosts()) {
                return Outcome::Deny(&rule.id, ReasonCode::JwtAuthorityInvalid);
            }
        }
        match rules.find(|r| r.route.matches(route).may()) {
            Some(rule) => match self.check_rule(rule, input) {
                Ok(v) => Outcome::Allow(v),
                Err(code) => Outcome::Deny(&rule.id, code),
            },
            None if self.default_deny => Outcome::Deny("jwt.defaultAction", ReasonCode::JwtNoMatchingRule),
            None => Outcome::Allow(None),
        }
    }

    /// The one token of the request and the index of its source; `Err` for two or more.
    fn extract<'i>(&self, input: &RequestView<'i>) -> Result<Option<(&'i [u8], usize)>, ReasonCode> {
        let mut found: Option<(&'i [u8], usize)> = None;
        let mut add = |token: &'i [u8], source: usize| {
            if found.replace((token, source)).is_some() {
                Err(ReasonCode::JwtMultipleTokens)
            } else {
                Ok(())
            }
        };
        let raw = input.path();
        let query = raw.iter().position(|&b| b == b'?').and_then(|q| raw.get(q + 1..));
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                Source::Header { name, prefix } => {
                    // Envoy folds a repeated header into one value joined by commas (two
                    // Authorization headers arrive as `Bearer a,Bearer b`); a token never holds
                    // a comma, so each comma-separated element is read as a value of its own.
                    let values = input
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        .flat_map(|(_, v)| v.split(|&b| b == b','))
                        .map(trim_leading_ows);
                    for value in values {
                        let token = match prefix {
                            None => Some(value),
                            Some(p) => value
                                .get(..p.len())
                                .filter(|head| head.eq_ignore_ascii_case(p))
                                .and_then(|_| value.get(p.len()..)),
                        };
                        if let Some(token) = token {
                            add(token, i)?;
                        }
                    }
                }
                Source::Query { name } => {
                    for pair in query.into_iter().flat_map(|q| q.split(|&b| b == b'&')) {
                        if query_name(pair) == name.as_slice() {
                            let value = pair.get(name.len() + 1..).unwrap_or_default();
                            add(value, i)?;
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    fn check_rule(&self, rule: &Rule, input: &RequestView<'_>) -> Result<Option<(Arc<Verified>, usize)>, ReasonCode> {
        let Some((token, source)) = self.extract(input)? else {
            return if rule.optional { Ok(None) } else { Err(ReasonCode::JwtMissing) };
        };
        if token.len() > self.max_token_bytes {
            return Err(ReasonCode::JwtTooLarge);
        }
        let now = input.now_unix_secs;
        let cached = self.cache.try_borrow_mut().ok().and_then(|mut c| c.get(token, now, self.skew));
        let v = match cached {
            Some(v) => {
                if !rule.providers.contains(&v.provider) {
                    return Err(ReasonCode::JwtIssuerNotAllowed);
                }
                v
            }
            None => {
                let v = Arc::new(verify::verify(token, &self.providers, &rule.providers, self.max_token_bytes)?);
                if let Ok(mut c) = self.cache.try_borrow_mut() {
                    c.insert(token, Arc::clone(&v), now, self.skew);
                }
                v
            }
        };
        verify::check_time(&v, now, self.skew)?;
        let provider = self.providers.get(v.provider).ok_or(ReasonCode::JwtIssuerNotAllowed)?;
        verify::check_audience(&v, provider)?;
        for (name, test) in &rule.claims {
            let ok = verify::claim(&v.claims, name).is_some_and(|value| match test {
                ClaimTest::Contains(want) => verify::claim_contains(value, want),
                ClaimTest::Equals(want) => verify::claim_equals(value, want),
            });
            if !ok {
                return Err(ReasonCode::JwtClaimsNotSatisfied);
            }
        }
        match (rule.certificate, verify::certificate_bound(&v.claims, input.peer_cert_sha256)) {
            (CertificateBinding::Ignore, _) | (CertificateBinding::IfPresent, None) | (_, Some(true)) => {}
            (CertificateBinding::Required, None) | (_, Some(false)) => return Err(ReasonCode::JwtBindingMismatch),
        }
        if let Some((claim, patterns)) = &rule.peer_identity {
            if !bound_to_peer(&v, claim, *patterns, input.peer.uri_san) {
                return Err(ReasonCode::JwtPeerIdentityMismatch);
            }
        }
        Ok(Some((v, source)))
    }
}

impl crate::checks::Check for JwtCheck {
    type Doc = JwtDoc;
    const SECTION: &'static str = "jwt";

    fn compile(doc: &JwtDoc, cx: &crate::checks::Context, errs: &mut ConfigErrors) -> JwtCheck {
        JwtCheck::compile_section(doc, cx.policy_mode, Self::SECTION, errs)
    }

    /// The clock on every request; the peer's certificate digest and URI SAN only when a rule
    /// binds tokens to them.
    fn needs(&self) -> Needs {
        Needs {
            peer: self.needs_peer_uri_san(),
            peer_cert_digest: self.needs_peer_certificate_digest(),
            clock: true,
            ..Needs::default()
        }
    }

    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision) {
        self.evaluate_request(req, decision);
    }

    fn deny_status(&self) -> Option<(Check, u16)> {
        Some((Check::Jwt, self.deny_status))
    }

    fn redacted_headers(&self) -> Vec<String> {
        self.token_headers().map(|h| String::from_utf8_lossy(h).into_owned()).collect()
    }

    fn remote_jwks(&self) -> Vec<remote::RemoteJwks> {
        JwtCheck::remote_jwks(self)
    }

    fn set_jwks(&self, provider: &str, body: &[u8]) -> Option<Result<remote::JwksUpdate, String>> {
        Some(JwtCheck::set_jwks(self, provider, body))
    }

    fn jwks_body(&self, provider: &str) -> Option<(&str, &str, std::sync::Arc<[u8]>)> {
        JwtCheck::jwks_body(self, provider)
    }
}

/// An element of a comma-folded value without the optional whitespace (spaces, tabs) after its
/// comma. Trailing whitespace stays: a token followed by a space is malformed, as it was sent.
fn trim_leading_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    value.get(start..).unwrap_or_default()
}

/// The name of a `name=value` query pair.
fn query_name(pair: &[u8]) -> &[u8] {
    pair.split(|&b| b == b'=').next().unwrap_or_default()
}

/// The claim names the peer's SPIFFE ID, or (with `patterns`) is a SPIFFE-ID pattern other
/// than `*` that the peer's ID matches.
fn bound_to_peer(v: &Verified, claim: &str, patterns: bool, peer_uri_san: Option<&[u8]>) -> bool {
    let Some(peer) = peer_uri_san.and_then(|u| SpiffeId::parse(u).ok()) else { return false };
    let Some(value) = verify::claim(&v.claims, claim).and_then(serde_json::Value::as_str) else { return false };
    if value == peer.as_str() {
        return true;
    }
    patterns && matches!(PrincipalPattern::parse(value), Ok(p) if p != PrincipalPattern::Any && p.matches(&peer))
}

fn compile_providers(doc: &JwtDoc, at: &str, errs: &mut ConfigErrors) -> Vec<Provider> {
    if doc.providers.is_empty() {
        errs.push(format!("{at}.providers"), "must list at least one provider");
    }
    let mut ids = HashSet::new();
    let mut issuers = HashSet::new();
    let mut out = Vec::with_capacity(doc.providers.len());
    for (i, p) in doc.providers.iter().enumerate() {
        let pat = format!("{at}.providers[{i}]");
        if !valid_id(&p.id) {
            errs.push(format!("{pat}.id"), "must be 1 to 64 characters of [A-Za-z0-9._-]");
        } else if !ids.insert(p.id.as_str()) {
            errs.push(format!("{pat}.id"), format!("duplicate provider id '{}'", p.id));
        }
        if p.issuer.is_empty() {
            errs.push(format!("{pat}.issuer"), "must not be empty");
        } else if !issuers.insert(p.issuer.as_str()) {
            errs.push(
                format!("{pat}.issuer"),
                "another provider has this issuer: tokens are attributed to a provider by `iss`",
            );
        }
        if p.audiences.is_empty() {
            errs.push(
                format!("{pat}.audiences"),
                "must list at least one audience: a token minted for another service must not be accepted here",
            );
        }
        for (j, a) in p.audiences.iter().enumerate() {
            if a.is_empty() {
                errs.push(format!("{pat}.audiences[{j}]"), "must not be empty");
            }
        }
        let keys = match (&p.jwks.keys, &p.jwks.remote) {
            (Some(keys), None) => Some(keys::parse_keys(keys, &format!("{pat}.jwks.keys"), errs)),
            (None, Some(remote)) => {
                let rat = format!("{pat}.jwks.remote");
                if remote.cluster.is_empty() {
                    errs.push(format!("{rat}.cluster"), "must name an Envoy cluster");
                }
                if !remote.path.starts_with('/') {
                    errs.push(format!("{rat}.path"), "must start with '/'");
                }
                if !(1..=86400).contains(&remote.refresh_seconds) {
                    errs.push(format!("{rat}.refreshSeconds"), "between 1 and 86400");
                }
                if let Some(a) = &remote.authority {
                    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@') {
                        errs.push(format!("{rat}.authority"), "must be a host[:port]");
                    }
                }
                None
            }
            _ => {
                errs.push(format!("{pat}.jwks"), "set exactly one of keys or remote");
                None
            }
        };
        let algorithms = match &p.algorithms {
            Some(names) => {
                if names.is_empty() {
                    errs.push(format!("{pat}.algorithms"), "must list at least one algorithm (or be left out)");
                }
                let mut algs = Vec::with_capacity(names.len());
                for (j, name) in names.iter().enumerate() {
                    match Alg::from_name(name) {
                        Some(alg) => {
                            if keys.as_ref().is_some_and(|k| !k.iter().any(|k| k.accepts(alg))) {
                                errs.push(format!("{pat}.algorithms[{j}]"), format!("no key of this provider verifies {name}"));
                            }
                            algs.push(alg);
                        }
                        None => errs.push(
                            format!("{pat}.algorithms[{j}]"),
                            format!("'{name}' is not allowed (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; never none or HS*)"),
                        ),
                    }
                }
                algs
            }
            // Every algorithm some key accepts (for a remote JWKS: every algorithm, each still
            // matched against the selected key's type).
            None => Alg::ALL
                .into_iter()
                .filter(|&alg| keys.as_ref().is_none_or(|k| k.iter().any(|k| k.accepts(alg))))
                .collect(),
        };
        out.push(Provider {
            id: p.id.clone(),
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            algorithms,
            keys,
            remote: p
                .jwks
                .remote
                .as_ref()
                .map(|r| remote::RemoteKeys::new(&r.cluster, &r.path, r.authority.as_deref(), r.refresh_seconds)),
        });
    }
    out
}

fn compile_rules(
    doc: &JwtDoc,
    providers: &[Provider],
    check_mode: Mode,
    at: &str,
    errs: &mut ConfigErrors,
) -> Vec<Rule> {
    let mut ids = HashSet::new();
    let mut rules = Vec::with_capacity(doc.rules.len());
    for (i, r) in doc.rules.iter().enumerate() {
        let rat = format!("{at}.rules[{i}]");
        if !valid_id(&r.id) {
            errs.push(format!("{rat}.id"), "must be 1 to 64 characters of [A-Za-z0-9._-]");
        } else if !ids.insert(r.id.as_str()) {
            errs.push(format!("{rat}.id"), format!("duplicate rule id '{}'", r.id));
        }
        let route = RouteMatch::compile(&r.route, &format!("{rat}.match"), errs);
        let provider_ids: Vec<usize> = match &r.require {
            Some(req) => {
                if req.providers.is_empty() {
                    errs.push(format!("{rat}.require.providers"), "must name at least one provider");
                }
                req.providers
                    .iter()
                    .enumerate()
                    .filter_map(|(j, id)| {
                        let found = providers.iter().position(|p| &p.id == id);
                        if found.is_none() {
                            errs.push(format!("{rat}.require.providers[{j}]"), format!("no provider has id '{id}'"));
                        }
                        found
                    })
                    .collect()
            }
            None if r.optional => (0..providers.len()).collect(),
            None => {
                errs.push(rat.clone(), "set require.providers (a token is required) or optional: true");
                Vec::new()
            }
        };
        let mut claims = Vec::with_capacity(r.claims.len());
        for (j, c) in r.claims.iter().enumerate() {
            let cat = format!("{rat}.claims[{j}]");
            if c.name.is_empty() {
                errs.push(format!("{cat}.name"), "must name a claim");
            }
            match (&c.contains, &c.equals) {
                (Some(v), None) => claims.push((c.name.clone(), ClaimTest::Contains(v.clone()))),
                (None, Some(v)) => claims.push((c.name.clone(), ClaimTest::Equals(v.clone()))),
                _ => errs.push(cat, "set exactly one of contains or equals"),
            }
        }
        let peer_identity = r.bind.peer_identity.as_ref().map(|b| {
            if b.claim.is_empty() {
                errs.push(format!("{rat}.bind.peerIdentity.claim"), "must name a claim (azp, client_id, sub...)");
            }
            (b.claim.clone(), b.patterns)
        });
        let enforced = check_mode == Mode::Enforce && r.mode.unwrap_or(Mode::Enforce) == Mode::Enforce;
        rules.push(Rule {
            id: r.id.clone(),
            enforced,
            route,
            optional: r.optional,
            providers: provider_ids,
            claims,
            certificate: r.bind.certificate,
            peer_identity,
        });
    }
    rules
}

fn compile_sources(doc: &JwtDoc, at: &str, errs: &mut ConfigErrors) -> Vec<Source> {
    if doc.token_sources.is_empty() {
        errs.push(
            format!("{at}.tokenSources"),
            "must list at least one source (leave it out for Authorization: Bearer)",
        );
    }
    let mut out = Vec::with_capacity(doc.token_sources.len());
    for (i, s) in doc.token_sources.iter().enumerate() {
        let sat = format!("{at}.tokenSources[{i}]");
        match (&s.header, &s.query_param) {
            (Some(h), None) => {
                if !valid_header_name(h) {
                    errs.push(format!("{sat}.header"), "must be a lowercase HTTP header name");
                }
                if s.prefix.as_ref().is_some_and(|p| p.is_empty() || !p.bytes().all(|b| (0x20..0x7f).contains(&b))) {
                    errs.push(format!("{sat}.prefix"), "must be printable ASCII (for example \"Bearer \")");
                }
                out.push(Source::Header {
                    name: h.as_bytes().to_vec(),
                    prefix: s.prefix.as_ref().map(|p| p.as_bytes().to_vec()),
                });
            }
            (None, Some(q)) => {
                if q.is_empty() || !q.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                    errs.push(format!("{sat}.queryParam"), "must be a parameter name of [A-Za-z0-9._-]");
                }
                if s.prefix.is_some() {
                    errs.push(format!("{sat}.prefix"), "only for a header source");
                }
                out.push(Source::Query { name: q.as_bytes().to_vec() });
            }
            _ => errs.push(sat, "set exactly one of header or queryParam"),
        }
    }
    out
}
