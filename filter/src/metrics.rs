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
//! **Lag.** The request and connection totals are counted in VM memory and handed to Envoy
//! every [`FLUSH_PERIOD_MS`] (1 s), and at once after any request or connection with a
//! finding: so `meshguard_requests_total`, `meshguard_allowed_total` and
//! `meshguard_connections_total`/`_allowed_total` may lag traffic without findings by up to a
//! second (per worker), while denies, would-denies, per-finding, error and config counters are
//! never late. Counts still pending when the plugin goes away (a new configuration, Envoy
//! shutting down) are flushed in its `on_done`. This saves two host calls per request.
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

use std::cell::{Cell, RefCell};
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

/// How often the root context hands the counts held in VM memory to Envoy (its `on_tick`):
/// `meshguard_requests_total`, `meshguard_allowed_total` and the connection totals of requests
/// and connections without a finding lag Envoy's stats by at most this much.
pub const FLUSH_PERIOD_MS: u32 = 1_000;

/// The totals counted in VM memory, by index into [`Metrics::totals`].
const REQUESTS_I: usize = 0;
const ALLOWED_I: usize = 1;
const DENIED_I: usize = 2;
const WOULD_DENY_I: usize = 3;
const CONNECTIONS_I: usize = 4;
const CONNECTIONS_ALLOWED_I: usize = 5;
const CONNECTIONS_DENIED_I: usize = 6;
const CONNECTIONS_WOULD_DENY_I: usize = 7;

/// One counter: its id (`None` when the host refused the definition: the counter is then
/// simply not counted) and the count not yet handed to Envoy.
#[derive(Debug, Default)]
struct Total {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Total {
    fn new(id: Option<u32>) -> Self {
        Total { id, pending: Cell::new(0) }
    }

    fn add(&self) {
        if self.id.is_some() {
            self.pending.set(self.pending.get().saturating_add(1));
        }
    }

    /// The id and count to hand to Envoy, if any; the pending count is then zero.
    fn take(&self) -> Option<(u32, u64)> {
        let n = self.pending.replace(0);
        Some((self.id?, n)).filter(|_| n > 0)
    }
}

/// Counter ids, defined once per VM, and the request and connection totals counted in VM
/// memory since the last flush.
///
/// Counting a request is a few additions in VM memory, not a host call: the totals reach
/// Envoy in one `proxy_increment_metric` per counter when [`Metrics::flush`] runs, which is
/// on the root context's tick (every [`FLUSH_PERIOD_MS`]), right after any request or
/// connection with a finding (denies and would-denies are never late), and when the plugin is
/// done (a new configuration, or Envoy shutting down). The config, error and per-finding
/// counters are rare and go to Envoy at once.
#[derive(Debug)]
pub struct Metrics {
    /// `[requests, allowed, denied, would-deny]` (HTTP filter), then `[total, allowed, denied,
    /// would-deny]` connections (network filter).
    totals: [Total; 8],
    config_accepted: Option<u32>,
    config_rejected: Option<u32>,
    errors: Option<u32>,
    /// Per-finding counters, defined on first use so that only findings that happen exist.
    findings: RefCell<HashMap<(Check, ReasonCode, bool), u32>>,
}

impl Metrics {
    /// Define the fixed counters (host calls; call from the root context only): the request
    /// counters for the HTTP filter, the connection counters for the network filter.
    pub fn define(network: bool) -> Self {
        let def = |name: &str| hostcalls::define_counter(name).ok();
        let http = |name: &str| Total::new(if network { None } else { def(name) });
        let tcp = |name: &str| Total::new(if network { def(name) } else { None });
        Self {
            totals: [
                http(REQUESTS),
                http(ALLOWED),
                http(DENIED),
                http(WOULD_DENY),
                tcp(CONNECTIONS),
                tcp(CONNECTIONS_ALLOWED),
                tcp(CONNECTIONS_DENIED),
                tcp(CONNECTIONS_WOULD_DENY),
            ],
            config_accepted: def(CONFIG_ACCEPTED),
            config_rejected: def(CONFIG_REJECTED),
            errors: def(ERRORS),
            findings: RefCell::new(HashMap::new()),
        }
    }

    /// No counters at all (no host call): for a request context created before any
    /// configuration, which Envoy does not do.
    pub fn none() -> Self {
        Self {
            totals: Default::default(),
            config_accepted: None,
            config_rejected: None,
            errors: None,
            findings: RefCell::new(HashMap::new()),
        }
    }

    /// A request meshguard could not inspect (and refused). Counted at once.
    pub fn error(&self) {
        bump(self.errors);
    }

    pub fn config_accepted(&self) {
        bump(self.config_accepted);
    }

    pub fn config_rejected(&self) {
        bump(self.config_rejected);
    }

    /// Count one request (in VM memory, until the next [`Metrics::flush`]).
    pub fn request(&self, outcome: Outcome) {
        self.count(REQUESTS_I, outcome, [ALLOWED_I, DENIED_I, WOULD_DENY_I]);
    }

    /// Count one connection (network filter; in VM memory, until the next flush).
    pub fn connection(&self, outcome: Outcome) {
        self.count(CONNECTIONS_I, outcome, [CONNECTIONS_ALLOWED_I, CONNECTIONS_DENIED_I, CONNECTIONS_WOULD_DENY_I]);
    }

    fn count(&self, total: usize, outcome: Outcome, [allowed, denied, would_deny]: [usize; 3]) {
        let by_outcome = match outcome {
            Outcome::Allow => allowed,
            Outcome::Deny => denied,
            Outcome::WouldDeny => would_deny,
        };
        for i in [total, by_outcome] {
            if let Some(t) = self.totals.get(i) {
                t.add();
            }
        }
    }

    /// Hand the counts held in VM memory to Envoy: one host call per counter that moved.
    pub fn flush(&self) {
        for (id, n) in self.take_pending() {
            let _ = hostcalls::increment_by(id, n);
        }
    }

    /// The (counter id, count) pairs not yet handed to Envoy; they are zero afterwards.
    fn take_pending(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.totals.iter().filter_map(Total::take)
    }

    /// Count one finding; defines its counter the first time this kind is seen. Counted at
    /// once (a finding always comes with a flush of the totals too).
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

    fn with_ids() -> Metrics {
        let mut m = Metrics::none();
        for (i, t) in m.totals.iter_mut().enumerate() {
            t.id = Some(100 + i as u32);
        }
        m
    }

    #[test]
    fn totals_accumulate_in_memory_until_taken() {
        let m = with_ids();
        for _ in 0..5 {
            m.request(Outcome::Allow);
        }
        m.request(Outcome::Deny);
        m.request(Outcome::WouldDeny);
        m.connection(Outcome::Allow);
        let pending: Vec<(u32, u64)> = m.take_pending().collect();
        assert_eq!(pending, vec![(100, 7), (101, 5), (102, 1), (103, 1), (104, 1), (105, 1)]);
        assert_eq!(m.take_pending().count(), 0, "taken once");
        m.connection(Outcome::Deny);
        assert_eq!(m.take_pending().collect::<Vec<_>>(), vec![(104, 1), (106, 1)]);
    }

    #[test]
    fn counters_the_host_refused_count_nothing() {
        let m = Metrics::none();
        m.request(Outcome::Allow);
        m.connection(Outcome::WouldDeny);
        assert_eq!(m.take_pending().count(), 0);
    }

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

    /// The shipped file holds exactly the five tags (the findings' three, the JWKS fetches'
    /// two), each anchored on meshguard's namespace.
    #[test]
    fn stats_tags_file_has_the_five_anchored_regexes() {
        let tags: Vec<&str> = STATS_TAGS_BOOTSTRAP.lines().filter(|l| l.contains("tag_name:")).collect();
        assert_eq!(
            tags,
            [
                "  - tag_name: check",
                "  - tag_name: code",
                "  - tag_name: mode",
                "  - tag_name: provider",
                "  - tag_name: result"
            ]
        );
        let regexes: Vec<&str> =
            STATS_TAGS_BOOTSTRAP.lines().filter(|l| l.trim_start().starts_with("regex:")).collect();
        assert_eq!(regexes.len(), 5);
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
