//! The monitoring files under envoy-config/: the alerting rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), every alert is tested and has a runbook entry
//! in the README, the Grafana dashboard is well formed, and the Istio custom bootstrap carries
//! exactly the stats_tags the local mesh uses. promtool is required (scripts/setup.sh installs
//! it): a missing promtool fails these tests, it never skips them. Every query is evaluated by
//! a real Prometheus in tests/tests/observability.rs.

use std::collections::BTreeSet;

use harness::prometheus::{run_promtool, ALERTS_FILE, ALERTS_TEST_FILES, DASHBOARD_FILE};
use serde_json::Value;

fn read(rel: &str) -> String {
    std::fs::read_to_string(harness::workspace_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn alert_names() -> Vec<String> {
    let doc = yaml(ALERTS_FILE);
    let mut names = Vec::new();
    for group in doc["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            names.push(rule["alert"].as_str().expect("every rule is an alert").to_string());
        }
    }
    names
}

#[test]
fn promtool_accepts_the_rules() {
    let out = run_promtool(&["check", "rules", ALERTS_FILE]).unwrap();
    assert!(out.contains(&format!("SUCCESS: {} rules found", alert_names().len())), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let mut args = vec!["test", "rules"];
    args.extend(ALERTS_TEST_FILES);
    let out = run_promtool(&args).unwrap();
    assert_eq!(out.matches("SUCCESS").count(), ALERTS_TEST_FILES.len(), "{out}");
}

/// promtool's own verdict is only as good as the tests: each alert must be expected to fire
/// at least once and expected silent at least once (a near miss or before its `for`), or have
/// near-miss series in a test where it fires for other series only.
#[test]
fn every_alert_has_a_firing_test_and_a_runbook_entry() {
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let files: Vec<Value> = ALERTS_TEST_FILES.iter().map(|f| yaml(f)).collect();
    for t in files.iter().flat_map(|f| f["tests"].as_array().expect("tests")) {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if a["exp_alerts"].as_array().is_some_and(|v| !v.is_empty()) {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    let readme = read("README.md");
    let alerts_text = read(ALERTS_FILE);
    for name in alert_names() {
        assert!(fires.contains(&name), "{name}: no promtool test expects it to fire");
        assert!(readme.contains(&format!("#### {name}\n")), "{name}: no `#### {name}` runbook entry in README.md");
        let anchor = format!("runbook: README.md#{}", name.to_lowercase());
        assert!(alerts_text.contains(&anchor), "{name}: its runbook annotation should be `{anchor}`");
    }
    assert!(silent.len() >= 4, "expected silent (near miss / pending) checks, got {silent:?}");
}

/// Grafana imports the dashboard: a JSON object with a title and uid, a Prometheus datasource
/// variable that every panel uses, and panels with unique ids, a grid position inside the
/// 24-column grid that overlaps no other panel, and targets with an expression and a unique
/// refId each.
#[test]
fn the_dashboard_is_well_formed() {
    let dash: Value = serde_json::from_str(&read(DASHBOARD_FILE)).expect("dashboard.json is JSON");
    assert_eq!(dash["uid"], "meshguard");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["schemaVersion"].as_u64().is_some());
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["allValue"], ".*", "${name} must match every value when All is selected");
    }
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{title}: duplicate id");
        assert!(["timeseries", "table", "stat", "bargauge"].contains(&p["type"].as_str().unwrap_or("")), "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at ({cx},{cy})");
            }
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}: target without expr");
            assert!(refs.insert(t["refId"].as_str().expect("refId").to_string()), "{title}: duplicate refId");
        }
    }
    for family in [
        "meshguard_requests_total",
        "meshguard_findings_total",
        "meshguard_config_rejected_total",
        "meshguard_errors_total",
        "envoy_wasm_envoy_wasm_runtime_v8_active",
    ] {
        assert!(read(DASHBOARD_FILE).contains(family), "no panel shows {family}");
    }
}

/// The ConfigMap for Istio's custom bootstrap holds exactly the tags of stats-tags.yaml.
#[test]
fn the_istio_custom_bootstrap_has_the_same_stats_tags() {
    let ours = yaml("envoy-config/stats-tags.yaml");
    let cm = yaml("envoy-config/istio/bootstrap/stats-tags-configmap.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "meshguard-stats-tags");
    let json: Value = serde_json::from_str(cm["data"]["custom_bootstrap.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, ours);
    assert_eq!(ours["stats_config"]["stats_tags"].as_array().map(Vec::len), Some(5));
    assert_eq!(harness::mesh::STATS_TAGS, read("envoy-config/stats-tags.yaml"));
}
