//! Signed policies for people and CI: `meshguard keygen`, `sign`, `verify` (the DSSE format
//! and its verification live in [`policy::envelope`], shared with the filter).
//!
//! Private keys (the 32-byte Ed25519 seed, base64) are read from a file (`--key FILE`) or an
//! environment variable (`--key-env VAR`), are never printed or logged, and a key file other
//! users can read is refused.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use ed25519_compact::{KeyPair, Seed};
use policy::envelope::{self, Envelope, EnvelopeSignature, TrustRoots, TrustedKey, PAYLOAD_TYPE};
use serde_json::Value;

/// Where a private key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

/// A private key, in memory only. `Debug` does not show it.
pub struct SigningKey {
    pair: KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(keyid {})", self.keyid())
    }
}

impl SigningKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SigningKey { pair: KeyPair::from_seed(Seed::new(seed)) }
    }

    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .context("reading /dev/urandom")?;
        Ok(Self::from_seed(seed))
    }

    /// The key's text form (what `keygen` writes to `NAME.key`): base64 of the seed.
    fn secret_text(&self) -> String {
        envelope::base64_encode(self.pair.sk.seed().as_ref())
    }

    fn parse(text: &str) -> Result<Self> {
        // Never quote the text in an error: it is a secret.
        let bytes = envelope::base64_decode(text.trim()).ok_or_else(|| anyhow!("the private key is not base64"))?;
        let seed: [u8; 32] = match bytes.len() {
            32 => bytes.as_slice().try_into()?,
            // The 64-byte secret-key form (seed then public key).
            64 => bytes.get(..32).ok_or_else(|| anyhow!("short key"))?.try_into()?,
            n => bail!("the private key has {n} bytes; an Ed25519 seed has 32"),
        };
        Ok(Self::from_seed(seed))
    }

    /// Load a private key; refuses a key file that other users can read.
    pub fn load(source: &KeySource) -> Result<Self> {
        match source {
            KeySource::File(path) => {
                let meta =
                    std::fs::metadata(path).with_context(|| format!("cannot read key file {}", path.display()))?;
                let mode = meta.permissions().mode();
                if mode & 0o004 != 0 {
                    bail!(
                        "refusing the private key {}: it is world-readable (mode {:o}); run chmod 600 {}",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    );
                }
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read key file {}", path.display()))?;
                Self::parse(&text).with_context(|| format!("key file {}", path.display()))
            }
            KeySource::Env(var) => {
                let text = std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?;
                Self::parse(&text).with_context(|| format!("environment variable {var}"))
            }
        }
    }

    pub fn public(&self) -> TrustedKey {
        // A valid key pair's public half is always a valid public key.
        TrustedKey::from_bytes(self.pair.pk.as_ref()).unwrap_or_else(|| unreachable!())
    }

    pub fn public_text(&self) -> String {
        envelope::base64_encode(self.pair.pk.as_ref())
    }

    pub fn keyid(&self) -> String {
        envelope::keyid_of(self.pair.pk.as_ref())
    }

    /// The DSSE envelope for this payload (deterministic: Ed25519 without noise).
    pub fn sign_payload(&self, payload: Vec<u8>) -> Envelope {
        let sig = self.pair.sk.sign(envelope::pae(PAYLOAD_TYPE.as_bytes(), &payload), None);
        Envelope {
            payload_type: PAYLOAD_TYPE.to_string(),
            payload,
            signatures: vec![EnvelopeSignature { keyid: self.keyid(), sig: sig.to_vec() }],
        }
    }
}

/// `meshguard keygen --out NAME`: writes `NAME.key` (mode 600) and `NAME.pub`. Refuses to
/// overwrite. Returns the two paths.
pub fn keygen(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let key_path = with_suffix(out, "key");
    let pub_path = with_suffix(out, "pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    let key = SigningKey::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("creating {}", key_path.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", key.secret_text()).as_bytes())?;
    std::fs::write(&pub_path, format!("{}\n", key.public_text()))?;
    Ok((key_path, pub_path))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Public keys from `.pub` files (one or more base64 keys each).
pub fn load_public_keys(paths: &[PathBuf]) -> Result<TrustRoots> {
    let mut roots = TrustRoots::default();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let keys = TrustRoots::parse_list(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if keys.is_empty() {
            bail!("{}: no public key", path.display());
        }
        roots.extend(keys);
    }
    Ok(roots)
}

/// The serial to sign with: `--serial`, else the policy's own `serial` field, else the
/// current Unix time in seconds (monotonic enough for a CI that signs on every change).
pub fn choose_serial(policy: &Value, flag: Option<u64>) -> Result<u64> {
    if let Some(s) = flag {
        if s == 0 {
            bail!("--serial must be positive");
        }
        return Ok(s);
    }
    if let Some(s) = policy.get(envelope::SERIAL_FIELD) {
        return s.as_u64().filter(|s| *s > 0).ok_or_else(|| anyhow!("the policy's serial must be a positive integer"));
    }
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// Sign a policy file: validated first (never sign what the filter would refuse). Returns the
/// envelope JSON and the serial.
pub fn sign_policy(policy_path: &Path, key: &SigningKey, serial: Option<u64>) -> Result<(String, u64)> {
    let mut value = crate::policy_file::load_raw_value(policy_path)?;
    if envelope::is_envelope(&value) {
        bail!("{} is already a signed envelope", policy_path.display());
    }
    let serial = choose_serial(&value, serial)?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove(envelope::SERIAL_FIELD);
    }
    if let Err(errors) = policy::Policy::from_value(value.clone()) {
        bail!("{} is not a valid policy; not signing it:\n{errors}", policy_path.display());
    }
    let payload =
        envelope::payload_with_serial(&value, serial).ok_or_else(|| anyhow!("the policy is not a JSON object"))?;
    Ok((key.sign_payload(payload).to_json(), serial))
}

/// What `verify` found.
#[derive(Debug)]
pub struct Verified {
    pub serial: u64,
    pub keyid: String,
    pub revision: String,
}

/// Verify an envelope file against public keys, and that its policy compiles.
pub fn verify_file(envelope_path: &Path, roots: &TrustRoots) -> Result<Verified> {
    let bytes = std::fs::read(envelope_path).with_context(|| format!("cannot read {}", envelope_path.display()))?;
    let env =
        Envelope::from_json(&bytes).map_err(|e| anyhow!("{}: {e} (reason {})", envelope_path.display(), e.reason()))?;
    let signed = envelope::verify(&env, roots)
        .map_err(|e| anyhow!("{}: {e} (reason {})", envelope_path.display(), e.reason()))?;
    let compiled =
        policy::Policy::from_value(signed.policy).map_err(|e| anyhow!("the signed policy is invalid:\n{e}"))?;
    Ok(Verified { serial: signed.serial, keyid: signed.keyid, revision: compiled.revision().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        crate::scratch_dir("signing-unit").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keygen_sign_verify_round_trip() {
        let d = dir();
        let (key_path, pub_path) = keygen(&d.join("ci")).unwrap_or_else(|e| panic!("{e:#}"));
        let mode = std::fs::metadata(&key_path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert!(keygen(&d.join("ci")).is_err(), "must not overwrite");
        let key = SigningKey::load(&KeySource::File(key_path.clone())).unwrap_or_else(|e| panic!("{e:#}"));
        let policy = d.join("p.yaml");
        std::fs::write(&policy, "version: 1\nmode: enforce\n").unwrap_or_else(|e| panic!("{e}"));
        let (json, serial) = sign_policy(&policy, &key, Some(42)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(serial, 42);
        let env_path = d.join("p.signed.json");
        std::fs::write(&env_path, &json).unwrap_or_else(|e| panic!("{e}"));
        let roots = load_public_keys(&[pub_path]).unwrap_or_else(|e| panic!("{e:#}"));
        let v = verify_file(&env_path, &roots).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((v.serial, v.keyid.as_str()), (42, key.keyid().as_str()));
        // The signed policy has the revision of the unsigned one.
        let plain = crate::policy_file::load_policy(&policy).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.revision, plain.revision());
        // Deterministic signatures: the same input, the same envelope.
        assert_eq!(sign_policy(&policy, &key, Some(42)).map(|x| x.0).ok(), Some(json.clone()));
        // Another key does not verify it.
        let other = SigningKey::from_seed([9; 32]);
        let mut other_roots = TrustRoots::default();
        other_roots.push(other.public());
        let err = verify_file(&env_path, &other_roots).map(|_| ()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown_key"), "{err:#}");
        // An invalid policy is not signed.
        std::fs::write(&policy, "version: 1\nbogus: true\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(sign_policy(&policy, &key, Some(1)).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn world_readable_keys_are_refused_and_never_quoted() {
        let d = dir();
        let path = d.join("k.key");
        let secret = envelope::base64_encode(&[7u8; 32]);
        std::fs::write(&path, &secret).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
        let err = SigningKey::load(&KeySource::File(path.clone())).unwrap_err();
        assert!(format!("{err:#}").contains("world-readable"), "{err:#}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
        assert!(SigningKey::load(&KeySource::File(path.clone())).is_ok());
        // A broken key: the error does not contain it.
        std::fs::write(&path, format!("{secret}!")).unwrap_or_else(|e| panic!("{e}"));
        let err = SigningKey::load(&KeySource::File(path)).unwrap_err();
        assert!(!format!("{err:#} {err:?}").contains(&secret[..20]), "{err:#}");
        let key = SigningKey::from_seed([7; 32]);
        assert!(!format!("{key:?}").contains(&secret[..20]));
        let _ = std::fs::remove_dir_all(&d);
    }
}
