//! `meshguard package`: the OCI image layout Istio's agent pulls, checked structurally (every
//! blob's digest and size, the media types of both formats, the module byte for byte) and,
//! where `skopeo` is installed (scripts/setup.sh installs it when apt can), by `skopeo
//! inspect` and `skopeo copy` to local `dir:` and `oci:` destinations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::mesh::ensure_wasm;
use harness::package::{self, digest};
use harness::signing::SigningKey;
use harness::Result;
use serde_json::Value;

fn blob(layout: &Path, d: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap()
}

/// Every file under `dir`, relative path and bytes, sorted.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The one file of a one-file tar: its name and contents.
fn untar_one(tar: &[u8]) -> (String, Vec<u8>) {
    let name = String::from_utf8(tar[..100].split(|b| *b == 0).next().unwrap().to_vec()).unwrap();
    let size = usize::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap(), 8).unwrap();
    assert_eq!(&tar[257..263], b"ustar\0");
    (name, tar[512..512 + size].to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// Checks one layout; returns (wasm-format module, compat-format module).
fn check_layout(layout: &Path) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(std::fs::read_to_string(layout.join("oci-layout")).unwrap(), r#"{"imageLayoutVersion":"1.0.0"}"#);
    // Every blob is named by its digest.
    for (path, bytes) in tree(&layout.join("blobs/sha256")) {
        assert_eq!(digest(&bytes), format!("sha256:{}", path.display()));
    }
    let index: Value = serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], package::OCI_INDEX_MEDIA_TYPE);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let by_ref = |r: &str| -> Value {
        let m = manifests.iter().find(|m| m["annotations"][package::REF_NAME_ANNOTATION] == r).unwrap();
        let bytes = blob(layout, m["digest"].as_str().unwrap());
        assert_eq!(m["size"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(m["mediaType"], package::OCI_MANIFEST_MEDIA_TYPE);
        serde_json::from_slice(&bytes).unwrap()
    };
    let sized = |d: &Value| -> Vec<u8> {
        let bytes = blob(layout, d["digest"].as_str().unwrap());
        assert_eq!(d["size"].as_u64().unwrap(), bytes.len() as u64, "{d}");
        bytes
    };

    // The Wasm artifact format.
    let wasm = by_ref("0.1.0");
    assert_eq!(wasm["schemaVersion"], 2);
    assert_eq!(wasm["config"]["mediaType"], package::WASM_CONFIG_MEDIA_TYPE);
    sized(&wasm["config"]);
    assert_eq!(wasm["layers"].as_array().unwrap().len(), 1);
    assert_eq!(wasm["layers"][0]["mediaType"], package::WASM_LAYER_MEDIA_TYPE);
    let wasm_module = sized(&wasm["layers"][0]);

    // The compat format.
    let compat = by_ref("0.1.0-compat");
    assert_eq!(compat["annotations"]["module.wasm.image/variant"], "compat");
    assert_eq!(compat["config"]["mediaType"], package::OCI_CONFIG_MEDIA_TYPE);
    let config: Value = serde_json::from_slice(&sized(&compat["config"])).unwrap();
    assert_eq!(compat["layers"].as_array().unwrap().len(), 1);
    assert_eq!(compat["layers"][0]["mediaType"], package::OCI_LAYER_TAR_GZIP);
    let tar = gunzip(&sized(&compat["layers"][0]));
    assert_eq!(config["rootfs"]["diff_ids"][0], digest(&tar), "diff_id is the uncompressed layer's digest");
    let (name, compat_module) = untar_one(&tar);
    assert_eq!(name, "plugin.wasm");
    (wasm_module, compat_module)
}

fn skopeo() -> Option<PathBuf> {
    let out = Command::new("skopeo").arg("--version").output().ok()?;
    out.status.success().then(|| PathBuf::from("skopeo"))
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn the_layout_holds_the_module_byte_for_byte_and_is_reproducible() -> Result<()> {
    let wasm_path = ensure_wasm()?;
    let module = std::fs::read(&wasm_path)?;
    let dir = harness::scratch_dir("oci")?;
    let a = package::package(&wasm_path, &[], &dir.join("a"), "0.1.0")?;
    let b = package::package(&wasm_path, &[], &dir.join("b"), "0.1.0")?;
    assert_eq!(a.wasm_manifest_digest, b.wasm_manifest_digest);
    assert_eq!(a.compat_manifest_digest, b.compat_manifest_digest);
    assert_eq!(tree(&a.dir), tree(&b.dir), "the same inputs give the same bytes");
    let (w, c) = check_layout(&a.dir);
    assert!(w == module && c == module, "both formats carry meshguard.wasm unchanged");
    assert_eq!(a.module_digest, digest(&module));
    assert!(package::embedded_keys(&module)?.is_empty(), "the built module has no trust roots");
    assert!(package::package(&wasm_path, &[], &a.dir, "0.1.0").is_err(), "refuses a non-empty directory");

    // With a trust key: only the slot and the appended custom section differ; the digest
    // changes, and again reproducibly.
    let key = SigningKey::from_seed([3; 32]);
    let pub_path = dir.join("ci.pub");
    std::fs::write(&pub_path, key.public_text())?;
    let k1 = package::package(&wasm_path, std::slice::from_ref(&pub_path), &dir.join("k1"), "0.1.0")?;
    let k2 = package::package(&wasm_path, &[pub_path], &dir.join("k2"), "0.1.0")?;
    assert_eq!(k1.wasm_manifest_digest, k2.wasm_manifest_digest);
    assert_ne!(k1.wasm_manifest_digest, a.wasm_manifest_digest);
    let (kw, kc) = check_layout(&k1.dir);
    assert_eq!(kw, kc);
    assert_eq!(package::embedded_keys(&kw)?.keys(), &[key.public()]);
    let slot = package::find_slot(&module)?;
    let differing: Vec<usize> = (0..module.len()).filter(|i| module[*i] != kw[*i]).collect();
    assert!(differing.iter().all(|i| (slot..slot + policy::envelope::SLOT_LEN).contains(i)), "only the slot changed");
    assert!(kw.len() > module.len() && kw[module.len()] == 0, "a custom section is appended");

    // skopeo, where installed: it reads and copies both formats; the copied module is
    // meshguard.wasm byte for byte.
    if let Some(skopeo) = skopeo() {
        let src = |r: &str| format!("oci:{}:{r}", a.dir.display());
        // The compat format is an ordinary image: full inspect.
        let inspect: Value =
            serde_json::from_slice(&run(Command::new(&skopeo).args(["inspect", &src("0.1.0-compat")])))?;
        assert_eq!(inspect["Digest"], a.compat_manifest_digest.as_str());
        // The Wasm artifact: skopeo 1.9 refuses "image-specific" inspection of an artifact, but
        // reads its manifest and copies it.
        let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &src("0.1.0")]));
        assert_eq!(digest(&raw), a.wasm_manifest_digest);
        let out = dir.join("copy-wasm");
        run(Command::new(&skopeo).args(["copy", "--quiet", &src("0.1.0"), &format!("dir:{}", out.display())]));
        let copied = std::fs::read(out.join(a.module_digest.trim_start_matches("sha256:")))?;
        assert!(copied == module, "the Wasm layer skopeo copied is meshguard.wasm");
        let out = dir.join("copy-compat");
        run(Command::new(&skopeo).args(["copy", "--quiet", &src("0.1.0-compat"), &format!("oci:{}:x", out.display())]));
        let index: Value = serde_json::from_slice(&std::fs::read(out.join("index.json"))?)?;
        let manifest: Value = serde_json::from_slice(&blob(&out, index["manifests"][0]["digest"].as_str().unwrap()))?;
        let (_, copied) = untar_one(&gunzip(&blob(&out, manifest["layers"][0]["digest"].as_str().unwrap())));
        assert!(copied == module, "plugin.wasm in the compat layer skopeo copied is meshguard.wasm");
    } else {
        eprintln!("skopeo is not installed: the layouts were checked structurally only");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
