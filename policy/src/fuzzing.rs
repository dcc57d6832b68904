//! Properties of the parsers that see peer input, as functions over arbitrary bytes. The
//! cargo-fuzz targets in `fuzz/` and the stable `tests/hostile_input.rs` both run them, so a
//! property is written once. Each returns `Err` with a description when a property fails;
//! reaching a panic inside is itself the failure the fuzzer looks for.
#![doc(hidden)]

use crate::path::canonical;
use crate::spiffe::SpiffeId;
use crate::Policy;

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
    if let Ok(Some(last)) = crate::xfcc::last_element(values) {
        for uri in crate::xfcc::uris(&last) {
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
    serde_json::from_str::<serde_json::Value>(&line).map_err(|e| format!("log line is not JSON: {e}: {line}"))?;
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
    let decide = |headers: &[(Vec<u8>, Vec<u8>)]| {
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
        let peer = crate::Peer { mtls: flags & 1 == 1, uri_san };
        let view = crate::RequestView::new(&pairs, peer, crate::Direction::Inbound)
            .with_end_of_stream(flags & 2 == 0)
            .with_tls(flags & 5 != 0);
        let decision = policy.evaluate(&view);
        let line = policy.decision_log_line(&decision, &view, 0);
        serde_json::from_str::<serde_json::Value>(&line).map(|_| decision).map_err(|e| format!("log line: {e}: {line}"))
    };
    let first = decide(&headers)?;
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
    let second = decide(&headers)?;
    if let Some(again) = second.findings.iter().find(|f| stripped.contains(&f.code)) {
        return Err(format!("{} tripped again after its strip", again.code.as_str()));
    }
    Ok(())
}
