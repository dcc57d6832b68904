//! A Proxy-Wasm HTTP filter that does nothing: every request goes on untouched.
//!
//! The benchmark runs it in the same Envoy slot as `meshguard.wasm` to separate the cost of
//! the Wasm filter machinery (VM entry, context creation) from the cost of meshguard itself.
//! It makes no host call per request.
#![deny(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopRequest))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The default `on_http_request_headers` (and every other callback) returns `Continue`.
struct NoopRequest;

impl Context for NoopRequest {}

impl HttpContext for NoopRequest {}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}
