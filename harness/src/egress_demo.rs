//! `meshguard up --outbound`: the local mesh as an outbound sidecar, to try the egress
//! allowlist by hand.
//!
//! It starts [`MeshKind::SidecarOutbound`] (`envoy-config/sidecar-outbound.yaml`: HTTP egress
//! by Host, Istio's PassthroughCluster and BlackHoleCluster, TLS passthrough with meshguard as
//! a network filter; in-mesh services whose upstreams are pinned, one of them poisoned) with
//! `envoy-config/policies/egress.yaml` unless another policy is given,
//! prints how to send traffic through it, then every decision-log line until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::mesh::{ensure_wasm, Mesh, MeshKind, MeshOptions};
use crate::policy_file::load_policy_and_value;
use crate::Result;

/// The policy `up --outbound` runs with when none is given.
pub fn default_policy_path() -> PathBuf {
    crate::workspace_root().join("envoy-config/policies/egress.yaml")
}

/// Validates the policy file and starts the outbound sidecar with it.
pub fn start(policy: Option<&Path>) -> Result<Mesh> {
    let path = policy.map(Path::to_path_buf).unwrap_or_else(default_policy_path);
    let (_, value) = load_policy_and_value(&path)?;
    let policy_json = value.to_string();
    let wasm = ensure_wasm().context("building meshguard.wasm")?;
    Mesh::start(MeshOptions {
        wasm: Some(wasm),
        kind: MeshKind::SidecarOutbound,
        ..MeshOptions::with_policy(policy_json)
    })
}

/// Where everything is, as the one JSON line `up --outbound --json` prints.
pub fn describe(mesh: &Mesh) -> serde_json::Value {
    json!({
        "httpListener": mesh.listener_addr().to_string(),
        "tlsListener": mesh.tls_listener_addr().map(|a| a.to_string()),
        "admin": mesh.admin_addr().to_string(),
        "internet": mesh.upstream_addr().to_string(),
        "tlsInternet": mesh.tls_echo().map(|t| t.addr().to_string()),
        "internetCa": mesh.tls_echo().map(|t| t.ca_cert().to_path_buf()),
        "workload": "spiffe://cluster.local/ns/web/sa/web",
        "pinnedEndpoints": {
            "payments": mesh.mesh_endpoint("payments").map(|e| e.addr().to_string()),
            "impostor": mesh.mesh_endpoint("impostor").map(|e| e.addr().to_string()),
        },
        "workDir": mesh.work_dir(),
        "envoyLog": mesh.envoy().log_path(),
    })
}

/// `meshguard up --outbound`: run until interrupted.
pub fn up(policy: Option<&Path>, json_out: bool) -> Result<ExitCode> {
    crate::demo::install_stop_handlers();
    let mesh = start(policy)?;
    if json_out {
        crate::outln!("{}", describe(&mesh));
    } else {
        let http = mesh.listener_addr();
        crate::outln!("meshguard local mesh is up as an OUTBOUND sidecar (Ctrl-C stops it)");
        crate::outln!("  workload    spiffe://cluster.local/ns/web/sa/web (Istio node metadata NAMESPACE=web, SERVICE_ACCOUNT=web)");
        crate::outln!("  policy      {}", policy.map(Path::to_path_buf).unwrap_or_else(default_policy_path).display());
        crate::outln!("  HTTP egress {http}  (listener 0.0.0.0_80: routes by Host, ALLOW_ANY to PassthroughCluster)");
        if let (Some(tls), Some(internet)) = (mesh.tls_listener_addr(), mesh.tls_echo()) {
            crate::outln!("  TLS egress  {tls}  (listener 0.0.0.0_443: TLS passthrough, meshguard as a network filter on the SNI)");
            crate::outln!(
                "  internet    {} (HTTP echo), {} (TLS echo, CA {})",
                mesh.upstream_addr(),
                internet.addr(),
                internet.ca_cert().display()
            );
        }
        crate::outln!("  admin       http://{}/stats/prometheus", mesh.admin_addr());
        crate::outln!("  try:");
        crate::outln!(
            "    curl -s -H 'Host: api.example.com' http://{http}/v1/items                 # allowed (rule web-api)"
        );
        crate::outln!(
            "    curl -s -H 'Host: img.cdn.example.com' http://{http}/assets/logo.png      # allowed (cdn-assets)"
        );
        crate::outln!(
            "    curl -s -H 'Host: img.cdn.example.com' http://{http}/admin                # egress_path_not_allowed"
        );
        crate::outln!(
            "    curl -s -H 'Host: evil.example.org' http://{http}/                        # egress_host_not_allowed"
        );
        crate::outln!(
            "    curl -s -H 'Host: 169.254.169.254' http://{http}/latest/meta-data/        # egress_metadata_address"
        );
        crate::outln!(
            "    curl -s -H 'Host: 0x7f.1' http://{http}/                                  # egress_localhost"
        );
        crate::outln!("    curl -s -H 'Host: upload.example.com' -X POST http://{http}/incoming/x    # would_deny (uploads-trial, dry-run)");
        crate::outln!(
            "    curl -s -H 'Host: payments.prod.svc.cluster.local:8080' http://{http}/v1/charge  # allowed: the pinned SPIFFE ID"
        );
        crate::outln!(
            "    curl -s -H 'Host: ledger.prod.svc.cluster.local:8080' http://{http}/v1/entries   # 502 upstream_identity_mismatch (impostor)"
        );
        crate::outln!(
            "    curl -s -H 'Host: billing.prod.svc.cluster.local:8080' http://{http}/v1/invoice  # 502 upstream_not_mtls (plaintext)"
        );
        for line in credential_lines(&http.to_string()) {
            crate::outln!("{line}");
        }
        if let (Some(tls), Some(internet)) = (mesh.tls_listener_addr(), mesh.tls_echo()) {
            let ca = internet.ca_cert().display();
            crate::outln!("    openssl s_client -quiet -connect {tls} -servername api.example.com -CAfile {ca}   # echoes what you type");
            crate::outln!("    openssl s_client -quiet -connect {tls} -servername evil.example.org -CAfile {ca}  # closed: egress_sni_not_allowed");
        }
        crate::outln!("decision log:");
    }
    crate::demo::follow_until_stopped(mesh, json_out)
}

/// The curl lines that show credential scoping (`egress.yaml`: `credentials.default: deny`).
pub fn credential_lines(http: &str) -> Vec<String> {
    vec![
        "  credentials (egress.credentials.default: deny; the echo answers with the headers it received):".to_string(),
        format!("    curl -s -H 'Host: api.example.com' -H 'x-partner-key: k-123' http://{http}/v1/items            # allowed: the key arrives (web-api: credentials allow)"),
        format!("    curl -s -H 'Host: telemetry.example.net' -H 'Authorization: Bearer t0k' -X POST http://{http}/v1/traces   # egress_credentials_not_allowed"),
        format!("    curl -s -H 'Host: telemetry.example.net' -X POST 'http://{http}/v1/traces?access_token=t0k'    # egress_credentials_in_query"),
        format!("    curl -s -H 'Host: img.cdn.example.com' -H 'Cookie: sid=1' http://{http}/assets/logo.png       # 200, no cookie arrives: egress_credentials_stripped"),
    ]
}
