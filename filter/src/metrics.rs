//! meshguard's counters, as Envoy names them.
//!
//! Envoy files every metric a Wasm module defines under the custom stat namespace
//! `wasmcustom.`, and `/stats/prometheus` strips that namespace and does *not* add the usual
//! `envoy_` prefix (envoyproxy/envoy#17357). Envoy has no tag convention of its own for Wasm
//! metrics: labels come only from `stats_config.stats_tags` regexes in the bootstrap, applied
//! to the full stat name. So the per-finding counters carry their dimensions as dotted
//! `.name.value` segments, which read as one flat name without any bootstrap change and become
//! Prometheus labels with the three regexes in [`STATS_TAGS_BOOTSTRAP`].
//!
//! | Envoy stat name | `/stats/prometheus`, plain Envoy |
//! |---|---|
//! | `wasmcustom.meshguard_requests_total` | `meshguard_requests_total` |
//! | `wasmcustom.meshguard_allowed_total` | `meshguard_allowed_total` |
//! | `wasmcustom.meshguard_denied_total` | `meshguard_denied_total` |
//! | `wasmcustom.meshguard_would_deny_total` | `meshguard_would_deny_total` |
//! | `wasmcustom.meshguard_config_accepted_total` | `meshguard_config_accepted_total` |
//! | `wasmcustom.meshguard_config_rejected_total` | `meshguard_config_rejected_total` |
//! | `wasmcustom.meshguard_errors_total` | `meshguard_errors_total` |
//! | `wasmcustom.meshguard_vm_starts_total` | `meshguard_vm_starts_total` (one per VM that accepted a configuration; see [`crate::vm`]) |
//! | `wasmcustom.meshguard_connections_total` (network filter) | `meshguard_connections_total` |
//! | `wasmcustom.meshguard_connections_allowed_total` | `meshguard_connections_allowed_total` |
//! | `wasmcustom.meshguard_connections_denied_total` | `meshguard_connections_denied_total` |
//! | `wasmcustom.meshguard_connections_would_deny_total` | `meshguard_connections_would_deny_total` |
//! | `wasmcustom.meshguard.check.<check>.code.<code>.mode.<mode>.findings_total` | `meshguard_check_<check>_code_<code>_mode_<mode>_findings_total` |
//!
//! `meshguard_requests_total` = allowed + denied + would-deny; a request meshguard could not
//! inspect (and refused with 503) counts only in `meshguard_errors_total`. The network filter
//! (root id `meshguard-tcp`) counts connections the same way in the `meshguard_connections_*`
//! counters (and only those), and its findings in the same per-finding counters. The config counters
//! count `on_configure` calls, and Envoy configures a plugin in several VMs (on the main
//! thread and on every worker): one accepted policy on a 2-worker Envoy 1.40 reads `+4`.
//!
//! `<check>` and `<code>` are [`policy::Check::as_str`] and [`policy::ReasonCode::as_str`];
//! `<mode>` is `enforced` (the finding denied the request) or `dry_run` (a would-deny). A
//! per-finding counter exists from the first time that finding is seen.
//!
//! Example, plain Envoy:
//!
//! ```text
//! # TYPE meshguard_check_peer_identity_code_peer_identity_missing_mode_enforced_findings_total counter
//! meshguard_check_peer_identity_code_peer_identity_missing_mode_enforced_findings_total{} 3
//! ```
//!
//! and with [`STATS_TAGS_BOOTSTRAP`] in the bootstrap's `stats_config`:
//!
//! ```text
//! # TYPE meshguard_findings_total counter
//! meshguard_findings_total{check="peer_identity",code="peer_identity_missing",mode="enforced"} 3
//! ```
//!
//! Istio's `extraStatTags` only generates regexes of its own `tag=.=value;.;` form, so under
//! Istio the labels need these regexes through a custom bootstrap
//! (`envoy-config/istio/bootstrap-stats-tags.yaml`); the flat names work as is (Istio's stats
//! inclusion list has the prefix `wasm`, which lets `wasmcustom.` through).

use std::cell::RefCell;
use std::collections::HashMap;

use policy::{Check, ReasonCode};

use crate::hostcalls;

pub const REQUESTS: &str = "meshguard_requests_total";
pub const ALLOWED: &str = "meshguard_allowed_total";
pub const DENIED: &str = "meshguard_denied_total";
pub const WOULD_DENY: &str = "meshguard_would_deny_total";
pub const CONFIG_ACCEPTED: &str = "meshguard_config_accepted_total";
pub const CONFIG_REJECTED: &str = "meshguard_config_rejected_total";
pub const ERRORS: &str = "meshguard_errors_total";
pub const VM_STARTS: &str = "meshguard_vm_starts_total";
pub const CONNECTIONS: &str = "meshguard_connections_total";
pub const CONNECTIONS_ALLOWED: &str = "meshguard_connections_allowed_total";
pub const CONNECTIONS_DENIED: &str = "meshguard_connections_denied_total";
pub const CONNECTIONS_WOULD_DENY: &str = "meshguard_connections_would_deny_total";

/// The `stats_config.stats_tags` entries (bootstrap YAML) that turn the per-finding counters
/// into one `meshguard_findings_total` family with `check`, `code` and `mode` labels, as shipped
/// in `envoy-config/stats-tags.yaml` (the local mesh and the compose setup append that file to
/// their bootstrap; README.md says how under Istio). Each regex is anchored on
/// `wasmcustom.meshguard.` so it can never touch another stat.
pub const STATS_TAGS_BOOTSTRAP: &str = include_str!("../../envoy-config/stats-tags.yaml");

/// The Envoy stat name (without `wasmcustom.`) of the counter for one kind of finding.
pub fn finding_name(check: Check, code: ReasonCode, enforced: bool) -> String {
    let mode = if enforced { "enforced" } else { "dry_run" };
    format!("meshguard.check.{}.code.{}.mode.{mode}.findings_total", check.as_str(), code.as_str())
}

pub use policy::Outcome;

/// Counter ids, defined once per VM. Ids are `None` when the host refused a definition: that
/// counter is then simply not counted, the request goes on.
#[derive(Debug)]
pub struct Metrics {
    requests: Option<u32>,
    allowed: Option<u32>,
    denied: Option<u32>,
    would_deny: Option<u32>,
    config_accepted: Option<u32>,
    config_rejected: Option<u32>,
    errors: Option<u32>,
    /// `[total, allowed, denied, would-deny]` connections (network filter only).
    connections: [Option<u32>; 4],
    /// Per-finding counters, defined on first use so that only findings that happen exist.
    findings: RefCell<HashMap<(Check, ReasonCode, bool), u32>>,
}

impl Metrics {
    /// Define the fixed counters (host calls; call from the root context only): the request
    /// counters for the HTTP filter, the connection counters for the network filter.
    pub fn define(network: bool) -> Self {
        let def = |name: &str| hostcalls::define_counter(name).ok();
        let http = |name: &str| if network { None } else { def(name) };
        let tcp = |name: &str| if network { def(name) } else { None };
        Self {
            requests: http(REQUESTS),
            allowed: http(ALLOWED),
            denied: http(DENIED),
            would_deny: http(WOULD_DENY),
            config_accepted: def(CONFIG_ACCEPTED),
            config_rejected: def(CONFIG_REJECTED),
            errors: def(ERRORS),
            connections: [
                tcp(CONNECTIONS),
                tcp(CONNECTIONS_ALLOWED),
                tcp(CONNECTIONS_DENIED),
                tcp(CONNECTIONS_WOULD_DENY),
            ],
            findings: RefCell::new(HashMap::new()),
        }
    }

    /// No counters at all (no host call): for a request context created before any
    /// configuration, which Envoy does not do.
    pub fn none() -> Self {
        Self {
            requests: None,
            allowed: None,
            denied: None,
            would_deny: None,
            config_accepted: None,
            config_rejected: None,
            errors: None,
            connections: [None; 4],
            findings: RefCell::new(HashMap::new()),
        }
    }

    /// A request meshguard could not inspect (and refused).
    pub fn error(&self) {
        bump(self.errors);
    }

    pub fn config_accepted(&self) {
        bump(self.config_accepted);
    }

    pub fn config_rejected(&self) {
        bump(self.config_rejected);
    }

    pub fn request(&self, outcome: Outcome) {
        bump(self.requests);
        bump(match outcome {
            Outcome::Allow => self.allowed,
            Outcome::Deny => self.denied,
            Outcome::WouldDeny => self.would_deny,
        });
    }

    /// Count one connection (network filter).
    pub fn connection(&self, outcome: Outcome) {
        let [total, allowed, denied, would_deny] = self.connections;
        bump(total);
        bump(match outcome {
            Outcome::Allow => allowed,
            Outcome::Deny => denied,
            Outcome::WouldDeny => would_deny,
        });
    }

    /// Count one finding; defines its counter the first time this kind is seen.
    pub fn finding(&self, check: Check, code: ReasonCode, enforced: bool) {
        let key = (check, code, enforced);
        // Never hold the borrow across a host call: there is no re-entrancy today, but a
        // BorrowMutError would be a panic.
        let known = self.findings.try_borrow().ok().and_then(|m| m.get(&key).copied());
        let id = match known {
            Some(id) => id,
            None => {
                let Ok(id) = hostcalls::define_counter(&finding_name(check, code, enforced)) else {
                    return;
                };
                if let Ok(mut m) = self.findings.try_borrow_mut() {
                    m.insert(key, id);
                }
                id
            }
        };
        bump(Some(id));
    }
}

/// Increment, ignoring failures: a metric must never fail a request.
fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_names_are_dotted_and_prometheus_safe() {
        assert_eq!(
            finding_name(Check::PeerIdentity, ReasonCode::PeerIdentityMissing, true),
            "meshguard.check.peer_identity.code.peer_identity_missing.mode.enforced.findings_total"
        );
        for code in ReasonCode::ALL {
            for enforced in [true, false] {
                let name = finding_name(code.check(), *code, enforced);
                assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'), "{name}");
            }
        }
    }

    /// The shipped file holds exactly the three tags, each anchored on meshguard's namespace.
    #[test]
    fn stats_tags_file_has_the_three_anchored_regexes() {
        let tags: Vec<&str> = STATS_TAGS_BOOTSTRAP.lines().filter(|l| l.contains("tag_name:")).collect();
        assert_eq!(tags, ["  - tag_name: check", "  - tag_name: code", "  - tag_name: mode"]);
        let regexes: Vec<&str> =
            STATS_TAGS_BOOTSTRAP.lines().filter(|l| l.trim_start().starts_with("regex:")).collect();
        assert_eq!(regexes.len(), 3);
        for r in regexes {
            assert!(r.contains(r"'^wasmcustom\.meshguard"), "{r}");
        }
        assert!(STATS_TAGS_BOOTSTRAP.contains("\nstats_config:\n  stats_tags:\n"));
    }

    /// The three regexes, applied the way Envoy applies them (remove capture group 1, keep
    /// group 2 as the value), leave `meshguard.findings_total` and the three labels. Checked
    /// by hand here; the end-to-end check is against a real Envoy.
    #[test]
    fn names_split_on_the_segments_the_regexes_expect() {
        let name = finding_name(Check::PeerIdentity, ReasonCode::PeerIdentityNoUriSan, false);
        let rest = name.strip_prefix("meshguard.check.").unwrap();
        let (check, rest) = rest.split_once(".code.").unwrap();
        let (code, rest) = rest.split_once(".mode.").unwrap();
        let (mode, tail) = rest.split_once('.').unwrap();
        assert_eq!(
            (check, code, mode, tail),
            ("peer_identity", "peer_identity_no_uri_san", "dry_run", "findings_total")
        );
    }
}
