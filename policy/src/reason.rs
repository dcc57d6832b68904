//! Checks and reason codes. These names are a public interface: they appear in decision logs,
//! metric names, deny bodies and the documentation. Never rename one; add new ones.

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    Hygiene,
    PeerIdentity,
    Egress,
    Jwt,
}

impl Check {
    pub const ALL: [Check; 4] = [Check::Hygiene, Check::PeerIdentity, Check::Egress, Check::Jwt];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Hygiene => "hygiene",
            Check::PeerIdentity => "peer_identity",
            Check::Egress => "egress",
            Check::Jwt => "jwt",
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
