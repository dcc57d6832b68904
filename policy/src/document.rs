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
//! ```

use serde::Deserialize;

pub use crate::checks::egress::EgressDoc;

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
    pub identity: Option<IdentityDoc>,
    #[serde(default)]
    pub egress: Option<EgressDoc>,
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
pub enum IdentitySource {
    /// The certificate the downstream presented on this connection (`connection.*`).
    #[default]
    PeerCertificate,
    /// The last element of `x-forwarded-client-cert`, the one the local Envoy appended. Only
    /// on an mTLS connection: for any other peer Envoy appends nothing, so every element
    /// (the last included) is the client's own, and the peer counts as having no identity.
    Xfcc,
}

/// Which listeners the identity check runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityAppliesTo {
    /// Every request, whatever the listener's direction: nothing a control plane writes into
    /// the listener can switch the check off.
    #[default]
    All,
    /// Every request except those on listeners Envoy marks OUTBOUND (`xds.listener_direction`),
    /// where the downstream is the local application and has no peer identity. For a policy
    /// that also carries an egress check for a sidecar's outbound side.
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityDoc {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default = "default_true")]
    pub require_peer_identity: bool,
    #[serde(default)]
    pub trust_domains: Vec<String>,
    #[serde(default)]
    pub source: IdentitySource,
    #[serde(default)]
    pub applies_to: IdentityAppliesTo,
    #[serde(default)]
    pub default_action: Action,
    #[serde(default)]
    pub rules: Vec<IdentityRuleDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityRuleDoc {
    pub id: String,
    pub action: Action,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, rename = "match")]
    pub route: RouteMatchDoc,
    pub principals: Vec<String>,
}

/// Which requests a rule is about. Every listed dimension must match; an empty list matches
/// everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteMatchDoc {
    /// `api.example.com` (exact, port ignored) or `*.example.com` (one or more labels under it).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<PathMatchDoc>,
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Exactly one of `exact`, `prefix` (segment-aware: `/api` matches `/api` and `/api/x`, not
/// `/apix`; a prefix ending in `/` is a plain prefix) or `regex` (regex-lite syntax, anchored by
/// the author). Always matched against the canonical path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathMatchDoc {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
}

fn default_status() -> u16 {
    403
}
fn default_message() -> String {
    "access denied".to_string()
}
fn default_true() -> bool {
    true
}

/// Deserialize a document, naming the JSON path of the first structural error (wrong type,
/// unknown or missing field).
pub fn parse(value: serde_json::Value) -> Result<PolicyDocument, crate::error::ConfigErrors> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let mut errs = crate::error::ConfigErrors::default();
        errs.push(path, e.into_inner().to_string());
        errs
    })
}
