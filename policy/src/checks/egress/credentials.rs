//! Credential scoping: which egress destinations may receive credentials.
//!
//! Threat: insecure secrets management. A workload holds credentials for the destinations it
//! talks to (a partner API key, a session cookie, an OAuth bearer token); a bug, a
//! misconfigured SDK (an exporter that copies every header), an open redirect or an SSRF sends
//! them somewhere else: a telemetry collector, a CDN, an attacker's host behind an allowed
//! wildcard. Every `egress.allow` rule says what requests it admits may carry
//! (`credentials: allow | deny | strip`), and the data plane, which sees every request leave,
//! enforces it whatever the application's configuration says.
//!
//! # What counts as a credential
//!
//! - the headers `authorization`, `proxy-authorization` and `cookie`, the vendor API-key
//!   headers in [`BUILTIN_HEADERS`], and the names in `egress.credentials.headers`;
//! - query parameters named in [`BUILTIN_QUERY_PARAMS`] or `egress.credentials.queryParams`
//!   (names compared case-insensitively after percent-decoding, so `acc%65ss_token` is
//!   `access_token`);
//! - userinfo in the authority (`user:pass@host`) is never a host: the egress check refuses it
//!   before any rule is consulted (`egress_invalid_host`), whatever the rule says.
//!
//! # What a rule does
//!
//! - `allow`: nothing; the destination may receive credentials.
//! - `deny`: a request carrying a credential header is refused
//!   (`egress_credentials_not_allowed`), one carrying a credential query parameter too
//!   (`egress_credentials_in_query`).
//! - `strip`: credential headers are removed before the request leaves (one
//!   `egress_credentials_stripped` finding, a `remove` mutation per header name, names only in
//!   the decision log). A query cannot be rewritten safely (the application signed it, or
//!   its encoding is ambiguous), so a credential in the query is refused
//!   (`egress_credentials_in_query`) as under `deny`.
//!
//! The rule that admits the request decides (the first, in policy order, that admits it). A
//! rule that says nothing takes `egress.credentials.default`, which is `allow`: turning the
//! check on must not break every authenticated integration an existing policy admits. Scoping
//! is opt-in per section (`credentials: {default: deny}`) and per rule, and can be watched
//! first (`egress.credentials.mode: dry-run`, or the rule's own `mode`).
//!
//! TLS egress passed through by SNI (the network filter) has encrypted headers: nothing here
//! applies to it. Scope credentials on HTTP egress (originate TLS at the egress gateway).
//!
//! # Cost
//!
//! Names are bucketed by length at compile time; a request admitted by a rule with `allow`
//! costs nothing, one with `deny` or `strip` one pass over the headers and one over the query
//! (without allocation unless something is found).

use serde::Deserialize;

use crate::decision::{Decision, Finding, HeaderMutation, Remedy};
use crate::document::Mode;
use crate::error::ConfigErrors;
use crate::reason::ReasonCode;
use crate::view::request::RequestView;

/// Whether a destination may receive credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CredentialAction {
    /// The destination may receive credentials.
    #[default]
    Allow,
    /// A request carrying credentials is refused.
    Deny,
    /// Credential headers are removed; a credential in the query is refused.
    Strip,
}

impl CredentialAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialAction::Allow => "allow",
            CredentialAction::Deny => "deny",
            CredentialAction::Strip => "strip",
        }
    }
}

/// `egress.credentials`: what counts as a credential, and the default for rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialsDoc {
    /// For rules without `credentials` (default `allow`).
    #[serde(default)]
    pub default: Option<CredentialAction>,
    /// Credential findings only: `dry-run` logs them as would-deny (and strips nothing).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// More credential header names, besides the built-in ones.
    #[serde(default)]
    pub headers: Vec<String>,
    /// More credential query parameter names, besides the built-in ones.
    #[serde(default)]
    pub query_params: Vec<String>,
}

/// Credential headers always known (lowercase): HTTP authentication and vendor API-key
/// headers, from the vendors' API documentation.
pub const BUILTIN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    // Generic API-key headers (AWS API Gateway, Anthropic, Azure OpenAI, Supabase, Kong...).
    "x-api-key",
    "api-key",
    "apikey",
    "x-apikey",
    "x-auth-token",
    "x-access-token",
    // Google Cloud APIs.
    "x-goog-api-key",
    // AWS temporary credentials (SigV4 itself is in Authorization).
    "x-amz-security-token",
    // GitLab.
    "private-token",
    "job-token",
    // HashiCorp Vault, Consul, Nomad.
    "x-vault-token",
    "x-consul-token",
    "x-nomad-token",
    // Azure API Management and Functions.
    "ocp-apim-subscription-key",
    "x-functions-key",
    // Telemetry vendors: Datadog, Honeycomb, Splunk Observability, Lightstep, Sentry, New Relic.
    "dd-api-key",
    "dd-application-key",
    "x-honeycomb-team",
    "x-sf-token",
    "lightstep-access-token",
    "x-sentry-auth",
    "x-license-key",
    "x-insert-key",
    // Cloudflare (legacy global key), Algolia, RapidAPI, Shopify, Postmark, Hasura, CircleCI.
    "x-auth-key",
    "x-algolia-api-key",
    "x-rapidapi-key",
    "x-shopify-access-token",
    "x-postmark-server-token",
    "x-hasura-admin-secret",
    "circle-token",
];

/// Credential query parameters always known (lowercase): OAuth 2.0 bearer tokens (RFC 6750
/// `access_token`), API keys (`key` for Google APIs, `api_key`...), GitLab's `private_token`,
/// and signed-URL signatures and credentials (AWS SigV4 presigned URLs, Google signed URLs,
/// Azure SAS `sig`).
pub const BUILTIN_QUERY_PARAMS: &[&str] = &[
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "private_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "client_secret",
    "password",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// The longest name a bucket holds.
const MAX_NAME: usize = 64;

/// Lowercase names bucketed by length: a lookup is one index and a few comparisons.
#[derive(Debug, Default)]
struct Names {
    by_len: Vec<Vec<Box<[u8]>>>,
}

impl Names {
    fn insert(&mut self, lower: &str) {
        let n = lower.len();
        if self.by_len.len() <= n {
            self.by_len.resize_with(n + 1, Vec::new);
        }
        if let Some(bucket) = self.by_len.get_mut(n) {
            if !bucket.iter().any(|b| **b == *lower.as_bytes()) {
                bucket.push(lower.as_bytes().into());
            }
        }
    }

    /// Whether `name` (any case) is one of the names.
    fn contains(&self, name: &[u8]) -> bool {
        self.by_len.get(name.len()).is_some_and(|bucket| bucket.iter().any(|b| b.eq_ignore_ascii_case(name)))
    }
}

/// The compiled `egress.credentials` section.
#[derive(Debug, Default)]
pub struct Credentials {
    headers: Names,
    query: Names,
    default: CredentialAction,
    /// False when `egress.credentials.mode` is dry-run.
    enforced: bool,
}

/// The outcome of one scan.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    header: bool,
    query: bool,
}

impl Credentials {
    pub fn compile(doc: Option<&CredentialsDoc>, at: &str, errs: &mut ConfigErrors) -> Credentials {
        let empty = CredentialsDoc::default();
        let doc = doc.unwrap_or(&empty);
        let at = format!("{at}.credentials");
        let mut c = Credentials {
            default: doc.default.unwrap_or_default(),
            enforced: doc.mode.unwrap_or(Mode::Enforce) == Mode::Enforce,
            ..Credentials::default()
        };
        for name in BUILTIN_HEADERS {
            c.headers.insert(name);
        }
        for name in BUILTIN_QUERY_PARAMS {
            c.query.insert(name);
        }
        for (i, name) in doc.headers.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(crate::parse::token::is_tchar) {
                errs.push(
                    format!("{at}.headers[{i}]"),
                    "must be a header name (an RFC 9110 token of at most 64 bytes)",
                );
            } else {
                c.headers.insert(&name.to_ascii_lowercase());
            }
        }
        for (i, name) in doc.query_params.iter().enumerate() {
            let ok = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#' | b'%' | b'+' | b'?'));
            if ok {
                c.query.insert(&name.to_ascii_lowercase());
            } else {
                errs.push(
                    format!("{at}.queryParams[{i}]"),
                    "must be a query parameter name: 1 to 64 printable ASCII characters, none of & = # % + ?",
                );
            }
        }
        c
    }

    /// What a rule that says `credentials` (or nothing) does.
    pub fn action(&self, rule: Option<CredentialAction>) -> CredentialAction {
        rule.unwrap_or(self.default)
    }

    /// Whether `name` is a credential header.
    pub fn is_credential_header(&self, name: &[u8]) -> bool {
        self.headers.contains(name)
    }

    /// Every credential header name, built-in and configured (for log redaction).
    pub fn header_names(&self) -> impl Iterator<Item = &[u8]> {
        self.headers.by_len.iter().flatten().map(|b| &**b)
    }

    /// Add the findings (and mutations) for a request that `rule` admitted, when the rule says
    /// `deny` or `strip`. `enforced`: whether the admitting rule enforces.
    pub fn evaluate(
        &self,
        action: CredentialAction,
        rule: &str,
        enforced: bool,
        req: &RequestView<'_>,
        decision: &mut Decision,
    ) {
        if action == CredentialAction::Allow {
            return;
        }
        let found = self.scan(req);
        let enforced = enforced && self.enforced;
        if found.query {
            decision.findings.push(Finding::reject(ReasonCode::EgressCredentialsInQuery, rule, enforced));
        }
        if !found.header {
            return;
        }
        match action {
            CredentialAction::Deny => {
                decision.findings.push(Finding::reject(ReasonCode::EgressCredentialsNotAllowed, rule, enforced));
            }
            CredentialAction::Strip => {
                decision.findings.push(Finding::new(
                    ReasonCode::EgressCredentialsStripped,
                    rule,
                    enforced,
                    Remedy::Strip,
                ));
                if enforced {
                    self.strip(req, &mut decision.mutations);
                }
            }
            CredentialAction::Allow => {}
        }
    }

    /// One pass over the headers, one over the query.
    fn scan(&self, req: &RequestView<'_>) -> Found {
        let header = req.headers.iter().any(|(name, _)| name.first() != Some(&b':') && self.headers.contains(name));
        Found { header, query: self.query_has_credential(req.path()) }
    }

    fn query_has_credential(&self, target: &[u8]) -> bool {
        // The query starts at the first `?` that comes before any `#`.
        let Some(q) = target.iter().position(|&b| b == b'?' || b == b'#') else { return false };
        if target.get(q) != Some(&b'?') {
            return false;
        }
        let query = target.get(q + 1..).unwrap_or_default();
        let query = query.split(|&b| b == b'#').next().unwrap_or_default();
        query.split(|&b| b == b'&' || b == b';').any(|param| {
            let name = param.split(|&b| b == b'=').next().unwrap_or_default();
            self.query_name_matches(name)
        })
    }

    /// The parameter name, percent-decoded (into a stack buffer), against the names.
    fn query_name_matches(&self, raw: &[u8]) -> bool {
        if !raw.contains(&b'%') {
            return self.query.contains(raw);
        }
        let mut buf = [0u8; MAX_NAME];
        let mut len = 0;
        let mut i = 0;
        while i < raw.len() {
            let b = match (raw.get(i), raw.get(i + 1).and_then(|&h| hex(h)), raw.get(i + 2).and_then(|&l| hex(l))) {
                (Some(b'%'), Some(h), Some(l)) => {
                    i += 3;
                    h * 16 + l
                }
                (Some(&b), _, _) => {
                    i += 1;
                    b
                }
                (None, _, _) => break,
            };
            let Some(slot) = buf.get_mut(len) else { return false };
            *slot = b;
            len += 1;
        }
        buf.get(..len).is_some_and(|name| self.query.contains(name))
    }

    /// A `remove` mutation for every credential header the request carries (once per name).
    fn strip(&self, req: &RequestView<'_>, out: &mut Vec<HeaderMutation>) {
        for &(name, _) in req.headers {
            if name.first() == Some(&b':') || !self.headers.contains(name) {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if !out.iter().any(|m| matches!(m, HeaderMutation::Remove { name } if *name == lower)) {
                out.retain(|m| m.name() != lower.as_slice());
                out.push(HeaderMutation::Remove { name: lower });
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}
