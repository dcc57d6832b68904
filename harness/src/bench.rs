//! `meshguard bench` (`make bench`): what meshguard costs Envoy, in Envoy CPU time per request.
//!
//! Each scenario starts its own Envoy (the sidecar inbound configuration, one worker), sends
//! the same traffic (HTTP/1.1 over mTLS as workload `web`, keep-alive, requests pipelined in
//! batches, every request allowed and answered by the echo upstream), and reads the Envoy
//! process's user + system CPU time (the kernel's per-process CPU clock, to the nanosecond)
//! before and after. The echo and the client run in this process, so their CPU is not
//! counted. Three kinds of traffic, each with its `no filter` row (Envoy's own cost), its
//! `no-op wasm` row (`filter/noop`, a Proxy-Wasm filter that does nothing, delivered the same
//! way: the cost of the Wasm machinery, "the Wasm floor") and meshguard rows:
//!
//! - plain inbound (`GET /api/items`): `meshguard (demo policy)` (peer identity and four route
//!   rules; allowed requests not logged, as in production) and `meshguard sidecar` (what a
//!   real sidecar runs, [`sidecar_policy`]: the `sidecar` hygiene preset, the demo identity
//!   rules for inbound, the 10,000-host egress allowlist for outbound), and the breakdown of
//!   meshguard's cost by the probe (`filter/probe`, meshguard's per-request work in stages:
//!   the header map, or four single headers instead; the `connection.mtls` and
//!   `connection.uri_san_peer_certificate` properties; two counter host calls, or counts in
//!   VM memory flushed on a tick; `Policy::evaluate` of the demo policy);
//! - thirty ordinary browser and API headers and a query string on every request
//!   ([`policy::samples::ORDINARY_30`]): the probe's header map, and every request-hygiene
//!   guard of the `gateway-strict` preset (envoy-config/policies/gateway-strict.yaml);
//! - the sidecar's OUTBOUND side (plaintext from the local app, routed by Host): the probe's
//!   header map with `xds.listener_direction` and `xds.cluster_name`, an egress allowlist of
//!   10,000 hosts and 1,000 source patterns ([`policy::samples::scale_egress`]) plus the rule
//!   that admits the request, and the sidecar policy;
//! - the outbound side to an in-mesh service over mTLS (`payments`, the mesh's pinned
//!   endpoint): the egress allowlist plus upstream identity pinning ([`pinning_policy`]), which
//!   reads the upstream's certificate in the response phase.
//!
//! Columns: the median window's (`--percentile`: another window's) CPU per request and the spread of the windows; `ratio` and
//! `+us/req` against the `no filter` row with the same traffic; `x floor`, the added CPU as a
//! multiple of the no-op's added CPU with the same traffic (meshguard's budget is 1.25x).
//!
//! All the scenarios' Envoys run at once, pinned to one core with the load generator on the
//! other(s), and are measured in round-robin windows after a warm-up; the table shows each
//! one's median window and the spread. Without pinning the client and Envoy take turns on
//! the cores and the numbers swing by a third; without round-robin a drift of the (virtual)
//! machine lands on whichever row ran last. On a quiet machine two runs of the same scenario
//! in one table agree within a few percent; on a busy one (other builds on the same cores)
//! the spread column says how far to trust a row.
//!
//! `--rows TEXT` keeps the rows whose name contains TEXT (and the rows they are compared
//! with); `MESHGUARD_BENCH_COMPARE=<other meshguard.wasm>` adds a `[compare]` twin of every
//! meshguard row running that module, measured in the same windows ([`with_comparison`]).
//! `--memory` measures Envoy's resident memory instead ([`memory`]): no filter, the no-op and
//! the 10,000-host sidecar policy, with 1 and 2 workers; the second worker's share is the
//! cost of one more worker VM.
//!
//! This is a benchmark for people, not a test: nothing here passes or fails on a number.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{self, Request};
use crate::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions, SIDECAR_INBOUND_TEMPLATE, SIDECAR_OUTBOUND_TEMPLATE};
use crate::policy_file::load_value;
use crate::Result;

/// How much traffic each scenario gets.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests measured per scenario (after the warm-up).
    pub requests: usize,
    /// Requests sent before measuring (VM warm-up, connection pools).
    pub warmup: usize,
    /// Requests pipelined on one connection.
    pub per_connection: usize,
    /// Measurement windows per scenario (same Envoy); the table shows their median.
    pub windows: usize,
    /// Which window the table shows, as a percentile of the windows (50: the median). On a
    /// machine shared with other work, interference only ever adds CPU time, and a low
    /// percentile (say 25) is the steadier estimate of a row's own cost.
    pub percentile: u8,
}

impl Default for Load {
    fn default() -> Self {
        Load { requests: 10_000, warmup: 2_000, per_connection: 100, windows: 8, percentile: 50 }
    }
}

/// Which filter a scenario puts in the HTTP filter chain.
#[derive(Debug, Clone)]
pub enum Filter {
    None,
    Noop,
    Meshguard {
        policy_json: String,
    },
    /// `probe.wasm` (`filter/probe`) with this configuration: `{"stages": [...], "policy": ...}`.
    Probe {
        config_json: String,
    },
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub filter: Filter,
    /// Extra request headers on every request (beyond host, x-request-id).
    pub headers: Vec<(String, String)>,
    pub path: String,
    /// The Envoy: a sidecar's inbound side (mTLS as workload `web`) or its outbound side
    /// (plaintext from the local app, to `authority`).
    pub kind: MeshKind,
    /// The request's authority (default: the client's).
    pub authority: Option<String>,
    /// The row (by name) this one is compared with: `no filter` with the same traffic.
    pub baseline: String,
    /// The no-op Wasm row (by name) with the same traffic: the "× Wasm floor" column divides
    /// this row's added CPU by that row's.
    pub floor: String,
    /// Another meshguard.wasm for this row (default: the one `make wasm` built).
    pub wasm: Option<PathBuf>,
}

impl Scenario {
    /// A scenario on the sidecar's inbound side: `GET /api/items`, no extra headers,
    /// compared with `no filter` and `no-op wasm`.
    pub fn inbound(name: &str, filter: Filter) -> Self {
        Scenario {
            name: name.to_string(),
            filter,
            headers: Vec::new(),
            path: "/api/items".to_string(),
            kind: MeshKind::SidecarInbound,
            authority: None,
            baseline: "no filter".to_string(),
            floor: "no-op wasm".to_string(),
            wasm: None,
        }
    }
}

/// With `MESHGUARD_BENCH_COMPARE=<path to another meshguard.wasm>` (say, the last release's),
/// every meshguard row gets a twin, `<name> [compare]`, running that module right after it:
/// same traffic, same windows, so that two builds are compared under the same noise.
pub fn with_comparison(scenarios: Vec<Scenario>) -> Vec<Scenario> {
    let Some(other) = std::env::var_os("MESHGUARD_BENCH_COMPARE").filter(|p| !p.is_empty()) else {
        return scenarios;
    };
    let mut out = Vec::with_capacity(scenarios.len() * 2);
    for s in scenarios {
        let twin = matches!(s.filter, Filter::Meshguard { .. }).then(|| Scenario {
            name: format!("{} [compare]", s.name),
            wasm: Some(PathBuf::from(&other)),
            ..s.clone()
        });
        out.push(s);
        out.extend(twin);
    }
    out
}

/// Keeps the scenarios whose name contains one of `wanted` (all of them when `wanted` is
/// empty), with the baseline and floor rows they are compared with, in the original order.
pub fn select(scenarios: Vec<Scenario>, wanted: &[String]) -> Vec<Scenario> {
    if wanted.is_empty() {
        return scenarios;
    }
    let picked: Vec<&Scenario> =
        scenarios.iter().filter(|s| wanted.iter().any(|w| s.name.contains(w.as_str()))).collect();
    let keep = |s: &Scenario| picked.iter().any(|p| p.name == s.name || p.baseline == s.name || p.floor == s.name);
    scenarios.iter().filter(|s| keep(s)).cloned().collect()
}

/// The measured cost of one scenario: `requests` per window, one (CPU, wall) per window.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub requests: usize,
    pub windows: Vec<(Duration, Duration)>,
    /// The window [`Measurement::cpu_us_per_request`] picks (see [`Load::percentile`]).
    pub percentile: u8,
}

impl Measurement {
    fn per_request(&self) -> Vec<f64> {
        let mut v: Vec<f64> =
            self.windows.iter().map(|(cpu, _)| cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median window's (or the [`Load::percentile`]'s) Envoy CPU time per request, in
    /// microseconds.
    pub fn cpu_us_per_request(&self) -> f64 {
        let v = self.per_request();
        let at = (v.len().saturating_sub(1) * usize::from(self.percentile.min(100)) + 50) / 100;
        v.get(at).copied().unwrap_or(0.0)
    }

    /// The lowest and highest window's CPU time per request.
    pub fn spread(&self) -> (f64, f64) {
        let v = self.per_request();
        (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0))
    }

    /// Requests per second over all windows.
    pub fn throughput(&self) -> f64 {
        let wall: f64 = self.windows.iter().map(|(_, w)| w.as_secs_f64()).sum();
        (self.requests * self.windows.len()) as f64 / wall.max(1e-9)
    }
}

/// The probe's configuration: these stages, and `policy` for the `evaluate` stage.
fn probe(stages: &[&str], policy: Option<&serde_json::Value>) -> Filter {
    let mut config = serde_json::json!({ "stages": stages });
    if let Some(policy) = policy {
        config["policy"] = policy.clone();
    }
    Filter::Probe { config_json: config.to_string() }
}

/// The policy a real sidecar runs: the `sidecar` hygiene preset
/// (envoy-config/policies/sidecar.yaml), the demo policy's identity rules (inbound only) and
/// the 10,000-host egress allowlist (outbound), in one document.
pub fn sidecar_policy() -> Result<serde_json::Value> {
    let root = crate::workspace_root();
    let mut policy = load_value(&root.join("envoy-config/policies/sidecar.yaml"))?;
    let demo = load_value(&root.join("envoy-config/policies/demo.yaml"))?;
    let mut identity = demo["identity"].clone();
    identity["appliesTo"] = "inbound".into();
    policy["identity"] = identity;
    policy["egress"] = serde_json::json!({ "appliesTo": "outbound", "allow": egress_allow() });
    Ok(policy)
}

/// 10,000 hosts and 1,000 source patterns, and the rule that admits the bench's outbound
/// requests (sources: the local workload, spiffe://cluster.local/ns/web/sa/web).
fn egress_allow() -> Vec<serde_json::Value> {
    let mut allow = policy::samples::scale_egress_rules(1000, 10);
    allow.push(serde_json::json!({
        "id": "bench", "hosts": ["api.example.com"], "ports": [80],
        "sources": ["spiffe://cluster.local/ns/web/sa/*"],
    }));
    allow
}

/// The outbound egress allowlist (10,000 hosts, and the in-mesh services) with upstream
/// identity pinning of the service the bench's outbound mTLS requests go to.
pub fn pinning_policy() -> serde_json::Value {
    let mut allow = egress_allow();
    allow.push(serde_json::json!({"id": "mesh", "hosts": ["*.svc.cluster.local"]}));
    serde_json::json!({
        "version": 1,
        "egress": {"allow": allow},
        "upstream": {"destinations": [
            {"id": "payments", "clusters": ["outbound|8080||payments.prod.svc.cluster.local"],
             "identities": ["spiffe://cluster.local/ns/prod/sa/payments"]},
            {"id": "prod", "clusters": ["outbound|*|*|*.prod.svc.cluster.local"],
             "identities": ["spiffe://cluster.local/ns/prod/sa/*"]},
        ]},
    })
}

fn without_pinning(mut policy: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = policy.as_object_mut() {
        obj.remove("upstream");
    }
    policy
}

/// The standard scenarios: for each kind of traffic, no filter, the no-op Wasm filter and
/// meshguard; for the plain inbound traffic also the probe's breakdown of meshguard's cost.
pub fn standard_scenarios() -> Result<Vec<Scenario>> {
    let root = crate::workspace_root();
    // The demo policy logs every allow so the demo can show them; in production only denies
    // are logged, which is what is measured here.
    let mut demo = load_value(&root.join("envoy-config/policies/demo.yaml"))?;
    demo["decisionLog"]["allowSampleRate"] = 0.0.into();
    let gateway_strict = crate::policy_file::load_json(&root.join("envoy-config/policies/gateway-strict.yaml"))?;
    let egress = serde_json::json!({"version": 1, "egress": {"allow": egress_allow()}}).to_string();
    let sidecar = sidecar_policy()?.to_string();
    // JWT (envoy-config/policies/jwt.yaml) with a valid RS256 token on every request: after the
    // first, the verified-token cache answers (the cached path).
    let jwt = load_value(&root.join("envoy-config/policies/jwt.yaml"))?;
    let token = crate::demo::sample_jwt(&jwt)?.unwrap_or_default();
    let jwt_row = Scenario {
        headers: vec![("authorization".to_string(), format!("Bearer {token}"))],
        ..Scenario::inbound("meshguard jwt RS256, cached token", Filter::Meshguard { policy_json: jwt.to_string() })
    };

    let thirty = |s: Scenario| Scenario {
        headers: policy::samples::ORDINARY_30.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        path: "/api/items?page=2&sort=-price".to_string(),
        baseline: "no filter, 30 headers".to_string(),
        floor: "no-op wasm, 30 headers".to_string(),
        ..s
    };
    let outbound = |s: Scenario| Scenario {
        kind: MeshKind::SidecarOutbound,
        authority: Some("api.example.com".to_string()),
        path: "/v1/items?page=2".to_string(),
        baseline: "no filter, outbound".to_string(),
        floor: "no-op wasm, outbound".to_string(),
        ..s
    };
    // The outbound side to an in-mesh service over mTLS (the pinned `payments` endpoint):
    // upstream pinning reads the upstream's certificate in the response phase.
    let pinned = |s: Scenario| Scenario {
        authority: Some("payments.prod.svc.cluster.local:8080".to_string()),
        baseline: "no filter, outbound to mTLS upstream".to_string(),
        floor: "no-op wasm, outbound to mTLS upstream".to_string(),
        ..outbound(s)
    };
    let inbound = Scenario::inbound;
    let peer = ["headers", "mtls", "san"];
    Ok(vec![
        inbound("no filter", Filter::None),
        inbound("no-op wasm", Filter::Noop),
        inbound("probe: header map", probe(&["headers"], None)),
        inbound("probe: 4 single headers", probe(&["header_values"], None)),
        inbound("probe: header map + mtls + san", probe(&peer, None)),
        inbound("probe: header map + san", probe(&["headers", "san"], None)),
        inbound("probe: ... + 2 counters", probe(&[&peer[..], &["counters"]].concat(), None)),
        inbound("probe: ... + 2 VM counters", probe(&[&peer[..], &["vm_counters"]].concat(), None)),
        inbound(
            "probe: ... + 2 counters + evaluate demo",
            probe(&[&peer[..], &["counters", "evaluate"]].concat(), Some(&demo)),
        ),
        inbound("meshguard (demo policy)", Filter::Meshguard { policy_json: demo.to_string() }),
        inbound("meshguard sidecar (hyg+id+egress 10k)", Filter::Meshguard { policy_json: sidecar.clone() }),
        jwt_row,
        thirty(inbound("no filter, 30 headers", Filter::None)),
        thirty(inbound("no-op wasm, 30 headers", Filter::Noop)),
        thirty(inbound("probe: header map, 30 headers", probe(&["headers"], None))),
        thirty(inbound("meshguard gateway-strict, 30 headers", Filter::Meshguard { policy_json: gateway_strict })),
        outbound(inbound("no filter, outbound", Filter::None)),
        outbound(inbound("no-op wasm, outbound", Filter::Noop)),
        outbound(inbound(
            "probe: map + direction + cluster, outbound",
            probe(&["headers", "direction", "cluster"], None),
        )),
        outbound(inbound("meshguard egress 10k hosts, outbound", Filter::Meshguard { policy_json: egress })),
        outbound(inbound("meshguard sidecar, outbound", Filter::Meshguard { policy_json: sidecar })),
        outbound(inbound(
            "meshguard egress 10k + upstream pinning, outbound, unpinned destination",
            Filter::Meshguard { policy_json: pinning_policy().to_string() },
        )),
        pinned(inbound("no filter, outbound to mTLS upstream", Filter::None)),
        pinned(inbound("no-op wasm, outbound to mTLS upstream", Filter::Noop)),
        pinned(inbound(
            "meshguard egress 10k, outbound to mTLS upstream",
            Filter::Meshguard { policy_json: without_pinning(pinning_policy()).to_string() },
        )),
        pinned(inbound(
            "meshguard egress 10k + upstream pinning, outbound",
            Filter::Meshguard { policy_json: pinning_policy().to_string() },
        )),
    ])
}

/// A sidecar template without the meshguard HTTP filter (its `config_discovery` block removed).
pub fn template_without_filter(template: &str) -> Result<String> {
    let start = template.find("          - name: default.meshguard\n");
    let end = template.find("          - name: envoy.filters.http.router\n");
    match (start, end) {
        (Some(s), Some(e)) if s < e => {
            let mut t = String::with_capacity(template.len());
            t.push_str(template.get(..s).unwrap_or_default());
            t.push_str(template.get(e..).unwrap_or_default());
            Ok(t)
        }
        _ => bail!("the sidecar template no longer has the filter block the benchmark removes"),
    }
}

/// `noop.wasm` or `probe.wasm`, next to meshguard.wasm.
fn sibling_wasm_path(file: &str) -> Result<PathBuf> {
    let meshguard = ensure_wasm()?;
    let path = meshguard.with_file_name(file);
    if !path.is_file() {
        bail!("{} is missing: build it with `make wasm`", path.display());
    }
    Ok(path)
}

/// With two or more cores, Envoy runs on the last core and this process (client and echo
/// upstreams) on the others, so that they do not take turns on one core, which steadies the
/// numbers. `pin_harness` runs before any Envoy is spawned, so that every Envoy is born
/// alike, then `pin_envoy` moves each one's threads. Best effort: without it the numbers are
/// only noisier.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_set(cpus: impl Iterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Pins every thread of `pid` to `set` and raises its priority to nice -20 (as root; best
/// effort). On a machine shared with other work (builds, other benchmarks) a measured thread
/// that other processes preempt in the middle of a request pays for it in cold caches, which
/// lands in its CPU time: at nice -20 the scheduler lets it run its burst out.
fn pin_threads(pid: u32, set: &libc::cpu_set_t) {
    let tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for tid in tids {
        // SAFETY: sched_setaffinity on a thread id with a valid, initialised set; setpriority
        // on a thread id with plain values (fails harmlessly without the privilege).
        unsafe {
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20);
        }
    }
}

fn pin_harness() {
    if cores() >= 2 {
        pin_threads(std::process::id(), &cpu_set(0..cores() - 1));
    }
}

fn pin_envoy(pid: u32) {
    if cores() >= 2 {
        pin_threads(pid, &cpu_set(std::iter::once(cores() - 1)));
    }
}

/// Envoy's user + system CPU time so far (all threads), to the nanosecond: the kernel's
/// per-process CPU clock (`clock_getcpuclockid`), or else `/proc/<pid>/stat` (10 ms ticks).
fn process_cpu(pid: u32) -> Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: plain FFI calls; the out-pointers point to live locals.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0 && libc::clock_gettime(clock, &mut ts) == 0 {
            return Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<envoy>/stat")?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' are plain.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) overall = indexes 11 and 12 after the ')'.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let total = ticks(11) + ticks(12);
    Ok(Duration::from_micros(total * 1_000_000 / hz))
}

fn send_load(mesh: &Mesh, scenario: &Scenario, count: usize, per_connection: usize) -> Result<()> {
    // The outbound side is plaintext from the local app.
    let tls = if scenario.kind == MeshKind::SidecarOutbound { None } else { Some(mesh.tls("web")?) };
    let mut one = Request::get(&scenario.path).with_header("x-request-id", "bench");
    if let Some(authority) = &scenario.authority {
        one = one.with_authority(authority);
    }
    for (name, value) in &scenario.headers {
        one = one.with_header(name, value);
    }
    let one = one.to_http1();
    let mut sent = 0;
    while sent < count {
        let batch = per_connection.min(count - sent);
        let mut raw = Vec::with_capacity(one.len() * batch + 32);
        for _ in 1..batch {
            raw.extend_from_slice(&one);
        }
        // The last request of the batch closes the connection, which ends the exchange.
        let last = String::from_utf8_lossy(&one).replacen("\r\n", "\r\nconnection: close\r\n", 1);
        raw.extend_from_slice(last.as_bytes());
        let exchange = client::send_raw_all(mesh.listener_addr(), tls.as_ref(), &raw, Duration::from_secs(10))?;
        let ok = exchange.responses.iter().filter(|r| r.status == 200).count();
        if ok != batch {
            let statuses: Vec<u16> = exchange.responses.iter().map(|r| r.status).take(5).collect();
            bail!("scenario {:?}: {ok} of {batch} requests answered 200 (first statuses: {statuses:?})", scenario.name);
        }
        sent += batch;
    }
    Ok(())
}

/// Starts one scenario's Envoy and warms it up.
fn start_scenario(scenario: &Scenario, load: Load, scratch: &std::path::Path) -> Result<Mesh> {
    let mesh = start_mesh(scenario, scratch, 1)?;
    pin_envoy(mesh.envoy().pid());
    send_load(&mesh, scenario, load.warmup, load.per_connection)?;
    Ok(mesh)
}

/// Starts one scenario's Envoy with `concurrency` workers.
fn start_mesh(scenario: &Scenario, scratch: &std::path::Path, concurrency: u32) -> Result<Mesh> {
    let mut options = MeshOptions { kind: scenario.kind, ..MeshOptions::default() };
    options.envoy.concurrency = concurrency;
    match &scenario.filter {
        Filter::None => {
            let template = scratch.join(format!("no-filter-{}.yaml", crate::unique_name("t")));
            let full = match scenario.kind {
                MeshKind::SidecarOutbound => SIDECAR_OUTBOUND_TEMPLATE,
                _ => SIDECAR_INBOUND_TEMPLATE,
            };
            fs::write(&template, template_without_filter(full)?)?;
            options.envoy_template = Some(template);
            options.allow_rejected_policy = true; // there is no plugin to accept anything
            options.wasm = Some(ensure_wasm()?);
        }
        Filter::Noop => options.wasm = Some(sibling_wasm_path("noop.wasm")?),
        Filter::Probe { config_json } => {
            options.wasm = Some(sibling_wasm_path("probe.wasm")?);
            options.policy_json = config_json.clone();
        }
        Filter::Meshguard { policy_json } => {
            options.wasm = Some(match &scenario.wasm {
                Some(path) => path.clone(),
                None => ensure_wasm()?,
            });
            options.policy_json = policy_json.clone();
        }
    }
    Mesh::start(options).with_context(|| format!("starting scenario {:?}", scenario.name))
}

/// Measures every scenario. All the Envoys run at once and the windows go round-robin
/// (scenario 1, 2, 3, 1, 2, 3, ...), so a slow drift of the machine (a shared VM's steal
/// time, frequency) weighs on every row alike instead of on whichever ran last.
pub fn run(scenarios: &[Scenario], load: Load) -> Result<Vec<Measurement>> {
    let scratch = crate::scratch_dir("bench")?;
    // Start the helper threads that spawn Envoys and serve traffic before pinning, so that
    // they are pinned too (a thread inherits its creator's affinity).
    drop(crate::echo::Echo::start()?);
    pin_harness();
    let mut meshes = Vec::with_capacity(scenarios.len());
    for s in scenarios {
        eprintln!("bench: starting {} ({} warm-up requests)", s.name, load.warmup);
        meshes.push(start_scenario(s, load, &scratch)?);
    }
    let mut rows: Vec<Measurement> = scenarios
        .iter()
        .map(|s| Measurement {
            name: s.name.clone(),
            requests: load.requests,
            windows: Vec::new(),
            percentile: load.percentile,
        })
        .collect();
    for window in 0..load.windows.max(1) {
        eprintln!("bench: window {} of {} ({} requests per scenario)", window + 1, load.windows, load.requests);
        for ((scenario, mesh), row) in scenarios.iter().zip(&meshes).zip(rows.iter_mut()) {
            let pid = mesh.envoy().pid();
            let cpu_before = process_cpu(pid)?;
            let started = Instant::now();
            send_load(mesh, scenario, load.requests, load.per_connection)?;
            row.windows.push((process_cpu(pid)?.saturating_sub(cpu_before), started.elapsed()));
        }
    }
    drop(meshes);
    let _ = fs::remove_dir_all(&scratch);
    Ok(rows)
}

/// The median CPU per request of the row named `name`.
fn median_of(scenarios: &[Scenario], rows: &[Measurement], name: &str) -> Option<f64> {
    scenarios.iter().zip(rows).find(|(s, _)| s.name == name).map(|(_, m)| m.cpu_us_per_request())
}

/// The table: one row per measurement, ratios and added CPU against each row's baseline row,
/// and the added CPU as a multiple of the no-op Wasm filter's (same traffic): "× floor".
pub fn table(scenarios: &[Scenario], rows: &[Measurement]) -> String {
    let mut out = format!(
        "{:<44} {:>8} {:>11} {:>13} {:>8} {:>9} {:>8} {:>8}\n",
        "scenario", "requests", "CPU us/req", "(min-max)", "ratio", "+us/req", "x floor", "req/s"
    );
    for (s, m) in scenarios.iter().zip(rows) {
        let base = median_of(scenarios, rows, &s.baseline).unwrap_or(0.0);
        let per = m.cpu_us_per_request();
        let (lo, hi) = m.spread();
        let ratio = if base > 0.0 { per / base } else { 0.0 };
        let added = per - base;
        let floor = median_of(scenarios, rows, &s.floor).map(|f| f - base).filter(|f| *f > 0.0);
        let times_floor = match (s.name == s.baseline, floor) {
            (false, Some(f)) => format!("{:.2}x", added / f),
            _ => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<44} {:>8} {:>11.1} {:>13} {:>7.2}x {:>9.1} {:>8} {:>8.0}\n",
            m.name,
            m.requests * m.windows.len(),
            per,
            format!("({lo:.0}-{hi:.0})"),
            ratio,
            added,
            times_floor,
            m.throughput()
        ));
    }
    out
}

/// Envoy's resident memory (`VmRSS` in `/proc/<pid>/status`), in KiB.
fn resident_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<envoy>/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<envoy>/status")
}

/// One memory measurement: a scenario's Envoy with `concurrency` workers.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub name: String,
    pub concurrency: u32,
    pub rss_kib: u64,
}

/// The scenarios `meshguard bench --memory` compares: no filter, the no-op Wasm filter, and
/// meshguard with the 10,000-host sidecar policy, all on the sidecar's inbound side.
pub fn memory_scenarios() -> Result<Vec<Scenario>> {
    Ok(vec![
        Scenario::inbound("no filter", Filter::None),
        Scenario::inbound("no-op wasm", Filter::Noop),
        Scenario::inbound(
            "meshguard sidecar (10k hosts)",
            Filter::Meshguard { policy_json: sidecar_policy()?.to_string() },
        ),
    ])
}

/// The worker counts `meshguard bench --memory` starts each scenario with.
pub const MEMORY_WORKERS: [u32; 3] = [1, 2, 4];

/// Starts each scenario with 1, 2 and 4 workers ([`MEMORY_WORKERS`]), sends `requests` requests (so that every
/// worker VM has served traffic), lets Envoy settle and reads its resident memory. Each Envoy
/// runs alone (one at a time), so their allocators do not compete.
pub fn memory(scenarios: &[Scenario], requests: usize) -> Result<Vec<MemoryRow>> {
    let scratch = crate::scratch_dir("bench-memory")?;
    let mut out = Vec::new();
    for concurrency in MEMORY_WORKERS {
        for s in scenarios {
            eprintln!("bench --memory: {} with {concurrency} worker(s)", s.name);
            let mesh = start_mesh(s, &scratch, concurrency)?;
            // Several connections, so that both workers get some.
            send_load(&mesh, s, requests, (requests / 8).max(1))?;
            std::thread::sleep(Duration::from_millis(500));
            out.push(MemoryRow { name: s.name.clone(), concurrency, rss_kib: resident_kib(mesh.envoy().pid())? });
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    Ok(out)
}

/// The memory table: each row's RSS with 1, 2 and 4 workers and what it adds over `no filter`
/// with as many workers; "per worker VM" is what each worker beyond the first adds (the
/// main thread's VM and the compiled module are paid once): (+4 workers - +1 worker) / 3.
pub fn memory_table(rows: &[MemoryRow]) -> String {
    let rss = |name: &str, c: u32| {
        rows.iter().find(|r| r.name == name && r.concurrency == c).map(|r| r.rss_kib as f64 / 1024.0)
    };
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let mut out = format!("{:<32}", "scenario");
    for c in MEMORY_WORKERS {
        out.push_str(&format!(" {:>9}", format!("RSS {c}w")));
    }
    for c in MEMORY_WORKERS {
        out.push_str(&format!(" {:>9}", format!("+MiB {c}w")));
    }
    out.push_str(&format!(" {:>14}\n", "per worker VM"));
    for name in names {
        let mut line = format!("{name:<32}");
        let mut added = Vec::new();
        for c in MEMORY_WORKERS {
            let mine = rss(name, c);
            line.push_str(&format!(" {:>8.1}M", mine.unwrap_or(0.0)));
            added.push(mine.zip(rss("no filter", c)).map(|(m, b)| m - b));
        }
        for a in &added {
            line.push_str(&format!(" {:>8.1}M", a.unwrap_or(0.0)));
        }
        let extra_workers = MEMORY_WORKERS.iter().max().copied().unwrap_or(1) - 1;
        let per_worker = match (added.first().copied().flatten(), added.last().copied().flatten()) {
            (Some(first), Some(last)) => (last - first) / f64::from(extra_workers.max(1)),
            _ => 0.0,
        };
        out.push_str(&format!("{line} {per_worker:>13.1}M\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_filter_template_keeps_the_router_and_drops_only_the_wasm_filter() {
        let t = template_without_filter(SIDECAR_INBOUND_TEMPLATE).unwrap();
        assert!(!t.contains("default.meshguard") && !t.contains("config_discovery"));
        assert!(t.contains("envoy.filters.http.router"));
        assert_eq!(
            SIDECAR_INBOUND_TEMPLATE.lines().count() - t.lines().count(),
            9,
            "only the 9 lines of the filter entry go"
        );
        // Outbound: the HTTP filter goes, the network filter on the TLS listener stays.
        let t = template_without_filter(SIDECAR_OUTBOUND_TEMPLATE).unwrap();
        assert!(!t.contains("default.meshguard\n") && t.contains("default.meshguard-tcp"));
        assert!(t.contains("envoy.filters.http.router"));
    }

    #[test]
    fn selecting_rows_keeps_their_baseline_and_floor_rows() {
        let all = standard_scenarios().unwrap();
        let names = |v: &[Scenario]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&select(all.clone(), &[])), names(&all));
        let picked = select(all.clone(), &["gateway-strict".to_string()]);
        assert_eq!(
            names(&picked),
            ["no filter, 30 headers", "no-op wasm, 30 headers", "meshguard gateway-strict, 30 headers"]
        );
        // Every row's baseline and floor rows exist in the standard table.
        for s in &all {
            assert!(all.iter().any(|b| b.name == s.baseline) && all.iter().any(|f| f.name == s.floor), "{}", s.name);
        }
    }

    #[test]
    fn x_floor_divides_the_added_cpu_by_the_no_ops() {
        let scenarios = vec![
            Scenario::inbound("no filter", Filter::None),
            Scenario::inbound("no-op wasm", Filter::Noop),
            Scenario::inbound("meshguard", Filter::Meshguard { policy_json: String::new() }),
        ];
        let row = |name: &str, us: u64| Measurement {
            name: name.to_string(),
            requests: 1000,
            windows: vec![(Duration::from_micros(us * 1000), Duration::from_secs(1))],
            percentile: 50,
        };
        let rows = vec![row("no filter", 100), row("no-op wasm", 120), row("meshguard", 150)];
        let t = table(&scenarios, &rows);
        let line = t.lines().find(|l| l.starts_with("meshguard")).unwrap();
        assert!(line.contains(" 1.50x ") && line.contains(" 50.0 ") && line.contains(" 2.50x "), "{t}");
    }

    #[test]
    fn per_worker_memory_is_what_the_extra_workers_add() {
        let rows: Vec<MemoryRow> = [("no filter", [70, 71, 72]), ("meshguard", [100, 104, 112])]
            .iter()
            .flat_map(|(name, mib)| {
                MEMORY_WORKERS.iter().zip(mib).map(|(c, m)| MemoryRow {
                    name: name.to_string(),
                    concurrency: *c,
                    rss_kib: m * 1024,
                })
            })
            .collect();
        let t = memory_table(&rows);
        // (112 - 72) - (100 - 70) = 10 MiB over 3 more workers.
        assert!(t.lines().any(|l| l.starts_with("meshguard") && l.ends_with(" 3.3M")), "{t}");
    }

    #[test]
    fn reads_this_process_cpu() {
        let before = process_cpu(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_cpu(std::process::id()).unwrap() >= before);
    }
}
