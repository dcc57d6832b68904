//! The signing and packaging commands of `meshguard` (`keygen`, `sign`, `verify`, `package`),
//! kept out of main.rs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::signing::{KeySource, SigningKey};

/// The default environment variable for `sign --key-env`.
pub const SIGNING_KEY_ENV: &str = "MESHGUARD_SIGNING_KEY";

pub fn keygen(out: &Path) -> Result<ExitCode> {
    let (key, public) = crate::signing::keygen(out)?;
    let roots = crate::signing::load_public_keys(std::slice::from_ref(&public))?;
    let keyid = roots.keys().first().map(|k| k.keyid().to_string()).unwrap_or_default();
    // The private key is never printed: only where it is.
    eprintln!(
        "wrote {} (private, mode 600: keep it in your CI's secret store) and {} (public)",
        key.display(),
        public.display()
    );
    println!("keyid {keyid}");
    Ok(ExitCode::SUCCESS)
}

/// A key, policy or envelope that cannot be used is bad input (exit 2, see
/// [`crate::cli_io::exit`]); only I/O failures stay environment failures.
fn input(e: anyhow::Error) -> anyhow::Error {
    if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some()) {
        e
    } else {
        crate::cli_io::bad_input(format!("{e:#}"))
    }
}

/// `--key FILE` or `--key-env VAR` (default `MESHGUARD_SIGNING_KEY` when neither is given).
pub fn key_source(file: Option<PathBuf>, env: Option<String>) -> Result<KeySource> {
    match (file, env) {
        (Some(_), Some(_)) => bail!("give --key FILE or --key-env VAR, not both"),
        (Some(f), None) => Ok(KeySource::File(f)),
        (None, Some(v)) => Ok(KeySource::Env(v)),
        (None, None) => Ok(KeySource::Env(SIGNING_KEY_ENV.to_string())),
    }
}

pub fn sign(policy: &Path, key: &KeySource, serial: Option<u64>, out: Option<&Path>) -> Result<ExitCode> {
    let key = SigningKey::load(key).map_err(input)?;
    let (envelope, serial) = crate::signing::sign_policy(policy, &key, serial).map_err(input)?;
    match out {
        Some(out) => {
            std::fs::write(out, format!("{envelope}\n"))?;
            eprintln!("signed {} -> {} (serial {serial}, keyid {})", policy.display(), out.display(), key.keyid());
        }
        None => println!("{envelope}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(keys: &[PathBuf], envelope: &Path) -> Result<ExitCode> {
    let roots = crate::signing::load_public_keys(keys).map_err(input)?;
    match crate::signing::verify_file(envelope, &roots) {
        Ok(v) => {
            println!("{}: ok (serial {}, keyid {}, revision {})", envelope.display(), v.serial, v.keyid, v.revision);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn package(wasm: Option<PathBuf>, trust_keys: &[PathBuf], out: &Path, tag: &str) -> Result<ExitCode> {
    let wasm = wasm.unwrap_or_else(crate::mesh::wasm_path);
    let p = crate::package::package(&wasm, trust_keys, out, tag)?;
    eprintln!(
        "wrote the OCI image layout {} (module {}{})",
        p.dir.display(),
        p.module_digest,
        if trust_keys.is_empty() { ", no trust keys" } else { ", trust keys embedded" }
    );
    println!("{}\t{}\twasm", p.wasm_ref, p.wasm_manifest_digest);
    println!("{}\t{}\tcompat", p.compat_ref, p.compat_manifest_digest);
    eprintln!(
        "push: skopeo copy oci:{}:{} docker://REGISTRY/meshguard:{}; then render with --image oci://REGISTRY/meshguard@{}",
        p.dir.display(),
        p.wasm_ref,
        p.wasm_ref,
        p.wasm_manifest_digest
    );
    Ok(ExitCode::SUCCESS)
}

/// The WasmPlugin url and sha256 from `--image` (and `--package DIR`/`--tag`, which supply the
/// digest for a repository given without one).
pub fn module_ref(image: &str, package: Option<&Path>, tag: &str) -> Result<crate::image_ref::ModuleRef> {
    let reference = match package {
        Some(dir) => {
            if image.contains('@') {
                bail!("--package supplies the digest: give --image as REGISTRY/REPO without @sha256");
            }
            let repo = image.strip_prefix("oci://").unwrap_or(image);
            let repo = match repo.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => r,
                _ => repo,
            };
            format!("oci://{repo}@{}", crate::package::manifest_digest(dir, tag)?)
        }
        None => image.to_string(),
    };
    let r = crate::image_ref::image(&reference)?;
    if let Some(w) = &r.warning {
        eprintln!("{w}");
    }
    Ok(r)
}
