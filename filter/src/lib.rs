//! meshguard's Proxy-Wasm adapter: the thin layer between Envoy and [`policy`].
//!
//! It reads what Envoy offers (the request header map, and the connection properties the
//! compiled policy needs), builds a [`policy::RequestView`], calls
//! [`policy::Policy::evaluate`], and then enforces (a local reply) or lets the request go on,
//! counts metrics and writes at most one decision-log line. No policy rule lives here.
//!
//! - [`plugin`]: the root context (policy compiled once per configuration in `on_configure`)
//!   and the per-request [`plugin::RequestGuard`].
//! - [`network`]: the same module as a network filter (root id `meshguard-tcp`): the
//!   per-connection [`network::ConnectionGuard`] enforces the egress allowlist on the TLS SNI.
//! - [`properties`]: the Envoy properties the egress check reads, decoded.
//! - [`header_map`]: the host's serialized header map, parsed without trusting it (fuzzed).
//! - [`metrics`]: counter names as they appear in Envoy's `/stats/prometheus`.
//! - [`jwks`]: remote JWKS fetched by the root context (`dispatch_http_call`) and handed to the
//!   policy the HTTP contexts share.
//! - `hostcalls`: the only `unsafe` code, the raw ABI calls made while serving traffic, so
//!   that no SDK `panic!`/`unwrap()` sits on the request path.
//! - [`trust`]: signed policies: the trust roots (a key slot patched into the module, and
//!   `MESHGUARD_TRUST_KEYS`) and the signature and rollback gate run in `on_configure`; its
//!   one `unsafe` is the volatile read of the slot. `shared_data` (raw ABI calls, like
//!   `hostcalls`) keeps the highest accepted serial across VMs.
//!
//! Envoy's log gets, at info level, `meshguard: vm started root_id=<id>` once per VM
//! ([`vm`]), `meshguard: policy accepted revision=<rev> bytes=<n>
//! compile_us=<µs> signed=<true|false>[ serial=<n> keyid=<id> trust_keys=<n> verify_us=<µs>]` per accepted
//! configuration (and VM; [`trust`]: signed policies), `meshguard: policy rejected:
//! reason=<reason>: <why>` for a configuration the signature gate refuses, one `meshguard: policy rejected: <path>: <message>` per error of a rejected
//! one (error level), and one `meshguard.decision {...}` JSON line per logged decision (info).
//!
//! Failure behaviour: a request meshguard cannot inspect (no policy, unreadable header map) is
//! refused with 503 and counted in `meshguard_errors_total`; a failed metric or log host call
//! never affects the request.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod header_map;
mod hostcalls;
pub mod jwks;
pub mod metrics;
pub mod network;
pub mod plugin;
pub mod properties;
mod shared_data;
pub mod trust;
pub mod vm;

// The module's entry point (`_initialize`): install the SDK's logger (which also logs any
// panic at critical level before the trap) and the root context factory.
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(plugin::PolicyRoot::new())
    });
}}
