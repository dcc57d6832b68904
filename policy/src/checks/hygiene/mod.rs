//! Request hygiene: the guards against requests that an application, a cache or a second proxy
//! could read differently from Envoy, and against trust headers a client should never set.
//!
//! Envoy 1.40's codecs already refuse the classic smuggling forms (CL+TE, bad chunk sizes,
//! invalid header names over HTTP/1, NUL and CR/LF in values). What still reaches a filter
//! under Istio's defaults (and plain Envoy's) is what these guards answer; each is one named
//! rule (`hygiene.guards.<name>`, the rule id in decision logs) with one stable reason code.
//!
//! | family | guard | threat |
//! |---|---|---|
//! | limits | `headerCount` `headerBytes` `headerLength` `pathLength` `queryParams` | resource exhaustion in the app's parser; hash-flooding; long targets truncated differently by each hop |
//! | framing | `contentLength` `transferEncoding` `teHeader` `bodyOnGet` `bodyOnUpgrade` | request smuggling: two parsers disagree where the body ends (CL.TE, TE.CL, a GET body a cache ignores, bytes after an upgrade) |
//! | names and values | `underscoreHeaders` `headerNames` `controlBytes` `nonAsciiValues` `valueWhitespace` | `Content_Length` read as `Content-Length` by CGI/WSGI apps; header injection; values trimmed or decoded differently |
//! | singletons | `singletonHeaders` `injectedValues` | Envoy merges duplicates into `a,b`: two Hosts, two Authorizations, two Content-Types, two tenants or API keys seen as one; a second header line left inside a credential after Envoy deleted a bare CR |
//! | authority and scheme | `authority` `scheme` | host confusion (userinfo, commas, bad ports) for virtual hosting, cache keys, links and SSRF; a client claiming https on plaintext |
//! | methods | `methodToken` `methodAllowlist` `riskyMethods` `methodOverride` | cross-site tracing, tunnels, and a POST the app runs as DELETE after the rules saw POST |
//! | upgrades and Expect | `h2cUpgrade` `websocket` `expect` | h2c smuggling past the proxy; malformed handshakes; Expect tricks that stall or split requests |
//! | path confusion | `encodedSlash` `dotSegments` `doubleSlash` `pathParameters` `doubleEncoding` `encodedControl` `invalidUtf8` `encodedDelimiters` `pathCharacters` | rule evasion: one resource, many spellings (`/admin` as `/a%2Fdmin`, `/x/..;/admin`, `//admin`, `/%2561dmin`) |
//! | trust headers | `envoyHeaders` `peerMetadata` `xfcc` `forwardedRouting` `urlOverride` `clientIp` `proxyAuthorization` `requestId` `forwardedFor` `traceContext` `traceForcing` | spoofed identity, client IP, host or URL that the app or a later filter believes; markup in address chains and trace ids (log injection); a client forcing or choosing traces |
//!
//! Every guard has an `action` (`reject`, `strip` for the guards that can remove what they
//! found, `log`) and its own `mode`, under the check's `mode` and the policy's: a guard
//! enforces only when all three say enforce. A strip in dry-run strips nothing and records a
//! dry-run finding. Guards run in the table's order, before every other check; the first
//! enforced rejection ends the evaluation.
//!
//! Compiled once per configuration; per request there is one pass over the headers, one over
//! the path, and no allocation unless a guard fires.

pub mod doc;
pub mod presets;
pub mod trace;

use crate::checks::{Check, Context};
use crate::decision::{Decision, Finding, HeaderMutation, Remedy};
use crate::error::ConfigErrors;
use crate::parse::spiffe::{PrincipalPattern, SpiffeId};
use crate::parse::token::{
    is_method_token, is_tchar, list_tokens as tokens, top_level_elements, trim_ows as trim, TCHAR,
};
use crate::reason::ReasonCode;
use crate::view::request::RequestView;
use crate::view::Needs;

use crate::parse::host::Host;
use crate::parse::ip;
use crate::parse::target::PathFacts;
use doc::{CommonDoc, GuardAction, GuardsDoc, HygieneDoc};

macro_rules! guards {
    ($( $(#[$doc:meta])* $id:ident => $name:literal, $code:ident, strip: $strip:literal, trust: $trust:literal; )*) => {
        /// The guards, in the order they run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Guard {
            $( $(#[$doc])* $id, )*
        }

        impl Guard {
            /// Every guard, in evaluation order.
            pub const ALL: &'static [Guard] = &[$(Guard::$id,)*];

            /// The guard's name in the policy document (`hygiene.guards.<name>`).
            pub fn name(self) -> &'static str {
                match self { $( Guard::$id => $name, )* }
            }

            /// The rule id in decision logs: the guard's path in the policy document.
            pub fn rule(self) -> &'static str {
                match self { $( Guard::$id => concat!("hygiene.guards.", $name), )* }
            }

            /// The reason code of its findings.
            pub fn code(self) -> ReasonCode {
                match self { $( Guard::$id => ReasonCode::$code, )* }
            }

            /// Whether `action: strip` means something for this guard (it removes, or rewrites,
            /// the headers it found).
            pub fn can_strip(self) -> bool {
                match self { $( Guard::$id => $strip, )* }
            }

            /// Whether the guard takes `trustMtlsPeers`.
            pub fn takes_trust(self) -> bool {
                match self { $( Guard::$id => $trust, )* }
            }
        }
    };
}

guards! {
    HeaderCount => "headerCount", HygieneTooManyHeaders, strip: false, trust: false;
    HeaderBytes => "headerBytes", HygieneHeadersTooLarge, strip: false, trust: false;
    HeaderLength => "headerLength", HygieneHeaderTooLong, strip: false, trust: false;
    PathLength => "pathLength", HygienePathTooLong, strip: false, trust: false;
    QueryParams => "queryParams", HygieneTooManyQueryParams, strip: false, trust: false;
    ContentLength => "contentLength", HygieneContentLengthInvalid, strip: false, trust: false;
    TransferEncoding => "transferEncoding", HygieneTransferEncodingInvalid, strip: false, trust: false;
    TeHeader => "teHeader", HygieneTeHeaderInvalid, strip: true, trust: false;
    BodyOnGet => "bodyOnGet", HygieneBodyOnGet, strip: false, trust: false;
    BodyOnUpgrade => "bodyOnUpgrade", HygieneBodyOnUpgrade, strip: false, trust: false;
    UnderscoreHeaders => "underscoreHeaders", HygieneUnderscoreHeader, strip: true, trust: false;
    HeaderNames => "headerNames", HygieneHeaderNameInvalid, strip: false, trust: false;
    ControlBytes => "controlBytes", HygieneHeaderValueControl, strip: true, trust: false;
    NonAsciiValues => "nonAsciiValues", HygieneHeaderValueNonAscii, strip: true, trust: false;
    ValueWhitespace => "valueWhitespace", HygieneHeaderValueWhitespace, strip: false, trust: false;
    SingletonHeaders => "singletonHeaders", HygieneSingletonHeaderRepeated, strip: false, trust: false;
    InjectedValues => "injectedValues", HygieneHeaderValueInjected, strip: false, trust: false;
    Authority => "authority", HygieneAuthorityInvalid, strip: false, trust: false;
    Scheme => "scheme", HygieneSchemeInvalid, strip: false, trust: false;
    MethodToken => "methodToken", HygieneMethodInvalid, strip: false, trust: false;
    MethodAllowlist => "methodAllowlist", HygieneMethodNotAllowed, strip: false, trust: false;
    RiskyMethods => "riskyMethods", HygieneMethodRisky, strip: false, trust: false;
    MethodOverride => "methodOverride", HygieneMethodOverride, strip: true, trust: false;
    H2cUpgrade => "h2cUpgrade", HygieneCleartextUpgrade, strip: true, trust: false;
    Websocket => "websocket", HygieneWebsocketMalformed, strip: false, trust: false;
    Expect => "expect", HygieneExpectInvalid, strip: true, trust: false;
    EncodedSlash => "encodedSlash", HygienePathEncodedSlash, strip: false, trust: false;
    DotSegments => "dotSegments", HygienePathDotSegment, strip: false, trust: false;
    DoubleSlash => "doubleSlash", HygienePathDoubleSlash, strip: false, trust: false;
    PathParameters => "pathParameters", HygienePathParameter, strip: false, trust: false;
    DoubleEncoding => "doubleEncoding", HygienePathDoubleEncoding, strip: false, trust: false;
    EncodedControl => "encodedControl", HygienePathEncodedControl, strip: false, trust: false;
    InvalidUtf8 => "invalidUtf8", HygienePathInvalidUnicode, strip: false, trust: false;
    EncodedDelimiters => "encodedDelimiters", HygienePathEncodedDelimiter, strip: false, trust: false;
    PathCharacters => "pathCharacters", HygienePathInvalidCharacter, strip: false, trust: false;
    EnvoyHeaders => "envoyHeaders", HygieneEnvoyHeader, strip: true, trust: true;
    PeerMetadata => "peerMetadata", HygienePeerMetadataUntrusted, strip: true, trust: false;
    Xfcc => "xfcc", HygieneXfccUntrustedElement, strip: true, trust: false;
    ForwardedRouting => "forwardedRouting", HygieneForwardedRoutingHeader, strip: true, trust: true;
    UrlOverride => "urlOverride", HygieneUrlOverrideHeader, strip: true, trust: true;
    ClientIp => "clientIp", HygieneClientIpHeader, strip: true, trust: true;
    ProxyAuthorization => "proxyAuthorization", HygieneProxyAuthorization, strip: true, trust: true;
    RequestId => "requestId", HygieneRequestIdInvalid, strip: true, trust: true;
    ForwardedFor => "forwardedFor", HygieneForwardedForInvalid, strip: true, trust: false;
    TraceContext => "traceContext", HygieneTraceContextInvalid, strip: true, trust: false;
    TraceForcing => "traceForcing", HygieneTraceForcingHeader, strip: true, trust: false;
}

/// The most headers `singletonHeaders.headers` may list.
const MAX_EXTRA_SINGLETONS: usize = 16;
/// The largest limit a guard accepts (`max`).
const MAX_LIMIT: u64 = 10_000_000;
/// The methods `riskyMethods` refuses unless allowed.
const RISKY_METHODS: [&str; 3] = ["TRACE", "TRACK", "CONNECT"];

/// One guard, compiled.
#[derive(Debug, Clone, Copy)]
struct Slot {
    enabled: bool,
    remedy: Remedy,
    /// The finding is enforced (rejects or strips): action is not `log` and the policy, the
    /// check and the guard all enforce.
    enforced: bool,
    trust_mtls_peers: bool,
    max: u64,
}

const DISABLED: Slot = Slot { enabled: false, remedy: Remedy::Log, enforced: false, trust_mtls_peers: false, max: 0 };

/// The compiled hygiene check (the `SmugglingGuard` of the design notes).
#[derive(Debug)]
pub struct RequestHygiene {
    slots: Vec<Slot>,
    body_methods: Vec<Vec<u8>>,
    allowed_methods: Vec<Vec<u8>>,
    risky_refused: Vec<&'static [u8]>,
    singleton_extra: Vec<Vec<u8>>,
    allow_utf8: bool,
    websocket_require_key: bool,
    expect_require_body: bool,
    envoy_allow: Vec<Vec<u8>>,
    xfcc_trusted: Vec<PrincipalPattern>,
    /// `singletonHeaders.identityHeaders`: the built-in identity headers must be single.
    identity_singletons: bool,
    /// `scheme.trustForwardedProto`.
    trust_forwarded_proto: bool,
    needs: Needs,
}

fn common_of(guards: &GuardsDoc, g: Guard) -> Option<CommonDoc> {
    let g = match g {
        Guard::HeaderCount => guards.header_count.as_ref().map(|d| d.common()),
        Guard::HeaderBytes => guards.header_bytes.as_ref().map(|d| d.common()),
        Guard::HeaderLength => guards.header_length.as_ref().map(|d| d.common()),
        Guard::PathLength => guards.path_length.as_ref().map(|d| d.common()),
        Guard::QueryParams => guards.query_params.as_ref().map(|d| d.common()),
        Guard::ContentLength => guards.content_length.as_ref().map(|d| d.common()),
        Guard::TransferEncoding => guards.transfer_encoding.as_ref().map(|d| d.common()),
        Guard::TeHeader => guards.te_header.as_ref().map(|d| d.common()),
        Guard::BodyOnGet => guards.body_on_get.as_ref().map(|d| d.common()),
        Guard::BodyOnUpgrade => guards.body_on_upgrade.as_ref().map(|d| d.common()),
        Guard::UnderscoreHeaders => guards.underscore_headers.as_ref().map(|d| d.common()),
        Guard::HeaderNames => guards.header_names.as_ref().map(|d| d.common()),
        Guard::ControlBytes => guards.control_bytes.as_ref().map(|d| d.common()),
        Guard::NonAsciiValues => guards.non_ascii_values.as_ref().map(|d| d.common()),
        Guard::ValueWhitespace => guards.value_whitespace.as_ref().map(|d| d.common()),
        Guard::SingletonHeaders => guards.singleton_headers.as_ref().map(|d| d.common()),
        Guard::InjectedValues => guards.injected_values.as_ref().map(|d| d.common()),
        Guard::Authority => guards.authority.as_ref().map(|d| d.common()),
        Guard::Scheme => guards.scheme.as_ref().map(|d| d.common()),
        Guard::MethodToken => guards.method_token.as_ref().map(|d| d.common()),
        Guard::MethodAllowlist => guards.method_allowlist.as_ref().map(|d| d.common()),
        Guard::RiskyMethods => guards.risky_methods.as_ref().map(|d| d.common()),
        Guard::MethodOverride => guards.method_override.as_ref().map(|d| d.common()),
        Guard::H2cUpgrade => guards.h2c_upgrade.as_ref().map(|d| d.common()),
        Guard::Websocket => guards.websocket.as_ref().map(|d| d.common()),
        Guard::Expect => guards.expect.as_ref().map(|d| d.common()),
        Guard::EncodedSlash => guards.encoded_slash.as_ref().map(|d| d.common()),
        Guard::DotSegments => guards.dot_segments.as_ref().map(|d| d.common()),
        Guard::DoubleSlash => guards.double_slash.as_ref().map(|d| d.common()),
        Guard::PathParameters => guards.path_parameters.as_ref().map(|d| d.common()),
        Guard::DoubleEncoding => guards.double_encoding.as_ref().map(|d| d.common()),
        Guard::EncodedControl => guards.encoded_control.as_ref().map(|d| d.common()),
        Guard::InvalidUtf8 => guards.invalid_utf8.as_ref().map(|d| d.common()),
        Guard::EncodedDelimiters => guards.encoded_delimiters.as_ref().map(|d| d.common()),
        Guard::PathCharacters => guards.path_characters.as_ref().map(|d| d.common()),
        Guard::EnvoyHeaders => guards.envoy_headers.as_ref().map(|d| d.common()),
        Guard::PeerMetadata => guards.peer_metadata.as_ref().map(|d| d.common()),
        Guard::Xfcc => guards.xfcc.as_ref().map(|d| d.common()),
        Guard::ForwardedRouting => guards.forwarded_routing.as_ref().map(|d| d.common()),
        Guard::UrlOverride => guards.url_override.as_ref().map(|d| d.common()),
        Guard::ClientIp => guards.client_ip.as_ref().map(|d| d.common()),
        Guard::ProxyAuthorization => guards.proxy_authorization.as_ref().map(|d| d.common()),
        Guard::RequestId => guards.request_id.as_ref().map(|d| d.common()),
        Guard::ForwardedFor => guards.forwarded_for.as_ref().map(|d| d.common()),
        Guard::TraceContext => guards.trace_context.as_ref().map(|d| d.common()),
        Guard::TraceForcing => guards.trace_forcing.as_ref().map(|d| d.common()),
    };
    g
}

fn limit_of(guards: &GuardsDoc, g: Guard) -> Option<u64> {
    let doc = match g {
        Guard::HeaderCount => guards.header_count.as_ref(),
        Guard::HeaderBytes => guards.header_bytes.as_ref(),
        Guard::HeaderLength => guards.header_length.as_ref(),
        Guard::PathLength => guards.path_length.as_ref(),
        Guard::QueryParams => guards.query_params.as_ref(),
        _ => None,
    };
    doc.and_then(|d| d.max)
}

fn trust_of(guards: &GuardsDoc, g: Guard) -> Option<bool> {
    let doc = match g {
        Guard::EnvoyHeaders => return guards.envoy_headers.as_ref().and_then(|d| d.trust_mtls_peers),
        Guard::ForwardedRouting => guards.forwarded_routing.as_ref(),
        Guard::UrlOverride => guards.url_override.as_ref(),
        Guard::ClientIp => guards.client_ip.as_ref(),
        Guard::ProxyAuthorization => guards.proxy_authorization.as_ref(),
        Guard::RequestId => guards.request_id.as_ref(),
        _ => None,
    };
    doc.and_then(|d| d.trust_mtls_peers)
}

fn compile_methods(list: &[String], at: &str, errs: &mut ConfigErrors) -> Vec<Vec<u8>> {
    for (i, m) in list.iter().enumerate() {
        if !is_method_token(m) {
            errs.push(format!("{at}[{i}]"), "must be an uppercase HTTP method token such as GET");
        }
    }
    list.iter().map(|m| m.as_bytes().to_vec()).collect()
}

impl RequestHygiene {
    fn slot(&self, g: Guard) -> Slot {
        self.slots.get(g as usize).copied().unwrap_or(DISABLED)
    }

    fn trusted_peer(&self, slot: Slot, req: &RequestView<'_>) -> bool {
        slot.trust_mtls_peers && req.peer.mtls
    }

    fn tripped(&self, g: Guard, slot: Slot, s: &Scan<'_>, path: &PathFacts, req: &RequestView<'_>) -> bool {
        let over = |n: usize| n as u64 > slot.max;
        match g {
            Guard::HeaderCount => over(s.count),
            Guard::HeaderBytes => over(s.bytes),
            Guard::HeaderLength => over(s.longest),
            Guard::PathLength => over(s.path.len()),
            Guard::QueryParams => over(path.query_params),
            Guard::ContentLength => {
                s.content_length.count > 1
                    || (s.content_length.present() && parse_content_length(s.content_length.first).is_none())
            }
            Guard::TransferEncoding => {
                s.transfer_encoding.present()
                    && (s.transfer_encoding.count > 1
                        || !trim(s.transfer_encoding.first).eq_ignore_ascii_case(b"chunked")
                        || s.content_length.present())
            }
            Guard::TeHeader => {
                s.te.present() && tokens(s.te.first).any(|t| !t.eq_ignore_ascii_case(b"trailers"))
                    || s.te.count > 1
                    || (s.te.present() && trim(s.te.first).is_empty())
            }
            Guard::BodyOnGet => !s.is_upgrade() && s.has_body(req) && self.body_methods.iter().any(|m| m == s.method),
            Guard::BodyOnUpgrade => {
                s.is_upgrade()
                    && (s.transfer_encoding.present() || parse_content_length(s.content_length.first).unwrap_or(0) > 0)
            }
            Guard::UnderscoreHeaders => s.underscore,
            Guard::HeaderNames => s.bad_name,
            Guard::ControlBytes => s.control,
            Guard::NonAsciiValues => s.non_ascii,
            Guard::ValueWhitespace => s.whitespace,
            Guard::SingletonHeaders => s.singleton_repeated() || (self.identity_singletons && s.identity_repeated()),
            Guard::InjectedValues => s.injected,
            Guard::Authority => !authority_is_valid(req),
            Guard::Scheme => {
                let https_ok = req.tls || (self.trust_forwarded_proto && s.forwarded_https());
                s.scheme.is_some_and(|sc| !(sc == b"http" || (sc == b"https" && https_ok)))
                    || (!self.trust_forwarded_proto && !s.forwarded_proto_consistent(req.tls))
            }
            Guard::MethodToken => {
                s.method.is_empty()
                    || !s.method.iter().all(|&b| is_tchar(b))
                    || s.method.iter().any(u8::is_ascii_lowercase)
            }
            Guard::MethodAllowlist => !self.allowed_methods.iter().any(|m| m == s.method),
            Guard::RiskyMethods => self.risky_refused.contains(&s.method),
            Guard::MethodOverride => s.method_override.present(),
            Guard::H2cUpgrade => {
                s.http2_settings.present()
                    || (s.upgrade.present() && tokens(s.upgrade.first).any(|t| t.eq_ignore_ascii_case(b"h2c")))
            }
            Guard::Websocket => {
                s.upgrade.present()
                    && tokens(s.upgrade.first).any(|t| t.eq_ignore_ascii_case(b"websocket"))
                    && !self.websocket_handshake_ok(s)
            }
            Guard::Expect => {
                s.expect.present()
                    && (s.expect.count > 1
                        || !trim(s.expect.first).eq_ignore_ascii_case(b"100-continue")
                        || (self.expect_require_body && !s.has_body(req)))
            }
            Guard::EncodedSlash => path.encoded_slash,
            Guard::DotSegments => path.dot_segment,
            Guard::DoubleSlash => path.double_slash,
            Guard::PathParameters => path.parameter,
            Guard::DoubleEncoding => path.double_encoding,
            Guard::EncodedControl => path.encoded_control,
            Guard::InvalidUtf8 => path.invalid_utf8,
            Guard::EncodedDelimiters => path.encoded_delimiter,
            Guard::PathCharacters => path.invalid_character,
            Guard::EnvoyHeaders => s.envoy.present() && !self.trusted_peer(slot, req),
            Guard::PeerMetadata => s.peer_metadata.present() && !req.peer.mtls,
            Guard::Xfcc => s.xfcc.present() && self.xfcc_untrusted(req),
            Guard::ForwardedRouting => s.forwarded_routing.present() && !self.trusted_peer(slot, req),
            Guard::UrlOverride => s.url_override.present() && !self.trusted_peer(slot, req),
            Guard::ClientIp => s.client_ip.present() && !self.trusted_peer(slot, req),
            Guard::ProxyAuthorization => s.proxy_authorization.present() && !self.trusted_peer(slot, req),
            Guard::RequestId => {
                s.request_id.present()
                    && !self.trusted_peer(slot, req)
                    && (s.request_id.count > 1 || !request_id_is_valid(s.request_id.first))
            }
            Guard::ForwardedFor => s.forwarded_for_bad,
            Guard::TraceContext => s.trace_bad,
            Guard::TraceForcing => s.trace_forcing,
        }
    }

    /// GET (or HTTP/2's extended CONNECT), version 13, a key of 16 base64-encoded bytes (when
    /// required; RFC 8441 handshakes over HTTP/2 have none), and `connection: upgrade` over
    /// HTTP/1.
    fn websocket_handshake_ok(&self, s: &Scan<'_>) -> bool {
        let extended_connect = s.method == b"CONNECT" && s.protocol;
        if s.method != b"GET" && !extended_connect {
            return false;
        }
        if s.ws_version.count != 1 || trim(s.ws_version.first) != b"13" {
            return false;
        }
        if extended_connect {
            return true;
        }
        if self.websocket_require_key && (s.ws_key.count != 1 || !websocket_key_is_valid(trim(s.ws_key.first))) {
            return false;
        }
        s.connection.present() && tokens(s.connection.first).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
    }

    /// Not an mTLS peer: Envoy adds nothing there, so any XFCC is the client's. An mTLS peer:
    /// only the last element is the local Envoy's; earlier ones are kept only when the peer is
    /// one the policy trusts to forward them.
    fn xfcc_untrusted(&self, req: &RequestView<'_>) -> bool {
        if !req.peer.mtls {
            return true;
        }
        match req.xfcc().map(|e| e.count) {
            Err(_) => true,
            Ok(0 | 1) => false,
            Ok(_) => !self.peer_forwards_xfcc(req),
        }
    }

    fn peer_forwards_xfcc(&self, req: &RequestView<'_>) -> bool {
        let Some(id) = req.peer.uri_san.and_then(|u| SpiffeId::parse(u).ok()) else { return false };
        self.xfcc_trusted.iter().any(|p| p.matches(&id))
    }

    /// The header mutations of an enforced strip.
    fn strip(&self, g: Guard, req: &RequestView<'_>, out: &mut Vec<HeaderMutation>) {
        if g == Guard::Xfcc {
            const XFCC: &[u8] = b"x-forwarded-client-cert";
            let last = match req.xfcc() {
                Ok(elements) if req.peer.mtls => elements.last,
                _ => None,
            };
            out.retain(|m| m.name() != XFCC);
            out.push(match last {
                Some(el) => HeaderMutation::Set { name: XFCC.to_vec(), value: el.to_vec() },
                None => HeaderMutation::Remove { name: XFCC.to_vec() },
            });
            return;
        }
        let bad_traces = if g == Guard::TraceContext { bad_trace_kinds(req) } else { 0 };
        for &(name, value) in req.headers {
            let by_kind = matches!(classify(name), Known::Trace(t) if bad_traces & (1u32 << (t as u32)) != 0);
            if name.first() == Some(&b':') || !(by_kind || self.strips(g, name, value, req)) {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if !out.iter().any(|m| m.name() == lower.as_slice()) {
                out.push(HeaderMutation::Remove { name: lower });
            }
        }
    }

    /// Whether a strip by guard `g` removes this header.
    fn strips(&self, g: Guard, name: &[u8], value: &[u8], req: &RequestView<'_>) -> bool {
        let known = classify(name);
        match g {
            Guard::TeHeader => known == Known::Te,
            Guard::UnderscoreHeaders => name.contains(&b'_'),
            Guard::ControlBytes => has_control(value),
            Guard::NonAsciiValues => self.bad_non_ascii(value),
            Guard::MethodOverride => known == Known::MethodOverride,
            Guard::H2cUpgrade => matches!(known, Known::Upgrade | Known::Http2Settings),
            Guard::Expect => known == Known::Expect,
            Guard::EnvoyHeaders => known == Known::Envoy && !self.envoy_allowed(name) && !envoys_own(name, value, req),
            Guard::PeerMetadata => known == Known::PeerMetadata,
            Guard::ForwardedRouting => matches!(known, Known::ForwardedRouting | Known::Forwarded),
            Guard::ForwardedFor => {
                matches!(known, Known::ForwardedFor | Known::Forwarded)
                    || (known == Known::ClientAddr && !ip::forwarded_for_is_valid(value))
            }
            Guard::TraceForcing => match known {
                Known::ClientTraceId => true,
                Known::Trace(t) => forces_tracing(t),
                Known::Envoy => name.eq_ignore_ascii_case(FORCE_TRACE),
                _ => false,
            },
            Guard::UrlOverride => known == Known::UrlOverride,
            Guard::ClientIp => matches!(known, Known::ClientIp | Known::ClientAddr),
            Guard::ProxyAuthorization => known == Known::ProxyAuthorization,
            Guard::RequestId => known == Known::RequestId,
            _ => false,
        }
    }

    fn envoy_allowed(&self, name: &[u8]) -> bool {
        self.envoy_allow.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    fn bad_non_ascii(&self, value: &[u8]) -> bool {
        value.iter().any(|&b| b >= 0x80) && (!self.allow_utf8 || std::str::from_utf8(value).is_err())
    }
}

/// Whether this is Envoy's own `x-envoy-external-address`: on an edge listener
/// (`use_remote_address: true`) Envoy overwrites it with the downstream's address, so a value
/// equal to `source.address` is Envoy's (or a client's that says what is true anyway). Any
/// other value is a client's, and the guard strips it, whatever the listener's setting.
fn envoys_own(name: &[u8], value: &[u8], req: &RequestView<'_>) -> bool {
    name.eq_ignore_ascii_case(crate::view::EXTERNAL_ADDRESS)
        && req.source_address.is_some_and(|source| ip::same_address(value, source))
}

impl Check for RequestHygiene {
    type Doc = HygieneDoc;
    const SECTION: &'static str = "hygiene";

    fn compile(doc: &HygieneDoc, cx: &Context, errs: &mut ConfigErrors) -> RequestHygiene {
        let at = Self::SECTION;
        let mode = cx.enforcement(doc.mode);
        let guards = &doc.guards;
        let mut slots = Vec::with_capacity(Guard::ALL.len());
        for &g in Guard::ALL {
            let mut c = presets::common(doc.preset, g);
            let gat = || format!("{at}.guards.{}", g.name());
            if let Some(o) = common_of(guards, g) {
                c.enabled = o.enabled.unwrap_or(c.enabled);
                c.action = o.action.unwrap_or(c.action);
                c.mode = o.mode.unwrap_or(c.mode);
            }
            if c.action == GuardAction::Strip && !g.can_strip() {
                errs.push(
                    format!("{}.action", gat()),
                    "strip is not available for this guard (there is nothing it could remove): use reject or log",
                );
            }
            if let Some(max) = limit_of(guards, g) {
                if !(1..=MAX_LIMIT).contains(&max) {
                    errs.push(format!("{}.max", gat()), format!("must be a whole number from 1 to {MAX_LIMIT}"));
                }
                c.max = max;
            }
            if let Some(trust) = trust_of(guards, g) {
                c.trust_mtls_peers = trust;
            }
            let remedy = match c.action {
                GuardAction::Reject => Remedy::Reject,
                GuardAction::Strip => Remedy::Strip,
                GuardAction::Log => Remedy::Log,
            };
            slots.push(Slot {
                enabled: c.enabled,
                remedy,
                enforced: remedy != Remedy::Log && mode.rule(Some(c.mode)),
                trust_mtls_peers: c.trust_mtls_peers && g.takes_trust(),
                max: c.max,
            });
        }

        let mut p = presets::params(doc.preset);
        let gat = |name: &str, field: &str| format!("{at}.guards.{name}.{field}");
        if let Some(m) = guards.body_on_get.as_ref().and_then(|d| d.methods.clone()) {
            p.body_methods = m;
        }
        let body_methods = compile_methods(&p.body_methods, &gat("bodyOnGet", "methods"), errs);
        if let Some(m) = guards.method_allowlist.as_ref().and_then(|d| d.methods.clone()) {
            if m.is_empty() {
                errs.push(gat("methodAllowlist", "methods"), "must list at least one method (or set enabled: false)");
            }
            p.allowed_methods = m;
        }
        let allowed_methods = compile_methods(&p.allowed_methods, &gat("methodAllowlist", "methods"), errs);
        if let Some(a) = guards.risky_methods.as_ref().and_then(|d| d.allow.clone()) {
            p.risky_allowed = a;
        }
        for (i, m) in p.risky_allowed.iter().enumerate() {
            if !RISKY_METHODS.contains(&m.as_str()) {
                errs.push(
                    format!("{}[{i}]", gat("riskyMethods", "allow")),
                    "must be TRACE, TRACK or CONNECT (the methods this guard refuses)",
                );
            }
        }
        let risky_refused =
            RISKY_METHODS.iter().filter(|m| !p.risky_allowed.iter().any(|a| a == *m)).map(|m| m.as_bytes()).collect();
        if let Some(h) = guards.singleton_headers.as_ref().and_then(|d| d.headers.clone()) {
            p.singleton_extra = h;
        }
        if p.singleton_extra.len() > MAX_EXTRA_SINGLETONS {
            errs.push(gat("singletonHeaders", "headers"), format!("at most {MAX_EXTRA_SINGLETONS} headers"));
        }
        for (i, h) in p.singleton_extra.iter().enumerate() {
            if h.is_empty() || !h.bytes().all(is_tchar) {
                errs.push(
                    format!("{}[{i}]", gat("singletonHeaders", "headers")),
                    "must be a header name (an RFC 9110 token)",
                );
            }
        }
        let singleton_extra =
            p.singleton_extra.iter().take(MAX_EXTRA_SINGLETONS).map(|h| h.to_ascii_lowercase().into_bytes()).collect();
        if let Some(v) = guards.non_ascii_values.as_ref().and_then(|d| d.allow_utf8) {
            p.allow_utf8 = v;
        }
        if let Some(v) = guards.websocket.as_ref().and_then(|d| d.require_key) {
            p.websocket_require_key = v;
        }
        if let Some(v) = guards.expect.as_ref().and_then(|d| d.require_body) {
            p.expect_require_body = v;
        }
        if let Some(v) = guards.singleton_headers.as_ref().and_then(|d| d.identity_headers) {
            p.identity_singletons = v;
        }
        if let Some(v) = guards.scheme.as_ref().and_then(|d| d.trust_forwarded_proto) {
            p.trust_forwarded_proto = v;
        }
        if let Some(a) = guards.envoy_headers.as_ref().and_then(|d| d.allow.clone()) {
            p.envoy_allow = a;
        }
        for (i, h) in p.envoy_allow.iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            if !lower.starts_with("x-envoy-") || !h.bytes().all(is_tchar) {
                errs.push(format!("{}[{i}]", gat("envoyHeaders", "allow")), "must be an x-envoy-* header name");
            }
        }
        let envoy_allow: Vec<Vec<u8>> = p.envoy_allow.iter().map(|h| h.to_ascii_lowercase().into_bytes()).collect();
        if let Some(t) = guards.xfcc.as_ref().and_then(|d| d.trust_forwarded_from.clone()) {
            p.xfcc_trusted = t;
        }
        let mut xfcc_trusted = Vec::with_capacity(p.xfcc_trusted.len());
        for (i, t) in p.xfcc_trusted.iter().enumerate() {
            match PrincipalPattern::parse(t) {
                Ok(pat) => xfcc_trusted.push(pat),
                Err(e) => errs.push(format!("{}[{i}]", gat("xfcc", "trustForwardedFrom")), e),
            }
        }

        let on = |g: Guard| slots.get(g as usize).is_some_and(|s| s.enabled);
        let trusting = |g: Guard| slots.get(g as usize).is_some_and(|s| s.enabled && s.trust_mtls_peers);
        let needs = Needs {
            mtls: on(Guard::PeerMetadata)
                || on(Guard::Xfcc)
                || [
                    Guard::EnvoyHeaders,
                    Guard::ForwardedRouting,
                    Guard::UrlOverride,
                    Guard::ClientIp,
                    Guard::ProxyAuthorization,
                    Guard::RequestId,
                ]
                .into_iter()
                .any(trusting),
            peer: on(Guard::Xfcc) && !xfcc_trusted.is_empty(),
            tls: on(Guard::Scheme),
            source_address: on(Guard::EnvoyHeaders)
                && !envoy_allow.iter().any(|a| a.eq_ignore_ascii_case(crate::view::EXTERNAL_ADDRESS)),
            ..Needs::default()
        };
        RequestHygiene {
            slots,
            body_methods,
            allowed_methods,
            risky_refused,
            singleton_extra,
            allow_utf8: p.allow_utf8,
            websocket_require_key: p.websocket_require_key,
            expect_require_body: p.expect_require_body,
            envoy_allow,
            xfcc_trusted,
            identity_singletons: p.identity_singletons,
            trust_forwarded_proto: p.trust_forwarded_proto,
            needs,
        }
    }

    /// Which connection properties the guards read.
    fn needs(&self) -> Needs {
        self.needs
    }

    /// Run every enabled guard, in order, adding findings (and, for enforced strips, header
    /// mutations) to `decision`. Stops at the first enforced rejection.
    fn evaluate(&self, req: &RequestView<'_>, decision: &mut Decision) {
        let scan = Scan::new(req, self);
        let path = req.target();
        for &g in Guard::ALL {
            let slot = self.slot(g);
            if !slot.enabled || !self.tripped(g, slot, &scan, path, req) {
                continue;
            }
            decision.findings.push(Finding::new(g.code(), g.rule(), slot.enforced, slot.remedy));
            match (slot.remedy, slot.enforced) {
                (Remedy::Reject, true) => return,
                (Remedy::Strip, true) => self.strip(g, req, &mut decision.mutations),
                _ => {}
            }
        }
    }
}

/// The headers some guard looks at by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    ContentLength,
    TransferEncoding,
    Te,
    Host,
    ContentType,
    Authorization,
    Expect,
    Upgrade,
    Connection,
    Http2Settings,
    WsKey,
    WsVersion,
    MethodOverride,
    PeerMetadata,
    Xfcc,
    ForwardedRouting,
    UrlOverride,
    ClientIp,
    ProxyAuthorization,
    RequestId,
    Envoy,
    /// `x-forwarded-for`: validated, never stripped (Envoy appends to it).
    ForwardedFor,
    /// A `clientIp` header whose value is an address (or a list): validated like
    /// `x-forwarded-for` as well.
    ClientAddr,
    /// `forwarded`: a `forwardedRouting` header whose `for=` nodes are validated too.
    Forwarded,
    /// `x-forwarded-proto`: read by the `scheme` guard.
    ForwardedProto,
    /// A header of [`IDENTITY`], by index.
    Identity(u8),
    /// A tracing header whose format is checked.
    Trace(trace::Trace),
    /// `x-client-trace-id`.
    ClientTraceId,
    Other,
}

/// The user, tenant, API-key and credential headers `singletonHeaders.identityHeaders` wants
/// once (oauth2-proxy, Pomerium, Kong, Azure App Service, Google IAP, AWS ALB, the API-key
/// conventions). Not `cookie`: HTTP/2 splits it into many fields (RFC 9113 8.2.3).
/// `classify` names them by their index here (a test keeps the two in step); at most 64.
#[cfg_attr(not(test), allow(dead_code))]
const IDENTITY: [&[u8]; 38] = [
    b"x-user",
    b"x-user-id",
    b"x-userid",
    b"x-username",
    b"x-user-email",
    b"x-email",
    b"x-auth-request-user",
    b"x-auth-request-email",
    b"x-auth-request-access-token",
    b"x-forwarded-user",
    b"x-forwarded-email",
    b"x-forwarded-preferred-username",
    b"x-forwarded-access-token",
    b"x-remote-user",
    b"remote-user",
    b"x-authenticated-user",
    b"x-authenticated-userid",
    b"x-consumer-id",
    b"x-consumer-username",
    b"x-tenant",
    b"x-tenant-id",
    b"x-org-id",
    b"x-organization-id",
    b"x-account-id",
    b"x-api-key",
    b"api-key",
    b"apikey",
    b"x-goog-api-key",
    b"x-amz-security-token",
    b"x-auth-token",
    b"x-access-token",
    b"x-client-cert",
    b"x-ms-client-principal",
    b"x-ms-client-principal-id",
    b"x-ms-client-principal-name",
    b"x-goog-authenticated-user-email",
    b"x-goog-iap-jwt-assertion",
    b"x-amzn-oidc-identity",
];

/// One lowercase copy on the stack, one `match`: no allocation, no hashing.
fn classify(name: &[u8]) -> Known {
    const PREFIX: &[u8] = b"x-envoy-";
    const VIEWER: &[u8] = b"cloudfront-viewer-";
    let has_prefix = |p: &[u8]| name.get(..p.len()).is_some_and(|n| n.eq_ignore_ascii_case(p));
    let mut buf = [0u8; 32];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return if has_prefix(PREFIX) {
            Known::Envoy
        } else if has_prefix(VIEWER) {
            Known::ClientIp
        } else {
            Known::Other
        };
    };
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    match &*lower {
        b"content-length" => Known::ContentLength,
        b"transfer-encoding" => Known::TransferEncoding,
        b"te" => Known::Te,
        b"host" => Known::Host,
        b"content-type" => Known::ContentType,
        b"authorization" => Known::Authorization,
        b"expect" => Known::Expect,
        b"upgrade" => Known::Upgrade,
        b"connection" => Known::Connection,
        b"http2-settings" => Known::Http2Settings,
        b"sec-websocket-key" => Known::WsKey,
        b"sec-websocket-version" => Known::WsVersion,
        b"x-http-method-override" | b"x-http-method" | b"x-method-override" => Known::MethodOverride,
        b"x-envoy-peer-metadata" | b"x-envoy-peer-metadata-id" => Known::PeerMetadata,
        b"x-forwarded-client-cert" => Known::Xfcc,
        b"x-forwarded-for" => Known::ForwardedFor,
        b"forwarded" => Known::Forwarded,
        b"x-forwarded-proto" => Known::ForwardedProto,
        // The original host, port, prefix and scheme as proxies, CDNs and frameworks pass them
        // (Rails, Django, Express `trust proxy`, Spring `ForwardedHeaderFilter`, ASP.NET
        // `ForwardedHeaders`, IIS ARR, Azure Front Door, CloudFront).
        b"x-forwarded-host"
        | b"x-forwarded-prefix"
        | b"x-forwarded-port"
        | b"x-forwarded-scheme"
        | b"x-forwarded-protocol"
        | b"x-forwarded-server"
        | b"x-forwarded-ssl"
        | b"x-url-scheme"
        | b"x-scheme"
        | b"front-end-https"
        | b"x-arr-ssl"
        | b"cloudfront-forwarded-proto"
        | b"x-original-host"
        | b"x-host"
        | b"x-http-host-override" => Known::ForwardedRouting,
        // URL overrides (IIS URL Rewrite, Symfony, Laravel, Zend; the "403 bypass" lists).
        b"x-original-url"
        | b"x-rewrite-url"
        | b"x-original-uri"
        | b"x-forwarded-uri"
        | b"x-proxy-url"
        | b"x-http-destinationurl" => Known::UrlOverride,
        // "The client's address" as CDNs, load balancers and frameworks read it: an address
        // (or a list of them), checked as x-forwarded-for's entries are...
        b"x-real-ip"
        | b"true-client-ip"
        | b"x-client-ip"
        | b"client-ip"
        | b"x-cluster-client-ip"
        | b"cf-connecting-ip"
        | b"cf-connecting-ipv6"
        | b"cf-pseudo-ipv4"
        | b"fastly-client-ip"
        | b"x-original-forwarded-for"
        | b"forwarded-for"
        | b"x-appengine-user-ip"
        | b"x-azure-clientip"
        | b"x-azure-socketip"
        | b"x-originating-ip"
        | b"x-remote-ip"
        | b"x-remote-addr"
        | b"x-proxyuser-ip"
        | b"wl-proxy-client-ip"
        | b"proxy-client-ip"
        // Platforms' own (Fly.io, DigitalOcean App Platform, Netlify, Vercel, Sucuri) and the
        // names of the published "403 bypass" header lists.
        | b"fly-client-ip"
        | b"do-connecting-ip"
        | b"x-nf-client-connection-ip"
        | b"x-vercel-forwarded-for"
        | b"x-sucuri-clientip"
        | b"cluster-client-ip"
        | b"x-true-ip"
        | b"real-ip"
        | b"x-original-remote-addr"
        | b"x-custom-ip-authorization" => Known::ClientAddr,
        // ... or in a shape of its own (`x-forwarded: for=...`, CloudFront's unbracketed
        // `v6:port`, the viewer's country).
        b"x-forwarded" => Known::ClientIp,
        n if n.starts_with(VIEWER) => Known::ClientIp,
        b"proxy-authorization" => Known::ProxyAuthorization,
        b"x-request-id" => Known::RequestId,
        b"traceparent" => Known::Trace(trace::Trace::Traceparent),
        b"tracestate" => Known::Trace(trace::Trace::Tracestate),
        b"b3" => Known::Trace(trace::Trace::B3),
        b"x-b3-traceid" => Known::Trace(trace::Trace::B3TraceId),
        b"x-b3-spanid" => Known::Trace(trace::Trace::B3SpanId),
        b"x-b3-parentspanid" => Known::Trace(trace::Trace::B3ParentSpanId),
        b"x-b3-sampled" => Known::Trace(trace::Trace::B3Sampled),
        b"x-b3-flags" => Known::Trace(trace::Trace::B3Flags),
        b"uber-trace-id" => Known::Trace(trace::Trace::UberTraceId),
        b"x-cloud-trace-context" => Known::Trace(trace::Trace::CloudTrace),
        b"x-amzn-trace-id" => Known::Trace(trace::Trace::AmznTrace),
        b"x-datadog-trace-id" => Known::Trace(trace::Trace::DatadogId),
        b"x-datadog-parent-id" => Known::Trace(trace::Trace::DatadogParentId),
        b"x-datadog-sampling-priority" => Known::Trace(trace::Trace::DatadogPriority),
        b"x-datadog-origin" => Known::Trace(trace::Trace::DatadogOther),
        b"x-datadog-tags" => Known::Trace(trace::Trace::DatadogTags),
        b"x-client-trace-id" => Known::ClientTraceId,
        n if n.starts_with(PREFIX) => Known::Envoy,
        b"x-user" => Known::Identity(0),
        b"x-user-id" => Known::Identity(1),
        b"x-userid" => Known::Identity(2),
        b"x-username" => Known::Identity(3),
        b"x-user-email" => Known::Identity(4),
        b"x-email" => Known::Identity(5),
        b"x-auth-request-user" => Known::Identity(6),
        b"x-auth-request-email" => Known::Identity(7),
        b"x-auth-request-access-token" => Known::Identity(8),
        b"x-forwarded-user" => Known::Identity(9),
        b"x-forwarded-email" => Known::Identity(10),
        b"x-forwarded-preferred-username" => Known::Identity(11),
        b"x-forwarded-access-token" => Known::Identity(12),
        b"x-remote-user" => Known::Identity(13),
        b"remote-user" => Known::Identity(14),
        b"x-authenticated-user" => Known::Identity(15),
        b"x-authenticated-userid" => Known::Identity(16),
        b"x-consumer-id" => Known::Identity(17),
        b"x-consumer-username" => Known::Identity(18),
        b"x-tenant" => Known::Identity(19),
        b"x-tenant-id" => Known::Identity(20),
        b"x-org-id" => Known::Identity(21),
        b"x-organization-id" => Known::Identity(22),
        b"x-account-id" => Known::Identity(23),
        b"x-api-key" => Known::Identity(24),
        b"api-key" => Known::Identity(25),
        b"apikey" => Known::Identity(26),
        b"x-goog-api-key" => Known::Identity(27),
        b"x-amz-security-token" => Known::Identity(28),
        b"x-auth-token" => Known::Identity(29),
        b"x-access-token" => Known::Identity(30),
        b"x-client-cert" => Known::Identity(31),
        b"x-ms-client-principal" => Known::Identity(32),
        b"x-ms-client-principal-id" => Known::Identity(33),
        b"x-ms-client-principal-name" => Known::Identity(34),
        b"x-goog-authenticated-user-email" => Known::Identity(35),
        b"x-goog-iap-jwt-assertion" => Known::Identity(36),
        b"x-amzn-oidc-identity" => Known::Identity(37),
        _ => Known::Other,
    }
}

const FORCE_TRACE: &[u8] = b"x-envoy-force-trace";

/// The [`trace::Trace`] kinds (one bit each) with a malformed value or repeated where they may
/// not be: what a `traceContext` strip removes (every field of the kind).
fn bad_trace_kinds(req: &RequestView<'_>) -> u32 {
    let (mut seen, mut bad) = (0u32, 0u32);
    for &(name, value) in req.headers {
        if let Known::Trace(t) = classify(name) {
            let bit = 1u32 << (t as u32);
            if !trace::is_valid(t, value) || (seen & bit != 0 && !trace::may_repeat(t)) {
                bad |= bit;
            }
            seen |= bit;
        }
    }
    bad
}

/// Trace headers that decide sampling: a client that sets them picks what is traced.
fn forces_tracing(t: trace::Trace) -> bool {
    matches!(t, trace::Trace::B3Sampled | trace::Trace::B3Flags | trace::Trace::DatadogPriority)
}

/// How often a header was seen, and its first value.
#[derive(Debug, Clone, Copy, Default)]
struct Seen<'a> {
    count: u32,
    first: &'a [u8],
}

impl<'a> Seen<'a> {
    fn add(&mut self, value: &'a [u8]) {
        if self.count == 0 {
            self.first = value;
        }
        self.count = self.count.saturating_add(1);
    }
    fn present(&self) -> bool {
        self.count > 0
    }
}

/// Everything the header guards need, from one pass over the header map.
#[derive(Debug, Default)]
struct Scan<'a> {
    method: &'a [u8],
    path: &'a [u8],
    authority: Seen<'a>,
    scheme: Option<&'a [u8]>,
    protocol: bool,
    /// Non-pseudo header fields.
    count: usize,
    /// Every name and value byte, pseudo-headers included.
    bytes: usize,
    /// The longest non-pseudo field (name + value).
    longest: usize,
    underscore: bool,
    bad_name: bool,
    control: bool,
    non_ascii: bool,
    whitespace: bool,
    content_length: Seen<'a>,
    transfer_encoding: Seen<'a>,
    te: Seen<'a>,
    host: Seen<'a>,
    content_type: Seen<'a>,
    authorization: Seen<'a>,
    expect: Seen<'a>,
    upgrade: Seen<'a>,
    connection: Seen<'a>,
    http2_settings: Seen<'a>,
    ws_key: Seen<'a>,
    ws_version: Seen<'a>,
    method_override: Seen<'a>,
    peer_metadata: Seen<'a>,
    xfcc: Seen<'a>,
    forwarded_routing: Seen<'a>,
    url_override: Seen<'a>,
    client_ip: Seen<'a>,
    proxy_authorization: Seen<'a>,
    request_id: Seen<'a>,
    /// `x-envoy-*` headers outside `envoyHeaders.allow` (peer metadata excluded).
    envoy: Seen<'a>,
    /// A header of `singletonHeaders.headers` repeated or comma-merged.
    extra_repeated: bool,
    forwarded_for: Seen<'a>,
    forwarded: Seen<'a>,
    forwarded_proto: Seen<'a>,
    /// Some `x-forwarded-for` or `forwarded` value holds an entry that is not an address.
    forwarded_for_bad: bool,
    /// The [`IDENTITY`] headers seen (one bit each).
    identity_seen: u64,
    /// An identity header repeated or comma-merged.
    identity_repeated: bool,
    /// A credential or identity value with a header line inside.
    injected: bool,
    /// The [`trace::Trace`] kinds seen (one bit each).
    trace_seen: u32,
    /// A tracing header malformed, or repeated where it may not be.
    trace_bad: bool,
    /// A header that forces tracing.
    trace_forcing: bool,
}

impl<'a> Scan<'a> {
    fn new(req: &RequestView<'a>, h: &RequestHygiene) -> Scan<'a> {
        let mut s = Scan::default();
        let mut extra_counts = [0u8; MAX_EXTRA_SINGLETONS];
        for &(name, value) in req.headers {
            s.bytes = s.bytes.saturating_add(name.len()).saturating_add(value.len());
            if let Some(pseudo) = name.strip_prefix(b":") {
                match pseudo {
                    b"method" => s.method = value,
                    b"path" => s.path = value,
                    b"authority" => s.authority.add(value),
                    b"scheme" => s.scheme = Some(value),
                    b"protocol" => s.protocol = true,
                    _ => s.bad_name = true,
                }
                continue;
            }
            s.count += 1;
            s.longest = s.longest.max(name.len().saturating_add(value.len()));
            let (bad_name, underscore) = name_classes(name);
            s.bad_name |= bad_name;
            s.underscore |= underscore;
            let (control, high) = value_classes(value);
            s.control |= control;
            s.non_ascii |= high && (!h.allow_utf8 || std::str::from_utf8(value).is_err());
            s.whitespace |= matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'));
            if !h.singleton_extra.is_empty() {
                for (i, extra) in h.singleton_extra.iter().enumerate() {
                    if extra.eq_ignore_ascii_case(name) {
                        if let Some(n) = extra_counts.get_mut(i) {
                            *n = n.saturating_add(1);
                            s.extra_repeated |= *n > 1 || has_top_level_comma(value);
                        }
                    }
                }
            }
            let known = classify(name);
            match known {
                Known::ForwardedFor => s.forwarded_for_bad |= !ip::forwarded_for_is_valid(value),
                Known::ClientAddr => s.forwarded_for_bad |= !ip::forwarded_for_is_valid(value),
                Known::Forwarded => {
                    s.forwarded_for_bad |= !ip::forwarded_is_valid(value);
                    s.forwarded_routing.add(value);
                }
                Known::Authorization | Known::ProxyAuthorization => {
                    s.injected |= trace::credentials_malformed(value);
                }
                Known::Identity(i) => {
                    s.injected |= trace::has_header_line(value);
                    let bit = 1u64 << i;
                    s.identity_repeated |= s.identity_seen & bit != 0 || has_top_level_comma(value);
                    s.identity_seen |= bit;
                    continue;
                }
                Known::Trace(t) => {
                    let bit = 1u32 << (t as u32);
                    s.trace_bad |= !trace::is_valid(t, value) || (s.trace_seen & bit != 0 && !trace::may_repeat(t));
                    s.trace_seen |= bit;
                    s.trace_forcing |= forces_tracing(t);
                    continue;
                }
                Known::ClientTraceId => {
                    s.trace_forcing = true;
                    continue;
                }
                Known::Envoy => s.trace_forcing |= name.eq_ignore_ascii_case(FORCE_TRACE),
                _ => {}
            }
            let seen = match known {
                Known::ContentLength => &mut s.content_length,
                Known::TransferEncoding => &mut s.transfer_encoding,
                Known::Te => &mut s.te,
                Known::Host => &mut s.host,
                Known::ContentType => &mut s.content_type,
                Known::Authorization => &mut s.authorization,
                Known::Expect => &mut s.expect,
                Known::Upgrade => &mut s.upgrade,
                Known::Connection => &mut s.connection,
                Known::Http2Settings => &mut s.http2_settings,
                Known::WsKey => &mut s.ws_key,
                Known::WsVersion => &mut s.ws_version,
                Known::MethodOverride => &mut s.method_override,
                Known::PeerMetadata => &mut s.peer_metadata,
                Known::Xfcc => &mut s.xfcc,
                Known::ForwardedRouting => &mut s.forwarded_routing,
                Known::UrlOverride => &mut s.url_override,
                Known::ClientIp | Known::ClientAddr => &mut s.client_ip,
                Known::ProxyAuthorization => &mut s.proxy_authorization,
                Known::RequestId => &mut s.request_id,
                Known::Envoy if !h.envoy_allowed(name) && !envoys_own(name, value, req) => &mut s.envoy,
                Known::ForwardedFor => &mut s.forwarded_for,
                Known::Forwarded => &mut s.forwarded,
                Known::ForwardedProto => &mut s.forwarded_proto,
                Known::Envoy | Known::Identity(_) | Known::Trace(_) | Known::ClientTraceId | Known::Other => continue,
            };
            seen.add(value);
        }
        s
    }

    fn is_upgrade(&self) -> bool {
        self.upgrade.present() || self.method == b"CONNECT" || self.protocol
    }

    /// A body follows: a positive Content-Length, or (without one) headers that did not end
    /// the stream. An unparseable Content-Length counts as a body.
    fn has_body(&self, req: &RequestView<'_>) -> bool {
        if self.content_length.present() {
            return parse_content_length(self.content_length.first).is_none_or(|n| n > 0);
        }
        !req.end_of_stream || self.transfer_encoding.present()
    }

    fn singleton_repeated(&self) -> bool {
        let authorities = self.authority.count + self.host.count;
        let host_conflict = self.authority.present() && self.host.present() && self.authority.first != self.host.first;
        (authorities > 1 && (host_conflict || self.authority.count > 1 || self.host.count > 1))
            || self.authority.first.contains(&b',')
            || self.host.first.contains(&b',')
            || self.content_length.count > 1
            || self.content_length.first.contains(&b',')
            || self.content_type.count > 1
            || has_top_level_comma(self.content_type.first)
            || self.authorization.count > 1
            || authorization_merged(self.authorization.first)
            || self.extra_repeated
    }

    /// An identity header (or Proxy-Authorization) repeated or comma-merged.
    fn identity_repeated(&self) -> bool {
        self.identity_repeated
            || self.proxy_authorization.count > 1
            || authorization_merged(self.proxy_authorization.first)
    }

    /// `x-forwarded-proto` says `https`, once.
    fn forwarded_https(&self) -> bool {
        self.forwarded_proto.count == 1 && trim(self.forwarded_proto.first).eq_ignore_ascii_case(b"https")
    }

    /// `x-forwarded-proto` is one `http` or `https`, and `https` only over TLS.
    fn forwarded_proto_consistent(&self, tls: bool) -> bool {
        let v = trim(self.forwarded_proto.first);
        self.forwarded_proto.count <= 1
            && (!self.forwarded_proto.present()
                || v.eq_ignore_ascii_case(b"http")
                || (tls && v.eq_ignore_ascii_case(b"https")))
    }
}

/// The authority as the one authority reader ([`crate::parse::host::parse_authority`]) reads
/// it, and not an IPv6 literal with a zone: a zone id means nothing to the server and is read
/// differently by every URL parser (`%25eth0`, `%eth0`), so a request carrying one is refused
/// even though the egress check can class it (link-local).
fn authority_is_valid(req: &RequestView<'_>) -> bool {
    req.parsed_authority().is_ok_and(|a| !matches!(a.host, Host::Ipv6 { zone: true, .. }))
}

fn has_control(value: &[u8]) -> bool {
    value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// (not a token, contains `_`) in one pass over a header name.
fn name_classes(name: &[u8]) -> (bool, bool) {
    let mut bad = name.is_empty();
    let mut underscore = false;
    for &b in name {
        bad |= !TCHAR.get(usize::from(b)).copied().unwrap_or(false);
        underscore |= b == b'_';
    }
    (bad, underscore)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Some byte of `x` is below `n` (n <= 128); bytes >= 0x80 never count.
fn swar_has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI != 0
}

/// (a control byte other than tab, or DEL; a byte >= 0x80) in one pass over a header value,
/// eight bytes at a time: values are most of a request's bytes, and wasm32 has no SIMD here.
fn value_classes(value: &[u8]) -> (bool, bool) {
    let mut high = 0u64;
    let mut suspect = false;
    let mut chunks = value.chunks_exact(8);
    for chunk in &mut chunks {
        let x = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        high |= x;
        // Below 0x20 (tab included: checked exactly below) or DEL (x ^ 0x7f has a zero byte).
        suspect |= swar_has_less(x, 0x20) || swar_has_less(x ^ (LO * 0x7f), 1);
    }
    let mut tail_high = false;
    for &b in chunks.remainder() {
        tail_high |= b >= 0x80;
        suspect |= b < 0x20 || b == 0x7f;
    }
    let control = suspect && has_control(value);
    (control, high & HI != 0 || tail_high)
}

/// 1 to 15 decimal digits, nothing else (no sign, no spaces inside, no list).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn has_top_level_comma(v: &[u8]) -> bool {
    v.contains(&b',') && top_level_elements(v).nth(1).is_some()
}

/// Envoy merges two `Authorization` lines into `a,b`. One credential has commas only between
/// its `auth-param`s (`Digest realm="x", nonce="y"`); an element after a comma that is not
/// `token = ...` is a second credential (`Bearer a,Bearer b`).
fn authorization_merged(v: &[u8]) -> bool {
    if !v.contains(&b',') {
        return false;
    }
    top_level_elements(v).skip(1).map(trim).filter(|e| !e.is_empty()).any(|e| {
        let token = e.iter().take_while(|&&b| is_tchar(b)).count();
        let rest = trim(e.get(token..).unwrap_or_default());
        token == 0 || rest.first() != Some(&b'=')
    })
}

/// 1 to 128 bytes of letters, digits and `-._:+/=` (UUIDs, W3C trace ids, AWS and most
/// vendors' ids); no spaces, quotes, commas (merged duplicates) or control bytes.
fn request_id_is_valid(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'='))
}

/// Base64 of exactly 16 bytes: 22 base64 characters (the last one carrying 2 bits) and `==`.
fn websocket_key_is_valid(k: &[u8]) -> bool {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    k.len() == 24
        && k.get(..22).is_some_and(|head| head.iter().all(b64))
        && matches!(k.get(21), Some(b'A' | b'Q' | b'g' | b'w'))
        && k.get(22..) == Some(b"==")
}

#[cfg(test)]
mod tests;
