//! Host names as an egress allowlist must see them.
//!
//! Threat: allowlist evasion by spelling. `API.EXAMPLE.COM.`, `api.example.com:443` and
//! `api.example.com` are one destination; `api.example.com.evil.net`, `evilexample.com` and
//! `api.example.com:443@evil.net` are not. Resolvers accept far more IPv4 spellings than
//! dotted quads (`0x7f.1`, `2130706433`, `0177.0.0.1` all mean 127.0.0.1 to `inet_aton` and to
//! WHATWG URL parsers), and an IPv6 literal can carry an IPv4 address (`[::ffff:169.254.169.254]`)
//! or a zone (`[fe80::1%25eth0]`). A string comparison misses all of that; here every host is
//! parsed once into a [`Host`] and classified ([`HostClass`]) before any rule looks at it.
//!
//! Normal form: ASCII only (an internationalized name travels in its `xn--` A-label form, as DNS
//! and the Host header carry it; raw UTF-8 is refused, not mapped), lowercase, one trailing dot
//! removed, the port split off and parsed. Anything that does not parse is an error, and the
//! egress check denies it: there is no "best effort" host.
//!
//! What counts as an IPv4 literal follows the WHATWG URL standard (and glibc's `inet_aton`): a
//! host whose last label is a number (decimal digits, or `0x` and hex digits) is an IPv4
//! address in one to four parts, each decimal, octal (leading `0`) or hex (`0x`); if it does
//! not parse as one, it is not a valid host at all (no DNS name ends in a numeric label). Only a
//! dotted quad of plain decimals is *canonical*; the other spellings mean different addresses
//! to different parsers (`012.1.2.3` is 10.1.2.3 to `inet_aton` and 12.1.2.3 to others), so
//! they never match a rule.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 1035: a name is at most 253 characters without the trailing dot, a label 63.
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A parsed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name: lowercase ASCII letters, digits, `-` and `_`, labels 1 to 63 long, no
    /// trailing dot.
    Name(String),
    /// An IPv4 literal; `canonical` only for a dotted quad of plain decimals (`10.0.0.1`).
    Ipv4 { addr: Ipv4Addr, canonical: bool },
    /// An IPv6 literal; `zone` when it carried a zone id (`%25eth0`), which is dropped.
    Ipv6 { addr: Ipv6Addr, zone: bool },
}

/// What kind of destination a host is, for the built-in denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostClass {
    /// An ordinary DNS name.
    Name,
    /// Loopback or "this host": `localhost` names, 127.0.0.0/8, 0.0.0.0/8, `::1`, `::`.
    Localhost,
    /// A cloud instance-metadata endpoint: 169.254.169.254, `fd00:ec2::254`, 100.100.100.200,
    /// `metadata.google.internal` and friends.
    Metadata,
    /// Other link-local addresses: 169.254.0.0/16, fe80::/10, any IPv6 with a zone id.
    LinkLocal,
    /// Any other IP literal.
    Ip,
}

/// An authority (`host[:port]`) split and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: Host,
    pub port: Option<u16>,
}

/// Why bytes are not a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Empty,
    NonAscii,
    UserInfo,
    BadChar,
    BadPort,
    UnbracketedIpv6,
    BadIpv6,
    BadIpv4,
    EmptyLabel,
    LabelTooLong,
    TooLong,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Empty => "is empty",
            HostError::NonAscii => {
                "is not ASCII (write an internationalized name in its xn-- A-label form, as DNS carries it)"
            }
            HostError::UserInfo => "has userinfo ('@')",
            HostError::BadChar => "has a character outside letters, digits, '-', '_' and '.'",
            HostError::BadPort => "has a port that is not a number from 1 to 65535 (without leading zeros)",
            HostError::UnbracketedIpv6 => "has more than one ':' (an IPv6 literal must be in brackets)",
            HostError::BadIpv6 => "is not a valid IPv6 literal",
            HostError::BadIpv4 => "ends in a numeric label but is not a valid IPv4 address",
            HostError::EmptyLabel => "has an empty label",
            HostError::LabelTooLong => "has a label longer than 63 characters",
            HostError::TooLong => "is longer than 253 characters",
        })
    }
}

impl Host {
    /// The string rules are keyed by: the name, the dotted quad, or the IPv6 address in its
    /// RFC 5952 text form (no brackets). `None` for a spelling that can never match a rule: a
    /// non-canonical IPv4 or an IPv6 with a zone.
    pub fn match_key(&self) -> Option<String> {
        match self {
            Host::Name(name) => Some(name.clone()),
            Host::Ipv4 { addr, canonical: true } => Some(addr.to_string()),
            Host::Ipv6 { addr, zone: false } => Some(addr.to_string()),
            Host::Ipv4 { .. } | Host::Ipv6 { .. } => None,
        }
    }

    /// The DNS name, if this is one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            _ => None,
        }
    }

    pub fn class(&self) -> HostClass {
        match self {
            Host::Name(name) => name_class(name),
            Host::Ipv4 { addr, .. } => ipv4_class(*addr),
            Host::Ipv6 { addr, zone } => {
                if let Some(v4) = embedded_ipv4(addr) {
                    return ipv4_class(v4);
                }
                let s = addr.segments();
                if *addr == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
                    HostClass::Metadata
                } else if addr.is_loopback() || addr.is_unspecified() {
                    HostClass::Localhost
                } else if *zone || (s[0] & 0xffc0) == 0xfe80 {
                    HostClass::LinkLocal
                } else {
                    HostClass::Ip
                }
            }
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ipv4 { addr, .. } => write!(f, "{addr}"),
            Host::Ipv6 { addr, .. } => write!(f, "[{addr}]"),
        }
    }
}

/// Names that always mean this machine (RFC 6761 `localhost.` and its subdomains, and the
/// usual /etc/hosts aliases).
fn is_localhost_name(name: &str) -> bool {
    matches!(
        name,
        "localhost"
            | "localhost.localdomain"
            | "ip6-localhost"
            | "ip6-loopback"
            // Red Hat's /etc/hosts aliases.
            | "localhost4"
            | "localhost4.localdomain4"
            | "localhost6"
            | "localhost6.localdomain6"
    ) || name.ends_with(".localhost")
}

/// Names of cloud instance-metadata services.
pub const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata", "metadata.goog", "instance-data", "instance-data.ec2.internal"];

fn name_class(name: &str) -> HostClass {
    if is_localhost_name(name) {
        HostClass::Localhost
    } else if METADATA_NAMES.contains(&name) {
        HostClass::Metadata
    } else {
        HostClass::Name
    }
}

fn ipv4_class(addr: Ipv4Addr) -> HostClass {
    let o = addr.octets();
    if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] {
        HostClass::Metadata
    } else if o[0] == 169 && o[1] == 254 {
        HostClass::LinkLocal
    } else if o[0] == 127 || o[0] == 0 {
        HostClass::Localhost
    } else {
        HostClass::Ip
    }
}

/// The IPv4 address an IPv6 literal carries: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d` (deprecated, but some stacks still route it) and NAT64 `64:ff9b::a.b.c.d`.
fn embedded_ipv4(addr: &Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = addr.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compat = s[..6].iter().all(|&x| x == 0) && !addr.is_loopback() && !addr.is_unspecified();
    let nat64 = s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compat || nat64).then_some(low)
}

/// What neither an authority nor a host may be: empty, non-ASCII, or with userinfo.
fn refuse_non_hosts(raw: &[u8]) -> Result<(), HostError> {
    if raw.is_empty() {
        Err(HostError::Empty)
    } else if !raw.is_ascii() {
        Err(HostError::NonAscii)
    } else if raw.contains(&b'@') {
        Err(HostError::UserInfo)
    } else {
        Ok(())
    }
}

/// Parse an authority (`Host` header or `:authority`): `host`, `host:port`, `[v6]`,
/// `[v6]:port`. Userinfo, percent-encoding, whitespace and anything non-ASCII are errors.
pub fn parse_authority(raw: &[u8]) -> Result<Authority, HostError> {
    refuse_non_hosts(raw)?;
    if raw.first() == Some(&b'[') {
        let close = raw.iter().position(|&b| b == b']').ok_or(HostError::BadIpv6)?;
        let inside = raw.get(1..close).unwrap_or_default();
        let rest = raw.get(close + 1..).unwrap_or_default();
        let port = match rest {
            [] => None,
            [b':', digits @ ..] => Some(parse_port(digits)?),
            _ => return Err(HostError::BadChar),
        };
        return Ok(Authority { host: parse_ipv6(inside)?, port });
    }
    let (host, port) = match raw.iter().filter(|&&b| b == b':').count() {
        0 => (raw, None),
        1 => {
            let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
            let (h, p) = raw.split_at(colon);
            (h, Some(parse_port(p.get(1..).unwrap_or_default())?))
        }
        _ => return Err(HostError::UnbracketedIpv6),
    };
    Ok(Authority { host: parse_host(host)?, port })
}

/// Parse a bare host (a TLS SNI, or the host part of an authority). An unbracketed IPv6
/// literal is accepted here (an SNI is never bracketed, and must never be an IP at all; the
/// egress check then denies it as one).
pub fn parse_host(raw: &[u8]) -> Result<Host, HostError> {
    refuse_non_hosts(raw)?;
    if raw.contains(&b':') {
        return parse_ipv6(raw);
    }
    // Checked on the raw bytes, case-insensitively; one allocation, for the name itself.
    let host = raw.strip_suffix(b".").unwrap_or(raw);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if !host.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(HostError::BadChar);
    }
    if host.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return Err(HostError::EmptyLabel);
    }
    let last = host.rsplit(|&b| b == b'.').next().unwrap_or_default();
    if is_numeric_part(&last.to_ascii_lowercase()) {
        return parse_ipv4(&host.to_ascii_lowercase()).ok_or(HostError::BadIpv4);
    }
    if host.len() > MAX_NAME_LEN {
        return Err(HostError::TooLong);
    }
    if host.split(|&b| b == b'.').any(|l| l.len() > MAX_LABEL_LEN) {
        return Err(HostError::LabelTooLong);
    }
    // Checked above: ASCII letters, digits, '-', '_' and '.' only.
    Ok(Host::Name(host.iter().map(|&b| char::from(b.to_ascii_lowercase())).collect()))
}

fn parse_port(digits: &[u8]) -> Result<u16, HostError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) || digits.first() == Some(&b'0')
    {
        return Err(HostError::BadPort);
    }
    let value = digits.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| HostError::BadPort)
}

/// The inside of `[...]`: an IPv6 address with an optional zone (`%25eth0`, or a bare `%eth0`).
fn parse_ipv6(inside: &[u8]) -> Result<Host, HostError> {
    let (addr, zone) = match inside.iter().position(|&b| b == b'%') {
        Some(i) => {
            let zone = inside.get(i + 1..).unwrap_or_default();
            let zone = zone.strip_prefix(b"25").unwrap_or(zone);
            if zone.is_empty()
                || !zone.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
            {
                return Err(HostError::BadIpv6);
            }
            (inside.get(..i).unwrap_or_default(), true)
        }
        None => (inside, false),
    };
    let text = std::str::from_utf8(addr).map_err(|_| HostError::BadIpv6)?;
    let addr: Ipv6Addr = text.parse().map_err(|_| HostError::BadIpv6)?;
    Ok(Host::Ipv6 { addr, zone })
}

/// WHATWG "ends in a number": all decimal digits, or `0x`/`0X` followed by hex digits.
fn is_numeric_part(part: &[u8]) -> bool {
    if let Some(hex) = part.strip_prefix(b"0x") {
        return hex.iter().all(u8::is_ascii_hexdigit);
    }
    !part.is_empty() && part.iter().all(u8::is_ascii_digit)
}

/// One part of an inet_aton-style address: `0x` hex (empty means 0), leading-`0` octal,
/// or decimal. `None` when it is none of them or absurdly long.
fn parse_ipv4_part(part: &[u8]) -> Option<(u64, bool)> {
    if part.is_empty() || part.len() > 32 {
        return None;
    }
    let (digits, radix) = if let Some(hex) = part.strip_prefix(b"0x") {
        (hex, 16)
    } else if part.len() > 1 && part.first() == Some(&b'0') {
        (part.get(1..).unwrap_or_default(), 8)
    } else {
        (part, 10)
    };
    let mut value: u64 = 0;
    for &d in digits {
        let digit = u64::from(char::from(d).to_digit(radix)?);
        value = value.checked_mul(u64::from(radix))?.checked_add(digit)?;
        if value > u64::from(u32::MAX) {
            return None;
        }
    }
    Some((value, radix == 10))
}

fn parse_ipv4(host: &[u8]) -> Option<Host> {
    let parts: Vec<&[u8]> = host.split(|&b| b == b'.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    let mut all_decimal = true;
    for part in &parts {
        let (value, decimal) = parse_ipv4_part(part)?;
        all_decimal &= decimal;
        values.push(value);
    }
    let (last, init) = values.split_last()?;
    if init.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (5 - values.len() as u32);
    if last_bits < 32 && *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr: u64 = *last;
    for (i, &v) in init.iter().enumerate() {
        addr |= v << (24 - 8 * i as u32);
    }
    let addr = Ipv4Addr::from(u32::try_from(addr).ok()?);
    Some(Host::Ipv4 { addr, canonical: parts.len() == 4 && all_decimal })
}

/// A host pattern as an operator writes it in a policy: an exact host (DNS name, dotted-quad
/// IPv4, or IPv6 with or without brackets) or `*.` and a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The match key of the host (see [`Host::match_key`]).
    Exact(String, HostClass),
    /// `*.example.com` as `example.com`: one or more labels under it, never itself.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, String> {
        if !raw.is_ascii() {
            return Err(HostError::NonAscii.to_string());
        }
        if let Some(suffix) = raw.strip_prefix("*.") {
            return match parse_host(suffix.as_bytes()) {
                Ok(Host::Name(name)) if !name.contains('*') => Ok(HostPattern::Suffix(name)),
                Ok(_) => Err("a wildcard covers DNS names only, not IP addresses".into()),
                Err(e) => Err(format!("not a valid wildcard host: the part after '*.' {e}")),
            };
        }
        if raw.contains('*') {
            return Err("a wildcard is only allowed as a leading '*.' (*.example.com)".into());
        }
        if raw.bytes().filter(|&b| b == b':').count() == 1 && !raw.starts_with('[') {
            return Err("a host takes no port here: list ports in the rule's ports".into());
        }
        if raw.contains(':') && !raw.starts_with('[') {
            // A bare IPv6 address.
            return Self::exact(parse_ipv6(raw.as_bytes()).map_err(|e| format!("not a valid host: it {e}"))?);
        }
        let authority = parse_authority(raw.as_bytes()).map_err(|e| format!("not a valid host: it {e}"))?;
        if authority.port.is_some() {
            return Err("a host takes no port here: list ports in the rule's ports".into());
        }
        Self::exact(authority.host)
    }

    fn exact(host: Host) -> Result<HostPattern, String> {
        let class = host.class();
        match host.match_key() {
            Some(key) => Ok(HostPattern::Exact(key, class)),
            None => Err(format!(
                "write an IP address in its canonical form ({}), without a zone",
                match &host {
                    Host::Ipv4 { addr, .. } => addr.to_string(),
                    Host::Ipv6 { addr, .. } => addr.to_string(),
                    Host::Name(n) => n.clone(),
                }
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Result<Host, HostError> {
        parse_authority(s.as_bytes()).map(|a| a.host)
    }
    fn v4(s: &str) -> (Ipv4Addr, bool) {
        match host(s) {
            Ok(Host::Ipv4 { addr, canonical }) => (addr, canonical),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn names_normalize() {
        for s in ["api.example.com", "API.EXAMPLE.COM.", "Api.Example.Com:443", "api.example.com.:8080"] {
            assert_eq!(host(s), Ok(Host::Name("api.example.com".into())), "{s}");
        }
        assert_eq!(parse_authority(b"api.example.com:8443").unwrap().port, Some(8443));
        assert_eq!(parse_authority(b"api.example.com").unwrap().port, None);
        assert_eq!(host("xn--bcher-kva.example"), Ok(Host::Name("xn--bcher-kva.example".into())));
        assert_eq!(host("XN--BCHER-KVA.example"), Ok(Host::Name("xn--bcher-kva.example".into())));
        assert_eq!(host("_dmarc.example.com"), Ok(Host::Name("_dmarc.example.com".into())));
        assert_eq!(host("127.0.0.1.nip.io"), Ok(Host::Name("127.0.0.1.nip.io".into())));
    }

    #[test]
    fn hostile_spellings_are_errors() {
        for (s, e) in [
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("api.example.com:443@evil.net", HostError::UserInfo),
            ("user@api.example.com", HostError::UserInfo),
            ("api.example.com..", HostError::EmptyLabel),
            ("api..example.com", HostError::EmptyLabel),
            (".example.com", HostError::EmptyLabel),
            ("api.example.com:", HostError::BadPort),
            ("api.example.com:0", HostError::BadPort),
            ("api.example.com:080", HostError::BadPort),
            ("api.example.com:65536", HostError::BadPort),
            ("api.example.com:+80", HostError::BadPort),
            ("api.example.com:80:80", HostError::UnbracketedIpv6),
            ("::1", HostError::UnbracketedIpv6),
            ("api.example.com/x", HostError::BadChar),
            ("api.example.com\\@evil", HostError::UserInfo),
            ("api%2eexample.com", HostError::BadChar),
            ("api example.com", HostError::BadChar),
            ("*.example.com", HostError::BadChar),
            ("bücher.example", HostError::NonAscii),
            ("[::1", HostError::BadIpv6),
            ("[::1]x", HostError::BadChar),
            ("[v1.x]", HostError::BadIpv6),
            ("[fe80::1%]", HostError::BadIpv6),
            ("[1.2.3.4]", HostError::BadIpv6),
            ("1.2.3.256", HostError::BadIpv4),
            ("1.2.3.4.5", HostError::BadIpv4),
            ("0x1g.0", HostError::BadIpv4),
            ("example.123", HostError::BadIpv4),
            ("09.0.0.1", HostError::BadIpv4),
            ("4294967296", HostError::BadIpv4),
        ] {
            assert_eq!(host(s), Err(e), "{s}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(host(&long), Err(HostError::LabelTooLong));
        let long = format!("{}com", "abcdefghi.".repeat(26));
        assert_eq!(host(&long), Err(HostError::TooLong));
    }

    #[test]
    fn every_ipv4_spelling_is_an_ip() {
        let lo = Ipv4Addr::new(127, 0, 0, 1);
        assert_eq!(v4("127.0.0.1"), (lo, true));
        assert_eq!(v4("127.0.0.1:80"), (lo, true));
        for s in [
            "0x7f.1",
            "0x7F.1",
            "127.1",
            "127.0.1",
            "2130706433",
            "0177.0.0.1",
            "0x7f000001",
            "0x7f.0.0.1",
            "127.0.0.1.",
        ] {
            let (addr, canonical) = v4(s);
            assert_eq!(addr, lo, "{s}");
            assert_eq!(canonical, s == "127.0.0.1.", "{s}");
        }
        assert_eq!(v4("0251.0376.0251.0376"), (Ipv4Addr::new(169, 254, 169, 254), false));
        assert_eq!(v4("2852039166"), (Ipv4Addr::new(169, 254, 169, 254), false));
        assert_eq!(v4("0xa9fea9fe"), (Ipv4Addr::new(169, 254, 169, 254), false));
        assert_eq!(v4("012.1.2.3").0, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(v4("0x.0.0.0").0, Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(v4("1.2.65535").0, Ipv4Addr::new(1, 2, 255, 255));
        assert_eq!(host("1.2.65536"), Err(HostError::BadIpv4));
    }

    #[test]
    fn ipv6_literals_with_zones_and_embedded_ipv4() {
        let a = parse_authority(b"[::1]:8080").unwrap();
        assert_eq!((a.host.class(), a.port), (HostClass::Localhost, Some(8080)));
        let h = host("[fe80::1%25eth0]").unwrap();
        assert_eq!(h, Host::Ipv6 { addr: "fe80::1".parse().unwrap(), zone: true });
        assert_eq!((h.class(), h.match_key()), (HostClass::LinkLocal, None));
        assert!(matches!(host("[fe80::1%eth0]"), Ok(Host::Ipv6 { zone: true, .. })));
        assert_eq!(host("[2001:DB8::1]").unwrap().match_key().as_deref(), Some("2001:db8::1"));
        for s in ["[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::169.254.169.254]", "[::169.254.169.254]"]
        {
            assert_eq!(host(s).unwrap().class(), HostClass::Metadata, "{s}");
        }
        assert_eq!(host("[::ffff:127.0.0.1]").unwrap().class(), HostClass::Localhost);
        assert_eq!(host("[fd00:ec2::254]").unwrap().class(), HostClass::Metadata);
        assert_eq!(host("[::]").unwrap().class(), HostClass::Localhost);
        assert_eq!(host("[2001:db8::1]").unwrap().class(), HostClass::Ip);
        assert_eq!(parse_host(b"::1").unwrap().class(), HostClass::Localhost);
    }

    #[test]
    fn classes() {
        for (s, c) in [
            ("localhost", HostClass::Localhost),
            ("LOCALHOST.", HostClass::Localhost),
            ("a.localhost", HostClass::Localhost),
            ("localhost.localdomain", HostClass::Localhost),
            ("localhost6.localdomain6", HostClass::Localhost),
            ("LOCALHOST4", HostClass::Localhost),
            ("notlocalhost", HostClass::Name),
            ("metadata.google.internal", HostClass::Metadata),
            ("metadata.google.internal.", HostClass::Metadata),
            ("metadata", HostClass::Metadata),
            ("169.254.169.254", HostClass::Metadata),
            ("100.100.100.200", HostClass::Metadata),
            ("169.254.1.1", HostClass::LinkLocal),
            ("0.0.0.0", HostClass::Localhost),
            ("127.255.0.1", HostClass::Localhost),
            ("10.0.0.1", HostClass::Ip),
            ("api.example.com", HostClass::Name),
        ] {
            assert_eq!(host(s).unwrap().class(), c, "{s}");
        }
    }

    #[test]
    fn patterns() {
        assert_eq!(
            HostPattern::parse("API.example.com."),
            Ok(HostPattern::Exact("api.example.com".into(), HostClass::Name))
        );
        assert_eq!(HostPattern::parse("*.Example.com"), Ok(HostPattern::Suffix("example.com".into())));
        assert_eq!(HostPattern::parse("10.0.0.1"), Ok(HostPattern::Exact("10.0.0.1".into(), HostClass::Ip)));
        assert_eq!(
            HostPattern::parse("[FD00:EC2::254]"),
            Ok(HostPattern::Exact("fd00:ec2::254".into(), HostClass::Metadata))
        );
        assert_eq!(
            HostPattern::parse("fd00:ec2::254"),
            Ok(HostPattern::Exact("fd00:ec2::254".into(), HostClass::Metadata))
        );
        for bad in [
            "*",
            "*.*.com",
            "a.*.com",
            "*.10.0.0.1",
            "0x7f.1",
            "[fe80::1%25eth0]",
            "api.example.com:443",
            "bücher.de",
            "a b",
            "*example.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HostPattern::parse("api.example.com:443"),
            Err("a host takes no port here: list ports in the rule's ports".into())
        );
        assert!(HostPattern::parse("[::1]:443").is_err_and(|e| e.contains("no port")));
    }
}
