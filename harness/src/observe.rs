//! `meshguard up --observe`: the local mesh and, beside it, a real Prometheus that scrapes its
//! Envoy's `/stats/prometheus` every second with meshguard's alerting rules loaded, so an
//! operator sees the metrics, the labelled findings and the alerts as their monitoring will.
//! Ctrl-C stops Prometheus and the mesh (each by its own PID).

use std::path::Path;
use std::process::ExitCode;

use crate::mesh::Mesh;
use crate::prometheus::{percent_encode, Prometheus, PrometheusOptions, Target};
use crate::Result;

/// Queries worth trying first, with what each shows.
pub const QUERIES: &[(&str, &str)] = &[
    ("sum by (check, code, mode) (meshguard_findings_total)", "findings by check, reason code and mode"),
    ("sum(rate(meshguard_requests_total[1m]))", "requests meshguard inspects per second"),
    ("sum(rate(meshguard_denied_total[1m])) / sum(rate(meshguard_requests_total[1m]))", "share of requests denied"),
    ("meshguard_config_accepted_total", "policy configurations accepted (one per VM)"),
    (r#"ALERTS{alertname=~"Meshguard.*"}"#, "meshguard's alerts, pending or firing"),
];

/// Starts Prometheus scraping `mesh`'s Envoy, with meshguard's alerts.
pub fn start_for(mesh: &Mesh) -> Result<Prometheus> {
    Prometheus::start(&PrometheusOptions::scraping(vec![Target {
        addr: mesh.admin_addr(),
        labels: vec![("proxy".to_string(), "local-mesh".to_string())],
    }]))
}

/// `meshguard up --observe`.
pub fn up(policy: Option<&Path>, json_out: bool) -> Result<ExitCode> {
    crate::demo::install_stop_handlers();
    let mesh = crate::demo::start(policy)?;
    let prom = start_for(&mesh)?;
    if json_out {
        let mut info = crate::demo::describe(&mesh);
        info["prometheus"] = prom.url().into();
        info["prometheusPid"] = prom.pid().into();
        println!("{info}");
    } else {
        println!("meshguard local mesh is up, with Prometheus beside it (Ctrl-C stops both)");
        println!("  listener    {}  (plaintext and mTLS, Istio PERMISSIVE shape)", mesh.listener_addr());
        println!("  admin       http://{}/stats/prometheus", mesh.admin_addr());
        println!("  prometheus  {}  (scrapes the admin every second; alerts at {}/alerts)", prom.url(), prom.url());
        println!("  send traffic: curl -s http://{}/api/items   (plaintext: denied)", mesh.listener_addr());
        println!("  queries to try (paste into the web UI, or curl the API):");
        for (query, what) in QUERIES {
            println!("    {query}\n        {what}");
        }
        if let Some((first, _)) = QUERIES.first() {
            println!("    curl -s '{}/api/v1/query?query={}'", prom.url(), percent_encode(first));
        }
        println!("  dashboard: import envoy-config/monitoring/dashboard.json into Grafana with this Prometheus");
        println!("decision log:");
    }
    let result = crate::demo::follow_until_stopped(mesh, json_out);
    drop(prom);
    result
}
