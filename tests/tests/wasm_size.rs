//! meshguard.wasm's size. Every Envoy worker instantiates the module per VM, and Istio pulls it
//! to every proxy. The budget is 1 MiB; with JWT verification wired (RSA, P-256/P-384,
//! Ed25519) the module is over it, and this test holds the line where it is (a ceiling a
//! little above the measured size) so that it only goes down:
//!
//! | step | bytes |
//! |---|---|
//! | before JWT was wired | 925,911 |
//! | JWT wired, jwt-simple's key types and superboring in the module | 1,429,690 |
//! | without the name section (filter/build.rs) | 1,264,042 |
//! | signature primitives built for size (Cargo.toml per-package opt-level "s": they run on a verified-token cache miss only) | 1,222,486 |
//! | RustCrypto `rsa`/`p256`/`p384` and `ed25519-compact` directly, jwt-simple out of the module (no anyhow backtraces) | 1,154,674 |
//! | one SHA-2 crate, not two (ECDSA verifies the prehash made with the RSA path's sha2 0.10) | 1,132,023 |
//! | `rsa` built for size too | 1,129,899 |
//! | hygiene guards, upstream pinning, credential scoping, JWT wiring merged | 1,243,771 |
//! | the policy document read by policy/src/doc_de.rs, not serde_path_to_error (each document type's `Deserialize` instantiated once, not once per tracking layer) | 1,154,341 |
//! | the compiled-check trait object without a `Debug` vtable slot (it kept every compiled check's Debug code) | 1,132,333 |
//! | doc_de's path bookkeeping out of line (not inlined into each document type's code) | 1,107,829 |
//! | the generic RSA/ECDSA verifiers instantiated in policy/sig (opt-level "s"), not in the policy crate (opt-level 3; "z" measured 1,092,945) | 1,091,440 |
//! | the JWK key imports (`VerifyingKey::from_sec1_bytes`, P-256 and P-384) generated in policy/sig too | 1,085,270 |
//! | remote JWKS (filter/src/jwks.rs, the policy's key-set updates) and the x-envoy-external-address comparison merged | 1,111,685 |
//!
//! What is left to reach 1 MiB (−63,109 bytes). Measured and not taken: the policy document's
//! deserializing code (each document type's derived `Deserialize`, ~150 KB, built with the
//! policy crate at opt-level 3) generated in a separate crate built for size came out larger
//! (opt-level "z": +21 KB, "s": +37 KB), and so did `meshguard-sig` at "z" (+1.5 KB). Not yet
//! tried: strict_json building the document's `serde_json::Value` in its
//! duplicate-key pass instead of a second parse (`serde_json::from_slice`); the JWT document's
//! `jwks.keys` read into a JWK struct rather than a JSON map. The rest is request-path code
//! (hygiene ~73 KB, decision log ~53 KB, regex-lite ~41 KB), which stays built for speed.

use harness::mesh::ensure_wasm;
use harness::Result;

const BUDGET: u64 = 1 << 20;
/// The measured size (1,111,685 bytes) and a little room: lower it as the module shrinks,
/// down to [`BUDGET`].
const CEILING: u64 = 1_115_000;

#[test]
fn meshguard_wasm_does_not_grow() -> Result<()> {
    let wasm = ensure_wasm()?;
    let bytes = std::fs::read(&wasm)?;
    let size = bytes.len() as u64;
    assert!(size <= CEILING, "{} is {size} bytes, over its {CEILING}-byte ceiling", wasm.display());
    // A sanity check that this is the module: it exports the proxy-wasm ABI.
    assert!(bytes.windows(b"proxy_on_request_headers".len()).any(|w| w == b"proxy_on_request_headers"));
    eprintln!("meshguard.wasm: {size} bytes ({:.1}% of the 1 MiB budget)", size as f64 * 100.0 / BUDGET as f64);
    Ok(())
}
