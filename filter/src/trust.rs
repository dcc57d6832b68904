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
//! and never one whose `serial` is lower than the highest accepted for the same plugin root
//! id. That serial is kept in Envoy's process memory (Proxy-Wasm shared data, per `vm_id`:
//! [`crate::shared_data`] says why not in the VM), so it survives VM replacement and ECDS
//! updates, and is forgotten when the proxy restarts.

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

/// The gate as `on_configure` runs it: the trust roots, the highest serial accepted so far for
/// this root id (only read when there are trust roots), then [`admit`].
pub fn gate(bytes: &[u8], root_id: &[u8]) -> Result<Admitted, Rejection> {
    let roots = trust_roots().map_err(|message| Rejection { reason: "trust_roots_invalid", message })?;
    let highest = if roots.is_empty() { None } else { highest_serial(root_id)? };
    admit(bytes, &roots, highest)
}

/// Decide from the configuration bytes, the trust roots and the highest serial accepted so far
/// whether the policy may be compiled.
pub fn admit(bytes: &[u8], roots: &TrustRoots, highest: Option<u64>) -> Result<Admitted, Rejection> {
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
    envelope::check_serial(signed.serial, highest)?;
    Ok(Admitted::Signed { policy: signed.policy, serial: signed.serial, keyid: signed.keyid, roots: roots.len() })
}

/// The shared-data key of a root id's highest serial.
fn serial_key(root_id: &[u8]) -> Vec<u8> {
    let mut key = b"meshguard.trust.serial.".to_vec();
    key.extend_from_slice(root_id);
    key
}

/// The stored value: the serial in decimal.
fn parse_serial(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The highest serial accepted so far for `root_id` in this Envoy process. A host error or an
/// unreadable value refuses the configuration (fail closed: no history must not be assumed).
fn highest_serial(root_id: &[u8]) -> Result<Option<u64>, Rejection> {
    let unavailable = |message: String| Rejection { reason: "serial_unavailable", message };
    match crate::shared_data::get(&serial_key(root_id)) {
        Ok(None) => Ok(None),
        Ok(Some((value, _))) => parse_serial(&value)
            .map(Some)
            .ok_or_else(|| unavailable("the stored highest serial is not a number".to_string())),
        Err(status) => Err(unavailable(format!("cannot read the highest accepted serial (host status {status})"))),
    }
}

/// Remember an accepted serial (call only once the policy compiled and is in force): raise the
/// stored highest serial to `serial`, never lower it. Returns the host status on failure.
pub fn commit_serial(root_id: &[u8], serial: u64) -> Result<(), u32> {
    let key = serial_key(root_id);
    let mut last = 0;
    for _ in 0..4 {
        let (current, cas) = match crate::shared_data::get(&key)? {
            Some((value, cas)) => (parse_serial(&value), cas),
            None => (None, 0),
        };
        if current.is_some_and(|c| c >= serial) {
            return Ok(());
        }
        match crate::shared_data::set(&key, serial.to_string().as_bytes(), cas) {
            Ok(()) => return Ok(()),
            // Another VM wrote in between: read again.
            Err(crate::shared_data::CAS_MISMATCH) => last = crate::shared_data::CAS_MISMATCH,
            Err(status) => return Err(status),
        }
    }
    Err(last)
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
        assert!(matches!(admit(br#"{"version":1}"#, &none, None), Ok(Admitted::Unsigned)));
        assert!(matches!(admit(b"not json", &none, Some(9)), Ok(Admitted::Unsigned)));
        assert!(matches!(
            admit(&envelope(&kp(1), 3), &none, Some(9)),
            Ok(Admitted::UnverifiedEnvelope { serial: 3, .. })
        ));
    }

    #[test]
    fn with_roots_only_a_fresh_signed_policy_passes() {
        let key = kp(1);
        let r = roots(&key);
        let reason = |bytes: &[u8], highest: Option<u64>| admit(bytes, &r, highest).unwrap_err().reason;
        assert_eq!(reason(br#"{"version":1}"#, None), "unsigned");
        assert_eq!(reason(b"garbage", None), "unsigned");
        assert_eq!(reason(&envelope(&kp(2), 5), None), "unknown_key");
        let Ok(Admitted::Signed { serial: 5, .. }) = admit(&envelope(&key, 5), &r, None) else { panic!() };
        assert_eq!(reason(&envelope(&key, 4), Some(5)), "rollback");
        assert!(admit(&envelope(&key, 5), &r, Some(5)).is_ok());
        assert_eq!(parse_serial(b"17"), Some(17));
        assert_eq!(parse_serial(b"-1"), None);
        assert_eq!(serial_key(b"meshguard"), b"meshguard.trust.serial.meshguard");
    }

    #[test]
    fn counter_names_are_prometheus_safe() {
        for r in ["unsigned", "unknown_key", "bad_signature", "rollback", "trust_roots_invalid", "serial_unavailable"] {
            let n = rejected_counter_name(r);
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{n}");
        }
    }
}
