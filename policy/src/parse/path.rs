//! The canonical path that every path rule is matched against.
//!
//! Threat: rule evasion by spelling. `/admin`, `/%61dmin`, `/x/../admin`, `//admin` and
//! `/admin?x` are one resource to most applications; a rule written for `/admin` must see all of
//! them as `/admin`. The canonical form: the query and fragment cut off, percent-encoded
//! unreserved characters decoded (other escapes kept, hex uppercased, a `%` that starts no
//! escape written as `%25`), `;` path parameters cut from every segment (`/admin;jsessionid=1`
//! and `/x/..;/admin` are `/admin` to Tomcat and its kin), runs of `/` merged and dot segments
//! removed. The request itself is not changed. An encoded `;` (`%3B`) is data, not a
//! parameter, and an encoded slash (`%2F`) stays encoded: the hygiene guards refuse those.

use std::borrow::Cow;

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex_digit(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'A' + (n - 10)
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The path without its query or fragment.
pub fn without_query(raw: &[u8]) -> &[u8] {
    let end = raw.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(raw.len());
    raw.get(..end).unwrap_or_default()
}

/// The canonical form of a request path (see the module docs).
pub fn canonical(raw: &[u8]) -> Cow<'_, [u8]> {
    let path = without_query(raw);
    let simple = path.first() == Some(&b'/')
        && !path.contains(&b'%')
        && !path.contains(&b';')
        && !path.windows(2).any(|w| w == b"//" || w == b"/.");
    if simple {
        return Cow::Borrowed(path);
    }
    // 1. Decode unreserved escapes, normalise the hex of the others.
    let mut decoded = Vec::with_capacity(path.len() + 1);
    if path.first() != Some(&b'/') {
        decoded.push(b'/');
    }
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (path.get(i + 1).and_then(|&c| hex(c)), path.get(i + 2).and_then(|&c| hex(c))) {
                let v = h * 16 + l;
                if is_unreserved(v) {
                    decoded.push(v);
                } else {
                    decoded.push(b'%');
                    decoded.extend_from_slice(&[hex_digit(h), hex_digit(l)]);
                }
                i += 3;
                continue;
            }
            // A '%' that starts no valid escape is written as one, so that no decoding above
            // can splice it onto the characters after it and form a new escape
            // (`%%4%44` → `%%4D` → `%M`): the canonical form is a fixed point.
            decoded.extend_from_slice(b"%25");
            i += 1;
            continue;
        }
        decoded.push(b);
        i += 1;
    }
    // 2. Cut path parameters, merge slashes and remove dot segments.
    let without_parameters = |seg: &'_ [u8]| -> usize { seg.iter().position(|&b| b == b';').unwrap_or(seg.len()) };
    let segments = decoded.split(|&b| b == b'/').map(|seg| seg.get(..without_parameters(seg)).unwrap_or_default());
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing = matches!(segments.clone().next_back(), Some(b"" | b"." | b".."));
    for seg in segments {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = Vec::with_capacity(decoded.len());
    for seg in &out {
        result.push(b'/');
        result.extend_from_slice(seg);
    }
    if result.is_empty() || (trailing && !out.is_empty()) {
        result.push(b'/');
    }
    Cow::Owned(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        String::from_utf8(canonical(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn spellings_of_one_path_agree() {
        for s in [
            "/admin",
            "/%61dmin",
            "/%61%64%6D%69%6E",
            "//admin",
            "/x/../admin",
            "/./admin",
            "/admin?x=1",
            "/admin#f",
            "admin",
            "/a/b/../../admin",
            "/../admin",
            "/x/%2e%2e/admin",
        ] {
            assert_eq!(c(s), "/admin", "{s}");
        }
        assert_eq!(c("/admin/"), "/admin/");
        assert_eq!(c("/admin/."), "/admin/");
        assert_eq!(c("/a/b/.."), "/a/");
        assert_eq!(c("/"), "/");
        assert_eq!(c(""), "/");
        assert_eq!(c("?x"), "/");
        assert_eq!(c("/.."), "/");
    }

    #[test]
    fn reserved_escapes_are_kept_with_uppercase_hex() {
        assert_eq!(c("/a%2fb"), "/a%2Fb");
        assert_eq!(c("/a%2Fb"), "/a%2Fb");
        assert_eq!(c("/a%3bb"), "/a%3Bb");
        assert_eq!(c("/a%zz"), "/a%25zz");
        assert_eq!(c("/a%"), "/a%25");
        assert_eq!(c("/a%4"), "/a%254");
        assert_eq!(c("/a%25"), "/a%25");
    }

    /// Found by the canonical_path fuzz target: a stray '%' before an escape of an
    /// unreserved character.
    #[test]
    fn stray_percent_signs_cannot_form_new_escapes() {
        assert_eq!(c("%%4%4440%"), "/%25%254D40%25");
        assert_eq!(c(&c("%%4%4440%")), c("%%4%4440%"));
        assert_eq!(c("/%%61dmin"), "/%25admin");
    }

    #[test]
    fn path_parameters_are_cut_from_every_segment() {
        assert_eq!(c("/admin;jsessionid=1"), "/admin");
        assert_eq!(c("/public/..;/admin"), "/admin");
        assert_eq!(c("/a;x/b;y=1,2/c"), "/a/b/c");
        assert_eq!(c("/;x/admin"), "/admin");
        assert_eq!(c("/a/;x"), "/a/");
        assert_eq!(c("/a/..;x"), "/");
        assert_eq!(c("/a%3Bb"), "/a%3Bb");
        assert_eq!(c(&c("/x;%2e%2e/..;/a;b")), c("/x;%2e%2e/..;/a;b"));
    }

    #[test]
    fn simple_paths_are_borrowed() {
        assert!(matches!(canonical(b"/api/v1/items?x=1"), Cow::Borrowed(b"/api/v1/items")));
    }
}
