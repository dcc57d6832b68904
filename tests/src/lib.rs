//! What the end-to-end tests read back from a running mesh: decision-log lines from Envoy's
//! log and meshguard's counters from Envoy's admin `/stats/prometheus`. Black-box only: these
//! are the same outputs an operator reads.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use harness::mesh::Mesh;
use harness::Result;
use serde_json::Value;

/// Every decision-log line Envoy has written so far, parsed.
pub fn decisions(mesh: &Mesh) -> Vec<Value> {
    harness::demo::decision_lines(&mesh.envoy().log_contents())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The decision-log line of the request with this `x-request-id`, waiting for Envoy's log
/// flush (every 100 ms in the harness) for up to 5 s.
pub fn decision_for(mesh: &Mesh, request_id: &str) -> Result<Value> {
    wait_decision(mesh, &format!("request {request_id}"), |d| d["requestId"] == request_id)
}

/// The first decision-log line `pred` accepts, waiting for Envoy's log flush (every 100 ms in
/// the harness) for up to 5 s.
pub fn wait_decision(mesh: &Mesh, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(d) = decisions(mesh).into_iter().find(|d| pred(d)) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            bail!("no decision-log line for {what}\n{}", mesh.envoy().log_tail(30));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts there is no decision-log line for this request id (waiting one log flush first).
pub fn no_decision_for(mesh: &Mesh, request_id: &str) -> Result<()> {
    std::thread::sleep(Duration::from_millis(250));
    match decisions(mesh).into_iter().find(|d| d["requestId"] == request_id) {
        Some(d) => bail!("unexpected decision-log line for {request_id}: {d}"),
        None => Ok(()),
    }
}

/// A counter from `/stats/prometheus` (the metric name without labels); 0 when absent.
pub fn prom_counter(mesh: &Mesh, name: &str) -> Result<u64> {
    let text = mesh.envoy().stats_prometheus()?;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().ok_or_else(|| anyhow!("no value in {line:?}"))?;
        return Ok(value.parse::<f64>().map_err(|e| anyhow!("{line:?}: {e}"))? as u64);
    }
    Ok(0)
}

/// [`prom_counter`], polled until it reads `expected` or [`harness::envoy::COUNTER_WAIT`] has
/// passed; returns the last value read. For the request totals meshguard hands to Envoy on
/// its 1 s tick (allowed requests lag by up to a second; see `filter/src/metrics.rs`).
pub fn wait_prom_counter(mesh: &Mesh, name: &str, expected: u64) -> Result<u64> {
    let deadline = Instant::now() + harness::envoy::COUNTER_WAIT;
    loop {
        let value = prom_counter(mesh, name)?;
        if value == expected || Instant::now() > deadline {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The per-finding counter for `check`/`code` in `mode` (`enforced` or `dry_run`), as it
/// appears in `/stats/prometheus` with the mesh's stats tags (`envoy-config/stats-tags.yaml`):
/// `meshguard_findings_total{check="..",code="..",mode=".."}`; 0 when absent.
pub fn finding_counter(mesh: &Mesh, check: &str, code: &str, mode: &str) -> Result<u64> {
    let text = mesh.envoy().stats_prometheus()?;
    for (labels, value) in labelled(&text, "meshguard_findings_total") {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("check") == Some(check) && get("code") == Some(code) && get("mode") == Some(mode) {
            return Ok(value as u64);
        }
    }
    Ok(0)
}

/// Every sample of family `name` in a Prometheus text exposition: its labels and value.
pub fn labelled(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let pairs = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        out.push((pairs, value));
    }
    out
}
