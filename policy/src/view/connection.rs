//! What the network filter (or `meshguard eval --connection`) knows about one TCP connection:
//! the TLS server name Envoy's `tls_inspector` read from the ClientHello, and the connection
//! facts the egress check needs. Bytes, never assumed to be UTF-8.

use crate::view::request::{Direction, OwnedDirection, OwnedPeer, OwnedWorkload, Peer, Workload};

/// One downstream connection, seen when it opens (before any byte is forwarded).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionView<'a> {
    /// `connection.requested_server_name`: the SNI, `None` (or empty) when the client sent
    /// none (plain TCP, or TLS without a server name).
    pub sni: Option<&'a [u8]>,
    /// `destination.port`: the port the client connected to (on an outbound sidecar, the
    /// original destination port).
    pub destination_port: Option<u16>,
    pub peer: Peer<'a>,
    pub direction: Direction,
    pub workload: Workload<'a>,
}

impl<'a> ConnectionView<'a> {
    /// The SNI, when there is a non-empty one.
    pub fn sni(&self) -> Option<&'a [u8]> {
        self.sni.filter(|s| !s.is_empty())
    }
}

/// A connection in owned memory, in the JSON shape the decision log records (under
/// `"connection"`) and `meshguard eval --connection` reads:
/// `{"sni": string|null, "destinationPort": number|null, "peer": {...}, "direction": ...,
///   "workload": {...}}`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedConnection {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub destination_port: Option<u16>,
    #[serde(default)]
    pub peer: OwnedPeer,
    #[serde(default)]
    pub direction: OwnedDirection,
    #[serde(default)]
    pub workload: OwnedWorkload,
}

impl OwnedConnection {
    pub fn view(&self) -> ConnectionView<'_> {
        ConnectionView {
            sni: self.sni.as_deref().map(str::as_bytes),
            destination_port: self.destination_port,
            peer: Peer { mtls: self.peer.mtls, uri_san: self.peer.uri_san.as_deref().map(str::as_bytes) },
            direction: self.direction.view(),
            workload: self.workload.view(),
        }
    }
}
