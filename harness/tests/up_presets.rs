//! `meshguard up --policy` with the shipped request-hygiene presets: the mesh comes up with
//! each, refuses what the preset refuses and strips what it strips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::client::{self, Request};
use serde_json::Value;

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGINT first (a clean stop), then by its own PID if it is still there.
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up(policy: &str) -> (Running, SocketAddr) {
    let wasm = harness::mesh::ensure_wasm().unwrap();
    let path = harness::workspace_root().join("envoy-config/policies").join(policy);
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["up", "--json", "--policy"])
            .arg(&path)
            .env("MESHGUARD_WASM", &wasm)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{policy}: {e}: {line:?}"));
    (child, info["listener"].as_str().unwrap().parse().unwrap())
}

#[test]
fn up_serves_both_hygiene_presets() {
    for (policy, status) in [("sidecar.yaml", 403), ("gateway-strict.yaml", 400)] {
        let (_mesh, listener) = up(policy);
        let resp = client::send(listener, None, &Request::get("/api%2Fadmin")).unwrap();
        assert_eq!(resp.status, status, "{policy}: {resp:?}");
        assert_eq!(resp.json().unwrap()["code"], "hygiene_path_encoded_slash", "{policy}");
        let resp =
            client::send(listener, None, &Request::get("/api/items").with_header("x-real-ip", "10.0.0.1")).unwrap();
        assert_eq!(resp.status, 200, "{policy}: {resp:?}");
        let echoed = resp.json().unwrap();
        let headers = echoed["headers"].as_array().unwrap();
        assert!(!headers.iter().any(|h| h[0] == "x-real-ip"), "{policy}: the app got x-real-ip: {echoed}");
    }
}
