//! SPIFFE IDs and principal patterns.
//!
//! Threat: identity confusion. A peer whose certificate carries something that merely looks
//! like a SPIFFE ID (`spiffe://Cluster.Local/...`, `spiffe://td/ns/a/../b`, percent-encoding,
//! a port or userinfo) could match a pattern it should not, or be read differently by another
//! component. IDs are parsed strictly by the SPIFFE-ID standard and anything else is refused.

use std::fmt;

/// The SPIFFE-ID standard's limit on the whole ID.
pub const MAX_ID_LEN: usize = 2048;
/// The trust domain is a DNS-ish name; the standard caps it at 255 bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &[u8] = b"spiffe://";

/// A parsed, valid SPIFFE ID (`spiffe://trust-domain/path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    td_len: usize,
}

/// Why a byte string is not a SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiffeIdError {
    Empty,
    TooLong,
    WrongScheme,
    MissingTrustDomain,
    TrustDomainTooLong,
    BadTrustDomainChar,
    EmptySegment,
    DotSegment,
    BadPathChar,
    TrailingSlash,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpiffeIdError::Empty => "is empty",
            SpiffeIdError::TooLong => "is longer than 2048 bytes",
            SpiffeIdError::WrongScheme => "must start with spiffe:// (lowercase)",
            SpiffeIdError::MissingTrustDomain => "has no trust domain",
            SpiffeIdError::TrustDomainTooLong => "has a trust domain longer than 255 bytes",
            SpiffeIdError::BadTrustDomainChar => {
                "has a trust domain character outside [a-z0-9.-_] (no uppercase, port, userinfo or percent-encoding)"
            }
            SpiffeIdError::EmptySegment => "has an empty path segment",
            SpiffeIdError::DotSegment => "has a '.' or '..' path segment",
            SpiffeIdError::BadPathChar => {
                "has a path character outside [A-Za-z0-9.-_/] (no percent-encoding, query or fragment)"
            }
            SpiffeIdError::TrailingSlash => "ends with a slash",
        })
    }
}

fn is_td_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

impl SpiffeId {
    /// Parse bytes strictly by the SPIFFE-ID standard.
    pub fn parse(raw: &[u8]) -> Result<SpiffeId, SpiffeIdError> {
        if raw.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if raw.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = raw.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let td_len = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        if td.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if td.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong);
        }
        if !td.iter().all(|&b| is_td_char(b)) {
            return Err(SpiffeIdError::BadTrustDomainChar);
        }
        if !path.is_empty() {
            if path.ends_with(b"/") {
                return Err(SpiffeIdError::TrailingSlash);
            }
            // `path` starts with '/', so the first split piece is the empty string before it.
            for segment in path.split(|&b| b == b'/').skip(1) {
                match segment {
                    b"" => return Err(SpiffeIdError::EmptySegment),
                    b"." | b".." => return Err(SpiffeIdError::DotSegment),
                    s if !s.iter().all(|&b| is_path_char(b)) => return Err(SpiffeIdError::BadPathChar),
                    _ => {}
                }
            }
        }
        // Every byte was checked to be ASCII above.
        let id = String::from_utf8_lossy(raw).into_owned();
        Ok(SpiffeId { id, td_len })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        self.id.get(SCHEME.len()..SCHEME.len() + self.td_len).unwrap_or_default()
    }

    /// The path, starting with `/`, or empty.
    pub fn path(&self) -> &str {
        self.id.get(SCHEME.len() + self.td_len..).unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Validate a trust domain name as written in a policy.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !td.bytes().all(is_td_char) {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

/// A principal pattern: `*` (any valid SPIFFE ID), an exact ID, or an ID in which whole path
/// segments are `*`, each matching exactly one non-empty segment
/// (`spiffe://cluster.local/ns/*/sa/*`). The trust domain is always literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    Any,
    Exact(String),
    Segments { trust_domain: String, segments: Vec<Option<String>> },
}

impl PrincipalPattern {
    pub fn parse(raw: &str) -> Result<PrincipalPattern, String> {
        if raw == "*" {
            return Ok(PrincipalPattern::Any);
        }
        if !raw.contains('*') {
            return SpiffeId::parse(raw.as_bytes())
                .map(|id| PrincipalPattern::Exact(id.as_str().to_string()))
                .map_err(|e| format!("not a valid SPIFFE ID: {e}"));
        }
        // Replace each wildcard segment by a placeholder that is a valid segment, validate the
        // result as an ID, then remember which segments were wildcards.
        let rest = raw.strip_prefix("spiffe://").ok_or("must start with spiffe:// or be \"*\"")?;
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if td.contains('*') {
            return Err("the trust domain cannot be a wildcard; list each trust domain".into());
        }
        let mut segments = Vec::new();
        for seg in path.split('/').skip(1) {
            if seg == "*" {
                segments.push(None);
            } else if seg.contains('*') {
                return Err(format!("'*' must be a whole path segment, not part of '{seg}'"));
            } else {
                segments.push(Some(seg.to_string()));
            }
        }
        let probe: String = std::iter::once(format!("spiffe://{td}"))
            .chain(segments.iter().map(|s| format!("/{}", s.as_deref().unwrap_or("x"))))
            .collect();
        SpiffeId::parse(probe.as_bytes()).map_err(|e| format!("not a valid SPIFFE ID pattern: {e}"))?;
        Ok(PrincipalPattern::Segments { trust_domain: td.to_string(), segments })
    }

    /// The trust domain the pattern is confined to (`None` for `*`).
    pub fn trust_domain(&self) -> Option<&str> {
        match self {
            PrincipalPattern::Any => None,
            PrincipalPattern::Exact(id) => id.strip_prefix("spiffe://").map(|r| r.split('/').next().unwrap_or(r)),
            PrincipalPattern::Segments { trust_domain, .. } => Some(trust_domain),
        }
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Exact(exact) => exact == id.as_str(),
            PrincipalPattern::Segments { trust_domain, segments } => {
                if id.trust_domain() != trust_domain {
                    return false;
                }
                let mut actual = id.path().split('/').skip(1);
                for want in segments {
                    match (want, actual.next()) {
                        (_, None) => return false,
                        (Some(w), Some(a)) if w != a => return false,
                        _ => {}
                    }
                }
                actual.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for (raw, td, path) in [
            ("spiffe://cluster.local/ns/default/sa/api", "cluster.local", "/ns/default/sa/api"),
            ("spiffe://example.org", "example.org", ""),
            ("spiffe://a-b_c.9/x.y-z_W/0", "a-b_c.9", "/x.y-z_W/0"),
            ("spiffe://td/...", "td", "/..."),
            ("spiffe://td/.a", "td", "/.a"),
        ] {
            let id = SpiffeId::parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(id.trust_domain(), td);
            assert_eq!(id.path(), path);
            assert_eq!(id.as_str(), raw);
        }
        let long_ok = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN - 12));
        assert_eq!(long_ok.len(), MAX_ID_LEN);
        assert!(SpiffeId::parse(long_ok.as_bytes()).is_ok());
    }

    #[test]
    fn invalid_ids() {
        use SpiffeIdError::*;
        let too_long = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        let td_too_long = format!("spiffe://{}/a", "a".repeat(256));
        let cases: Vec<(&[u8], SpiffeIdError)> = vec![
            (b"", Empty),
            (too_long.as_bytes(), TooLong),
            (td_too_long.as_bytes(), TrustDomainTooLong),
            (b"SPIFFE://td/a", WrongScheme),
            (b"spiffe:/td/a", WrongScheme),
            (b"https://td/a", WrongScheme),
            (b"spiffe:td/a", WrongScheme),
            (b" spiffe://td/a", WrongScheme),
            (b"spiffe://", MissingTrustDomain),
            (b"spiffe:///a", MissingTrustDomain),
            (b"spiffe://Cluster.local/a", BadTrustDomainChar),
            (b"spiffe://td:8443/a", BadTrustDomainChar),
            (b"spiffe://user@td/a", BadTrustDomainChar),
            (b"spiffe://user:pw@td/a", BadTrustDomainChar),
            (b"spiffe://t%64/a", BadTrustDomainChar),
            (b"spiffe://[::1]/a", BadTrustDomainChar),
            (b"spiffe://td?x=1", BadTrustDomainChar),
            (b"spiffe://td#frag", BadTrustDomainChar),
            (b"spiffe://t\xc3\xa9/a", BadTrustDomainChar),
            (b"spiffe://td\0/a", BadTrustDomainChar),
            (b"spiffe://td/", TrailingSlash),
            (b"spiffe://td/a/", TrailingSlash),
            (b"spiffe://td//a", EmptySegment),
            (b"spiffe://td/a//b", EmptySegment),
            (b"spiffe://td/./a", DotSegment),
            (b"spiffe://td/a/..", DotSegment),
            (b"spiffe://td/a/../b", DotSegment),
            (b"spiffe://td/a%2Fb", BadPathChar),
            (b"spiffe://td/a?x=1", BadPathChar),
            (b"spiffe://td/a#f", BadPathChar),
            (b"spiffe://td/a b", BadPathChar),
            (b"spiffe://td/a\0", BadPathChar),
            (b"spiffe://td/a\\b", BadPathChar),
            (b"spiffe://td/caf\xc3\xa9", BadPathChar),
            (b"spiffe://td/\xff", BadPathChar),
            (b"spiffe://td/a:b", BadPathChar),
            (b"spiffe://td/a@b", BadPathChar),
            (b"spiffe://td/a+b", BadPathChar),
            (b"spiffe://td/a*", BadPathChar),
        ];
        for (raw, want) in cases {
            assert_eq!(SpiffeId::parse(raw), Err(want), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn patterns() {
        let id = |s: &str| SpiffeId::parse(s.as_bytes()).unwrap();
        let p = |s: &str| PrincipalPattern::parse(s).unwrap();
        let web = id("spiffe://cluster.local/ns/web/sa/web");
        assert!(p("*").matches(&web));
        assert!(p("spiffe://cluster.local/ns/web/sa/web").matches(&web));
        assert!(p("spiffe://cluster.local/ns/web/sa/*").matches(&web));
        assert!(p("spiffe://cluster.local/ns/*/sa/*").matches(&web));
        assert!(!p("spiffe://cluster.local/ns/*/sa/api").matches(&web));
        assert!(!p("spiffe://other/ns/web/sa/*").matches(&web));
        assert!(!p("spiffe://cluster.local/ns/*").matches(&web), "* is one segment");
        assert!(!p("spiffe://cluster.local/ns/web/sa/web/*").matches(&web));
        assert!(!p("spiffe://cluster.local/ns/web/sa").matches(&web));
        // A similar-looking trust domain never matches.
        assert!(!p("spiffe://cluster.local/ns/web/sa/*").matches(&id("spiffe://cluster.localx/ns/web/sa/web")));
        for bad in [
            "spiffe://*/ns/web",
            "spiffe://cluster.local/ns/we*",
            "spiffe://Cluster.local/ns/*",
            "spiffe://td/ns/*/",
            "spiffe://td//*",
            "cluster.local/ns/*",
            "",
            "spiffe://td/a/../*",
        ] {
            assert!(PrincipalPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
