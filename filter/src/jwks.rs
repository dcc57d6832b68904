//! Remote JWKS fetching (`jwt.providers[].jwks.remote`), from the root context.
//!
//! For each remote provider of the policy in force, the root context sends `GET <path>`
//! through the provider's Envoy cluster (`dispatch_http_call`, 5 s timeout) when the policy is
//! accepted and then every `refreshSeconds` (checked on the root context's existing 1 s tick;
//! no faster tick). A `200` response whose body (at most [`policy::MAX_JWKS_BYTES`]) is a valid
//! JWK Set is handed to [`policy::Policy::set_jwks`]: the HTTP contexts of this VM share that
//! `Rc<Policy>` and see the new keys on their next request. Anything else (another status, no
//! response, a timeout, an unknown cluster, a larger body, a key set the key reader refuses)
//! is a failed fetch: the last good key set stays, one log line says why (never the body), and
//! the fetch is tried again after `min(refreshSeconds, 10)` seconds.
//!
//! A new configuration (Envoy makes a new root context for it, in the same VM) carries over
//! the last good key set of every remote provider whose id, cluster and path are unchanged
//! from the policy configured before it in this VM ([`policy::Policy::carry_jwks_from`]), and
//! fetches at once;
//! a provider that is new, or whose source moved, has no keys (its rules deny with
//! `jwt_keys_unavailable`) until its first good fetch. Every VM (Envoy's main thread and each
//! worker) fetches for itself.
//!
//! Counters: `wasmcustom.meshguard.jwks.provider.<id>.result.<result>.fetch_total`, in
//! `/stats/prometheus` `meshguard_jwks_provider_<id>_result_<result>_fetch_total` (the id's
//! `.` and `-` read as `_`), `<result>` one of [`FetchResult::as_str`].

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use policy::{JwksUpdate, Policy, RemoteJwks, MAX_JWKS_BYTES};
use proxy_wasm::types::LogLevel;

use crate::hostcalls;

/// The timeout of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed fetch is tried again after at most this long.
const RETRY_MAX_SECS: u64 = 10;
/// A fetch whose response never came (Envoy always answers within the timeout) is forgotten
/// after this long, so the provider is fetched again.
const LOST_AFTER_MS: u64 = 3 * 5_000;

/// How one fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    /// A valid key set (new, or the same as before).
    Ok,
    /// A status other than 200.
    HttpError,
    /// No response: a timeout, a reset, no healthy upstream without a status.
    NoResponse,
    /// The body is larger than [`MAX_JWKS_BYTES`].
    TooLarge,
    /// Not a JWK Set the key reader accepts.
    Invalid,
    /// Envoy refused to send the call (an unknown cluster).
    DispatchFailed,
}

impl FetchResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::HttpError => "http_error",
            FetchResult::NoResponse => "no_response",
            FetchResult::TooLarge => "too_large",
            FetchResult::Invalid => "invalid",
            FetchResult::DispatchFailed => "dispatch_failed",
        }
    }
}

/// The Envoy stat name (without `wasmcustom.`) of a fetch counter.
pub fn counter_name(provider: &str, result: FetchResult) -> String {
    format!("meshguard.jwks.provider.{provider}.result.{}.fetch_total", result.as_str())
}

#[derive(Debug)]
struct Source {
    remote: RemoteJwks,
    /// When to fetch next (ms since the epoch, the host's clock).
    due_ms: u64,
    /// The fetch in flight: its token and when it was sent.
    in_flight: Option<(u32, u64)>,
}

/// The remote key sets of the policy in force, and the fetches in flight.
#[derive(Debug, Default)]
pub struct JwksFetcher {
    policy: Option<Rc<Policy>>,
    sources: Vec<Source>,
    /// Fetch counters defined so far: (provider, result, counter id).
    counters: Vec<(String, FetchResult, u32)>,
}

thread_local! {
    /// The policy configured last in this VM (one thread), when it has remote providers,
    /// whichever root context it belongs to: the next configuration takes its key sets over.
    static LAST_CONFIGURED: RefCell<Option<Rc<Policy>>> = const { RefCell::new(None) };
}

fn now_ms() -> u64 {
    hostcalls::now_unix_nanos().map_or(0, |n| n / 1_000_000)
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

impl JwksFetcher {
    /// A policy was accepted: carry over the key sets of unchanged sources from the previous
    /// one, and fetch every remote key set now.
    pub fn configure(&mut self, policy: &Rc<Policy>) {
        let now = now_ms();
        self.sources =
            policy.remote_jwks().into_iter().map(|remote| Source { remote, due_ms: now, in_flight: None }).collect();
        self.policy = if self.sources.is_empty() { None } else { Some(Rc::clone(policy)) };
        // Only from the configuration just before: keys a configuration without this provider
        // came between may be long out of date.
        let previous = LAST_CONFIGURED.with(|last| {
            last.try_borrow_mut().ok().and_then(|mut last| std::mem::replace(&mut *last, self.policy.clone()))
        });
        if self.sources.is_empty() {
            return;
        }
        if let Some(previous) = previous.filter(|p| !Rc::ptr_eq(p, policy)) {
            for provider in policy.carry_jwks_from(&previous) {
                log(
                    LogLevel::Info,
                    &format!(
                        "meshguard: jwks provider={provider} key set carried over from the previous configuration"
                    ),
                );
            }
        }
        self.poll();
    }

    /// Send the fetches that are due (from `on_tick`, and once on configure).
    pub fn poll(&mut self) {
        if self.policy.is_none() {
            return;
        }
        let now = now_ms();
        for i in 0..self.sources.len() {
            let Some(source) = self.sources.get_mut(i) else { continue };
            if let Some((_, sent)) = source.in_flight {
                if now.saturating_sub(sent) < LOST_AFTER_MS {
                    continue;
                }
                source.in_flight = None;
            }
            if now < source.due_ms {
                continue;
            }
            let r = &source.remote;
            match hostcalls::dispatch_get(&r.cluster, &r.path, &r.authority, FETCH_TIMEOUT) {
                Ok(token) => source.in_flight = Some((token, now)),
                Err(status) => {
                    let detail = format!("host status {}", status.0);
                    self.finish(i, FetchResult::DispatchFailed, &detail, now);
                }
            }
        }
    }

    /// The response to one of our calls (from `on_http_call_response`). `false` when the token
    /// is not a fetch of the policy in force (one sent for a configuration since replaced: the
    /// new one fetches for itself).
    pub fn response(&mut self, token: u32, body_size: usize) -> bool {
        let Some(index) = self.sources.iter().position(|s| s.in_flight.is_some_and(|(t, _)| t == token)) else {
            return false;
        };
        let Some(policy) = self.policy.clone() else { return false };
        let now = now_ms();
        let (result, detail) = match hostcalls::http_call_response_status() {
            None => (FetchResult::NoResponse, String::from("no response (timeout or reset)")),
            Some(200) if body_size > MAX_JWKS_BYTES => {
                (FetchResult::TooLarge, format!("body of {body_size} bytes (at most {MAX_JWKS_BYTES})"))
            }
            Some(200) => match hostcalls::http_call_response_body(MAX_JWKS_BYTES) {
                Err(status) => (FetchResult::NoResponse, format!("body unreadable (host status {})", status.0)),
                Ok(body) => {
                    let provider = self.sources.get(index).map(|s| s.remote.provider.as_str()).unwrap_or_default();
                    match policy.set_jwks(provider, &body) {
                        Ok(JwksUpdate::Changed) => {
                            log(
                                LogLevel::Info,
                                &format!("meshguard: jwks provider={provider} key set updated bytes={}", body.len()),
                            );
                            (FetchResult::Ok, String::new())
                        }
                        Ok(JwksUpdate::Unchanged) => (FetchResult::Ok, String::new()),
                        Err(why) => (FetchResult::Invalid, why),
                    }
                }
            },
            Some(status) => (FetchResult::HttpError, format!("status {status}")),
        };
        if let Some(source) = self.sources.get_mut(index) {
            source.in_flight = None;
        }
        self.finish(index, result, &detail, now);
        true
    }

    /// Count, log a failure, and schedule the next fetch of source `index`.
    fn finish(&mut self, index: usize, result: FetchResult, detail: &str, now: u64) {
        let Some(source) = self.sources.get_mut(index) else { return };
        let refresh = source.remote.refresh_seconds;
        let wait_secs = if result == FetchResult::Ok { refresh } else { refresh.min(RETRY_MAX_SECS) };
        source.due_ms = now.saturating_add(wait_secs.saturating_mul(1_000));
        let provider = source.remote.provider.clone();
        if result != FetchResult::Ok {
            let has_keys = self.policy.as_ref().is_some_and(|p| p.has_jwks(&provider));
            let keeping = if has_keys {
                "keeping the last good key set"
            } else {
                "no key set yet: its rules deny with jwt_keys_unavailable"
            };
            log(
                LogLevel::Warn,
                &format!(
                    "meshguard: jwks fetch failed provider={provider} cluster={} result={} ({detail}); {keeping}",
                    source.remote.cluster,
                    result.as_str()
                ),
            );
        }
        self.count(provider, result);
    }

    fn count(&mut self, provider: String, result: FetchResult) {
        let known = self.counters.iter().find(|(p, r, _)| *p == provider && *r == result).map(|(_, _, id)| *id);
        let id = match known {
            Some(id) => id,
            None => {
                let Ok(id) = hostcalls::define_counter(&counter_name(&provider, result)) else { return };
                self.counters.push((provider, result, id));
                id
            }
        };
        let _ = hostcalls::increment(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_dotted_and_flatten_to_prometheus_names() {
        let all = [
            FetchResult::Ok,
            FetchResult::HttpError,
            FetchResult::NoResponse,
            FetchResult::TooLarge,
            FetchResult::Invalid,
            FetchResult::DispatchFailed,
        ];
        let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["ok", "http_error", "no_response", "too_large", "invalid", "dispatch_failed"]);
        assert_eq!(
            counter_name("idp", FetchResult::HttpError),
            "meshguard.jwks.provider.idp.result.http_error.fetch_total"
        );
        for r in all {
            let name = counter_name("corp-idp", r);
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{name}");
            // Never a finding counter: the stats-tags regexes are anchored on `meshguard.check.`.
            assert!(!name.starts_with("meshguard.check."));
        }
    }
}
