//! `meshguard up --json` as a person (or a script) runs it: one JSON line describing the mesh,
//! a mesh that answers with the demo policy, and on Ctrl-C (SIGINT) a clean exit that leaves
//! no Envoy and no listener behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::client::{self, Request, TlsIdentity};
use serde_json::Value;

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // Stopped by its own PID even when an assertion failed.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_json_serves_the_demo_policy_and_stops_everything_on_sigint() {
    let wasm = harness::mesh::ensure_wasm().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["up", "--json"])
            .env("MESHGUARD_WASM", &wasm)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // stdout, line by line, read on a thread so that the test can wait with a deadline.
    let (lines, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the ready line");
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let listener: SocketAddr = info["listener"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = info["admin"].as_str().unwrap().parse().unwrap();
    let web = &info["pki"]["workloads"]["web"];
    assert_eq!(web["spiffeId"], "spiffe://cluster.local/ns/web/sa/web");

    // The advertised certificates work, and the demo policy is in force.
    let tls = TlsIdentity::new(
        info["pki"]["ca"].as_str().unwrap().as_ref(),
        Some((web["cert"].as_str().unwrap().as_ref(), web["key"].as_str().unwrap().as_ref())),
        "localhost",
    )
    .unwrap();
    assert_eq!(client::send(listener, Some(&tls), &Request::get("/api/items")).unwrap().status, 200);
    let denied =
        client::send(listener, None, &Request::get("/api/items").with_header("x-request-id", "up-json-1")).unwrap();
    assert_eq!((denied.status, denied.json().unwrap()["code"].as_str()), (403, Some("peer_identity_missing")));

    // The decision log follows the ready line, as JSON lines: the deny is one JSON object.
    let deadline = Instant::now() + Duration::from_secs(10);
    let decision = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("a decision-log line on stdout within 10 s");
        let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line: {e}: {line:?}"));
        if record["requestId"] == "up-json-1" {
            break record;
        }
    };
    assert_eq!(decision["outcome"], "deny", "{decision}");
    assert_eq!(decision["code"], "peer_identity_missing", "{decision}");
    assert_eq!(decision["request"]["path"], "/api/items", "{decision}");

    // SIGINT: exit 0, and Envoy's ports are closed.
    let pid = child.0.id() as i32;
    // SAFETY: kill(2) on our own child's PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meshguard up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for addr in [listener, admin] {
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "{addr} still accepts");
    }
}

/// `up --observe --json`: the same mesh plus a real Prometheus that scrapes it with meshguard's
/// alerts loaded; on SIGINT both stop.
#[test]
fn up_observe_starts_prometheus_on_the_mesh_and_stops_it_on_sigint() {
    let wasm = harness::mesh::ensure_wasm().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["up", "--observe", "--json"])
            .env("MESHGUARD_WASM", &wasm)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Keep reading stdout after the ready line: `up --json` goes on printing decision-log lines,
    // and a closed pipe would (rightly) end it.
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let listener: SocketAddr = info["listener"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = info["admin"].as_str().unwrap().parse().unwrap();
    let prom: SocketAddr = info["prometheus"].as_str().unwrap().trim_start_matches("http://").parse().unwrap();
    let prom_pid = info["prometheusPid"].as_u64().unwrap() as i32;

    // Denied traffic shows up in Prometheus as the labelled family.
    for _ in 0..3 {
        assert_eq!(client::send(listener, None, &Request::get("/api/items")).unwrap().status, 403);
    }
    let query = format!(
        "/api/v1/query?query={}",
        harness::prometheus::percent_encode("meshguard_findings_total{code=\"peer_identity_missing\"}")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let raw = format!("GET {query} HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n");
        let doc: Value = client::send_raw(prom, None, raw.as_bytes()).unwrap().json().unwrap();
        let result = doc["data"]["result"].as_array().cloned().unwrap_or_default();
        if let Some(s) = result.first() {
            if s["value"][1] == "3" {
                assert_eq!(s["metric"]["check"], "peer_identity");
                assert_eq!(s["metric"]["mode"], "enforced");
                assert_eq!(s["metric"]["proxy"], "local-mesh");
                break;
            }
        }
        assert!(Instant::now() < deadline, "Prometheus never showed the 3 findings: {doc}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rules =
        client::send_raw(prom, None, b"GET /api/v1/rules HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n").unwrap();
    assert!(rules.text().contains("MeshguardNotInspecting"), "{}", rules.text());

    // SIGINT: exit 0; Envoy's and Prometheus's ports are closed, Prometheus's process is gone.
    let pid = child.0.id() as i32;
    // SAFETY: kill(2) on our own child's PID.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meshguard up --observe did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for addr in [listener, admin, prom] {
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "{addr} still accepts");
    }
    assert!(!std::path::Path::new(&format!("/proc/{prom_pid}")).exists(), "prometheus {prom_pid} still runs");
}
