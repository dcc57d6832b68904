//! What the filter (or `meshguard eval`) knows about one request: borrowed bytes, never
//! assumed to be UTF-8.

/// Which way the request flows through this Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Traffic arriving for the local workload (sidecar inbound, gateways).
    #[default]
    Inbound,
    /// Traffic leaving the local workload (sidecar outbound, egress).
    Outbound,
    /// The listener does not say (Envoy's `xds.listener_direction` is `UNSPECIFIED` or
    /// missing).
    Unspecified,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Unspecified => "unspecified",
        }
    }
}

/// The downstream connection as Envoy describes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    /// `connection.mtls`: the downstream presented a certificate that Envoy validated.
    pub mtls: bool,
    /// `connection.uri_san_peer_certificate`: the (first) URI SAN of that certificate.
    pub uri_san: Option<&'a [u8]>,
}

/// The local workload as Istio describes it in Envoy's node metadata
/// (`xds.node.metadata.NAMESPACE` and `.SERVICE_ACCOUNT`): on an outbound sidecar, the
/// identity of the workload that sends the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workload<'a> {
    pub namespace: Option<&'a [u8]>,
    pub service_account: Option<&'a [u8]>,
}

/// One HTTP request as raw bytes. `headers` holds every header pair in the order Envoy has them,
/// pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) included; the accessors below
/// pick the pseudo-headers out.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub peer: Peer<'a>,
    pub direction: Direction,
    /// `xds.cluster_name`: the upstream cluster the route picked (Istio:
    /// `outbound|443||api.example.com`, `PassthroughCluster`, `BlackHoleCluster`), when known.
    pub cluster: Option<&'a [u8]>,
    /// The local workload (see [`Workload`]), when the policy needs it.
    pub workload: Workload<'a>,
}

impl<'a> RequestView<'a> {
    pub fn new(headers: &'a [(&'a [u8], &'a [u8])], peer: Peer<'a>, direction: Direction) -> Self {
        Self { headers, peer, direction, cluster: None, workload: Workload::default() }
    }

    /// The same view with the upstream cluster's name.
    pub fn with_cluster(mut self, cluster: Option<&'a [u8]>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The same view with the local workload.
    pub fn with_workload(mut self, workload: Workload<'a>) -> Self {
        self.workload = workload;
        self
    }

    /// The first value of the header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
    }

    /// Every value of the header named `name`, in order.
    pub fn header_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
    }

    pub fn method(&self) -> &'a [u8] {
        self.header(":method").unwrap_or_default()
    }
    pub fn path(&self) -> &'a [u8] {
        self.header(":path").unwrap_or_default()
    }
    pub fn authority(&self) -> &'a [u8] {
        self.header(":authority").or_else(|| self.header("host")).unwrap_or_default()
    }
    pub fn scheme(&self) -> &'a [u8] {
        self.header(":scheme").unwrap_or_default()
    }
    pub fn request_id(&self) -> Option<&'a [u8]> {
        self.header("x-request-id")
    }
}

/// A request held in owned memory, in the JSON shape the decision log records and
/// `meshguard eval --request` reads:
/// `{"method", "path", "authority", "scheme", "headers": [[name, value], ...],
///   "peer": {"mtls": bool, "uriSan": string|null}, "direction": "inbound"|"outbound"|"unspecified",
///   "cluster": string|null, "workload": {"namespace": string|null, "serviceAccount": string|null}}`
/// (`cluster` and `workload` optional).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub authority: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub peer: OwnedPeer,
    #[serde(default)]
    pub direction: OwnedDirection,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub workload: OwnedWorkload,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedWorkload {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
}

impl OwnedWorkload {
    pub fn view(&self) -> Workload<'_> {
        Workload {
            namespace: self.namespace.as_deref().map(str::as_bytes),
            service_account: self.service_account.as_deref().map(str::as_bytes),
        }
    }
}

fn default_scheme() -> String {
    "http".to_string()
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedPeer {
    #[serde(default)]
    pub mtls: bool,
    #[serde(default)]
    pub uri_san: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnedDirection {
    #[default]
    Inbound,
    Outbound,
    Unspecified,
}

impl OwnedDirection {
    pub fn view(self) -> Direction {
        match self {
            OwnedDirection::Inbound => Direction::Inbound,
            OwnedDirection::Outbound => Direction::Outbound,
            OwnedDirection::Unspecified => Direction::Unspecified,
        }
    }
}

impl OwnedRequest {
    /// Every header pair, pseudo-headers first, as the filter sees them in Envoy.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        let mut pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", self.method.as_bytes()),
            (b":path", self.path.as_bytes()),
            (b":authority", self.authority.as_bytes()),
            (b":scheme", self.scheme.as_bytes()),
        ];
        pairs.extend(self.headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        pairs
    }

    /// A view over this request and the pairs from [`OwnedRequest::pairs`].
    pub fn view<'a>(&'a self, pairs: &'a [(&'a [u8], &'a [u8])]) -> RequestView<'a> {
        RequestView {
            headers: pairs,
            peer: Peer { mtls: self.peer.mtls, uri_san: self.peer.uri_san.as_deref().map(str::as_bytes) },
            direction: self.direction.view(),
            cluster: self.cluster.as_deref().map(str::as_bytes),
            workload: self.workload.view(),
        }
    }
}
