//! The formats of the tracing headers the `traceContext` guard checks, and the values of the
//! headers `injectedValues` reads. Each reader is a pure function of the value's bytes; none
//! allocates.
//!
//! Sources: W3C Trace Context (traceparent, tracestate), openzipkin/b3-propagation (`b3` and
//! `x-b3-*`), Jaeger (`uber-trace-id`), Google Cloud (`x-cloud-trace-context`), AWS X-Ray
//! (`x-amzn-trace-id`), Datadog (`x-datadog-*`), RFC 9110 section 11 (credentials).

use crate::parse::token::{is_tchar, top_level_elements, trim_ows};

/// The tracing headers whose format is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Traceparent,
    Tracestate,
    B3,
    B3TraceId,
    B3SpanId,
    B3ParentSpanId,
    B3Sampled,
    B3Flags,
    UberTraceId,
    CloudTrace,
    AmznTrace,
    DatadogId,
    DatadogParentId,
    DatadogPriority,
    DatadogOther,
    DatadogTags,
}

/// `0-9a-f`, as a table: trace ids are most of what this module reads. (Built at compile
/// time: an index out of range would fail the build, never a request.)
#[allow(clippy::indexing_slicing)]
const LOWER_HEX: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'0'..=b'9' | b'a'..=b'f');
        b += 1;
    }
    t
};

fn lower_hex(v: &[u8]) -> bool {
    v.iter().all(|&b| LOWER_HEX.get(usize::from(b)).copied().unwrap_or(false))
}

fn hex(v: &[u8]) -> bool {
    v.iter().all(u8::is_ascii_hexdigit)
}

fn not_zero(v: &[u8]) -> bool {
    v.iter().any(|&b| b != b'0')
}

/// A B3 / W3C trace id: 16 or 32 lowercase hex digits, not all zero.
fn trace_id(v: &[u8]) -> bool {
    matches!(v.len(), 16 | 32) && lower_hex(v) && not_zero(v)
}

/// A B3 span id: 16 lowercase hex digits, not all zero.
fn span_id(v: &[u8]) -> bool {
    v.len() == 16 && lower_hex(v) && not_zero(v)
}

/// W3C `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero, lowercase. A later
/// version (not `ff`) may append `-...` fields after the four the spec defines.
fn traceparent(v: &[u8]) -> bool {
    // The one shape every tracer sends today: `00-` 32 hex `-` 16 hex `-` 2 hex, by position.
    if v.len() == 55 && v.starts_with(b"00-") {
        let (trace, parent, flags) = (v.get(3..35), v.get(36..52), v.get(53..55));
        return v.get(35) == Some(&b'-')
            && v.get(52) == Some(&b'-')
            && trace.is_some_and(|t| lower_hex(t) && not_zero(t))
            && parent.is_some_and(|p| lower_hex(p) && not_zero(p))
            && flags.is_some_and(lower_hex);
    }
    let mut parts = v.split(|&b| b == b'-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let fixed = version.len() == 2
        && lower_hex(version)
        && version != b"ff"
        && trace.len() == 32
        && lower_hex(trace)
        && not_zero(trace)
        && parent.len() == 16
        && lower_hex(parent)
        && not_zero(parent)
        && flags.len() == 2
        && lower_hex(flags);
    let rest_ok = if version == b"00" {
        parts.next().is_none()
    } else {
        parts.all(|p| p.iter().all(|&b| b.is_ascii_alphanumeric()))
    };
    fixed && rest_ok
}

/// W3C `tracestate`: at most 32 `key=value` members (empty members allowed), key
/// `[a-z0-9][a-z0-9_*/-]{0,255}` optionally `@` a vendor of up to 14, value 1-256 printable
/// ASCII without `,` and `=`, not ending in a space.
fn tracestate(v: &[u8]) -> bool {
    let mut members = 0;
    for m in v.split(|&b| b == b',') {
        let m = trim_ows(m);
        if m.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = m.iter().position(|&b| b == b'=') else { return false };
        let (key, value) = (m.get(..eq).unwrap_or_default(), m.get(eq + 1..).unwrap_or_default());
        let key_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/');
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && key.iter().filter(|&&b| b == b'@').count() <= 1
            && key.iter().all(|b| key_char(b) || *b == b'@');
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && value.iter().all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
            && value.last() != Some(&b' ');
        if !key_ok || !value_ok {
            return false;
        }
    }
    members <= 32
}

/// B3 single header: `{trace}-{span}[-{sampling}[-{parent}]]`, or only a sampling state.
fn b3(v: &[u8]) -> bool {
    let sampling = |s: &[u8]| matches!(s, b"0" | b"1" | b"d");
    if sampling(v) {
        return true;
    }
    let mut parts = v.split(|&b| b == b'-');
    let (Some(trace), Some(span)) = (parts.next(), parts.next()) else { return false };
    let third = parts.next();
    let fourth = parts.next();
    trace_id(trace)
        && span_id(span)
        && third.is_none_or(sampling)
        && fourth.is_none_or(span_id)
        && parts.next().is_none()
}

/// Jaeger `uber-trace-id`: `{trace}:{span}:{parent}:{flags}`, hex ids (trace up to 32, span
/// and parent up to 16, parent may be `0`), flags a small number.
fn uber_trace_id(v: &[u8]) -> bool {
    let mut parts = v.split(|&b| b == b':');
    let (Some(trace), Some(span), Some(parent), Some(flags), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    (1..=32).contains(&trace.len())
        && hex(trace)
        && not_zero(trace)
        && (1..=16).contains(&span.len())
        && hex(span)
        && (1..=16).contains(&parent.len())
        && hex(parent)
        && (1..=3).contains(&flags.len())
        && hex(flags)
}

/// `x-cloud-trace-context`: `TRACE_ID[/SPAN_ID][;o=OPTIONS]`: 32 hex, a decimal span id, o=0|1.
fn cloud_trace(v: &[u8]) -> bool {
    let (ids, options) = match v.iter().position(|&b| b == b';') {
        Some(i) => (v.get(..i).unwrap_or_default(), Some(v.get(i + 1..).unwrap_or_default())),
        None => (v, None),
    };
    let (trace, span) = match ids.iter().position(|&b| b == b'/') {
        Some(i) => (ids.get(..i).unwrap_or_default(), Some(ids.get(i + 1..).unwrap_or_default())),
        None => (ids, None),
    };
    trace.len() == 32
        && hex(trace)
        && span.is_none_or(|s| (1..=20).contains(&s.len()) && s.iter().all(u8::is_ascii_digit))
        && options.is_none_or(|o| matches!(o, b"o=0" | b"o=1"))
}

/// `x-amzn-trace-id`: `;`-separated `Key=Value` fields (Root, Parent, Sampled, Self, Lineage
/// and the application's own), keys tokens, values without spaces, commas or quotes.
fn amzn_trace(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.split(|&b| b == b';').all(|f| {
            let Some(eq) = f.iter().position(|&b| b == b'=') else { return false };
            let (k, val) = (f.get(..eq).unwrap_or_default(), f.get(eq + 1..).unwrap_or_default());
            !k.is_empty()
                && k.iter().all(|&b| is_tchar(b))
                && val.iter().all(|&b| b > 0x20 && b < 0x7f && !matches!(b, b',' | b'"' | b';'))
        })
}

/// Whether `v` (one header field's value) is well-formed for its header.
pub fn is_valid(t: Trace, v: &[u8]) -> bool {
    match t {
        Trace::Traceparent => traceparent(v),
        Trace::Tracestate => tracestate(v),
        Trace::B3 => b3(v),
        Trace::B3TraceId => trace_id(v),
        Trace::B3SpanId | Trace::B3ParentSpanId => span_id(v),
        Trace::B3Sampled => matches!(v, b"0" | b"1" | b"true" | b"false" | b"d"),
        Trace::B3Flags => v == b"1" || v == b"0",
        Trace::UberTraceId => uber_trace_id(v),
        Trace::CloudTrace => cloud_trace(v),
        Trace::AmznTrace => amzn_trace(v),
        Trace::DatadogId | Trace::DatadogParentId => (1..=20).contains(&v.len()) && v.iter().all(u8::is_ascii_digit),
        Trace::DatadogPriority => matches!(v, b"-1" | b"0" | b"1" | b"2"),
        Trace::DatadogOther | Trace::DatadogTags => {
            (1..=512).contains(&v.len()) && v.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'"')
        }
    }
}

/// Whether the header may arrive in more than one field (W3C: `tracestate` may be split).
pub fn may_repeat(t: Trace) -> bool {
    t == Trace::Tracestate
}

/// RFC 9110 `token68`: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=", and
/// `:` for the legacy `id:signature` credentials (Azure Storage `SharedKey account:sig=`,
/// AWS signature v2 `AWS AKID:sig=`).
fn is_token68(v: &[u8]) -> bool {
    let body = v
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b':'));
    let n = body.count();
    n > 0 && v.get(n..).unwrap_or_default().iter().all(|&b| b == b'=')
}

/// An `Authorization` / `Proxy-Authorization` value that is not one RFC 9110 credential:
/// `auth-scheme [ 1*SP ( token68 / #auth-param ) ]`. Auth-param values are read loosely (any
/// visible ASCII but `,` and `"` unless quoted: AWS SigV4 puts `/` in them). A value Envoy
/// joined after deleting a bare CR (`Bearer a\rX-Injected: 1` arrives as
/// `Bearer aX-Injected: 1`) is never one credential. (Without the space, `Bearer aX-A:1`
/// cannot be told from `SharedKey account:signature` and passes.)
pub fn credentials_malformed(v: &[u8]) -> bool {
    // The decision log's stand-in for a credential (one per merged value): a logged line
    // decides again as it did on the wire (the log module's replay check), and it holds no
    // header line.
    if top_level_elements(v).all(|e| trim_ows(e) == crate::log::redact::REDACTED.as_bytes()) {
        return false;
    }
    let scheme_len = v.iter().take_while(|&&b| is_tchar(b)).count();
    if scheme_len == 0 {
        return true;
    }
    let rest = v.get(scheme_len..).unwrap_or_default();
    if rest.is_empty() {
        return false;
    }
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    let rest = rest.get(spaces..).unwrap_or_default();
    if spaces == 0 || rest.is_empty() {
        return true;
    }
    if is_token68(rest) {
        return false;
    }
    !top_level_elements(rest).map(trim_ows).filter(|p| !p.is_empty()).all(|p| {
        let name_len = p.iter().take_while(|&&b| is_tchar(b)).count();
        let after = trim_ows(p.get(name_len..).unwrap_or_default());
        let Some(value) = after.strip_prefix(b"=") else { return false };
        let value = trim_ows(value);
        let quoted = value.len() >= 2 && value.first() == Some(&b'"') && value.last() == Some(&b'"');
        name_len > 0
            && !value.is_empty()
            && (quoted || value.iter().all(|&b| b > 0x20 && b < 0x7f && b != b'"' && b != b','))
    })
}

/// A value with a header line inside it: a name (a token) directly followed by `:` and a
/// space or tab, as a back end or log pipeline that splits on `\r` would read it. No
/// identity value (a user, e-mail, tenant, key or token) has one.
pub fn has_header_line(v: &[u8]) -> bool {
    v.windows(2).enumerate().any(|(i, w)| {
        w.first() == Some(&b':')
            && matches!(w.get(1), Some(b' ' | b'\t'))
            && i > 0
            && v.get(i - 1).is_some_and(|&b| is_tchar(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_formats() {
        let ok: &[(Trace, &str)] = &[
            (Trace::Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (Trace::Traceparent, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"),
            (Trace::Tracestate, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            (Trace::Tracestate, "vendor=abc"),
            (Trace::Tracestate, "fw529a3039@dt=abc, dd=s:1;o:rum"),
            (Trace::B3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
            (Trace::B3, "80f198ee56343ba8-e457b5a2e4d86bd1"),
            (Trace::B3, "0"),
            (Trace::B3TraceId, "80f198ee56343ba864fe8b2a57d3eff7"),
            (Trace::B3SpanId, "e457b5a2e4d86bd1"),
            (Trace::B3Sampled, "1"),
            (Trace::UberTraceId, "5f0c3b6f8d1e2a9b:7a1d2c3e4f5a6b7c:0:1"),
            (Trace::CloudTrace, "105445aa7843bc8bf206b12000100000/1;o=1"),
            (Trace::CloudTrace, "105445aa7843bc8bf206b12000100000"),
            (Trace::AmznTrace, "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
            (Trace::AmznTrace, "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678"),
            (Trace::DatadogId, "1234567890123456789"),
            (Trace::DatadogPriority, "1"),
            (Trace::DatadogOther, "_dd.p.dm=-4"),
        ];
        for (t, v) in ok {
            assert!(is_valid(*t, v.as_bytes()), "{t:?} {v}");
        }
        let bad: &[(Trace, &str)] = &[
            (Trace::Traceparent, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            (Trace::Traceparent, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            (Trace::Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"),
            (Trace::Traceparent, "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            (Trace::Traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            (Trace::Traceparent, "<script>"),
            (Trace::Tracestate, "Vendor=abc"),
            (Trace::Tracestate, "a=b=c"),
            (Trace::Tracestate, "a"),
            (Trace::B3, "x-y"),
            (Trace::B3, "80f198ee56343ba8-e457b5a2e4d86bd1-2"),
            (Trace::B3TraceId, "80F198EE56343BA8"),
            (Trace::B3TraceId, "123"),
            (Trace::B3SpanId, "0000000000000000"),
            (Trace::B3Sampled, "yes"),
            (Trace::UberTraceId, "abc:def"),
            (Trace::CloudTrace, "abc/1;o=1"),
            (Trace::AmznTrace, "Root=1 2"),
            (Trace::DatadogId, "-1"),
            (Trace::DatadogPriority, "9"),
        ];
        for (t, v) in bad {
            assert!(!is_valid(*t, v.as_bytes()), "{t:?} {v}");
        }
        let members = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(!is_valid(Trace::Tracestate, members.as_bytes()));
    }

    #[test]
    fn credentials() {
        for ok in [
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
            "Basic dXNlcjpwYXNz",
            "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCqKCBkAEggY8=",
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", nc=00000001",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "sk-proj-abc123",
            "Token token=\"abc\", email=\"a@b.c\"",
            "SharedKey myaccount:ctzMq410TV3wS7upTBcunJTDLEJwMAZuFPfr0mrrA08=",
            "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
            "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=abc=",
            // The known limit: a joined line without a space after its colon.
            "Bearer aX-Injected:1",
        ] {
            assert!(!credentials_malformed(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "Bearer aX-Injected: 1",
            "SharedKey a:bX-Injected: 1",
            "Bearer a b",
            "Bearer ",
            "Bearer",
            " Bearer a",
            "Basic a=b=c d",
            "Bearer a, Bearer b",
        ] {
            assert!(credentials_malformed(bad.as_bytes()) || bad == "Bearer", "{bad}");
        }
        assert!(!credentials_malformed(b"Bearer"));
    }

    #[test]
    fn header_lines_inside_values() {
        assert!(has_header_line(b"aliceX-Role: admin"));
        assert!(has_header_line(b"k\tX-A:\t1"));
        assert!(!has_header_line(b"alice@example.com"));
        assert!(!has_header_line(b"urn:user:42"));
        assert!(!has_header_line(b"CN=John Doe, O=Example"));
        assert!(!has_header_line(b": x"));
    }
}
