//! `meshguard package`: meshguard.wasm as an OCI image layout that Istio's agent pulls
//! (`WasmPlugin.spec.url: oci://...`), optionally with trust roots patched into the module.
//!
//! Two manifests in one layout (`index.json`, selected by ref name as `oci:DIR:REF`):
//! - `REF`: the **Wasm artifact** format: config `application/vnd.module.wasm.config.v1+json`,
//!   one layer `application/vnd.module.wasm.content.layer.v1+wasm` that is the module itself;
//! - `REF-compat`: the **compat** format (an ordinary OCI image): one `tar+gzip` layer holding
//!   `plugin.wasm`, manifest annotation `module.wasm.image/variant: compat`.
//!
//! Reproducible: the same module and keys give the same bytes and digests (no timestamps; the
//! tar entry has mtime 0, uid/gid 0, mode 0644; gzip has mtime 0, no name, a fixed level; JSON
//! is written with fixed field order).
//!
//! `--trust-key PUB` overwrites the module's trust-root slot (see the filter's `trust`
//! module) in place, and appends a `meshguard.trust_keys` custom section listing the keyids
//! for people and tools (the filter reads only the slot). Both are inside the module, so the
//! image digest covers them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use policy::envelope::{self, TrustRoots, SLOT_END, SLOT_LEN, SLOT_MARKER};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
pub const CUSTOM_SECTION: &str = "meshguard.trust_keys";

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::from("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The trust-root slot's offset in a module: exactly one marker, with the end marker where
/// it belongs.
pub fn find_slot(wasm: &[u8]) -> Result<usize> {
    let hits: Vec<usize> =
        wasm.windows(SLOT_MARKER.len()).enumerate().filter(|(_, w)| *w == SLOT_MARKER).map(|(i, _)| i).collect();
    let at = match hits.as_slice() {
        [at] => *at,
        [] => bail!("this module has no meshguard trust-root slot (not a meshguard.wasm, or an old one)"),
        _ => bail!("the trust-root marker occurs {} times in this module; refusing to guess", hits.len()),
    };
    let end = at + SLOT_LEN - SLOT_END.len();
    if wasm.get(end..at + SLOT_LEN) != Some(&SLOT_END[..]) {
        bail!("the trust-root slot in this module is damaged (no end marker)");
    }
    Ok(at)
}

/// The trust roots embedded in a module.
pub fn embedded_keys(wasm: &[u8]) -> Result<TrustRoots> {
    let at = find_slot(wasm)?;
    let slot: [u8; SLOT_LEN] =
        wasm.get(at..at + SLOT_LEN).ok_or_else(|| anyhow!("short module"))?.try_into().map_err(|_| anyhow!("slot"))?;
    envelope::read_slot(&slot).map_err(|e| anyhow!(e))
}

/// A copy of `wasm` with these trust roots in its slot, and a custom section naming them.
pub fn patch_trust_keys(wasm: &[u8], roots: &TrustRoots) -> Result<Vec<u8>> {
    let at = find_slot(wasm)?;
    let slot = envelope::filled_slot(roots.keys())
        .ok_or_else(|| anyhow!("at most {} trust keys fit in the module", envelope::SLOT_MAX_KEYS))?;
    let mut out = wasm.to_vec();
    out.get_mut(at..at + SLOT_LEN).ok_or_else(|| anyhow!("short module"))?.copy_from_slice(&slot);
    let listing = json!({
        "keys": roots.keys().iter().map(|k| json!({"keyid": k.keyid(), "ed25519": envelope::base64_encode(k.as_bytes())})).collect::<Vec<_>>(),
    })
    .to_string();
    let mut section = Vec::new();
    leb128(&mut section, CUSTOM_SECTION.len());
    section.extend_from_slice(CUSTOM_SECTION.as_bytes());
    section.extend_from_slice(listing.as_bytes());
    out.push(0); // custom section id
    leb128(&mut out, section.len());
    out.extend_from_slice(&section);
    Ok(out)
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One file in a ustar archive, deterministic (mtime 0, root:root, 0644), then the two zero
/// end blocks.
pub fn tar_one_file(name: &str, contents: &[u8]) -> Result<Vec<u8>> {
    if name.len() > 99 {
        bail!("tar entry name too long");
    }
    let mut header = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = header.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", contents.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        "); // checksum placeholder: spaces
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    put(329, b"0000000\0");
    put(337, b"0000000\0");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let mut h = header;
    if let Some(dst) = h.get_mut(148..156) {
        dst.copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    let mut out = Vec::with_capacity(512 + contents.len() + 1536);
    out.extend_from_slice(&h);
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// Gzip, deterministic: mtime 0, no file name, OS "unknown", level 9.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc =
        flate2::GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// A descriptor for a blob.
fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// What `package` wrote.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub dir: PathBuf,
    /// The module in the image (patched if trust keys were given).
    pub module_digest: String,
    /// The Wasm-artifact manifest's digest (what a WasmPlugin pins).
    pub wasm_manifest_digest: String,
    pub compat_manifest_digest: String,
    pub wasm_ref: String,
    pub compat_ref: String,
}

/// Write the OCI image layout for `module` into `dir` (created; must be empty or absent).
pub fn write_layout(dir: &Path, module: &[u8], reference: &str) -> Result<Packaged> {
    if !valid_ref_name(reference) {
        bail!("--tag {reference:?}: an OCI ref name is letters, digits and ._- (at most 128)");
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty", dir.display());
    }
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let put = |bytes: &[u8]| -> Result<()> {
        let d = digest(bytes);
        let hex = d.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), bytes).with_context(|| format!("writing blob {d}"))
    };

    // The Wasm artifact format.
    let wasm_config = json!({}).to_string().into_bytes();
    put(&wasm_config)?;
    put(module)?;
    let wasm_manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": descriptor(WASM_CONFIG_MEDIA_TYPE, &wasm_config),
        "layers": [{
            "mediaType": WASM_LAYER_MEDIA_TYPE, "digest": digest(module), "size": module.len(),
            "annotations": {"org.opencontainers.image.title": "plugin.wasm"},
        }],
    })
    .to_string()
    .into_bytes();
    put(&wasm_manifest)?;

    // The compat format.
    let tar = tar_one_file("plugin.wasm", module)?;
    let layer = gzip(&tar)?;
    put(&layer)?;
    let image_config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(&tar)]},
    })
    .to_string()
    .into_bytes();
    put(&image_config)?;
    let compat_manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": descriptor(OCI_CONFIG_MEDIA_TYPE, &image_config),
        "layers": [descriptor(OCI_LAYER_TAR_GZIP, &layer)],
        "annotations": {"module.wasm.image/variant": "compat"},
    })
    .to_string()
    .into_bytes();
    put(&compat_manifest)?;

    let compat_ref = format!("{reference}-compat");
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": digest(&wasm_manifest), "size": wasm_manifest.len(),
             "annotations": {REF_NAME_ANNOTATION: reference}},
            {"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": digest(&compat_manifest), "size": compat_manifest.len(),
             "annotations": {REF_NAME_ANNOTATION: compat_ref}},
        ],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(Packaged {
        dir: dir.to_path_buf(),
        module_digest: digest(module),
        wasm_manifest_digest: digest(&wasm_manifest),
        compat_manifest_digest: digest(&compat_manifest),
        wasm_ref: reference.to_string(),
        compat_ref,
    })
}

/// OCI ref names as `oci:DIR:REF` and registries take them (a tag).
pub fn valid_ref_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `meshguard package`: read the module, patch in trust keys, write the layout.
pub fn package(wasm_path: &Path, trust_keys: &[PathBuf], out: &Path, reference: &str) -> Result<Packaged> {
    let module = std::fs::read(wasm_path).with_context(|| format!("cannot read {}", wasm_path.display()))?;
    if module.get(..4) != Some(b"\0asm") {
        bail!("{} is not a Wasm module", wasm_path.display());
    }
    let module = if trust_keys.is_empty() {
        find_slot(&module)?; // a meshguard module, at least
        module
    } else {
        let roots = crate::signing::load_public_keys(trust_keys)?;
        patch_trust_keys(&module, &roots)?
    };
    write_layout(out, &module, reference)
}

/// The manifest digest of `reference` in a layout's `index.json` (for `render --package`).
pub fn manifest_digest(dir: &Path, reference: &str) -> Result<String> {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("index.json"))
            .with_context(|| format!("{} is not an OCI layout", dir.display()))?,
    )?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME_ANNOTATION] == reference)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: no manifest named {reference:?}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_is_what_tar_computes() {
        let t = tar_one_file("plugin.wasm", b"hello").unwrap_or_default();
        assert_eq!(t.len(), 512 * 4);
        let mut h = t[..512].to_vec();
        let stored = std::str::from_utf8(&h[148..154]).unwrap_or_default().to_string();
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(u32::from_str_radix(&stored, 8).ok(), Some(sum));
        assert_eq!(&t[512..517], b"hello");
    }

    #[test]
    fn gzip_is_deterministic() {
        let a = gzip(b"abc").unwrap_or_default();
        assert_eq!(a, gzip(b"abc").unwrap_or_default());
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    }

    #[test]
    fn slot_patching_round_trips_and_refuses_strange_modules() {
        let mut module = b"\0asm\x01\0\0\0junk".to_vec();
        module.extend_from_slice(&envelope::empty_slot());
        module.extend_from_slice(b"tail");
        assert!(embedded_keys(&module).map(|r| r.is_empty()).unwrap_or(false));
        let roots = TrustRoots::parse_list(&envelope::base64_encode(&[
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1,
            0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
        ]))
        .unwrap_or_default();
        assert_eq!(roots.len(), 1);
        let patched = patch_trust_keys(&module, &roots).unwrap_or_default();
        assert_eq!(embedded_keys(&patched).ok(), Some(roots.clone()));
        assert!(patched.windows(CUSTOM_SECTION.len()).any(|w| w == CUSTOM_SECTION.as_bytes()));
        let mut twice = module.clone();
        twice.extend_from_slice(&envelope::empty_slot());
        assert!(find_slot(&twice).is_err());
        assert!(find_slot(b"\0asm\x01\0\0\0").is_err());
        let cut = &module[..module.len() - 10];
        assert!(find_slot(cut).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(valid_ref_name("0.1.0"));
        assert!(valid_ref_name("v1_rc-2"));
        assert!(!valid_ref_name(""));
        assert!(!valid_ref_name("-x"));
        assert!(!valid_ref_name("a/b"));
        assert!(!valid_ref_name("a:b"));
    }
}
