//! meshguard as a network filter: the egress allowlist on TLS (and plain TCP) connections.
//!
//! Threat: egress that HTTP filters never see. TLS passthrough (`tls_inspector` + `tcp_proxy`,
//! Istio's outbound port 443 with `ALLOW_ANY`) and plain TCP carry no Host header; the only
//! name is the SNI of the ClientHello. A [`ConnectionGuard`] reads it when the connection
//! opens (`connection.requested_server_name`; `tls_inspector` has already run as a listener
//! filter), asks [`policy::Policy::evaluate_connection`], and on an enforced deny closes the
//! downstream connection and returns `Pause`, so `tcp_proxy` never connects upstream and not
//! one byte leaves. Every connection is counted, and denies and would-denies are logged as one
//! `meshguard.decision {...}` line with a `connection` object.
//!
//! In Istio this is a `WasmPlugin` with `type: NETWORK` and `pluginName: meshguard-tcp`
//! (delivered over ECDS as `envoy.extensions.filters.network.wasm.v3.Wasm`).

use std::rc::Rc;

use policy::{ConnectionView, Direction, Peer, Policy};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, LogLevel};

use crate::hostcalls;
use crate::metrics::Metrics;
use crate::plugin::{log, peer_properties, record};
use crate::properties::{self, WorkloadFacts};
use policy::Outcome;

/// One downstream connection's view of the policy.
pub struct ConnectionGuard {
    policy: Option<Rc<Policy>>,
    metrics: Rc<Metrics>,
    workload: Rc<WorkloadFacts>,
}

impl ConnectionGuard {
    pub fn new(policy: Option<Rc<Policy>>, metrics: Rc<Metrics>, workload: Rc<WorkloadFacts>) -> Self {
        Self { policy, metrics, workload }
    }
}

impl Context for ConnectionGuard {}

impl StreamContext for ConnectionGuard {
    fn on_new_connection(&mut self) -> Action {
        match self.policy.as_deref() {
            Some(policy) => guard(policy, &self.metrics, &self.workload),
            None => {
                log(LogLevel::Error, "meshguard: no policy loaded; closing the connection");
                self.metrics.error();
                close()
            }
        }
    }
}

fn guard(policy: &Policy, metrics: &Metrics, workload: &WorkloadFacts) -> Action {
    let needs = policy.needs();
    let sni = properties::requested_server_name();
    let direction = if needs.direction { properties::direction() } else { Direction::Unspecified };
    let (mtls, uri_san) = if needs.peer { peer_properties(direction == Direction::Outbound) } else { (false, None) };
    let view = ConnectionView {
        sni: sni.as_deref(),
        destination_port: if policy.has_egress() { properties::destination_port() } else { None },
        peer: Peer { mtls, uri_san: uri_san.as_deref() },
        direction,
        workload: if needs.workload { workload.view() } else { policy::Workload::default() },
    };

    let decision = policy.evaluate_connection(&view);
    let outcome = decision.outcome();
    metrics.connection(outcome);
    record(metrics, &decision, policy.should_log_connection(&decision, &view), |ms| {
        policy.connection_log_line(&decision, &view, ms)
    });
    if outcome == Outcome::Deny {
        return close();
    }
    Action::Continue
}

/// Close the downstream and stop the filter chain: `tcp_proxy` never opens the upstream.
fn close() -> Action {
    if let Err(status) = hostcalls::close_downstream() {
        // Still Pause: the chain stops here and the connection goes nowhere.
        log(LogLevel::Error, &format!("meshguard: closing the connection failed (host status {})", status.0));
    }
    Action::Pause
}
