//! The `identity` section of the policy document.

use serde::Deserialize;

use crate::document::{default_true, Action, Mode};
use crate::matchers::route::RouteMatchDoc;

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
