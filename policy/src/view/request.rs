//! What the filter (or `meshguard eval`) knows about one request: borrowed bytes, never
//! assumed to be UTF-8.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};

use crate::matchers::route::RouteInput;
use crate::parse::host::{parse_authority, Authority, Host, HostError};
use crate::parse::target::PathFacts;
use crate::parse::xfcc::{Elements, XfccError};

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
/// pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) included.
///
/// The facts derived from them are computed at most once, on first use, by the one reader of
/// their format ([`crate::parse`]), and every check reads them from here: the pseudo-headers
/// (one pass over the pairs), the parsed authority, the canonical path, the request target's
/// confusions and the XFCC elements. A request that no check asks about costs nothing.
#[derive(Debug, Clone)]
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
    /// `connection.sha256_peer_certificate_digest` (hex), when the policy needs it (a JWT rule
    /// binds tokens to the peer certificate, RFC 8705).
    pub peer_cert_sha256: Option<&'a [u8]>,
    /// The time, in seconds since the Unix epoch, handed in by the caller (the host's clock in
    /// the filter, `--now` or the clock in `meshguard eval`) when the policy needs it (JWT):
    /// the policy has no clock of its own. 0 when not needed.
    pub now_unix_secs: u64,
    /// `source.address` (`ip:port`), the downstream's address, when the policy needs it and
    /// the request carries `x-envoy-external-address` (see [`crate::view::Needs`]).
    pub source_address: Option<&'a [u8]>,
    facts: Facts<'a>,
}

/// The derived facts, each filled on first use.
#[derive(Debug, Clone, Default)]
struct Facts<'a> {
    pseudo: OnceCell<Pseudo<'a>>,
    authority: OnceCell<Result<Authority, HostError>>,
    host_key: OnceCell<Option<String>>,
    canonical_path: OnceCell<Cow<'a, [u8]>>,
    target: OnceCell<PathFacts>,
    xfcc: OnceCell<Result<Elements<'a>, XfccError>>,
    /// The path-regex work this request has cost so far (see [`crate::budget::REGEX_WORK_LIMIT`]).
    regex_work: Cell<u64>,
}

/// The pseudo-headers and the few headers every check may ask for, from one pass.
#[derive(Debug, Clone, Copy, Default)]
struct Pseudo<'a> {
    method: &'a [u8],
    path: &'a [u8],
    authority: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    scheme: &'a [u8],
    request_id: Option<&'a [u8]>,
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
            peer_cert_sha256: None,
            now_unix_secs: 0,
            source_address: None,
            facts: Facts::default(),
        }
    }

    /// The same view with the downstream's address (`source.address`).
    pub fn with_source_address(mut self, address: Option<&'a [u8]>) -> Self {
        self.source_address = address;
        self
    }

    /// The same view with the peer certificate's SHA-256 digest (hex).
    pub fn with_peer_cert_sha256(mut self, digest: Option<&'a [u8]>) -> Self {
        self.peer_cert_sha256 = digest;
        self
    }

    /// The same view with the time (seconds since the Unix epoch).
    pub fn with_now(mut self, now_unix_secs: u64) -> Self {
        self.now_unix_secs = now_unix_secs;
        self
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

    fn pseudo(&self) -> &Pseudo<'a> {
        self.facts.pseudo.get_or_init(|| {
            let mut p = Pseudo::default();
            for &(name, value) in self.headers {
                match name {
                    b":method" => p.method = value,
                    b":path" => p.path = value,
                    b":authority" => {
                        p.authority.get_or_insert(value);
                    }
                    b":scheme" => p.scheme = value,
                    _ if name.len() == 4 && name.eq_ignore_ascii_case(b"host") => {
                        p.host.get_or_insert(value);
                    }
                    _ if name.len() == 12 && name.eq_ignore_ascii_case(b"x-request-id") => {
                        p.request_id.get_or_insert(value);
                    }
                    _ => {}
                }
            }
            p
        })
    }

    pub fn method(&self) -> &'a [u8] {
        self.pseudo().method
    }
    pub fn path(&self) -> &'a [u8] {
        self.pseudo().path
    }
    /// `:authority`, or the `host` header when there is none.
    pub fn authority(&self) -> &'a [u8] {
        let p = self.pseudo();
        p.authority.or(p.host).unwrap_or_default()
    }
    pub fn scheme(&self) -> &'a [u8] {
        self.pseudo().scheme
    }
    pub fn request_id(&self) -> Option<&'a [u8]> {
        self.pseudo().request_id
    }

    /// The authority, parsed by [`crate::parse::host::parse_authority`]: the one reading of
    /// it that every check shares.
    pub fn parsed_authority(&self) -> Result<&Authority, HostError> {
        self.facts.authority.get_or_init(|| parse_authority(self.authority())).as_ref().map_err(|e| *e)
    }

    /// The key host rules match on ([`crate::parse::host::Host::match_key`]), or `None` when
    /// the authority is not a host or is a spelling no rule can name.
    pub fn host_key(&self) -> Option<&str> {
        match self.parsed_authority() {
            // A name is its own key: no copy.
            Ok(Authority { host: Host::Name(name), .. }) => Some(name),
            Ok(a) => self.facts.host_key.get_or_init(|| a.host.match_key()).as_deref(),
            Err(_) => None,
        }
    }

    /// The canonical path ([`crate::parse::path::canonical`]) that route rules match on.
    pub fn canonical_path(&self) -> &[u8] {
        self.facts.canonical_path.get_or_init(|| crate::parse::path::canonical(self.path()))
    }

    /// What one pass over the request target found ([`crate::parse::target::analyze`]).
    pub fn target(&self) -> &PathFacts {
        self.facts.target.get_or_init(|| crate::parse::target::analyze(self.path()))
    }

    /// The `x-forwarded-client-cert` elements ([`crate::parse::xfcc::elements`]): how many,
    /// and the last, which is the one the local Envoy added on an mTLS connection.
    pub fn xfcc(&self) -> Result<Elements<'a>, XfccError> {
        *self.facts.xfcc.get_or_init(|| crate::parse::xfcc::elements(self.header_all("x-forwarded-client-cert")))
    }

    /// Host, canonical path and method, for route rules.
    pub fn route_input(&self) -> RouteInput<'_> {
        RouteInput {
            host: self.host_key(),
            path: self.canonical_path(),
            method: self.method(),
            regex_work: &self.facts.regex_work,
        }
    }
}

/// A request held in owned memory, in the JSON shape the decision log records and
/// `meshguard eval --request` reads:
/// `{"method", "path", "authority", "scheme", "headers": [[name, value], ...],
///   "peer": {"mtls": bool, "uriSan": string|null, "tls": bool, "certSha256": string|null},
///   "direction": "inbound"|"outbound"|"unspecified", "endOfStream": bool,
///   "cluster": string|null, "workload": {"namespace": string|null, "serviceAccount": string|null},
///   "upstream": {"uriSan": string|null, "tlsVersion": string|null, "address": string|null},
///   "nowUnixSecs": number, "sourceAddress": string|null}`.
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
    /// The upstream connection's facts (response phase; see [`crate::view::upstream`]). With
    /// them, `meshguard eval` decides both phases, as the filter does.
    #[serde(default)]
    pub upstream: Option<crate::view::upstream::OwnedUpstream>,
    /// The time the filter handed the checks (seconds since the Unix epoch), logged when the
    /// policy reads the clock (JWT); `meshguard eval` uses the current time (or `--now`) when
    /// it is absent.
    #[serde(default)]
    pub now_unix_secs: Option<u64>,
    /// `source.address`, logged when the request carried `x-envoy-external-address` and the
    /// policy compares the two (hygiene `envoyHeaders`).
    #[serde(default)]
    pub source_address: Option<String>,
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
    /// `connection.sha256_peer_certificate_digest` (hex), for JWT certificate binding.
    #[serde(default)]
    pub cert_sha256: Option<String>,
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

    /// The upstream connection of this request, when the request says it: the cluster and
    /// authority default to the request's own.
    pub fn upstream_view(&self) -> Option<crate::view::upstream::UpstreamView<'_>> {
        let up = self.upstream.as_ref()?;
        let mut view = up.view();
        view.cluster = view.cluster.or(self.cluster.as_deref().map(str::as_bytes));
        view.authority = view.authority.or(Some(self.authority.as_bytes()));
        Some(view)
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
            peer_cert_sha256: self.peer.cert_sha256.as_deref().map(str::as_bytes),
            now_unix_secs: self.now_unix_secs.unwrap_or(0),
            source_address: self.source_address.as_deref().map(str::as_bytes),
            facts: Facts::default(),
        }
    }
}
