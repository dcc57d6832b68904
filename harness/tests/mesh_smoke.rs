//! The local mesh's plumbing, proven with real traffic through a real Envoy: plaintext and
//! mTLS reach the echo upstream through meshguard.wasm (delivered by ECDS), Envoy's own
//! handshake refuses a certificate from a CA it does not trust, and a policy update is applied
//! (or rejected, leaving the previous one in force) the way an ECDS push is.
//!
//! Needs `scripts/setup.sh` (Envoy) once; builds meshguard.wasm unless `MESHGUARD_WASM` is set.

use std::time::Duration;

use harness::client::{self, Request, TlsIdentity};
use harness::mesh::{ensure_wasm, Mesh, MeshOptions, PolicyUpdate, REJECTED_LOG_LINE};
use harness::Result;

fn start_mesh() -> Result<Mesh> {
    let wasm = ensure_wasm()?;
    Mesh::start(MeshOptions { wasm: Some(wasm), ..MeshOptions::with_policy(r#"{"version":1}"#) })
}

/// The sum of every listener stat ending in `suffix` (listener stats are named after the
/// listener's configured address, `listener.127.0.0.1_0.`).
fn listener_stat(mesh: &Mesh, suffix: &str) -> Result<u64> {
    Ok(mesh
        .envoy()
        .stats()?
        .into_iter()
        .filter(|(name, _)| name.starts_with("listener.127.0.0.1_") && name.ends_with(suffix))
        .map(|(_, v)| v)
        .sum())
}

#[test]
fn plaintext_http1_reaches_the_echo() -> Result<()> {
    let mesh = start_mesh()?;
    let resp = client::get(mesh.listener_addr(), None, "/smoke/plain?x=1")?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", mesh.access_log());
    let echo = resp.json()?;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/smoke/plain?x=1");
    assert_eq!(echo["bodyLength"], 0);
    assert_eq!(mesh.echo().request_count(), 1);

    // A body, sent as exact bytes, arrives whole.
    let raw = Request::new("POST", "/smoke/body")
        .with_header("content-type", "text/plain")
        .with_body("hello mesh")
        .to_http1();
    let resp = client::send_raw(mesh.listener_addr(), None, &raw)?;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()?["bodyLength"], 10);

    // Pipelined requests on one connection: every response comes back, in order.
    let raw = b"GET /p1 HTTP/1.1\r\nhost: a\r\n\r\nGET /p2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let exchange = client::send_raw_all(mesh.listener_addr(), None, raw, Duration::from_secs(5))?;
    let paths: Vec<String> = exchange
        .responses
        .iter()
        .map(|r| Ok(r.json()?["path"].as_str().unwrap_or_default().to_string()))
        .collect::<Result<_>>()?;
    assert_eq!(paths, ["/p1", "/p2"]);
    assert!(exchange.closed_by_peer);
    Ok(())
}

#[test]
fn mtls_with_a_workload_svid_reaches_the_echo() -> Result<()> {
    let mesh = start_mesh()?;
    let web = TlsIdentity::workload(mesh.pki(), "web")?;
    let resp = client::get(mesh.listener_addr(), Some(&web), "/smoke/mtls")?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", mesh.access_log());
    let echo = resp.json()?;
    assert_eq!(echo["path"], "/smoke/mtls");
    // Envoy forwarded the verified peer identity (XFCC, APPEND_FORWARD, URI set).
    let received = mesh.echo().received();
    let xfcc = received.last().and_then(|r| r.header("x-forwarded-client-cert")).unwrap_or_default().to_string();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/web/sa/web"), "xfcc: {xfcc:?}");
    assert!(listener_stat(&mesh, ".ssl.handshake")? >= 1);
    Ok(())
}

#[test]
fn envoy_refuses_a_certificate_from_an_untrusted_ca_and_no_certificate() -> Result<()> {
    let mesh = start_mesh()?;
    let untrusted = TlsIdentity::workload(mesh.pki(), "untrusted")?;
    let result = client::get(mesh.listener_addr(), Some(&untrusted), "/smoke/untrusted");
    assert!(result.is_err(), "expected a refused handshake, got {result:?}");

    let anonymous = TlsIdentity::anonymous(mesh.pki())?;
    let result = client::get(mesh.listener_addr(), Some(&anonymous), "/smoke/anonymous");
    assert!(result.is_err(), "expected a refused handshake, got {result:?}");

    assert_eq!(mesh.echo().request_count(), 0, "nothing may reach the application");
    assert!(listener_stat(&mesh, ".ssl.fail_verify_error")? >= 1);
    assert!(listener_stat(&mesh, ".ssl.fail_verify_no_cert")? >= 1);
    Ok(())
}

#[test]
fn policy_updates_apply_and_a_rejected_one_keeps_the_previous() -> Result<()> {
    let mesh = start_mesh()?;
    assert_eq!(mesh.update_policy(r#"{"version":1,"identity":{"requirePeerIdentity":false}}"#)?, PolicyUpdate::Applied);
    let update = mesh.update_policy("this is not a policy")?;
    let PolicyUpdate::Rejected { log } = update else {
        panic!("expected a rejection, got {update:?}");
    };
    assert!(log.contains(REJECTED_LOG_LINE), "{log}");
    assert_eq!(mesh.ecds_stat("update_rejected")?, Some(1));
    let resp = client::get(mesh.listener_addr(), None, "/smoke/after-rejected-update")?;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", mesh.envoy().log_tail(20));
    Ok(())
}

#[test]
fn the_rendered_config_passes_envoy_validate() -> Result<()> {
    let mesh = start_mesh()?;
    harness::envoy::validate(mesh.envoy().config_path())?;
    let version = harness::envoy::version()?;
    assert!(version.starts_with("1.40."), "Envoy {version}: the project pins 1.40");
    Ok(())
}
