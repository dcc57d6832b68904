//! Offline decisions exactly as the filter makes them (`eval`, `replay`, `test`, `learn`,
//! `diff`).
//!
//! The one place the filter adds something to the request it was handed: the listener's
//! direction. The HTTP filter (filter/src/plugin.rs) reads `xds.listener_direction` only when
//! the policy needs it and otherwise decides as if inbound; the network filter
//! (filter/src/network.rs) then uses `unspecified`. When the policy needs it, a listener
//! without `traffic_direction` is `unspecified` (envoy-config/EGRESS.md): that is not
//! something to guess, so a request file must say it (see [`DIRECTION_REQUIRED`]).

use policy::view::connection::OwnedConnection;
use policy::view::request::OwnedRequest;
use policy::{Decision, Direction, Policy};

/// Why a request without `direction` is refused for a policy that reads it.
pub const DIRECTION_REQUIRED: &str = "required: this policy's checks read the listener's direction \
(it has an egress section, or identity.appliesTo: inbound); say \"inbound\", \"outbound\", or \
\"unspecified\" (what the filter sees on a listener without traffic_direction)";

/// The decision the HTTP filter makes for `request`.
/// A logged request's `queryShape` is applied first.
pub fn decide_request(policy: &Policy, request: &OwnedRequest) -> Decision {
    let shaped;
    let request = match request.query_shape {
        Some(_) => {
            let mut r = request.clone();
            r.apply_query_shape();
            shaped = r;
            &shaped
        }
        None => request,
    };
    let pairs = request.pairs();
    let mut view = request.view(&pairs);
    if !policy.needs().direction {
        view.direction = Direction::Inbound;
    }
    // The time, for a policy that reads it (JWT): the request's own (`nowUnixSecs`: logged by
    // the filter, or `eval --now`), else the clock now, as the filter reads the host's.
    if policy.needs().clock && request.now_unix_secs.is_none() {
        view.now_unix_secs = crate::jwt::now_unix_secs();
    }
    let mut decision = policy.evaluate(&view);
    // The response phase, when the request says what the upstream connection was: the
    // filter decides it only for a request that went on. Its findings follow the request's.
    if let Some(up) = request.upstream_view() {
        if !decision.enforced() {
            decision.findings.extend(policy.evaluate_upstream(&up).findings);
        }
    }
    decision
}

/// The decision the network filter makes for `connection`.
pub fn decide_connection(policy: &Policy, connection: &OwnedConnection) -> Decision {
    let mut view = connection.view();
    if !policy.needs().direction {
        view.direction = Direction::Unspecified;
    }
    policy.evaluate_connection(&view)
}
