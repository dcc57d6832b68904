//! The Proxy-Wasm contexts: one root context per plugin configuration (compiles the policy),
//! one [`RequestGuard`] per HTTP request (reads, evaluates, enforces), or, when the plugin runs
//! as a network filter, one [`crate::network::ConnectionGuard`] per connection.
//!
//! One module serves both filter types. proxy-wasm-rust-sdk 0.2 asks each root context for
//! one [`ContextType`], so the root context reads its `plugin_root_id` in `on_configure`: a
//! root id ending in [`NETWORK_ROOT_ID_SUFFIX`] (`meshguard-tcp`; in Istio the WasmPlugin's
//! `pluginName`) makes a network filter, any other an HTTP filter.
//!
//! No policy rule lives here. A request is: one host call for the header map, the connection
//! properties the compiled policy asks for ([`policy::Needs`]), one `Policy::evaluate`, then
//! counters, at most one decision-log line, and a local reply when a finding is enforced.
//! With upstream pinning, the response phase reads the upstream connection's identity
//! (two properties) for a destination a rule pins, and replaces the answer with a 502 when it
//! is the wrong one.

use std::rc::Rc;

use policy::{Decision, Direction, HeaderMutation, Outcome, Peer, Policy, RequestView, UpstreamView};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::hostcalls;
use crate::metrics::Metrics;
use crate::properties::{self, WorkloadFacts};
use crate::trust;

/// A root id ending in this makes the plugin a network (TCP/TLS) filter: `meshguard-tcp`.
pub const NETWORK_ROOT_ID_SUFFIX: &str = "-tcp";

/// Which Envoy filter this root context serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Http,
    Network,
}

impl FilterKind {
    /// From the plugin's root id (see the module docs).
    pub fn from_root_id(root_id: &[u8]) -> FilterKind {
        if root_id.ends_with(NETWORK_ROOT_ID_SUFFIX.as_bytes()) {
            FilterKind::Network
        } else {
            FilterKind::Http
        }
    }
}

pub use policy::log::DECISION_LOG_PREFIX;

/// `connection.mtls`: Envoy serializes a CEL bool as one byte, 0 or 1.
const PROPERTY_MTLS: &[u8] = b"connection\0mtls";
/// `connection.uri_san_peer_certificate`: the first URI SAN of the peer certificate, bytes.
const PROPERTY_URI_SAN: &[u8] = b"connection\0uri_san_peer_certificate";
/// `connection.tls_version`: `TLSv1.3` and the like on a TLS connection, absent or empty on a
/// plaintext one.
const PROPERTY_TLS_VERSION: &[u8] = b"connection\0tls_version";
/// `connection.sha256_peer_certificate_digest`: hex SHA-256 of the peer certificate (JWT
/// certificate binding, RFC 8705), fetched only when a rule binds to it.
const PROPERTY_PEER_CERT_DIGEST: &[u8] = b"connection\0sha256_peer_certificate_digest";
const PROPERTY_SOURCE_ADDRESS: &[u8] = b"source\0address";

/// The local reply's headers, serialized once at compile time: only the content type, nothing
/// that says more than the body does.
#[rustfmt::skip]
pub(crate) const DENY_HEADERS: &[u8] = &[
    1, 0, 0, 0,
    12, 0, 0, 0, 16, 0, 0, 0,
    b'c', b'o', b'n', b't', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0,
    b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'j', b's', b'o', b'n', 0,
];

/// What a client gets when meshguard cannot inspect its request at all (no policy loaded, or
/// the host handed over an unreadable header map). meshguard fails closed: a security filter
/// that cannot look must not wave traffic through.
const UNINSPECTABLE_STATUS: u16 = 503;
const UNINSPECTABLE_BODY: &[u8] = b"{\"error\":\"request could not be inspected\"}\n";

/// What the client gets instead of an upstream's answer when upstream pinning refuses the
/// upstream (the endpoint is not who the policy says it must be): a gateway error, since the
/// fault is between the proxy and the upstream, not in the client's request.
pub const UPSTREAM_DENY_STATUS: u16 = 502;

/// The root context: owns the compiled policy of the current configuration.
pub struct PolicyRoot {
    policy: Option<Rc<Policy>>,
    metrics: Option<Rc<Metrics>>,
    kind: FilterKind,
    /// The local workload (Istio node metadata), read once when the policy needs it.
    workload: Rc<WorkloadFacts>,
    /// Remote JWKS fetches of the policy in force (HTTP filter only).
    jwks: crate::jwks::JwksFetcher,
}

impl PolicyRoot {
    pub fn new() -> Self {
        Self {
            policy: None,
            metrics: None,
            kind: FilterKind::Http,
            workload: Rc::default(),
            jwks: crate::jwks::JwksFetcher::default(),
        }
    }

    /// Counters are defined once per root context, on first configuration, and the tick that
    /// flushes the totals counted in VM memory starts then (see [`crate::metrics`]).
    fn metrics(&mut self) -> Rc<Metrics> {
        let kind = self.kind;
        self.metrics
            .get_or_insert_with(|| {
                if let Err(status) = hostcalls::set_tick_period(crate::metrics::FLUSH_PERIOD_MS) {
                    log(
                        LogLevel::Warn,
                        &format!("meshguard: no tick (host status {}): counters flush only on findings", status.0),
                    );
                }
                Rc::new(Metrics::define(kind == FilterKind::Network))
            })
            .clone()
    }

    /// Hand the counts held in VM memory to Envoy.
    fn flush_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.flush();
        }
    }
}

impl Default for PolicyRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Context for PolicyRoot {
    /// The plugin is going away (a new configuration, Envoy draining or shutting down): hand
    /// Envoy the counts not flushed yet.
    fn on_done(&mut self) -> bool {
        self.flush_metrics();
        true
    }

    /// A remote JWKS fetch answered (see [`crate::jwks`]).
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.jwks.response(token_id, body_size);
    }
}

impl RootContext for PolicyRoot {
    /// A new VM says so (log line; the counter follows its first accepted configuration; see
    /// [`crate::vm`]). A trapped VM that Envoy reloads (FAIL_RELOAD) comes back through here.
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        crate::vm::started();
        true
    }

    /// Every [`crate::metrics::FLUSH_PERIOD_MS`]: hand Envoy the counts held in VM memory.
    fn on_tick(&mut self) {
        self.flush_metrics();
        // Remote JWKS refreshes that are due (nothing when the policy has no remote provider).
        self.jwks.poll();
    }

    /// Parse, validate and compile the policy. On any error, log every error with its JSON
    /// path and return false: Envoy then refuses this configuration and keeps the last good
    /// one.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if self.metrics.is_none() {
            // The kind is fixed by the first configuration: Envoy never changes a plugin's
            // root id under it.
            self.kind = FilterKind::from_root_id(&properties::root_id().unwrap_or_default());
        }
        let metrics = self.metrics();
        let bytes = match hostcalls::plugin_configuration() {
            Ok(bytes) => bytes,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!(
                        "meshguard: policy rejected: cannot read the plugin configuration (host status {})",
                        status.0
                    ),
                );
                metrics.config_rejected();
                trust::count_rejected("unreadable");
                return false;
            }
        };
        // Signed policies: the trust roots never come from the configuration (see `trust`).
        let root_id = properties::root_id().unwrap_or_default();
        let gate_started = hostcalls::now_unix_nanos().ok();
        let admitted = match trust::gate(&bytes, &root_id) {
            Ok(admitted) => admitted,
            Err(rejection) => {
                log(
                    LogLevel::Error,
                    &format!("meshguard: policy rejected: reason={}: {}", rejection.reason, rejection.message),
                );
                metrics.config_rejected();
                trust::count_rejected(rejection.reason);
                return false;
            }
        };
        let started = hostcalls::now_unix_nanos().ok();
        let verify_us = match (gate_started, started) {
            (Some(a), Some(b)) => b.saturating_sub(a) / 1_000,
            _ => 0,
        };
        let (compiled, signed, verified_serial) = match admitted {
            trust::Admitted::Unsigned => (Policy::from_json(&bytes), String::from(" signed=false"), None),
            trust::Admitted::UnverifiedEnvelope { policy, serial } => (
                Policy::from_value(policy),
                format!(" signed=false serial={serial} (envelope not verified: no trust roots)"),
                None,
            ),
            trust::Admitted::Signed { policy, serial, keyid, roots } => (
                Policy::from_value(policy),
                format!(" signed=true serial={serial} keyid={keyid} trust_keys={roots} verify_us={verify_us}"),
                Some(serial),
            ),
        };
        // Wall-clock time (the host's clock), for operators sizing big policies.
        let compile_us = match (started, hostcalls::now_unix_nanos().ok()) {
            (Some(a), Some(b)) => b.saturating_sub(a) / 1_000,
            _ => 0,
        };
        match compiled {
            Ok(policy) => {
                let kind = match self.kind {
                    FilterKind::Http => "",
                    FilterKind::Network => " filter=network",
                };
                log(
                    LogLevel::Info,
                    &format!(
                        "meshguard: policy accepted revision={}{kind} bytes={} compile_us={compile_us}{signed}",
                        policy.revision(),
                        bytes.len()
                    ),
                );
                if self.kind == FilterKind::Network && !policy.has_egress() {
                    log(
                        LogLevel::Warn,
                        "meshguard: the network filter enforces only the egress section, and this policy has none: every connection is allowed",
                    );
                }
                if policy.needs().workload && !self.workload.is_known() {
                    self.workload = Rc::new(WorkloadFacts::fetch());
                    if !self.workload.is_known() {
                        log(
                            LogLevel::Warn,
                            "meshguard: no NAMESPACE/SERVICE_ACCOUNT in the node metadata: egress rules with sources will find no workload identity",
                        );
                    }
                }
                metrics.config_accepted();
                if let Some(Err(status)) = verified_serial.map(|serial| trust::commit_serial(&root_id, serial)) {
                    log(
                        LogLevel::Warn,
                        &format!("meshguard: could not record the accepted serial (host status {status}): rollback protection is weaker until the next update"),
                    );
                }
                crate::vm::configured();
                let policy = Rc::new(policy);
                if self.kind == FilterKind::Http {
                    self.jwks.configure(&policy);
                }
                self.policy = Some(policy);
                true
            }
            Err(errors) => {
                for error in errors.iter() {
                    log(LogLevel::Error, &format!("meshguard: policy rejected: {error}"));
                }
                metrics.config_rejected();
                trust::count_rejected("invalid_policy");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None. Without metrics (no configuration seen, which
        // Envoy does not do) the guard counts nothing.
        let metrics = self.metrics.clone().unwrap_or_else(|| Rc::new(Metrics::none()));
        Some(Box::new(RequestGuard {
            policy: self.policy.clone(),
            metrics,
            workload: self.workload.clone(),
            kept: None,
        }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        // Never None, as above.
        let metrics = self.metrics.clone().unwrap_or_else(|| Rc::new(Metrics::none()));
        Some(Box::new(crate::network::ConnectionGuard::new(self.policy.clone(), metrics, self.workload.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(match self.kind {
            FilterKind::Http => ContextType::HttpContext,
            FilterKind::Network => ContextType::StreamContext,
        })
    }
}

/// One HTTP request's view of the policy.
pub struct RequestGuard {
    policy: Option<Rc<Policy>>,
    metrics: Rc<Metrics>,
    workload: Rc<WorkloadFacts>,
    /// What the response phase needs of the request (upstream pinning only; the request's
    /// view is gone by then).
    kept: Option<Kept>,
}

/// The request facts upstream pinning judges the upstream by, kept from the request phase:
/// only when the policy pins upstreams, and only for a request that went on.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// `xds.cluster_name`, when the request phase read it anyway (else the response phase
    /// reads it).
    cluster: Option<Vec<u8>>,
    authority: Vec<u8>,
    request_id: Option<Vec<u8>>,
}

impl Context for RequestGuard {}

impl HttpContext for RequestGuard {
    /// The first moment the upstream connection exists: upstream pinning decides here.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match (self.policy.as_deref(), self.kept.take()) {
            (Some(policy), Some(kept)) => guard_upstream(policy, &self.metrics, &kept),
            _ => Action::Continue,
        }
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.policy.as_deref() {
            Some(policy) => guard(policy, &self.metrics, &self.workload, end_of_stream, &mut self.kept),
            None => {
                // Envoy creates no request context for a plugin whose configuration failed,
                // so this is a host anomaly; fail closed.
                log(LogLevel::Error, "meshguard: no policy loaded; refusing the request");
                uninspectable(&self.metrics)
            }
        }
    }
}

/// Read, evaluate, count, log, enforce (a local reply, or the header mutations of a strip).
fn guard(
    policy: &Policy,
    metrics: &Metrics,
    workload: &WorkloadFacts,
    end_of_stream: bool,
    kept: &mut Option<Kept>,
) -> Action {
    let buf = match hostcalls::request_header_map() {
        Ok(buf) => buf,
        Err(status) => {
            log(LogLevel::Error, &format!("meshguard: cannot read request headers (host status {})", status.0));
            return uninspectable(metrics);
        }
    };
    let Some(headers) = crate::header_map::parse(&buf) else {
        log(LogLevel::Error, "meshguard: malformed request header map from the host");
        return uninspectable(metrics);
    };

    // Fetched only when a check reads them; each is a host call. Their buffers outlive the view.
    let needs = policy.needs();
    // Nothing reads the direction unless egress (or identity with `appliesTo: inbound`) does:
    // the filter then stays what it always was, an inbound filter.
    let direction = if needs.direction { properties::direction() } else { Direction::Inbound };
    let (mtls, uri_san) = if needs.peer {
        // An outbound listener's downstream is the local app, in plaintext: ask `mtls` first
        // there (one call), and the SAN first elsewhere (one call for an mTLS peer).
        peer_properties(direction == Direction::Outbound)
    } else if needs.mtls {
        (mtls_property(), None)
    } else {
        (false, None)
    };
    let peer = Peer { mtls, uri_san: uri_san.as_deref() };
    let tls = mtls || (needs.tls && tls_property());
    let cluster = if needs.cluster_on(direction) { properties::cluster_name() } else { None };
    // The peer certificate's digest only for a policy that binds tokens to it, and only when
    // there is a peer certificate (the SAN/mTLS answer above, when fetched, says so).
    let cert_digest = if needs.peer_cert_digest && (!needs.mtls || mtls) {
        hostcalls::property(PROPERTY_PEER_CERT_DIGEST).ok().flatten().filter(|d| !d.is_empty())
    } else {
        None
    };
    // The clock once per request, only for a policy that reads it (JWT). A policy that needs
    // the time and cannot have it fails closed: with no time, exp could not be checked.
    let now_nanos = if needs.clock {
        match hostcalls::now_unix_nanos() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                log(LogLevel::Error, "meshguard: no clock from the host; refusing the request");
                return uninspectable(metrics);
            }
        }
    } else {
        None
    };
    // The downstream's address only for a request that carries x-envoy-external-address, when
    // the policy compares the two (hygiene keeps Envoy's own value at an edge).
    let source_address = if needs.source_address
        && headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(policy::view::EXTERNAL_ADDRESS))
    {
        hostcalls::property(PROPERTY_SOURCE_ADDRESS).ok().flatten()
    } else {
        None
    };
    // The workload comes from the node metadata, read once in on_configure: it is the proxy's
    // own and does not change.
    let view = RequestView::new(&headers, peer, direction)
        .with_end_of_stream(end_of_stream)
        .with_tls(tls)
        .with_cluster(cluster.as_deref())
        .with_workload(if needs.workload { workload.view() } else { policy::Workload::default() })
        .with_peer_cert_sha256(cert_digest.as_deref())
        .with_now(now_nanos.map_or(0, |n| n / 1_000_000_000))
        .with_source_address(source_address.as_deref());

    let decision = policy.evaluate(&view);
    let outcome = decision.outcome();
    metrics.request(outcome);
    record_at(metrics, &decision, policy.should_log(&decision, &view), now_nanos, |ms| {
        policy.decision_log_line(&decision, &view, ms)
    });

    if outcome != Outcome::Deny {
        // Upstream pinning: keep what the response phase needs, unless the cluster (when the
        // request phase read it) and the authority already say no rule pins this destination.
        let pinned = || {
            cluster.is_none()
                || policy.pins_upstream(&UpstreamView {
                    cluster: cluster.as_deref(),
                    authority: Some(view.authority()),
                    ..UpstreamView::default()
                })
        };
        if policy.has_upstream() && pinned() {
            *kept = Some(Kept {
                cluster: cluster.clone(),
                authority: view.authority().to_vec(),
                request_id: view.request_id().map(<[u8]>::to_vec),
            });
        }
        apply_mutations(&decision);
        return Action::Continue;
    }
    let deny = policy.deny_response();
    let code = decision.primary().map(|f| f.code);
    let body = deny.body(code, view.request_id());
    // Envoy's %RESPONSE_CODE_DETAILS% for access logs; never sent to the client.
    let details = match code {
        Some(code) => format!("meshguard_denied.{}", code.as_str()),
        None => String::from("meshguard_denied"),
    };
    // The status of the check that decided (JWT: `jwt.denyStatus`), else `denyResponse.status`.
    let reply_status = policy.deny_status(&decision);
    if let Err(status) = hostcalls::send_local_response(reply_status, &details, &body, DENY_HEADERS) {
        // Still Pause: a denied request must not reach the upstream, even if it hangs.
        log(LogLevel::Error, &format!("meshguard: local reply failed (host status {})", status.0));
    }
    Action::Pause
}

/// Upstream pinning, in the response phase: read the upstream connection's facts, decide,
/// count, log (a line of its own, `"phase": "response"`: the request phase's line, if any, was
/// written before the connection existed), and on an enforced finding replace the upstream's
/// answer with a local 502. The request already reached that endpoint; what is stopped here is
/// its answer.
fn guard_upstream(policy: &Policy, metrics: &Metrics, kept: &Kept) -> Action {
    let cluster = match &kept.cluster {
        Some(c) => Some(c.clone()),
        None => properties::cluster_name(),
    };
    let (uri_san, tls_version) = properties::upstream();
    let mut up = UpstreamView {
        cluster: cluster.as_deref(),
        authority: Some(&kept.authority),
        uri_san: uri_san.as_deref(),
        tls_version: tls_version.as_deref(),
        address: None,
    };
    let decision = policy.evaluate_upstream(&up);
    if decision.findings.is_empty() {
        return Action::Continue;
    }
    // Envoy's own answer (no healthy upstream, a connect failure, a timeout) never came from
    // an endpoint: nothing to stop, and no false alarm. Asked only when there is a finding,
    // like the address, which only the log line reads.
    if !properties::response_from_upstream() {
        return Action::Continue;
    }
    let address = properties::upstream_address();
    up.address = address.as_deref();
    let request_id = kept.request_id.as_deref();
    record(metrics, &decision, policy.should_log_upstream(&decision), |ms| {
        policy.upstream_log_line(&decision, &up, request_id, ms)
    });
    if decision.outcome() != Outcome::Deny {
        return Action::Continue;
    }
    let code = decision.primary().map(|f| f.code);
    let body = policy.deny_response().body(code, request_id);
    let details = match code {
        Some(code) => format!("meshguard_denied.{}", code.as_str()),
        None => String::from("meshguard_denied"),
    };
    if let Err(status) = hostcalls::send_local_response(UPSTREAM_DENY_STATUS, &details, &body, DENY_HEADERS) {
        // Still Pause: the impostor's answer must not reach the client.
        log(LogLevel::Error, &format!("meshguard: local reply failed (host status {})", status.0));
    }
    Action::Pause
}

/// Count a decision's findings and, when `due`, write its decision-log line (`line` renders it
/// from the time in Unix milliseconds). Shared by the HTTP and the network filter. A decision
/// with findings also flushes the totals counted in VM memory, so that denies and would-denies
/// reach Envoy's stats at once.
pub(crate) fn record(metrics: &Metrics, decision: &Decision, due: bool, line: impl FnOnce(u64) -> String) {
    record_at(metrics, decision, due, None, line);
}

/// [`record`] with the time already read for this request (`now_nanos`), if any: the clock is
/// read once per request.
pub(crate) fn record_at(
    metrics: &Metrics,
    decision: &Decision,
    due: bool,
    now_nanos: Option<u64>,
    line: impl FnOnce(u64) -> String,
) {
    for finding in &decision.findings {
        metrics.finding(finding.check, finding.code, finding.enforced);
    }
    if !decision.findings.is_empty() {
        metrics.flush();
    }
    if due {
        let nanos = now_nanos.or_else(|| hostcalls::now_unix_nanos().ok()).unwrap_or(0);
        let line = line(nanos / 1_000_000);
        let mut message = String::with_capacity(DECISION_LOG_PREFIX.len() + line.len());
        message.push_str(DECISION_LOG_PREFIX);
        message.push_str(&line);
        log(LogLevel::Info, &message);
    }
}

/// Apply a strip: remove or rewrite the headers, then have Envoy pick the route again, so that
/// it routes on what the application will see. A failed host call is logged; the request goes
/// on (the header was either changed or Envoy refused a change to a header it owns).
fn apply_mutations(decision: &Decision) {
    if decision.mutations.is_empty() {
        return;
    }
    for m in &decision.mutations {
        let result = match m {
            HeaderMutation::Remove { name } => hostcalls::remove_request_header(name),
            HeaderMutation::Set { name, value } => hostcalls::replace_request_header(name, value),
        };
        if let Err(status) = result {
            log(
                LogLevel::Error,
                &format!(
                    "meshguard: could not change request header {} (host status {})",
                    String::from_utf8_lossy(m.name()),
                    status.0
                ),
            );
        }
    }
    if let Err(status) = hostcalls::clear_route_cache() {
        log(LogLevel::Warn, &format!("meshguard: clear_route_cache failed (host status {})", status.0));
    }
}

/// `connection.mtls` alone: the peer presented a certificate Envoy validated.
fn mtls_property() -> bool {
    matches!(hostcalls::property(PROPERTY_MTLS), Ok(Some(v)) if is_true(&v))
}

/// Whether the downstream connection is TLS: `connection.tls_version` is set and not empty.
fn tls_property() -> bool {
    matches!(hostcalls::property(PROPERTY_TLS_VERSION), Ok(Some(v)) if !v.is_empty())
}

/// The peer: `connection.mtls` and, for an mTLS peer, `connection.uri_san_peer_certificate`.
/// Host errors read as "no mTLS" / "no SAN": the identity check then fails closed.
///
/// Two orders, one answer. Envoy reads both from the same TLS connection: the SAN from the
/// peer certificate, `mtls` as "a peer certificate was presented", so a URI SAN implies mTLS.
/// `expect_plaintext` (an outbound listener) asks `mtls` first, and the SAN only for an mTLS
/// peer: one call for the plaintext app. Otherwise the SAN comes first, and `mtls` is asked
/// only when there is no SAN: one call for a mesh peer.
pub(crate) fn peer_properties(expect_plaintext: bool) -> (bool, Option<Vec<u8>>) {
    if expect_plaintext {
        if !mtls_property() {
            return (false, None);
        }
        return (true, hostcalls::property(PROPERTY_URI_SAN).ok().flatten());
    }
    match hostcalls::property(PROPERTY_URI_SAN).ok().flatten() {
        Some(san) if !san.is_empty() => (true, Some(san)),
        san if mtls_property() => (true, san),
        _ => (false, None),
    }
}

/// Envoy serializes a CEL bool as `sizeof(bool)` bytes: exactly one byte, 1 for true.
/// Anything else is not true.
pub(crate) fn is_true(value: &[u8]) -> bool {
    value == [1]
}

fn uninspectable(metrics: &Metrics) -> Action {
    metrics.error();
    let _ = hostcalls::send_local_response(
        UNINSPECTABLE_STATUS,
        "meshguard_uninspectable",
        UNINSPECTABLE_BODY,
        DENY_HEADERS,
    );
    Action::Pause
}

/// Log through the host; a failed log call must not fail anything.
pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_headers_are_exactly_the_content_type() {
        let parsed = crate::header_map::parse(DENY_HEADERS).unwrap();
        assert_eq!(parsed, vec![(&b"content-type"[..], &b"application/json"[..])]);
        let rebuilt = crate::header_map::serialize(&parsed).unwrap();
        assert_eq!(rebuilt, DENY_HEADERS);
    }

    #[test]
    fn the_root_id_chooses_the_filter_type() {
        assert_eq!(FilterKind::from_root_id(b"meshguard"), FilterKind::Http);
        assert_eq!(FilterKind::from_root_id(b""), FilterKind::Http);
        assert_eq!(FilterKind::from_root_id(b"meshguard-tcp"), FilterKind::Network);
        assert_eq!(FilterKind::from_root_id(b"egress-tcp"), FilterKind::Network);
        assert_eq!(FilterKind::from_root_id(b"meshguard-tcp-x"), FilterKind::Http);
    }

    #[test]
    fn only_a_single_one_byte_is_true() {
        assert!(is_true(&[1]));
        for v in [&[][..], &[0], &[2], &[1, 0], b"true"] {
            assert!(!is_true(v), "{v:?}");
        }
    }

    #[test]
    fn uninspectable_body_is_json() {
        let v: serde_json::Value = serde_json::from_slice(UNINSPECTABLE_BODY).unwrap();
        assert!(v.get("error").is_some());
    }
}
