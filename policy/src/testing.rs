//! Helpers the unit tests of every check share.

use serde_json::Value;

use crate::Policy;

/// A policy that must validate.
pub fn policy(v: Value) -> Policy {
    Policy::from_value(v).unwrap_or_else(|e| panic!("policy should validate:\n{e}"))
}

/// The errors of a policy that must be refused, as `path: message` lines.
pub fn errors(v: Value) -> Vec<String> {
    match Policy::from_value(v) {
        Ok(_) => panic!("policy should be refused"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}
