//! Deployment manifests for a policy: the Istio `WasmPlugin` and the Envoy ECDS resource.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};

/// Which filter the WasmPlugin installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginType {
    /// An HTTP filter (`type: HTTP`, pluginName `meshguard`): every check.
    #[default]
    Http,
    /// A network filter (`type: NETWORK`, pluginName `meshguard-tcp`): the egress check on the
    /// TLS SNI of passthrough and TCP egress.
    Network,
}

/// The WasmPlugin's `match[].mode`: which of a proxy's listeners Istio installs the plugin on.
/// Istio classes a sidecar's inbound listeners as SERVER, and its outbound listeners and every
/// gateway listener as CLIENT (so `SERVER` never reaches a gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficMode {
    Server,
    Client,
    ClientAndServer,
}

impl TrafficMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficMode::Server => "SERVER",
            TrafficMode::Client => "CLIENT",
            TrafficMode::ClientAndServer => "CLIENT_AND_SERVER",
        }
    }
}

/// How to render a WasmPlugin.
#[derive(Debug, Clone, Default)]
pub struct WasmPluginOptions {
    pub plugin_type: PluginType,
    /// `None`: [`auto_mode`] picks it from the policy and the selector.
    pub mode: Option<TrafficMode>,
    /// The `pluginConfig` when it is not the policy itself: a signed envelope (`policy` is
    /// then its content, for [`auto_mode`]).
    pub plugin_config: Option<Value>,
    /// The module's pinned digest (hex): the WasmPlugin's `sha256`.
    pub sha256: Option<String>,
    /// Pass the proxy's own `MESHGUARD_TRUST_KEYS` (from the pod spec) to the VM:
    /// `vmConfig.env: [{name: MESHGUARD_TRUST_KEYS, valueFrom: HOST}]`.
    pub trust_keys_from_host: bool,
}

/// The traffic mode a policy needs when the operator does not say:
/// - a selector `istio=...gateway` (Istio's gateway labels) → CLIENT, the only mode that
///   reaches a gateway's listeners;
/// - a network plugin, or a policy whose only check is egress on outbound listeners → CLIENT;
/// - a policy without egress (identity, hygiene: about who calls the workload) → SERVER, so
///   the identity check never runs where the downstream is the local app;
/// - identity and egress together → CLIENT_AND_SERVER (the policy splits them by direction:
///   `identity.appliesTo: inbound`).
pub fn auto_mode(policy: &Value, selectors: &[String], plugin_type: PluginType) -> TrafficMode {
    let gateway =
        selectors.iter().any(|s| s.split_once('=').is_some_and(|(k, v)| k == "istio" && v.ends_with("gateway")));
    let has = |k: &str| policy.get(k).is_some_and(|v| !v.is_null());
    if gateway || plugin_type == PluginType::Network {
        TrafficMode::Client
    } else if !has("egress") && !has("upstream") {
        TrafficMode::Server
    } else if !has("identity") && !has("hygiene") {
        TrafficMode::Client
    } else {
        TrafficMode::ClientAndServer
    }
}

/// An Istio `WasmPlugin` (extensions.istio.io/v1alpha1) running meshguard with `policy` as
/// its `pluginConfig`.
///
/// meshguard belongs first in the chain: phase AUTHN with a high priority, so that no other
/// filter (Istio's own authn/authz, stats, other plugins) sees a request meshguard refuses.
/// It fails closed: if the module cannot be fetched or the VM fails, requests are refused.
pub fn wasm_plugin(
    policy: &Value,
    url: &str,
    name: &str,
    namespace: &str,
    selectors: &[String],
    options: &WasmPluginOptions,
) -> Result<String> {
    if options.plugin_type == PluginType::Network && policy.get("egress").is_none_or(Value::is_null) {
        bail!("a NETWORK plugin runs only the egress check (on the TLS SNI), and this policy has no egress section");
    }
    // What Kubernetes or the CRD would refuse is refused here, not printed.
    crate::image_ref::check_url(url)?;
    crate::image_ref::check_name("--name", name, 253, true)?;
    crate::image_ref::check_name("--namespace", namespace, 63, false)?;
    for s in selectors {
        crate::image_ref::check_selector(s)?;
    }
    let mut spec = Map::new();
    if !selectors.is_empty() {
        let mut labels = Map::new();
        for s in selectors {
            let Some((k, v)) = s.split_once('=') else { bail!("--selector takes key=value, not {s:?}") };
            labels.insert(k.to_string(), v.into());
        }
        spec.insert("selector".into(), json!({ "matchLabels": labels }));
    }
    let (plugin_name, plugin_type) = match options.plugin_type {
        PluginType::Http => ("meshguard", "HTTP"),
        PluginType::Network => ("meshguard-tcp", "NETWORK"),
    };
    let mode = options.mode.unwrap_or_else(|| auto_mode(policy, selectors, options.plugin_type));
    spec.insert("url".into(), url.into());
    if let Some(sha256) = &options.sha256 {
        spec.insert("sha256".into(), sha256.as_str().into());
    }
    spec.insert("imagePullPolicy".into(), "IfNotPresent".into());
    spec.insert("pluginName".into(), plugin_name.into());
    spec.insert("phase".into(), "AUTHN".into());
    spec.insert("priority".into(), 1000.into());
    spec.insert("failStrategy".into(), "FAIL_RELOAD".into());
    spec.insert("type".into(), plugin_type.into());
    spec.insert("match".into(), json!([{ "mode": mode.as_str() }]));
    if options.trust_keys_from_host {
        spec.insert("vmConfig".into(), json!({"env": [{"name": "MESHGUARD_TRUST_KEYS", "valueFrom": "HOST"}]}));
    }
    spec.insert("pluginConfig".into(), options.plugin_config.clone().unwrap_or_else(|| policy.clone()));
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
