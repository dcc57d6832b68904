//! Trust roots for signed policies, and the signature gate in `on_configure`.
//!
//! Threat: a compromised control plane writes a permissive policy into every proxy's
//! pluginConfig. So the keys that decide which policy is genuine must not come through
//! pluginConfig. They come from two places a control plane that only writes WasmPlugins and
//! pluginConfig cannot change:
//!
//! 1. **The module itself**: [`TRUST_SLOT`], a fixed-size array in the data segment that
//!    `meshguard package --trust-key` overwrites in place before the image is built, so the
//!    keys are covered by the image digest the WasmPlugin pins. Why not a custom section: a
//!    Wasm module cannot read its own custom sections at run time (they are not in linear
//!    memory), while a static is. The slot is read with a volatile read, so the compiler
//!    cannot fold the unpatched value (no keys) into the code.
//! 2. **The VM's environment**: `MESHGUARD_TRUST_KEYS` (base64 Ed25519 public keys separated
//!    by commas), which Envoy passes from `vm_config.environment_variables` and Istio from
//!    the WasmPlugin's `vmConfig.env` (`valueFrom: HOST` reads the proxy's own environment,
//!    i.e. the pod spec).
//!
//! With no key in either, meshguard behaves as before (an unsigned policy is accepted and
//! logged `signed=false`). With any key, only an envelope signed by one of them is accepted,
//! and never one whose `serial` is lower than the highest this VM has accepted for the same
//! plugin root id (kept in memory: a restarted VM starts over).

use std::cell::RefCell;
use std::collections::HashMap;

use policy::envelope::{self, Envelope, EnvelopeError, TrustRoots, SLOT_LEN};
use serde_json::Value;

use crate::hostcalls;

/// The environment variable with trusted public keys.
pub const TRUST_KEYS_ENV: &str = "MESHGUARD_TRUST_KEYS";

/// The embedded trust roots (see the module docs). `#[used]` keeps it even if the reading
/// code were ever optimised differently; `meshguard package` finds it by its markers.
#[used]
static TRUST_SLOT: [u8; SLOT_LEN] = envelope::empty_slot();

/// The embedded slot as it is in this module's memory now.
#[allow(unsafe_code)]
fn embedded_slot() -> [u8; SLOT_LEN] {
    // SAFETY: a volatile read of an immutable static of plain bytes: valid, aligned, and never
    // written at run time. Volatile so that the compiler reads the bytes the packager wrote
    // instead of the ones it compiled.
    unsafe { std::ptr::read_volatile(std::ptr::addr_of!(TRUST_SLOT)) }
}

/// The trust roots: the embedded ones and the environment's. An unreadable key in either is an
/// error (fail closed: a typo must not turn signature checking off).
pub fn trust_roots() -> Result<TrustRoots, String> {
    let mut roots = envelope::read_slot(&embedded_slot())?;
    if let Ok(list) = std::env::var(TRUST_KEYS_ENV) {
        roots.extend(TrustRoots::parse_list(&list).map_err(|e| format!("{TRUST_KEYS_ENV}: {e}"))?);
    }
    Ok(roots)
}

/// Why a configuration was refused, for the log line and the per-reason counter.
#[derive(Debug)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

impl From<EnvelopeError> for Rejection {
    fn from(e: EnvelopeError) -> Self {
        Rejection { reason: e.reason(), message: e.to_string() }
    }
}

/// What passed the gate: the policy to compile, and what is known about its signature.
#[derive(Debug)]
pub enum Admitted {
    /// A bare policy, no trust roots: today's behaviour.
    Unsigned,
    /// An envelope opened without trust roots (not verified): its policy.
    UnverifiedEnvelope { policy: Value, serial: u64 },
    /// A verified signed policy. Call [`commit_serial`] once it compiled.
    Signed { policy: Value, serial: u64, keyid: String, roots: usize },
}

/// The gate: decide from the configuration bytes and the trust roots whether the policy may be
/// compiled. `root_id` scopes the rollback serial.
pub fn admit(bytes: &[u8], roots: &TrustRoots, root_id: &[u8]) -> Result<Admitted, Rejection> {
    // Only an object that looks like an envelope is parsed twice; a bare policy is left to
    // Policy::from_json (which names the field of any error).
    let value: Option<Value> = serde_json::from_slice(bytes).ok();
    let is_envelope = value.as_ref().is_some_and(envelope::is_envelope);
    if roots.is_empty() {
        return match value {
            Some(v) if is_envelope => {
                let opened = Envelope::from_value(&v)?.open_unverified()?;
                Ok(Admitted::UnverifiedEnvelope { policy: opened.policy, serial: opened.serial })
            }
            _ => Ok(Admitted::Unsigned),
        };
    }
    let Some(value) = value.filter(|_| is_envelope) else {
        return Err(EnvelopeError::Unsigned.into());
    };
    let signed = envelope::verify(&Envelope::from_value(&value)?, roots)?;
    envelope::check_serial(signed.serial, highest_serial(root_id))?;
    Ok(Admitted::Signed { policy: signed.policy, serial: signed.serial, keyid: signed.keyid, roots: roots.len() })
}

thread_local! {
    /// The highest serial accepted per plugin root id, in this VM (one Wasm instance).
    static HIGHEST: RefCell<HashMap<Vec<u8>, u64>> = RefCell::new(HashMap::new());
}

fn highest_serial(root_id: &[u8]) -> Option<u64> {
    HIGHEST.with(|h| h.try_borrow().ok().and_then(|m| m.get(root_id).copied()))
}

/// Remember an accepted serial (call only once the policy compiled and is in force).
pub fn commit_serial(root_id: &[u8], serial: u64) {
    HIGHEST.with(|h| {
        if let Ok(mut m) = h.try_borrow_mut() {
            let e = m.entry(root_id.to_vec()).or_insert(serial);
            *e = (*e).max(serial);
        }
    });
}

/// The per-reason rejection counter's name: `meshguard_config_rejected_reason_<reason>_total`.
pub fn rejected_counter_name(reason: &str) -> String {
    format!("meshguard_config_rejected_reason_{reason}_total")
}

/// Count a rejection by reason (defined on first use; a failed host call is ignored).
pub fn count_rejected(reason: &str) {
    if let Ok(id) = hostcalls::define_counter(&rejected_counter_name(reason)) {
        let _ = hostcalls::increment(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_compact::{KeyPair, Seed};
    use policy::envelope::{keyid_of, pae, payload_with_serial, EnvelopeSignature, TrustedKey, PAYLOAD_TYPE};
    use serde_json::json;

    fn kp(n: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([n; 32]))
    }

    fn envelope(kp: &KeyPair, serial: u64) -> Vec<u8> {
        let payload = payload_with_serial(&json!({"version": 1}), serial).unwrap();
        let sig = kp.sk.sign(pae(PAYLOAD_TYPE.as_bytes(), &payload), None);
        Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload,
            signatures: vec![EnvelopeSignature { keyid: keyid_of(kp.pk.as_ref()), sig: sig.to_vec() }],
        }
        .to_json()
        .into_bytes()
    }

    fn roots(kp: &KeyPair) -> TrustRoots {
        let mut r = TrustRoots::default();
        r.push(TrustedKey::from_bytes(kp.pk.as_ref()).unwrap());
        r
    }

    #[test]
    fn the_unpatched_module_has_no_embedded_roots() {
        assert!(envelope::read_slot(&embedded_slot()).unwrap().is_empty());
    }

    #[test]
    fn without_roots_everything_is_as_before() {
        let none = TrustRoots::default();
        assert!(matches!(admit(br#"{"version":1}"#, &none, b"r"), Ok(Admitted::Unsigned)));
        assert!(matches!(admit(b"not json", &none, b"r"), Ok(Admitted::Unsigned)));
        assert!(matches!(admit(&envelope(&kp(1), 3), &none, b"r"), Ok(Admitted::UnverifiedEnvelope { serial: 3, .. })));
    }

    #[test]
    fn with_roots_only_a_fresh_signed_policy_passes() {
        let key = kp(1);
        let r = roots(&key);
        let reason = |bytes: &[u8], root: &[u8]| admit(bytes, &r, root).unwrap_err().reason;
        assert_eq!(reason(br#"{"version":1}"#, b"a"), "unsigned");
        assert_eq!(reason(b"garbage", b"a"), "unsigned");
        assert_eq!(reason(&envelope(&kp(2), 5), b"a"), "unknown_key");
        let Ok(Admitted::Signed { serial: 5, .. }) = admit(&envelope(&key, 5), &r, b"a") else { panic!() };
        commit_serial(b"a", 5);
        assert_eq!(reason(&envelope(&key, 4), b"a"), "rollback");
        assert!(admit(&envelope(&key, 5), &r, b"a").is_ok());
        // Another root id keeps its own history.
        assert!(admit(&envelope(&key, 4), &r, b"b").is_ok());
        commit_serial(b"a", 3);
        assert_eq!(highest_serial(b"a"), Some(5));
    }

    #[test]
    fn counter_names_are_prometheus_safe() {
        for r in ["unsigned", "unknown_key", "bad_signature", "rollback", "trust_roots_invalid"] {
            let n = rejected_counter_name(r);
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{n}");
        }
    }
}
