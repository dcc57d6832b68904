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

pub mod checks;
pub mod connection;
pub mod decision;
pub mod document;
pub mod egress;
pub mod error;
pub mod fuzzing;
pub mod host;
pub mod hygiene;
pub mod identity;
pub mod log;
pub mod path;
mod policy;
pub mod principals;
pub mod reason;
pub mod request;
pub mod route;
pub mod samples;
pub mod spiffe;
pub mod xfcc;

pub use connection::ConnectionView;
pub use decision::{Decision, Finding, HeaderMutation, Remedy, Verdict};
pub use error::{ConfigError, ConfigErrors};
pub use policy::{DenyResponse, LogSettings, Needs, Policy};
pub use reason::{Check, ReasonCode};
pub use request::{Direction, Peer, RequestView, Workload};
