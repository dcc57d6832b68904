//! Proxy-Wasm shared data, for the one thing meshguard keeps across VMs: the highest signed
//! policy serial accepted (see [`crate::trust`]).
//!
//! Why not a static in the VM: Envoy discards a VM whose `on_configure` returned false (the
//! log says "Wasm VM failed") and configures the next update in a fresh one, so anything kept
//! in VM memory is forgotten after every refused update, which is exactly when an attacker
//! would try a replay. Shared data lives in the Envoy process, keyed by `vm_id`, for as long as
//! the process does.
//!
//! Raw ABI calls, like [`crate::hostcalls`] (the SDK's wrappers `panic!` on unexpected
//! statuses); every status comes back to the caller.
#![allow(unsafe_code)]

use std::ptr::null_mut;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `proxy_set_shared_data` with a stale compare-and-swap value.
pub const CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

/// The value under `key` and its CAS, `None` when there is none. `Err` carries the host status.
pub fn get(key: &[u8]) -> Result<Option<(Vec<u8>, u32)>, u32> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: FFI call; `key` is a live slice and the out-pointers point to live locals.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK if data.is_null() || size == 0 => Ok(Some((Vec::new(), cas))),
        // SAFETY: as in `hostcalls::adopt`: the host allocated exactly `size` bytes through the
        // SDK's `proxy_on_memory_allocate` (a leaked boxed slice) and hands ownership to us.
        OK => Ok(Some((unsafe { Vec::from_raw_parts(data, size, size) }, cas))),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// Set `key` to `value` if its CAS is still `cas` (0: unconditionally).
pub fn set(key: &[u8], value: &[u8], cas: u32) -> Result<(), u32> {
    // SAFETY: FFI call with live slices.
    match unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) } {
        OK => Ok(()),
        other => Err(other),
    }
}
