//! `meshguard keygen`, `sign`, `verify`, `check`/`eval` on envelopes, `package` and `render
//! --image`: the real binary, its exit codes and output. The private key never appears in any
//! output, and a world-readable key file is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn meshguard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshguard"));
    cmd.args(args).current_dir(harness::workspace_root()).env_remove("MESHGUARD_SIGNING_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn all_output(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn keygen_sign_verify_check_eval_package_render() {
    let dir = harness::scratch_dir("cli-signing").unwrap();
    let base = dir.join("ci");
    let o = meshguard(&["keygen", "--out", p(&base)], &[]);
    assert!(o.status.success(), "{}", all_output(&o));
    let key_path = dir.join("ci.key");
    let secret = std::fs::read_to_string(&key_path).unwrap().trim().to_string();
    assert!(!all_output(&o).contains(&secret), "keygen printed the private key");
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);

    // Sign from the file and from the environment: the same (deterministic) envelope.
    let signed = dir.join("demo.signed.json");
    let o = meshguard(
        &["sign", "--key", p(&key_path), "--serial", "7", "--out", p(&signed), "envoy-config/policies/demo.yaml"],
        &[],
    );
    assert!(o.status.success(), "{}", all_output(&o));
    assert!(!all_output(&o).contains(&secret));
    let o2 =
        meshguard(&["sign", "--serial", "7", "envoy-config/policies/demo.yaml"], &[("MESHGUARD_SIGNING_KEY", &secret)]);
    assert!(o2.status.success(), "{}", all_output(&o2));
    assert_eq!(String::from_utf8_lossy(&o2.stdout).trim(), std::fs::read_to_string(&signed).unwrap().trim());
    assert!(!String::from_utf8_lossy(&o2.stderr).contains(&secret));

    // A world-readable key is refused, without quoting it.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = meshguard(&["sign", "--key", p(&key_path), "envoy-config/policies/demo.yaml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(all_output(&o).contains("world-readable") && !all_output(&o).contains(&secret), "{}", all_output(&o));
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // verify: ok with the right key, exit 1 with the reason with another.
    let o = meshguard(&["verify", "--key", p(&dir.join("ci.pub")), p(&signed)], &[]);
    assert!(o.status.success(), "{}", all_output(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (serial 7, keyid "));
    let other = dir.join("other");
    assert!(meshguard(&["keygen", "--out", p(&other)], &[]).status.success());
    let o = meshguard(&["verify", "--key", p(&dir.join("other.pub")), p(&signed)], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(all_output(&o).contains("unknown_key"), "{}", all_output(&o));

    // check and eval decide with the envelope's policy, exactly as with the plain file.
    let plain = meshguard(&["check", "envoy-config/policies/demo.yaml"], &[]);
    let env = meshguard(&["check", p(&signed)], &[]);
    assert!(env.status.success(), "{}", all_output(&env));
    let revision = |o: &Output| String::from_utf8_lossy(&o.stdout).split("revision ").nth(1).map(str::to_string);
    assert_eq!(revision(&plain), revision(&env));
    let request = dir.join("req.json");
    std::fs::write(
        &request,
        r#"{"method":"GET","path":"/api/items","authority":"api","scheme":"http","headers":[],"peer":{"mtls":false}}"#,
    )
    .unwrap();
    let o = meshguard(&["eval", "--policy", p(&signed), "--request", p(&request)], &[]);
    assert_eq!(o.status.code(), Some(1), "plaintext is denied by the demo policy: {}", all_output(&o));

    // package (a stand-in module with the slot) and render pinned to its digest.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend_from_slice(&policy::envelope::empty_slot());
    let wasm = dir.join("m.wasm");
    std::fs::write(&wasm, &module).unwrap();
    let layout = dir.join("oci");
    let o =
        meshguard(&["package", "--out", p(&layout), "--wasm", p(&wasm), "--trust-key", p(&dir.join("ci.pub"))], &[]);
    assert!(o.status.success(), "{}", all_output(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let digest = stdout.lines().find(|l| l.ends_with("\twasm")).unwrap().split('\t').nth(1).unwrap().to_string();
    let o = meshguard(
        &["render", "wasmplugin", "--policy", p(&signed), "--image", "ghcr.io/acme/meshguard", "--package", p(&layout)],
        &[],
    );
    assert!(o.status.success(), "{}", all_output(&o));
    let manifest: Value = serde_norway::from_slice(&o.stdout).unwrap();
    assert_eq!(manifest["spec"]["url"], format!("oci://ghcr.io/acme/meshguard@{digest}"));
    assert_eq!(manifest["spec"]["sha256"], digest.trim_start_matches("sha256:"));
    assert_eq!(manifest["spec"]["pluginConfig"]["payloadType"], policy::envelope::PAYLOAD_TYPE);
    // A mutable tag: rendered, with a warning.
    let o =
        meshguard(&["render", "wasmplugin", "--policy", p(&signed), "--image", "ghcr.io/acme/meshguard:0.1.0"], &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mutable tag"));
    // A bad name: refused, nothing printed.
    let o = meshguard(&["render", "wasmplugin", "--policy", p(&signed), "--name", "Mesh_Guard"], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
