//! The docker-compose setup, checked without Docker (none runs here): the compose file's
//! structure and its agreement with what `meshguard render compose` writes, the rendered Envoy
//! configuration through the pinned Envoy's `--mode validate`, and the echo application run
//! for real with the machine's python3.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use harness::compose::{self, ADMIN_PORT, CONTAINER_ROOT, ECHO_ADDRESS, ECHO_PORT, LISTENER_PORT};
use serde_json::Value;

fn compose_dir() -> PathBuf {
    harness::workspace_root().join("envoy-config/compose")
}

fn compose_file() -> Value {
    let text = std::fs::read_to_string(compose_dir().join("docker-compose.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

#[test]
fn the_compose_file_runs_the_pinned_envoy_on_the_rendered_directory() {
    let c = compose_file();
    let envoy = &c["services"]["envoy"];
    assert_eq!(envoy["image"], format!("envoyproxy/envoy:v{}", harness::envoy::PINNED_VERSION));
    let command: Vec<&str> = envoy["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let config = command.iter().position(|a| *a == "-c").map(|i| command[i + 1]).unwrap();
    assert_eq!(config, format!("{CONTAINER_ROOT}/{}", compose::ENVOY_FILE));
    assert_eq!(envoy["volumes"][0], format!("./generated:{CONTAINER_ROOT}:ro"));
    let ports: Vec<&str> = envoy["ports"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        ports,
        [format!("127.0.0.1:{LISTENER_PORT}:{LISTENER_PORT}"), format!("127.0.0.1:{ADMIN_PORT}:{ADMIN_PORT}")]
    );
    assert_eq!(envoy["depends_on"][0], "echo");

    let echo = &c["services"]["echo"];
    assert_eq!(echo["networks"]["mesh"]["ipv4_address"], ECHO_ADDRESS);
    assert_eq!(echo["command"][2], ECHO_PORT.to_string());
    let subnet = c["networks"]["mesh"]["ipam"]["config"][0]["subnet"].as_str().unwrap();
    assert_eq!(subnet, "172.28.0.0/24");
    assert!(ECHO_ADDRESS.starts_with("172.28.0.") && envoy["networks"]["mesh"]["ipv4_address"] != ECHO_ADDRESS);
    // Every file the compose file mounts exists (generated/ is what render compose writes).
    for service in ["echo", "envoy", "prometheus"] {
        for volume in c["services"][service]["volumes"].as_array().unwrap() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            if host != "./generated" {
                assert!(compose_dir().join(host).exists(), "{service} mounts missing {host}");
            }
        }
    }
}

#[test]
fn the_rendered_directory_is_a_configuration_envoy_accepts() {
    let dir = harness::scratch_dir("compose").unwrap();
    let policy =
        harness::policy_file::load_json(&harness::workspace_root().join("envoy-config/policies/demo.yaml")).unwrap();
    // A stand-in module: --mode validate does not load it, and the unit test need not build it.
    let wasm = dir.join("stand-in.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();

    // Rendered for this machine (the container root is the directory itself) so that every
    // path in it exists here...
    let root = dir.to_string_lossy().into_owned();
    compose::render_into(&dir, &policy, &wasm, &root).unwrap();
    harness::envoy::validate(&dir.join(compose::ENVOY_FILE)).unwrap();
    let local = std::fs::read_to_string(dir.join(compose::ENVOY_FILE)).unwrap();

    // ...and for the container: the same configuration but for the root.
    compose::render_into(&dir, &policy, &wasm, CONTAINER_ROOT).unwrap();
    let container = std::fs::read_to_string(dir.join(compose::ENVOY_FILE)).unwrap();
    assert_eq!(container, local.replace(&root, CONTAINER_ROOT));
    assert!(container.contains(&format!("address: 0.0.0.0, port_value: {LISTENER_PORT}")));
    assert!(container.contains(&format!("address: 0.0.0.0, port_value: {ADMIN_PORT} }}")));
    assert!(container.contains(&format!("address: \"{ECHO_ADDRESS}\", port_value: {ECHO_PORT}")));
    // The stats_tags of envoy-config/stats-tags.yaml: meshguard_findings_total{check,code,mode}.
    assert!(container.ends_with(harness::mesh::STATS_TAGS), "{container}");
    let ecds = std::fs::read_to_string(dir.join(compose::ECDS_FILE)).unwrap();
    assert!(ecds.contains(&format!("filename: \"{CONTAINER_ROOT}/meshguard.wasm\"")), "{ecds}");
    // Fails closed and reloads a trapped VM (tests/tests/vm_reload.rs measures why).
    assert!(ecds.contains("failure_policy: FAIL_RELOAD"), "{ecds}");
    assert!(dir.join("pki/web.pem").is_file() && dir.join("meshguard.wasm").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_compose_echo_application_answers_with_what_it_received() {
    let script = compose_dir().join("echo.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the echo");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let port: u16 = first.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let request = harness::client::Request::new("POST", "/a/b?c=d").with_header("x-test", "1").with_body("hello");
    let result = harness::client::send(addr, None, &request);
    // Stopped by its own PID whatever the outcome.
    let _ = child.kill();
    let _ = child.wait();
    let resp = result.unwrap();
    assert_eq!(resp.status, 200);
    let echo = resp.json().unwrap();
    assert_eq!((echo["method"].as_str(), echo["path"].as_str()), (Some("POST"), Some("/a/b?c=d")));
    assert_eq!(echo["bodyLength"], 5);
    assert!(echo["headers"].as_array().unwrap().iter().any(|h| h[0].as_str() == Some("x-test")));
}

/// The `observe` profile's Prometheus: only with `--profile observe`, on the mesh network,
/// published on loopback, and its configuration (with meshguard's alerts beside it, as the
/// container mounts them) passes `promtool check config`.
#[test]
fn the_observe_profile_runs_prometheus_on_envoys_admin_with_the_alerts() {
    let c = compose_file();
    let prom = &c["services"]["prometheus"];
    assert_eq!(prom["profiles"][0], "observe");
    assert_eq!(prom["ports"][0], "127.0.0.1:9090:9090");
    assert_eq!(prom["networks"][0], "mesh");
    let mounts: Vec<&str> = prom["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        mounts,
        [
            "./prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "../monitoring/alerts.yaml:/etc/prometheus/alerts.yaml:ro"
        ]
    );
    let config = std::fs::read_to_string(compose_dir().join("prometheus.yml")).unwrap();
    assert!(config.contains("targets: [\"envoy:15000\"]") && config.contains("metrics_path: /stats/prometheus"));
    // As the container sees it: both files in one directory.
    let dir = harness::scratch_dir("compose-prometheus").unwrap();
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    std::fs::copy(harness::prometheus::alerts_path(), dir.join("alerts.yaml")).unwrap();
    let path = dir.join("prometheus.yml");
    let out = harness::prometheus::run_promtool(&["check", "config", path.to_str().unwrap()]).unwrap();
    assert!(out.contains("SUCCESS"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
