//! `meshguard bench` (`make bench`): what meshguard costs Envoy, in Envoy CPU time per request.
//!
//! Each scenario starts its own Envoy (the sidecar inbound configuration, one worker), sends
//! the same traffic (HTTP/1.1 over mTLS as workload `web`, keep-alive, requests pipelined in
//! batches, every request allowed and answered by the echo upstream), and reads the Envoy
//! process's user + system CPU time from `/proc/<pid>/stat` before and after. The echo and the
//! client run in this process, so their CPU is not counted. Rows:
//!
//! - `no filter`: the same listener without the Wasm filter: Envoy's own cost;
//! - `no-op wasm`: a Proxy-Wasm filter that does nothing (`filter/noop`), delivered the same way:
//!   the cost of the Wasm machinery (VM entry, contexts);
//! - `meshguard (demo policy)`: meshguard.wasm with the demo policy (peer identity and four
//!   route rules), allowed requests not logged (as in production: denies are always logged);
//! - `no filter, 30 headers` and `meshguard gateway-strict, 30 headers`: thirty ordinary
//!   browser and API headers and a query string on every request
//!   ([`policy::samples::ORDINARY_30`]), without the filter and with every request-hygiene
//!   guard of the `gateway-strict` preset (envoy-config/policies/gateway-strict.yaml);
//! - `no filter, outbound` and `meshguard egress 10k hosts, outbound`: the sidecar's
//!   OUTBOUND side (plaintext from the local app, routed by Host), without the filter and with
//!   an egress allowlist of 10,000 hosts and 1,000 source patterns
//!   ([`policy::samples::scale_egress`]) plus the rule that admits the request.
//!
//! Each row's ratio and added CPU are against its own baseline row (the `no filter` row with
//! the same traffic).
//!
//! All the scenarios' Envoys run at once, pinned to one core with the load generator on the
//! other(s), and are measured in round-robin windows after a warm-up; the table shows each
//! one's median window and the spread. Without pinning the client and Envoy take turns on
//! the cores and the numbers swing by a third; without round-robin a drift of the (virtual)
//! machine lands on whichever row ran last. Two runs of the same scenario in one table
//! agree within a few percent.
//! The ratios are against `no filter`; `+us/req` is the CPU added per request. This is a
//! benchmark for people, not a test: nothing here passes or fails on a number.

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
}

impl Default for Load {
    fn default() -> Self {
        Load { requests: 10_000, warmup: 2_000, per_connection: 100, windows: 8 }
    }
}

/// Which filter a scenario puts in the HTTP filter chain.
#[derive(Debug, Clone)]
pub enum Filter {
    None,
    Noop,
    Meshguard { policy_json: String },
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
    /// The row (index into the scenario list) this one is compared with.
    pub baseline: usize,
}

impl Scenario {
    /// A scenario on the sidecar's inbound side: `GET /api/items`, no extra headers,
    /// compared with the first row.
    pub fn inbound(name: &str, filter: Filter) -> Self {
        Scenario {
            name: name.to_string(),
            filter,
            headers: Vec::new(),
            path: "/api/items".to_string(),
            kind: MeshKind::SidecarInbound,
            authority: None,
            baseline: 0,
        }
    }
}

/// The measured cost of one scenario: `requests` per window, one (CPU, wall) per window.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub requests: usize,
    pub windows: Vec<(Duration, Duration)>,
}

impl Measurement {
    fn per_request(&self) -> Vec<f64> {
        let mut v: Vec<f64> =
            self.windows.iter().map(|(cpu, _)| cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median window's Envoy CPU time per request, in microseconds.
    pub fn cpu_us_per_request(&self) -> f64 {
        let v = self.per_request();
        v.get(v.len() / 2).copied().unwrap_or(0.0)
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

/// The standard scenarios: no filter, no-op Wasm, meshguard with the demo policy.
pub fn standard_scenarios() -> Result<Vec<Scenario>> {
    let root = crate::workspace_root();
    // The demo policy logs every allow so the demo can show them; in production only denies
    // are logged, which is what is measured here.
    let mut demo = load_value(&root.join("envoy-config/policies/demo.yaml"))?;
    demo["decisionLog"]["allowSampleRate"] = 0.0.into();
    let demo = demo.to_string();
    let gateway_strict = crate::policy_file::load_json(&root.join("envoy-config/policies/gateway-strict.yaml"))?;
    // 10,000 hosts and 1,000 source patterns, and the rule that admits the bench's requests
    // (sources: the local workload, spiffe://cluster.local/ns/web/sa/web).
    let mut allow = policy::samples::scale_egress_rules(1000, 10);
    allow.push(serde_json::json!({
        "id": "bench", "hosts": ["api.example.com"], "ports": [80],
        "sources": ["spiffe://cluster.local/ns/web/sa/*"],
    }));
    let egress = serde_json::json!({"version": 1, "egress": {"allow": allow}}).to_string();

    let thirty = |s: Scenario| Scenario {
        headers: policy::samples::ORDINARY_30.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        path: "/api/items?page=2&sort=-price".to_string(),
        baseline: 3,
        ..s
    };
    let outbound = |s: Scenario| Scenario {
        kind: MeshKind::SidecarOutbound,
        authority: Some("api.example.com".to_string()),
        path: "/v1/items?page=2".to_string(),
        baseline: 5,
        ..s
    };
    Ok(vec![
        Scenario::inbound("no filter", Filter::None),
        Scenario::inbound("no-op wasm", Filter::Noop),
        Scenario::inbound("meshguard (demo policy)", Filter::Meshguard { policy_json: demo }),
        thirty(Scenario::inbound("no filter, 30 headers", Filter::None)),
        thirty(Scenario::inbound(
            "meshguard gateway-strict, 30 headers",
            Filter::Meshguard { policy_json: gateway_strict },
        )),
        outbound(Scenario::inbound("no filter, outbound", Filter::None)),
        outbound(Scenario::inbound("meshguard egress 10k hosts, outbound", Filter::Meshguard { policy_json: egress })),
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

fn noop_wasm_path() -> Result<PathBuf> {
    let meshguard = ensure_wasm()?;
    let noop = meshguard.with_file_name("noop.wasm");
    if !noop.is_file() {
        bail!("{} is missing: build it with `make wasm`", noop.display());
    }
    Ok(noop)
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

fn pin_threads(pid: u32, set: &libc::cpu_set_t) {
    let tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for tid in tids {
        // SAFETY: sched_setaffinity on a thread id with a valid, initialised set.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
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

/// Envoy's user + system CPU time so far (all threads), from `/proc/<pid>/stat`.
fn process_cpu(pid: u32) -> Result<Duration> {
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
    let mut options = MeshOptions { kind: scenario.kind, ..MeshOptions::default() };
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
        Filter::Noop => options.wasm = Some(noop_wasm_path()?),
        Filter::Meshguard { policy_json } => {
            options.wasm = Some(ensure_wasm()?);
            options.policy_json = policy_json.clone();
        }
    }
    let mesh = Mesh::start(options).with_context(|| format!("starting scenario {:?}", scenario.name))?;
    pin_envoy(mesh.envoy().pid());
    send_load(&mesh, scenario, load.warmup, load.per_connection)?;
    Ok(mesh)
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
        .map(|s| Measurement { name: s.name.clone(), requests: load.requests, windows: Vec::new() })
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

/// The table: one row per measurement, ratios against each row's baseline row.
pub fn table(scenarios: &[Scenario], rows: &[Measurement]) -> String {
    let mut out = format!(
        "{:<40} {:>8} {:>11} {:>13} {:>8} {:>9} {:>8}\n",
        "scenario", "requests", "CPU us/req", "(min-max)", "ratio", "+us/req", "req/s"
    );
    for (s, m) in scenarios.iter().zip(rows) {
        let base = rows.get(s.baseline).map(Measurement::cpu_us_per_request).unwrap_or(0.0);
        let per = m.cpu_us_per_request();
        let (lo, hi) = m.spread();
        let ratio = if base > 0.0 { per / base } else { 0.0 };
        out.push_str(&format!(
            "{:<40} {:>8} {:>11.1} {:>13} {:>7.2}x {:>9.1} {:>8.0}\n",
            m.name,
            m.requests * m.windows.len(),
            per,
            format!("({lo:.0}-{hi:.0})"),
            ratio,
            per - base,
            m.throughput()
        ));
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
