//! The policy budget: what one policy may cost the proxy, checked before anything is compiled.
//!
//! Threat: a hostile or careless policy that stalls or exhausts the proxy. Five and a half
//! kilobytes of `(?:.{1000}){200}` path regexes used to compile for over a second per VM,
//! grow Envoy to 1.4 GB and cost every request up to seconds of worker time; a hundred of
//! them trapped `on_configure` on allocation. A policy is compiled in every VM (main thread
//! and each worker) and its matchers run on every request, so both its compile cost and its
//! per-request worst case must be bounded by the document, whatever it says.
//!
//! [`check`] runs on the parsed document before compilation and refuses a policy over budget
//! with the JSON path of the first item past a limit. Each regex is also compiled with
//! regex-lite's own limits ([`REGEX_SIZE_LIMIT`], [`REGEX_NEST_LIMIT`]: `route.rs`), so that
//! compiling a hostile pattern stops as soon as it is too big.
//!
//! # Per-request worst case of every matcher
//!
//! Measured natively (x86-64, release; V8 runs the same code 1.5–2× slower), `n` = the length
//! of the canonical path or host, at the limits below:
//!
//! | matcher | cost per request | bound under this budget |
//! |---|---|---|
//! | identity exact hosts | one hash lookup per rule naming hosts | ≤ 1,000 rules × O(253 B) |
//! | identity `*.` hosts | a suffix compare per pattern | ≤ 1,000 patterns × 253 B |
//! | egress hosts | one hash lookup + one label-trie walk (O(labels)), independent of the count | ≤ 127 labels |
//! | principals / sources | one trie walk over the ID's segments (O(segments)), independent of the count | ≤ 2 branches per segment |
//! | exact / prefix paths | one compare each, at most the pattern's length | ≤ 10,000 × 1,024 B = 10 MB of memcmp (< 1 ms) |
//! | methods | one compare each | ≤ 10,000 in all |
//! | egress credential names | per header (and query parameter) of a request a `deny`/`strip` rule admits: one index by length, then a compare per name of that length | ≤ 33 built-in + 64 configured header names, 18 + 64 parameter names |
//! | path regexes | regex-lite's PikeVM: O(m · n), measured 1.1–1.3 ns × compiled bytes × path bytes (an unanchored `(?:.{82})x`, 4 KiB compiled, on an 8 KiB path: 38 ms) | ≤ 32 regexes, ≤ 4 KiB each, ≤ 16 KiB in all; per request at most [`REGEX_WORK_LIMIT`] (4 Mi) compiled bytes × path bytes in all: measured ≤ 6 ms natively whatever the policy and the request (`benches/budget.rs`: 4 × `(?:.{82})x` on a 256-byte path; a 1,025-byte path stops after the first: 7 µs) |
//!
//! The regex row is capped per request: a regex whose run would take the request past the cap
//! is not run, and the request is *undecided* for the rules whose paths hinge on it
//! ([`crate::matchers::route::Match`]),
//! and every check reads that in the fail-closed direction: an identity deny rule applies, an
//! identity allow rule does not admit (`peer_identity_route_undecided` when nothing else
//! decides), a JWT requirement holds.
//!
//! Typical path regexes are far below the limits: `^/v[0-9]+/items$` compiles to 512 B,
//! `^/api/v[0-9]+/users/[^/]+/orders/[0-9]+$` to 1.1 KiB, a UUID matcher to 2.9 KiB. The
//! regex row is the one a policy author still controls: prefer `exact` and `prefix`, anchor
//! regexes (`^...$`: an anchored regex without a leading `.*` runs in O(n) with a small
//! constant), and keep a `pathLength` hygiene limit in force.

use crate::document::PolicyDocument;
use crate::error::ConfigErrors;
use crate::matchers::route::PathMatchDoc;

/// regex-lite's `size_limit` for one path regex: the approximate heap size of its compiled
/// program. 4 KiB holds any ordinary path pattern (a UUID matcher is 2.9 KiB) and stops
/// counted repetitions such as `(?:.{1000}){200}` after a few microseconds of compiling.
pub const REGEX_SIZE_LIMIT: usize = 4 * 1024;
/// regex-lite's `nest_limit`: how deeply groups and repetitions may nest.
pub const REGEX_NEST_LIMIT: u32 = 32;
/// The per-request cap of the regex matcher, in work units: one regex run on an `n`-byte
/// canonical path costs its compiled size × `n` (regex-lite's PikeVM is O(size · n)), and the
/// runs of one request, over every rule of every check, may cost this much in all. A regex
/// past the cap is not run: the request is *undecided* for the rules whose paths hinge on it,
/// and every check fails closed on it (`peer_identity_route_undecided`; a JWT requirement
/// holds). 4 Mi units is a 1 KiB regex on a 4 KiB path, or 32 ordinary 1 KiB regexes on
/// 128-byte paths; `benches/budget.rs` measures the worst case it allows.
pub const REGEX_WORK_LIMIT: u64 = 4 * 1024 * 1024;

/// The limits of one policy document.
pub mod limits {
    /// `identity.rules`: evaluated one after the other on every request.
    pub const IDENTITY_RULES: usize = 1_000;
    /// `egress.allow`: looked up by host, not scanned.
    pub const EGRESS_RULES: usize = 10_000;
    /// `upstream.destinations`: looked up by cluster host and authority, not scanned.
    pub const UPSTREAM_DESTINATIONS: usize = 10_000;
    /// `jwt.rules`: the first whose route covers the request decides, so they are scanned.
    pub const JWT_RULES: usize = 1_000;
    /// `jwt.providers`: each holds at most 32 keys, imported in every VM at configure.
    pub const JWT_PROVIDERS: usize = 32;
    /// Claim conditions in all JWT rules (checked on the rule that decides).
    pub const JWT_CLAIMS: usize = 10_000;
    /// `jwt.tokenSources` and `jwt.forwardClaims`: each looked at on every covered request.
    pub const JWT_SOURCES: usize = 16;
    pub const JWT_FORWARD_CLAIMS: usize = 32;
    /// Host names in all rules (identity, egress, and upstream clusters and hosts); twice the 10,000 hosts benchmarked to
    /// compile in ≤ 100 ms and ≤ 10 MiB per VM.
    pub const HOSTS: usize = 20_000;
    /// `*.` host patterns in identity rules: each is a suffix compare per request.
    pub const IDENTITY_HOST_WILDCARDS: usize = 1_000;
    /// Principal and source patterns in all rules (tries: memory, not request time).
    pub const PRINCIPALS: usize = 20_000;
    /// Path matchers (exact, prefix and regex) in all rules.
    pub const PATHS: usize = 10_000;
    /// Bytes of one exact or prefix path (a regex pattern has its own 1,024-character limit).
    pub const PATH_BYTES: usize = 1_024;
    /// Methods in all rules.
    pub const METHODS: usize = 10_000;
    /// Path regexes in the whole policy.
    pub const REGEXES: usize = 32;
    /// The compiled size of all path regexes together (bytes, as regex-lite counts them).
    pub const REGEX_TOTAL_BYTES: usize = 16 * 1024;
    /// Trust domains named by the identity check.
    pub const TRUST_DOMAINS: usize = 100;
    /// `egress.credentials.headers` and `.queryParams` (each): names of one length are compared
    /// one by one on every header or parameter a scoped-out request carries.
    pub const CREDENTIAL_NAMES: usize = 64;
}

/// A running count against one limit; the first item past it is reported, once.
struct Meter {
    limit: usize,
    used: usize,
    what: &'static str,
    reported: bool,
}

impl Meter {
    fn new(limit: usize, what: &'static str) -> Self {
        Self { limit, used: 0, what, reported: false }
    }

    /// Adds `amount` for the item at `at`.
    fn add(&mut self, amount: usize, at: impl FnOnce() -> String, errs: &mut ConfigErrors) {
        self.used = self.used.saturating_add(amount);
        if self.used > self.limit && !self.reported {
            self.reported = true;
            errs.push(at(), format!("over the policy budget: {} (at most {})", self.what, self.limit));
        }
    }
}

/// The compiled size of `pattern` in bytes as regex-lite counts it (to within 64 bytes, from
/// above), or `None` when it does not compile within [`REGEX_SIZE_LIMIT`] (route.rs reports
/// why). Each probe compile stops as soon as the program outgrows its limit.
///
/// regex-lite counts heap bytes, which depend on the pointer width: a regex is about 0.55 of
/// its x86_64 size on wasm32. So `meshguard check` (64-bit) is the stricter of the two: every
/// policy it accepts, the filter accepts; near the limits the filter may accept a regex the
/// command line refuses, never the other way round.
pub fn regex_compiled_size(pattern: &str) -> Option<usize> {
    let fits = |limit: usize| {
        regex_lite::RegexBuilder::new(pattern).size_limit(limit).nest_limit(REGEX_NEST_LIMIT).build().is_ok()
    };
    if !fits(REGEX_SIZE_LIMIT) {
        return None;
    }
    let (mut lo, mut hi) = (0usize, REGEX_SIZE_LIMIT);
    while hi - lo > 64 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

struct Meters {
    hosts: Meter,
    wildcards: Meter,
    principals: Meter,
    paths: Meter,
    methods: Meter,
    regexes: Meter,
    regex_bytes: Meter,
}

impl Meters {
    fn paths(&mut self, paths: &[PathMatchDoc], at: &str, errs: &mut ConfigErrors) {
        for (i, p) in paths.iter().enumerate() {
            let pat = || format!("{at}.paths[{i}]");
            self.paths.add(1, pat, errs);
            for (field, value) in [("exact", &p.exact), ("prefix", &p.prefix)] {
                if value.as_ref().is_some_and(|v| v.len() > limits::PATH_BYTES) {
                    errs.push(
                        format!("{at}.paths[{i}].{field}"),
                        format!("over the policy budget: longer than {} bytes", limits::PATH_BYTES),
                    );
                }
            }
            if let Some(regex) = &p.regex {
                let at = || format!("{at}.paths[{i}].regex");
                self.regexes.add(1, at, errs);
                // Over the per-regex limit or invalid: compile_path says so. Only patterns
                // within the 1,024-character limit are worth measuring.
                if self.regexes.reported || regex.len() > 1_024 {
                    continue;
                }
                if let Some(size) = regex_compiled_size(regex) {
                    self.regex_bytes.add(size, at, errs);
                }
            }
        }
    }
}

/// Checks `doc` against the budget; every error names the field of the first item past a
/// limit. Called by `Policy::from_value` before anything is compiled: an over-budget policy
/// costs no more than this walk.
pub fn check(doc: &PolicyDocument, errs: &mut ConfigErrors) {
    let mut m = Meters {
        hosts: Meter::new(limits::HOSTS, "host names in all rules"),
        wildcards: Meter::new(limits::IDENTITY_HOST_WILDCARDS, "'*.' hosts in identity rules"),
        principals: Meter::new(limits::PRINCIPALS, "principal and source patterns in all rules"),
        paths: Meter::new(limits::PATHS, "path matchers in all rules"),
        methods: Meter::new(limits::METHODS, "methods in all rules"),
        regexes: Meter::new(limits::REGEXES, "path regexes"),
        regex_bytes: Meter::new(
            limits::REGEX_TOTAL_BYTES,
            "bytes of compiled path regexes (regex-lite's size); prefer exact and prefix paths",
        ),
    };
    if let Some(identity) = &doc.identity {
        if identity.trust_domains.len() > limits::TRUST_DOMAINS {
            errs.push(
                format!("identity.trustDomains[{}]", limits::TRUST_DOMAINS),
                format!("over the policy budget: trust domains (at most {})", limits::TRUST_DOMAINS),
            );
        }
        if identity.rules.len() > limits::IDENTITY_RULES {
            errs.push(
                format!("identity.rules[{}]", limits::IDENTITY_RULES),
                format!("over the policy budget: identity rules (at most {})", limits::IDENTITY_RULES),
            );
        }
        for (i, rule) in identity.rules.iter().enumerate() {
            let at = format!("identity.rules[{i}]");
            let route = &rule.route;
            for (j, host) in route.hosts.iter().enumerate() {
                m.hosts.add(1, || format!("{at}.match.hosts[{j}]"), errs);
                if host.starts_with("*.") {
                    m.wildcards.add(1, || format!("{at}.match.hosts[{j}]"), errs);
                }
            }
            m.methods.add(route.methods.len(), || format!("{at}.match.methods"), errs);
            m.principals.add(rule.principals.len(), || format!("{at}.principals"), errs);
            m.paths(&route.paths, &format!("{at}.match"), errs);
        }
    }
    if let Some(egress) = &doc.egress {
        if egress.allow.len() > limits::EGRESS_RULES {
            errs.push(
                format!("egress.allow[{}]", limits::EGRESS_RULES),
                format!("over the policy budget: egress rules (at most {})", limits::EGRESS_RULES),
            );
        }
        for (i, rule) in egress.allow.iter().enumerate() {
            let at = format!("egress.allow[{i}]");
            m.hosts.add(rule.hosts.len(), || format!("{at}.hosts"), errs);
            m.methods.add(rule.methods.len(), || format!("{at}.methods"), errs);
            m.principals.add(rule.sources.len(), || format!("{at}.sources"), errs);
            m.paths(&rule.paths, &at, errs);
        }
        if let Some(c) = &egress.credentials {
            for (field, n) in [("headers", c.headers.len()), ("queryParams", c.query_params.len())] {
                if n > limits::CREDENTIAL_NAMES {
                    errs.push(
                        format!("egress.credentials.{field}[{}]", limits::CREDENTIAL_NAMES),
                        format!("over the policy budget: credential names (at most {})", limits::CREDENTIAL_NAMES),
                    );
                }
            }
        }
    }
    if let Some(upstream) = &doc.upstream {
        if upstream.destinations.len() > limits::UPSTREAM_DESTINATIONS {
            errs.push(
                format!("upstream.destinations[{}]", limits::UPSTREAM_DESTINATIONS),
                format!("over the policy budget: upstream destinations (at most {})", limits::UPSTREAM_DESTINATIONS),
            );
        }
        for (i, d) in upstream.destinations.iter().enumerate() {
            let at = format!("upstream.destinations[{i}]");
            m.hosts.add(d.clusters.len(), || format!("{at}.clusters"), errs);
            m.hosts.add(d.hosts.len(), || format!("{at}.hosts"), errs);
            m.principals.add(d.identities.len(), || format!("{at}.identities"), errs);
        }
    }
    if let Some(jwt) = &doc.jwt {
        for (field, n, limit) in [
            ("rules", jwt.rules.len(), limits::JWT_RULES),
            ("providers", jwt.providers.len(), limits::JWT_PROVIDERS),
            ("tokenSources", jwt.token_sources.len(), limits::JWT_SOURCES),
            ("forwardClaims", jwt.forward_claims.len(), limits::JWT_FORWARD_CLAIMS),
        ] {
            if n > limit {
                errs.push(
                    format!("jwt.{field}[{limit}]"),
                    format!("over the policy budget: jwt {field} (at most {limit})"),
                );
            }
        }
        let mut claims = Meter::new(limits::JWT_CLAIMS, "claim conditions in all JWT rules");
        for (i, rule) in jwt.rules.iter().enumerate() {
            let at = format!("jwt.rules[{i}]");
            let route = &rule.route;
            m.hosts.add(route.hosts.len(), || format!("{at}.match.hosts"), errs);
            m.methods.add(route.methods.len(), || format!("{at}.match.methods"), errs);
            m.paths(&route.paths, &format!("{at}.match"), errs);
            claims.add(rule.claims.len(), || format!("{at}.claims"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[test]
    fn the_jwt_section_is_within_the_budget_too() {
        let rules: Vec<_> = (0..40)
            .map(|i| json!({"id": format!("r{i}"), "optional": true, "match": {"paths": [{"regex": "^/a/[0-9]+$"}]}}))
            .collect();
        let doc = json!({"version": 1, "jwt": {"providers": [], "rules": rules}});
        let errs = Policy::from_value(doc).expect_err("over budget");
        assert!(
            errs.iter().any(|e| e.path == "jwt.rules[32].match.paths[0].regex" && e.message.contains("path regexes")),
            "{errs}"
        );
        let rules: Vec<_> = (0..=limits::JWT_RULES).map(|i| json!({"id": format!("r{i}"), "optional": true})).collect();
        let errs =
            Policy::from_value(json!({"version": 1, "jwt": {"providers": [], "rules": rules}})).expect_err("over");
        assert!(errs.iter().any(|e| e.path == "jwt.rules[1000]"), "{errs}");
    }

    /// The policy from the audit: `n` identity rules, each with one `(?:.{1000}){200}` path
    /// regex (50 of them are about 5.5 KB of JSON).
    fn regex_bomb(n: usize) -> serde_json::Value {
        let rules: Vec<_> = (0..n)
            .map(|i| {
                json!({"id": format!("r{i}"), "action": "allow", "principals": ["*"],
                       "match": {"paths": [{"regex": "(?:.{1000}){200}"}]}})
            })
            .collect();
        json!({"version": 1, "identity": {"trustDomains": ["cluster.local"], "rules": rules}})
    }

    fn refused(doc: serde_json::Value) -> (ConfigErrors, Duration) {
        let started = Instant::now();
        let errs = Policy::from_value(doc).expect_err("over budget");
        (errs, started.elapsed())
    }

    #[test]
    fn the_audits_regex_bomb_is_refused_quickly_with_the_field() {
        for n in [1, 10, 31, 50, 100] {
            let doc = regex_bomb(n);
            if n == 50 {
                let len = doc.to_string().len();
                assert!((4_500..7_000).contains(&len), "the audit's policy was 5.5 KB: {len}");
            }
            let (errs, took) = refused(doc);
            eprintln!("regex bomb with {n} rules: refused in {took:?}");
            // The audit's policy (50 rules) and anything larger never get to compiling; below
            // the count each regex stops compiling at its size limit (debug builds on a busy
            // CI machine get more room there).
            let bound = if n > limits::REGEXES { Duration::from_millis(100) } else { Duration::from_millis(500) };
            assert!(took < bound, "{n} rules: compile took {took:?}");
            let text = errs.to_string();
            if n > limits::REGEXES {
                assert!(
                    text.contains(&format!(
                        "identity.rules[{}].match.paths[0].regex: over the policy budget",
                        limits::REGEXES
                    )),
                    "{text}"
                );
            } else {
                // Under the count: each one is refused by its own size limit.
                assert_eq!(errs.iter().count(), n, "{text}");
                assert!(
                    errs.iter().all(|e| e.path.ends_with(".match.paths[0].regex") && e.message.contains("size limit")),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn ordinary_regexes_fit_and_are_measured() {
        for p in ["^/v[0-9]+/items$", "^/api/v[0-9]+/users/[^/]+/orders/[0-9]+$", "/admin", "(?i)^/admin"] {
            let size = regex_compiled_size(p).unwrap();
            assert!(size <= 1_536, "{p}: {size}");
        }
        let uuid = "^/api/(users|orders|items|carts)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
        assert!(regex_compiled_size(uuid).is_some_and(|s| s <= REGEX_SIZE_LIMIT));
        assert_eq!(regex_compiled_size("(?:.{1000}){200}"), None);
        assert_eq!(regex_compiled_size("a{5}{5}{5}{5}{5}{5}"), None);
        assert_eq!(regex_compiled_size(&format!("{}a{}", "(".repeat(40), ")".repeat(40))), None, "nesting");
    }

    #[test]
    fn the_total_regex_size_is_bounded() {
        // Each ~2.9 KiB on x86_64: five fit in 16 KiB, the sixth does not.
        let uuid = "^/api/(users|orders|items|carts)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
        let rules: Vec<_> = (0..16)
            .map(|i| json!({"id": format!("r{i}"), "action": "allow", "principals": ["*"], "match": {"paths": [{"regex": uuid}]}}))
            .collect();
        let doc = json!({"version": 1, "identity": {"trustDomains": ["cluster.local"], "rules": rules}});
        let (errs, _) = refused(doc);
        let text = errs.to_string();
        assert_eq!(errs.iter().count(), 1, "{text}");
        // Sizes are heap bytes: on a 32-bit target (the filter) the same regexes are smaller,
        // so more of them fit; the command line (64-bit) is the stricter one.
        let first_refused: usize = text
            .strip_prefix("identity.rules[")
            .and_then(|t| t.split(']').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            text.contains("].match.paths[0].regex: over the policy budget: bytes of compiled path regexes"),
            "{text}"
        );
        if cfg!(target_pointer_width = "64") {
            assert_eq!(first_refused, 5, "{text}");
        } else {
            assert!((5..16).contains(&first_refused), "{text}");
        }
    }

    #[test]
    fn counts_are_bounded_with_the_field_of_the_first_item_past_the_limit() {
        let rules: Vec<_> = (0..=limits::IDENTITY_RULES)
            .map(|i| json!({"id": format!("r{i}"), "action": "allow", "principals": ["*"]}))
            .collect();
        let (errs, _) = refused(json!({"version": 1, "identity": {"rules": rules}}));
        assert!(errs.to_string().contains("identity.rules[1000]: over the policy budget: identity rules"), "{errs}");

        let long = format!("/{}", "a".repeat(limits::PATH_BYTES));
        let (errs, _) = refused(
            json!({"version": 1, "egress": {"allow": [{"id": "a", "hosts": ["x.com"], "paths": [{"prefix": long}]}]}}),
        );
        assert!(errs.to_string().contains("egress.allow[0].paths[0].prefix: over the policy budget"), "{errs}");

        let wildcards: Vec<String> =
            (0..=limits::IDENTITY_HOST_WILDCARDS).map(|i| format!("*.h{i}.example.com")).collect();
        let (errs, _) = refused(json!({"version": 1, "identity": {"rules": [
            {"id": "w", "action": "allow", "principals": ["*"], "match": {"hosts": wildcards}}]}}));
        assert!(errs.to_string().contains("identity.rules[0].match.hosts[1000]: over the policy budget"), "{errs}");
    }

    #[test]
    fn the_benchmarked_scale_policy_is_within_budget() {
        let started = Instant::now();
        Policy::from_value(crate::samples::scale_egress(1000, 10)).expect("10,000 hosts, 1,000 sources");
        // Natively, debug build: the budget walk adds nothing noticeable.
        eprintln!("scale_egress(1000, 10) compiled in {:?}", started.elapsed());
    }
}
