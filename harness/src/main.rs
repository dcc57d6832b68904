//! `meshguard`: the command line for people who write and tune meshguard policies.
//!
//! - `check POLICY...`       validate policies (exit 1 with `PATH: message` lines on stderr)
//! - `eval`                  decide one request offline, exactly as the filter would
//! - `replay`                re-decide logged requests under a (new) policy
//! - `render`                print the Istio WasmPlugin or the Envoy ECDS resource for a policy
//! - `keygen`, `sign`, `verify`  signed policies (DSSE envelopes, Ed25519)
//! - `package`               meshguard.wasm as an OCI image layout, trust roots embedded
//! - `up`                    run the local mesh (real Envoy, test PKI, echo upstream); with
//!   `--outbound`, the sidecar's outbound side (the egress allowlist); with `--observe`, a real
//!   Prometheus beside it
//! - `demo`                  run the local mesh, send sample requests, show the decisions

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use harness::policy_file::{load_policy, PolicyFileError};
use policy::view::connection::OwnedConnection;
use policy::view::request::OwnedRequest;
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
        /// WasmPlugin: the module image, pinned: oci://REGISTRY/REPO@sha256:DIGEST (a tag
        /// alone is accepted with a warning). Sets `url` and `sha256`.
        #[arg(long, conflicts_with = "url")]
        image: Option<String>,
        /// WasmPlugin: take the digest from this `meshguard package` layout (--image is then
        /// REGISTRY/REPO, --tag the ref name).
        #[arg(long, requires = "image")]
        package: Option<PathBuf>,
        #[arg(long, default_value = "0.1.0")]
        tag: String,
        /// WasmPlugin: pass the proxy's MESHGUARD_TRUST_KEYS environment variable (set in the
        /// pod spec) to the VM as trust roots (vmConfig.env, valueFrom: HOST).
        #[arg(long)]
        trust_keys_from_host: bool,
    },
    /// Make an Ed25519 signing key pair: OUT.key (private, mode 600) and OUT.pub.
    Keygen {
        #[arg(long, default_value = "meshguard-signing")]
        out: PathBuf,
    },
    /// Sign a policy: write its DSSE envelope (what goes into pluginConfig).
    Sign {
        policy: PathBuf,
        /// The private key file (refused if world-readable).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Or the environment variable holding it (default: MESHGUARD_SIGNING_KEY).
        #[arg(long)]
        key_env: Option<String>,
        /// The rollback serial (default: the policy's `serial`, else the Unix time).
        #[arg(long)]
        serial: Option<u64>,
        /// Where to write the envelope (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a signed policy against public keys (exit 1 with the reason if it does not verify).
    Verify {
        /// A public key file (repeatable: any one of them).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        envelope: PathBuf,
    },
    /// Write meshguard.wasm as an OCI image layout (Wasm artifact and compat formats).
    Package {
        #[arg(long)]
        out: PathBuf,
        /// The module (default: the release build).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// A public key to embed as a trust root (repeatable).
        #[arg(long = "trust-key")]
        trust_keys: Vec<PathBuf>,
        /// The ref name in the layout (`oci:DIR:TAG`; the compat format is TAG-compat).
        #[arg(long, default_value = "0.1.0")]
        tag: String,
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
        /// Also start a real Prometheus beside the mesh (loopback, temporary storage,
        /// meshguard's alerting rules loaded) scraping its Envoy; prints its URL and queries.
        #[arg(long, conflicts_with = "outbound")]
        observe: bool,
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
        Command::Render {
            what,
            policy,
            url,
            name,
            namespace,
            selectors,
            plugin_type,
            mode,
            out,
            image,
            package,
            tag,
            trust_keys_from_host,
        } => {
            use harness::render::{PluginType, TrafficMode, WasmPluginOptions};
            let module = match image.map(|i| harness::sign_commands::module_ref(&i, package.as_deref(), &tag)) {
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    eprintln!("meshguard: {e:#}");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let url = module.as_ref().map(|m| m.url.clone()).or(url);
            let options = WasmPluginOptions {
                sha256: module.and_then(|m| m.sha256),
                plugin_config: None,
                trust_keys_from_host,
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
        Command::Keygen { out } => harness::sign_commands::keygen(&out),
        Command::Sign { policy, key, key_env, serial, out } => harness::sign_commands::key_source(key, key_env)
            .and_then(|k| harness::sign_commands::sign(&policy, &k, serial, out.as_deref())),
        Command::Verify { keys, envelope } => harness::sign_commands::verify(&keys, &envelope),
        Command::Package { out, wasm, trust_keys, tag } => {
            harness::sign_commands::package(wasm, &trust_keys, &out, &tag)
        }
        Command::Up { policy, json, observe: true, .. } => harness::observe::up(policy.as_deref(), json),
        Command::Up { policy, json, outbound: false, .. } => harness::demo::up(policy.as_deref(), json),
        Command::Up { policy, json, outbound: true, .. } => harness::egress_demo::up(policy.as_deref(), json),
        Command::Demo { policy } => harness::demo::demo(policy.as_deref()),
        Command::Bench { requests, warmup, policies } => bench(requests, warmup, &policies),
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
        "findings": policy::log::findings_json(d),
        "headerMutations": policy::log::mutations_json(d),
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
    let json = match policy::log::decision_json(line) {
        Some(json) => json,
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
            let after = decision.outcome().as_str();
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
    let policy_value = harness::policy_file::load_value(policy_path)?;
    // What goes into the plugin configuration: a signed envelope stays the envelope.
    let value = harness::policy_file::load_raw_value(policy_path)?;
    match what {
        RenderTarget::Wasmplugin => {
            let url = url.unwrap_or_else(|| "oci://ghcr.io/meshguard/meshguard:0.1.0".to_string());
            let options = harness::render::WasmPluginOptions { plugin_config: Some(value), ..options.clone() };
            print!("{}", harness::render::wasm_plugin(&policy_value, &url, name, namespace, selectors, &options)?);
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

fn bench(requests: usize, warmup: usize, policies: &[PathBuf]) -> anyhow::Result<ExitCode> {
    use harness::bench;
    let load = bench::Load { requests, warmup, ..bench::Load::default() };
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
    let rows = bench::run(&scenarios, load)?;
    println!(
        "Envoy {} CPU time per request (user+sys of the Envoy process, 1 worker), HTTP/1.1 keep-alive \
         (inbound over mTLS, outbound plaintext); ratios against each row's no-filter baseline:",
        harness::envoy::PINNED_VERSION
    );
    print!("{}", bench::table(&scenarios, &rows));
    Ok(ExitCode::SUCCESS)
}
