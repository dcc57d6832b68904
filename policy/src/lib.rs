//! meshguard's policy engine: the policy document, its validation, its compiled form and the
//! decision for one request.
//!
//! This crate is pure: no proxy-wasm, no I/O, no clock and no randomness. The Proxy-Wasm filter
//! and the `meshguard` command line both build a [`RequestView`] and call
//! [`Policy::evaluate`], so what a platform team tunes offline is exactly what runs in the mesh.
//!
//! Checks run in a fixed order — request hygiene, peer identity, egress, JWT — and the first
//! enforced deny ends the evaluation. Findings of checks or rules in dry-run are recorded and the
//! evaluation goes on.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod budget;
pub mod checks;
pub mod decision;
mod doc_de;
pub mod document;
pub mod envelope;
pub mod error;
pub mod fuzzing;
pub mod log;
pub mod matchers;
pub mod parse;
mod policy;
pub mod reason;
pub mod samples;
pub mod strict_json;
#[cfg(test)]
mod testing;
pub mod vectors;
pub mod view;

pub use checks::jwt::remote::{JwksUpdate, RemoteJwks, MAX_JWKS_BYTES};
pub use decision::{Decision, Finding, HeaderMutation, Outcome, Remedy, Verdict};
pub use error::{ConfigError, ConfigErrors};
pub use policy::{DenyResponse, LogSettings, Policy};
pub use reason::{Check, ReasonCode};
pub use view::connection::ConnectionView;
pub use view::request::{Direction, Peer, RequestView, Workload};
pub use view::upstream::UpstreamView;
pub use view::Needs;
