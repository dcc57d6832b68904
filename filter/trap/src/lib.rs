//! TEST ONLY — never deploy. A Proxy-Wasm HTTP filter that traps on demand, so that the
//! end-to-end tests (`tests/tests/vm_reload.rs`) can measure what Envoy's `failure_policy`
//! does after a runtime trap (a Rust panic is `unreachable` in the VM, exactly what a bug in
//! meshguard would be).
//!
//! - A request carrying the header `x-trap` panics in `on_http_request_headers`: the VM traps.
//! - Every other request goes on, with the response header `x-trap-vm: <n>`, where `n` is a
//!   number chosen when this VM's root context started (its start time in nanoseconds): two
//!   answers with different numbers came from two different VMs, so a reload is visible
//!   from the client's side.
//! - `on_vm_start` logs `trap: vm started` and counts `trap_vm_starts_total`, the same shape
//!   as meshguard's own `meshguard: vm started` / `meshguard_vm_starts_total`.
//!
//! It has none of meshguard's safety rules (it panics on purpose) and is not built into
//! meshguard.wasm; the Makefile's `wasm` target builds it as `trap.wasm` for the tests.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

struct TrapRoot {
    vm: Rc<String>,
}

impl Context for TrapRoot {}

impl RootContext for TrapRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let now = self.get_current_time();
        let nanos = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        self.vm = Rc::new(nanos.to_string());
        let _ = proxy_wasm::hostcalls::log(LogLevel::Info, &format!("trap: vm started vm={}", self.vm));
        if let Ok(id) = proxy_wasm::hostcalls::define_metric(MetricType::Counter, "trap_vm_starts_total") {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TrapRequest { vm: self.vm.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TrapRequest {
    vm: Rc<String>,
}

impl Context for TrapRequest {}

impl HttpContext for TrapRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header_bytes("x-trap").is_some() {
            panic!("trap requested by the x-trap header");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-trap-vm", Some(&self.vm));
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> {
        Box::new(TrapRoot { vm: Rc::new(String::from("0")) })
    });
}}
