//! A real Prometheus beside the local mesh: the one the observability test queries and
//! `meshguard up --observe` starts.
//!
//! The binary is Debian's `prometheus` package (installed by `scripts/setup.sh`; 2.42 on
//! bookworm), or `$PROMETHEUS_BIN`; `promtool` likewise (`$PROMTOOL_BIN`). Prometheus runs on
//! loopback only, with a fresh TSDB in a temp dir, scraping Envoy's admin `/stats/prometheus`
//! like a platform's Prometheus scrapes a proxy, and loading meshguard's alerting rules
//! (`envoy-config/monitoring/alerts.yaml`). It is stopped by its own PID (and, on Linux, dies
//! with the process that started it, like the harness's Envoys).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::client;
use crate::Result;

/// meshguard's alerting rules, relative to the workspace root.
pub const ALERTS_FILE: &str = "envoy-config/monitoring/alerts.yaml";
/// The promtool unit tests of [`ALERTS_FILE`] (the week-long one evaluated hourly).
pub const ALERTS_TEST_FILES: [&str; 2] =
    ["envoy-config/monitoring/alerts_test.yaml", "envoy-config/monitoring/alerts_week_test.yaml"];
/// The Grafana dashboard.
pub const DASHBOARD_FILE: &str = "envoy-config/monitoring/dashboard.json";

/// The rules file in this workspace.
pub fn alerts_path() -> PathBuf {
    crate::workspace_root().join(ALERTS_FILE)
}

fn find_tool(env: &str, name: &str) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("{env}={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no `{name}` on PATH and {env} is not set: run scripts/setup.sh (installs Debian's prometheus package)")
}

/// The `prometheus` binary: `$PROMETHEUS_BIN`, else `prometheus` on `PATH`.
pub fn binary() -> Result<PathBuf> {
    find_tool("PROMETHEUS_BIN", "prometheus")
}

/// The `promtool` binary: `$PROMTOOL_BIN`, else `promtool` on `PATH`.
pub fn promtool() -> Result<PathBuf> {
    find_tool("PROMTOOL_BIN", "promtool")
}

/// One scrape target: an Envoy admin address and the labels its series get.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Extra target labels (e.g. `proxy="inbound"`), besides `job` and `instance`.
    pub labels: Vec<(String, String)>,
}

/// How to start a [`Prometheus`].
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// The Envoys to scrape (`/stats/prometheus` on their admin API), job `envoy`.
    pub targets: Vec<Target>,
    /// Rule files to load (default: meshguard's alerts).
    pub rule_files: Vec<PathBuf>,
    /// Scrape and rule evaluation interval (1 s: tests and demos want answers fast).
    pub interval: Duration,
    /// Where the config, the TSDB and the log go. Default: a fresh dir under
    /// `target/meshguard-runs/`, removed on drop unless `MESHGUARD_KEEP` is set.
    pub work_dir: Option<PathBuf>,
}

impl PrometheusOptions {
    /// Scrape these Envoy admin addresses with meshguard's alerts loaded.
    pub fn scraping(targets: Vec<Target>) -> Self {
        PrometheusOptions { targets, rule_files: vec![alerts_path()], interval: Duration::from_secs(1), work_dir: None }
    }
}

/// A running Prometheus. Drop stops it (by its PID) and removes its work dir.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    work_dir: PathBuf,
    remove_work_dir: bool,
    log_path: PathBuf,
}

/// `prometheus.yml` for `options`.
pub fn render_config(options: &PrometheusOptions) -> String {
    let secs = options.interval.as_secs().max(1);
    let mut out = format!(
        "# Written by meshguard (harness/src/prometheus.rs).\nglobal:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n"
    );
    out.push_str("rule_files:\n");
    for f in &options.rule_files {
        out.push_str(&format!("- {}\n", crate::mesh::json_str(&f.to_string_lossy())));
    }
    out.push_str("scrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs:\n");
    for t in &options.targets {
        out.push_str(&format!("  - targets: [{}]\n", crate::mesh::json_str(&t.addr.to_string())));
        if !t.labels.is_empty() {
            out.push_str("    labels:\n");
            for (k, v) in &t.labels {
                out.push_str(&format!("      {k}: {}\n", crate::mesh::json_str(v)));
            }
        }
    }
    out
}

fn free_loopback_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port and waits until it is ready (`/-/ready`).
    pub fn start(options: &PrometheusOptions) -> Result<Prometheus> {
        let (work_dir, remove_work_dir) = match &options.work_dir {
            Some(dir) => {
                fs::create_dir_all(dir)?;
                (dir.clone(), false)
            }
            None => (crate::scratch_dir("prometheus")?, true),
        };
        let config = work_dir.join("prometheus.yml");
        fs::write(&config, render_config(options))?;
        let mut last_err = None;
        // The port is free when picked; another process may take it before Prometheus binds
        // it: then Prometheus exits, and we try another.
        for _ in 0..3 {
            match Self::start_once(&config, &work_dir, remove_work_dir) {
                Ok(p) => return Ok(p),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("prometheus did not start")))
    }

    fn start_once(config: &Path, work_dir: &Path, remove_work_dir: bool) -> Result<Prometheus> {
        let bin = binary()?;
        let port = free_loopback_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data = work_dir.join("data");
        let log_path = work_dir.join("prometheus.log");
        let log = fs::File::create(&log_path)?;
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = crate::envoy::spawn(cmd).with_context(|| format!("starting {}", bin.display()))?;
        let mut prom = Prometheus {
            pid: child.id(),
            child: Some(child),
            addr,
            work_dir: work_dir.to_path_buf(),
            remove_work_dir,
            log_path,
        };
        // A failed start keeps nothing: the caller may retry in the same dir.
        prom.remove_work_dir = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = prom.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    prom.child = None;
                    bail!("prometheus exited ({status}) before it was ready:\n{}", prom.log_tail(20));
                }
            }
            if let Ok(resp) = prom.get("/-/ready") {
                if resp.status == 200 {
                    prom.remove_work_dir = remove_work_dir;
                    return Ok(prom);
                }
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 30 s:\n{}", prom.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its HTTP address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The work dir (`prometheus.yml`, `data/`, `prometheus.log`).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines.get(lines.len().saturating_sub(n)..).unwrap_or_default().join("\n")
    }

    fn get(&self, path: &str) -> Result<client::Response> {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: prometheus\r\nconnection: close\r\n\r\n");
        client::send_raw(self.addr, None, raw.as_bytes()).with_context(|| format!("GET {path} on {}", self.addr))
    }

    /// `GET /api/v1/<path>`; the `data` of a `success` answer, else an error with Prometheus's
    /// own message (a parse error names the position).
    pub fn api(&self, path: &str) -> Result<Value> {
        let resp = self.get(&format!("/api/v1/{path}"))?;
        let doc: Value =
            serde_json::from_str(&resp.text()).with_context(|| format!("/api/v1/{path}: {}", resp.text()))?;
        if doc["status"] != "success" {
            bail!("{} {}: {}", doc["errorType"].as_str().unwrap_or("error"), resp.status, doc["error"]);
        }
        Ok(doc["data"].clone())
    }

    /// An instant query; the result vector (`[{"metric": {...}, "value": [ts, "v"]}]`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data =
            self.api(&format!("query?query={}", percent_encode(expr))).with_context(|| format!("query {expr}"))?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![serde_json::json!({"metric": {}, "value": data["result"]})]),
            other => bail!("query {expr}: unexpected result type {other:?}"),
        }
    }

    /// Waits until every target has been scraped (and was up) at least once after `since`
    /// (seconds since the Unix epoch, see [`now`]).
    pub fn wait_scraped_after(&self, since: f64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let value = |expr: &str| -> Result<Option<f64>> {
            Ok(self.query(expr)?.first().and_then(|s| s["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()))
        };
        loop {
            let targets = value("count(up)")?;
            // timestamp() of the raw selector: `up == 1` would carry the query's own time.
            let fresh = value(&format!("count(timestamp(up) > {since:.3})"))?;
            let healthy = value("count(up == 1)")?;
            if targets.is_some() && fresh == targets && healthy == targets {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("targets not scraped within {timeout:?}: {}", self.api("targets").unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops Prometheus (SIGKILL to its own PID, then wait). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if !self.remove_work_dir {
            return;
        }
        if std::env::var_os("MESHGUARD_KEEP").is_some() || std::thread::panicking() {
            eprintln!("meshguard: kept prometheus work dir {}", self.work_dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// Seconds since the Unix epoch (for [`Prometheus::wait_scraped_after`]).
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query string).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `promtool ARGS...`; the combined output, or an error with it.
pub fn run_promtool(args: &[&str]) -> Result<String> {
    let bin = promtool()?;
    let out = Command::new(&bin)
        .args(args)
        .current_dir(crate::workspace_root())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql() {
        assert_eq!(
            percent_encode("sum(rate(x{a=\"b\"}[5m])) > 0"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29%29%20%3E%200"
        );
    }

    #[test]
    fn config_names_every_target_and_rule_file() {
        let options = PrometheusOptions {
            targets: vec![Target {
                addr: SocketAddr::from(([127, 0, 0, 1], 9901)),
                labels: vec![("proxy".into(), "inbound".into())],
            }],
            rule_files: vec![PathBuf::from("/x/alerts.yaml")],
            interval: Duration::from_secs(1),
            work_dir: None,
        };
        let c = render_config(&options);
        assert!(c.contains("scrape_timeout: 1s"), "{c}");
        assert!(c.contains("- targets: [\"127.0.0.1:9901\"]\n    labels:\n      proxy: \"inbound\"\n"), "{c}");
        assert!(c.contains("- \"/x/alerts.yaml\"\n"), "{c}");
        assert!(c.contains("metrics_path: /stats/prometheus"), "{c}");
    }
}
