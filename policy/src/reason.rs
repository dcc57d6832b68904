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
