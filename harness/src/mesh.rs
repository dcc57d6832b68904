//! The local mesh: one Istio-shaped sidecar (real Envoy) in front of the echo upstream, with
//! meshguard.wasm delivered by ECDS, and a fresh SPIFFE test PKI.
//!
//! ```text
//!  client ──(plaintext | mTLS with a test SVID)──> Envoy virtualInbound ──> echo upstream
//!                                                  └ HCM: [default.meshguard (ECDS), router]
//! ```
//!
//! [`Mesh::start`] mints the PKI, starts the echo, renders `envoy-config/sidecar-inbound.yaml`
//! and `envoy-config/ecds-wasm.yaml`, starts Envoy, waits until it is ready and checks that the
//! policy was accepted. [`Mesh::update_policy`] replaces the ECDS file atomically, as an ECDS
//! push would, and reports whether the plugin accepted it. Dropping the [`Mesh`] stops Envoy
//! (by its PID) and the echo, and removes the work dir unless `MESHGUARD_KEEP` is set (or the
//! thread is panicking: a failed test keeps its logs).
//!
//! [`MeshOptions::kind`] picks another Envoy shape ([`MeshKind`]): the outbound side of a
//! sidecar (`envoy-config/sidecar-outbound.yaml`: HTTP routes per Host, Istio's passthrough and
//! blackhole clusters, a TLS passthrough listener with meshguard as a network filter; "the
//! internet" is the echo and a [`TlsEcho`]) or an egress gateway
//! (`envoy-config/egress-gateway.yaml`: mTLS from the source workload). Both route pinned
//! destinations to [`MeshEndpoint`]s (the right SPIFFE ID, an impostor) and the plaintext echo,
//! for upstream pinning. See `envoy-config/EGRESS.md`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::client::TlsIdentity;
use crate::echo::Echo;
use crate::envoy::{Envoy, EnvoyOptions};
use crate::mesh_endpoint::MeshEndpoint;
use crate::pki::Pki;
use crate::tls_echo::TlsEcho;
use crate::Result;

/// The sidecar's inbound listener template (see `envoy-config/README.md`).
pub const SIDECAR_INBOUND_TEMPLATE: &str = include_str!("../../envoy-config/sidecar-inbound.yaml");
/// The ECDS resource template for the WasmPlugin.
pub const ECDS_WASM_TEMPLATE: &str = include_str!("../../envoy-config/ecds-wasm.yaml");
/// The sidecar's outbound listeners (HTTP and TLS passthrough) template.
pub const SIDECAR_OUTBOUND_TEMPLATE: &str = include_str!("../../envoy-config/sidecar-outbound.yaml");
/// The egress gateway template.
pub const EGRESS_GATEWAY_TEMPLATE: &str = include_str!("../../envoy-config/egress-gateway.yaml");
/// The ECDS resource template for the NETWORK WasmPlugin (root id `meshguard-tcp`).
pub const ECDS_WASM_NETWORK_TEMPLATE: &str = include_str!("../../envoy-config/ecds-wasm-network.yaml");
/// The bootstrap fragment (`stats_config.stats_tags`) that turns meshguard's per-finding
/// counters into `meshguard_findings_total{check,code,mode}`; appended to every mesh Envoy's
/// bootstrap unless [`MeshOptions::stats_tags`] is false.
pub const STATS_TAGS: &str = include_str!("../../envoy-config/stats-tags.yaml");
/// The name of the network filter's ECDS resource.
pub const ECDS_NETWORK_RESOURCE_NAME: &str = "default.meshguard-tcp";
/// The outbound sidecar's TLS passthrough listener.
pub const TLS_LISTENER_NAME: &str = "0.0.0.0_443";
/// The name of the ECDS resource and of the HTTP filter (Istio: `<namespace>.<WasmPlugin>`).
pub const ECDS_RESOURCE_NAME: &str = "default.meshguard";
/// The name of the inbound listener.
pub const LISTENER_NAME: &str = "virtualInbound";
/// The allow-all policy.
pub const ALLOW_ALL_POLICY: &str = r#"{"version":1}"#;
/// How long [`Mesh::start`] waits for Envoy to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// What Envoy 1.40 logs (warning) when it refuses an ECDS file, e.g. because the plugin's
/// `on_configure` returned false: `Filesystem config update rejected: Unable to create Wasm
/// plugin meshguard`.
pub const REJECTED_LOG_LINE: &str = "Filesystem config update rejected";
/// How long [`Mesh::update_policy`] waits for Envoy to process a new ECDS file.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Envoy a [`Mesh`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeshKind {
    /// A sidecar's inbound side (`sidecar-inbound.yaml`, listener `virtualInbound`).
    #[default]
    SidecarInbound,
    /// A sidecar's outbound side (`sidecar-outbound.yaml`): listener `0.0.0.0_80` (HTTP) and
    /// `0.0.0.0_443` (TLS passthrough, meshguard as a network filter), node metadata of the
    /// workload [`MeshOptions::workload`].
    SidecarOutbound,
    /// An egress gateway (`egress-gateway.yaml`): listener `0.0.0.0_8443`, mTLS required.
    EgressGateway,
}

impl MeshKind {
    fn template(self) -> &'static str {
        match self {
            MeshKind::SidecarInbound => SIDECAR_INBOUND_TEMPLATE,
            MeshKind::SidecarOutbound => SIDECAR_OUTBOUND_TEMPLATE,
            MeshKind::EgressGateway => EGRESS_GATEWAY_TEMPLATE,
        }
    }

    /// The listener [`Mesh::listener_addr`] returns.
    pub fn listener(self) -> &'static str {
        match self {
            MeshKind::SidecarInbound => LISTENER_NAME,
            MeshKind::SidecarOutbound => "0.0.0.0_80",
            MeshKind::EgressGateway => "0.0.0.0_8443",
        }
    }

    fn node_id(self, workload: &(String, String)) -> String {
        match self {
            MeshKind::SidecarInbound => "sidecar~127.0.0.1~api.default~default.svc.cluster.local".to_string(),
            MeshKind::SidecarOutbound => {
                format!("sidecar~127.0.0.1~{}.{}~{}.svc.cluster.local", workload.1, workload.0, workload.0)
            }
            MeshKind::EgressGateway => {
                "router~127.0.0.1~istio-egressgateway.istio-system~istio-system.svc.cluster.local".to_string()
            }
        }
    }
}

/// How to start a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// The policy document (JSON), sent verbatim as the plugin configuration.
    pub policy_json: String,
    /// Where configs, PKI and logs go. Default: a fresh dir under
    /// `<workspace>/target/meshguard-runs/`, removed on drop unless `MESHGUARD_KEEP` is set.
    /// A dir given here is never removed.
    pub work_dir: Option<PathBuf>,
    /// The Wasm module. Default: [`wasm_path`] (it must exist: see [`build_wasm`]).
    pub wasm: Option<PathBuf>,
    /// The trust domain of the mesh's workloads (default `cluster.local`).
    pub trust_domain: String,
    /// Another listener template with the same placeholders (default: the sidecar inbound one):
    /// `envoy-config/gateway.yaml`, `envoy-config/plain-envoy.yaml`. The mesh serves on its
    /// listener named `virtualInbound`, or else on its only listener.
    pub envoy_template: Option<PathBuf>,
    /// How Envoy is started (log level, extra args).
    pub envoy: EnvoyOptions,
    /// Start even if the plugin rejects the policy (then requests get Envoy's 500 `NFCF`);
    /// by default such a start is an error that quotes Envoy's log.
    pub allow_rejected_policy: bool,
    /// Which Envoy to run (default: a sidecar's inbound side).
    pub kind: MeshKind,
    /// The local workload (namespace, service account) in the outbound sidecar's node
    /// metadata (default `web`, `web`: `spiffe://<trust domain>/ns/web/sa/web`).
    pub workload: (String, String),
    /// Append [`STATS_TAGS`] to the bootstrap (default true), so `/stats/prometheus` shows
    /// `meshguard_findings_total{check,code,mode}`; false shows the flat per-finding names.
    pub stats_tags: bool,
    /// Environment variables of the Wasm VM (`vm_config.environment_variables.key_values`,
    /// what Istio's `vmConfig.env` sets), e.g. `MESHGUARD_TRUST_KEYS`. Kept for updates.
    pub vm_env: Vec<(String, String)>,
    /// More static clusters in the rendered config: (name, loopback address), plain HTTP/1.1,
    /// e.g. the stand-in identity provider's JWKS endpoint ([`crate::idp::JwksServer`]) that a
    /// policy's `jwks.remote.cluster` names.
    pub extra_clusters: Vec<(String, SocketAddr)>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            policy_json: ALLOW_ALL_POLICY.to_string(),
            work_dir: None,
            wasm: None,
            trust_domain: "cluster.local".to_string(),
            envoy_template: None,
            envoy: EnvoyOptions::default(),
            allow_rejected_policy: false,
            kind: MeshKind::default(),
            workload: ("web".to_string(), "web".to_string()),
            stats_tags: true,
            vm_env: Vec::new(),
            extra_clusters: Vec::new(),
        }
    }
}

impl MeshOptions {
    /// The defaults with this policy.
    pub fn with_policy(policy_json: impl Into<String>) -> Self {
        MeshOptions { policy_json: policy_json.into(), ..Default::default() }
    }
}

/// What Envoy did with a policy written to the ECDS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyUpdate {
    /// Accepted: the plugin's `on_configure` returned true; new requests see it.
    Applied,
    /// Rejected (e.g. `on_configure` returned false): the previous policy stays in force.
    /// `log` holds the Envoy log lines written meanwhile (the plugin's reasons included).
    Rejected {
        /// Envoy's log lines written while the update was processed.
        log: String,
    },
}

/// A running local mesh. Drop stops everything.
pub struct Mesh {
    // Field order is drop order: Envoy first (it holds connections to the echo).
    envoy: Envoy,
    echo: Echo,
    tls_echo: Option<TlsEcho>,
    tls_listener: Option<SocketAddr>,
    /// The pinned services' endpoints (outbound sidecar and egress gateway): `payments` (the
    /// right SPIFFE ID) and `impostor` (ledger's poisoned endpoint).
    mesh_endpoints: Vec<MeshEndpoint>,
    pki: Pki,
    work_dir: PathBuf,
    remove_work_dir: bool,
    listener: SocketAddr,
    ecds_path: PathBuf,
    wasm: PathBuf,
    version: AtomicU64,
    vm_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("listener", &self.listener)
            .field("admin", &self.envoy.admin_addr())
            .field("upstream", &self.echo.addr())
            .field("work_dir", &self.work_dir)
            .finish()
    }
}

impl Mesh {
    /// Starts the mesh; returns once the listener serves traffic with the policy in force.
    /// On failure the work dir is kept (its logs explain) and named in the error.
    pub fn start(options: MeshOptions) -> Result<Mesh> {
        let (work_dir, remove_work_dir) = match &options.work_dir {
            Some(dir) => {
                fs::create_dir_all(dir).with_context(|| format!("creating work dir {}", dir.display()))?;
                (dir.clone(), false)
            }
            None => (crate::scratch_dir("mesh")?, true),
        };
        Self::start_in(&options, work_dir.clone(), remove_work_dir)
            .with_context(|| format!("starting the local mesh (work dir kept: {})", work_dir.display()))
    }

    fn start_in(options: &MeshOptions, work_dir: PathBuf, remove_work_dir: bool) -> Result<Mesh> {
        let wasm = match &options.wasm {
            Some(w) => w.clone(),
            None => wasm_path(),
        };
        if !wasm.is_file() {
            bail!(
                "no Wasm module at {}: build it with `cargo build --release --target wasm32-wasip1 -p meshguard-filter` (or harness::mesh::build_wasm()), or set MESHGUARD_WASM",
                wasm.display()
            );
        }
        let wasm = wasm.canonicalize()?;

        let pki = Pki::mint(&work_dir.join("pki"), &options.trust_domain)?;
        let echo = Echo::start()?;

        let ecds_dir = work_dir.join("ecds");
        fs::create_dir_all(&ecds_dir)?;
        let ecds_path = ecds_dir.join("meshguard.yaml");
        write_atomically(&ecds_path, &render_ecds_with_env(&options.policy_json, &wasm, "1", &options.vm_env)?)?;
        let ecds_network_path = ecds_dir.join("meshguard-tcp.yaml");
        let tls_echo = match options.kind {
            MeshKind::SidecarOutbound => {
                write_atomically(&ecds_network_path, &render_ecds_network(&options.policy_json, &wasm, "1")?)?;
                Some(TlsEcho::start(&work_dir.join("internet"), crate::tls_echo::DEFAULT_NAMES)?)
            }
            _ => None,
        };

        let template = match &options.envoy_template {
            Some(path) => fs::read_to_string(path).with_context(|| format!("reading template {}", path.display()))?,
            None => options.kind.template().to_string(),
        };
        let server = pki.workload("server")?;
        let upstream = echo.addr();
        let mut vars = vec![
            ("NODE_NAMESPACE", json_str(&options.workload.0)),
            ("NODE_SERVICE_ACCOUNT", json_str(&options.workload.1)),
            ("TLS_LISTENER_PORT", "0".to_string()),
            ("ECDS_NETWORK_PATH", json_path(&ecds_network_path)),
        ];
        if let Some(tls) = &tls_echo {
            vars.push(("TLS_UPSTREAM_ADDRESS", json_str(&tls.addr().ip().to_string())));
            vars.push(("TLS_UPSTREAM_PORT", tls.addr().port().to_string()));
        }
        let mut mesh_endpoints = Vec::new();
        // The pinned destinations' endpoints: the outbound sidecar's in-mesh services, the
        // egress gateway's partner services (both templates route to them).
        if matches!(options.kind, MeshKind::SidecarOutbound | MeshKind::EgressGateway) {
            for (label, address, port) in
                [("payments", "PAYMENTS_ADDRESS", "PAYMENTS_PORT"), ("impostor", "IMPOSTOR_ADDRESS", "IMPOSTOR_PORT")]
            {
                let w = pki.workload(label)?;
                let endpoint = MeshEndpoint::start(label, &w.cert, &w.key)?;
                vars.push((address, json_str(&endpoint.addr().ip().to_string())));
                vars.push((port, endpoint.addr().port().to_string()));
                mesh_endpoints.push(endpoint);
            }
        }
        let config = render(
            &template,
            &[
                vars.as_slice(),
                &[
                    ("NODE_ID", json_str(&options.kind.node_id(&options.workload))),
                    ("LISTENER_PORT", "0".to_string()),
                    ("SERVER_CERT", json_path(&server.cert)),
                    ("SERVER_KEY", json_path(&server.key)),
                    ("CA_CERT", json_path(&pki.ca_cert)),
                    ("ECDS_PATH", json_path(&ecds_path)),
                    ("ACCESS_LOG_PATH", json_path(&work_dir.join("access.log"))),
                    ("UPSTREAM_ADDRESS", json_str(&upstream.ip().to_string())),
                    ("UPSTREAM_PORT", upstream.port().to_string()),
                ],
            ]
            .concat(),
        )?;
        let config = with_clusters(&config, &options.extra_clusters)?;
        let config = if options.stats_tags { with_stats_tags(&config) } else { config };
        let config_path = work_dir.join("envoy.yaml");
        fs::write(&config_path, config)?;

        let mut envoy = Envoy::start_with(&config_path, &work_dir, &options.envoy)?;
        envoy.wait_ready(READY_TIMEOUT)?;
        let listener = match envoy.listener_addr(options.kind.listener()) {
            Ok(addr) => addr,
            // Another template (a gateway, plain Envoy): its only listener.
            Err(e) => match envoy.listeners()?.as_slice() {
                [(_, addr)] => *addr,
                _ => return Err(e),
            },
        };
        let tls_listener = if tls_echo.is_some() { Some(envoy.listener_addr(TLS_LISTENER_NAME)?) } else { None };

        let mut mesh = Mesh {
            envoy,
            echo,
            tls_echo,
            tls_listener,
            mesh_endpoints,
            pki,
            work_dir,
            remove_work_dir,
            listener,
            ecds_path,
            wasm,
            version: AtomicU64::new(1),
            vm_env: options.vm_env.clone(),
        };
        let mut accepted = mesh.ecds_stat("update_success")?.unwrap_or(0) > 0;
        if mesh.tls_echo.is_some() {
            accepted &= mesh.network_ecds_stat("update_success")?.unwrap_or(0) > 0;
        }
        if !accepted && !options.allow_rejected_policy {
            mesh.remove_work_dir = false;
            bail!(
                "the plugin rejected the policy at startup (requests would get 500 NFCF)\n{}",
                mesh.envoy.log_tail(25)
            );
        }
        Ok(mesh)
    }

    /// The sidecar's inbound listener (`127.0.0.1:<port>`): plaintext and mTLS both. For the
    /// other kinds, the listener [`MeshKind::listener`] names.
    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    /// The outbound sidecar's TLS passthrough listener (`0.0.0.0_443`).
    pub fn tls_listener_addr(&self) -> Option<SocketAddr> {
        self.tls_listener
    }

    /// The TLS stand-in for the internet behind the TLS passthrough listener.
    pub fn tls_echo(&self) -> Option<&TlsEcho> {
        self.tls_echo.as_ref()
    }

    /// The endpoint of a pinned service (outbound sidecar, egress gateway): `"payments"` (the
    /// right SPIFFE ID) or `"impostor"` (where ledger's poisoned registry entry points).
    pub fn mesh_endpoint(&self, label: &str) -> Option<&MeshEndpoint> {
        self.mesh_endpoints.iter().find(|e| e.label() == label)
    }

    /// Envoy's admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.envoy.admin_addr()
    }

    /// The echo upstream's address.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.echo.addr()
    }

    /// The echo upstream (what reached the application).
    pub fn echo(&self) -> &Echo {
        &self.echo
    }

    /// The test PKI.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The Envoy process (admin API, stats, log).
    pub fn envoy(&self) -> &Envoy {
        &self.envoy
    }

    /// The work dir (configs, PKI, `envoy.log`, `access.log`).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The ECDS file Envoy watches.
    pub fn ecds_path(&self) -> &Path {
        &self.ecds_path
    }

    /// The Wasm module in use.
    pub fn wasm(&self) -> &Path {
        &self.wasm
    }

    /// The access log (one JSON line per request, with `response_code_details`).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.work_dir.join("access.log")).unwrap_or_default()
    }

    /// The mTLS client identity of workload `name` from this mesh's PKI.
    pub fn tls(&self, workload: &str) -> Result<TlsIdentity> {
        TlsIdentity::workload(&self.pki, workload)
    }

    /// Replaces the policy the way an ECDS push does: writes a new ECDS file next to the old
    /// one and renames it over it (Envoy watches the path for moves; no `watched_directory`
    /// needed). Waits until Envoy has processed it and says whether it was applied.
    pub fn update_policy(&self, policy_json: &str) -> Result<PolicyUpdate> {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let network = self.tls_echo.is_some();
        let attempts_before = self.ecds_stat("update_attempt")?.unwrap_or(0);
        let success_before = self.ecds_stat("update_success")?.unwrap_or(0);
        let net_attempts_before = if network { self.network_ecds_stat("update_attempt")?.unwrap_or(0) } else { 0 };
        let net_success_before = if network { self.network_ecds_stat("update_success")?.unwrap_or(0) } else { 0 };
        let log_before = self.envoy.log_contents().len();

        if network {
            // The outbound sidecar's network filter gets the same policy (in Istio: a second,
            // NETWORK WasmPlugin with the same pluginConfig).
            let path = self.ecds_path.with_file_name("meshguard-tcp.yaml");
            write_atomically(&path, &render_ecds_network(policy_json, &self.wasm, &version.to_string())?)?;
        }
        write_atomically(
            &self.ecds_path,
            &render_ecds_with_env(policy_json, &self.wasm, &version.to_string(), &self.vm_env)?,
        )?;

        // Both subscriptions must have seen their new file before the verdict means anything.
        let deadline = Instant::now() + UPDATE_TIMEOUT;
        while self.ecds_stat("update_attempt")?.unwrap_or(0) <= attempts_before
            || (network && self.network_ecds_stat("update_attempt")?.unwrap_or(0) <= net_attempts_before)
        {
            if Instant::now() > deadline {
                bail!("Envoy did not pick up the new ECDS file within {UPDATE_TIMEOUT:?}\n{}", self.envoy.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The worker threads get the new filter config by a post from the main thread.
        std::thread::sleep(Duration::from_millis(100));
        let http_ok = self.ecds_stat("update_success")?.unwrap_or(0) > success_before;
        let net_ok = !network || self.network_ecds_stat("update_success")?.unwrap_or(0) > net_success_before;
        if http_ok && net_ok {
            return Ok(PolicyUpdate::Applied);
        }
        // The log is flushed every 100 ms: wait (briefly) for Envoy's verdict line.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let log = self.envoy.log_contents();
            let new = log.get(log_before..).unwrap_or_default();
            if new.contains(REJECTED_LOG_LINE) || Instant::now() > deadline {
                return Ok(PolicyUpdate::Rejected { log: new.to_string() });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One of the ECDS subscription's stats for the meshguard filter
    /// (`extension_config_discovery.http_filter.default.meshguard.<name>`).
    pub fn ecds_stat(&self, name: &str) -> Result<Option<u64>> {
        self.envoy.counter(&format!("extension_config_discovery.http_filter.{ECDS_RESOURCE_NAME}.{name}"))
    }

    /// One of the ECDS subscription's stats for the network filter
    /// (`extension_config_discovery.network_filter.default.meshguard-tcp.<name>`).
    pub fn network_ecds_stat(&self, name: &str) -> Result<Option<u64>> {
        self.envoy.counter(&format!("extension_config_discovery.network_filter.{ECDS_NETWORK_RESOURCE_NAME}.{name}"))
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.envoy.stop();
        self.echo.stop();
        if let Some(tls) = self.tls_echo.as_mut() {
            tls.stop();
        }
        for endpoint in &mut self.mesh_endpoints {
            endpoint.stop();
        }
        if !self.remove_work_dir {
            return;
        }
        // Keep the logs of a failed test (or of any run, with MESHGUARD_KEEP).
        if std::env::var_os("MESHGUARD_KEEP").is_some() || std::thread::panicking() {
            eprintln!("meshguard: kept work dir {}", self.work_dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// Replaces every `{{NAME}}` in `template` by its value, in one pass (a value is never
/// scanned again, so a policy may contain `{{`). An unknown placeholder is an error, except on
/// comment lines (`# ...`), which may mention placeholders.
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut unknown = Vec::new();
    for line in template.split_inclusive('\n') {
        let comment = line.trim_start().starts_with('#');
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let (before, from) = rest.split_at(start);
            out.push_str(before);
            let Some(end) = from.find("}}") else {
                out.push_str(from);
                rest = "";
                break;
            };
            let name = from.get(2..end).unwrap_or_default();
            match vars.iter().find(|(n, _)| *n == name) {
                // A comment names the placeholder; only the configuration gets the value
                // (a policy in a header comment would be a second, unparsed copy).
                Some((_, value)) if !comment => out.push_str(value),
                Some(_) => out.push_str(from.get(..end + 2).unwrap_or_default()),
                None => {
                    if !comment {
                        unknown.push(name.to_string());
                    }
                    out.push_str(from.get(..end + 2).unwrap_or_default());
                }
            }
            rest = from.get(end + 2..).unwrap_or_default();
        }
        out.push_str(rest);
    }
    if !unknown.is_empty() {
        bail!("template placeholders without a value: {unknown:?}");
    }
    Ok(out)
}

/// `bootstrap` (a rendered template, which has no `stats_config` of its own) with
/// [`STATS_TAGS`] appended as its top-level `stats_config`.
/// Add `clusters` (name, address; plain HTTP/1.1, static) at the top of the rendered config's
/// `static_resources.clusters` list.
pub fn with_clusters(config: &str, clusters: &[(String, SocketAddr)]) -> Result<String> {
    if clusters.is_empty() {
        return Ok(config.to_string());
    }
    const AT: &str = "\n  clusters:\n";
    let Some(at) = config.find(AT) else {
        bail!("the Envoy config has no static_resources.clusters list to add clusters to");
    };
    let mut added = String::new();
    for (name, addr) in clusters {
        added.push_str(&format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 2s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: {ip}, port_value: {port} }}\n",
            name = json_str(name),
            ip = json_str(&addr.ip().to_string()),
            port = addr.port()
        ));
    }
    let split = at + AT.len();
    Ok(format!("{}{added}{}", &config[..split], &config[split..]))
}

pub fn with_stats_tags(bootstrap: &str) -> String {
    let mut out = String::with_capacity(bootstrap.len() + STATS_TAGS.len() + 1);
    out.push_str(bootstrap);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(STATS_TAGS);
    out
}

/// The ECDS file for `policy_json` (embedded as one JSON string scalar) and module `wasm`,
/// `version_info: "1"`.
pub fn render_ecds(policy_json: &str, wasm: &Path) -> Result<String> {
    render_ecds_version(policy_json, wasm, "1")
}

/// [`render_ecds`] with this `version_info` (each update of a running mesh gets a new one).
pub fn render_ecds_version(policy_json: &str, wasm: &Path, version: &str) -> Result<String> {
    render_ecds_with_env(policy_json, wasm, version, &[])
}

/// [`render_ecds_version`] with environment variables for the Wasm VM.
pub fn render_ecds_with_env(policy_json: &str, wasm: &Path, version: &str, env: &[(String, String)]) -> Result<String> {
    let key_values: serde_json::Map<String, serde_json::Value> =
        env.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
    let vm_env = if env.is_empty() { serde_json::json!({}) } else { serde_json::json!({ "key_values": key_values }) };
    render(
        ECDS_WASM_TEMPLATE,
        &[
            ("VERSION", json_str(version)),
            ("WASM_PATH", json_path(wasm)),
            ("POLICY_JSON", json_str(policy_json)),
            ("VM_ENV", vm_env.to_string()),
        ],
    )
}

/// The network filter's ECDS file for `policy_json` and module `wasm`.
pub fn render_ecds_network(policy_json: &str, wasm: &Path, version: &str) -> Result<String> {
    render(
        ECDS_WASM_NETWORK_TEMPLATE,
        &[("VERSION", json_str(version)), ("WASM_PATH", json_path(wasm)), ("POLICY_JSON", json_str(policy_json))],
    )
}

/// Writes `contents` to a temp file in `path`'s directory, then renames it over `path`.
pub fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent dir", path.display()))?;
    let name = path.file_name().ok_or_else(|| anyhow!("{} has no file name", path.display()))?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::unique_name("w")));
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} over {}", tmp.display(), path.display()))
}

pub(crate) fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn json_path(p: &Path) -> String {
    json_str(&p.to_string_lossy())
}

fn target_dir() -> PathBuf {
    let root = crate::workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir), // an absolute dir replaces root
        None => root.join("target"),
    }
}

/// The Wasm module the mesh loads: `$MESHGUARD_WASM`, else
/// `<workspace>/target/wasm32-wasip1/release/meshguard.wasm` (honouring `CARGO_TARGET_DIR`).
pub fn wasm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MESHGUARD_WASM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    target_dir().join("wasm32-wasip1").join("release").join("meshguard.wasm")
}

/// Builds meshguard.wasm (`cargo build --release --target wasm32-wasip1 -p meshguard-filter`
/// from the workspace root, with `$CARGO` or `cargo`) and returns its path.
pub fn build_wasm() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = crate::workspace_root();
    let out = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip1", "-p", "meshguard-filter"])
        .current_dir(&root)
        .output()
        .with_context(|| format!("running {cargo:?} build in {}", root.display()))?;
    if !out.status.success() {
        bail!("building meshguard.wasm failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let path = target_dir().join("wasm32-wasip1").join("release").join("meshguard.wasm");
    if !path.is_file() {
        bail!("cargo built, but {} is missing", path.display());
    }
    Ok(path)
}

/// The module to test with, built at most once per process: `$MESHGUARD_WASM` if set, else
/// [`build_wasm`] (cargo makes it a no-op when nothing changed).
pub fn ensure_wasm() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Some(path) = std::env::var_os("MESHGUARD_WASM").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    BUILT.get_or_init(|| build_wasm().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_leftovers() {
        let out = render("a: {{X}}\n# {{DOC}} {{X}}\nb: {{X}}{{X}}", &[("X", "{{X}}1".into())]).expect("render");
        // Comments keep the placeholder's name: a value (a policy) is never copied into one.
        assert_eq!(out, "a: {{X}}1\n# {{DOC}} {{X}}\nb: {{X}}1{{X}}1");
        let err = render("a: {{X}} b: {{Y}}", &[("X", "1".into())]).expect_err("leftover");
        assert!(format!("{err}").contains("\"Y\""), "{err}");
    }

    #[test]
    fn extra_clusters_go_into_the_static_clusters_list() {
        let config = "static_resources:\n  listeners: []\n  clusters:\n  - name: app\n    type: STATIC\n";
        assert_eq!(with_clusters(config, &[]).expect("none"), config);
        let addr: SocketAddr = "127.0.0.1:4711".parse().expect("addr");
        let out = with_clusters(config, &[("outbound|443||idp.mesh.local".to_string(), addr)]).expect("added");
        let doc: serde_json::Value = serde_norway::from_str(&out).expect("still YAML");
        let clusters = doc["static_resources"]["clusters"].as_array().expect("a list");
        assert_eq!(clusters.len(), 2, "{out}");
        assert_eq!(clusters[0]["name"], "outbound|443||idp.mesh.local");
        let socket =
            &clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!((socket["address"].as_str(), socket["port_value"].as_u64()), (Some("127.0.0.1"), Some(4711)));
        assert_eq!(clusters[1]["name"], "app");
        assert!(with_clusters("listeners: []\n", &[("x".to_string(), addr)]).is_err());
    }

    #[test]
    fn ecds_embeds_policy_as_one_string_scalar() {
        let policy = "{\"version\":1,\n \"x\": \"a'b\\\"c: #d {{E}}\"}";
        let out = render_ecds_version(policy, Path::new("/x y/m.wasm"), "7").expect("render");
        assert!(out.contains(&format!("value: {}", json_str(policy))), "{out}");
        assert!(out.contains("filename: \"/x y/m.wasm\""), "{out}");
        assert!(out.contains("failure_policy: FAIL_RELOAD"));
    }
}
