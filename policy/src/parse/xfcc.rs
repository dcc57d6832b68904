//! `x-forwarded-client-cert` parsing.
//!
//! Threat: a client forging its identity by sending its own XFCC header. Envoy's
//! `APPEND_FORWARD` keeps whatever the client sent and appends the element describing the
//! certificate it actually verified, so only the LAST element can be the local Envoy's; every
//! element before it is hearsay. meshguard never trusts XFCC unless the policy says so, and
//! then only the last element.
//!
//! Grammar (Envoy's): elements separated by `,`; each element is `key=value` pairs separated by
//! `;`; a value containing `,`, `;` or `=` is double-quoted, with `\"` for a quote inside.

use std::borrow::Cow;

use crate::parse::token::QuotedSplit;

/// Why an XFCC header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfccError {
    Empty,
    UnterminatedQuote,
    MissingEquals,
    EmptyKey,
}

/// One `key=value` pair of an element, the value unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// [`unquote`], borrowing when there is nothing to unescape.
fn unquote_cow(v: &[u8]) -> Cow<'_, [u8]> {
    match v {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => Cow::Borrowed(inner),
        [b'"', ..] => Cow::Owned(unquote(v)),
        _ => Cow::Borrowed(v),
    }
}

fn unquote(v: &[u8]) -> Vec<u8> {
    let inner = match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => return v.to_vec(),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if !escaped && b == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// Parse one element (`By=...;Hash=...;URI=...`).
pub fn parse_element(raw: &[u8]) -> Result<Vec<Pair>, XfccError> {
    let raw = trim(raw);
    if raw.is_empty() {
        return Err(XfccError::Empty);
    }
    let mut pairs = Vec::new();
    let (parts, closed) = crate::parse::token::split_outside_quotes(raw, b';');
    if !closed {
        return Err(XfccError::UnterminatedQuote);
    }
    for part in parts {
        let part = trim(part);
        let eq = part.iter().position(|&b| b == b'=').ok_or(XfccError::MissingEquals)?;
        let (key, value) = part.split_at(eq);
        let key = trim(key);
        if key.is_empty() {
            return Err(XfccError::EmptyKey);
        }
        pairs.push(Pair { key: key.to_vec(), value: unquote(trim(value.get(1..).unwrap_or_default())) });
    }
    Ok(pairs)
}

/// What every `x-forwarded-client-cert` value of a request holds, read in one pass without
/// allocating: how many non-empty elements there are, and the last one (raw, trimmed). On an
/// mTLS connection the last element is the one the local Envoy appended (APPEND_FORWARD) or
/// set (SANITIZE_SET); every other one is hearsay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elements<'a> {
    pub count: usize,
    pub last: Option<&'a [u8]>,
}

/// Read every value of the header, in order (several header lines are one comma-separated
/// list). An unterminated quote anywhere is an error.
pub fn elements<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Elements<'a>, XfccError> {
    let mut out = Elements::default();
    for value in values {
        let mut split = QuotedSplit::new(value, b',');
        for element in split.by_ref().map(trim).filter(|e| !e.is_empty()) {
            out.count += 1;
            out.last = Some(element);
        }
        if split.unterminated() {
            return Err(XfccError::UnterminatedQuote);
        }
    }
    Ok(out)
}

/// The last element, parsed (see [`elements`] and [`parse_element`]).
pub fn last_element<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<Vec<Pair>>, XfccError> {
    elements(values)?.last.map(parse_element).transpose()
}

/// The first two `URI` values of one raw element, unquoted (enough to tell none, one and
/// several), in one pass and without allocating unless a value has `\\` escapes; `Err` when
/// the element does not parse, with the error [`parse_element`] gives.
pub fn first_uris(raw: &[u8]) -> Result<[Option<Cow<'_, [u8]>>; 2], XfccError> {
    let raw = trim(raw);
    if raw.is_empty() {
        return Err(XfccError::Empty);
    }
    let mut split = QuotedSplit::new(raw, b';');
    let mut first_error = None;
    let mut out: [Option<Cow<'_, [u8]>>; 2] = [None, None];
    let mut found = 0;
    for part in split.by_ref() {
        let Some(eq) = part.iter().position(|&b| b == b'=') else {
            first_error = first_error.or(Some(XfccError::MissingEquals));
            continue;
        };
        let key = trim(part.get(..eq).unwrap_or_default());
        if key.is_empty() {
            first_error = first_error.or(Some(XfccError::EmptyKey));
        } else if key.eq_ignore_ascii_case(b"URI") {
            if let Some(slot) = out.get_mut(found) {
                *slot = Some(unquote_cow(trim(part.get(eq + 1..).unwrap_or_default())));
                found += 1;
            }
        }
    }
    if split.unterminated() {
        return Err(XfccError::UnterminatedQuote);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The `URI` values of an element.
pub fn uris(element: &[Pair]) -> impl Iterator<Item = &[u8]> {
    element.iter().filter(|p| p.key.eq_ignore_ascii_case(b"URI")).map(|p| p.value.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(values: &[&str]) -> Result<Option<Vec<Pair>>, XfccError> {
        last_element(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn envoy_style_elements() {
        let el = last(&[
            r#"By=spiffe://cluster.local/ns/default/sa/api;Hash=abc;Subject="O=x,CN=web";URI=spiffe://cluster.local/ns/web/sa/web;DNS=web.local"#,
        ])
        .unwrap()
        .unwrap();
        let uris: Vec<_> = uris(&el).collect();
        assert_eq!(uris, vec![b"spiffe://cluster.local/ns/web/sa/web".as_slice()]);
        assert_eq!(el[2].value, b"O=x,CN=web");
    }

    #[test]
    fn only_the_last_element_counts() {
        // A client-supplied element first, the local Envoy's appended after it.
        let el = last(&["URI=spiffe://cluster.local/ns/ops/sa/admin,By=spiffe://td/x;URI=spiffe://td/real"])
            .unwrap()
            .unwrap();
        assert_eq!(uris(&el).collect::<Vec<_>>(), vec![b"spiffe://td/real".as_slice()]);
        // Several header lines read as one list.
        let el = last(&["URI=spiffe://td/forged", "URI=spiffe://td/real"]).unwrap().unwrap();
        assert_eq!(uris(&el).collect::<Vec<_>>(), vec![b"spiffe://td/real".as_slice()]);
        // A quoted comma does not split elements.
        let el =
            last(&[r#"URI=spiffe://td/a,Subject="CN=a,URI=spiffe://td/forged";URI=spiffe://td/b"#]).unwrap().unwrap();
        assert_eq!(uris(&el).collect::<Vec<_>>(), vec![b"spiffe://td/b".as_slice()]);
        let el = last(&[r#"Subject="a\"b,c";URI=spiffe://td/b"#]).unwrap().unwrap();
        assert_eq!(el[0].value, b"a\"b,c");
    }

    #[test]
    fn multiple_uris_are_all_seen() {
        let el = last(&["Hash=1;URI=spiffe://td/a;URI=spiffe://td/b"]).unwrap().unwrap();
        assert_eq!(uris(&el).count(), 2);
    }

    #[test]
    fn malformed() {
        assert_eq!(last(&[]), Ok(None));
        assert_eq!(last(&[""]), Ok(None));
        assert_eq!(last(&[r#"Subject="abc"#]), Err(XfccError::UnterminatedQuote));
        assert_eq!(last(&["URI"]), Err(XfccError::MissingEquals));
        assert_eq!(last(&["=x"]), Err(XfccError::EmptyKey));
        assert_eq!(last(&["a=b;;c=d"]), Err(XfccError::MissingEquals));
    }

    #[test]
    fn counting_agrees_with_splitting() {
        for v in [&b""[..], b" , ,", b"a=1", b"a=1,b=2", br#"S="x,y";U=1, b=2 ,"#, br#"a="\",",b"#, br#"a="x"#] {
            let counted = elements(std::iter::once(v)).map(|e| e.count);
            let (parts, closed) = crate::parse::token::split_outside_quotes(v, b',');
            let split = parts.into_iter().filter(|e| !trim(e).is_empty()).count();
            let expected = if closed { Ok(split) } else { Err(XfccError::UnterminatedQuote) };
            assert_eq!(counted, expected, "{:?}", String::from_utf8_lossy(v));
        }
        assert_eq!(
            elements([&b"a=1"[..], b"b=2,c=3"].into_iter()).map(|e| (e.count, e.last)),
            Ok((3, Some(&b"c=3"[..])))
        );
    }

    /// The allocation-free URI reader and the full element parser agree on every element.
    #[test]
    fn first_uris_agree_with_parse_element() {
        for raw in [
            &b"By=a;URI=spiffe://td/x"[..],
            b"URI=\"spiffe://td/q\";uri=spiffe://td/b",
            br#"URI="a\"b";Subject="x;y""#,
            b"URI",
            b"=x",
            b"a=b;;c=d",
            br#"Subject="abc"#,
            b"",
            b" Hash=1 ; URI = spiffe://td/sp ",
            b"URI=a;URI=b;URI=c",
        ] {
            let fast = first_uris(raw).map(|u| u.into_iter().flatten().map(Cow::into_owned).collect::<Vec<_>>());
            let full = parse_element(raw).map(|el| uris(&el).take(2).map(<[u8]>::to_vec).collect::<Vec<_>>());
            assert_eq!(fast, full, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(b"=;,\"\\ aURI\xff"[(x % 11) as usize]);
            }
            let _ = last_element(std::iter::once(buf.as_slice()));
        }
    }
}
