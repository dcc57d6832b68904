//! Properties of the parsers that see peer input, as functions over arbitrary bytes. The
//! cargo-fuzz targets in `fuzz/` and the stable `tests/hostile_input.rs` both run them, so a
//! property is written once. Each returns `Err` with a description when a property fails;
//! reaching a panic inside is itself the failure the fuzzer looks for.
#![doc(hidden)]

use std::net::Ipv4Addr;

use crate::checks::egress::doc::{AppliesTo, EgressDoc, EgressRuleDoc};
use crate::checks::egress::EgressAllowlist;
use crate::checks::{Check, Context};
use crate::decision::Decision;
use crate::document::Mode;
use crate::error::ConfigErrors;
use crate::parse::host::{parse_authority, parse_host, Authority, Host, HostClass, HostPattern, MAX_NAME_LEN};
use crate::parse::path::canonical;
use crate::parse::spiffe::SpiffeId;
use crate::{ConnectionView, Direction, Peer, Policy, RequestView};

/// A valid SPIFFE ID is exactly its input, re-parses to itself, and has a trust domain.
pub fn spiffe_id(data: &[u8]) -> Result<(), String> {
    let Ok(id) = SpiffeId::parse(data) else { return Ok(()) };
    if id.as_str().as_bytes() != data {
        return Err(format!("{:?} parsed as {:?}", String::from_utf8_lossy(data), id.as_str()));
    }
    if id.trust_domain().is_empty() || SpiffeId::parse(id.as_str().as_bytes()).as_ref() != Ok(&id) {
        return Err(format!("{:?} does not re-parse to itself", id.as_str()));
    }
    Ok(())
}

/// Each line is one `x-forwarded-client-cert` value; the parser never panics and every URI it
/// yields comes from the last element.
pub fn xfcc(data: &[u8]) -> Result<(), String> {
    let values = data.split(|&b| b == b'\n');
    if let Ok(Some(last)) = crate::parse::xfcc::last_element(values) {
        for uri in crate::parse::xfcc::uris(&last) {
            if uri.len() > data.len() {
                return Err("a URI longer than the input".into());
            }
        }
    }
    Ok(())
}

/// The canonical path starts with `/`, holds no `//`, `.` or `..` segment, no query or
/// fragment, and is a fixed point.
pub fn canonical_path(data: &[u8]) -> Result<(), String> {
    let c = canonical(data);
    let shown = || String::from_utf8_lossy(data).into_owned();
    if c.first() != Some(&b'/') {
        return Err(format!("{:?}: canonical form does not start with /", shown()));
    }
    if c.windows(2).any(|w| w == b"//") || c.contains(&b'?') || c.contains(&b'#') {
        return Err(format!("{:?}: canonical form keeps // ? or #", shown()));
    }
    if c.split(|&b| b == b'/').any(|s| s == b"." || s == b"..") {
        return Err(format!("{:?}: canonical form keeps a dot segment", shown()));
    }
    if canonical(&c) != c {
        return Err(format!("{:?}: canonical form is not a fixed point", shown()));
    }
    Ok(())
}

/// Whether `line` is one JSON value, checked without building it: the fuzz targets check
/// every decision-log line, and a `serde_json::Value` tree per line (dozens of allocations, each
/// intercepted by the fuzzer's sanitizer) cost more than the decision itself.
fn is_json(line: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(line).map(|_| ())
}

/// Any bytes as a policy: accepted or refused with at least one error, never a panic.
pub fn policy_document(data: &[u8]) -> Result<(), String> {
    match Policy::from_json(data) {
        Ok(_) => Ok(()),
        Err(errs) if errs.is_empty() => Err("refused with no error".into()),
        Err(_) => Ok(()),
    }
}

/// A request built from arbitrary bytes (header pairs separated by `\n`, name and value by
/// the first `:` after position 0, a peer URI SAN from the first line) decided by `policy`;
/// the decision-log line must be JSON.
pub fn evaluate(policy: &Policy, data: &[u8]) -> Result<(), String> {
    let mut lines = data.split(|&b| b == b'\n');
    let uri_san = lines.next();
    let mtls = data.first().is_some_and(|b| b & 1 == 1);
    let headers: Vec<(&[u8], &[u8])> = lines
        .map(|line| {
            let split = line.iter().skip(1).position(|&b| b == b':').map_or(line.len(), |i| i + 1);
            let (name, value) = line.split_at(split);
            (name, value.get(1..).unwrap_or_default())
        })
        .collect();
    let peer = crate::Peer { mtls, uri_san };
    let view = crate::RequestView::new(&headers, peer, crate::Direction::Inbound);
    let decision = policy.evaluate(&view);
    let line = policy.decision_log_line(&decision, &view, 0);
    is_json(&line).map_err(|e| format!("log line is not JSON: {e}: {line}"))?;
    let _ = policy.deny_response().body(decision.primary().map(|f| f.code), view.request_id());
    Ok(())
}

/// A request built from arbitrary bytes as in [`evaluate`] (the first byte also says whether
/// the headers ended the stream and whether the connection is TLS) decided by `policy`, which
/// should have request-hygiene guards: every header mutation names a header of the request,
/// and after the mutations are applied the request trips no strip again (a strip removes
/// everything it found).
pub fn hygiene(policy: &Policy, data: &[u8]) -> Result<(), String> {
    use crate::decision::{HeaderMutation, Remedy};
    let flags = data.first().copied().unwrap_or(0);
    let mut lines = data.split(|&b| b == b'\n');
    let uri_san = lines.next();
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = lines
        .map(|line| {
            let split = line.iter().skip(1).position(|&b| b == b':').map_or(line.len(), |i| i + 1);
            let (name, value) = line.split_at(split);
            (name.to_vec(), value.get(1..).unwrap_or_default().to_vec())
        })
        .collect();
    // The decision-log line is checked for the request as it arrived; the second decision
    // (after the strips) only has to trip nothing again.
    let decide = |headers: &[(Vec<u8>, Vec<u8>)], log: bool| {
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let peer = crate::Peer { mtls: flags & 1 == 1, uri_san };
        let view = crate::RequestView::new(&pairs, peer, crate::Direction::Inbound)
            .with_end_of_stream(flags & 2 == 0)
            .with_tls(flags & 5 != 0);
        let decision = policy.evaluate(&view);
        if log {
            let line = policy.decision_log_line(&decision, &view, 0);
            is_json(&line).map_err(|e| format!("log line: {e}: {line}"))?;
        }
        Ok::<_, String>(decision)
    };
    let first = decide(&headers, true)?;
    if first.enforced() {
        return Ok(());
    }
    for m in &first.mutations {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(m.name())) {
            return Err(format!("mutation of an absent header {:?}", String::from_utf8_lossy(m.name())));
        }
        match m {
            HeaderMutation::Remove { name } => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
            HeaderMutation::Set { name, value } => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                headers.push((name.clone(), value.clone()));
            }
        }
    }
    let stripped: Vec<_> =
        first.findings.iter().filter(|f| f.remedy == Remedy::Strip && f.enforced).map(|f| f.code).collect();
    let second = decide(&headers, false)?;
    if let Some(again) = second.findings.iter().find(|f| stripped.contains(&f.code)) {
        return Err(format!("{} tripped again after its strip", again.code.as_str()));
    }
    Ok(())
}

/// Host parsing ([`crate::parse::host`]), which sees every `:authority` and SNI. The input is an
/// authority and a bare host; with a `\n`, the part before it is also a policy host pattern
/// and the part after a peer's host, judged by an egress allowlist that names only that
/// pattern. Properties:
///
/// - a parsed host has a match key exactly when a rule could name it (not for a
///   non-canonical IPv4 spelling or an IPv6 with a zone), and the key re-parses to the same
///   host: normalization is idempotent and names, IPv4 and IPv6 keys never collide;
/// - a name's key is 1 to 253 bytes of lowercase letters, digits, `-`, `_` and `.` in labels
///   of 1 to 63, with no trailing dot and not ending in a numeric label (that is an IPv4);
/// - every spelling of an address has the address's class: an IPv4 its dotted quad's, an
///   IPv6 carrying an IPv4 (mapped, compatible, NAT64) the IPv4's, a zone adds link-local
///   at most; a name is never an IP class and an IP never a name;
/// - the authority parser and the bare-host parser agree on the host, the port is the
///   digits the input ends with, and the request view keys the host the same way;
/// - the pattern an operator writes for a host's key is an exact pattern with that key and
///   class, and an allowlist naming it admits that host;
/// - an allowlist naming a pattern admits a peer's host (as SNI and as authority) exactly
///   when the host's key is the exact pattern's, or is a DNS name of class name one or more
///   labels under a `*.` pattern's suffix: never the suffix itself, never an IP, a
///   `localhost` or a metadata name, never a host that does not parse.
pub fn host(data: &[u8]) -> Result<(), String> {
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let authority = parse_authority(data);
    if let Ok(a) = &authority {
        authority_properties(data, a).map_err(|e| format!("authority {:?}: {e}", shown(data)))?;
    }
    let pairs: [(&[u8], &[u8]); 1] = [(b":authority", data)];
    let view = RequestView::new(&pairs, Peer::default(), Direction::Inbound);
    if view.route_input().host.map(str::to_string) != authority.as_ref().ok().and_then(|a| a.host.match_key()) {
        return Err(format!("authority {:?}: the request view keys it differently", shown(data)));
    }
    if let Ok(h) = parse_host(data) {
        host_properties(&h).map_err(|e| format!("host {:?}: {e}", shown(data)))?;
    }
    let (pattern, peer) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (data.get(..i).unwrap_or_default(), data.get(i + 1..).unwrap_or_default()),
        None => (data, data),
    };
    if let Ok(pattern) = std::str::from_utf8(pattern) {
        if let Ok(parsed) = HostPattern::parse(pattern) {
            pattern_properties(pattern, &parsed, peer)
                .map_err(|e| format!("pattern {pattern:?}, peer {:?}: {e}", shown(peer)))?;
        }
    }
    Ok(())
}

fn authority_properties(data: &[u8], a: &Authority) -> Result<(), String> {
    host_properties(&a.host)?;
    let host_part = match a.port {
        Some(0) => return Err("port 0".into()),
        Some(port) => {
            let suffix = format!(":{port}");
            data.strip_suffix(suffix.as_bytes()).ok_or_else(|| format!("port {port} is not how the input ends"))?
        }
        None if data.contains(&b':') && !data.ends_with(b"]") => return Err("a ':' but no port".into()),
        None => data,
    };
    let bare = host_part.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")).unwrap_or(host_part);
    if parse_host(bare).as_ref() != Ok(&a.host) {
        return Err(format!("the bare host parses as {:?}, the authority as {:?}", parse_host(bare), a.host));
    }
    Ok(())
}

fn host_properties(h: &Host) -> Result<(), String> {
    let key = h.match_key();
    let class = h.class();
    match h {
        Host::Name(name) => {
            name_form(name)?;
            if key.as_deref() != Some(name.as_str()) {
                return Err(format!("name {name:?} keyed as {key:?}"));
            }
            if !matches!(class, HostClass::Name | HostClass::Localhost | HostClass::Metadata) {
                return Err(format!("name {name:?} has the IP class {class:?}"));
            }
        }
        Host::Ipv4 { addr, canonical } => {
            if key.is_some() != *canonical {
                return Err(format!("IPv4 {addr} (canonical: {canonical}) keyed as {key:?}"));
            }
            // Every spelling of an address, the dotted quad's class.
            let quad = parse_host(addr.to_string().as_bytes());
            if quad != Ok(Host::Ipv4 { addr: *addr, canonical: true }) {
                return Err(format!("the dotted quad of {addr} parses as {quad:?}"));
            }
            if quad.as_ref().map(Host::class) != Ok(class) {
                return Err(format!("IPv4 {addr} is {class:?}, its dotted quad is not"));
            }
        }
        Host::Ipv6 { addr, zone } => {
            if key.is_some() == *zone {
                return Err(format!("IPv6 {addr} (zone: {zone}) keyed as {key:?}"));
            }
            let plain = parse_host(addr.to_string().as_bytes());
            let plain_class = match &plain {
                Ok(p @ Host::Ipv6 { addr: a, zone: false }) if a == addr => p.class(),
                other => return Err(format!("the RFC 5952 text of {addr} parses as {other:?}")),
            };
            let zone_ok = class == plain_class || (class == HostClass::LinkLocal && plain_class == HostClass::Ip);
            if !zone_ok {
                return Err(format!("IPv6 {addr} with zone {zone} is {class:?}, without {plain_class:?}"));
            }
            if let Some(v4) = carried_ipv4(addr) {
                let v4_class = Host::Ipv4 { addr: v4, canonical: true }.class();
                if class != v4_class {
                    return Err(format!("IPv6 {addr} carries {v4} ({v4_class:?}) but is {class:?}"));
                }
            }
            if class == HostClass::Name {
                return Err(format!("IPv6 {addr} has the class of a name"));
            }
        }
    }
    if let Host::Ipv4 { .. } = h {
        if class == HostClass::Name {
            return Err("an IPv4 has the class of a name".into());
        }
    }
    let Some(key) = key else { return Ok(()) };
    let again = parse_host(key.as_bytes());
    if again.as_ref() != Ok(h) {
        return Err(format!("key {key:?} re-parses as {again:?}"));
    }
    let expected = Ok(HostPattern::Exact(key.clone(), class));
    if HostPattern::parse(&key) != expected {
        return Err(format!("key {key:?} as a pattern is {:?}", HostPattern::parse(&key)));
    }
    if let Host::Ipv6 { .. } = h {
        let bracketed = format!("[{key}]");
        if HostPattern::parse(&bracketed) != expected {
            return Err(format!("{bracketed:?} as a pattern is {:?}", HostPattern::parse(&bracketed)));
        }
    }
    Ok(())
}

/// The IPv4 address an IPv6 address carries to a stack that honours it: IPv4-mapped,
/// IPv4-compatible (not `::` or `::1`) and NAT64 (`64:ff9b::/96`).
fn carried_ipv4(addr: &std::net::Ipv6Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d, e, f, g, h] = addr.segments();
    let low = Ipv4Addr::from((u32::from(g) << 16) | u32::from(h));
    let compat = [a, b, c, d, e, f] == [0; 6] && u32::from(low) > 1;
    let mapped = [a, b, c, d, e, f] == [0, 0, 0, 0, 0, 0xffff];
    let nat64 = [a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compat || mapped || nat64).then_some(low)
}

fn name_form(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name of {} bytes", name.len()));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')) {
        return Err(format!("name {name:?} has a byte outside [a-z0-9._-]"));
    }
    if name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!("name {name:?} has an empty label or one over 63 bytes (or a trailing dot)"));
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last.strip_prefix("0x").is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(format!("name {name:?} ends in a numeric label (an IPv4 spelling)"));
    }
    Ok(())
}

fn pattern_properties(pattern: &str, parsed: &HostPattern, peer: &[u8]) -> Result<(), String> {
    let check = allowlist(pattern)?;
    match parsed {
        HostPattern::Exact(key, class) => {
            let h = parse_host(key.as_bytes());
            if h.as_ref().map(|h| (h.match_key(), h.class())) != Ok((Some(key.clone()), *class)) {
                return Err(format!("exact key {key:?} re-parses as {h:?}"));
            }
            if !admits_sni(&check, key.as_bytes()) {
                return Err(format!("does not admit its own key {key:?} as SNI"));
            }
            let authority = if key.contains(':') { format!("[{key}]") } else { key.clone() };
            if !admits_authority(&check, authority.as_bytes()) {
                return Err(format!("does not admit its own key {authority:?} as authority"));
            }
        }
        HostPattern::Suffix(suffix) => {
            if parse_host(suffix.as_bytes()) != Ok(Host::Name(suffix.clone())) {
                return Err(format!("suffix {suffix:?} is not a normalized name"));
            }
            if admits_sni(&check, suffix.as_bytes()) || admits_authority(&check, suffix.as_bytes()) {
                return Err(format!("admits its own suffix {suffix:?}"));
            }
            let under = format!("a.{suffix}");
            let under_is_name = parse_host(under.as_bytes()).is_ok_and(|h| h.class() == HostClass::Name);
            if admits_sni(&check, under.as_bytes()) != under_is_name {
                return Err(format!("{under:?} (a name: {under_is_name}) admitted as SNI: {}", !under_is_name));
            }
        }
    }
    let expected = |h: &Host| match parsed {
        HostPattern::Exact(key, _) => h.match_key().as_ref() == Some(key),
        HostPattern::Suffix(suffix) => {
            h.class() == HostClass::Name
                && h.name()
                    .and_then(|n| n.strip_suffix(suffix.as_str()))
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        }
    };
    let want = parse_host(peer).is_ok_and(|h| expected(&h));
    if admits_sni(&check, peer) != want {
        return Err(format!("as SNI admitted: {}, expected {want}", !want));
    }
    let want = parse_authority(peer).is_ok_and(|a| expected(&a.host));
    if admits_authority(&check, peer) != want {
        return Err(format!("as authority admitted: {}, expected {want}", !want));
    }
    Ok(())
}

/// An egress allowlist with one rule naming only `pattern`, on any port, from anyone.
fn allowlist(pattern: &str) -> Result<EgressAllowlist, String> {
    let rule = EgressRuleDoc {
        id: "r".into(),
        mode: None,
        hosts: vec![pattern.into()],
        ports: Vec::new(),
        methods: Vec::new(),
        paths: Vec::new(),
        sources: Vec::new(),
        passthrough: false,
        allow_no_sni: false,
        credentials: None,
    };
    let doc = EgressDoc {
        mode: None,
        applies_to: AppliesTo::All,
        source_identity: None,
        trust_domain: None,
        allow: vec![rule],
        credentials: None,
    };
    let mut errs = ConfigErrors::default();
    let check = EgressAllowlist::compile(&doc, &Context { policy_mode: Mode::Enforce }, &mut errs);
    if errs.is_empty() {
        Ok(check)
    } else {
        Err(format!("parses as a pattern but the allowlist refuses it: {errs}"))
    }
}

fn admits_sni(check: &EgressAllowlist, sni: &[u8]) -> bool {
    let conn = ConnectionView {
        sni: Some(sni),
        destination_port: Some(443),
        direction: Direction::Outbound,
        ..ConnectionView::default()
    };
    let mut decision = Decision::default();
    check.evaluate_connection(&conn, &mut decision);
    decision.findings.is_empty()
}

fn admits_authority(check: &EgressAllowlist, authority: &[u8]) -> bool {
    let headers: [(&[u8], &[u8]); 4] =
        [(b":authority", authority), (b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https")];
    let req = RequestView::new(&headers, Peer::default(), Direction::Outbound);
    let mut decision = Decision::default();
    check.evaluate(&req, &mut decision);
    decision.findings.is_empty()
}
