//! meshguard as a platform team's monitoring sees it: a real Prometheus (loopback, temporary
//! storage, meshguard's alerting rules loaded) scrapes the admin `/stats/prometheus` of three
//! real Envoys: a sidecar with meshguard, one whose filter chain lacks it (a WasmPlugin that
//! matches no listener) and one whose policy meshguard refused at startup. After allowed,
//! denied and dry-run traffic and a rejected policy update, every dashboard query and every
//! alert expression is evaluated through Prometheus's HTTP API: each must parse, and the ones
//! this traffic lights up must return series with the expected labels; the alerts this
//! traffic must not fire return nothing. Prometheus itself must load every rule and evaluate
//! it without error.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::client::{self, Request};
use harness::mesh::{ensure_wasm, Mesh, MeshOptions, PolicyUpdate, SIDECAR_INBOUND_TEMPLATE};
use harness::prometheus::{now, Prometheus, PrometheusOptions, Target, DASHBOARD_FILE};
use harness::Result;
use serde_json::{json, Value};

/// Enforce, with one rule in dry-run: plaintext is denied (`peer_identity_missing`), `batch`
/// on `/admin` is a would-deny, `web` is allowed.
fn policy() -> Value {
    json!({
        "version": 1,
        "mode": "enforce",
        "identity": {
            "requirePeerIdentity": true,
            "trustDomains": ["cluster.local"],
            "defaultAction": "allow",
            "rules": [
                {"id": "batch-never-admin", "action": "deny", "mode": "dry-run",
                 "match": {"paths": [{"prefix": "/admin"}]}, "principals": ["spiffe://cluster.local/ns/batch/sa/*"]}
            ]
        }
    })
}

fn labels(sample: &Value) -> BTreeMap<String, String> {
    sample["metric"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// The series of `result` whose labels include every `(name, value)` of `want`.
fn with<'a>(result: &'a [Value], want: &[(&str, &str)]) -> Vec<&'a Value> {
    result
        .iter()
        .filter(|s| {
            let l = labels(s);
            want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Sends `n` requests and checks each got `status`.
fn send(mesh: &Mesh, caller: Option<&str>, path: &str, n: usize, status: u16) -> Result<()> {
    let tls = match caller {
        Some(name) => Some(mesh.tls(name)?),
        None => None,
    };
    for i in 0..n {
        let req = Request::get(path).with_header("x-request-id", format!("obs-{}-{i}", caller.unwrap_or("plain")));
        let resp = client::send(mesh.listener_addr(), tls.as_ref(), &req)?;
        assert_eq!(resp.status, status, "{caller:?} {path}: {}", resp.text());
    }
    Ok(())
}

/// Metric names an expression reads (`meshguard_*`, `envoy_*`, `istio_*` identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            let word = &expr[start..i];
            let quoted = start > 0 && bytes[start - 1] == b'"';
            let next = expr[i..].trim_start().bytes().next();
            let label = matches!(next, Some(b'=') | Some(b'!'));
            if !quoted && !label && ["meshguard_", "envoy_", "istio_"].iter().any(|p| word.starts_with(p)) {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn prometheus_sees_what_the_dashboard_and_the_alerts_expect() -> Result<()> {
    let wasm = ensure_wasm()?;
    let protected =
        Mesh::start(MeshOptions { wasm: Some(wasm.clone()), ..MeshOptions::with_policy(policy().to_string()) })?;

    // The same sidecar without meshguard in its filter chain (the template lives in the
    // protected mesh's work dir: removed with it, kept with it when the test fails).
    let template = protected.work_dir().join("no-meshguard.yaml");
    std::fs::write(&template, harness::bench::template_without_filter(SIDECAR_INBOUND_TEMPLATE)?)?;
    let unprotected = Mesh::start(MeshOptions {
        wasm: Some(wasm),
        envoy_template: Some(template),
        allow_rejected_policy: true, // there is no plugin to accept it
        ..MeshOptions::default()
    })?;

    // And one whose policy the filter refused at startup: Envoy answers 500 to everything.
    let broken = Mesh::start(MeshOptions {
        wasm: Some(ensure_wasm()?),
        allow_rejected_policy: true,
        ..MeshOptions::with_policy(r#"{"version": 1, "mode": "sometimes"}"#)
    })?;

    let a = protected.admin_addr().to_string();
    let b = unprotected.admin_addr().to_string();
    let c = broken.admin_addr().to_string();
    let prom = Prometheus::start(&PrometheusOptions::scraping(vec![
        Target { addr: protected.admin_addr(), labels: vec![("proxy".into(), "protected".into())] },
        Target { addr: unprotected.admin_addr(), labels: vec![("proxy".into(), "unprotected".into())] },
        Target { addr: broken.admin_addr(), labels: vec![("proxy".into(), "broken".into())] },
    ]))?;
    let scraped = |since: f64| prom.wait_scraped_after(since, Duration::from_secs(20));
    scraped(now())?;

    // Seed every series (a counter's first sample has no increase before it), then the burst.
    send(&protected, None, "/api/items", 1, 403)?;
    send(&protected, Some("web"), "/api/items", 1, 200)?;
    send(&protected, Some("batch"), "/admin/x", 1, 200)?;
    send(&unprotected, None, "/api/items", 2, 200)?;
    send(&broken, None, "/api/items", 2, 500)?;
    scraped(now())?;
    send(&protected, None, "/api/items", 30, 403)?;
    send(&protected, Some("web"), "/api/items", 5, 200)?;
    send(&protected, Some("batch"), "/admin/x", 3, 200)?;
    send(&unprotected, None, "/api/items", 10, 200)?;
    send(&broken, None, "/api/items", 5, 500)?;
    let update = protected.update_policy(r#"{"version": 1, "mode": "sometimes"}"#)?;
    assert!(matches!(update, PolicyUpdate::Rejected { .. }), "{update:?}");
    scraped(now())?;
    // Two more evaluations of the rules on these samples.
    std::thread::sleep(Duration::from_secs(2));

    // The labelled family, straight from Envoy through Prometheus.
    let findings = prom.query("meshguard_findings_total")?;
    let missing = with(
        &findings,
        &[("check", "peer_identity"), ("code", "peer_identity_missing"), ("mode", "enforced"), ("instance", &a)],
    );
    assert_eq!(missing.len(), 1, "{findings:?}");
    assert_eq!(value(missing[0]), 31.0);
    assert_eq!(with(&findings, &[("mode", "dry_run"), ("check", "peer_identity")]).len(), 1, "{findings:?}");

    // Every dashboard query parses; the ones this traffic lights up have the expected series.
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(harness::workspace_root().join(DASHBOARD_FILE))?)?;
    let mut answers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let concrete = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            let result = prom.query(&concrete)?;
            answers.insert(
                format!(
                    "{} / {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                result,
            );
        }
    }
    let answer =
        |key: &str| answers.get(key).unwrap_or_else(|| panic!("no panel target {key:?}: {:?}", answers.keys()));
    for (key, legend) in [("A", "inspected"), ("B", "allowed"), ("C", "denied"), ("D", "would deny")] {
        let r = answer(&format!("Requests inspected by meshguard, by outcome / {key}"));
        assert!(r.len() == 1 && value(&r[0]) > 0.0, "{legend}: {r:?}");
    }
    let share = answer("Share of inbound requests meshguard inspected, by proxy / A");
    let share_a = with(share, &[("instance", &a)]);
    assert!(
        share_a.len() == 1 && (0.9..=1.1).contains(&value(share_a[0])),
        "meshguard saw every inbound request: {share:?}"
    );
    assert!(with(share, &[("instance", &b)]).is_empty(), "no meshguard, no ratio: {share:?}");
    assert!(
        with(share, &[("instance", &c)]).iter().all(|s| value(s) == 0.0),
        "the broken proxy inspects nothing: {share:?}"
    );
    let by_code = answer("Findings by check and reason code / A");
    assert!(
        !with(by_code, &[("check", "peer_identity"), ("code", "peer_identity_missing"), ("mode", "enforced")])
            .is_empty(),
        "{by_code:?}"
    );
    assert!(!with(by_code, &[("mode", "dry_run")]).is_empty(), "{by_code:?}");
    let top = answer("Top reason codes over the dashboard's range / A");
    assert!(!with(top, &[("code", "peer_identity_missing")]).is_empty(), "{top:?}");
    let denied = answer("Denied requests by proxy (top 10) / A");
    assert_eq!(with(denied, &[("instance", &a)]).len(), 1, "{denied:?}");
    let errors = answer("Uninspectable requests (refused with 503) / A");
    assert!(!with(errors, &[("instance", &a)]).is_empty() && errors.iter().all(|s| value(s) == 0.0), "{errors:?}");
    let rejected = answer("Policy configurations accepted and rejected / B");
    assert!(with(rejected, &[("instance", &a)]).iter().any(|s| value(s) > 0.0), "{rejected:?}");
    let ecds = answer("Policy configurations accepted and rejected / C");
    for proxy in [&a, &c] {
        assert!(with(ecds, &[("instance", proxy)]).iter().any(|s| value(s) >= 1.0), "{proxy}: {ecds:?}");
    }
    let vms = answer("Wasm VM health / A");
    assert!(with(vms, &[("instance", &a)]).iter().any(|s| value(s) >= 1.0), "live V8 VMs: {vms:?}");
    assert!(answer("Wasm VM health / B").iter().all(|s| value(s) == 0.0), "no VM reloads");

    // Every alert expression parses; this traffic fires exactly the ones it should.
    let rules: Value = serde_norway::from_str(&std::fs::read_to_string(harness::prometheus::alerts_path())?)?;
    let mut fired = BTreeMap::new();
    for rule in rules["groups"][0]["rules"].as_array().into_iter().flatten() {
        let name = rule["alert"].as_str().unwrap_or_default().to_string();
        let expr = rule["expr"].as_str().unwrap_or_default();
        fired.insert(name, prom.query(expr)?);
        // The metrics it reads exist here (a misspelt name would make it silently empty),
        // except those this mesh cannot have.
        for metric in metric_names(expr) {
            // (meshguard_jwks_fetch_total needs a remote JWKS provider: tests/tests/jwt_remote.rs
            // reads that family, labelled by the same stats tags.)
            let absent_here = ["meshguard_vm_starts_total", "istio_requests_total", "meshguard_jwks_fetch_total"]
                .contains(&metric.as_str());
            if !absent_here {
                assert!(
                    !prom.query(&format!("count({metric})"))?.is_empty(),
                    "{metric}, read by the rule, does not exist"
                );
            }
        }
    }
    let only = |alert: &str| -> Vec<BTreeMap<String, String>> { fired[alert].iter().map(labels).collect() };
    let instances = |alert: &str| -> Vec<String> {
        let mut v: Vec<String> = only(alert).iter().map(|l| l["instance"].clone()).collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // The proxy without meshguard and the one that refused its policy; not the protected one.
    assert_eq!(instances("MeshguardNotInspecting"), sorted(vec![b.clone(), c.clone()]));
    // The rejected live update, and the rejection at startup.
    assert_eq!(instances("MeshguardPolicyRejected"), sorted(vec![a.clone(), c.clone()]));
    let spike = only("MeshguardDenySpike");
    assert_eq!(
        spike.len(),
        1,
        "{spike:?}; increase: {:?}; rate: {:?}",
        prom.query(r#"increase(meshguard_findings_total{mode="enforced"}[5m])"#)?,
        prom.query(r#"rate(meshguard_findings_total{mode="enforced"}[5m])"#)?
    );
    assert_eq!(
        (spike[0]["check"].as_str(), spike[0]["code"].as_str(), spike[0]["mode"].as_str()),
        ("peer_identity", "peer_identity_missing", "enforced")
    );
    for quiet in
        ["MeshguardVmFailed", "MeshguardVmRestarted", "MeshguardDryRunUnreviewed", "MeshguardUninspectableRequests"]
    {
        assert!(fired[quiet].is_empty(), "{quiet} fired: {:?}", fired[quiet]);
    }

    // Prometheus loaded every rule and evaluates each without error; the alerts are live.
    let groups = prom.api("rules")?;
    let loaded: Vec<&Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), fired.len(), "{groups}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // Prometheus's own rule evaluation (every second) reaches the same verdicts: the two
    // rejections fire at once (`for: 0m`), the two uninspected proxies are pending (`for: 10m`).
    let state = |alerts: &Value, name: &str| -> Vec<String> {
        alerts["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = prom.api("alerts")?;
        let rejected = state(&alerts, "MeshguardPolicyRejected");
        let not_inspecting = state(&alerts, "MeshguardNotInspecting");
        if rejected == ["firing", "firing"] && not_inspecting == ["pending", "pending"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{alerts}");
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

#[test]
fn metric_names_are_read_from_expressions() {
    assert_eq!(
        metric_names(
            r#"sum by (instance) (rate(meshguard_requests_total{job=~"envoy_x", envoy_http_conn_manager_prefix != "admin"}[5m])) > 0 unless on (instance) envoy_server_uptime"#
        ),
        ["meshguard_requests_total", "envoy_server_uptime"]
    );
}
