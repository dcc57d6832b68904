//! The `hygiene` section of a policy document, as operators write it.
//!
//! ```yaml
//! hygiene:
//!   preset: sidecar            # sidecar | gateway-strict | audit: the defaults of every guard
//!   mode: enforce              # the whole check; dry-run logs would_deny and lets requests through
//!   guards:                    # any guard, overridden field by field
//!     underscoreHeaders: { action: reject }
//!     doubleSlash: { action: reject, mode: dry-run }
//!     singletonHeaders: { headers: [x-tenant-id] }
//!     pathLength: { max: 2048 }
//!     websocket: { enabled: false }
//! ```
//!
//! Every guard takes `enabled`, `action` (`reject`, `strip` where the guard can strip, `log`)
//! and `mode` (`enforce` or `dry-run`); some take parameters of their own. Unknown guard names
//! and unknown fields are errors.

use serde::Deserialize;

use crate::document::Mode;

/// Where a platform team starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// In-mesh traffic behind an Istio sidecar: no false positives on ordinary clients; trust
    /// headers from mTLS peers (other sidecars, gateways) are believed, from anyone else
    /// stripped.
    #[default]
    Sidecar,
    /// Edge traffic (an ingress gateway): every guard rejects or strips, nothing is trusted.
    GatewayStrict,
    /// Every guard of `gateway-strict` in dry-run: see what would be refused, refuse nothing.
    Audit,
}

impl Preset {
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Sidecar => "sidecar",
            Preset::GatewayStrict => "gateway-strict",
            Preset::Audit => "audit",
        }
    }
}

/// What an enforced guard does to a request that trips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardAction {
    /// Refuse the request (the policy's `denyResponse`).
    Reject,
    /// Remove (or, for XFCC, rewrite) the offending headers, clear the route cache, go on.
    Strip,
    /// Let the request through unchanged; log and count the finding.
    Log,
}

impl GuardAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardAction::Reject => "reject",
            GuardAction::Strip => "strip",
            GuardAction::Log => "log",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HygieneDoc {
    #[serde(default)]
    pub preset: Preset,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub guards: GuardsDoc,
}

/// The fields every guard takes (`None`: the preset's value).
#[derive(Debug, Clone, Copy, Default)]
pub struct CommonDoc {
    pub enabled: Option<bool>,
    pub action: Option<GuardAction>,
    pub mode: Option<Mode>,
}

macro_rules! guard_doc {
    ($(#[$doc:meta])* $name:ident { $( $(#[$m:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            #[serde(default)]
            pub enabled: Option<bool>,
            #[serde(default)]
            pub action: Option<GuardAction>,
            #[serde(default)]
            pub mode: Option<Mode>,
            $( $(#[$m])* #[serde(default)] pub $field: $ty, )*
        }

        impl $name {
            pub fn common(&self) -> CommonDoc {
                CommonDoc { enabled: self.enabled, action: self.action, mode: self.mode }
            }
        }
    };
}

guard_doc!(
    /// A guard with no parameters of its own.
    GuardDoc {}
);
guard_doc!(
    /// A limit.
    LimitDoc { max: Option<u64> }
);
guard_doc!(
    /// `bodyOnGet` (the methods that may not carry a body) and `methodAllowlist` (the methods
    /// allowed at all).
    MethodsDoc { methods: Option<Vec<String>> }
);
guard_doc!(
    /// `riskyMethods`: which of TRACE, TRACK and CONNECT are allowed after all.
    RiskyMethodsDoc { allow: Option<Vec<String>> }
);
guard_doc!(
    /// `singletonHeaders`: headers that must appear once, on top of the built-in ones; with
    /// `identityHeaders`, the built-in list of user, tenant and API-key headers too.
    SingletonHeadersDoc { headers: Option<Vec<String>>, identity_headers: Option<bool> }
);
guard_doc!(
    /// `scheme`: with `trustForwardedProto`, `:scheme https` on a plaintext connection passes
    /// when `x-forwarded-proto` says `https` (Envoy copies that header into `:scheme` on
    /// HTTP/1.1: an ingress controller that terminated TLS in front of a PERMISSIVE pod).
    SchemeDoc { trust_forwarded_proto: Option<bool> }
);
guard_doc!(
    /// `nonAsciiValues`: with `allowUtf8`, valid UTF-8 passes and only other bytes trip it.
    NonAsciiDoc { allow_utf8: Option<bool> }
);
guard_doc!(
    /// `websocket`: whether a handshake must carry a valid `sec-websocket-key`.
    WebsocketDoc { require_key: Option<bool> }
);
guard_doc!(
    /// `expect`: whether `Expect: 100-continue` must come with a body.
    ExpectDoc { require_body: Option<bool> }
);
guard_doc!(
    /// A trust-header guard: with `trustMtlsPeers`, the header is believed when it comes from
    /// an mTLS peer (another sidecar or a gateway) and only checked for everyone else.
    TrustDoc { trust_mtls_peers: Option<bool> }
);
guard_doc!(
    /// `envoyHeaders`: `allow` lists `x-envoy-*` headers that may arrive anyway.
    EnvoyHeadersDoc { trust_mtls_peers: Option<bool>, allow: Option<Vec<String>> }
);
guard_doc!(
    /// `xfcc`: SPIFFE ID patterns of mTLS peers (a gateway, a trusted proxy) whose forwarded
    /// XFCC elements are kept.
    XfccDoc { trust_forwarded_from: Option<Vec<String>> }
);

/// Every guard, by name. Absent: the preset's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GuardsDoc {
    // Limits.
    #[serde(default)]
    pub header_count: Option<LimitDoc>,
    #[serde(default)]
    pub header_bytes: Option<LimitDoc>,
    #[serde(default)]
    pub header_length: Option<LimitDoc>,
    #[serde(default)]
    pub path_length: Option<LimitDoc>,
    #[serde(default)]
    pub query_params: Option<LimitDoc>,
    // Message framing.
    #[serde(default)]
    pub content_length: Option<GuardDoc>,
    #[serde(default)]
    pub transfer_encoding: Option<GuardDoc>,
    #[serde(default)]
    pub te_header: Option<GuardDoc>,
    #[serde(default)]
    pub body_on_get: Option<MethodsDoc>,
    #[serde(default)]
    pub body_on_upgrade: Option<GuardDoc>,
    // Header names and values.
    #[serde(default)]
    pub underscore_headers: Option<GuardDoc>,
    #[serde(default)]
    pub header_names: Option<GuardDoc>,
    #[serde(default)]
    pub control_bytes: Option<GuardDoc>,
    #[serde(default)]
    pub non_ascii_values: Option<NonAsciiDoc>,
    #[serde(default)]
    pub value_whitespace: Option<GuardDoc>,
    #[serde(default)]
    pub singleton_headers: Option<SingletonHeadersDoc>,
    #[serde(default)]
    pub injected_values: Option<GuardDoc>,
    // Authority and scheme.
    #[serde(default)]
    pub authority: Option<GuardDoc>,
    #[serde(default)]
    pub scheme: Option<SchemeDoc>,
    // Methods.
    #[serde(default)]
    pub method_token: Option<GuardDoc>,
    #[serde(default)]
    pub method_allowlist: Option<MethodsDoc>,
    #[serde(default)]
    pub risky_methods: Option<RiskyMethodsDoc>,
    #[serde(default)]
    pub method_override: Option<GuardDoc>,
    // Upgrades and Expect.
    #[serde(default)]
    pub h2c_upgrade: Option<GuardDoc>,
    #[serde(default)]
    pub websocket: Option<WebsocketDoc>,
    #[serde(default)]
    pub expect: Option<ExpectDoc>,
    // Path confusion.
    #[serde(default)]
    pub encoded_slash: Option<GuardDoc>,
    #[serde(default)]
    pub dot_segments: Option<GuardDoc>,
    #[serde(default)]
    pub double_slash: Option<GuardDoc>,
    #[serde(default)]
    pub path_parameters: Option<GuardDoc>,
    #[serde(default)]
    pub double_encoding: Option<GuardDoc>,
    #[serde(default)]
    pub encoded_control: Option<GuardDoc>,
    #[serde(default)]
    pub invalid_utf8: Option<GuardDoc>,
    #[serde(default)]
    pub encoded_delimiters: Option<GuardDoc>,
    #[serde(default)]
    pub path_characters: Option<GuardDoc>,
    // Trust headers.
    #[serde(default)]
    pub envoy_headers: Option<EnvoyHeadersDoc>,
    #[serde(default)]
    pub peer_metadata: Option<GuardDoc>,
    #[serde(default)]
    pub xfcc: Option<XfccDoc>,
    #[serde(default)]
    pub forwarded_routing: Option<TrustDoc>,
    #[serde(default)]
    pub url_override: Option<TrustDoc>,
    #[serde(default)]
    pub client_ip: Option<TrustDoc>,
    #[serde(default)]
    pub proxy_authorization: Option<TrustDoc>,
    #[serde(default)]
    pub request_id: Option<TrustDoc>,
    #[serde(default)]
    pub forwarded_for: Option<GuardDoc>,
    #[serde(default)]
    pub trace_context: Option<GuardDoc>,
    #[serde(default)]
    pub trace_forcing: Option<GuardDoc>,
}
