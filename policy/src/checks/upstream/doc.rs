//! The `upstream` section of the policy document.

use serde::Deserialize;

use crate::document::Mode;

/// `upstream`: which SPIFFE IDs the endpoints of a destination may present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamDoc {
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub destinations: Vec<DestinationDoc>,
}

/// `upstream.destinations[i]`: a destination, by Istio cluster name or authority host, and the
/// identities its endpoints may present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationDoc {
    pub id: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `outbound|<port>|<subset>|<host>`; port and subset may be `*` (subset also empty: any),
    /// host may be `*.` and a DNS name.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Authority hosts (`payments.example.com`, `*.prod.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// SPIFFE IDs or patterns (`spiffe://cluster.local/ns/prod/sa/*`).
    #[serde(default)]
    pub identities: Vec<String>,
    /// A plaintext upstream connection is refused (default true).
    #[serde(default = "crate::document::default_true")]
    pub require_mtls: bool,
}
