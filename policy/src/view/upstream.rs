//! What the filter (or `meshguard eval`) knows about the upstream connection, in the response
//! phase: the first moment it exists. Raw bytes as Envoy hands them over, never assumed to be
//! UTF-8.
//!
//! | field | Envoy property | what |
//! |---|---|---|
//! | `cluster` | `xds.cluster_name` (kept from the request phase) | the cluster the route picked |
//! | `authority` | `:authority` (kept from the request phase) | the host the application asked for |
//! | `uri_san` | `upstream.uri_san_peer_certificate` | the first URI SAN of the upstream's certificate |
//! | `tls_version` | `upstream.tls_version` | `TLSv1.3` and the like; absent or empty on plaintext |
//! | `address` | `upstream.address` | `ip:port` of the endpoint Envoy connected to |

/// The upstream connection of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamView<'a> {
    pub cluster: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    pub uri_san: Option<&'a [u8]>,
    pub tls_version: Option<&'a [u8]>,
    pub address: Option<&'a [u8]>,
}

impl UpstreamView<'_> {
    /// Whether the upstream connection is TLS at all.
    pub fn tls(&self) -> bool {
        self.tls_version.is_some_and(|v| !v.is_empty())
    }
}

/// The upstream facts in owned memory, in the JSON shape the decision log records and
/// `meshguard eval --request` reads (the request's `upstream` object):
/// `{"uriSan": string|null, "tlsVersion": string|null, "address": string|null}`; a response-phase
/// decision line also has `cluster` and `authority` (a request file takes them from the
/// request's `cluster` and `authority`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedUpstream {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub uri_san: Option<String>,
    #[serde(default)]
    pub tls_version: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

impl OwnedUpstream {
    pub fn view(&self) -> UpstreamView<'_> {
        fn b(s: &Option<String>) -> Option<&[u8]> {
            s.as_deref().map(str::as_bytes)
        }
        UpstreamView {
            cluster: b(&self.cluster),
            authority: b(&self.authority),
            uri_san: b(&self.uri_san),
            tls_version: b(&self.tls_version),
            address: b(&self.address),
        }
    }
}
