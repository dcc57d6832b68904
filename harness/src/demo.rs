//! `meshguard up` and `meshguard demo`: the local mesh for people.
//!
//! `up` starts the mesh with a policy file and keeps it running until Ctrl-C (SIGINT) or
//! SIGTERM, printing where everything is and then every decision-log line as Envoy writes it.
//! `demo` starts the same mesh with the demo policy, sends a fixed set of requests from the test
//! workloads (some allowed, some denied), prints what happened, the decision-log lines and
//! meshguard's counters, and exits non-zero if any request got a different answer than the
//! demo expects: the demo is also a smoke test of the whole path.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::client::{self, Request, TlsIdentity};
use crate::mesh::{ensure_wasm, Mesh, MeshOptions};
use crate::policy_file::load_policy_and_value;
use crate::Result;

/// The policy `up` and `demo` run with when none is given.
pub fn default_policy_path() -> PathBuf {
    crate::workspace_root().join("envoy-config/policies/demo.yaml")
}

/// Validates the policy file (so a person sees `PATH: message` lines, not Envoy's log) and
/// starts the mesh with it.
pub(crate) fn start(policy: Option<&Path>) -> Result<Mesh> {
    let path = policy.map(Path::to_path_buf).unwrap_or_else(default_policy_path);
    let (_, value) = load_policy_and_value(&path)?;
    let policy_json = value.to_string();
    let wasm = ensure_wasm().context("building meshguard.wasm")?;
    Mesh::start(MeshOptions { wasm: Some(wasm), ..MeshOptions::with_policy(policy_json) })
}

/// For a policy with a `jwt` section: a token from its first provider's issuer, for its first
/// audience, signed RS256 with the harness's fixed test key (kid `rs256-1`, the key
/// `envoy-config/policies/jwt.yaml` trusts), valid for an hour.
pub fn sample_jwt(policy: &serde_json::Value) -> Result<Option<String>> {
    let provider = &policy["jwt"]["providers"][0];
    let (Some(issuer), Some(audience)) = (provider["issuer"].as_str(), provider["audiences"][0].as_str()) else {
        return Ok(None);
    };
    let idp = crate::jwt::TokenIssuer::new(issuer)?;
    let mut claims = idp.claims(audience, "alice", crate::jwt::now_unix_secs(), 3600);
    claims["scope"] = "items:read".into();
    Ok(Some(idp.mint(crate::jwt::JwtAlg::RS256, &claims)?))
}

/// Where everything is, as the one JSON line `up --json` prints.
pub fn describe(mesh: &Mesh) -> serde_json::Value {
    let pki = mesh.pki();
    let workloads: serde_json::Map<String, serde_json::Value> = pki
        .workloads
        .iter()
        .map(|(name, w)| {
            (name.clone(), json!({"spiffeId": w.spiffe_id, "cert": w.cert, "key": w.key, "uriSans": w.uri_sans}))
        })
        .collect();
    json!({
        "listener": mesh.listener_addr().to_string(),
        "admin": mesh.admin_addr().to_string(),
        "upstream": mesh.upstream_addr().to_string(),
        "pki": {"ca": pki.ca_cert, "workloads": workloads},
        "workDir": mesh.work_dir(),
        "envoyLog": mesh.envoy().log_path(),
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub(crate) fn install_stop_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The decision-log lines in a chunk of Envoy's log: the JSON after `meshguard.decision `.
pub fn decision_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines().filter_map(policy::log::decision_json)
}

/// `meshguard up`: run until interrupted, then stop Envoy (by its PID) and the echo.
pub fn up(policy: Option<&Path>, json_out: bool) -> Result<ExitCode> {
    install_stop_handlers();
    let mesh = start(policy)?;
    let mut info = describe(&mesh);
    let path = policy.map(Path::to_path_buf).unwrap_or_else(default_policy_path);
    let sample = sample_jwt(&load_policy_and_value(&path)?.1)?;
    if let Some(token) = &sample {
        info["sampleJwt"] = token.clone().into();
    }
    if json_out {
        crate::outln!("{info}");
    } else {
        let w = |name: &str| mesh.pki().workload(name).map(|w| (w.cert.clone(), w.key.clone()));
        let (cert, key) = w("web")?;
        crate::outln!("meshguard local mesh is up (Ctrl-C stops it)");
        crate::outln!("  listener  {}  (plaintext and mTLS, Istio PERMISSIVE shape)", mesh.listener_addr());
        crate::outln!("  admin     http://{}/stats/prometheus", mesh.admin_addr());
        crate::outln!("  upstream  {}  (echo: answers with what it received)", mesh.upstream_addr());
        crate::outln!("  CA        {}", mesh.pki().ca_cert.display());
        crate::outln!("  workloads {}", mesh.pki().workloads.keys().cloned().collect::<Vec<_>>().join(", "));
        crate::outln!(
            "  try:      curl -sk --cacert {} --cert {} --key {} https://localhost:{}/api/items",
            mesh.pki().ca_cert.display(),
            cert.display(),
            key.display(),
            mesh.listener_addr().port()
        );
        crate::outln!("            curl -s http://{}/api/items   (plaintext: denied)", mesh.listener_addr());
        if let Some(token) = &sample {
            crate::outln!(
                "  jwt:      a sample token (RS256, the harness's test key, sub alice, scope items:read, 1 h):"
            );
            crate::outln!("            {token}");
            crate::outln!(
                "            curl -s -H 'authorization: Bearer {token}' http://{}/api/items",
                mesh.listener_addr()
            );
        }
        crate::outln!("decision log:");
    }
    follow_until_stopped(mesh, json_out)
}

/// Print every new decision-log line until SIGINT/SIGTERM (see [`install_stop_handlers`]),
/// then stop the mesh: `meshguard up`, inbound and outbound. With `json_out` each one is one
/// JSON object on its own line (JSON lines, after the mesh's description line); otherwise
/// indented under `decision log:`.
/// A reader that goes away (`meshguard up --json | head -1`, a test that read what it needed)
/// stops it the same way, instead of a panic on the broken pipe.
pub(crate) fn follow_until_stopped(mesh: Mesh, json_out: bool) -> Result<ExitCode> {
    use std::io::Write;
    let mut seen = 0usize;
    let mut out = std::io::stdout();
    'follow: while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let log = mesh.envoy().log_contents();
        // Only whole lines: Envoy may have flushed half of one.
        let upto = log.get(seen..).and_then(|new| new.rfind('\n')).map_or(seen, |i| seen + i + 1);
        for line in decision_lines(log.get(seen..upto).unwrap_or_default()) {
            let written = if json_out {
                // Re-serialized, so that stdout carries nothing but JSON lines.
                match serde_json::from_str::<serde_json::Value>(line.trim_end()) {
                    Ok(record) => writeln!(out, "{record}"),
                    Err(_) => Ok(()),
                }
            } else {
                writeln!(out, "  {line}")
            };
            if written.and_then(|()| out.flush()).is_err() {
                break 'follow;
            }
        }
        seen = upto;
    }
    if !json_out {
        let _ = writeln!(out, "stopping");
    }
    drop(mesh);
    Ok(ExitCode::SUCCESS)
}

/// One demo request: who sends what, and what the demo policy must answer.
struct Sample {
    caller: &'static str,
    method: &'static str,
    path: &'static str,
    expect_status: u16,
    expect_code: Option<&'static str>,
    why: &'static str,
}

const SAMPLES: &[Sample] = &[
    Sample {
        caller: "web",
        method: "GET",
        path: "/api/items",
        expect_status: 200,
        expect_code: None,
        why: "web may read the API",
    },
    Sample {
        caller: "web",
        method: "POST",
        path: "/api/items",
        expect_status: 403,
        expect_code: Some("peer_identity_principal_not_allowed"),
        why: "only ops may write",
    },
    Sample {
        caller: "admin",
        method: "POST",
        path: "/api/items",
        expect_status: 200,
        expect_code: None,
        why: "ops writes the API",
    },
    Sample {
        caller: "admin",
        method: "GET",
        path: "/admin/users",
        expect_status: 200,
        expect_code: None,
        why: "the admin API belongs to ops",
    },
    Sample {
        caller: "batch",
        method: "GET",
        path: "/admin/users",
        expect_status: 403,
        expect_code: Some("peer_identity_principal_denied"),
        why: "explicit deny: batch never touches /admin",
    },
    Sample {
        caller: "batch",
        method: "GET",
        path: "/%61dmin//users",
        expect_status: 403,
        expect_code: Some("peer_identity_principal_denied"),
        why: "another spelling of /admin is still /admin",
    },
    Sample {
        caller: "batch",
        method: "GET",
        path: "/healthz",
        expect_status: 200,
        expect_code: None,
        why: "no rule covers it: default allow for mesh identities",
    },
    Sample {
        caller: "(plaintext)",
        method: "GET",
        path: "/api/items",
        expect_status: 403,
        expect_code: Some("peer_identity_missing"),
        why: "mTLS downgrade through PERMISSIVE mode",
    },
    Sample {
        caller: "foreign",
        method: "GET",
        path: "/api/items",
        expect_status: 403,
        expect_code: Some("peer_identity_trust_domain_not_allowed"),
        why: "another mesh's identity",
    },
    Sample {
        caller: "no-uri-san",
        method: "GET",
        path: "/api/items",
        expect_status: 403,
        expect_code: Some("peer_identity_no_uri_san"),
        why: "a certificate without a SPIFFE ID",
    },
    Sample {
        caller: "two-uri-sans",
        method: "GET",
        path: "/api/items",
        expect_status: 403,
        expect_code: Some("peer_identity_multiple_uri_sans"),
        why: "an SVID has exactly one identity",
    },
];

/// `meshguard demo`: run the sample traffic through the local mesh and show the decisions.
pub fn demo(policy: Option<&Path>) -> Result<ExitCode> {
    let custom = policy.is_some();
    let mesh = start(policy)?;
    crate::outln!(
        "meshguard demo: a real Envoy {} sidecar (inbound, Istio PERMISSIVE shape) with meshguard.wasm",
        crate::envoy::PINNED_VERSION
    );
    crate::outln!(
        "listener {}  admin {}  policy {}\n",
        mesh.listener_addr(),
        mesh.admin_addr(),
        policy.map(Path::to_path_buf).unwrap_or_else(default_policy_path).display()
    );
    crate::outln!("{:<14} {:<6} {:<18} {:>6}  {:<40} why", "caller", "method", "path", "status", "reason code");
    let mut surprises = 0;
    for (i, s) in SAMPLES.iter().enumerate() {
        let tls = match s.caller {
            "(plaintext)" => None,
            name => Some(TlsIdentity::workload(mesh.pki(), name)?),
        };
        let request = Request::new(s.method, s.path).with_header("x-request-id", format!("demo-{i}"));
        let resp = client::send(mesh.listener_addr(), tls.as_ref(), &request)?;
        let code = resp.json().ok().and_then(|v| v["code"].as_str().map(str::to_string));
        let expected = resp.status == s.expect_status && code.as_deref() == s.expect_code;
        if !expected {
            surprises += 1;
        }
        crate::outln!(
            "{:<14} {:<6} {:<18} {:>6}  {:<40} {}{}",
            s.caller,
            s.method,
            s.path,
            resp.status,
            code.as_deref().unwrap_or("-"),
            s.why,
            if expected || custom { "" } else { "   <-- UNEXPECTED" }
        );
    }
    // The log file is flushed every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    crate::outln!("\ndecision log (one JSON line per deny; the demo policy samples every allow too):");
    for line in decision_lines(&mesh.envoy().log_contents()) {
        crate::outln!("  {line}");
    }
    crate::outln!("\nmeshguard counters from Envoy's /stats/prometheus:");
    for line in mesh.envoy().stats_prometheus()?.lines() {
        if line.starts_with("meshguard_") && !line.starts_with("meshguard_config") {
            crate::outln!("  {line}");
        }
    }
    drop(mesh);
    if surprises > 0 && !custom {
        crate::outln!("\n{surprises} request(s) did not get the answer the demo policy gives: something is wrong");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
