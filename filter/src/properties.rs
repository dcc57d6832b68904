//! The Envoy properties the egress check reads, fetched as bytes and decoded without trusting
//! them. Envoy 1.40 serializes a CEL string as its bytes and a CEL int64 as 8 little-endian
//! bytes (`serializeValue` in `source/extensions/common/wasm/context.cc`); a path into a proto
//! message or map is its parts joined with NULs.
//!
//! | property | what | when |
//! |---|---|---|
//! | `xds.listener_direction` | int64: 0 UNSPECIFIED, 1 INBOUND, 2 OUTBOUND (the listener's `traffic_direction`; Istio sets it on every sidecar listener) | per request / connection |
//! | `xds.cluster_name` | the cluster the route picked (HTTP; known at request headers, the HCM resolves the route first) | per request |
//! | `xds.node.metadata.NAMESPACE`, `xds.node.metadata.SERVICE_ACCOUNT` | Istio's node metadata: the sidecar's own workload | once, at configuration |
//! | `connection.requested_server_name` | the SNI `tls_inspector` read | per connection |
//! | `destination.port` | int64: the local port the client connected to (the original destination behind iptables) | per connection |
//! | `plugin_root_id` | the plugin's `root_id` (Istio: the WasmPlugin's `pluginName`) | at configuration |
//! | `upstream.uri_san_peer_certificate` | the first URI SAN of the upstream's certificate | response phase, upstream pinning only |
//! | `upstream.tls_version` | `TLSv1.3` and the like; absent or empty on a plaintext upstream | response phase, upstream pinning only |
//! | `upstream.address` | `ip:port` of the endpoint Envoy connected to | response phase, upstream pinning only |
//! | `response.code_details` | `via_upstream` for an answer from the upstream, else why Envoy answered itself | response phase, only before an upstream finding |

use policy::{Direction, Workload};

use crate::hostcalls;

pub const LISTENER_DIRECTION: &[u8] = b"xds\0listener_direction";
pub const CLUSTER_NAME: &[u8] = b"xds\0cluster_name";
pub const NODE_NAMESPACE: &[u8] = b"xds\0node\0metadata\0NAMESPACE";
pub const NODE_SERVICE_ACCOUNT: &[u8] = b"xds\0node\0metadata\0SERVICE_ACCOUNT";
pub const REQUESTED_SERVER_NAME: &[u8] = b"connection\0requested_server_name";
pub const DESTINATION_PORT: &[u8] = b"destination\0port";
pub const PLUGIN_ROOT_ID: &[u8] = b"plugin_root_id";
pub const UPSTREAM_URI_SAN: &[u8] = b"upstream\0uri_san_peer_certificate";
pub const UPSTREAM_TLS_VERSION: &[u8] = b"upstream\0tls_version";
pub const UPSTREAM_ADDRESS: &[u8] = b"upstream\0address";
pub const RESPONSE_CODE_DETAILS: &[u8] = b"response\0code_details";

/// A property's bytes; host errors and absence alike are `None`.
fn get(path: &[u8]) -> Option<Vec<u8>> {
    hostcalls::property(path).ok().flatten()
}

/// A CEL int64 as Envoy serializes it.
pub fn decode_int64(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_le_bytes)
}

/// `envoy.config.core.v3.TrafficDirection`.
pub fn decode_direction(bytes: Option<&[u8]>) -> Direction {
    match bytes.and_then(decode_int64) {
        Some(1) => Direction::Inbound,
        Some(2) => Direction::Outbound,
        _ => Direction::Unspecified,
    }
}

pub fn decode_port(bytes: &[u8]) -> Option<u16> {
    decode_int64(bytes).and_then(|p| u16::try_from(p).ok()).filter(|&p| p > 0)
}

pub fn direction() -> Direction {
    decode_direction(get(LISTENER_DIRECTION).as_deref())
}

pub fn cluster_name() -> Option<Vec<u8>> {
    get(CLUSTER_NAME).filter(|c| !c.is_empty())
}

pub fn requested_server_name() -> Option<Vec<u8>> {
    get(REQUESTED_SERVER_NAME)
}

pub fn destination_port() -> Option<u16> {
    get(DESTINATION_PORT).as_deref().and_then(decode_port)
}

pub fn root_id() -> Option<Vec<u8>> {
    get(PLUGIN_ROOT_ID)
}

/// The upstream connection's identity facts (response phase): `(uri_san, tls_version)`, each
/// absent when empty. Two host calls; on a plaintext upstream the SAN is not asked.
pub fn upstream() -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let tls_version = nonempty(get(UPSTREAM_TLS_VERSION));
    let uri_san = if tls_version.is_some() { nonempty(get(UPSTREAM_URI_SAN)) } else { None };
    (uri_san, tls_version)
}

/// `upstream.address`: only the decision log reads it, so it is asked only for a finding.
pub fn upstream_address() -> Option<Vec<u8>> {
    nonempty(get(UPSTREAM_ADDRESS))
}

fn nonempty(v: Option<Vec<u8>>) -> Option<Vec<u8>> {
    v.filter(|v| !v.is_empty())
}

/// Whether the response being encoded came from the upstream (`response.code_details` is
/// `via_upstream`), not from Envoy itself (no healthy upstream, connect failure, timeout).
/// When the host does not say, it is taken to be the upstream's: fail closed.
pub fn response_from_upstream() -> bool {
    get(RESPONSE_CODE_DETAILS).is_none_or(|d| d.is_empty() || d == b"via_upstream")
}

/// The local workload from Istio's node metadata, owned (it is constant for the proxy, so the
/// root context reads it once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadFacts {
    pub namespace: Option<Vec<u8>>,
    pub service_account: Option<Vec<u8>>,
}

impl WorkloadFacts {
    pub fn fetch() -> Self {
        let nonempty = |v: Option<Vec<u8>>| v.filter(|v| !v.is_empty());
        WorkloadFacts { namespace: nonempty(get(NODE_NAMESPACE)), service_account: nonempty(get(NODE_SERVICE_ACCOUNT)) }
    }

    pub fn is_known(&self) -> bool {
        self.namespace.is_some() && self.service_account.is_some()
    }

    pub fn view(&self) -> Workload<'_> {
        Workload { namespace: self.namespace.as_deref(), service_account: self.service_account.as_deref() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_and_direction() {
        assert_eq!(decode_int64(&2i64.to_le_bytes()), Some(2));
        assert_eq!(decode_int64(&[2, 0, 0, 0]), None);
        assert_eq!(decode_direction(Some(&1i64.to_le_bytes())), Direction::Inbound);
        assert_eq!(decode_direction(Some(&2i64.to_le_bytes())), Direction::Outbound);
        assert_eq!(decode_direction(Some(&0i64.to_le_bytes())), Direction::Unspecified);
        assert_eq!(decode_direction(Some(b"OUTBOUND")), Direction::Unspecified);
        assert_eq!(decode_direction(None), Direction::Unspecified);
        assert_eq!(decode_port(&443i64.to_le_bytes()), Some(443));
        assert_eq!(decode_port(&0i64.to_le_bytes()), None);
        assert_eq!(decode_port(&70000i64.to_le_bytes()), None);
        assert_eq!(decode_port(&(-1i64).to_le_bytes()), None);
    }
}
