//! The shipped Istio manifests and the ones `meshguard render` prints are valid WasmPlugins:
//! checked against Istio's own CRD schema (a copy of shared/reference/istio-wasmplugin-crd.yaml
//! in envoy-config/istio/crd/), and their pluginConfig is a policy meshguard accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use harness::render::{PluginType, WasmPluginOptions};
use serde_json::Value;

fn root() -> PathBuf {
    harness::workspace_root()
}

fn crd_schema() -> Value {
    let path = root().join("envoy-config/istio/crd/wasmplugin-crd.yaml");
    let crd: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A structural OpenAPI v3 validator for the subset Kubernetes CRDs use.
fn validate(schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if v.is_null() && schema["nullable"] == Value::Bool(true) {
        return;
    }
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            errs.push(format!("{at}: expected {t}, got {v}"));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(v) {
            errs.push(format!("{at}: {v} not in {options:?}"));
        }
    }
    if let (Some(s), Some(max)) = (v.as_str(), schema["maxLength"].as_u64()) {
        if s.len() as u64 > max {
            errs.push(format!("{at}: longer than {max}"));
        }
    }
    if let (Some(s), Some(min)) = (v.as_str(), schema["minLength"].as_u64()) {
        if (s.len() as u64) < min {
            errs.push(format!("{at}: shorter than {min}"));
        }
    }
    if let (Some(i), Some("int32")) = (v.as_i64(), schema["format"].as_str()) {
        if i32::try_from(i).is_err() {
            errs.push(format!("{at}: not an int32"));
        }
    }
    if let Some(obj) = v.as_object() {
        if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
            return;
        }
        for req in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(req.as_str().unwrap()) {
                errs.push(format!("{at}: missing required {req}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, child) in obj {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => validate(s, child, &format!("{at}.{k}"), errs),
                (None, Some(extra)) if extra.is_object() => validate(extra, child, &format!("{at}.{k}"), errs),
                (None, _) => errs.push(format!("{at}: unknown field {k}")),
            }
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            validate(&schema["items"], item, &format!("{at}[{i}]"), errs);
        }
    }
}

/// Validation errors of a WasmPlugin manifest against the CRD (and its CEL rule).
fn wasm_plugin_errors(manifest: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let mut body = manifest.clone();
    // apiVersion, kind and metadata are the API server's to check, not the CRD schema's.
    for k in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(k);
    }
    validate(&crd_schema(), &body, "", &mut errs);
    let spec = &manifest["spec"];
    let selectors = ["selector", "targetRef", "targetRefs"].iter().filter(|k| !spec[**k].is_null()).count();
    if selectors > 1 {
        errs.push("spec: only one of targetRefs or selector can be set".into());
    }
    errs
}

fn check_wasm_plugin(manifest: &Value, source: &str) {
    assert_eq!(manifest["apiVersion"], "extensions.istio.io/v1alpha1", "{source}");
    assert_eq!(manifest["kind"], "WasmPlugin", "{source}");
    let errs = wasm_plugin_errors(manifest);
    assert!(errs.is_empty(), "{source} is not a valid WasmPlugin:\n{}", errs.join("\n"));
    let spec = &manifest["spec"];
    // The ordering and failure mode meshguard depends on.
    assert_eq!(spec["phase"], "AUTHN", "{source}");
    // First within the phase too (Istio orders a phase's plugins by descending priority): the
    // hygiene guards must see every request before any other plugin does.
    assert!(spec["priority"].as_i64().is_some_and(|p| p >= 1000), "{source}: priority {}", spec["priority"]);
    assert_eq!(spec["failStrategy"], "FAIL_RELOAD", "{source}");
    // The root id (Istio: pluginName) chooses the filter type inside the one module.
    let plugin_name = if spec["type"] == "NETWORK" { "meshguard-tcp" } else { "meshguard" };
    assert_eq!(spec["pluginName"], plugin_name, "{source}");
    policy::Policy::from_value(spec["pluginConfig"].clone())
        .unwrap_or_else(|e| panic!("{source}: pluginConfig refused:\n{e}"));
    // Istio installs a plugin on a gateway only in mode CLIENT (or CLIENT_AND_SERVER, or no
    // mode): it classes every gateway listener as CLIENT. SERVER would be silently ignored.
    let gateway = spec["selector"]["matchLabels"]["istio"].as_str().is_some_and(|v| v.ends_with("gateway"));
    let modes: Vec<&str> = spec["match"].as_array().into_iter().flatten().filter_map(|m| m["mode"].as_str()).collect();
    if gateway {
        assert!(!modes.contains(&"SERVER"), "{source}: mode SERVER never reaches a gateway");
    }
    // A policy with an identity check for every listener must not run on a sidecar's outbound
    // side, where the downstream is the local app: that would deny every request it sends.
    let identity_everywhere = !spec["pluginConfig"]["identity"].is_null()
        && spec["pluginConfig"]["identity"]["appliesTo"].as_str().unwrap_or("all") == "all";
    if identity_everywhere && !gateway {
        assert_eq!(modes, ["SERVER"], "{source}: an identity check for every listener belongs on SERVER only");
    }
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_crd_copy_matches_the_reference() {
    let reference = root().join("../shared/reference/istio-wasmplugin-crd.yaml");
    if let Ok(text) = std::fs::read_to_string(&reference) {
        let ours = std::fs::read_to_string(root().join("envoy-config/istio/crd/wasmplugin-crd.yaml")).unwrap();
        assert_eq!(text, ours, "envoy-config/istio/crd/wasmplugin-crd.yaml must be a copy of shared/reference");
    }
}

#[test]
fn shipped_wasm_plugins_are_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("envoy-config/istio")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            check_wasm_plugin(&yaml(&path), &path.display().to_string());
            n += 1;
        }
    }
    assert!(n >= 2, "expected the sidecar and gateway manifests, found {n}");
}

#[test]
fn rendered_wasm_plugins_are_valid() {
    let value = harness::policy_file::load_value(&root().join("envoy-config/policies/demo.yaml")).unwrap();
    let opts = WasmPluginOptions::default();
    let text = harness::render::wasm_plugin(
        &value,
        "oci://example/meshguard:1",
        "meshguard",
        "default",
        &["app=api".into()],
        &opts,
    )
    .unwrap();
    let manifest: Value = serde_norway::from_str(&text).unwrap();
    check_wasm_plugin(&manifest, "rendered demo.yaml");
    assert_eq!(manifest["spec"]["pluginConfig"], value);
    assert_eq!(manifest["spec"]["selector"]["matchLabels"]["app"], "api");
    assert_eq!(manifest["spec"]["match"][0]["mode"], "SERVER", "identity: the sidecar's inbound side");

    // On a gateway: CLIENT, the only mode Istio matches there.
    let text = harness::render::wasm_plugin(
        &value,
        "oci://x/m:1",
        "meshguard",
        "istio-system",
        &["istio=ingressgateway".into()],
        &opts,
    )
    .unwrap();
    let manifest: Value = serde_norway::from_str(&text).unwrap();
    check_wasm_plugin(&manifest, "rendered demo.yaml for a gateway");
    assert_eq!(manifest["spec"]["match"][0]["mode"], "CLIENT");

    // Egress: CLIENT, as HTTP and as NETWORK.
    let egress = harness::policy_file::load_value(&root().join("envoy-config/policies/egress.yaml")).unwrap();
    for plugin_type in [PluginType::Http, PluginType::Network] {
        let opts = WasmPluginOptions { plugin_type, mode: None, ..Default::default() };
        let text = harness::render::wasm_plugin(&egress, "oci://x/m:1", "meshguard-egress", "web", &[], &opts).unwrap();
        let manifest: Value = serde_norway::from_str(&text).unwrap();
        check_wasm_plugin(&manifest, &format!("rendered egress.yaml as {plugin_type:?}"));
        assert_eq!(manifest["spec"]["match"][0]["mode"], "CLIENT");
    }
    // A network plugin without an egress check would check nothing: refused.
    let opts = WasmPluginOptions { plugin_type: PluginType::Network, mode: None, ..Default::default() };
    assert!(harness::render::wasm_plugin(&value, "oci://x/m:1", "m", "default", &[], &opts).is_err());
}

/// Upstream pinning at an egress gateway: the shipped gateway manifest pins a partner's
/// upstream, and a policy with `upstream` renders for the gateway as a valid CLIENT plugin
/// whose pluginConfig compiles (proven through Envoy in tests/tests/upstream_gateway.rs).
#[test]
fn the_egress_gateway_manifest_pins_upstreams() {
    let shipped = yaml(&root().join("envoy-config/istio/wasmplugin-egress.yaml"));
    check_wasm_plugin(&shipped, "wasmplugin-egress.yaml");
    assert_eq!(shipped["spec"]["selector"]["matchLabels"]["istio"], "egressgateway");
    let config = shipped["spec"]["pluginConfig"].clone();
    assert!(config["upstream"]["destinations"].as_array().is_some_and(|d| !d.is_empty()), "{config}");
    let compiled = policy::Policy::from_value(config.clone()).unwrap();
    assert!(compiled.has_upstream());

    let text = harness::render::wasm_plugin(
        &config,
        "oci://x/m:1",
        "meshguard-egress",
        "istio-system",
        &["istio=egressgateway".into()],
        &WasmPluginOptions::default(),
    )
    .unwrap();
    let manifest: Value = serde_norway::from_str(&text).unwrap();
    check_wasm_plugin(&manifest, "rendered upstream policy for the egress gateway");
    assert_eq!(manifest["spec"]["pluginConfig"], config);
    assert_eq!(manifest["spec"]["match"][0]["mode"], "CLIENT", "{text}");

    // A mistake in the `upstream` section is refused (the plugin would reject it in on_configure).
    let mut bad = config.clone();
    bad["upstream"]["destinations"][0]["clusters"] = serde_json::json!(["inbound|443||ledger.partner.example.com"]);
    assert!(policy::Policy::from_value(bad).is_err());
}

#[test]
fn auto_mode_follows_the_policy() {
    use harness::render::{auto_mode, TrafficMode};
    let http = PluginType::Http;
    let v = |j: Value| j;
    assert_eq!(auto_mode(&v(serde_json::json!({"identity": {}})), &[], http), TrafficMode::Server);
    assert_eq!(auto_mode(&v(serde_json::json!({"hygiene": {}})), &[], http), TrafficMode::Server);
    // Upstream pinning judges the sidecar's outbound connections.
    assert_eq!(auto_mode(&v(serde_json::json!({"upstream": {}})), &[], http), TrafficMode::Client);
    assert_eq!(
        auto_mode(&v(serde_json::json!({"hygiene": {}, "upstream": {}})), &[], http),
        TrafficMode::ClientAndServer
    );
    assert_eq!(auto_mode(&v(serde_json::json!({"egress": {}})), &[], http), TrafficMode::Client);
    assert_eq!(
        auto_mode(&v(serde_json::json!({"identity": {"appliesTo": "inbound"}, "egress": {}})), &[], http),
        TrafficMode::ClientAndServer
    );
    assert_eq!(
        auto_mode(&v(serde_json::json!({"identity": {}})), &["istio=egressgateway".into()], http),
        TrafficMode::Client
    );
}

#[test]
fn the_validator_catches_mistakes() {
    let good = yaml(&root().join("envoy-config/istio/wasmplugin-sidecar.yaml"));
    assert!(wasm_plugin_errors(&good).is_empty());
    for (field, bad) in [
        ("phase", Value::from("AUTHENTICATION")),
        ("failStrategy", Value::from("FAIL_CLOSED")),
        ("priority", Value::from("high")),
        ("pluginNme", Value::from("meshguard")),
        ("targetRef", serde_json::json!({"kind": "Gateway", "name": "gw"})),
    ] {
        let mut m = good.clone();
        m["spec"][field] = bad;
        assert!(!wasm_plugin_errors(&m).is_empty(), "spec.{field} mistake not caught");
    }
    let mut m = good.clone();
    m["spec"].as_object_mut().unwrap().remove("url");
    assert!(!wasm_plugin_errors(&m).is_empty(), "missing url not caught");
}

#[test]
fn shipped_example_policies_validate() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("envoy-config/policies")).unwrap() {
        let path = entry.unwrap().path();
        let tests = path.to_string_lossy().ends_with(harness::policy_test::SUFFIX); // `meshguard test` files
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") && !tests {
            harness::policy_file::load_policy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn a_signed_policy_renders_pinned_to_the_packaged_digest() {
    use harness::signing::SigningKey;
    let dir = harness::scratch_dir("render-signed").unwrap();
    let key = SigningKey::from_seed([5; 32]);
    let (envelope, _) =
        harness::signing::sign_policy(&root().join("envoy-config/policies/demo.yaml"), &key, Some(3)).unwrap();
    let signed = dir.join("demo.signed.json");
    std::fs::write(&signed, &envelope).unwrap();
    let policy_value = harness::policy_file::load_value(&signed).unwrap();
    let raw = harness::policy_file::load_raw_value(&signed).unwrap();
    assert_eq!(
        policy_value,
        harness::policy_file::load_value(&root().join("envoy-config/policies/demo.yaml")).unwrap()
    );

    // A layout from `meshguard package` (a stand-in module with the trust-root slot).
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend_from_slice(&policy::envelope::empty_slot());
    let wasm = dir.join("m.wasm");
    std::fs::write(&wasm, &module).unwrap();
    let packaged = harness::package::package(&wasm, &[], &dir.join("oci"), "0.1.0").unwrap();
    let module_ref =
        harness::sign_commands::module_ref("oci://ghcr.io/acme/meshguard", Some(&dir.join("oci")), "0.1.0").unwrap();
    let hex = packaged.wasm_manifest_digest.trim_start_matches("sha256:");
    assert_eq!(module_ref.url, format!("oci://ghcr.io/acme/meshguard@sha256:{hex}"));
    assert_eq!(module_ref.sha256.as_deref(), Some(hex));

    let opts = WasmPluginOptions {
        plugin_config: Some(raw.clone()),
        sha256: module_ref.sha256.clone(),
        trust_keys_from_host: true,
        ..Default::default()
    };
    let text = harness::render::wasm_plugin(
        &policy_value,
        &module_ref.url,
        "meshguard",
        "default",
        &["app=api".into()],
        &opts,
    )
    .unwrap();
    let manifest: Value = serde_norway::from_str(&text).unwrap();
    let errs = wasm_plugin_errors(&manifest);
    assert!(errs.is_empty(), "{}", errs.join("\n"));
    assert_eq!(manifest["spec"]["url"], module_ref.url.as_str());
    assert_eq!(manifest["spec"]["sha256"], hex);
    assert_eq!(manifest["spec"]["vmConfig"]["env"][0]["name"], "MESHGUARD_TRUST_KEYS");
    assert_eq!(manifest["spec"]["vmConfig"]["env"][0]["valueFrom"], "HOST");
    assert_eq!(manifest["spec"]["pluginConfig"], raw, "the envelope itself is the plugin configuration");
    assert_eq!(manifest["spec"]["match"][0]["mode"], "SERVER", "the mode follows the signed policy");
    // What a proxy receives verifies.
    let env = policy::envelope::Envelope::from_value(&manifest["spec"]["pluginConfig"]).unwrap();
    let mut roots = policy::envelope::TrustRoots::default();
    roots.push(key.public());
    assert_eq!(policy::envelope::verify(&env, &roots).unwrap().serial, 3);

    // What Kubernetes or the CRD would reject is refused, not printed.
    let bad = |url: &str, name: &str, ns: &str, sel: &str| {
        harness::render::wasm_plugin(&policy_value, url, name, ns, &[sel.to_string()], &opts).is_err()
    };
    assert!(bad("ftp://x/m.wasm", "meshguard", "default", "app=api"));
    assert!(bad(&module_ref.url, "MeshGuard", "default", "app=api"));
    assert!(bad(&module_ref.url, "meshguard", "istio.system", "app=api"));
    assert!(bad(&module_ref.url, "meshguard", "default", "app=a b"));
    assert!(!bad(&module_ref.url, "meshguard", "default", "app.kubernetes.io/name=api"));
    // A mutable tag is accepted with a warning and without sha256.
    let tagged = harness::image_ref::image("ghcr.io/acme/meshguard:0.1.0").unwrap();
    assert!(tagged.warning.is_some() && tagged.sha256.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
