//! meshguard.wasm ships without its name section (function names for backtraces: ~165 KB of
//! the module). The module must stay under its 1 MiB budget (harness test `wasm_size`), and a
//! trapped VM is reported by Envoy with the trap's reason either way. Only this cdylib, and
//! only for wasm32: native builds (unit tests) keep their symbols. `MESHGUARD_WASM_NAMES=1`
//! keeps them in the module too (size profiling: which function is how big).
fn main() {
    println!("cargo:rerun-if-env-changed=MESHGUARD_WASM_NAMES");
    let keep = std::env::var("MESHGUARD_WASM_NAMES").is_ok_and(|v| v == "1");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") && !keep {
        println!("cargo:rustc-link-arg-cdylib=--strip-all");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
