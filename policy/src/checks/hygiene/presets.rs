//! The presets: every guard's default settings for `sidecar`, `gateway-strict` and `audit`.
//! A policy starts from one and overrides guards field by field. The table in
//! `envoy-config/policies/README.md` is this file in prose; keep them in step.

use super::doc::{GuardAction, Preset};
use super::Guard;
use crate::document::Mode;

/// The settings every guard has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    pub enabled: bool,
    pub action: GuardAction,
    pub mode: Mode,
    /// Trust-header guards: believe the header from an mTLS peer.
    pub trust_mtls_peers: bool,
    /// Limits: the maximum.
    pub max: u64,
}

/// Guard-specific parameters (the ones that are lists or flags of their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub body_methods: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub risky_allowed: Vec<String>,
    pub singleton_extra: Vec<String>,
    pub allow_utf8: bool,
    pub websocket_require_key: bool,
    pub expect_require_body: bool,
    pub envoy_allow: Vec<String>,
    pub xfcc_trusted: Vec<String>,
    pub identity_singletons: bool,
    pub trust_forwarded_proto: bool,
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub fn params(preset: Preset) -> Params {
    let strict = preset != Preset::Sidecar;
    Params {
        body_methods: if strict {
            strings(&["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"])
        } else {
            strings(&["GET", "HEAD", "TRACE"])
        },
        allowed_methods: strings(&["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        risky_allowed: Vec::new(),
        singleton_extra: Vec::new(),
        allow_utf8: true,
        websocket_require_key: true,
        expect_require_body: strict,
        // None, in either preset. Envoy removes a client's x-envoy-* headers and sets
        // x-envoy-external-address / x-envoy-internal itself only on an edge listener
        // (`use_remote_address: true`); on any other listener the client's values pass. The
        // filter cannot see the listener's setting, so the gateway preset strips them all,
        // except an x-envoy-external-address equal to source.address: Envoy's own at an edge.
        envoy_allow: Vec::new(),
        xfcc_trusted: Vec::new(),
        identity_singletons: strict,
        // An ingress controller that terminated TLS talks plaintext to a PERMISSIVE pod with
        // `x-forwarded-proto: https`; at the edge, nobody in front terminated anything.
        trust_forwarded_proto: !strict,
    }
}

pub fn common(preset: Preset, guard: Guard) -> Common {
    use GuardAction::{Log, Reject, Strip};
    let strict = preset != Preset::Sidecar;
    let pick = |sidecar: GuardAction, gateway: GuardAction| if strict { gateway } else { sidecar };
    let (enabled, action) = match guard {
        Guard::MethodAllowlist => (strict, Reject),
        Guard::UnderscoreHeaders => (true, pick(Strip, Reject)),
        Guard::EnvoyHeaders | Guard::TraceContext => (true, Strip),
        Guard::TraceForcing => (strict, Strip),
        Guard::NonAsciiValues
        | Guard::ValueWhitespace
        | Guard::DoubleSlash
        | Guard::PathParameters
        | Guard::InvalidUtf8
        | Guard::EncodedDelimiters => (true, pick(Log, Reject)),
        Guard::PeerMetadata
        | Guard::Xfcc
        | Guard::ForwardedRouting
        | Guard::ClientIp
        | Guard::ProxyAuthorization
        | Guard::RequestId => (true, Strip),
        _ => (true, Reject),
    };
    let max = match guard {
        Guard::HeaderCount => pick_n(strict, 100, 64),
        Guard::HeaderBytes => pick_n(strict, 60 * 1024, 32 * 1024),
        Guard::HeaderLength => pick_n(strict, 32 * 1024, 16 * 1024),
        Guard::PathLength => pick_n(strict, 8 * 1024, 4 * 1024),
        Guard::QueryParams => pick_n(strict, 512, 128),
        _ => 0,
    };
    Common {
        enabled,
        action,
        mode: if preset == Preset::Audit { Mode::DryRun } else { Mode::Enforce },
        trust_mtls_peers: !strict,
        max,
    }
}

fn pick_n(strict: bool, sidecar: u64, gateway: u64) -> u64 {
    if strict {
        gateway
    } else {
        sidecar
    }
}
