//! RFC 9110 tokens, lists and quoted strings: the one reader of them for every check, so that
//! the hygiene guards, the route rules and the XFCC parser cut a header value the same way.

/// RFC 9110 `tchar`.
pub fn is_tchar(b: u8) -> bool {
    TCHAR.get(usize::from(b)).copied().unwrap_or(false)
}

/// RFC 9110 `tchar`, as a table. (Built at compile time: an index out of range would fail the
/// build, never a request.)
#[allow(clippy::indexing_slicing)]
pub const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    t
};

/// An uppercase RFC 9110 method token.
pub fn is_method_token(m: &str) -> bool {
    !m.is_empty() && m.bytes().all(is_tchar) && !m.bytes().any(|b| b.is_ascii_lowercase())
}

/// A value without optional whitespace (SP, HTAB) around it (RFC 9110 `OWS`).
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// The comma-separated tokens of a list header, trimmed, empty ones skipped.
pub fn list_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

/// Split `raw` on `sep` outside double quotes (honouring `\"` inside quotes); the flag says
/// whether every quote was closed.
pub fn split_outside_quotes(raw: &[u8], sep: u8) -> (Vec<&[u8]>, bool) {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in raw.iter().enumerate() {
        if in_quotes {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            parts.push(raw.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    parts.push(raw.get(start..).unwrap_or_default());
    (parts, !in_quotes)
}

/// The pieces of a value between commas outside double quotes (`\"` escapes inside; an
/// unclosed quote runs to the end).
pub fn top_level_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_outside_quotes(v, b',').0.into_iter()
}
