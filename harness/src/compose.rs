//! `meshguard render compose`: the files `envoy-config/compose/docker-compose.yaml` mounts.
//!
//! The same sidecar template and ECDS resource the local mesh uses, rendered with the paths
//! and addresses of the container: everything under [`CONTAINER_ROOT`], the listener and the
//! admin API bound on all interfaces at fixed ports (published on the host's loopback by the
//! compose file), the echo application at its fixed address on the compose network. A fresh
//! test PKI is minted into `pki/`, and meshguard.wasm is copied in, so one directory mount
//! is all the container needs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::mesh::{json_str, render, render_ecds, with_stats_tags, write_atomically, SIDECAR_INBOUND_TEMPLATE};
use crate::pki::Pki;
use crate::Result;

/// Where the rendered directory is mounted in the Envoy container.
pub const CONTAINER_ROOT: &str = "/etc/meshguard";
/// The sidecar listener's port (Istio's inbound port), published on the host.
pub const LISTENER_PORT: u16 = 15006;
/// The admin API's port (Istio's), published on the host's loopback.
pub const ADMIN_PORT: u16 = 15000;
/// The echo application's address on the compose network (`networks.mesh`).
pub const ECHO_ADDRESS: &str = "172.28.0.10";
/// The echo application's port.
pub const ECHO_PORT: u16 = 8080;

/// The files written by [`render_into`], relative to its directory.
pub const ENVOY_FILE: &str = "envoy.yaml";
pub const ECDS_FILE: &str = "ecds.yaml";
pub const WASM_FILE: &str = "meshguard.wasm";

/// Renders everything into `out` for a container that mounts it at `root` (normally
/// [`CONTAINER_ROOT`]; a test passes `out` itself to validate the result on this machine).
/// The PKI is minted only if `out/pki` has none yet, so re-rendering to change the policy
/// keeps the certificates people already use.
pub fn render_into(out: &Path, policy_json: &str, wasm: &Path, root: &str) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pki_dir = out.join("pki");
    if !pki_dir.join("ca.pem").is_file() {
        Pki::mint(&pki_dir, "cluster.local")?;
    }
    // File names as Pki::mint writes them.
    let (server_cert, server_key, ca) =
        (pki_dir.join("server.pem"), pki_dir.join("server.key.pem"), pki_dir.join("ca.pem"));
    let inside = |p: &Path| -> Result<String> {
        let rel = p.strip_prefix(out).with_context(|| format!("{} is not under {}", p.display(), out.display()))?;
        Ok(json_str(&format!("{root}/{}", rel.to_string_lossy())))
    };
    let config = render(
        SIDECAR_INBOUND_TEMPLATE,
        &[
            ("NODE_ID", json_str("sidecar~172.28.0.20~api.default~default.svc.cluster.local")),
            ("LISTENER_PORT", LISTENER_PORT.to_string()),
            ("SERVER_CERT", inside(&server_cert)?),
            ("SERVER_KEY", inside(&server_key)?),
            ("CA_CERT", inside(&ca)?),
            ("ECDS_PATH", json_str(&format!("{root}/{ECDS_FILE}"))),
            ("ACCESS_LOG_PATH", json_str("/dev/stdout")),
            ("UPSTREAM_ADDRESS", json_str(ECHO_ADDRESS)),
            ("UPSTREAM_PORT", ECHO_PORT.to_string()),
        ],
    )?;
    // With the stats_tags, as the local mesh: `meshguard_findings_total{check,code,mode}`.
    fs::write(out.join(ENVOY_FILE), with_stats_tags(&bind_all_interfaces(&config)?))?;
    if !wasm.is_file() {
        bail!("no Wasm module at {}: run `make wasm` first", wasm.display());
    }
    fs::copy(wasm, out.join(WASM_FILE)).with_context(|| format!("copying {}", wasm.display()))?;
    let ecds = render_ecds(policy_json, &PathBuf::from(format!("{root}/{WASM_FILE}")))?;
    // A rename, so a running Envoy sees a policy change as an ECDS update.
    write_atomically(&out.join(ECDS_FILE), &ecds)
}

/// In a container, loopback is the container's own: the listener and the admin API must bind
/// on all interfaces (the compose file publishes them on the host's loopback only), and the
/// admin API needs a fixed port.
fn bind_all_interfaces(config: &str) -> Result<String> {
    const LOOPBACK: &str = "address: 127.0.0.1, port_value: ";
    if config.matches(LOOPBACK).count() != 2 {
        bail!("envoy-config/sidecar-inbound.yaml no longer binds exactly the admin API and the listener on 127.0.0.1");
    }
    let config = config.replace(LOOPBACK, "address: 0.0.0.0, port_value: ");
    let admin = "address: 0.0.0.0, port_value: 0 }";
    if config.matches(admin).count() != 1 {
        bail!("envoy-config/sidecar-inbound.yaml no longer has its admin API on port 0");
    }
    Ok(config.replace(admin, &format!("address: 0.0.0.0, port_value: {ADMIN_PORT} }}")))
}
