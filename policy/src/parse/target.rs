//! The request target read the way the different parsers behind Envoy might read it: one pass
//! over `:path` that notes every spelling some server interprets differently from another.
//! (The authority has one reader, [`crate::parse::host::parse_authority`].)

use crate::parse::path::hex;

/// What one pass over `:path` found. Only the path component (before `?`) is checked for
/// encodings: the query is the app's business, escapes there are ordinary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathFacts {
    /// `%2F` or `%5C`.
    pub encoded_slash: bool,
    /// A segment that is `.` or `..` once `%2E` is decoded.
    pub dot_segment: bool,
    /// `//`.
    pub double_slash: bool,
    /// `;` or `%3B`.
    pub parameter: bool,
    /// `%25` followed by two hex digits.
    pub double_encoding: bool,
    /// `%00`-`%1F` or `%7F`.
    pub encoded_control: bool,
    /// Not valid UTF-8 once percent-decoded (overlong forms and surrogates included).
    pub invalid_utf8: bool,
    /// `%23` or `%3F`.
    pub encoded_delimiter: bool,
    /// A raw byte that may not appear there (see [`invalid_in_path`], [`invalid_in_query`]).
    pub invalid_character: bool,
    /// Query parameters (non-empty `&`-separated pieces of the query).
    pub query_params: usize,
}

/// Raw bytes no browser or ordinary client sends in a path (the WHATWG path percent-encode set,
/// backslash, and everything outside printable ASCII). `|`, `^`, `[` and `]` are left alone:
/// browsers send them raw.
pub fn invalid_in_path(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'<' | b'>' | b'\\' | b'`' | b'{' | b'}' | b'#')
}

/// Raw bytes that may not appear in a query: controls, space, non-ASCII, `#`.
pub fn invalid_in_query(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || b == b'#'
}

/// One pass over the request target.
pub fn analyze(target: &[u8]) -> PathFacts {
    let mut f = PathFacts::default();
    let q = target.iter().position(|&b| b == b'?');
    let (path, query) = match q {
        Some(i) => (target.get(..i).unwrap_or_default(), target.get(i + 1..)),
        None => (target, None),
    };
    let mut needs_utf8_check = false;
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if invalid_in_path(b) {
            f.invalid_character = true;
            if b >= 0x80 {
                needs_utf8_check = true;
            }
        }
        match b {
            b';' => f.parameter = true,
            b'/' if path.get(i + 1) == Some(&b'/') => f.double_slash = true,
            b'%' => {
                if let (Some(h), Some(l)) =
                    (path.get(i + 1).and_then(|&c| hex(c)), path.get(i + 2).and_then(|&c| hex(c)))
                {
                    match h * 16 + l {
                        b'/' | b'\\' => f.encoded_slash = true,
                        b';' => f.parameter = true,
                        b'#' | b'?' => f.encoded_delimiter = true,
                        0x00..=0x1f | 0x7f => f.encoded_control = true,
                        b'%' if path.get(i + 3).and_then(|&c| hex(c)).is_some()
                            && path.get(i + 4).and_then(|&c| hex(c)).is_some() =>
                        {
                            f.double_encoding = true;
                        }
                        0x80.. => needs_utf8_check = true,
                        _ => {}
                    }
                    i += 3;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    f.dot_segment = path.split(|&b| b == b'/').any(is_dot_segment);
    if needs_utf8_check {
        f.invalid_utf8 = std::str::from_utf8(&percent_decode(path)).is_err();
    }
    if let Some(query) = query {
        f.invalid_character |= query.iter().any(|&b| invalid_in_query(b));
        f.query_params = query.split(|&b| b == b'&').filter(|p| !p.is_empty()).count();
    }
    f
}

/// `.`, `..`, and their spellings with `%2E` (a `;` parameter after them included:
/// `..;x` is `..` to Tomcat).
fn is_dot_segment(seg: &[u8]) -> bool {
    let seg = seg.iter().position(|&b| b == b';').map_or(seg, |i| seg.get(..i).unwrap_or_default());
    let mut dots = 0;
    let mut i = 0;
    while let Some(&b) = seg.get(i) {
        if b == b'.' {
            i += 1;
        } else if b == b'%' && seg.get(i + 1) == Some(&b'2') && matches!(seg.get(i + 2), Some(b'e' | b'E')) {
            i += 3;
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots >= 1
}

/// Every valid `%XX` decoded (others kept as is).
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (raw.get(i + 1).and_then(|&c| hex(c)), raw.get(i + 2).and_then(|&c| hex(c))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PathFacts {
        analyze(s.as_bytes())
    }

    #[test]
    fn ordinary_paths_are_clean() {
        for p in [
            "/",
            "/api/v1/items?page=2&sort=-name",
            "/a-b_c.d~e/%20x",
            "/search?q=%2F%3B%2e%2e&x[]=1&y=a|b^c",
            "/caf%C3%A9",
            "/pkg.Service/Method",
            "/a/b.json",
            "/.well-known/openid-configuration",
            "/a/...b",
        ] {
            let f = a(p);
            assert_eq!(f, PathFacts { query_params: f.query_params, ..Default::default() }, "{p}");
        }
        assert_eq!(a("/x?a=1&b=2&&c").query_params, 3);
    }

    #[test]
    fn each_confusion_is_seen() {
        assert!(a("/a%2Fb").encoded_slash && a("/a%2fb").encoded_slash && a("/a%5cb").encoded_slash);
        assert!(a("/a/../b").dot_segment && a("/a/%2e%2E/b").dot_segment && a("/./a").dot_segment);
        assert!(a("/a/..;x/b").dot_segment && a("/a/.").dot_segment && a("/..").dot_segment);
        assert!(!a("/a/.../b").dot_segment && !a("/a/.b").dot_segment);
        assert!(a("/a//b").double_slash && a("//a").double_slash);
        assert!(a("/a;jsessionid=1").parameter && a("/a%3Bb").parameter && a("/a%3bb").parameter);
        assert!(a("/a%252Fb").double_encoding && !a("/a%25zz").double_encoding && !a("/100%25").double_encoding);
        assert!(a("/a%00").encoded_control && a("/a%0d%0a").encoded_control && a("/a%7F").encoded_control);
        assert!(a("/a%C0%AFb").invalid_utf8 && a("/a%ff").invalid_utf8 && a("/a%ED%A0%80").invalid_utf8);
        assert!(!a("/a%C3%A9").invalid_utf8);
        assert!(a("/a%23b").encoded_delimiter && a("/a%3Fb").encoded_delimiter);
        assert!(a("/caf\u{e9}").invalid_character && a("/a\\b").invalid_character && a("/a b").invalid_character);
        assert!(a("/a#frag").invalid_character && a("/a?x=\u{e9}").invalid_character && a("/a\"").invalid_character);
        assert!(!a("/caf\u{e9}").invalid_utf8, "raw UTF-8 is valid UTF-8; invalid_character catches it");
        assert!(a("/a\u{0}").invalid_character);
    }

    #[test]
    fn escapes_in_the_query_are_not_path_confusion() {
        let f = a("/a?next=%2F..%2F%3B%00%25%41");
        assert_eq!(f, PathFacts { query_params: 1, ..Default::default() });
    }
}
