//! `meshguard`: the command line for people who write and tune meshguard policies.
//!
//! - `check POLICY...`       validate policies (exit 1 with `PATH: message` lines on stderr)
//! - `eval`                  decide one request offline, exactly as the filter would
//! - `replay`                re-decide logged requests under a (new) policy
//! - `render`                print the Istio WasmPlugin or the Envoy ECDS resource for a policy
//! - `up`                    run the local mesh (real Envoy, test PKI, echo upstream); with
//!   `--outbound`, the sidecar's outbound side (the egress allowlist)
//! - `demo`                  run the local mesh, send sample requests, show the decisions

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use harness::policy_file::{load_policy, PolicyFileError};
use policy::connection::OwnedConnection;
use policy::request::OwnedRequest;
use serde_json::json;

#[derive(Parser)]
#[command(name = "meshguard", version, about = "meshguard policy tooling and local mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files: exit 0 when all are valid, 1 with one `PATH: message` line per error.
    Check {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Decide one request offline. Exit 0 allow (dry-run findings included), 1 deny, 2 error.
    Eval {
        #[arg(long)]
        policy: PathBuf,
        /// REQUEST.json: {"method","path","authority","scheme","headers":[[n,v]...],"peer":{"mtls","uriSan"},"direction","cluster","workload"}
        #[arg(long, required_unless_present = "connection", conflicts_with = "connection")]
        request: Option<PathBuf>,
        /// CONNECTION.json (the network filter): {"sni","destinationPort","peer","direction","workload"}
        #[arg(long)]
        connection: Option<PathBuf>,
    },
    /// Re-decide the requests of decision-log lines (Envoy's log or JSON lines) under POLICY
    /// and show which decisions would change.
    Replay {
        #[arg(long)]
        policy: PathBuf,
        /// Log files; `-` or none reads standard input.
        logs: Vec<PathBuf>,
    },
    /// Print deployment manifests for a policy.
    Render {
        #[arg(value_enum)]
        what: RenderTarget,
        #[arg(long)]
        policy: PathBuf,
        /// WasmPlugin: the module URL (oci://, https:// or file://). ECDS: the local .wasm path.
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value = "meshguard")]
        name: String,
        #[arg(long, default_value = "istio-system")]
        namespace: String,
        /// WasmPlugin: workload selector labels, `key=value` (repeatable). None: every workload.
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// WasmPlugin: http (every check) or network (the egress check on the TLS SNI).
        #[arg(long = "type", value_enum, default_value_t = PluginTypeArg::Http)]
        plugin_type: PluginTypeArg,
        /// WasmPlugin: the listeners Istio installs it on (match[].mode). auto: CLIENT for a
        /// gateway selector (istio=...gateway) or egress only, SERVER without egress,
        /// CLIENT_AND_SERVER for identity and egress together.
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
        /// compose: the directory to write (docker-compose.yaml mounts envoy-config/compose/generated).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the local mesh until interrupted.
    Up {
        /// Defaults to envoy-config/policies/demo.yaml (with --outbound: egress.yaml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print one JSON line describing the mesh instead of text.
        #[arg(long)]
        json: bool,
        /// Run the sidecar's OUTBOUND side (HTTP and TLS egress, the egress allowlist)
        /// instead of its inbound side.
        #[arg(long)]
        outbound: bool,
    },
    /// Start the local mesh with the demo policy, send sample requests, print the decisions.
    Demo {
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Envoy CPU time per request: no filter, a no-op Wasm filter, meshguard (a benchmark).
    Bench {
        /// Requests measured per scenario.
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        /// Requests sent before measuring.
        #[arg(long, default_value_t = 2_000)]
        warmup: usize,
        /// Also measure meshguard with this policy file (repeatable): one more row each.
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// Measurement windows per scenario (the table shows the median window).
        #[arg(long, default_value_t = 8)]
        windows: usize,
        /// Show this percentile of the windows instead of the median (50); on a busy machine
        /// a low one (25) is steadier, since interference only adds CPU time.
        #[arg(long, default_value_t = 50)]
        percentile: u8,
        /// Only the rows whose name contains this text (repeatable), with the rows they are
        /// compared with. Default: every row.
        #[arg(long = "rows")]
        rows: Vec<String>,
        /// Measure Envoy's resident memory instead (no filter, no-op, meshguard with the
        /// 10k-host sidecar policy; 1, 2 and 4 workers).
        #[arg(long)]
        memory: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PluginTypeArg {
    Http,
    Network,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Auto,
    Server,
    Client,
    ClientAndServer,
}

#[derive(Clone, Copy, ValueEnum)]
enum RenderTarget {
    /// An Istio `WasmPlugin` (extensions.istio.io/v1alpha1).
    Wasmplugin,
    /// The Envoy ECDS resource file the local mesh uses.
    Ecds,
    /// The directory envoy-config/compose/docker-compose.yaml mounts (needs --out): Envoy
    /// config, ECDS file, meshguard.wasm and a test PKI, with the container's paths.
    Compose,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { policies } => return check(&policies),
        Command::Eval { policy, request: Some(request), .. } => return eval(&policy, &request),
        Command::Eval { policy, connection: Some(connection), .. } => return eval_connection(&policy, &connection),
        Command::Eval { .. } => return ExitCode::from(2),
        Command::Replay { policy, logs } => replay(&policy, &logs),
        Command::Render { what, policy, url, name, namespace, selectors, plugin_type, mode, out } => {
            use harness::render::{PluginType, TrafficMode, WasmPluginOptions};
            let options = WasmPluginOptions {
                plugin_type: match plugin_type {
                    PluginTypeArg::Http => PluginType::Http,
                    PluginTypeArg::Network => PluginType::Network,
                },
                mode: match mode {
                    ModeArg::Auto => None,
                    ModeArg::Server => Some(TrafficMode::Server),
                    ModeArg::Client => Some(TrafficMode::Client),
                    ModeArg::ClientAndServer => Some(TrafficMode::ClientAndServer),
                },
            };
            render(what, &policy, url, &name, &namespace, &selectors, &options, out.as_deref())
        }
        Command::Up { policy, json, outbound: false } => harness::demo::up(policy.as_deref(), json),
        Command::Up { policy, json, outbound: true } => harness::egress_demo::up(policy.as_deref(), json),
        Command::Demo { policy } => harness::demo::demo(policy.as_deref()),
        Command::Bench { requests, warmup, policies, windows, percentile, rows, memory } => {
            if memory {
                bench_memory()
            } else {
                let load = harness::bench::Load { requests, warmup, windows, percentile, ..Default::default() };
                bench(load, &policies, &rows)
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_policy_error(path: &Path, e: &PolicyFileError) {
    match e {
        PolicyFileError::Unreadable(msg) => eprintln!("{}: {msg}", path.display()),
        PolicyFileError::Invalid(errs) => {
            for err in errs.iter() {
                eprintln!("{err}");
            }
        }
    }
}

fn check(policies: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in policies {
        match load_policy(path) {
            Ok(p) => println!("{}: ok (revision {})", path.display(), p.revision()),
            Err(e) => {
                ok = false;
                print_policy_error(path, &e);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn decision_json(d: &policy::Decision) -> serde_json::Value {
    json!({
        "verdict": d.verdict().as_str(),
        "enforced": d.enforced(),
        "findings": d.findings.iter().map(|f| json!({
            "check": f.check.as_str(), "code": f.code.as_str(), "rule": f.rule, "enforced": f.enforced,
            "action": f.remedy.as_str(),
        })).collect::<Vec<_>>(),
        "headerMutations": d.mutations.iter().map(|m| match m {
            policy::HeaderMutation::Remove { name } => json!({"op": "remove", "name": String::from_utf8_lossy(name)}),
            policy::HeaderMutation::Set { name, .. } => json!({"op": "set", "name": String::from_utf8_lossy(name)}),
        }).collect::<Vec<_>>(),
        "principal": d.principal,
    })
}

fn eval(policy_path: &Path, request_path: &Path) -> ExitCode {
    let policy = match load_policy(policy_path) {
        Ok(p) => p,
        Err(e) => {
            print_policy_error(policy_path, &e);
            return ExitCode::from(2);
        }
    };
    let request: OwnedRequest = match std::fs::read_to_string(request_path)
        .map_err(anyhow::Error::from)
        .and_then(|t| serde_json::from_str(&t).map_err(anyhow::Error::from))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", request_path.display());
            return ExitCode::from(2);
        }
    };
    let pairs = request.pairs();
    let decision = policy.evaluate(&request.view(&pairs));
    println!("{}", decision_json(&decision));
    if decision.enforced() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn eval_connection(policy_path: &Path, connection_path: &Path) -> ExitCode {
    let policy = match load_policy(policy_path) {
        Ok(p) => p,
        Err(e) => {
            print_policy_error(policy_path, &e);
            return ExitCode::from(2);
        }
    };
    let connection: OwnedConnection = match std::fs::read_to_string(connection_path)
        .map_err(anyhow::Error::from)
        .and_then(|t| serde_json::from_str(&t).map_err(anyhow::Error::from))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", connection_path.display());
            return ExitCode::from(2);
        }
    };
    let decision = policy.evaluate_connection(&connection.view());
    println!("{}", decision_json(&decision));
    if decision.enforced() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The decision-log JSON in a line of Envoy's log (after `meshguard.decision `) or a bare
/// JSON line.
fn decision_record(line: &str) -> Option<serde_json::Value> {
    let json = match line.find("meshguard.decision {") {
        Some(i) => line.get(i + "meshguard.decision ".len()..)?,
        None if line.trim_start().starts_with('{') => line.trim(),
        None => return None,
    };
    serde_json::from_str(json.trim_end()).ok()
}

fn replay(policy_path: &Path, logs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let policy = match load_policy(policy_path) {
        Ok(p) => p,
        Err(e) => {
            print_policy_error(policy_path, &e);
            return Ok(ExitCode::from(2));
        }
    };
    let mut readers: Vec<Box<dyn BufRead>> = Vec::new();
    if logs.is_empty() || logs.iter().any(|p| p.as_os_str() == "-") {
        readers.push(Box::new(std::io::stdin().lock()));
    }
    for path in logs.iter().filter(|p| p.as_os_str() != "-") {
        readers.push(Box::new(std::io::BufReader::new(std::fs::File::open(path)?)));
    }
    let (mut total, mut changed) = (0u64, 0u64);
    let mut out = std::io::stdout().lock();
    for reader in readers {
        for line in reader.lines() {
            let Some(record) = decision_record(&line?) else { continue };
            let decision = if let Ok(connection) =
                serde_json::from_value::<OwnedConnection>(record["connection"].clone())
            {
                // A network filter's line.
                policy.evaluate_connection(&connection.view())
            } else {
                let Ok(request) = serde_json::from_value::<OwnedRequest>(record["request"].clone()) else { continue };
                let pairs = request.pairs();
                policy.evaluate(&request.view(&pairs))
            };
            let before = record["outcome"].as_str().unwrap_or("?");
            let after = decision.outcome();
            total += 1;
            if before != after {
                changed += 1;
            }
            writeln!(
                out,
                "{}",
                json!({
                    "requestId": record["requestId"],
                    "before": {"outcome": before, "code": record["code"], "rule": record["rule"], "policyRevision": record["policyRevision"]},
                    "after": {"outcome": after, "code": decision.primary().map(|f| f.code.as_str()), "rule": decision.primary().map(|f| f.rule.as_str()), "policyRevision": policy.revision()},
                    "changed": before != after,
                })
            )?;
        }
    }
    eprintln!("replayed {total} decisions under revision {}: {changed} changed", policy.revision());
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // one per command-line flag
fn render(
    what: RenderTarget,
    policy_path: &Path,
    url: Option<String>,
    name: &str,
    namespace: &str,
    selectors: &[String],
    options: &harness::render::WasmPluginOptions,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // Never render a policy the filter would refuse.
    if let Err(e) = load_policy(policy_path) {
        print_policy_error(policy_path, &e);
        return Ok(ExitCode::from(1));
    }
    let value = harness::policy_file::load_value(policy_path)?;
    match what {
        RenderTarget::Wasmplugin => {
            let url = url.unwrap_or_else(|| "oci://ghcr.io/meshguard/meshguard:0.1.0".to_string());
            print!("{}", harness::render::wasm_plugin(&value, &url, name, namespace, selectors, options)?);
        }
        RenderTarget::Compose => {
            let Some(out) = out else { anyhow::bail!("render compose needs --out DIR") };
            let wasm = url.map(PathBuf::from).unwrap_or_else(harness::mesh::wasm_path);
            harness::compose::render_into(out, &value.to_string(), &wasm, harness::compose::CONTAINER_ROOT)?;
            eprintln!("wrote {}; now: docker compose -f envoy-config/compose/docker-compose.yaml up", out.display());
        }
        RenderTarget::Ecds => {
            let wasm = url.map(PathBuf::from).unwrap_or_else(harness::mesh::wasm_path);
            print!("{}", harness::render::ecds(&value.to_string(), &wasm)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_memory() -> anyhow::Result<ExitCode> {
    use harness::bench;
    let rows = bench::memory(&bench::memory_scenarios()?, 2_000)?;
    println!(
        "Envoy {} resident memory (VmRSS) after 2,000 requests, sidecar inbound, 1/2/4 workers; +MiB against \
         no filter with as many workers; per worker VM = what each worker beyond the first adds:",
        harness::envoy::PINNED_VERSION
    );
    print!("{}", bench::memory_table(&rows));
    Ok(ExitCode::SUCCESS)
}

fn bench(load: harness::bench::Load, policies: &[PathBuf], rows: &[String]) -> anyhow::Result<ExitCode> {
    use harness::bench;
    let mut scenarios = bench::standard_scenarios()?;
    for path in policies {
        if let Err(e) = load_policy(path) {
            print_policy_error(path, &e);
            return Ok(ExitCode::from(2));
        }
        scenarios.push(bench::Scenario::inbound(
            &format!("meshguard ({})", path.file_name().unwrap_or_default().to_string_lossy()),
            bench::Filter::Meshguard { policy_json: harness::policy_file::load_json(path)? },
        ));
    }
    let scenarios = bench::with_comparison(bench::select(scenarios, rows));
    let rows = bench::run(&scenarios, load)?;
    println!(
        "Envoy {} CPU time per request (user+sys of the Envoy process, 1 worker), HTTP/1.1 keep-alive \
         (inbound over mTLS, outbound plaintext); ratios against each row's no-filter baseline, \
         x floor = added CPU / the no-op Wasm filter's added CPU (same traffic); window shown: p{}:",
        harness::envoy::PINNED_VERSION,
        load.percentile
    );
    print!("{}", bench::table(&scenarios, &rows));
    Ok(ExitCode::SUCCESS)
}
