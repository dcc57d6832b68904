//! `meshguard`: the command line for people who write and tune meshguard policies.
//!
//! - `check POLICY...`       validate policies (`FILE: PATH: message` lines on stderr)
//! - `eval`                  decide one request offline, exactly as the filter would
//! - `replay`                re-decide logged requests under a (new) policy
//! - `test`                  run a policy's unit tests (cases kept beside the policy)
//! - `learn`                 propose least-privilege rules from dry-run decision logs
//! - `diff`                  what changed between two policies, and which logged decisions
//! - `render`                print the Istio WasmPlugin, the Envoy ECDS resource or the compose dir
//! - `keygen`, `sign`, `verify`  signed policies (DSSE envelopes, Ed25519)
//! - `package`               meshguard.wasm as an OCI image layout, trust roots embedded
//! - `up`                    run the local mesh (real Envoy, test PKI, echo upstream); with
//!   `--outbound`, the sidecar's outbound side (the egress allowlist); with `--observe`, a real
//!   Prometheus beside it
//! - `demo`                  run the local mesh, send sample requests, show the decisions
//! - `completions SHELL`     print a shell completion script
//!
//! Exit codes, the same for every command: see [`harness::cli_io::exit`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use harness::cli_io::{bad_input, code, display_name, exit, read_text, Output};
use harness::policy_file::{load_policy, load_policy_and_value};
use harness::replay::{read_logs, row_json};
use policy::view::connection::OwnedConnection;
use policy::view::request::OwnedRequest;
use policy::Policy;
use serde_json::{json, Value};

const EXIT_CODES: &str = "Exit codes (every command): 0 yes (valid, allowed, passed, unchanged); \
1 no (eval denies, a test case fails, a change with --fail-on-change); 2 bad input (an invalid \
policy, an unreadable or malformed file, bad arguments); 3 the environment failed (Envoy, ports, I/O). \
`-` reads standard input wherever a file is expected.";

#[derive(Parser)]
#[command(name = "meshguard", version, about = "meshguard policy tooling and local mesh", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files: exit 0 when all are valid, 2 with one `FILE: PATH: message` line
    /// per error.
    Check {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// table: `FILE: ok (revision R)` lines, errors on stderr; json: one document with
        /// every file's revision or errors.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Decide one request offline, exactly as the filter would. Exit 0 allow (dry-run findings
    /// included), 1 deny, 2 bad input.
    Eval {
        #[arg(long)]
        policy: PathBuf,
        /// REQUEST.json: {"method","path","authority","scheme","headers":[[n,v]...],"peer":{"mtls","uriSan"},"direction","cluster","workload"}.
        /// `direction` is required when the policy reads it (egress, identity.appliesTo: inbound).
        #[arg(long, required_unless_present = "connection", conflicts_with = "connection")]
        request: Option<PathBuf>,
        /// CONNECTION.json (the network filter): {"sni","destinationPort","peer","direction","workload"}
        #[arg(long)]
        connection: Option<PathBuf>,
        /// json (default): the decision as one JSON object; table: one line per finding.
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
        /// The time JWT rules are decided at, in seconds since the Unix epoch (default: the
        /// request's `nowUnixSecs`, else the current time).
        #[arg(long)]
        now: Option<u64>,
    },
    /// Re-decide the requests of decision-log lines (Envoy's log or JSON lines) under POLICY
    /// and show which decisions would change. Lines whose logged request cannot decide as the
    /// real one did (redacted, query dropped) are reported apart, never as changes.
    Replay {
        #[arg(long)]
        policy: PathBuf,
        /// Log files; `-` or none reads standard input.
        logs: Vec<PathBuf>,
        /// Exit 1 when a decision changes.
        #[arg(long)]
        fail_on_change: bool,
        /// Count lines that cannot be read but exit 0 anyway (default: exit 2).
        #[arg(long)]
        skip_malformed: bool,
        /// table: the changed and not-replayable lines, then a summary; json: one object per line.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run policy unit tests: files of cases (request or connection, expected outcome, reason
    /// codes, rules) against one or more policies, with rule coverage. Exit 1 when a case fails.
    Test {
        /// Test files (`*.tests.yaml`) or directories to search for them; each test file names
        /// its policy (`policy: demo.yaml`, relative to the test file) unless --policy is given.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Run every case against this policy instead (repeatable).
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Propose least-privilege identity rules (principals per route prefix and method) and
    /// egress rules (hosts and ports per source identity) from decision logs gathered in
    /// dry-run with every allow sampled (decisionLog.allowSampleRate: 1), as a policy file.
    Learn {
        /// The policy the logs were gathered under: the proposal keeps its other settings.
        #[arg(long)]
        policy: PathBuf,
        /// Log files; `-` or none reads standard input.
        logs: Vec<PathBuf>,
        /// Path segments kept in a learned route prefix (`/api/items/3` → `/api` with 1).
        #[arg(long, default_value_t = 1)]
        depth: usize,
        /// Write the proposal here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What changed between two policies, rule by rule; with logs, which logged decisions
    /// change, grouped by rule and reason code.
    Diff {
        old: PathBuf,
        new: PathBuf,
        logs: Vec<PathBuf>,
        /// Exit 1 when a logged decision changes.
        #[arg(long)]
        fail_on_change: bool,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print deployment manifests for a policy.
    Render {
        #[arg(value_enum)]
        what: RenderTarget,
        /// Required for wasmplugin and ecds; compose defaults to envoy-config/policies/demo.yaml.
        #[arg(long)]
        policy: Option<PathBuf>,
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
        /// WasmPlugin and ECDS: http (every check) or network (the egress check on the TLS SNI).
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
    /// Print a shell completion script: `meshguard completions bash > /etc/bash_completion.d/meshguard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    /// The Envoy ECDS resource file the local mesh uses (`--type network`: the network filter's).
    Ecds,
    /// The directory envoy-config/compose/docker-compose.yaml mounts (needs --out): Envoy
    /// config, ECDS file, meshguard.wasm and a test PKI, with the container's paths.
    Compose,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        // `meshguard demo | head -2`: the reader is gone; stop quietly (cleanup has run).
        Err(e) if harness::cli_io::is_broken_pipe(&e) => code(exit::OK),
        Err(e) => {
            let c = harness::cli_io::error_code(&e);
            if c == exit::BAD_INPUT {
                eprintln!("{e}");
            } else {
                eprintln!("meshguard: {e:#}");
            }
            code(c)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { policies, output } => check(&policies, output),
        Command::Eval { policy, request: Some(request), output, now, .. } => eval(&policy, &request, output, now),
        Command::Eval { policy, connection: Some(connection), output, .. } => {
            eval_connection(&policy, &connection, output)
        }
        Command::Eval { .. } => Err(bad_input("eval needs --request or --connection")),
        Command::Replay { policy, logs, fail_on_change, skip_malformed, output } => {
            replay(&policy, &logs, fail_on_change, skip_malformed, output)
        }
        Command::Test { paths, policies, output } => harness::policy_test::run(&paths, &policies, output),
        Command::Learn { policy, logs, depth, out } => harness::learn::run(&policy, &logs, depth, out.as_deref()),
        Command::Diff { old, new, logs, fail_on_change, output } => {
            harness::diff::run(&old, &new, &logs, fail_on_change, output)
        }
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
                Some(Err(e)) => return Err(bad_input(format!("{e:#}"))),
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
            render(what, policy.as_deref(), url, &name, &namespace, &selectors, &options, out.as_deref())
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
        Command::Bench { requests, warmup, policies, windows, percentile, rows, memory } => {
            if memory {
                bench_memory()
            } else {
                let load = harness::bench::Load { requests, warmup, windows, percentile, ..Default::default() };
                bench(load, &policies, &rows)
            }
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "meshguard", &mut out);
            std::io::stdout().write_all(&out)?;
            Ok(code(exit::OK))
        }
    }
}

fn check(policies: &[PathBuf], output: Output) -> Result<ExitCode> {
    let mut ok = true;
    let mut out = std::io::stdout().lock();
    let mut files = Vec::new();
    for path in policies {
        match load_policy(path) {
            Ok(p) => {
                if output == Output::Table {
                    writeln!(out, "{}: ok (revision {})", display_name(path), p.revision())?;
                }
                files.push(json!({"file": display_name(path), "valid": true, "revision": p.revision()}));
            }
            Err(e) => {
                ok = false;
                eprintln!("{e}");
                let errors: Vec<Value> =
                    e.errors.iter().map(|c| json!({"path": c.path, "message": c.message})).collect();
                files.push(json!({"file": e.file, "valid": false, "errors": errors}));
            }
        }
    }
    if output == Output::Json {
        writeln!(out, "{}", json!({"files": files, "valid": ok}))?;
    }
    Ok(code(if ok { exit::OK } else { exit::BAD_INPUT }))
}

/// Print a decision: JSON, or one line for the outcome and one per finding.
fn print_decision(d: &policy::Decision, output: Output) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", decision_json(d))?,
        Output::Table => {
            writeln!(out, "{} (principal {})", d.outcome().as_str(), d.principal.as_deref().unwrap_or("-"))?;
            for f in &d.findings {
                writeln!(
                    out,
                    "  {:<14} {:<44} {:<32} {:<7} {}",
                    f.check.as_str(),
                    f.code.as_str(),
                    f.rule,
                    f.remedy.as_str(),
                    if f.enforced { "enforced" } else { "dry-run" }
                )?;
            }
        }
    }
    Ok(())
}

fn decision_json(d: &policy::Decision) -> Value {
    json!({
        "verdict": d.verdict().as_str(),
        "outcome": d.outcome().as_str(),
        "enforced": d.enforced(),
        "findings": policy::log::findings_json(d),
        "headerMutations": policy::log::mutations_json(d),
        "principal": d.principal,
    })
}

/// Read a JSON object from `path` (`-`: stdin), refusing duplicate keys.
fn read_json_object(path: &Path) -> Result<Value> {
    let name = display_name(path);
    let text = read_text(path)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| bad_input(format!("{name}: not valid JSON: {e}")))?;
    if let Err(errs) = policy::strict_json::check_json(text.as_bytes()) {
        let lines: Vec<String> = errs.iter().map(|e| format!("{name}: {e}")).collect();
        return Err(bad_input(lines.join("\n")));
    }
    Ok(value)
}

fn eval(policy_path: &Path, request_path: &Path, output: Output, now: Option<u64>) -> Result<ExitCode> {
    let policy = load_policy(policy_path)?;
    let value = read_json_object(request_path)?;
    let name = display_name(request_path);
    let has_direction = value.get("direction").is_some();
    let mut request: OwnedRequest =
        serde_json::from_value(value).map_err(|e| bad_input(format!("{name}: not a request: {e}")))?;
    if policy.needs().direction && !has_direction {
        return Err(bad_input(format!("{name}: direction: {}", harness::offline::DIRECTION_REQUIRED)));
    }
    if now.is_some() {
        request.now_unix_secs = now;
    }
    let decision = harness::offline::decide_request(&policy, &request);
    print_decision(&decision, output)?;
    Ok(code(if decision.enforced() { exit::NO } else { exit::OK }))
}

fn eval_connection(policy_path: &Path, connection_path: &Path, output: Output) -> Result<ExitCode> {
    let policy = load_policy(policy_path)?;
    let value = read_json_object(connection_path)?;
    let name = display_name(connection_path);
    let has_direction = value.get("direction").is_some();
    let connection: OwnedConnection =
        serde_json::from_value(value).map_err(|e| bad_input(format!("{name}: not a connection: {e}")))?;
    if policy.needs().direction && !has_direction {
        return Err(bad_input(format!("{name}: direction: {}", harness::offline::DIRECTION_REQUIRED)));
    }
    let decision = harness::offline::decide_connection(&policy, &connection);
    print_decision(&decision, output)?;
    Ok(code(if decision.enforced() { exit::NO } else { exit::OK }))
}

fn replay(
    policy_path: &Path,
    logs: &[PathBuf],
    fail_on_change: bool,
    skip_malformed: bool,
    output: Output,
) -> Result<ExitCode> {
    if harness::cli_io::is_stdin(policy_path) && (logs.is_empty() || logs.iter().any(|l| harness::cli_io::is_stdin(l)))
    {
        return Err(bad_input("replay: the policy and the logs cannot both be standard input"));
    }
    let policy: Policy = load_policy(policy_path)?;
    let (mut changed, mut unreplayable) = (0u64, 0u64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut header = output == Output::Table;
    let stats = read_logs(logs, |entry| {
        let decision = entry.decide(&policy);
        let trustworthy = entry.trustworthy_under(&policy, &decision);
        let is_change = trustworthy && entry.outcome() != decision.outcome().as_str();
        if !trustworthy {
            unreplayable += 1;
        } else if is_change {
            changed += 1;
        }
        match output {
            Output::Json => writeln!(out, "{}", row_json(&entry, &policy, &decision, trustworthy))?,
            Output::Table if is_change || !trustworthy => {
                if std::mem::take(&mut header) {
                    writeln!(
                        out,
                        "{:<28} {:<24} {:<14} {:<10} {:<10} now",
                        "line", "request id", "", "logged", "replayed"
                    )?;
                }
                writeln!(
                    out,
                    "{:<28} {:<24} {:<14} {:<10} {:<10} {}",
                    entry.at,
                    entry.record["requestId"].as_str().unwrap_or("-"),
                    if trustworthy { "changed" } else { entry.not_replayable_because(&decision) },
                    entry.outcome(),
                    if trustworthy { decision.outcome().as_str() } else { "?" },
                    decision.primary().map(|f| format!("{} ({})", f.code.as_str(), f.rule)).unwrap_or_default(),
                )?
            }
            Output::Table => {}
        }
        Ok(())
    })?;
    out.flush()?;
    drop(out);
    eprintln!(
        "replayed {} decisions under revision {}: {changed} changed, {unreplayable} not replayable \
         (the logged request lacks what the decision needs), {} malformed lines skipped, {} lines read",
        stats.decisions,
        policy.revision(),
        stats.malformed_count,
        stats.lines
    );
    for m in &stats.malformed {
        eprintln!("malformed: {m}");
    }
    if stats.malformed_count > 0 && !skip_malformed {
        return Ok(code(exit::BAD_INPUT));
    }
    if fail_on_change && changed > 0 {
        return Ok(code(exit::NO));
    }
    Ok(code(exit::OK))
}

#[allow(clippy::too_many_arguments)] // one per command-line flag
fn render(
    what: RenderTarget,
    policy_path: Option<&Path>,
    url: Option<String>,
    name: &str,
    namespace: &str,
    selectors: &[String],
    options: &harness::render::WasmPluginOptions,
    out: Option<&Path>,
) -> Result<ExitCode> {
    use harness::render::PluginType;
    let policy_path = match (policy_path, what) {
        (Some(p), _) => p.to_path_buf(),
        (None, RenderTarget::Compose) => harness::demo::default_policy_path(),
        (None, _) => return Err(bad_input("render wasmplugin and render ecds need --policy FILE")),
    };
    // Never render a policy the filter would refuse.
    // `value` is what goes into the plugin configuration: a signed envelope stays the envelope.
    let (_, policy_value, value) = harness::policy_file::load_policy_with_raw(&policy_path)?;
    let mut stdout = std::io::stdout();
    match what {
        RenderTarget::Wasmplugin => {
            let url = url.unwrap_or_else(|| "oci://ghcr.io/meshguard/meshguard:0.1.0".to_string());
            let options = harness::render::WasmPluginOptions { plugin_config: Some(value), ..options.clone() };
            let text = harness::render::wasm_plugin(&policy_value, &url, name, namespace, selectors, &options)
                .map_err(|e| bad_input(format!("{e:#}")))?;
            stdout.write_all(text.as_bytes())?;
        }
        RenderTarget::Compose => {
            let Some(out) = out else { return Err(bad_input("render compose needs --out DIR")) };
            let wasm = url.map(PathBuf::from).unwrap_or_else(harness::mesh::wasm_path);
            harness::compose::render_into(out, &value.to_string(), &wasm, harness::compose::CONTAINER_ROOT)?;
            eprintln!("wrote {}; now: docker compose -f envoy-config/compose/docker-compose.yaml up", out.display());
        }
        RenderTarget::Ecds => {
            let wasm = url.map(PathBuf::from).unwrap_or_else(harness::mesh::wasm_path);
            let text = match options.plugin_type {
                PluginType::Http => harness::render::ecds(&value.to_string(), &wasm)?,
                PluginType::Network => {
                    if policy_value.get("egress").is_none_or(Value::is_null) {
                        return Err(bad_input(
                            "a network filter runs only the egress check (on the TLS SNI), and this policy has no egress section",
                        ));
                    }
                    harness::mesh::render_ecds_network(&value.to_string(), &wasm, "1")?
                }
            };
            stdout.write_all(text.as_bytes())?;
        }
    }
    stdout.flush()?;
    Ok(code(exit::OK))
}

fn bench_memory() -> Result<ExitCode> {
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

fn bench(load: harness::bench::Load, policies: &[PathBuf], rows: &[String]) -> Result<ExitCode> {
    use harness::bench;
    let mut scenarios = bench::standard_scenarios()?;
    for path in policies {
        let (_, value) = load_policy_and_value(path)?;
        scenarios.push(bench::Scenario::inbound(
            &format!("meshguard ({})", path.file_name().unwrap_or_default().to_string_lossy()),
            bench::Filter::Meshguard { policy_json: value.to_string() },
        ));
    }
    let scenarios = bench::with_comparison(bench::select(scenarios, rows));
    let rows = bench::run(&scenarios, load)?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "Envoy {} CPU time per request (user+sys of the Envoy process, 1 worker), HTTP/1.1 keep-alive \
         (inbound over mTLS, outbound plaintext); ratios against each row's no-filter baseline, \
         x floor = added CPU / the no-op Wasm filter's added CPU (same traffic); window shown: p{}:",
        harness::envoy::PINNED_VERSION,
        load.percentile
    )?;
    write!(out, "{}", bench::table(&scenarios, &rows))?;
    Ok(code(exit::OK))
}
