//! meshguard's harness: a REAL local mesh for tests and demos, no mocks.
//!
//! - [`pki`]: a throwaway SPIFFE test PKI (CA + X.509-SVIDs) minted at run time;
//! - [`echo`]: an HTTP/1.1 upstream that answers with what it received, as JSON;
//! - [`envoy`]: one Envoy process (pinned 1.40, installed by `scripts/setup.sh`), its admin API;
//! - [`mesh`]: all of the above wired the way Istio wires a sidecar's inbound side, with
//!   meshguard.wasm delivered by ECDS;
//! - [`client`]: an HTTP/1.1 client over TCP or mTLS that can send exact bytes.
//! - [`jwt`]: a stand-in identity provider: RS256/ES256/EdDSA keys, their JWKS, tokens.
//! - [`tls_echo`]: a TLS echo standing in for the internet behind the outbound sidecar's TLS
//!   passthrough (counts what reached it).
//!
//! Everything here is for people and tests; nothing here knows how a check works.

/// `println!` that returns the write error (`?`) instead of panicking: a closed pipe
/// (`meshguard demo | head -2`) ends the command through its normal cleanup path.
#[macro_export]
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout())?
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub mod bench;
pub mod cli_io;
pub mod client;
pub mod compose;
pub mod demo;
pub mod diff;
pub mod echo;
pub mod egress_demo;
pub mod envoy;
pub mod idp;
pub mod image_ref;
pub mod jwt;
pub mod learn;
pub mod mesh;
pub mod mesh_endpoint;
pub mod observe;
pub mod offline;
pub mod package;
pub mod pki;
pub mod policy_file;
pub mod policy_test;
pub mod prometheus;
pub mod render;
pub mod replay;
pub mod server;
pub mod sign_commands;
pub mod signing;
pub mod tls_echo;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The harness's error type: these are test and tooling paths, where a message with context
/// is what a person needs.
pub type Error = anyhow::Error;
/// `Result` with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The workspace root (the directory whose `Cargo.toml` has `[workspace]`).
///
/// Known at compile time from this crate's manifest dir; if that is gone (a binary copied
/// elsewhere), found by walking up from the current directory.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(parent) = compiled.parent() {
        if is_workspace_root(parent) {
            return parent.to_path_buf();
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if is_workspace_root(dir) {
                return dir.to_path_buf();
            }
        }
    }
    compiled.parent().unwrap_or(compiled).to_path_buf()
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .map(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        .unwrap_or(false)
}

/// A name no other run (process) or call in this process has used: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:09}", std::process::id())
}

/// A fresh, empty directory under `<workspace>/target/meshguard-runs/`.
pub fn scratch_dir(prefix: &str) -> Result<PathBuf> {
    let dir = workspace_root().join("target").join("meshguard-runs").join(unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
