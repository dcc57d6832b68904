//! Deployment manifests for a policy: the Istio `WasmPlugin` and the Envoy ECDS resource.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

/// An Istio `WasmPlugin` (extensions.istio.io/v1alpha1) running meshguard with `policy` as
/// its `pluginConfig`.
///
/// meshguard belongs first in the chain: phase AUTHN with a high priority, so that no other
/// filter (Istio's own authn/authz, stats, other plugins) sees a request meshguard refuses.
/// It fails closed: if the module cannot be fetched or the VM fails, requests are refused.
pub fn wasm_plugin(policy: &Value, url: &str, name: &str, namespace: &str, selectors: &[String]) -> Result<String> {
    let mut spec = Map::new();
    if !selectors.is_empty() {
        let mut labels = Map::new();
        for s in selectors {
            let Some((k, v)) = s.split_once('=') else { bail!("--selector takes key=value, not {s:?}") };
            labels.insert(k.to_string(), v.into());
        }
        spec.insert("selector".into(), json!({ "matchLabels": labels }));
    }
    spec.insert("url".into(), url.into());
    spec.insert("imagePullPolicy".into(), "IfNotPresent".into());
    spec.insert("pluginName".into(), "meshguard".into());
    spec.insert("phase".into(), "AUTHN".into());
    spec.insert("priority".into(), 1000.into());
    spec.insert("failStrategy".into(), "FAIL_CLOSE".into());
    spec.insert("type".into(), "HTTP".into());
    spec.insert("pluginConfig".into(), policy.clone());
    let manifest = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    });
    Ok(serde_norway::to_string(&manifest)?)
}

/// The ECDS resource file the local mesh hands Envoy (the way istiod delivers a WasmPlugin).
pub fn ecds(policy_json: &str, wasm: &Path) -> Result<String> {
    crate::mesh::render_ecds(policy_json, wasm)
}
