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

/// Split `raw` on `sep` outside double quotes (honouring `\"` inside quotes).
fn split_unquoted(raw: &[u8], sep: u8) -> Result<Vec<&[u8]>, XfccError> {
    match crate::parse::token::split_outside_quotes(raw, sep) {
        (_, false) => Err(XfccError::UnterminatedQuote),
        (parts, true) => Ok(parts),
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
    for part in split_unquoted(raw, b';')? {
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

/// The last element of the header, given every value of the header in order (several
/// header lines are read as one comma-separated list).
pub fn last_element<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<Vec<Pair>>, XfccError> {
    let mut last: Option<&[u8]> = None;
    for value in values {
        if let Some(el) = split_unquoted(value, b',')?.into_iter().rev().find(|e| !trim(e).is_empty()) {
            last = Some(el);
        }
    }
    last.map(parse_element).transpose()
}

/// Every non-empty element of the header, raw (quotes kept), in order, given every value of the
/// header in order. The last one is the element the local Envoy appended (APPEND_FORWARD) or
/// set (SANITIZE_SET), on an mTLS connection.
pub fn raw_elements<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Vec<&'a [u8]>, XfccError> {
    let mut out = Vec::new();
    for value in values {
        out.extend(split_unquoted(value, b',')?.into_iter().map(trim).filter(|e| !e.is_empty()));
    }
    Ok(out)
}

/// How many non-empty elements the header has (see [`raw_elements`]), without allocating.
pub fn count_elements<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<usize, XfccError> {
    let mut count = 0;
    for value in values {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut content = false;
        for &b in value {
            if in_quotes {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_quotes = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    in_quotes = true;
                    content = true;
                }
                b',' => {
                    count += usize::from(content);
                    content = false;
                }
                b if b.is_ascii_whitespace() => {}
                _ => content = true,
            }
        }
        if in_quotes {
            return Err(XfccError::UnterminatedQuote);
        }
        count += usize::from(content);
    }
    Ok(count)
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
            let counted = count_elements(std::iter::once(v));
            let split = raw_elements(std::iter::once(v)).map(|e| e.len());
            assert_eq!(counted, split, "{:?}", String::from_utf8_lossy(v));
        }
        assert_eq!(count_elements([&b"a=1"[..], b"b=2,c=3"].into_iter()), Ok(3));
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
