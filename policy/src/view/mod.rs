//! What the filter (or `meshguard eval`) knows about one request or connection: raw bytes as
//! Envoy handed them over, plus the few connection facts the policy [`Needs`]. The request
//! view computes every derived fact (pseudo-headers, the parsed authority, the canonical path,
//! the path's confusions, the XFCC elements) at most once, on first use, with the one reader
//! of its format in [`crate::parse`], and every check reads it from there.

pub mod connection;
pub mod request;
pub mod upstream;

pub use connection::ConnectionView;
pub use request::RequestView;
pub use upstream::UpstreamView;

/// Which connection facts the filter must fetch from Envoy for this policy: each is a host
/// call per request, so the filter asks only for what a check will read. Folded over the
/// compiled checks once, when the policy is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// `connection.mtls` and `connection.uri_san_peer_certificate`.
    pub peer: bool,
    /// `connection.mtls` alone (implied by `peer`).
    pub mtls: bool,
    /// `connection.tls_version`: whether the downstream connection is TLS at all.
    pub tls: bool,
    /// `xds.listener_direction`.
    pub direction: bool,
    /// `xds.cluster_name` (HTTP only), on listeners Envoy does not mark INBOUND...
    pub cluster: bool,
    /// ...and on INBOUND ones too (egress `appliesTo: all`). See [`Needs::cluster_on`].
    pub cluster_inbound: bool,
    /// `xds.node.metadata.NAMESPACE` and `.SERVICE_ACCOUNT` (constant for the proxy).
    pub workload: bool,
    /// The upstream facts of the response phase (`upstream.uri_san_peer_certificate`,
    /// `upstream.tls_version`, `upstream.address`), and the cluster name and authority kept
    /// from the request phase to judge them by.
    pub upstream: bool,
    /// `connection.sha256_peer_certificate_digest`: only when a JWT rule binds tokens to the
    /// peer certificate.
    pub peer_cert_digest: bool,
    /// The current time ([`RequestView::now_unix_secs`]): one clock read per request, only
    /// when a check (JWT) reads it.
    pub clock: bool,
    /// `source.address`, the downstream's address: only for a request that carries
    /// [`EXTERNAL_ADDRESS`] (the hygiene check keeps Envoy's own value of it, which equals
    /// this address at an edge). The filter asks only when the header is there.
    pub source_address: bool,
}

/// `x-envoy-external-address`: the header Envoy sets to the downstream's address on an edge
/// listener (`use_remote_address: true`), and that passes from the client anywhere else.
pub const EXTERNAL_ADDRESS: &[u8] = b"x-envoy-external-address";

impl Needs {
    /// Whether a request on a listener of this direction needs `xds.cluster_name`: a sidecar's
    /// inbound requests do not when the egress check applies to outbound traffic only.
    pub fn cluster_on(&self, direction: request::Direction) -> bool {
        self.cluster && (self.cluster_inbound || direction != request::Direction::Inbound)
    }
}

impl std::ops::BitOr for Needs {
    type Output = Needs;
    fn bitor(self, o: Needs) -> Needs {
        let peer = self.peer || o.peer;
        Needs {
            peer,
            mtls: peer || self.mtls || o.mtls,
            tls: self.tls || o.tls,
            direction: self.direction || o.direction,
            cluster: self.cluster || o.cluster,
            cluster_inbound: self.cluster_inbound || o.cluster_inbound,
            workload: self.workload || o.workload,
            upstream: self.upstream || o.upstream,
            peer_cert_digest: self.peer_cert_digest || o.peer_cert_digest,
            clock: self.clock || o.clock,
            source_address: self.source_address || o.source_address,
        }
    }
}
