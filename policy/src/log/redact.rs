//! What never reaches a decision-log line or a deny body: secrets, found by name and by shape.
//!
//! Threat: the log pipeline as an exfiltration path. Logs are read by more people and systems
//! than the traffic they describe, and kept longer, so a credential that reaches a log line is
//! a credential leaked. A value is redacted when its header's name says it is a secret (a fixed
//! list, any name with `token`, `secret`, `api-key`, `password`, `session`, `auth`,
//! `cookie`, `signature` or `credential` in it, and the policy's `decisionLog.redactHeaders`), or when
//! the value itself is shaped like one (a JWT anywhere in it, `Bearer`/`Basic`/`Digest`
//! credentials). URLs are logged without their query and userinfo; paths without path
//! parameters' values, without an encoded query (`%3F...`) and without token-shaped segments.
//! Redaction only ever removes: what a check needs to decide again is kept in another form
//! (`queryShape`), and a line whose redaction could change a decision is marked
//! `"replayable": false` by the caller.

use super::text;

/// What replaces a redacted value (or part of one).
pub const REDACTED: &str = "[redacted]";

/// Header names whose values are never logged, whatever the policy says (lowercase).
pub const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-apikey",
    "x-goog-api-key",
    "x-functions-key",
    "ocp-apim-subscription-key",
    "x-auth-token",
    "x-access-token",
    "x-refresh-token",
    "x-id-token",
    "private-token",
    "x-vault-token",
    "x-consul-token",
    "x-amz-security-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-client-secret",
];

/// Parts of a header name that mark it as carrying a secret.
const SECRET_NAME_PARTS: &[&str] = &[
    "token",
    "secret",
    "apikey",
    "api-key",
    "api_key",
    "access-key",
    "private-key",
    "password",
    "passwd",
    "session",
    "auth",
    "cookie",
    "signature",
    "credential",
];

/// Headers whose value is a URL or a path: logged through [`url`].
pub const URL_HEADERS: &[&str] = &[
    "referer",
    "origin",
    "location",
    "content-location",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-envoy-original-path",
    "x-forwarded-prefix",
];

/// Whether a header (lowercase name) carries a secret by its name.
pub fn secret_name(lower: &str) -> bool {
    ALWAYS_REDACTED.contains(&lower) || SECRET_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// Whether a value is shaped like a credential, whatever header it came in: a JWT (or JWS/JWE
/// compact form, also percent-encoded) anywhere in it, or an HTTP credential (`Bearer ...`,
/// `Basic ...`, `Digest ...`, `Negotiate ...`).
pub fn secret_value(v: &[u8]) -> bool {
    const SCHEMES: [&[u8]; 4] = [b"bearer ", b"basic ", b"digest ", b"negotiate "];
    looks_like_jwt(v) || SCHEMES.iter().any(|s| v.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)))
}

/// Does this value hold something shaped like a JWT: `eyJ` (base64url of `{"`) and two dots,
/// plain or percent-encoded (`%2E`)?
pub fn looks_like_jwt(v: &[u8]) -> bool {
    let dots = v.iter().filter(|&&b| b == b'.').count()
        + v.windows(3)
            .filter(|w| w.first() == Some(&b'%') && w.get(1..).is_some_and(|h| h.eq_ignore_ascii_case(b"2e")))
            .count();
    v.windows(3).any(|w| w == b"eyJ") && dots >= 2
}

/// A path segment shaped like an opaque credential: at least 32 characters of a token
/// alphabet, letters and digits both, and not a UUID (ids are kept: they are what an operator
/// looks for).
fn token_segment(seg: &[u8]) -> bool {
    if looks_like_jwt(seg) {
        return true;
    }
    let token_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'=' | b'%');
    seg.len() >= 32
        && seg.iter().all(token_char)
        && seg.iter().any(u8::is_ascii_digit)
        && seg.iter().any(u8::is_ascii_alphabetic)
        && !is_uuid(seg)
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { *b == b'-' } else { b.is_ascii_hexdigit() })
}

/// A path (no query: the caller cut it) for the log: an encoded query (`%3F...`) cut, path
/// parameters' values (`;jsessionid=...`) and token-shaped segments redacted.
pub fn path(raw: &[u8]) -> String {
    let encoded_query = raw.windows(3).position(|w| w.eq_ignore_ascii_case(b"%3f"));
    let (head, cut) = match encoded_query {
        Some(i) => (raw.get(..i).unwrap_or_default(), true),
        None => (raw, false),
    };
    let mut out = String::with_capacity(head.len() + 16);
    for (i, seg) in head.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let (name, params) = match seg.iter().position(|&b| b == b';') {
            Some(p) => (seg.get(..p).unwrap_or_default(), true),
            None => (seg, false),
        };
        if token_segment(name) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&text(name));
        }
        if params {
            out.push(';');
            out.push_str(REDACTED);
        }
    }
    if cut {
        out.push_str("%3F");
        out.push_str(REDACTED);
    }
    out
}

/// An authority for the log: userinfo (`user:password@`) redacted.
pub fn authority(raw: &[u8]) -> String {
    match raw.iter().rposition(|&b| b == b'@') {
        Some(at) => format!("{REDACTED}@{}", text(raw.get(at + 1..).unwrap_or_default())),
        None => text(raw),
    }
}

/// A URL-carrying header's value for the log: query and fragment cut, userinfo redacted, the
/// path as [`path`] logs it.
pub fn url(raw: &[u8]) -> String {
    let raw = crate::parse::path::without_query(raw);
    let (scheme_and_authority, rest) = match raw.windows(3).position(|w| w == b"://") {
        Some(i) => {
            let after = i + 3;
            let tail = raw.get(after..).unwrap_or_default();
            let slash = tail.iter().position(|&b| b == b'/').unwrap_or(tail.len());
            let scheme = text(raw.get(..after).unwrap_or_default());
            (
                format!("{scheme}{}", authority(tail.get(..slash).unwrap_or_default())),
                tail.get(slash..).unwrap_or_default(),
            )
        }
        None => (String::new(), raw),
    };
    format!("{scheme_and_authority}{}", path(rest))
}

/// A request id fit to echo back or log: 1 to 128 printable ASCII bytes without quotes or
/// backslashes, and not shaped like a credential (a client can put a token there); anything
/// else is left out.
pub fn printable_id(raw: &[u8]) -> Option<&str> {
    if raw.is_empty() || raw.len() > 128 || !raw.iter().all(|&b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        return None;
    }
    if secret_value(raw) || token_segment(raw) {
        return None;
    }
    std::str::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLWJ5dGVz";

    #[test]
    fn paths() {
        assert_eq!(path(b"/api/items/42"), "/api/items/42");
        assert_eq!(path(format!("/a%2Fb/{JWT}").as_bytes()), "/a%2Fb/[redacted]");
        assert_eq!(path(b"/login;jsessionid=ABC123/x"), "/login;[redacted]/x");
        assert_eq!(path(b"/a%3Ftoken=secret"), "/a%3F[redacted]");
        assert_eq!(path(b"/a%3ftoken=secret/b"), "/a%3F[redacted]");
        assert_eq!(path(b"/reset/9f8e7d6c5b4a39281706f5e4d3c2b1a0aabbccdd"), "/reset/[redacted]");
        assert_eq!(path(b"/users/123e4567-e89b-12d3-a456-426614174000"), "/users/123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(
            path(b"/docs/getting-started-with-the-product-guide"),
            "/docs/getting-started-with-the-product-guide"
        );
        assert_eq!(path(b""), "");
    }

    #[test]
    fn authorities_and_urls() {
        assert_eq!(authority(b"user:PASSWORD@api"), "[redacted]@api");
        assert_eq!(authority(b"api.example.com:8443"), "api.example.com:8443");
        assert_eq!(url(b"https://u:p@example.com/cb?code=secret#x"), "https://[redacted]@example.com/cb");
        assert_eq!(url(b"/admin?token=abc"), "/admin");
        assert_eq!(url(format!("/x/{JWT}").as_bytes()), "/x/[redacted]");
        assert_eq!(url(b"https://example.com"), "https://example.com");
    }

    #[test]
    fn secrets_by_name_and_shape() {
        for name in [
            "authorization",
            "x-goog-api-key",
            "api-key",
            "x-my-token",
            "x-session-id",
            "x-client-secret",
            "x-hub-signature-256",
        ] {
            assert!(secret_name(name), "{name}");
        }
        for name in ["accept", "user-agent", "x-request-id", "content-type", "host"] {
            assert!(!secret_name(name), "{name}");
        }
        assert!(secret_value(JWT.as_bytes()));
        assert!(secret_value(b"Bearer abc"));
        assert!(secret_value(b"basic dXNlcjpwYXNz"));
        assert!(secret_value(b"eyJhbGciOiJub25lIn0%2EeyJzdWIiOiJhIn0%2E"));
        assert!(!secret_value(b"text/html"));
    }

    #[test]
    fn request_ids() {
        assert_eq!(printable_id(b"5d2c8b3e-4a1f-4c55-9b1e-2f7c9f1e0a11"), Some("5d2c8b3e-4a1f-4c55-9b1e-2f7c9f1e0a11"));
        assert_eq!(printable_id(b"demo-1"), Some("demo-1"));
        assert_eq!(printable_id(JWT.as_bytes()), None);
        assert_eq!(printable_id(b"a\"b"), None);
        assert_eq!(printable_id(b""), None);
    }
}
