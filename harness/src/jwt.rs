//! A stand-in identity provider for tests and `meshguard up`: RS256, ES256 and EdDSA signing
//! keys, their public JWKS (what a `jwt` provider's `jwks.keys` holds), and tokens minted with
//! exactly the claims a test asks for.
//!
//! The ES256 and EdDSA keys are generated per [`TokenIssuer`]; the RSA key is a fixed test key
//! (pure-Rust RSA key generation takes seconds in a debug build), shared with the policy
//! crate's unit tests. Nothing here is a secret worth keeping.

use anyhow::Context;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

/// The test RSA key (2048 bits, PKCS#8 PEM).
const TEST_RSA_PEM: &str = include_str!("../../policy/src/checks/jwt/testdata/rsa-a.pem");

/// A signing algorithm the harness mints tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    RS256,
    ES256,
    EdDSA,
}

impl JwtAlg {
    pub const ALL: [JwtAlg; 3] = [JwtAlg::RS256, JwtAlg::ES256, JwtAlg::EdDSA];

    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::RS256 => "RS256",
            JwtAlg::ES256 => "ES256",
            JwtAlg::EdDSA => "EdDSA",
        }
    }

    /// The `kid` of this algorithm's key.
    pub fn kid(self) -> &'static str {
        match self {
            JwtAlg::RS256 => "rs256-1",
            JwtAlg::ES256 => "es256-1",
            JwtAlg::EdDSA => "eddsa-1",
        }
    }
}

/// An issuer with one key per algorithm.
pub struct TokenIssuer {
    issuer: String,
    rsa: RS256KeyPair,
    es: ES256KeyPair,
    ed: Ed25519KeyPair,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenIssuer {
    pub fn new(issuer: &str) -> crate::Result<Self> {
        Ok(Self {
            issuer: issuer.to_string(),
            rsa: RS256KeyPair::from_pem(TEST_RSA_PEM)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the test RSA key")?
                .with_key_id(JwtAlg::RS256.kid()),
            es: ES256KeyPair::generate().with_key_id(JwtAlg::ES256.kid()),
            ed: Ed25519KeyPair::generate().with_key_id(JwtAlg::EdDSA.kid()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWKS (`{"keys": [...]}`), each key with its `kid`.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = JwtAlg::ALL.iter().map(|&alg| self.public_jwk(alg)).collect();
        json!({ "keys": keys })
    }

    /// One algorithm's public JWK (for a JWKS that rotates keys in and out).
    pub fn public_jwk(&self, alg: JwtAlg) -> Value {
        let jwk = match alg {
            JwtAlg::RS256 => self.rsa.public_key().to_jwk(),
            JwtAlg::ES256 => self.es.public_key().to_jwk(),
            JwtAlg::EdDSA => self.ed.public_key().to_jwk(),
        };
        let mut jwk: Value = serde_json::from_str(&jwk).unwrap_or(Value::Null);
        jwk["kid"] = alg.kid().into();
        jwk
    }

    /// The usual claims: this issuer, `aud`, `sub`, issued `now`, valid for `valid_for_secs`.
    pub fn claims(&self, audience: &str, subject: &str, now_unix_secs: u64, valid_for_secs: u64) -> Value {
        json!({
            "iss": self.issuer,
            "aud": audience,
            "sub": subject,
            "iat": now_unix_secs,
            "exp": now_unix_secs + valid_for_secs,
        })
    }

    /// A token with exactly `claims` (an object: nothing is added), signed with `alg`'s key.
    pub fn mint(&self, alg: JwtAlg, claims: &Value) -> crate::Result<String> {
        anyhow::ensure!(claims.is_object(), "claims must be a JSON object");
        let mut c = Claims::with_custom_claims(claims.clone(), Duration::from_secs(0));
        (c.issued_at, c.expires_at, c.invalid_before) = (None, None, None);
        let token = match alg {
            JwtAlg::RS256 => self.rsa.sign(c),
            JwtAlg::ES256 => self.es.sign(c),
            JwtAlg::EdDSA => self.ed.sign(c),
        };
        token.map_err(|e| anyhow::anyhow!("signing a {} token: {e}", alg.as_str()))
    }
}

impl TokenIssuer {
    /// A token validly signed with `alg`'s key whose header names `kid` instead of that key's
    /// own id (an unknown kid, or another key's: algorithm confusion).
    pub fn mint_with_kid(&self, alg: JwtAlg, kid: &str, claims: &Value) -> crate::Result<String> {
        let mut c = Claims::with_custom_claims(claims.clone(), Duration::from_secs(0));
        (c.issued_at, c.expires_at, c.invalid_before) = (None, None, None);
        let e = |e: jwt_simple::Error| anyhow::anyhow!("{e}");
        let token = match alg {
            JwtAlg::RS256 => RS256KeyPair::from_pem(TEST_RSA_PEM).map_err(e)?.with_key_id(kid).sign(c),
            JwtAlg::ES256 => ES256KeyPair::from_bytes(&self.es.to_bytes()).map_err(e)?.with_key_id(kid).sign(c),
            JwtAlg::EdDSA => Ed25519KeyPair::from_bytes(&self.ed.to_bytes()).map_err(e)?.with_key_id(kid).sign(c),
        };
        token.map_err(|e| anyhow::anyhow!("signing a {} token: {e}", alg.as_str()))
    }

    /// The RSA public key as PEM: what an attacker uses as an HS256 secret.
    pub fn rsa_public_pem(&self) -> crate::Result<String> {
        self.rsa.public_key().to_pem().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// A token with any header: `header.payload.signature`, the signature an HMAC-SHA256 with
/// `hs256_secret` (the public-key-as-secret attack), or empty (`alg: none`).
pub fn forge(header: &Value, claims: &Value, hs256_secret: Option<&[u8]>) -> String {
    let b64 = |bytes: &[u8]| Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap_or_default();
    let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = hs256_secret.map(|k| b64(&hmac_sha256::HMAC::mac(signed.as_bytes(), k))).unwrap_or_default();
    format!("{signed}.{signature}")
}

/// The DER of the first certificate in a PEM file.
pub fn cert_der(pem_path: &std::path::Path) -> crate::Result<Vec<u8>> {
    let pem = std::fs::read_to_string(pem_path).with_context(|| format!("reading {}", pem_path.display()))?;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    Base64::decode_to_vec(body.trim(), None).map_err(|e| anyhow::anyhow!("{}: not PEM: {e}", pem_path.display()))
}

/// RFC 8705 `cnf` `x5t#S256` of a certificate: base64url (no padding) of the SHA-256 of its DER.
pub fn x5t_s256(cert_der: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(hmac_sha256::Hash::hash(cert_der)).unwrap_or_default()
}

/// The SHA-256 of a certificate's DER as Envoy's `connection.sha256_peer_certificate_digest`
/// gives it: lowercase hex.
pub fn sha256_hex(cert_der: &[u8]) -> String {
    hmac_sha256::Hash::hash(cert_der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix time now, in seconds.
pub fn now_unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::checks::jwt::{JwtCheck, JwtDoc};

    /// The harness's tokens pass the policy crate's verification, and what the harness calls
    /// a certificate thumbprint is what the check compares with Envoy's digest.
    #[test]
    fn minted_tokens_verify_with_the_policy_check() {
        let idp = TokenIssuer::new("https://idp.mesh.local").unwrap();
        let doc: JwtDoc = serde_json::from_value(json!({
            "providers": [{"id": "idp", "issuer": idp.issuer(), "audiences": ["api"], "jwks": idp.jwks()}],
            "rules": [{"id": "all", "require": {"providers": ["idp"]}, "bind": {"certificate": "required"}}]
        }))
        .unwrap();
        let mut errs = policy::ConfigErrors::default();
        let check = JwtCheck::compile_section(&doc, policy::document::Mode::Enforce, "jwt", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        let cert = b"not really a certificate, but bytes all the same";
        let digest = sha256_hex(cert);
        let now = now_unix_secs();
        for alg in JwtAlg::ALL {
            let mut claims = idp.claims("api", "alice", now, 300);
            claims["cnf"] = json!({ "x5t#S256": x5t_s256(cert) });
            let token = format!("Bearer {}", idp.mint(alg, &claims).unwrap());
            let headers: [(&[u8], &[u8]); 4] =
                [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"api"), (b"authorization", token.as_bytes())];
            for (peer, want) in [(Some(digest.as_bytes()), true), (Some(&b"00"[..]), false), (None, false)] {
                let input = policy::RequestView::new(&headers, policy::Peer::default(), policy::Direction::Inbound)
                    .with_peer_cert_sha256(peer)
                    .with_now(now);
                let mut d = policy::Decision::default();
                check.evaluate_request(&input, &mut d);
                assert_eq!(d.findings.is_empty(), want, "{alg:?} {d:?}");
            }
        }
    }
}
