//! Signed policies and the OCI image, end to end through a real Envoy 1.40 (the sidecar's
//! inbound side, meshguard delivered by ECDS).
//!
//! Threat: a compromised control plane hands the proxy a looser policy. With trust roots in the
//! module (patched in by `meshguard package --trust-key`, the module taken out of the OCI
//! layout it wrote) or in the VM's environment (`vm_config.environment_variables`), only a
//! policy signed by a trusted key, with a serial not lower than the last accepted, is
//! accepted; every forgery is refused at startup (fail closed: 500, nothing reaches the app)
//! and as a live update (the last good policy keeps enforcing), with its reason in Envoy's
//! log and (live) in `meshguard_config_rejected_reason_<reason>_total`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use harness::client;
use harness::mesh::{ensure_wasm, Mesh, MeshOptions, PolicyUpdate};
use harness::package;
use harness::signing::SigningKey;
use harness::Result;
use meshguard_e2e::prom_counter;
use policy::envelope::{self, Envelope, TrustRoots};
use serde_json::{json, Value};

const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The policy in force in the good case: plaintext callers are refused (403).
fn strict() -> Value {
    json!({"version": 1, "mode": "enforce", "identity": {"requirePeerIdentity": true, "trustDomains": ["cluster.local"], "defaultAction": "allow"}})
}

/// The looser policy a compromised control plane would like to push: everything allowed.
fn loose() -> Value {
    json!({"version": 1, "mode": "enforce"})
}

fn trusted() -> SigningKey {
    SigningKey::from_seed([11; 32])
}

fn attacker() -> SigningKey {
    SigningKey::from_seed([66; 32])
}

fn signed(key: &SigningKey, policy: &Value, serial: u64) -> String {
    key.sign_payload(envelope::payload_with_serial(policy, serial).unwrap()).to_json()
}

/// A validly signed strict policy whose payload was then swapped for the loose one.
fn tampered(key: &SigningKey, serial: u64) -> String {
    let mut env = Envelope::from_json(signed(key, &strict(), serial).as_bytes()).unwrap();
    env.payload = envelope::payload_with_serial(&loose(), serial).unwrap();
    env.to_json()
}

fn roots(key: &SigningKey) -> TrustRoots {
    let mut r = TrustRoots::default();
    r.push(key.public());
    r
}

fn work_dir(name: &str) -> PathBuf {
    harness::scratch_dir(name).unwrap()
}

/// `meshguard package --trust-key` into `dir`, then the module as a registry would serve it:
/// the Wasm layer blob of the layout's manifest.
fn packaged_module(dir: &Path, key: &SigningKey) -> Result<PathBuf> {
    let pub_path = dir.join("trusted.pub");
    std::fs::write(&pub_path, key.public_text())?;
    let layout = dir.join("oci");
    let p = package::package(&ensure_wasm()?, &[pub_path], &layout, "0.1.0")?;
    let manifest: Value = serde_json::from_slice(&blob(&layout, &p.wasm_manifest_digest)?)?;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let module = blob(&layout, layer)?;
    assert_eq!(package::embedded_keys(&module)?, roots(key));
    let path = dir.join("meshguard-trusted.wasm");
    std::fs::write(&path, module)?;
    Ok(path)
}

fn blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    Ok(std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:")))?)
}

fn start(wasm: &Path, config: &str, vm_env: &[(&str, String)], allow_rejected: bool) -> Result<Mesh> {
    Mesh::start(MeshOptions {
        wasm: Some(wasm.to_path_buf()),
        allow_rejected_policy: allow_rejected,
        vm_env: vm_env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        ..MeshOptions::with_policy(config)
    })
}

/// A plaintext GET: 403 under the strict policy, 200 under the loose one.
fn plaintext_status(mesh: &Mesh) -> Result<u16> {
    Ok(client::get(mesh.listener_addr(), None, "/api/items")?.status)
}

fn reason_counter(mesh: &Mesh, reason: &str) -> Result<u64> {
    prom_counter(mesh, &format!("meshguard_config_rejected_reason_{reason}_total"))
}

/// Pushes `config`, which must be refused for `reason`; the strict policy keeps enforcing.
fn refused_live(mesh: &Mesh, config: &str, reason: &str) -> Result<()> {
    let before = reason_counter(mesh, reason)?;
    match mesh.update_policy(config)? {
        PolicyUpdate::Applied => panic!("a {reason} policy was applied"),
        PolicyUpdate::Rejected { log } => {
            assert!(log.contains(&format!("meshguard: policy rejected: reason={reason}: ")), "{reason}:\n{log}");
        }
    }
    assert!(reason_counter(mesh, reason)? > before, "counter for {reason}");
    assert_eq!(plaintext_status(mesh)?, 403, "after a refused {reason} update the last good policy enforces");
    Ok(())
}

/// The whole live sequence against a mesh started with the strict policy, signed, serial 5.
fn live_updates(mesh: &Mesh) -> Result<()> {
    let accepted = mesh.envoy().wait_for_log("meshguard: policy accepted", LOG_WAIT)?;
    assert!(accepted.contains(" signed=true serial=5 keyid="), "{accepted}");
    assert_eq!(plaintext_status(mesh)?, 403);
    let key = trusted();
    refused_live(mesh, &loose().to_string(), "unsigned")?;
    refused_live(mesh, &signed(&attacker(), &loose(), 9), "unknown_key")?;
    // The attacker's key claiming the trusted keyid.
    let mut forged = Envelope::from_json(signed(&attacker(), &loose(), 9).as_bytes()).unwrap();
    forged.signatures[0].keyid = key.keyid();
    refused_live(mesh, &forged.to_json(), "bad_signature")?;
    refused_live(mesh, &tampered(&key, 9), "bad_signature")?;
    // A genuinely signed, older, looser policy: replay.
    refused_live(mesh, &signed(&key, &loose(), 4), "rollback")?;
    let rejected = prom_counter(mesh, "meshguard_config_rejected_total")?;
    assert!(rejected >= 5, "meshguard_config_rejected_total {rejected}");
    // The same serial again is fine (Envoy re-sends configurations), and a newer signed one
    // takes effect: the key works for live updates.
    assert_eq!(mesh.update_policy(&signed(&key, &strict(), 5))?, PolicyUpdate::Applied);
    assert_eq!(mesh.update_policy(&signed(&key, &loose(), 6))?, PolicyUpdate::Applied);
    mesh.echo().clear_received();
    assert_eq!(plaintext_status(mesh)?, 200);
    assert_eq!(mesh.echo().request_count(), 1, "the newer signed policy lets the request through");
    // And now serial 5 is the rollback.
    let before = reason_counter(mesh, "rollback")?;
    assert!(matches!(mesh.update_policy(&signed(&key, &strict(), 5))?, PolicyUpdate::Rejected { .. }));
    assert!(reason_counter(mesh, "rollback")? > before);
    Ok(())
}

#[test]
fn a_module_packaged_with_a_trust_key_takes_only_fresh_signed_policies() -> Result<()> {
    let dir = work_dir("signed-embedded");
    let wasm = packaged_module(&dir, &trusted())?;
    let mesh = start(&wasm, &signed(&trusted(), &strict(), 5), &[], false)?;
    live_updates(&mesh)?;
    drop(mesh);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_trust_key_from_the_vm_environment_works_the_same() -> Result<()> {
    let env = [(
        "MESHGUARD_TRUST_KEYS",
        format!("{},{}", SigningKey::from_seed([12; 32]).public_text(), trusted().public_text()),
    )];
    let mesh = start(&ensure_wasm()?, &signed(&trusted(), &strict(), 5), &env, false)?;
    let accepted = mesh.envoy().wait_for_log("meshguard: policy accepted", LOG_WAIT)?;
    assert!(accepted.contains(&format!("keyid={} trust_keys=2 verify_us=", trusted().keyid())), "{accepted}");
    live_updates(&mesh)
}

/// At startup there is no last good policy: a refused one leaves the listener answering 500
/// and nothing reaches the application.
fn refused_at_startup(wasm: &Path, config: &str, vm_env: &[(&str, String)], reason: &str) -> Result<()> {
    let mesh = start(wasm, config, vm_env, true)?;
    let resp = client::get(mesh.listener_addr(), None, "/api/items")?;
    assert_eq!(resp.status, 500, "{reason}: {}", resp.text());
    assert_eq!(mesh.echo().request_count(), 0, "{reason}: nothing may reach the application");
    mesh.envoy().wait_for_log(&format!("meshguard: policy rejected: reason={reason}: "), LOG_WAIT)?;
    let log = mesh.envoy().log_contents();
    // Envoy drops the counters of a VM that failed its first configuration with the VM, so
    // at startup the refusal shows in the log and in Envoy's own ECDS counter.
    assert!(mesh.ecds_stat("update_rejected")?.unwrap_or(0) >= 1, "{reason}: ECDS update_rejected");
    assert!(!log.contains("meshguard: policy accepted"), "{reason}");
    Ok(())
}

#[test]
fn forgeries_fail_closed_at_startup() -> Result<()> {
    let dir = work_dir("signed-startup");
    let wasm = packaged_module(&dir, &trusted())?;
    refused_at_startup(&wasm, &loose().to_string(), &[], "unsigned")?;
    refused_at_startup(&wasm, &signed(&attacker(), &loose(), 9), &[], "unknown_key")?;
    refused_at_startup(&wasm, &tampered(&trusted(), 9), &[], "bad_signature")?;
    // A trust-key variable that does not parse must not turn the check off.
    let bad_env = [("MESHGUARD_TRUST_KEYS", "not-a-key".to_string())];
    refused_at_startup(&ensure_wasm()?, &signed(&trusted(), &strict(), 5), &bad_env, "trust_roots_invalid")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn without_trust_roots_the_module_behaves_as_before() -> Result<()> {
    // The unpatched module, no environment: an unsigned policy is accepted, and says so.
    let mesh = start(&ensure_wasm()?, &loose().to_string(), &[], false)?;
    let accepted = mesh.envoy().wait_for_log("meshguard: policy accepted", LOG_WAIT)?;
    assert!(accepted.ends_with(" signed=false"), "{accepted}");
    assert_eq!(plaintext_status(&mesh)?, 200);
    assert_eq!(mesh.update_policy(&strict().to_string())?, PolicyUpdate::Applied);
    assert_eq!(plaintext_status(&mesh)?, 403);
    Ok(())
}
