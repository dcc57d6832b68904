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
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
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
    let denied = client::send(listener, None, &Request::get("/api/items")).unwrap();
    assert_eq!((denied.status, denied.json().unwrap()["code"].as_str()), (403, Some("peer_identity_missing")));

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
