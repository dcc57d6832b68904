//! Shared test vectors: files of requests with the decision each must get, under one policy
//! (`policy/vectors/*.json`). The native tests decide every case and compare
//! (`policy/tests/vectors.rs`), and the fuzz targets start from the same requests as seeds, so a
//! case added once is checked and mutated everywhere. Pure: the callers read the files.
//!
//! ```json
//! {"description": "...", "policy": {...},
//!  "cases": [{"name": "...", "request": {...as `meshguard eval --request` reads it...},
//!             "expect": {"outcome": "deny", "findings": [{"check","code","rule","enforced","action"}]}}]}
//! ```

use serde::Deserialize;
use serde_json::{json, Value};

use crate::view::request::OwnedRequest;
use crate::Policy;

/// One vector file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    pub description: String,
    pub policy: Value,
    pub cases: Vec<Case>,
}

/// One request and the decision it must get.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub request: OwnedRequest,
    /// Absent only while a case is being written: `MESHGUARD_BLESS=1 cargo test -p
    /// meshguard-policy --test vectors` fills it in from the current decision, for review.
    #[serde(default)]
    pub expect: Option<Value>,
}

/// The decision for a case, in the shape `expect` holds.
pub fn decide(policy: &Policy, request: &OwnedRequest) -> Value {
    let pairs = request.pairs();
    let decision = policy.evaluate(&request.view(&pairs));
    json!({"outcome": decision.outcome().as_str(), "findings": crate::log::findings_json(&decision)})
}

/// Every case whose decision differs from its `expect` (or has none): `(name, got)`.
pub fn mismatches(file: &VectorFile) -> Result<Vec<(String, Value)>, String> {
    let policy = Policy::from_value(file.policy.clone()).map_err(|e| format!("policy: {e}"))?;
    Ok(file
        .cases
        .iter()
        .filter_map(|c| {
            let got = decide(&policy, &c.request);
            (c.expect.as_ref() != Some(&got)).then(|| (c.name.clone(), got))
        })
        .collect())
}
