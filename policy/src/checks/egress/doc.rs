//! The `egress` section of the policy document.

use serde::Deserialize;

use crate::document::Mode;
use crate::matchers::route::PathMatchDoc;

pub use super::credentials::{CredentialAction, CredentialsDoc};

/// `egress`: which external hosts workloads may reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressDoc {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub applies_to: AppliesTo,
    #[serde(default)]
    pub source_identity: Option<SourceIdentity>,
    /// The trust domain of workload identities (`sourceIdentity: workload`).
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub allow: Vec<EgressRuleDoc>,
    /// What counts as a credential, and what rules that say nothing do with it.
    #[serde(default)]
    pub credentials: Option<CredentialsDoc>,
}

/// Which traffic the egress check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AppliesTo {
    /// Listeners Envoy does not mark INBOUND (sidecar outbound).
    #[default]
    Outbound,
    /// Every request and connection (an egress gateway).
    All,
}

/// Where the source identity of an egress request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceIdentity {
    /// The local workload, from Istio's node metadata (outbound sidecar).
    Workload,
    /// The mTLS peer's certificate (egress gateway).
    PeerCertificate,
}

impl SourceIdentity {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceIdentity::Workload => "workload",
            SourceIdentity::PeerCertificate => "peerCertificate",
        }
    }
}

/// `egress.allow[i]`: hosts, and what may be sent to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressRuleDoc {
    pub id: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<u32>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<PathMatchDoc>,
    #[serde(default)]
    pub sources: Vec<String>,
    /// Also when Envoy routes the request to `PassthroughCluster` or `BlackHoleCluster`.
    #[serde(default)]
    pub passthrough: bool,
    /// Also TLS/TCP connections without an SNI, on this rule's ports.
    #[serde(default)]
    pub allow_no_sni: bool,
    /// Whether requests this rule admits may carry credentials (default:
    /// `egress.credentials.default`, else `allow`).
    #[serde(default)]
    pub credentials: Option<CredentialAction>,
}

/// The default trust domain of workload identities.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
