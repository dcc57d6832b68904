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
    /// The request headers ended the stream: no body follows (Envoy's `end_of_stream` in
    /// `on_http_request_headers`). False when a body follows, whatever its framing (Envoy
    /// removes `transfer-encoding` before filters run, so this is how a chunked body shows).
    pub end_of_stream: bool,
    /// The downstream connection is TLS (Envoy's `connection.tls_version` is set), with or
    /// without a client certificate.
    pub tls: bool,
    /// `xds.cluster_name`: the upstream cluster the route picked (Istio:
    /// `outbound|443||api.example.com`, `PassthroughCluster`, `BlackHoleCluster`), when known.
    pub cluster: Option<&'a [u8]>,
    /// The local workload (see [`Workload`]), when the policy needs it.
    pub workload: Workload<'a>,
}

impl<'a> RequestView<'a> {
    /// A view of a request without a body on a plaintext connection; see
    /// [`RequestView::with_end_of_stream`] and [`RequestView::with_tls`].
    pub fn new(headers: &'a [(&'a [u8], &'a [u8])], peer: Peer<'a>, direction: Direction) -> Self {
        Self {
            headers,
            peer,
            direction,
            end_of_stream: true,
            tls: peer.mtls,
            cluster: None,
            workload: Workload::default(),
        }
    }

    /// Whether the headers ended the stream (no body follows).
    pub fn with_end_of_stream(mut self, end_of_stream: bool) -> Self {
        self.end_of_stream = end_of_stream;
        self
    }

    /// Whether the downstream connection is TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
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
///   "peer": {"mtls": bool, "uriSan": string|null, "tls": bool},
///   "direction": "inbound"|"outbound"|"unspecified", "endOfStream": bool,
///   "cluster": string|null, "workload": {"namespace": string|null, "serviceAccount": string|null}}`.
/// `peer.tls` (default: `peer.mtls`), `endOfStream` (default: true, no body), `cluster` and
/// `workload` are optional, so requests logged before they existed still replay.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OwnedRequest {
    pub method: String,
    pub path: String,
    /// The decision log's stand-in for the query (see `log::query_shape`); see
    /// [`OwnedRequest::apply_query_shape`].
    #[serde(default)]
    pub query_shape: Option<String>,
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
    /// Whether the headers ended the stream; absent means true (no body).
    #[serde(default)]
    pub end_of_stream: Option<bool>,
    /// The exact bytes of header fields that are not valid UTF-8 (`headers` holds them with
    /// U+FFFD in place of the bad bytes): `[[index into headers, name hex, value hex], ...]`.
    #[serde(default, deserialize_with = "binary_headers")]
    pub binary_headers: Vec<BinaryHeader>,
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

/// A header field's exact bytes: (index into `headers`, name, value).
pub type BinaryHeader = (usize, Vec<u8>, Vec<u8>);

/// Lowercase hex, two digits a byte (what the decision log writes for `binaryHeaders`).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
        out.push(char::from(DIGITS.get(usize::from(b & 15)).copied().unwrap_or(b'0')));
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let raw = text.as_bytes();
    let pairs = raw.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs.map(|pair| Some(digit(*pair.first()?)? * 16 + digit(*pair.get(1)?)?)).collect()
}

fn binary_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BinaryHeader>, D::Error> {
    let raw: Vec<(usize, String, String)> = serde::Deserialize::deserialize(d)?;
    raw.into_iter()
        .map(|(i, n, v)| match (from_hex(&n), from_hex(&v)) {
            (Some(n), Some(v)) => Ok((i, n, v)),
            _ => Err(serde::de::Error::custom("binaryHeaders: names and values are hex strings")),
        })
        .collect()
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
    /// Whether the connection is TLS; absent means the same as `mtls`.
    #[serde(default)]
    pub tls: Option<bool>,
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
    /// A logged request's `queryShape` appended to its `path` (and cleared): the target the
    /// checks then see has the length, parameters and validity of the one the filter saw.
    /// Call before [`OwnedRequest::pairs`] on a request read back from a decision log.
    pub fn apply_query_shape(&mut self) {
        if let Some(shape) = self.query_shape.take() {
            self.path.push_str(&shape);
        }
    }

    /// Every header pair, pseudo-headers first, as the filter sees them in Envoy.
    pub fn pairs(&self) -> Vec<(&[u8], &[u8])> {
        let mut pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", self.method.as_bytes()),
            (b":path", self.path.as_bytes()),
            (b":authority", self.authority.as_bytes()),
            (b":scheme", self.scheme.as_bytes()),
        ];
        pairs.extend(self.headers.iter().enumerate().map(|(i, (n, v))| {
            match self.binary_headers.iter().find(|(j, _, _)| *j == i) {
                Some((_, n, v)) => (n.as_slice(), v.as_slice()),
                None => (n.as_bytes(), v.as_bytes()),
            }
        }));
        pairs
    }

    /// A view over this request and the pairs from [`OwnedRequest::pairs`].
    pub fn view<'a>(&'a self, pairs: &'a [(&'a [u8], &'a [u8])]) -> RequestView<'a> {
        RequestView {
            headers: pairs,
            peer: Peer { mtls: self.peer.mtls, uri_san: self.peer.uri_san.as_deref().map(str::as_bytes) },
            direction: self.direction.view(),
            end_of_stream: self.end_of_stream.unwrap_or(true),
            tls: self.peer.tls.unwrap_or(self.peer.mtls),
            cluster: self.cluster.as_deref().map(str::as_bytes),
            workload: self.workload.view(),
        }
    }
}
