//! A trapped VM, end to end through a real Envoy 1.40: what `failure_policy` does after a
//! runtime trap, and that meshguard's default recovers and says so.
//!
//! The trap comes from a test-only module (`filter/trap`, `trap.wasm`): it panics (a Wasm
//! `unreachable`, what any bug in meshguard would be) on a request that carries `x-trap`,
//! and stamps every other response with `x-trap-vm`, a number fixed when its VM started, so
//! the client sees a new VM. The mesh runs one worker, so the one worker VM is the one that
//! traps.
//!
//! Measured here (and in envoy-config/README.md):
//! - `FAIL_CLOSED`: the trapping request gets 503 `wasm_fail_stream`, and so does every later
//!   request, for as long as we look; re-pushing the same configuration (a new
//!   `version_info`, the same content) does not bring the VM back; only a changed
//!   configuration does.
//! - `FAIL_RELOAD`: the trapping request gets 503, and the next request is served by a new VM
//!   (Envoy reloads it on the request path, with a backoff between reloads); nothing is ever
//!   let through unfiltered.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use harness::client::{self, Request, Response};
use harness::mesh::{ensure_wasm, render_ecds_version, write_atomically, Mesh, MeshOptions, ECDS_WASM_TEMPLATE};
use harness::Result;
use meshguard_e2e::prom_counter;

const ALLOW_ALL: &str = r#"{"version":1,"mode":"enforce"}"#;

/// trap.wasm: `$MESHGUARD_TRAP_WASM`, else built (a no-op when fresh) next to meshguard.wasm.
fn trap_wasm() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MESHGUARD_TRAP_WASM").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = harness::workspace_root();
    let out = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip1", "-p", "meshguard-trap-filter"])
        .current_dir(&root)
        .output()
        .context("building trap.wasm")?;
    if !out.status.success() {
        bail!("building trap.wasm failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let path = target.join("wasm32-wasip1").join("release").join("trap.wasm");
    if !path.is_file() {
        bail!("cargo built, but {} is missing", path.display());
    }
    Ok(path)
}

/// The `failure_policy` line of the shipped ECDS template.
fn template_failure_policy() -> Option<&'static str> {
    ECDS_WASM_TEMPLATE.lines().find_map(|l| l.trim().strip_prefix("failure_policy:")).map(str::trim)
}

/// Pushes the module's ECDS config again, with `failure_policy` (a changed configuration:
/// Envoy builds new VMs), and waits until Envoy applied it.
fn push(mesh: &Mesh, failure_policy: &str, version: &str, policy: &str) -> Result<()> {
    let rendered = render_ecds_version(policy, mesh.wasm(), version)?;
    let ecds: String = rendered
        .lines()
        .map(|l| match l.find("failure_policy:") {
            Some(i) if !l.trim_start().starts_with('#') => format!("{}failure_policy: {failure_policy}\n", &l[..i]),
            _ => format!("{l}\n"),
        })
        .collect();
    if !ecds.contains(&format!("failure_policy: {failure_policy}")) {
        bail!("the ECDS template has no failure_policy line:\n{rendered}");
    }
    let before = mesh.ecds_stat("update_attempt")?.unwrap_or(0);
    write_atomically(mesh.ecds_path(), &ecds)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh.ecds_stat("update_attempt")?.unwrap_or(0) <= before {
        if Instant::now() > deadline {
            bail!("Envoy did not pick up ECDS version {version}\n{}", mesh.envoy().log_tail(20));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The worker gets the new filter config by a post from the main thread.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn get(mesh: &Mesh) -> Result<Response> {
    client::send(mesh.listener_addr(), None, &Request::get("/ok"))
}

fn trap(mesh: &Mesh) -> Result<Response> {
    client::send(mesh.listener_addr(), None, &Request::get("/trap").with_header("x-trap", "1"))
}

/// What happened after one trap: the trapping request's status, then the first time a
/// request was served again (if ever within `watch`), and how many were refused meanwhile.
#[derive(Debug)]
struct AfterTrap {
    trap_status: u16,
    recovered_after: Option<Duration>,
    refused: usize,
    served_by: Option<String>,
    upstream_saw_trap: bool,
}

fn trap_and_watch(mesh: &Mesh, watch: Duration) -> Result<AfterTrap> {
    mesh.echo().clear_received();
    let trapped = trap(mesh)?;
    let start = Instant::now();
    let mut refused = 0;
    let mut recovered_after = None;
    let mut served_by = None;
    while start.elapsed() < watch {
        let r = get(mesh)?;
        match r.status {
            200 => {
                recovered_after = Some(start.elapsed());
                served_by = r.header("x-trap-vm").map(str::to_string);
                break;
            }
            503 => refused += 1,
            other => bail!("unexpected status {other} after a trap: {}", r.text()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let upstream_saw_trap = mesh.echo().received().iter().any(|r| r.header("x-trap").is_some());
    Ok(AfterTrap { trap_status: trapped.status, recovered_after, refused, served_by, upstream_saw_trap })
}

fn start_trap_mesh() -> Result<Mesh> {
    Mesh::start(MeshOptions { wasm: Some(trap_wasm()?), ..MeshOptions::with_policy(ALLOW_ALL) })
}

fn wasm_fail_streams(mesh: &Mesh) -> usize {
    mesh.access_log().lines().filter(|l| l.contains("wasm_fail_stream")).count()
}

/// The shipped default is FAIL_RELOAD, and the templates the mesh runs use it.
#[test]
fn the_shipped_failure_policy_is_fail_reload() {
    assert_eq!(template_failure_policy(), Some("FAIL_RELOAD"));
    let network = include_str!("../../envoy-config/ecds-wasm-network.yaml");
    assert!(network.lines().any(|l| l.trim() == "failure_policy: FAIL_RELOAD"), "{network}");
}

/// FAIL_CLOSED: one trap, and the worker refuses everything until the configuration changes.
#[test]
fn fail_closed_refuses_everything_after_a_trap_until_a_changed_config() -> Result<()> {
    let mesh = start_trap_mesh()?;
    push(&mesh, "FAIL_CLOSED", "10", ALLOW_ALL)?;
    let before = get(&mesh)?;
    assert_eq!(before.status, 200, "{}", before.text());

    let after = trap_and_watch(&mesh, Duration::from_secs(4))?;
    eprintln!("FAIL_CLOSED after a trap: {after:?}");
    assert_eq!(after.trap_status, 503);
    assert!(!after.upstream_saw_trap, "the trapping request reached the upstream");
    assert_eq!(after.recovered_after, None, "FAIL_CLOSED recovered by itself: {after:?}");
    assert!(after.refused >= 10, "{after:?}");

    // The same configuration again (only version_info changes): still refused.
    push(&mesh, "FAIL_CLOSED", "11", ALLOW_ALL)?;
    let r = get(&mesh)?;
    assert_eq!(r.status, 503, "an identical re-push brought the VM back");

    // A changed configuration builds new VMs.
    push(&mesh, "FAIL_CLOSED", "12", r#"{"version":1,"mode":"enforce","denyResponse":{"status":403}}"#)?;
    let r = get(&mesh)?;
    assert_eq!(r.status, 200, "a changed configuration did not recover: {}", r.text());
    assert!(wasm_fail_streams(&mesh) >= 10, "{}", mesh.access_log());
    Ok(())
}

/// FAIL_RELOAD: the trapping request is refused, then a new VM serves; it never lets a request
/// through without the filter, and it survives repeated traps.
#[test]
fn fail_reload_recovers_with_a_new_vm_and_never_fails_open() -> Result<()> {
    let mesh = start_trap_mesh()?;
    push(&mesh, "FAIL_RELOAD", "10", ALLOW_ALL)?;
    let before = get(&mesh)?;
    assert_eq!(before.status, 200, "{}", before.text());
    let vm_before = before.header("x-trap-vm").map(str::to_string);
    assert!(vm_before.is_some(), "the trap module stamps every response");
    let starts_before = prom_counter(&mesh, "trap_vm_starts_total")?;

    let mut vms = vec![vm_before];
    for round in 0..3 {
        let after = trap_and_watch(&mesh, Duration::from_secs(10))?;
        eprintln!("FAIL_RELOAD after trap {round}: {after:?}");
        assert_eq!(after.trap_status, 503, "round {round}");
        assert!(!after.upstream_saw_trap, "round {round}: the trapping request reached the upstream");
        let took = after.recovered_after.ok_or_else(|| anyhow!("round {round}: no recovery in 10 s: {after:?}"))?;
        assert!(took < Duration::from_secs(5), "round {round}: {took:?}");
        assert!(!vms.contains(&after.served_by), "round {round}: served by an old VM {:?}", after.served_by);
        vms.push(after.served_by);
    }
    // Envoy's own count of VMs, and the module's own: each reload is a new VM start.
    std::thread::sleep(Duration::from_millis(200));
    let starts = prom_counter(&mesh, "trap_vm_starts_total")?;
    assert!(starts >= starts_before + 3, "vm starts {starts_before} -> {starts}");
    // Envoy's own record (the plugin is `name: meshguard` in the ECDS config): one
    // vm_reload_success per trap, and every request refused while the reload backed off.
    let stat =
        |name: &str| -> Result<u64> { Ok(mesh.envoy().counter(&format!("wasm.meshguard.{name}"))?.unwrap_or(0)) };
    let reloads = stat("vm_reload_success")?;
    let backoff = stat("vm_reload_backoff")?;
    let failures = stat("vm_reload_failure")?;
    eprintln!("wasm.meshguard.vm_reload_success={reloads} vm_reload_backoff={backoff} vm_reload_failure={failures}");
    assert_eq!((reloads, failures), (3, 0));
    assert!(backoff >= 3, "requests refused during the reload backoff: {backoff}");
    Ok(())
}

/// meshguard itself, under the shipped default: every VM says it started, in the log and in
/// `meshguard_vm_starts_total`, and a changed configuration (new VMs) counts again.
#[test]
fn meshguard_counts_and_logs_each_vm_start() -> Result<()> {
    let mesh = Mesh::start(MeshOptions { wasm: Some(ensure_wasm()?), ..MeshOptions::with_policy(ALLOW_ALL) })?;
    let log = mesh.envoy().wait_for_log("meshguard: vm started root_id=meshguard", Duration::from_secs(5))?;
    assert!(log.contains("meshguard: vm started"), "{log}");
    let starts = prom_counter(&mesh, "meshguard_vm_starts_total")?;
    let accepted = prom_counter(&mesh, "meshguard_config_accepted_total")?;
    eprintln!("meshguard_vm_starts_total = {starts}, meshguard_config_accepted_total = {accepted}");
    assert!(starts >= 2, "main thread and one worker: {starts}");
    assert!(starts <= accepted, "a VM counts once, however many configurations it accepts");
    let r = get(&mesh)?;
    assert_eq!(r.status, 200, "{}", r.text());

    // A rejected policy starts VMs that never count.
    let rejected = mesh.update_policy(r#"{"version":1,"mode":"nope"}"#)?;
    assert!(matches!(rejected, harness::mesh::PolicyUpdate::Rejected { .. }), "{rejected:?}");
    assert_eq!(prom_counter(&mesh, "meshguard_vm_starts_total")?, starts);
    Ok(())
}
