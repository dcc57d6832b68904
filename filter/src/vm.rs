//! Making a VM (re)start visible.
//!
//! Envoy runs one VM per plugin on the main thread and one on every worker. With
//! `failure_policy: FAIL_RELOAD` (meshguard's default, see envoy-config/README.md), a VM that
//! trapped is thrown away and a new one is started on the next request: the worker keeps
//! enforcing, but the trap itself would go unnoticed. So every VM says that it started:
//!
//! - an info line `meshguard: vm started root_id=<root id>` from the first `on_vm_start` of
//!   the VM;
//! - the counter `meshguard_vm_starts_total`, counted once per VM, when that VM accepts its
//!   first configuration (a VM that never gets a good policy serves nothing: it answers 500
//!   `NFCF` and shows in `meshguard_config_rejected_total` instead).
//!
//! Envoy calls `on_vm_start` once per root context, and a new configuration for the same
//! module gets a new root context in the *same* VM. "Once per VM" therefore lives in the VM's
//! own memory (these statics), which only a new VM starts afresh. A VM is single-threaded.
//!
//! At steady state the counter is the number of VMs that serve (main thread + workers, for
//! each of the HTTP and the network filter); every increase after that is a new VM: a reload
//! after a trap, or a new module. Alert on `increase(meshguard_vm_starts_total[10m]) > 0`
//! outside rollouts, together with Envoy's own wasm stats (see envoy-config/README.md).

use std::sync::atomic::{AtomicBool, Ordering};

use proxy_wasm::types::LogLevel;

use crate::hostcalls;
use crate::metrics::VM_STARTS;

/// Whether this VM has logged its start.
static LOGGED: AtomicBool = AtomicBool::new(false);
/// Whether this VM has been counted (its first accepted configuration).
static COUNTED: AtomicBool = AtomicBool::new(false);

/// From `on_vm_start`: the first one in this VM logs the start. Never fails the VM.
pub fn started() {
    if LOGGED.swap(true, Ordering::Relaxed) {
        return;
    }
    let root_id = crate::properties::root_id().unwrap_or_default();
    crate::plugin::log(LogLevel::Info, &format!("meshguard: vm started root_id={}", String::from_utf8_lossy(&root_id)));
}

/// From `on_configure`, after a configuration was accepted: counts this VM once.
pub fn configured() {
    if COUNTED.swap(true, Ordering::Relaxed) {
        return;
    }
    if let Ok(id) = hostcalls::define_counter(VM_STARTS) {
        let _ = hostcalls::increment(id);
    }
}
