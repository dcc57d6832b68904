//! What `render wasmplugin` checks before it prints: the module reference (pinned by digest,
//! so a proxy runs exactly the module that carries the trust roots) and the names, labels and
//! URL schemes that Kubernetes or Istio's CRD would reject anyway.

use anyhow::{bail, Result};

/// A WasmPlugin `url`, and the `sha256` to pin it with when the reference has a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    pub url: String,
    /// Hex, no `sha256:` prefix (the WasmPlugin's `sha256` field).
    pub sha256: Option<String>,
    /// Set when the reference is a mutable tag.
    pub warning: Option<String>,
}

/// `--image REF`: `oci://REGISTRY/REPO@sha256:HEX` (or without `oci://`). A tag-only reference
/// is accepted with a warning (a tag can be moved to another module).
pub fn image(reference: &str) -> Result<ModuleRef> {
    let bare = reference.strip_prefix("oci://").unwrap_or(reference);
    if bare.contains("://") {
        bail!("--image {reference:?}: an OCI image reference is oci://REGISTRY/REPO@sha256:DIGEST");
    }
    let (name, digest) = match bare.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (bare, None),
    };
    let repo_end = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name.get(repo_end..).and_then(|last| last.split_once(':')) {
        Some((_, tag)) => (name.get(..name.len() - tag.len() - 1).unwrap_or(name), Some(tag)),
        None => (name, None),
    };
    if repo.is_empty() || !repo.contains('/') || repo.split('/').any(|c| c.is_empty()) {
        bail!("--image {reference:?}: expected REGISTRY/REPO[:TAG][@sha256:DIGEST]");
    }
    let path_ok = repo
        .split('/')
        .skip(1)
        .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')));
    if !path_ok {
        bail!("--image {reference:?}: repository path components are lowercase letters, digits and ._-");
    }
    if let Some(tag) = tag {
        if !crate::package::valid_ref_name(tag) {
            bail!("--image {reference:?}: invalid tag {tag:?}");
        }
    }
    match digest {
        Some(d) => {
            let Some(hex) = d.strip_prefix("sha256:") else { bail!("--image {reference:?}: the digest must be sha256:HEX") };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                bail!("--image {reference:?}: a sha256 digest is 64 lowercase hex digits");
            }
            Ok(ModuleRef { url: format!("oci://{repo}@sha256:{hex}"), sha256: Some(hex.to_string()), warning: None })
        }
        None => Ok(ModuleRef {
            url: format!("oci://{name}"),
            sha256: None,
            warning: Some(format!(
                "warning: {reference} is a mutable tag: pin the digest (REPO@sha256:...) so that proxies run exactly the module with your trust roots"
            )),
        }),
    }
}

/// `--url`: the schemes Istio's WasmPlugin takes.
pub fn check_url(url: &str) -> Result<()> {
    match url.split_once("://") {
        Some(("oci" | "http" | "https" | "file", rest)) if !rest.is_empty() => Ok(()),
        _ => bail!("--url {url:?}: a WasmPlugin url is oci://, https://, http:// or file://"),
    }
}

/// A DNS-1123 subdomain (metadata.name): lowercase alphanumerics, `-` and `.`, at most 253,
/// starting and ending with an alphanumeric.
pub fn check_name(what: &str, s: &str, max: usize, dots: bool) -> Result<()> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| alnum(b) || b == b'-' || (dots && b == b'.'))
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum);
    if !ok {
        bail!(
            "{what} {s:?} is not a valid Kubernetes name (lowercase letters, digits, '-'{}; at most {max})",
            if dots { ", '.'" } else { "" }
        );
    }
    Ok(())
}

/// A label selector `key=value` as Kubernetes validates it.
pub fn check_selector(s: &str) -> Result<()> {
    let Some((key, value)) = s.split_once('=') else { bail!("--selector takes key=value, not {s:?}") };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_name("--selector key prefix", p, 253, true)?;
    }
    let label_ok = |v: &str, allow_empty: bool| {
        (allow_empty && v.is_empty())
            || (v.len() <= 63
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()))
    };
    if !label_ok(name, false) {
        bail!("--selector {s:?}: invalid label key {key:?}");
    }
    if !label_ok(value, true) {
        bail!("--selector {s:?}: invalid label value {value:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn digest_pinned_references() {
        let r = image(&format!("oci://ghcr.io/acme/meshguard@sha256:{HEX}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.url, format!("oci://ghcr.io/acme/meshguard@sha256:{HEX}"));
        assert_eq!(r.sha256.as_deref(), Some(HEX));
        assert!(r.warning.is_none());
        // A tag plus a digest: the digest wins, the tag is dropped.
        let r = image(&format!("localhost:5000/meshguard:0.1.0@sha256:{HEX}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.url, format!("oci://localhost:5000/meshguard@sha256:{HEX}"));
        let r = image("ghcr.io/acme/meshguard:0.1.0").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.warning.is_some() && r.sha256.is_none());
        for bad in [
            "https://ghcr.io/acme/m@sha256:00",
            "meshguard",
            "ghcr.io/Acme/m:1",
            &format!("ghcr.io/acme/m@sha256:{}", &HEX[1..]),
            &format!("ghcr.io/acme/m@sha512:{HEX}"),
            &format!("ghcr.io/acme/m@sha256:{}", HEX.to_uppercase()),
            "ghcr.io//m:1",
            "ghcr.io/acme/m:-bad",
        ] {
            assert!(image(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubernetes_rules() {
        assert!(check_name("name", "meshguard-api.v1", 253, true).is_ok());
        assert!(check_name("namespace", "istio-system", 63, false).is_ok());
        for bad in ["", "Meshguard", "-x", "x-", "a_b", &"a".repeat(254)] {
            assert!(check_name("name", bad, 253, true).is_err(), "{bad}");
        }
        assert!(check_name("namespace", "a.b", 63, false).is_err());
        assert!(check_selector("app=api").is_ok());
        assert!(check_selector("app.kubernetes.io/name=api").is_ok());
        assert!(check_selector("istio=").is_ok());
        for bad in ["app", "=x", "app=a b", "app=-x", "Bad_/x=1", "a/b/c=1", &format!("app={}", "a".repeat(64))] {
            assert!(check_selector(bad).is_err(), "{bad}");
        }
        assert!(check_url("oci://ghcr.io/x/y:1").is_ok());
        assert!(check_url("file:///tmp/x.wasm").is_ok());
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("ghcr.io/x/y").is_err());
    }
}
