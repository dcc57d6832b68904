//! Token verification, in a fixed order: size (before any decoding), segments, base64url,
//! the header (read here: `alg` allowed for the provider and fitting the selected key,
//! `none`/HS* refused, a `kid` naming no key refused, `crit` refused, `jku`/`x5u`/`x5c`/`jwk`
//! never used), then the signature (on the keys jwt-simple imported, with the primitives its
//! `verify_token` calls: see [`super::keys::verify_signature`]), then the claims with the time
//! the caller hands in (`exp` required, `nbf`/`iat` with the skew), `iss`, `aud`.
//!
//! The provider is chosen by the token's (not yet verified) `iss`, as Envoy's jwt_authn does;
//! the signature must then verify with that provider's keys, so a token cannot borrow another
//! provider's trust.

use serde_json::{Map, Value};

use super::keys::{verify_signature, Alg, Jwk};
use crate::reason::ReasonCode;

/// A provider, compiled.
#[derive(Debug)]
pub struct Provider {
    pub id: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// The algorithms tokens of this provider may use.
    pub algorithms: Vec<Alg>,
    /// `None` for a remote JWKS that has not been fetched yet: tokens of this provider are
    /// denied with `jwt_keys_unavailable` (fail closed).
    pub keys: Option<Vec<Jwk>>,
    /// The remote source of a `jwks.remote` provider (`keys` is then `None`): the last good
    /// key set fetched, if any.
    pub remote: Option<super::remote::RemoteKeys>,
}

/// A token whose signature verified: what later checks (and the cache) need.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Index of the provider whose key verified the token.
    pub provider: usize,
    pub kid: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub aud: Vec<String>,
    pub claims: Map<String, Value>,
}

/// Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, no whitespace, and the
/// unused low bits of the last character zero (one encoding per byte string).
pub fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

fn decode_object(segment: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(&b64url_decode(segment)?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A NumericDate: a non-negative JSON number (a fraction is cut off).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, ReasonCode> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
            _ => Err(ReasonCode::JwtMalformed),
        },
        Some(_) => Err(ReasonCode::JwtMalformed),
    }
}

fn optional_string<'c>(claims: &'c Map<String, Value>, name: &str) -> Result<Option<&'c str>, ReasonCode> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ReasonCode::JwtMalformed),
    }
}

/// Split a compact JWS into its three segments.
fn segments(token: &[u8]) -> Option<[&[u8]; 3]> {
    let mut parts = token.split(|&b| b == b'.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.is_empty() || p.is_empty() {
        return None;
    }
    Some([h, p, s])
}

/// Verify a token's structure, header and signature against the providers listed in
/// `allowed` (indexes into `providers`). Claims other than `iss` (which picks the provider)
/// and the registered claims' types are checked afterwards, by [`check_time`] and
/// [`check_audience`], on every request, cached or not.
pub fn verify(token: &[u8], providers: &[Provider], allowed: &[usize], max_len: usize) -> Result<Verified, ReasonCode> {
    if token.len() > max_len {
        return Err(ReasonCode::JwtTooLarge);
    }
    let [h64, p64, s64] = segments(token).ok_or(ReasonCode::JwtMalformed)?;
    let header = decode_object(h64).ok_or(ReasonCode::JwtMalformed)?;
    // No extension is understood, so any `crit` (even an empty one, which RFC 7515 forbids)
    // is a deny.
    if header.contains_key("crit") {
        return Err(ReasonCode::JwtCritUnsupported);
    }
    let alg_name = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(ReasonCode::JwtMalformed),
    };
    // `none`, HS*, and anything else not on the list.
    let alg = Alg::from_name(alg_name).ok_or(ReasonCode::JwtAlgNotAllowed)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(ReasonCode::JwtMalformed),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("jwt") || t.to_ascii_lowercase().ends_with("+jwt") => {}
        Some(_) => return Err(ReasonCode::JwtMalformed),
    }
    // `jku`, `x5u`, `x5c` and `jwk` are deliberately never read: keys come from the policy.

    let claims = decode_object(p64).ok_or(ReasonCode::JwtMalformed)?;
    let iss = optional_string(&claims, "iss")?;
    let (exp, nbf, iat) = (numeric_date(&claims, "exp")?, numeric_date(&claims, "nbf")?, numeric_date(&claims, "iat")?);
    for name in ["sub", "jti", "nonce"] {
        optional_string(&claims, name)?;
    }
    let aud = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(item.as_str().ok_or(ReasonCode::JwtMalformed)?.to_string());
            }
            out
        }
        Some(_) => return Err(ReasonCode::JwtMalformed),
    };

    let iss = iss.ok_or(ReasonCode::JwtIssuerNotAllowed)?;
    let (index, provider) = allowed
        .iter()
        .filter_map(|&i| providers.get(i).map(|p| (i, p)))
        .find(|(_, p)| p.issuer == iss)
        .ok_or(ReasonCode::JwtIssuerNotAllowed)?;
    // Inline keys are borrowed as before; a remote provider's key set in force is held for
    // this verification (a refresh may replace it meanwhile; this token is judged by the set
    // it was looked up in).
    let fetched;
    let keys: &[Jwk] = match (&provider.keys, &provider.remote) {
        (Some(keys), _) => keys,
        (None, Some(remote)) => {
            fetched = remote.keys().ok_or(ReasonCode::JwtKeysUnavailable)?;
            &fetched
        }
        (None, None) => return Err(ReasonCode::JwtKeysUnavailable),
    };
    if !provider.algorithms.contains(&alg) {
        return Err(ReasonCode::JwtAlgNotAllowed);
    }
    let key = match kid {
        Some(kid) => {
            let key = keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or(ReasonCode::JwtUnknownKey)?;
            if !key.accepts(alg) {
                return Err(ReasonCode::JwtAlgNotAllowed);
            }
            key
        }
        // Without `kid`, only a provider with exactly one key for this algorithm: trying
        // every key would multiply the cost of a forged token.
        None => {
            let mut fitting = keys.iter().filter(|k| k.accepts(alg));
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => key,
                (None, _) => return Err(ReasonCode::JwtAlgNotAllowed),
                (Some(_), Some(_)) => return Err(ReasonCode::JwtUnknownKey),
            }
        }
    };
    let signature = b64url_decode(s64).filter(|s| !s.is_empty()).ok_or(ReasonCode::JwtMalformed)?;
    // The signed bytes are the first two segments as sent, with the dot between them.
    let signed = token.get(..h64.len() + 1 + p64.len()).ok_or(ReasonCode::JwtMalformed)?;
    if !verify_signature(signed, &signature, &key.material, alg) {
        return Err(ReasonCode::JwtSignatureInvalid);
    }
    Ok(Verified { provider: index, kid: kid.map(str::to_string), exp, nbf, iat, aud, claims })
}

/// `exp` required and not past, `nbf` and `iat` not in the future, each with `skew` seconds
/// of tolerance.
pub fn check_time(v: &Verified, now: u64, skew: u64) -> Result<(), ReasonCode> {
    let exp = v.exp.ok_or(ReasonCode::JwtExpMissing)?;
    if now >= exp.saturating_add(skew) {
        return Err(ReasonCode::JwtExpired);
    }
    let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(skew));
    if future(v.nbf) || future(v.iat) {
        return Err(ReasonCode::JwtNotYetValid);
    }
    Ok(())
}

/// `aud` must name one of the provider's audiences.
pub fn check_audience(v: &Verified, provider: &Provider) -> Result<(), ReasonCode> {
    if v.aud.iter().any(|a| provider.audiences.iter().any(|p| p == a)) {
        Ok(())
    } else {
        Err(ReasonCode::JwtAudienceNotAllowed)
    }
}

/// A claim by name: a top-level claim of exactly that name, else a nested one (`a.b`).
pub fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.as_object()?.get(p))
}

/// `contains`: a string equal to `want`, a space-separated string listing it, or an array
/// with it as an element.
pub fn claim_contains(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s.split(' ').any(|w| w == want),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want)),
        _ => false,
    }
}

/// `equals`: a string equal to `want`, or a number or boolean whose JSON text is `want`.
pub fn claim_equals(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => (if *b { "true" } else { "false" }) == want,
        _ => false,
    }
}

fn hex_decode(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| {
            let mut it = pair.iter().map(|&c| (c as char).to_digit(16));
            match (it.next().flatten(), it.next().flatten()) {
                (Some(h), Some(l)) => Some((h * 16 + l) as u8),
                _ => None,
            }
        })
        .collect()
}

/// RFC 8705: `cnf.x5t#S256` (base64url of the certificate's SHA-256) against the peer
/// certificate's digest as Envoy gives it (`connection.sha256_peer_certificate_digest`, hex).
/// `None` when the token carries no `x5t#S256` confirmation.
pub fn certificate_bound(claims: &Map<String, Value>, peer_digest_hex: Option<&[u8]>) -> Option<bool> {
    let cnf = claims.get("cnf")?.as_object()?;
    let thumb = cnf.get("x5t#S256")?;
    let Some(thumb) = thumb.as_str().and_then(|t| b64url_decode(t.as_bytes())) else {
        return Some(false);
    };
    let peer = peer_digest_hex.and_then(hex_decode);
    Some(thumb.len() == 32 && peer.is_some_and(|p| p == thumb))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url_decode(b"").unwrap(), b"");
        assert_eq!(b64url_decode(b"Zg").unwrap(), b"f");
        assert_eq!(b64url_decode(b"Zm8").unwrap(), b"fo");
        assert_eq!(b64url_decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(b64url_decode(b"-_8").unwrap(), [0xfb, 0xff]);
        for bad in [&b"Zg=="[..], b"Z", b"Zh", b"Zm9v\n", b"Zm+v", b"Zm/v", b"Zm 9v", b"Zm9v%"] {
            assert!(b64url_decode(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hex() {
        assert_eq!(hex_decode(b"00ff10Ab").unwrap(), [0, 255, 16, 171]);
        assert!(hex_decode(b"0").is_none());
        assert!(hex_decode(b"zz").is_none());
    }

    #[test]
    fn claims_lookup_and_match() {
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"scope": "a b:c d", "roles": ["x", "y"], "realm": {"access": {"level": 3}}, "https://e.com/r": "v", "ok": true}"#,
        )
        .unwrap();
        assert!(claim_contains(claim(&c, "scope").unwrap(), "b:c"));
        assert!(!claim_contains(claim(&c, "scope").unwrap(), "b"));
        assert!(claim_contains(claim(&c, "roles").unwrap(), "y"));
        assert!(claim_equals(claim(&c, "realm.access.level").unwrap(), "3"));
        assert!(claim_equals(claim(&c, "https://e.com/r").unwrap(), "v"));
        assert!(claim_equals(claim(&c, "ok").unwrap(), "true"));
        assert!(claim(&c, "realm.nope").is_none());
        assert!(!claim_equals(claim(&c, "roles").unwrap(), "x"));
    }
}
