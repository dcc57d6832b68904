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

/// The pieces of `raw` between `sep` bytes outside double quotes (honouring `\"` inside
/// quotes), without allocating. After the last piece, [`QuotedSplit::unterminated`] says
/// whether a quote was left open (the last piece then runs to the end).
#[derive(Debug, Clone)]
pub struct QuotedSplit<'a> {
    raw: &'a [u8],
    sep: u8,
    start: usize,
    done: bool,
    unterminated: bool,
}

impl<'a> QuotedSplit<'a> {
    pub fn new(raw: &'a [u8], sep: u8) -> Self {
        QuotedSplit { raw, sep, start: 0, done: false, unterminated: false }
    }

    /// Whether the value ended inside a quoted string (meaningful once the iterator is done).
    pub fn unterminated(&self) -> bool {
        self.unterminated
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let mut in_quotes = false;
        let mut escaped = false;
        let rest = self.raw.get(self.start..).unwrap_or_default();
        for (i, &b) in rest.iter().enumerate() {
            if in_quotes {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_quotes = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == self.sep {
                let piece = rest.get(..i).unwrap_or_default();
                self.start += i + 1;
                return Some(piece);
            }
        }
        self.done = true;
        self.unterminated = in_quotes;
        Some(rest)
    }
}

/// Split `raw` on `sep` outside double quotes (see [`QuotedSplit`]); the flag says whether
/// every quote was closed.
pub fn split_outside_quotes(raw: &[u8], sep: u8) -> (Vec<&[u8]>, bool) {
    let mut split = QuotedSplit::new(raw, sep);
    let parts = split.by_ref().collect();
    (parts, !split.unterminated())
}

/// The pieces of a value between commas outside double quotes (`\"` escapes inside; an
/// unclosed quote runs to the end).
pub fn top_level_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    QuotedSplit::new(v, b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (value, pieces, every quote closed)
    type Case<'a> = (&'a [u8], &'a [&'a [u8]], bool);

    #[test]
    fn quoted_split_agrees_with_a_plain_definition() {
        let cases: &[Case<'_>] = &[
            (b"", &[b""], true),
            (b"a,b", &[b"a", b"b"], true),
            (b"a,", &[b"a", b""], true),
            (b"\"x,y\",z", &[b"\"x,y\"", b"z"], true),
            (b"\"x\\\",y\",z", &[b"\"x\\\",y\"", b"z"], true),
            (b"a,\"open", &[b"a", b"\"open"], false),
        ];
        for (raw, parts, closed) in cases {
            assert_eq!(split_outside_quotes(raw, b','), (parts.to_vec(), *closed), "{raw:?}");
        }
    }
}
