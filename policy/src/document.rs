//! The policy document as operators write it (JSON in the plugin configuration, YAML or JSON
//! for the command line). Unknown fields are errors; semantic checks happen when the document
//! is compiled (see `Policy::from_json`).
//!
//! ```yaml
//! version: 1
//! mode: enforce                # or dry-run: nothing is blocked, would-denies are logged
//! denyResponse: { status: 403, message: access denied, includeReasonCode: true }
//! decisionLog: { allowSampleRate: 0.0, redactHeaders: [x-api-key], includeHeaders: true }
//! hygiene:                     # request-hygiene guards, see crate::checks::hygiene
//!   preset: sidecar            # or gateway-strict, audit
//!   guards: { doubleSlash: { action: reject } }
//! identity:
//!   mode: enforce
//!   requirePeerIdentity: true
//!   trustDomains: [cluster.local]
//!   source: peerCertificate    # or xfcc (only behind a proxy you trust)
//!   appliesTo: all               # or inbound: skip listeners Envoy marks OUTBOUND
//!   defaultAction: allow       # for routes no rule covers
//!   rules:
//!     - id: web-reads-api
//!       action: allow
//!       match: { hosts: [api.default.svc], paths: [{prefix: /v1/}], methods: [GET] }
//!       principals: ["spiffe://cluster.local/ns/web/sa/*"]
//! egress:                      # see crate::checks::egress
//!   mode: enforce
//!   appliesTo: outbound          # or all (egress gateway)
//!   sourceIdentity: workload     # or peerCertificate
//!   allow:
//!     - id: payments
//!       hosts: [api.stripe.com, "*.stripe.com"]
//!       ports: [443]
//!       methods: [GET, POST]
//!       paths: [{prefix: /v1/}]
//!       sources: ["spiffe://cluster.local/ns/payments/sa/*"]
//! jwt:                         # see crate::checks::jwt::doc
//!   providers: [{ id: corp, issuer: https://idp.example.com, audiences: [api], jwks: { keys: [...] } }]
//!   rules: [{ id: api, match: { paths: [{ prefix: /api }] }, require: { providers: [corp] } }]
//! upstream:                    # see crate::checks::upstream (response phase)
//!   mode: enforce
//!   destinations:
//!     - id: payments
//!       clusters: ["outbound|8080||payments.prod.svc.cluster.local"]
//!       hosts: [payments.prod.svc.cluster.local]
//!       identities: ["spiffe://cluster.local/ns/prod/sa/payments"]
//!       requireMtls: true
//! ```

use serde::Deserialize;

/// The policy schema version this build understands.
pub const VERSION: u64 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDocument {
    pub version: u64,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub deny_response: DenyResponseDoc,
    #[serde(default)]
    pub decision_log: DecisionLogDoc,
    /// Request-hygiene guards (see [`crate::checks::hygiene`]); they run before every other check.
    #[serde(default)]
    pub hygiene: Option<crate::checks::hygiene::doc::HygieneDoc>,
    #[serde(default)]
    pub identity: Option<crate::checks::identity::doc::IdentityDoc>,
    #[serde(default)]
    pub egress: Option<crate::checks::egress::doc::EgressDoc>,
    /// JWT request authentication (see [`crate::checks::jwt`]); runs after egress.
    #[serde(default)]
    pub jwt: Option<crate::checks::jwt::doc::JwtDoc>,
    /// Upstream identity pinning (see [`crate::checks::upstream`]); decided in the response
    /// phase.
    #[serde(default)]
    pub upstream: Option<crate::checks::upstream::doc::UpstreamDoc>,
}

/// Enforce, or log what would have been denied and let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DenyResponseDoc {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default = "default_message")]
    pub message: String,
    #[serde(default = "default_true")]
    pub include_reason_code: bool,
}

impl Default for DenyResponseDoc {
    fn default() -> Self {
        Self { status: default_status(), message: default_message(), include_reason_code: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecisionLogDoc {
    /// Fraction (0 to 1) of allowed requests that are logged too; denies and would-denies are
    /// always logged. Sampling is by a hash of the request id, so it is reproducible.
    #[serde(default)]
    pub allow_sample_rate: f64,
    /// Log the request's headers (secrets redacted) so that the line can be replayed.
    #[serde(default = "default_true")]
    pub include_headers: bool,
    /// Headers whose values are redacted in addition to the built-in list.
    #[serde(default)]
    pub redact_headers: Vec<String>,
}

impl Default for DecisionLogDoc {
    fn default() -> Self {
        Self { allow_sample_rate: 0.0, include_headers: true, redact_headers: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

fn default_status() -> u16 {
    403
}
fn default_message() -> String {
    "access denied".to_string()
}
pub(crate) fn default_true() -> bool {
    true
}

/// Deserialize a document, naming the JSON path of the first structural error (wrong type,
/// unknown or missing field): see [`crate::doc_de`].
pub fn parse(value: serde_json::Value) -> Result<PolicyDocument, crate::error::ConfigErrors> {
    crate::doc_de::from_value(&value).map_err(|(path, e)| {
        let mut errs = crate::error::ConfigErrors::default();
        errs.push(path, e.to_string());
        errs
    })
}
