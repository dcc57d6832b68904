//! The `jwt` section of the policy document.
//!
//! ```yaml
//! jwt:
//!   mode: enforce                  # or dry-run (also per rule)
//!   providers:
//!     - id: corp
//!       issuer: https://idp.example.com        # exact match on `iss`; one provider per issuer
//!       audiences: [api.example.com]           # `aud` (string or array) must contain one
//!       algorithms: [RS256, ES256]             # optional; default: every algorithm the keys allow
//!       jwks: { keys: [ ...RFC 7517 public JWKs: RSA, EC P-256/P-384, OKP Ed25519... ] }
//!       # or: jwks: { remote: { cluster: "outbound|443||idp.example.com", path: /.well-known/jwks.json, refreshSeconds: 600 } }
//!   rules:                         # the first rule whose `match` covers the request decides
//!     - id: api-needs-token
//!       match: { hosts: [api.example.com], paths: [{ prefix: /api }], methods: [GET] }
//!       require: { providers: [corp] }         # a token is required and must verify with one of them
//!       # optional: true                       # or: verify a token if there is one, never require one
//!       claims: [{ name: scope, contains: items:write }, { name: org.id, equals: "42" }]
//!       bind:
//!         certificate: ifPresent               # RFC 8705 cnf.x5t#S256: required | ifPresent (default) | ignore
//!         peerIdentity: { claim: azp }         # the claim must name the mTLS peer's SPIFFE ID
//!   defaultAction: allow           # routes no rule covers: allow, or deny (jwt_no_matching_rule)
//!   tokenSources:                  # default: [{ header: authorization, prefix: "Bearer " }]
//!     - { header: authorization, prefix: "Bearer " }
//!     - { queryParam: access_token }
//!   clockSkewSeconds: 60           # tolerance on exp, nbf and iat
//!   maxTokenBytes: 8192            # longer tokens are refused before any decoding
//!   cacheEntries: 256              # verified-token cache per VM (0: no cache)
//!   forwardClaims: [{ claim: sub, header: x-jwt-sub }]  # always removed from the client's request first
//!   stripToken: false              # remove the token before the upstream
//!   denyStatus: 401                # status of a JWT deny
//! ```

use serde::Deserialize;

use crate::document::{Action, Mode};
use crate::matchers::route::RouteMatchDoc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtDoc {
    #[serde(default)]
    pub mode: Option<Mode>,
    pub providers: Vec<ProviderDoc>,
    #[serde(default)]
    pub rules: Vec<JwtRuleDoc>,
    /// Routes no rule covers.
    #[serde(default)]
    pub default_action: Action,
    /// Where tokens are read from. Every source is read on every covered request: a token in
    /// two places (or two Authorization headers) is a deny, never a choice.
    #[serde(default = "default_sources")]
    pub token_sources: Vec<TokenSourceDoc>,
    /// Tolerance, in seconds, on `exp`, `nbf` and `iat`.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Tokens longer than this (bytes, prefix excluded) are refused before they are decoded.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Verified tokens remembered per VM (0 turns the cache off).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Claims copied into request headers once the token is verified. These headers are
    /// removed from every request first, so a client can never set them.
    #[serde(default)]
    pub forward_claims: Vec<ForwardClaimDoc>,
    /// Remove the token (header, or query parameter) before the request goes upstream.
    #[serde(default)]
    pub strip_token: bool,
    /// HTTP status of a JWT deny (401 by default, as RFC 6750 has it).
    #[serde(default = "default_deny_status")]
    pub deny_status: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderDoc {
    pub id: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    pub jwks: JwksDoc,
}

/// Exactly one of `keys` (an inline RFC 7517 JWK Set) or `remote`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwksDoc {
    /// Kept as JSON objects: JWKs carry members this schema does not name (`use`, `x5c`...),
    /// and [`super::keys`] reports each problem with its JSON path.
    #[serde(default)]
    pub keys: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default)]
    pub remote: Option<RemoteJwksDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteJwksDoc {
    /// The Envoy cluster the JWKS is fetched through.
    pub cluster: String,
    pub path: String,
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// The `:authority` of the fetch (default: the host of an Istio cluster name
    /// `outbound|443||idp.example.com`, else the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRuleDoc {
    pub id: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, rename = "match")]
    pub route: RouteMatchDoc,
    /// A token is required and must verify with one of these providers.
    #[serde(default)]
    pub require: Option<RequireDoc>,
    /// Verify a token when there is one (with `require.providers` if given, else any
    /// provider); never require one.
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub claims: Vec<ClaimDoc>,
    #[serde(default)]
    pub bind: BindDoc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequireDoc {
    pub providers: Vec<String>,
}

/// A claim requirement. `name` may be nested (`realm.roles`). Exactly one of `contains` (a
/// string claim equal to it, a space-separated string claim listing it, or an array claim
/// with it as an element) or `equals` (a string claim equal to it; a number or boolean
/// claim whose JSON text is it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimDoc {
    pub name: String,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
}

/// Binding a token to the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindDoc {
    #[serde(default)]
    pub certificate: CertificateBinding,
    #[serde(default)]
    pub peer_identity: Option<PeerIdentityBindingDoc>,
}

/// RFC 8705 certificate-bound tokens: `cnf` `x5t#S256` against the SHA-256 digest of the
/// peer's mTLS certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CertificateBinding {
    /// The token must carry `cnf.x5t#S256` and it must match.
    Required,
    /// A token that carries `cnf.x5t#S256` must match; a token without it passes.
    #[default]
    IfPresent,
    /// `cnf` is not looked at (a proxy in front terminates the client's TLS).
    Ignore,
}

/// The claim `claim` (for example `azp`, `client_id`, `sub`) must equal the peer's SPIFFE ID
/// or, with `patterns: true`, may also be a SPIFFE-ID pattern (`spiffe://td/ns/web/sa/*`,
/// never `*`) the peer's ID matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerIdentityBindingDoc {
    pub claim: String,
    #[serde(default)]
    pub patterns: bool,
}

/// One place a token is read from: exactly one of `header` or `queryParam`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSourceDoc {
    #[serde(default)]
    pub header: Option<String>,
    /// Stripped from the header value, compared case-insensitively (`Bearer `). Values
    /// without it are not tokens of this source.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub query_param: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardClaimDoc {
    pub claim: String,
    pub header: String,
}

fn default_sources() -> Vec<TokenSourceDoc> {
    vec![TokenSourceDoc { header: Some("authorization".into()), prefix: Some("Bearer ".into()), query_param: None }]
}
fn default_skew() -> u64 {
    60
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_cache_entries() -> usize {
    256
}
fn default_deny_status() -> u16 {
    401
}
fn default_refresh() -> u64 {
    600
}
