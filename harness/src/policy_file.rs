//! Policy files as people write them: YAML or JSON on disk, turned into the JSON the filter
//! receives as its plugin configuration.

use std::path::Path;

use anyhow::{Context, Result};

/// Read a policy file (YAML, or JSON — JSON is YAML too) into a JSON value. A signed policy
/// (a DSSE envelope, `meshguard sign`) gives its policy, `serial` taken out, **without
/// verifying the signature** (`meshguard verify` does): what `check`, `eval` and `replay` decide
/// with is the policy the filter would run once the signature checks out.
pub fn load_value(path: &Path) -> Result<serde_json::Value> {
    let value = load_raw_value(path)?;
    if !policy::envelope::is_envelope(&value) {
        return Ok(value);
    }
    let opened = policy::envelope::Envelope::from_value(&value)
        .and_then(|e| e.open_unverified())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(opened.policy)
}

/// Read a policy file as it is: a policy, or a signed envelope as the envelope (what goes
/// into the plugin configuration).
pub fn load_raw_value(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_value(&text).with_context(|| format!("{} is not valid YAML or JSON", path.display()))
}

/// Parse policy text (YAML or JSON) into a JSON value.
pub fn parse_value(text: &str) -> Result<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    Ok(serde_norway::from_str(text)?)
}

/// Read a policy file and return its compact JSON: what goes into the plugin configuration
/// (a signed envelope stays the envelope).
pub fn load_json(path: &Path) -> Result<String> {
    Ok(load_raw_value(path)?.to_string())
}

/// Read and compile a policy file; on validation failure the error lists every `PATH: message`.
pub fn load_policy(path: &Path) -> Result<policy::Policy, PolicyFileError> {
    let value = load_value(path).map_err(|e| PolicyFileError::Unreadable(format!("{e:#}")))?;
    policy::Policy::from_value(value).map_err(PolicyFileError::Invalid)
}

#[derive(Debug)]
pub enum PolicyFileError {
    Unreadable(String),
    Invalid(policy::ConfigErrors),
}

impl std::fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyFileError::Unreadable(e) => f.write_str(e),
            PolicyFileError::Invalid(errs) => write!(f, "{errs}"),
        }
    }
}

impl std::error::Error for PolicyFileError {}
