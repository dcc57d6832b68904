//! Client addresses as forwarding headers carry them: the entries of `x-forwarded-for` and the
//! `for=`/`by=` nodes of `Forwarded` (RFC 7239). The one reader of both, so the hygiene guard
//! and anything after it agree on what an entry is.
//!
//! An address is strict: four decimal octets without leading zeros (no `0x7f.1`, no `2130706433`,
//! no `010.0.0.1`: inet_aton spellings that each library reads differently), or an IPv6 address
//! without a zone. Nothing here allocates.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::parse::token::{top_level_elements, trim_ows};

/// A strict IPv4 (dotted quad) or IPv6 address, as text.
pub fn is_ip(v: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(v) else { return false };
    if v.contains(&b':') {
        text.parse::<Ipv6Addr>().is_ok()
    } else {
        text.parse::<Ipv4Addr>().is_ok()
    }
}

/// Whether `value` (an `x-envoy-external-address` value: one address, OWS around it) names
/// the same IP address as `socket`, Envoy's `source.address` (`ip:port`, `[v6]:port`, or a bare
/// address). Envoy writes the header from that very address on an edge listener.
pub fn same_address(value: &[u8], socket: &[u8]) -> bool {
    fn parse(v: &[u8]) -> Option<std::net::IpAddr> {
        std::str::from_utf8(v).ok()?.parse().ok()
    }
    let host = match socket.strip_prefix(b"[") {
        Some(rest) => rest.split(|&b| b == b']').next().unwrap_or_default(),
        // `a.b.c.d:port`; a bare IPv6 address has more than one colon and no port.
        None if socket.iter().filter(|&&b| b == b':').count() == 1 => {
            socket.split(|&b| b == b':').next().unwrap_or_default()
        }
        None => socket,
    };
    matches!((parse(trim_ows(value)), parse(host)), (Some(a), Some(b)) if a == b)
}

/// A port: 1 to 5 digits, at most 65535.
fn is_port(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 5
        && v.iter().all(u8::is_ascii_digit)
        && v.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65_535
}

/// One `x-forwarded-for` entry (already trimmed): an address, an IPv4 address with a port or a
/// bracketed IPv6 address with an optional port (Azure Application Gateway and some load
/// balancers append `ip:port`), or `unknown` (what several proxies write for an address they
/// do not know).
pub fn is_forwarded_for_entry(e: &[u8]) -> bool {
    if e.eq_ignore_ascii_case(b"unknown") || is_ip(e) {
        return true;
    }
    if let Some(rest) = e.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let (inside, after) = (rest.get(..close).unwrap_or_default(), rest.get(close + 1..).unwrap_or_default());
        let port_ok = after.is_empty() || after.strip_prefix(b":").is_some_and(is_port);
        return inside.contains(&b':') && is_ip(inside) && port_ok;
    }
    match e.iter().position(|&b| b == b':') {
        Some(i) => {
            let (ip, port) = (e.get(..i).unwrap_or_default(), e.get(i + 1..).unwrap_or_default());
            !ip.contains(&b':') && is_ip(ip) && is_port(port)
        }
        None => false,
    }
}

/// Every comma-separated entry of an `x-forwarded-for` value is an entry
/// ([`is_forwarded_for_entry`]); an empty value or an empty entry is not.
pub fn forwarded_for_is_valid(v: &[u8]) -> bool {
    v.split(|&b| b == b',').all(|e| is_forwarded_for_entry(trim_ows(e)))
}

/// RFC 7239 `obfnode` / `obfport`: `_` and 1*(ALPHA / DIGIT / "." / "_" / "-").
fn is_obfuscated(v: &[u8]) -> bool {
    v.len() > 1
        && v.first() == Some(&b'_')
        && v.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// RFC 7239 `node`: `nodename [ ":" node-port ]` where nodename is an IPv4 address, a bracketed
/// IPv6 address, `unknown` or an obfuscated identifier, and node-port a port or `_`-obfuscated.
/// (`v` is the value with any quotes removed.)
pub fn is_forwarded_node(v: &[u8]) -> bool {
    let (name, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let inside = rest.get(..close).unwrap_or_default();
        if !inside.contains(&b':') || !is_ip(inside) {
            return false;
        }
        (None, rest.get(close + 1..).unwrap_or_default())
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (Some(v.get(..i).unwrap_or_default()), v.get(i..).unwrap_or_default()),
            None => (Some(v), &b""[..]),
        }
    };
    let name_ok =
        name.is_none_or(|n| (is_ip(n) && !n.contains(&b':')) || n.eq_ignore_ascii_case(b"unknown") || is_obfuscated(n));
    let port_ok = port.is_empty() || port.strip_prefix(b":").is_some_and(|p| is_port(p) || is_obfuscated(p));
    name_ok && port_ok
}

/// A `Forwarded` value (RFC 7239): comma-separated elements of `;`-separated `token=value`
/// pairs; every `for` and `by` value must be a node ([`is_forwarded_node`]). A bare IPv6
/// address or a port must be quoted, as the RFC's grammar requires (`for="[2001:db8::1]:80"`).
/// Other parameters (`host`, `proto`) are the `forwardedRouting` guard's business, but each
/// must still be a `token=value` pair.
pub fn forwarded_is_valid(v: &[u8]) -> bool {
    for element in top_level_elements(v) {
        let element = trim_ows(element);
        if element.is_empty() {
            return false;
        }
        for pair in element.split(|&b| b == b';') {
            let pair = trim_ows(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else { return false };
            let (name, value) = (pair.get(..eq).unwrap_or_default(), pair.get(eq + 1..).unwrap_or_default());
            if name.is_empty() || !name.iter().all(|&b| crate::parse::token::is_tchar(b)) {
                return false;
            }
            let quoted = value.len() >= 2 && value.first() == Some(&b'"') && value.last() == Some(&b'"');
            let inner = if quoted { value.get(1..value.len() - 1).unwrap_or_default() } else { value };
            if inner.is_empty() || (!quoted && !inner.iter().all(|&b| crate::parse::token::is_tchar(b))) {
                return false;
            }
            if inner.iter().any(|&b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b)) {
                return false;
            }
            if (name.eq_ignore_ascii_case(b"for") || name.eq_ignore_ascii_case(b"by")) && !is_forwarded_node(inner) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_entries() {
        for ok in [
            "203.0.113.7",
            "203.0.113.7, 10.0.0.1",
            "2001:db8::1",
            "2001:db8::1,198.51.100.2",
            "[2001:db8::1]",
            "[2001:db8::1]:443",
            "203.0.113.7:51234",
            "unknown, 10.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(forwarded_for_is_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "127.0.0.1, <script>",
            "10.0.0.1,,10.0.0.2",
            "010.0.0.1",
            "0x7f.0.0.1",
            "2130706433",
            "10.0.0.256",
            "fe80::1%eth0",
            "[2001:db8::1",
            "[10.0.0.1]",
            "2001:db8::1:99999x",
            "10.0.0.1:70000",
            "10.0.0.1:",
            "localhost",
            "1.2.3.4 5.6.7.8",
            "for=1.2.3.4",
            "_hidden",
        ] {
            assert!(!forwarded_for_is_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn forwarded_elements() {
        for ok in [
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            "for=\"_gazonk\"",
            "For=\"[2001:db8:cafe::17]:4711\"",
            "for=192.0.2.43, for=198.51.100.17",
            "for=unknown",
            "for=_hidden, for=\"192.0.2.43:_port\"",
            "proto=https;host=example.com",
            "for=\"192.0.2.43:8080\"",
        ] {
            assert!(forwarded_is_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "for=evil.example",
            "for=\"[2001:db8::1\"",
            "for=\"2001:db8::1\"",
            "for=192.0.2.43:8080",
            "for=",
            "for",
            "for=1.2.3.4,",
            "for=\"<script>\"",
            "for=_",
            "for=\"1.2.3.4:99999\"",
            "by=localhost",
            "for=1.2.3.4;host",
        ] {
            assert!(!forwarded_is_valid(bad.as_bytes()), "{bad}");
        }
    }
}
