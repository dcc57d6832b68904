//! One real Envoy process: find the binary, start it on a config, wait until it is ready,
//! read its admin API (listeners, stats, readiness), and stop it.
//!
//! Every address is ephemeral: the config binds admin and listeners on `127.0.0.1:0`; the
//! real admin address comes from `--admin-address-path`, the listeners' from
//! `GET /listeners?format=json`. So any number of Envoys (parallel tests) can run at once, and
//! hot restart is disabled so they share nothing.
//!
//! The process is stopped by its own PID (`Child::kill` + `wait`) when the [`Envoy`] is
//! dropped, also when a test fails. On Linux it is additionally started with
//! `PR_SET_PDEATHSIG = SIGKILL` from a thread that lives as long as the test process, so a test
//! binary that is itself killed (a CI timeout) does not leave Envoy behind.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::client;
use crate::Result;

/// The Envoy version the project pins (see `scripts/setup.sh`).
pub const PINNED_VERSION: &str = "1.40.0";

/// How an Envoy is started. [`EnvoyOptions::default`] is what the mesh uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// `-l`: `info` by default; env `MESHGUARD_ENVOY_LOG_LEVEL` overrides the default.
    pub log_level: String,
    /// `--component-log-level`, e.g. `wasm:debug,http:debug`.
    pub component_log_level: Option<String>,
    /// `--concurrency`: worker threads (1: CI has 2 cores, tests are small).
    pub concurrency: u32,
    /// Anything else to pass, appended last.
    pub extra_args: Vec<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            log_level: std::env::var("MESHGUARD_ENVOY_LOG_LEVEL")
                .ok()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "info".to_string()),
            component_log_level: None,
            concurrency: 1,
            extra_args: Vec::new(),
        }
    }
}

/// How long [`Envoy::wait_counter`] waits for a counter: a few of meshguard's 1 s flushes.
pub const COUNTER_WAIT: Duration = Duration::from_secs(5);

/// A running Envoy process.
#[derive(Debug)]
pub struct Envoy {
    child: Option<Child>,
    pid: u32,
    exit: Option<ExitStatus>,
    admin: SocketAddr,
    work_dir: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
}

/// The Envoy binary the harness uses: `$ENVOY_BIN`, else the project-local one that
/// `scripts/setup.sh` installs at `<workspace>/.envoy/envoy/_bin/envoy`.
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("ENVOY_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let local = crate::workspace_root().join(".envoy").join("envoy").join("_bin").join("envoy");
    if local.is_file() {
        return Ok(local);
    }
    bail!(
        "no Envoy found at {} and ENVOY_BIN is not set: run scripts/setup.sh (installs Envoy {PINNED_VERSION} into .envoy/)",
        local.display()
    )
}

/// `envoy --version`'s version number, e.g. `1.40.0`.
pub fn version() -> Result<String> {
    let bin = binary()?;
    let out =
        Command::new(&bin).arg("--version").output().with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    text.split("version:")
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("unexpected `envoy --version` output: {text}"))
}

/// Runs `envoy --mode validate -c config`; the error carries Envoy's explanation.
pub fn validate(config: &Path) -> Result<()> {
    let bin = binary()?;
    let out = Command::new(&bin)
        .args(["--mode", "validate", "--disable-hot-restart", "-l", "warn", "-c"])
        .arg(config)
        .output()
        .with_context(|| format!("running {} --mode validate", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "envoy rejected {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Envoy {
    /// Starts Envoy on `config` with [`EnvoyOptions::default`]; see [`Envoy::start_with`].
    pub fn start(config: &Path, work_dir: &Path) -> Result<Envoy> {
        Self::start_with(config, work_dir, &EnvoyOptions::default())
    }

    /// Starts Envoy on `config`, writing `envoy.log`, `envoy.stderr.log` and
    /// `admin-address.txt` into `work_dir`, and returns once the admin address is known (not
    /// necessarily ready: see [`Envoy::wait_ready`]).
    pub fn start_with(config: &Path, work_dir: &Path, options: &EnvoyOptions) -> Result<Envoy> {
        let bin = binary()?;
        fs::create_dir_all(work_dir)?;
        let log_path = work_dir.join("envoy.log");
        let stderr_path = work_dir.join("envoy.stderr.log");
        let admin_file = work_dir.join("admin-address.txt");
        let _ = fs::remove_file(&admin_file);

        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(config)
            .args(["--concurrency", &options.concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["-l", &options.log_level])
            .arg("--log-path")
            .arg(&log_path)
            // The application log goes through Envoy's file flusher (10 s by default);
            // tests read it right after the event they expect.
            .args(["--file-flush-interval-msec", "100"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(work_dir.join("envoy.stdout.log"))?))
            .stderr(Stdio::from(fs::File::create(&stderr_path)?));
        if let Some(levels) = &options.component_log_level {
            cmd.args(["--component-log-level", levels]);
        }
        cmd.args(&options.extra_args);

        let child = spawn(cmd).with_context(|| format!("starting {}", bin.display()))?;
        let mut envoy = Envoy {
            pid: child.id(),
            child: Some(child),
            exit: None,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            work_dir: work_dir.to_path_buf(),
            config: config.to_path_buf(),
            log_path,
            stderr_path,
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = envoy.exited()? {
                bail!("envoy exited ({status}) before opening its admin port\n{}", envoy.diagnostics());
            }
            if let Ok(text) = fs::read_to_string(&admin_file) {
                if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                    envoy.admin = addr;
                    return Ok(envoy);
                }
            }
            if Instant::now() > deadline {
                bail!("envoy wrote no admin address in 30 s\n{}", envoy.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `GET /ready` says `LIVE` (every listener warmed, ECDS config included).
    /// Fails fast, with the tail of `envoy.log`, if the process exits meanwhile.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = self.exited()? {
                bail!("envoy exited ({status}) before it was ready\n{}", self.diagnostics());
            }
            match self.admin_request("GET", "/ready") {
                Ok(resp) if resp.status == 200 && resp.text().trim() == "LIVE" => return Ok(()),
                Ok(resp) => last = format!("{} {}", resp.status, resp.text().trim()),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after {timeout:?} (last /ready: {last})\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The admin address (`127.0.0.1:<port>`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The work dir (logs, admin address file).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The application log file (`--log-path`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.exited(), Ok(None))
    }

    /// `GET path` on the admin API; the body, or an error for a non-2xx status.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let resp = self.admin_request("GET", path)?;
        if !(200..300).contains(&resp.status) {
            bail!("admin GET {path}: {} {}", resp.status, resp.text());
        }
        Ok(resp.text())
    }

    /// `POST path` on the admin API (e.g. `/logging?wasm=debug`); the body.
    pub fn admin_post(&self, path: &str) -> Result<String> {
        let resp = self.admin_request("POST", path)?;
        if !(200..300).contains(&resp.status) {
            bail!("admin POST {path}: {} {}", resp.status, resp.text());
        }
        Ok(resp.text())
    }

    /// Any admin request, returning the whole response.
    pub fn admin_request(&self, method: &str, path: &str) -> Result<client::Response> {
        let raw =
            format!("{method} {path} HTTP/1.1\r\nhost: envoy-admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        client::send_raw(self.admin, None, raw.as_bytes())
            .with_context(|| format!("admin {method} {path} on {}", self.admin))
    }

    /// Every active listener's name and bound address.
    pub fn listeners(&self) -> Result<Vec<(String, SocketAddr)>> {
        let text = self.admin_get("/listeners?format=json")?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing /listeners: {text}"))?;
        let mut out = Vec::new();
        for status in doc["listener_statuses"].as_array().into_iter().flatten() {
            let name = status["name"].as_str().unwrap_or_default().to_string();
            let sock = &status["local_address"]["socket_address"];
            let (Some(ip), Some(port)) = (sock["address"].as_str(), sock["port_value"].as_u64()) else {
                continue;
            };
            let addr: SocketAddr =
                format!("{ip}:{port}").parse().with_context(|| format!("listener {name} address {ip}:{port}"))?;
            out.push((name, addr));
        }
        Ok(out)
    }

    /// The bound address of listener `name`.
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr> {
        let all = self.listeners()?;
        all.iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("no listener {name:?}; active: {all:?}"))
    }

    /// `GET /stats/prometheus`.
    pub fn stats_prometheus(&self) -> Result<String> {
        self.admin_get("/stats/prometheus")
    }

    /// Every counter and gauge by its Envoy name (`/stats?format=json`; histograms left out).
    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let text = self.admin_get("/stats?format=json")?;
        let doc: serde_json::Value = serde_json::from_str(&text).with_context(|| "parsing /stats?format=json")?;
        Ok(doc["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["value"].as_u64()?)))
            .collect())
    }

    /// The value of counter (or gauge) `name` as `/stats` names it (e.g.
    /// `http.inbound_0.0.0.0_8080.downstream_rq_completed`); `None` when it does not exist.
    ///
    /// A Wasm plugin's own metrics are `wasmcustom.<name>` in `/stats` but plain `<name>` in
    /// `/stats/prometheus`; either spelling finds them here (`meshguard_denied_total`).
    pub fn counter(&self, name: &str) -> Result<Option<u64>> {
        let stats = self.stats()?;
        let custom = format!("wasmcustom.{name}");
        let find = |wanted: &str| stats.iter().find(|(n, _)| n == wanted).map(|(_, v)| *v);
        Ok(find(name).or_else(|| find(&custom)))
    }

    /// [`Envoy::counter`] (absent reads 0), polled until it reads `expected` or
    /// [`COUNTER_WAIT`] has passed; returns the last value read, for the caller to compare.
    ///
    /// meshguard counts requests and connections without findings in VM memory and hands them
    /// to Envoy about once a second (`filter/src/metrics.rs`), so a test that counts allowed
    /// requests waits for the flush with this instead of reading once (or sleeping).
    pub fn wait_counter(&self, name: &str, expected: u64) -> Result<u64> {
        let deadline = Instant::now() + COUNTER_WAIT;
        loop {
            let value = self.counter(name)?.unwrap_or(0);
            if value == expected || Instant::now() > deadline {
                return Ok(value);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The application log so far (`envoy.log`, flushed every 100 ms).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits up to `timeout` for a line of the log containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_contents().lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if Instant::now() > deadline {
                bail!("no log line containing {needle:?} after {timeout:?}\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the log, without the startup inventory (extension and header
    /// map lists) that fills the first hundred lines at info level.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log_contents();
        let useful: Vec<&str> = log.lines().filter(|l| !is_inventory_line(l)).collect();
        tail(&useful.join("\n"), lines)
    }

    /// Stops the process (SIGKILL by its own PID, then reaps it). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            self.exit = child.wait().ok();
        }
    }

    fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(self.exit);
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.exit = status;
        }
        Ok(status)
    }

    fn diagnostics(&self) -> String {
        let stderr = fs::read(&self.stderr_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let mut out = format!("--- tail of {} ---\n{}", self.log_path.display(), self.log_tail(40));
        if !stderr.trim().is_empty() {
            out.push_str(&format!("\n--- tail of {} ---\n{}", self.stderr_path.display(), tail(&stderr, 20)));
        }
        out
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `[...][main] [source/server/server.cc:467]   envoy.filters.http: ...` and the like.
fn is_inventory_line(line: &str) -> bool {
    line.contains("][main] [source/server/server.cc:")
        && line.split("] ").nth(2).is_some_and(|msg| msg.starts_with("  "))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    all.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
}

#[cfg(target_os = "linux")]
pub(crate) fn spawn(cmd: Command) -> Result<Child> {
    linux_spawner::spawn(cmd)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(mut cmd: Command) -> Result<Child> {
    Ok(cmd.spawn()?)
}

/// Spawns children with `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the
/// *thread* that forked the child exits, so every spawn happens on one thread that lives as
/// long as the process: the child dies with the test process, not with a test's thread.
#[cfg(target_os = "linux")]
mod linux_spawner {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};

    use anyhow::anyhow;

    use crate::Result;

    type Job = (Command, Sender<std::io::Result<Child>>);

    fn spawner() -> Result<Sender<Job>> {
        static SPAWNER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
        let tx = SPAWNER.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let _ = std::thread::Builder::new().name("envoy-spawner".to_string()).spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: the closure runs in the forked child before exec and only
                    // calls prctl(2) and getppid(2), both async-signal-safe.
                    unsafe {
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            });
            Mutex::new(tx)
        });
        let guard = tx.lock().map_err(|_| anyhow!("envoy spawner lock poisoned"))?;
        Ok(guard.clone())
    }

    pub(super) fn spawn(cmd: Command) -> Result<Child> {
        let (reply_tx, reply_rx) = channel();
        spawner()?.send((cmd, reply_tx)).map_err(|_| anyhow!("envoy spawner thread is gone"))?;
        let child = reply_rx.recv().map_err(|_| anyhow!("envoy spawner thread is gone"))??;
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_lines_are_recognised() {
        assert!(is_inventory_line(
            "[2026-11-22 07:36:12.142][8143][info][main] [source/server/server.cc:467]   envoy.string_matcher: envoy.string_matcher.lua"
        ));
        assert!(!is_inventory_line(
            "[2026-11-22 07:36:12.165][8143][info][main] [source/server/server.cc:1078] all clusters initialized. initializing init manager"
        ));
        assert!(!is_inventory_line("  0:  0x15035 - abort"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
