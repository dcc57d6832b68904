//! `meshguard up --policy envoy-config/policies/jwt.yaml`: the mesh runs the JWT example, and
//! the sample token it prints is accepted by it (200, the application gets the verified
//! `sub`), while a request without one is refused with 401 `jwt_missing`. SIGINT stops it all.
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
        // SIGINT first, so that `up` stops its Envoy by its PID; then the child itself.
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_prints_a_sample_token_the_jwt_example_accepts() {
    let wasm = harness::mesh::ensure_wasm().unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_meshguard"))
            .args(["up", "--json", "--policy", "envoy-config/policies/jwt.yaml"])
            .current_dir(harness::workspace_root())
            .env("MESHGUARD_WASM", &wasm)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let listener: SocketAddr = info["listener"].as_str().unwrap().parse().unwrap();
    let token = info["sampleJwt"].as_str().unwrap_or_else(|| panic!("no sampleJwt: {info}"));

    let ok = client::send(
        listener,
        None,
        &Request::get("/api/items").with_header("authorization", format!("Bearer {token}")),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{ok:?}");
    let echo = ok.json().unwrap();
    let headers = echo["headers"].as_array().cloned().unwrap_or_default();
    let sub: Vec<&Value> = headers.iter().filter(|h| h[0] == "x-jwt-sub").map(|h| &h[1]).collect();
    assert_eq!(sub, [&Value::from("alice")], "{echo}");
    assert!(!headers.iter().any(|h| h[0] == "authorization"), "stripToken: {echo}");
    let denied = client::send(listener, None, &Request::get("/api/items")).unwrap();
    assert_eq!((denied.status, denied.json().unwrap()["code"].as_str()), (401, Some("jwt_missing")));
}
