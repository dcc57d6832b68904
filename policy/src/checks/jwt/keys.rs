//! JWKS parsing: the public keys a provider's tokens are verified with.
//!
//! Only asymmetric signature keys: RSA (`n`, `e`, at least 2048 bits), EC P-256 and P-384
//! (`x`, `y`, checked to be on the curve) and OKP Ed25519 (`x`). A symmetric key (`kty: oct`)
//! is refused by name: it would put a shared secret, with which anyone who reads the plugin
//! configuration can mint tokens, into the configuration. Private key members are refused too.

use rsa::{BigUint, RsaPublicKey};
use serde_json::{Map, Value};

use super::verify::b64url_decode;
use crate::error::ConfigErrors;

/// More keys than this in one JWKS is refused (a token without `kid` would otherwise make the
/// filter try them all).
pub const MAX_KEYS: usize = 32;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// The signature algorithms meshguard verifies. `none` and HS* are not among them, ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 9] =
        [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384, Alg::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A verification key, ready to use.
#[derive(Clone)]
pub enum KeyMaterial {
    /// Imported once, when the policy is compiled.
    Rsa(Box<RsaPublicKey>),
    P256(Box<p256::ecdsa::VerifyingKey>),
    P384(Box<p384::ecdsa::VerifyingKey>),
    Ed25519(Box<ed25519_compact::PublicKey>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMaterial::Rsa(_) => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        })
    }
}

impl KeyMaterial {
    /// Whether a token signed with `alg` can be verified with this key: the algorithm family
    /// must match the key type (an RS256 token never meets an EC key, and no key is ever an
    /// HMAC secret).
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (KeyMaterial::Rsa(_), Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512)
                | (KeyMaterial::P256(_), Alg::ES256)
                | (KeyMaterial::P384(_), Alg::ES384)
                | (KeyMaterial::Ed25519(_), Alg::EdDSA)
        )
    }
}

/// One public key of a provider.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one: tokens must then use exactly that.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
}

impl Jwk {
    pub fn accepts(&self, alg: Alg) -> bool {
        self.material.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

fn b64_member(key: &Map<String, Value>, name: &str, at: &str, errs: &mut ConfigErrors) -> Option<Vec<u8>> {
    match key.get(name) {
        None => {
            errs.push(format!("{at}.{name}"), "missing");
            None
        }
        Some(Value::String(s)) => match b64url_decode(s.as_bytes()) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                errs.push(format!("{at}.{name}"), "not base64url (RFC 7515, no padding)");
                None
            }
        },
        Some(_) => {
            errs.push(format!("{at}.{name}"), "must be a base64url string");
            None
        }
    }
}

fn str_member<'k>(key: &'k Map<String, Value>, name: &str, at: &str, errs: &mut ConfigErrors) -> Option<&'k str> {
    match key.get(name) {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errs.push(format!("{at}.{name}"), "must be a string");
            None
        }
    }
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    v.get(start..).unwrap_or_default()
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = strip_leading_zeros(n);
    match n.first() {
        None => 0,
        Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// Parse one JWK at `at` (for example `jwt.providers[0].jwks.keys[2]`).
pub fn parse_jwk(key: &Map<String, Value>, at: &str, errs: &mut ConfigErrors) -> Option<Jwk> {
    let before = errs.0.len();
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        if key.contains_key(private) && key.get("kty").and_then(Value::as_str) != Some("oct") {
            errs.push(
                format!("{at}.{private}"),
                "private key material in a policy: give the public key only (never the issuer's signing key)",
            );
        }
    }
    let kid = str_member(key, "kid", at, errs).map(str::to_string);
    if let Some(u) = str_member(key, "use", at, errs) {
        if u != "sig" {
            errs.push(format!("{at}.use"), format!("'{u}': only signature keys (use: sig) verify tokens"));
        }
    }
    if let Some(ops) = key.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            errs.push(format!("{at}.key_ops"), "must be an array listing \"verify\"");
        }
    }
    let alg = match str_member(key, "alg", at, errs) {
        None => None,
        Some(name) => match Alg::from_name(name) {
            Some(a) => Some(a),
            None => {
                errs.push(
                    format!("{at}.alg"),
                    format!("'{name}' is not an allowed algorithm (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; never none or HS*)"),
                );
                None
            }
        },
    };
    let material = match str_member(key, "kty", at, errs) {
        None => {
            errs.push(format!("{at}.kty"), "missing (RSA, EC or OKP)");
            None
        }
        Some("oct") => {
            errs.push(
                format!("{at}.kty"),
                "symmetric keys (kty: oct) are refused: an HMAC secret in the plugin configuration lets anyone who can read it mint tokens; use an asymmetric key (RSA, EC, OKP)",
            );
            None
        }
        Some("RSA") => {
            let n = b64_member(key, "n", at, errs);
            let e = b64_member(key, "e", at, errs);
            match (n, e) {
                (Some(n), Some(e)) => {
                    let bits = rsa_bits(&n);
                    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                        errs.push(
                            format!("{at}.n"),
                            format!(
                                "an RSA modulus of {bits} bits: {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are accepted"
                            ),
                        );
                        None
                    } else {
                        let key = RsaPublicKey::new_with_max_size(
                            BigUint::from_bytes_be(&n),
                            BigUint::from_bytes_be(&e),
                            MAX_RSA_BITS,
                        );
                        match key {
                            Ok(key) => Some(KeyMaterial::Rsa(Box::new(key))),
                            Err(_) => {
                                errs.push(format!("{at}.n"), "not a valid RSA public key (n, e)");
                                None
                            }
                        }
                    }
                }
                _ => None,
            }
        }
        Some("EC") => {
            let crv = str_member(key, "crv", at, errs);
            let x = b64_member(key, "x", at, errs);
            let y = b64_member(key, "y", at, errs);
            let len = match crv {
                Some("P-256") => Some(32),
                Some("P-384") => Some(48),
                Some(other) => {
                    errs.push(format!("{at}.crv"), format!("'{other}' is not supported (P-256, P-384)"));
                    None
                }
                None => {
                    errs.push(format!("{at}.crv"), "missing (P-256 or P-384)");
                    None
                }
            };
            match (len, x, y) {
                (Some(len), Some(x), Some(y)) if x.len() == len && y.len() == len => {
                    let mut sec1 = Vec::with_capacity(1 + 2 * len);
                    sec1.push(4u8);
                    sec1.extend_from_slice(&x);
                    sec1.extend_from_slice(&y);
                    let material = if len == 32 {
                        meshguard_sig::p256_key(&sec1).map(|k| KeyMaterial::P256(Box::new(k)))
                    } else {
                        meshguard_sig::p384_key(&sec1).map(|k| KeyMaterial::P384(Box::new(k)))
                    };
                    if material.is_none() {
                        errs.push(format!("{at}.x"), "(x, y) is not a point of the curve");
                    }
                    material
                }
                (Some(len), Some(_), Some(_)) => {
                    errs.push(format!("{at}.x"), format!("x and y must be {len} bytes each for this curve"));
                    None
                }
                _ => None,
            }
        }
        Some("OKP") => {
            let x = b64_member(key, "x", at, errs);
            match str_member(key, "crv", at, errs) {
                Some("Ed25519") => match x.map(|x| ed25519_compact::PublicKey::from_slice(&x)) {
                    Some(Ok(k)) => Some(KeyMaterial::Ed25519(Box::new(k))),
                    Some(Err(_)) => {
                        errs.push(format!("{at}.x"), "not an Ed25519 public key (32 bytes)");
                        None
                    }
                    None => None,
                },
                Some(other) => {
                    errs.push(format!("{at}.crv"), format!("'{other}' is not supported (Ed25519)"));
                    None
                }
                None => {
                    errs.push(format!("{at}.crv"), "missing (Ed25519)");
                    None
                }
            }
        }
        Some(other) => {
            errs.push(format!("{at}.kty"), format!("'{other}' is not supported (RSA, EC, OKP)"));
            None
        }
    }?;
    if let Some(a) = alg {
        if !material.fits(a) {
            errs.push(format!("{at}.alg"), format!("{} does not fit a {material:?} key", a.as_str()));
        }
    }
    if errs.0.len() > before {
        return None;
    }
    Some(Jwk { kid, alg, material })
}

/// Parse a JWK Set's `keys` array at `at` (for example `jwt.providers[0].jwks.keys`).
pub fn parse_keys(keys: &[Map<String, Value>], at: &str, errs: &mut ConfigErrors) -> Vec<Jwk> {
    if keys.is_empty() {
        errs.push(at, "lists no key");
    }
    if keys.len() > MAX_KEYS {
        errs.push(at, format!("more than {MAX_KEYS} keys"));
    }
    let mut out: Vec<Jwk> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let kat = format!("{at}[{i}]");
        if let Some(jwk) = parse_jwk(key, &kat, errs) {
            if let Some(kid) = &jwk.kid {
                if out.iter().any(|k| k.kid.as_deref() == Some(kid)) {
                    errs.push(format!("{kat}.kid"), format!("duplicate kid '{kid}'"));
                }
            }
            out.push(jwk);
        }
    }
    out
}

/// Parse a JWK Set document (`{"keys": [...]}`), as a remote JWKS endpoint serves it.
pub fn parse_jwks_json(json: &[u8], at: &str) -> Result<Vec<Jwk>, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let keys = match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(mut set)) => match set.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => {
                errs.push(format!("{at}.keys"), "missing or not an array");
                return Err(errs);
            }
        },
        _ => {
            errs.push(at, "not a JSON object");
            return Err(errs);
        }
    };
    let mut objects = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        match k {
            Value::Object(m) => objects.push(m),
            _ => errs.push(format!("{at}.keys[{i}]"), "not a JSON object"),
        }
    }
    let keys = parse_keys(&objects, &format!("{at}.keys"), &mut errs);
    if errs.is_empty() {
        Ok(keys)
    } else {
        Err(errs)
    }
}

/// Verify `signed` (`header.payload`, as sent) against the decoded `signature` with `key`
/// for `alg`, with the RustCrypto primitives directly (`rsa`, `p256`, `p384`) and
/// `ed25519-compact`: the ones jwt-simple's `verify_token` ends in, without its token layer and
/// its key wrappers, whose claim parsing, generic instantiations per algorithm and `anyhow`
/// errors with backtraces cost meshguard.wasm hundreds of KiB. The claims are checked by the
/// caller, with the time it was given.
pub fn verify_signature(signed: &[u8], signature: &[u8], key: &KeyMaterial, alg: Alg) -> bool {
    // The generic RustCrypto verifiers are generated in meshguard-sig, built for size.
    use meshguard_sig::{verify_es256, verify_es384, verify_rsa, Sha};
    match (key, alg) {
        (KeyMaterial::Rsa(k), _) => match alg {
            Alg::RS256 => verify_rsa(k, false, Sha::S256, signed, signature),
            Alg::RS384 => verify_rsa(k, false, Sha::S384, signed, signature),
            Alg::RS512 => verify_rsa(k, false, Sha::S512, signed, signature),
            Alg::PS256 => verify_rsa(k, true, Sha::S256, signed, signature),
            Alg::PS384 => verify_rsa(k, true, Sha::S384, signed, signature),
            Alg::PS512 => verify_rsa(k, true, Sha::S512, signed, signature),
            Alg::ES256 | Alg::ES384 | Alg::EdDSA => false,
        },
        (KeyMaterial::P256(k), Alg::ES256) => verify_es256(k, signed, signature),
        (KeyMaterial::P384(k), Alg::ES384) => verify_es384(k, signed, signature),
        (KeyMaterial::Ed25519(k), Alg::EdDSA) => {
            ed25519_compact::Signature::from_slice(signature).is_ok_and(|sig| k.verify(signed, &sig).is_ok())
        }
        _ => false,
    }
}
