//! Checks and reason codes. These names are a public interface: they appear in decision logs,
//! metric names, deny bodies and the documentation. Never rename one; add new ones.

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    Hygiene,
    PeerIdentity,
    Egress,
    Jwt,
    /// Upstream identity pinning: decided in the response phase (see
    /// [`crate::checks::upstream`]).
    Upstream,
}

impl Check {
    pub const ALL: [Check; 5] = [Check::Hygiene, Check::PeerIdentity, Check::Egress, Check::Jwt, Check::Upstream];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Hygiene => "hygiene",
            Check::PeerIdentity => "peer_identity",
            Check::Egress => "egress",
            Check::Jwt => "jwt",
            Check::Upstream => "upstream",
        }
    }
}

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $check:ident; )*) => {
        /// Why a request was (or would have been) denied.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ReasonCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ReasonCode {
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self { $( ReasonCode::$variant => $name, )* }
            }

            /// The check that emits this code.
            pub fn check(self) -> Check {
                match self { $( ReasonCode::$variant => Check::$check, )* }
            }

            pub fn from_name(name: &str) -> Option<ReasonCode> {
                match name { $( $name => Some(ReasonCode::$variant), )* _ => None }
            }
        }
    };
}

reason_codes! {
    /// Plaintext (or non-mTLS) downstream where the policy requires a peer identity: an mTLS
    /// downgrade, or a caller outside the mesh.
    PeerIdentityMissing => "peer_identity_missing", PeerIdentity;
    /// mTLS peer whose certificate carries no URI SAN, so no SPIFFE ID.
    PeerIdentityNoUriSan => "peer_identity_no_uri_san", PeerIdentity;
    /// mTLS peer whose certificate carries more than one URI SAN; an X.509-SVID has exactly one.
    PeerIdentityMultipleUriSans => "peer_identity_multiple_uri_sans", PeerIdentity;
    /// The URI SAN is not a valid SPIFFE ID.
    PeerIdentityInvalidSpiffeId => "peer_identity_invalid_spiffe_id", PeerIdentity;
    /// The SPIFFE ID belongs to a trust domain the policy does not accept.
    PeerIdentityTrustDomainNotAllowed => "peer_identity_trust_domain_not_allowed", PeerIdentity;
    /// An explicit deny rule matched the route and the principal.
    PeerIdentityPrincipalDenied => "peer_identity_principal_denied", PeerIdentity;
    /// The route has allow rules and none of them admits the principal.
    PeerIdentityPrincipalNotAllowed => "peer_identity_principal_not_allowed", PeerIdentity;
    /// No rule covers the route and the identity check's default action is deny.
    PeerIdentityNoMatchingRule => "peer_identity_no_matching_rule", PeerIdentity;
    /// The policy takes the identity from x-forwarded-client-cert and that header is missing
    /// or cannot be parsed.
    PeerIdentityXfccInvalid => "peer_identity_xfcc_invalid", PeerIdentity;
    /// Rules name hosts and the request's authority is not a host (userinfo, a bad port, a
    /// character no host has, a non-canonical IP spelling): it could not be matched safely.
    PeerIdentityAuthorityInvalid => "peer_identity_authority_invalid", PeerIdentity;
    /// A rule's paths hinge on a regex and the canonical path is longer than the regex matcher's
    /// per-request cap (2 KiB): the rule could not be decided, so it was read the fail-closed
    /// way (a deny rule applies, an allow rule does not admit).
    PeerIdentityRouteUndecided => "peer_identity_route_undecided", PeerIdentity;
    /// Content-Length repeated, comma-merged or not a decimal number: two parsers can frame the body differently.
    HygieneContentLengthInvalid => "hygiene_content_length_invalid", Hygiene;
    /// Transfer-Encoding other than exactly `chunked`, or together with Content-Length (CL.TE / TE.CL smuggling).
    HygieneTransferEncodingInvalid => "hygiene_transfer_encoding_invalid", Hygiene;
    /// A `te` header other than `trailers` (the only value HTTP/2 allows).
    HygieneTeHeaderInvalid => "hygiene_te_header_invalid", Hygiene;
    /// A body on GET (or another method whose body has no defined meaning): caches and proxies disagree about it.
    HygieneBodyOnGet => "hygiene_body_on_get", Hygiene;
    /// A body on an upgrade request: the bytes after the headers are either body or the upgraded protocol.
    HygieneBodyOnUpgrade => "hygiene_body_on_upgrade", Hygiene;
    /// A header name with `_`: CGI/WSGI-style apps read `Content_Length` as `Content-Length`.
    HygieneUnderscoreHeader => "hygiene_underscore_header", Hygiene;
    /// A header name that is not an RFC 9110 token, or an unknown pseudo-header.
    HygieneHeaderNameInvalid => "hygiene_header_name_invalid", Hygiene;
    /// A header value with CR, LF, NUL or another control byte (header injection).
    HygieneHeaderValueControl => "hygiene_header_value_control", Hygiene;
    /// A header value with obs-text (bytes 0x80-0xFF; with `allowUtf8`, only bytes that are not valid UTF-8).
    HygieneHeaderValueNonAscii => "hygiene_header_value_non_ascii", Hygiene;
    /// A header value with leading or trailing whitespace (malformed in HTTP/2, trimmed differently by parsers).
    HygieneHeaderValueWhitespace => "hygiene_header_value_whitespace", Hygiene;
    /// A header that must appear once (Host, Content-Length, Content-Type, Authorization, listed ones) repeated or comma-merged.
    HygieneSingletonHeaderRepeated => "hygiene_singleton_header_repeated", Hygiene;
    /// An authority that is empty or has userinfo, commas, whitespace, a bad port or a malformed IP literal.
    HygieneAuthorityInvalid => "hygiene_authority_invalid", Hygiene;
    /// A `:scheme` other than http/https, or https on a plaintext connection.
    HygieneSchemeInvalid => "hygiene_scheme_invalid", Hygiene;
    /// A method that is not an uppercase RFC 9110 token.
    HygieneMethodInvalid => "hygiene_method_invalid", Hygiene;
    /// A method outside the guard's allowlist.
    HygieneMethodNotAllowed => "hygiene_method_not_allowed", Hygiene;
    /// TRACE, TRACK or CONNECT, unless the policy allows it (cross-site tracing, tunnels).
    HygieneMethodRisky => "hygiene_method_risky", Hygiene;
    /// A method-override header (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override): the app runs another method than the one the rules saw.
    HygieneMethodOverride => "hygiene_method_override", Hygiene;
    /// `Upgrade: h2c` or `HTTP2-Settings` (HTTP/2 over cleartext): h2c smuggling past the proxy.
    HygieneCleartextUpgrade => "hygiene_cleartext_upgrade", Hygiene;
    /// A websocket handshake that is not GET, not version 13, or without a valid key.
    HygieneWebsocketMalformed => "hygiene_websocket_malformed", Hygiene;
    /// `Expect` other than exactly `100-continue`, or (if required) without a body.
    HygieneExpectInvalid => "hygiene_expect_invalid", Hygiene;
    /// `%2F` or `%5C` in the path: one segment to the proxy, two to an app that decodes first.
    HygienePathEncodedSlash => "hygiene_path_encoded_slash", Hygiene;
    /// A `.` or `..` segment, raw or encoded, left in the path.
    HygienePathDotSegment => "hygiene_path_dot_segment", Hygiene;
    /// `//` in the path.
    HygienePathDoubleSlash => "hygiene_path_double_slash", Hygiene;
    /// A `;` path parameter (raw or `%3B`): `/admin;x` is `/admin` to some servers.
    HygienePathParameter => "hygiene_path_parameter", Hygiene;
    /// `%25` followed by two hex digits: decoded twice, it becomes another character.
    HygienePathDoubleEncoding => "hygiene_path_double_encoding", Hygiene;
    /// `%00` or another encoded control byte in the path.
    HygienePathEncodedControl => "hygiene_path_encoded_control", Hygiene;
    /// A path that is not valid UTF-8 once decoded (overlong forms such as `%C0%AF` included).
    HygienePathInvalidUnicode => "hygiene_path_invalid_unicode", Hygiene;
    /// An encoded `#` or `?` in the path.
    HygienePathEncodedDelimiter => "hygiene_path_encoded_delimiter", Hygiene;
    /// A raw byte that may not appear in a request target (non-ASCII, controls, space, backslash, quotes, `#`).
    HygienePathInvalidCharacter => "hygiene_path_invalid_character", Hygiene;
    /// A client-supplied `x-envoy-*` header (Envoy's own control and trust headers).
    HygieneEnvoyHeader => "hygiene_envoy_header", Hygiene;
    /// Istio's `x-envoy-peer-metadata` from a peer that is not an mTLS peer.
    HygienePeerMetadataUntrusted => "hygiene_peer_metadata_untrusted", Hygiene;
    /// `x-forwarded-client-cert` elements the local Envoy did not add (or an XFCC header on a non-mTLS connection).
    HygieneXfccUntrustedElement => "hygiene_xfcc_untrusted_element", Hygiene;
    /// A client-supplied `x-forwarded-host`, `x-forwarded-prefix`, `x-forwarded-port`, `forwarded`
    /// or another original host/port/scheme header (host, link and scheme confusion).
    HygieneForwardedRoutingHeader => "hygiene_forwarded_routing_header", Hygiene;
    /// `x-original-url` or `x-rewrite-url`: frameworks route on them instead of the path the rules saw.
    HygieneUrlOverrideHeader => "hygiene_url_override_header", Hygiene;
    /// A client-supplied client-address header (`x-real-ip`, `true-client-ip`, `cf-connecting-ip`,
    /// `x-client-ip` and the rest of the family CDNs and frameworks read): IP spoofing for
    /// allowlists and rate limits.
    HygieneClientIpHeader => "hygiene_client_ip_header", Hygiene;
    /// A `proxy-authorization` header reaching the app (proxy credentials leak, or a forged proxy login).
    HygieneProxyAuthorization => "hygiene_proxy_authorization", Hygiene;
    /// An `x-request-id` that is not one well-formed id (log injection, merged duplicates).
    HygieneRequestIdInvalid => "hygiene_request_id_invalid", Hygiene;
    /// An `x-forwarded-for` entry, a `Forwarded` `for=`/`by=` node or the value of a client-address
    /// header (`x-real-ip`, `cf-connecting-ip`...) that is not an IP address
    /// (or `unknown`, or an RFC 7239 obfuscated node): markup, host names or inet_aton spellings
    /// an app or a log pipeline would believe as the client's address.
    HygieneForwardedForInvalid => "hygiene_forwarded_for_invalid", Hygiene;
    /// A tracing header (traceparent, tracestate, b3, x-b3-*, uber-trace-id, x-cloud-trace-context,
    /// x-amzn-trace-id, x-datadog-*) that is malformed or repeated.
    HygieneTraceContextInvalid => "hygiene_trace_context_invalid", Hygiene;
    /// A client-supplied header that forces tracing or picks the trace id (x-client-trace-id,
    /// x-envoy-force-trace, x-b3-sampled, x-b3-flags, x-datadog-sampling-priority).
    HygieneTraceForcingHeader => "hygiene_trace_forcing_header", Hygiene;
    /// A credential or identity header whose value holds a second header line (a bare CR Envoy
    /// deleted: `Bearer a\rX-Injected: 1` arrives as `Bearer aX-Injected: 1`), or an
    /// Authorization value that is not one RFC 9110 credential.
    HygieneHeaderValueInjected => "hygiene_header_value_injected", Hygiene;
    /// More header fields than the limit.
    HygieneTooManyHeaders => "hygiene_too_many_headers", Hygiene;
    /// More header bytes (names and values) than the limit.
    HygieneHeadersTooLarge => "hygiene_headers_too_large", Hygiene;
    /// One header field (name and value) longer than the limit.
    HygieneHeaderTooLong => "hygiene_header_too_long", Hygiene;
    /// A request target longer than the limit.
    HygienePathTooLong => "hygiene_path_too_long", Hygiene;
    /// More query parameters than the limit.
    HygieneTooManyQueryParams => "hygiene_too_many_query_params", Hygiene;
    /// The authority (or SNI) is not a host: empty, userinfo, a bad port, a character outside
    /// letters, digits, `-`, `_` and `.`, raw non-ASCII (IDNA must be in `xn--` form), an
    /// unbracketed IPv6, a numeric last label that is no IPv4 address.
    EgressInvalidHost => "egress_invalid_host", Egress;
    /// No egress rule names this host.
    EgressHostNotAllowed => "egress_host_not_allowed", Egress;
    /// An IP literal (any spelling) no rule names; non-canonical spellings never match.
    EgressIpLiteral => "egress_ip_literal", Egress;
    /// A cloud instance-metadata address or name (169.254.169.254, fd00:ec2::254,
    /// metadata.google.internal, ...) no rule names.
    EgressMetadataAddress => "egress_metadata_address", Egress;
    /// A link-local address (169.254.0.0/16, fe80::/10, an IPv6 with a zone) no rule names.
    EgressLinkLocalAddress => "egress_link_local_address", Egress;
    /// A loopback or `localhost` destination no rule names.
    EgressLocalhost => "egress_localhost", Egress;
    /// The rules naming the host do not allow this port.
    EgressPortNotAllowed => "egress_port_not_allowed", Egress;
    /// The rules naming the host do not allow this method.
    EgressMethodNotAllowed => "egress_method_not_allowed", Egress;
    /// The rules naming the host do not allow this (canonical) path.
    EgressPathNotAllowed => "egress_path_not_allowed", Egress;
    /// The rules naming the host require a source identity and none could be established.
    EgressSourceIdentityMissing => "egress_source_identity_missing", Egress;
    /// The rules naming the host do not admit this source identity.
    EgressSourceNotAllowed => "egress_source_not_allowed", Egress;
    /// Envoy routed the request to Istio's PassthroughCluster (ALLOW_ANY: wherever the
    /// application connected) and no rule naming the host says `passthrough: true`.
    EgressPassthroughCluster => "egress_passthrough_cluster", Egress;
    /// Envoy routed the request to Istio's BlackHoleCluster and no rule naming the host says
    /// `passthrough: true`.
    EgressBlackholeCluster => "egress_blackhole_cluster", Egress;
    /// The authority does not agree with the Istio cluster Envoy routed the request to.
    EgressAuthorityMismatch => "egress_authority_mismatch", Egress;
    /// A TLS/TCP connection without SNI and no rule with `allowNoSni` for it.
    EgressSniMissing => "egress_sni_missing", Egress;
    /// No egress rule (without methods or paths) names this SNI.
    EgressSniNotAllowed => "egress_sni_not_allowed", Egress;
    /// A credential header (Authorization, Cookie, an API-key header) to a destination whose
    /// rule says `credentials: deny`.
    EgressCredentialsNotAllowed => "egress_credentials_not_allowed", Egress;
    /// Credential headers removed before the request left (a rule with `credentials: strip`).
    EgressCredentialsStripped => "egress_credentials_stripped", Egress;
    /// A credential query parameter (`access_token`, `api_key`, a signature...) to a
    /// destination whose rule says `credentials: deny` or `strip` (a query is never rewritten).
    EgressCredentialsInQuery => "egress_credentials_in_query", Egress;
    /// A rule requires a token and the request carries none (in any token source).
    JwtMissing => "jwt_missing", Jwt;
    /// Not a compact JWS: wrong segment count, an empty segment, bad base64url, a header or
    /// payload that is not a JSON object, a registered claim of the wrong type, bad `typ`.
    JwtMalformed => "jwt_malformed", Jwt;
    /// A token longer than `maxTokenBytes`, refused before it is decoded.
    JwtTooLarge => "jwt_too_large", Jwt;
    /// More than one token (two Authorization headers, a header and a query parameter...).
    JwtMultipleTokens => "jwt_multiple_tokens", Jwt;
    /// `alg` is `none`, HS*, unknown, not allowed for the provider, or does not fit the key type.
    JwtAlgNotAllowed => "jwt_alg_not_allowed", Jwt;
    /// The `kid` names no key of the provider (or, without `kid`, several keys could apply).
    JwtUnknownKey => "jwt_unknown_key", Jwt;
    /// A `crit` header parameter: no JWS extension is understood.
    JwtCritUnsupported => "jwt_crit_unsupported", Jwt;
    /// The signature does not verify with the selected key.
    JwtSignatureInvalid => "jwt_signature_invalid", Jwt;
    /// The token has no `exp`.
    JwtExpMissing => "jwt_exp_missing", Jwt;
    /// `exp` (plus the clock skew) is past.
    JwtExpired => "jwt_expired", Jwt;
    /// `nbf` or `iat` is in the future (beyond the clock skew).
    JwtNotYetValid => "jwt_not_yet_valid", Jwt;
    /// `iss` missing, or not the issuer of a provider the rule accepts.
    JwtIssuerNotAllowed => "jwt_issuer_not_allowed", Jwt;
    /// `aud` names none of the provider's audiences.
    JwtAudienceNotAllowed => "jwt_audience_not_allowed", Jwt;
    /// A claim the rule requires is missing or has another value.
    JwtClaimsNotSatisfied => "jwt_claims_not_satisfied", Jwt;
    /// RFC 8705: the token's `cnf` `x5t#S256` does not match the peer certificate (or is
    /// missing where the rule requires it).
    JwtBindingMismatch => "jwt_binding_mismatch", Jwt;
    /// The claim the rule binds to the peer does not name the peer's SPIFFE ID.
    JwtPeerIdentityMismatch => "jwt_peer_identity_mismatch", Jwt;
    /// The provider's remote JWKS has not been fetched yet (fail closed).
    JwtKeysUnavailable => "jwt_keys_unavailable", Jwt;
    /// No JWT rule covers the route and the check's default action is deny.
    JwtNoMatchingRule => "jwt_no_matching_rule", Jwt;
    /// Rules name hosts and the request's authority is not a host.
    JwtAuthorityInvalid => "jwt_authority_invalid", Jwt;
    /// Response phase: the upstream's certificate carries no SPIFFE ID the destination's
    /// pinning rule lists (service-discovery poisoning: the name resolved to another workload).
    UpstreamIdentityMismatch => "upstream_identity_mismatch", Upstream;
    /// Response phase: the destination's pinning rule requires mTLS and the upstream
    /// connection is plaintext, or TLS without a peer certificate.
    UpstreamNotMtls => "upstream_not_mtls", Upstream;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ReasonCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate reason code {name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert!(name.starts_with(code.check().as_str()), "{name} vs {:?}", code.check());
            assert_eq!(ReasonCode::from_name(name), Some(*code));
        }
    }
}
