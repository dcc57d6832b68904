//! The JWT check's signature primitives as non-generic functions. The RustCrypto verifiers
//! are generic (over the hash, the padding, the curve): called from the policy crate, they
//! would be generated there, built for speed. Generated here, they are built for size (the
//! workspace Cargo.toml gives this crate opt-level "s"): they run on a verified-token cache
//! miss only, never on the hot path (a cache hit); the key imports run when a policy is
//! compiled. policy/src/checks/jwt/keys.rs (`verify_signature`, `parse_jwk`) calls them.

use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};

/// The SHA-2 size of an RSA algorithm: RS256/PS256, RS384/PS384, RS512/PS512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha {
    S256,
    S384,
    S512,
}

/// RSASSA-PKCS1-v1_5 (`pss` false: RS256/384/512) or RSASSA-PSS (PS256/384/512).
pub fn verify_rsa(k: &RsaPublicKey, pss: bool, sha: Sha, signed: &[u8], signature: &[u8]) -> bool {
    match (pss, sha) {
        (false, Sha::S256) => k.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed), signature).is_ok(),
        (false, Sha::S384) => k.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(signed), signature).is_ok(),
        (false, Sha::S512) => k.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(signed), signature).is_ok(),
        (true, Sha::S256) => k.verify(Pss::new::<Sha256>(), &Sha256::digest(signed), signature).is_ok(),
        (true, Sha::S384) => k.verify(Pss::new::<Sha384>(), &Sha384::digest(signed), signature).is_ok(),
        (true, Sha::S512) => k.verify(Pss::new::<Sha512>(), &Sha512::digest(signed), signature).is_ok(),
    }
}

/// ES256. Hashed with the SHA-2 the RSA path uses (one SHA-2 crate in the module, not two),
/// then verified as ECDSA verifies a message: the same hash, the same check.
pub fn verify_es256(k: &p256::ecdsa::VerifyingKey, signed: &[u8], signature: &[u8]) -> bool {
    p256::ecdsa::Signature::try_from(signature).is_ok_and(|sig| k.verify_prehash(&Sha256::digest(signed), &sig).is_ok())
}

/// ES384, as [`verify_es256`].
pub fn verify_es384(k: &p384::ecdsa::VerifyingKey, signed: &[u8], signature: &[u8]) -> bool {
    p384::ecdsa::Signature::try_from(signature).is_ok_and(|sig| k.verify_prehash(&Sha384::digest(signed), &sig).is_ok())
}

/// A P-256 public key from its SEC1 encoding (`04 || x || y`), as a JWK's `x` and `y` give it.
pub fn p256_key(sec1: &[u8]) -> Option<p256::ecdsa::VerifyingKey> {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()
}

/// A P-384 public key, as [`p256_key`].
pub fn p384_key(sec1: &[u8]) -> Option<p384::ecdsa::VerifyingKey> {
    p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()
}
