//! Signed policies: a DSSE envelope (the in-toto / Sigstore "Dead Simple Signing Envelope")
//! around the policy JSON, signed with Ed25519.
//!
//! Threat: a compromised control plane (or anyone who can write a WasmPlugin) hands every proxy
//! a permissive policy. With trust roots that did not come through pluginConfig (see the
//! filter's `trust` module), the filter accepts only a policy whose envelope carries a valid
//! signature by one of those keys, and never one older (lower `serial`) than the newest it has
//! accepted in this VM.
//!
//! ```json
//! {"payloadType": "application/vnd.meshguard.policy+json",
//!  "payload": "<base64 of the policy JSON, with a top-level \"serial\": N>",
//!  "signatures": [{"keyid": "<16 hex digits>", "sig": "<base64 Ed25519 signature over PAE>"}]}
//! ```
//!
//! The signature covers DSSE's pre-authentication encoding
//! `"DSSEv1" SP len(type) SP type SP len(payload) SP payload` ([`pae`]), so neither the
//! payload type nor the payload can be swapped. `keyid` is only a hint (the first 8 bytes of
//! the public key, hex): a signature counts only if it verifies.
//!
//! The payload is the policy document plus one top-level field, `serial` (a positive
//! integer), which [`verify`] takes out before the policy is compiled: the policy's revision
//! is the same signed or not. Pure: no I/O, no clock, no randomness (signing with
//! `ed25519-compact` and no noise is deterministic).

use std::fmt;

use ed25519_compact::{PublicKey, Signature};
use serde_json::{Map, Value};

/// The DSSE `payloadType` of a meshguard policy.
pub const PAYLOAD_TYPE: &str = "application/vnd.meshguard.policy+json";

/// The payload field that carries the rollback serial.
pub const SERIAL_FIELD: &str = "serial";

/// At most this many signatures are looked at (an envelope is not a work queue).
pub const MAX_SIGNATURES: usize = 8;

/// Why a configuration was refused, as a stable snake_case name (log lines and the
/// `meshguard_config_rejected_reason_<reason>_total` counters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Trust roots are configured and the configuration is a bare policy.
    Unsigned,
    /// Not a well-formed DSSE envelope (fields, base64, JSON); the message says what.
    Malformed(String),
    /// `payloadType` is not [`PAYLOAD_TYPE`].
    PayloadType(String),
    /// No signature names (by keyid) a trusted key.
    UnknownKey,
    /// A signature names a trusted key and does not verify: a tampered payload or type, or
    /// a forged signature.
    BadSignature,
    /// The signed payload has no valid `serial`.
    NoSerial,
    /// The serial is lower than the highest this VM has accepted.
    Rollback { serial: u64, highest: u64 },
}

impl EnvelopeError {
    /// The stable reason name.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Unsigned => "unsigned",
            EnvelopeError::Malformed(_) => "malformed_envelope",
            EnvelopeError::PayloadType(_) => "payload_type",
            EnvelopeError::UnknownKey => "unknown_key",
            EnvelopeError::BadSignature => "bad_signature",
            EnvelopeError::NoSerial => "no_serial",
            EnvelopeError::Rollback { .. } => "rollback",
        }
    }
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Unsigned => f.write_str("the policy is not signed and this module has trust roots"),
            EnvelopeError::Malformed(m) => write!(f, "not a valid DSSE envelope: {m}"),
            EnvelopeError::PayloadType(t) => write!(f, "payloadType {t:?} is not {PAYLOAD_TYPE:?}"),
            EnvelopeError::UnknownKey => f.write_str("no signature is by a trusted key"),
            EnvelopeError::BadSignature => f.write_str("the signature does not verify (tampered or forged)"),
            EnvelopeError::NoSerial => {
                write!(f, "the signed payload has no \"{SERIAL_FIELD}\" (a positive integer)")
            }
            EnvelopeError::Rollback { serial, highest } => {
                write!(f, "serial {serial} is lower than {highest}, the highest accepted (rollback)")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: Vec<u8>,
}

/// A parsed (not yet verified) envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

/// Whether a configuration is meant as an envelope: a JSON object with a `payloadType` or a
/// `signatures` field (a policy has neither; a half envelope is then refused as malformed,
/// not compiled as a policy).
pub fn is_envelope(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key("payloadType") || o.contains_key("signatures"))
}

impl Envelope {
    pub fn from_value(value: &Value) -> Result<Self, EnvelopeError> {
        let malformed = |m: &str| EnvelopeError::Malformed(m.to_string());
        let obj = value.as_object().ok_or_else(|| malformed("not a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "payloadType" | "payload" | "signatures")) {
            return Err(EnvelopeError::Malformed(format!("unknown field {k:?}")));
        }
        let payload_type =
            obj.get("payloadType").and_then(Value::as_str).ok_or_else(|| malformed("payloadType must be a string"))?;
        let payload =
            obj.get("payload").and_then(Value::as_str).ok_or_else(|| malformed("payload must be a string"))?;
        let payload = base64_decode(payload).ok_or_else(|| malformed("payload is not base64"))?;
        let sigs =
            obj.get("signatures").and_then(Value::as_array).ok_or_else(|| malformed("signatures must be an array"))?;
        if sigs.len() > MAX_SIGNATURES {
            return Err(EnvelopeError::Malformed(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let mut signatures = Vec::with_capacity(sigs.len());
        for s in sigs {
            let keyid = match s.get("keyid") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(k)) => k.clone(),
                Some(_) => return Err(malformed("signatures[].keyid must be a string")),
            };
            let sig = s
                .get("sig")
                .and_then(Value::as_str)
                .and_then(base64_decode)
                .ok_or_else(|| malformed("signatures[].sig must be base64"))?;
            signatures.push(EnvelopeSignature { keyid, sig });
        }
        Ok(Envelope { payload_type: payload_type.to_string(), payload, signatures })
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        Self::from_value(&value)
    }

    /// The envelope as compact JSON (standard base64 with padding, as DSSE writes it).
    pub fn to_json(&self) -> String {
        let sigs: Vec<Value> = self
            .signatures
            .iter()
            .map(|s| {
                let mut o = Map::new();
                o.insert("keyid".into(), Value::String(s.keyid.clone()));
                o.insert("sig".into(), Value::String(base64_encode(&s.sig)));
                Value::Object(o)
            })
            .collect();
        let mut o = Map::new();
        o.insert("payloadType".into(), Value::String(self.payload_type.clone()));
        o.insert("payload".into(), Value::String(base64_encode(&self.payload)));
        o.insert("signatures".into(), Value::Array(sigs));
        Value::Object(o).to_string()
    }

    /// The unverified content: serial and policy. For tools that show what an envelope holds
    /// (`meshguard check`); the filter calls [`verify`].
    pub fn open_unverified(&self) -> Result<SignedPolicy, EnvelopeError> {
        if self.payload_type != PAYLOAD_TYPE {
            return Err(EnvelopeError::PayloadType(self.payload_type.clone()));
        }
        split_serial(&self.payload)
    }
}

/// DSSE's pre-authentication encoding: what is signed.
pub fn pae(payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + payload_type.len() + payload.len());
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type);
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// The keyid of a public key: its first 8 bytes in hex (a hint, not an authenticator).
pub fn keyid_of(public_key: &[u8]) -> String {
    let mut s = String::with_capacity(16);
    for b in public_key.iter().take(8) {
        for nibble in [b >> 4, b & 0xf] {
            s.push(char::from(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    s
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// One trusted Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    keyid: String,
    key: PublicKey,
}

impl TrustedKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = PublicKey::from_slice(bytes).ok()?;
        Some(Self { keyid: keyid_of(bytes), key })
    }

    /// A public key as text: base64 of its 32 bytes (what `meshguard keygen` writes to
    /// `KEY.pub`).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = base64_decode(text.trim())?;
        if bytes.len() != PublicKey::BYTES {
            return None;
        }
        Self::from_bytes(&bytes)
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.key.as_ref()
    }
}

/// The keys a policy must be signed by (any one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustRoots {
    keys: Vec<TrustedKey>,
}

impl TrustRoots {
    /// A list of base64 public keys separated by commas, spaces or newlines (the
    /// `MESHGUARD_TRUST_KEYS` format). Any entry that is not a key makes the whole list
    /// invalid: a typo must not silently drop a trust root, nor leave the module without any.
    pub fn parse_list(text: &str) -> Result<Self, String> {
        let mut roots = TrustRoots::default();
        for (i, entry) in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()).enumerate() {
            let key = TrustedKey::parse(entry)
                .ok_or_else(|| format!("entry {i} is not a base64 Ed25519 public key (32 bytes)"))?;
            roots.push(key);
        }
        Ok(roots)
    }

    /// Add a key (once).
    pub fn push(&mut self, key: TrustedKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    pub fn extend(&mut self, other: TrustRoots) {
        for k in other.keys {
            self.push(k);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// A verified (or opened) signed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedPolicy {
    /// The rollback serial.
    pub serial: u64,
    /// The policy document, `serial` taken out: what `Policy::from_value` compiles.
    pub policy: Value,
    /// The keyid of the key whose signature verified (empty when opened unverified).
    pub keyid: String,
}

/// Verify an envelope against the trust roots: payload type, a signature by a trusted key
/// over [`pae`], then the payload's serial. Does not check the serial against history: see
/// [`check_serial`].
pub fn verify(envelope: &Envelope, roots: &TrustRoots) -> Result<SignedPolicy, EnvelopeError> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(EnvelopeError::PayloadType(envelope.payload_type.clone()));
    }
    let message = pae(envelope.payload_type.as_bytes(), &envelope.payload);
    let mut named_a_trusted_key = false;
    for s in &envelope.signatures {
        // An empty keyid (allowed by DSSE) is tried against every key.
        for key in roots.keys.iter().filter(|k| s.keyid.is_empty() || k.keyid == s.keyid) {
            named_a_trusted_key = true;
            let Ok(sig) = Signature::from_slice(&s.sig) else { continue };
            if key.key.verify(&message, &sig).is_ok() {
                let mut signed = split_serial(&envelope.payload)?;
                signed.keyid = key.keyid.clone();
                return Ok(signed);
            }
        }
    }
    if named_a_trusted_key {
        Err(EnvelopeError::BadSignature)
    } else {
        Err(EnvelopeError::UnknownKey)
    }
}

/// Rollback: a serial lower than the highest accepted is refused. The same serial again is
/// accepted (Envoy configures every VM and may configure a plugin again with the same bytes).
pub fn check_serial(serial: u64, highest: Option<u64>) -> Result<(), EnvelopeError> {
    match highest {
        Some(highest) if serial < highest => Err(EnvelopeError::Rollback { serial, highest }),
        _ => Ok(()),
    }
}

/// The payload as JSON: its `serial`, and the policy without it.
fn split_serial(payload: &[u8]) -> Result<SignedPolicy, EnvelopeError> {
    let mut value: Value = serde_json::from_slice(payload)
        .map_err(|e| EnvelopeError::Malformed(format!("the payload is not JSON: {e}")))?;
    let obj =
        value.as_object_mut().ok_or_else(|| EnvelopeError::Malformed("the payload is not a JSON object".into()))?;
    let serial = obj.remove(SERIAL_FIELD).and_then(|s| s.as_u64()).filter(|s| *s > 0).ok_or(EnvelopeError::NoSerial)?;
    Ok(SignedPolicy { serial, policy: value, keyid: String::new() })
}

/// The payload a signer signs: the policy with `serial` set.
pub fn payload_with_serial(policy: &Value, serial: u64) -> Option<Vec<u8>> {
    let mut policy = policy.clone();
    policy.as_object_mut()?.insert(SERIAL_FIELD.into(), Value::from(serial));
    Some(policy.to_string().into_bytes())
}

/// The embedded trust-root slot: a fixed-size byte array in the module's data segment that
/// `meshguard package --trust-key` overwrites in place (the module cannot read its own custom
/// sections at run time, but it can read its own memory). Layout, [`SLOT_LEN`] bytes:
/// [`SLOT_MARKER`], one count byte (0 to [`SLOT_MAX_KEYS`]), [`SLOT_MAX_KEYS`] × 32 key bytes,
/// [`SLOT_END`]. The markers let the packager find the slot (exactly once) and check that the
/// whole slot is there; the filter reads only the count and the keys (so the marker bytes
/// appear once in the module: in the slot).
pub const SLOT_MARKER: &[u8; 24] = b"MESHGUARD_TRUST_SLOT_V1:";
pub const SLOT_END: &[u8; 24] = b":MESHGUARD_TRUST_SLOT_Z1";
pub const SLOT_MAX_KEYS: usize = 8;
const SLOT_KEYS_AT: usize = SLOT_MARKER.len() + 1;
const SLOT_END_AT: usize = SLOT_KEYS_AT + SLOT_MAX_KEYS * 32;
pub const SLOT_LEN: usize = SLOT_END_AT + SLOT_END.len();

/// The unpatched slot: markers, no keys.
// Constant indices below SLOT_LEN by construction; evaluated at compile time for the filter's
// static (an out-of-bounds index there is a build error, not a trap).
#[allow(clippy::indexing_slicing)]
pub const fn empty_slot() -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    let mut i = 0;
    while i < SLOT_MARKER.len() {
        slot[i] = SLOT_MARKER[i];
        slot[SLOT_END_AT + i] = SLOT_END[i];
        i += 1;
    }
    slot
}

/// A patched slot holding `keys` (at most [`SLOT_MAX_KEYS`]).
pub fn filled_slot(keys: &[TrustedKey]) -> Option<[u8; SLOT_LEN]> {
    if keys.len() > SLOT_MAX_KEYS {
        return None;
    }
    let mut slot = empty_slot();
    *slot.get_mut(SLOT_MARKER.len())? = u8::try_from(keys.len()).ok()?;
    for (i, key) in keys.iter().enumerate() {
        let at = SLOT_KEYS_AT + i * 32;
        slot.get_mut(at..at + 32)?.copy_from_slice(key.as_bytes());
    }
    Some(slot)
}

/// The trust roots in a slot (markers not checked: see [`SLOT_MARKER`]). A count over
/// [`SLOT_MAX_KEYS`] or a key that is not a valid Ed25519 point is an error: a damaged slot
/// must not read as "no trust roots".
pub fn read_slot(slot: &[u8; SLOT_LEN]) -> Result<TrustRoots, String> {
    let count = usize::from(slot.get(SLOT_MARKER.len()).copied().unwrap_or(u8::MAX));
    if count > SLOT_MAX_KEYS {
        return Err(format!("the embedded trust-root slot says {count} keys (at most {SLOT_MAX_KEYS})"));
    }
    let mut roots = TrustRoots::default();
    for i in 0..count {
        let at = SLOT_KEYS_AT + i * 32;
        let key = slot
            .get(at..at + 32)
            .and_then(TrustedKey::from_bytes)
            .ok_or_else(|| format!("embedded trust key {i} is not an Ed25519 public key"))?;
        roots.push(key);
    }
    Ok(roots)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(B64.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64, standard or URL-safe alphabet, padded or not (DSSE allows both). `None` on any
/// other character, bad padding or non-zero trailing bits.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let unpadded = match bytes {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => bytes,
    };
    if bytes.len() != unpadded.len() && !bytes.len().is_multiple_of(4) {
        return None;
    }
    if unpadded.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(unpadded.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in unpadded {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_compact::{KeyPair, Seed};
    use serde_json::json;

    fn keypair(n: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([n; 32]))
    }

    fn sign(kp: &KeyPair, payload_type: &str, payload: &[u8]) -> Envelope {
        let sig = kp.sk.sign(pae(payload_type.as_bytes(), payload), None);
        Envelope {
            payload_type: payload_type.into(),
            payload: payload.to_vec(),
            signatures: vec![EnvelopeSignature { keyid: keyid_of(kp.pk.as_ref()), sig: sig.to_vec() }],
        }
    }

    fn roots(kps: &[&KeyPair]) -> TrustRoots {
        let mut r = TrustRoots::default();
        for kp in kps {
            r.push(TrustedKey::from_bytes(kp.pk.as_ref()).unwrap());
        }
        r
    }

    fn policy() -> Value {
        json!({"version": 1, "mode": "enforce"})
    }

    fn signed(kp: &KeyPair, serial: u64) -> Envelope {
        sign(kp, PAYLOAD_TYPE, &payload_with_serial(&policy(), serial).unwrap())
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae(b"http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae(b"", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn a_signed_policy_verifies_and_loses_its_serial() {
        let kp = keypair(1);
        let env = Envelope::from_json(signed(&kp, 7).to_json().as_bytes()).unwrap();
        let ok = verify(&env, &roots(&[&kp])).unwrap();
        assert_eq!(ok.serial, 7);
        assert_eq!(ok.policy, policy());
        assert_eq!(ok.keyid, keyid_of(kp.pk.as_ref()));
        // Any of several roots will do.
        assert!(verify(&env, &roots(&[&keypair(2), &kp])).is_ok());
    }

    #[test]
    fn each_forgery_has_its_reason() {
        let kp = keypair(1);
        let other = keypair(2);
        let trusted = roots(&[&kp]);
        // Signed by another key.
        assert_eq!(verify(&signed(&other, 7), &trusted).unwrap_err(), EnvelopeError::UnknownKey);
        // Another key claiming the trusted key's keyid.
        let mut forged = signed(&other, 7);
        forged.signatures[0].keyid = keyid_of(kp.pk.as_ref());
        assert_eq!(verify(&forged, &trusted).unwrap_err(), EnvelopeError::BadSignature);
        // Tampered payload: one byte.
        let mut tampered = signed(&kp, 7);
        let at = tampered.payload.iter().position(|b| *b == b'e').unwrap();
        tampered.payload[at] = b'E';
        assert_eq!(verify(&tampered, &trusted).unwrap_err(), EnvelopeError::BadSignature);
        // A payload type changed after signing.
        let mut retyped = signed(&kp, 7);
        retyped.payload_type = "application/json".into();
        assert_eq!(verify(&retyped, &trusted).unwrap_err().reason(), "payload_type");
        // Signed with the right key but the wrong type from the start.
        let wrong_type = sign(&kp, "application/json", &payload_with_serial(&policy(), 1).unwrap());
        assert_eq!(verify(&wrong_type, &trusted).unwrap_err().reason(), "payload_type");
        // No signatures at all.
        let mut none = signed(&kp, 7);
        none.signatures.clear();
        assert_eq!(verify(&none, &trusted).unwrap_err(), EnvelopeError::UnknownKey);
        // A signature of the wrong length.
        let mut short = signed(&kp, 7);
        short.signatures[0].sig.truncate(10);
        assert_eq!(verify(&short, &trusted).unwrap_err(), EnvelopeError::BadSignature);
        // Empty keyid: tried against every key.
        let mut anon = signed(&kp, 7);
        anon.signatures[0].keyid.clear();
        assert!(verify(&anon, &trusted).is_ok());
        // No roots: nothing verifies.
        assert_eq!(verify(&signed(&kp, 7), &TrustRoots::default()).unwrap_err(), EnvelopeError::UnknownKey);
    }

    #[test]
    fn serial_is_required_and_positive() {
        let kp = keypair(1);
        for payload in [
            json!({"version": 1}),
            json!({"version": 1, "serial": 0}),
            json!({"version": 1, "serial": "5"}),
            json!({"version": 1, "serial": -1}),
        ] {
            let env = sign(&kp, PAYLOAD_TYPE, payload.to_string().as_bytes());
            assert_eq!(verify(&env, &roots(&[&kp])).unwrap_err(), EnvelopeError::NoSerial, "{payload}");
        }
        let not_json = sign(&kp, PAYLOAD_TYPE, b"version: 1");
        assert_eq!(verify(&not_json, &roots(&[&kp])).unwrap_err().reason(), "malformed_envelope");
    }

    #[test]
    fn rollback_refuses_only_lower_serials() {
        assert!(check_serial(5, None).is_ok());
        assert!(check_serial(5, Some(5)).is_ok());
        assert!(check_serial(6, Some(5)).is_ok());
        assert_eq!(check_serial(4, Some(5)).unwrap_err(), EnvelopeError::Rollback { serial: 4, highest: 5 });
        assert_eq!(check_serial(4, Some(5)).unwrap_err().reason(), "rollback");
    }

    #[test]
    fn malformed_envelopes_are_refused_by_name() {
        for bad in [
            json!([]),
            json!({"payloadType": PAYLOAD_TYPE}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": {}}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "not base64!", "signatures": []}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": [{"keyid": 1, "sig": "AA=="}]}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": [{"keyid": "x"}]}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": [], "policy": {}}),
            json!({"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": vec![json!({"sig": "AA=="}); MAX_SIGNATURES + 1]}),
        ] {
            assert_eq!(Envelope::from_value(&bad).unwrap_err().reason(), "malformed_envelope", "{bad}");
        }
        assert!(Envelope::from_json(b"{not json").is_err());
        assert!(is_envelope(&json!({"signatures": []})));
        assert!(is_envelope(&json!({"payloadType": "x"})));
        assert!(!is_envelope(&json!({"version": 1})));
        assert!(!is_envelope(&json!("payloadType")));
    }

    #[test]
    fn base64_round_trips_and_rejects_junk() {
        for n in 0..70u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let enc = base64_encode(&data);
            assert_eq!(base64_decode(&enc).unwrap(), data);
            assert_eq!(base64_decode(enc.trim_end_matches('=')).unwrap(), data);
            let url = enc.replace('+', "-").replace('/', "_");
            assert_eq!(base64_decode(&url).unwrap(), data);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        for bad in ["a", "aGVsbG8==", "aGVsbG9=", "aGV sbG8=", "aGVs\0bG8=", "=", "aGVsbG8=x"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn trust_root_lists_fail_whole() {
        let a = base64_encode(keypair(1).pk.as_ref());
        let b = base64_encode(keypair(2).pk.as_ref());
        let roots = TrustRoots::parse_list(&format!(" {a},{b}\n{a} ")).unwrap();
        assert_eq!(roots.len(), 2);
        assert!(TrustRoots::parse_list("").unwrap().is_empty());
        assert!(TrustRoots::parse_list(&format!("{a},AAAA")).is_err());
        assert!(TrustRoots::parse_list(&format!("{a},{}", base64_encode(&[0u8; 64]))).is_err());
        assert_eq!(roots.keys()[0].keyid(), keyid_of(keypair(1).pk.as_ref()));
        assert_eq!(roots.keys()[0].keyid().len(), 16);
    }

    #[test]
    fn the_slot_round_trips_and_refuses_damage() {
        let empty = empty_slot();
        assert!(empty.starts_with(SLOT_MARKER) && empty.ends_with(SLOT_END));
        assert!(read_slot(&empty).unwrap().is_empty());
        let keys: Vec<TrustedKey> = (1..=3).map(|n| TrustedKey::from_bytes(keypair(n).pk.as_ref()).unwrap()).collect();
        let slot = filled_slot(&keys).unwrap();
        assert_eq!(slot.len(), empty.len());
        assert!(slot.starts_with(SLOT_MARKER) && slot.ends_with(SLOT_END));
        assert_eq!(read_slot(&slot).unwrap().keys(), &keys[..]);
        let nine: Vec<TrustedKey> = (0..9).map(|_| keys[0].clone()).collect();
        assert!(filled_slot(&nine).is_none());
        let mut bad = slot;
        bad[SLOT_MARKER.len()] = 9;
        assert!(read_slot(&bad).is_err());
        let mut bad = empty;
        bad[SLOT_MARKER.len()] = 1; // one key of zeros... which is a valid point encoding?
        let zero_key = TrustedKey::from_bytes(&[0u8; 32]);
        assert_eq!(read_slot(&bad).is_ok(), zero_key.is_some());
    }
}
