//! The only `unsafe` in meshguard: the few Proxy-Wasm host calls made while serving traffic,
//! declared against the ABI directly.
//!
//! Why not the SDK's wrappers: proxy-wasm 0.2.5 `panic!`s on any status it does not expect,
//! its `get_http_request_headers_bytes` unwraps `String::from_utf8` on header names, and the
//! `Context` trait methods `unwrap()` errors such as `SerializationFailure`. A panic traps the
//! VM, and a trapped VM fails every request on that worker. Here every status comes back as a
//! [`Status`] for the caller to handle, and header bytes are parsed by the safe, fuzzed
//! [`crate::header_map::parse`].
//!
//! Each `unsafe` block below is an FFI call with pointers to live locals or slices, or the
//! adoption of a buffer the host allocated for us through the SDK's
//! `proxy_on_memory_allocate` (a boxed `[u8]` of exactly `size` bytes), exactly as the SDK
//! itself adopts it.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, StreamType};

/// A non-`Ok` status from the host (the raw ABI value: 1 NotFound, 2 BadArgument, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    // Used by the benchmark's probe (filter/probe compiles this file), not by meshguard.
    #[allow(dead_code)]
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
}

/// Take ownership of a buffer the host allocated in our memory. A null pointer or a zero size
/// is an empty buffer.
fn adopt(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        // Nothing to free: the host only allocates for a non-empty value.
        return Vec::new();
    }
    // SAFETY: the host got `data` from `proxy_on_memory_allocate(size)`, which returns a
    // leaked `Box<[u8]>` of exactly `size` bytes, so capacity == length == size; ownership
    // passes to us with this call (the SDK does exactly this in `get_map_bytes`).
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The request header map, serialized (see [`crate::header_map`]): one host call, one buffer,
/// pseudo-headers included.
pub fn request_header_map() -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; both out-pointers point to live locals.
    let status = unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) };
    match status {
        OK => Ok(adopt(data, size)),
        other => Err(Status(other)),
    }
}

/// One request header's value (`name` lowercase), `Ok(None)` when absent: one host call and
/// one buffer per header (the benchmark's probe compares this with [`request_header_map`]).
#[allow(dead_code)]
pub fn request_header(name: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; `name` is a live slice, the out-pointers point to live locals.
    let status = unsafe {
        proxy_get_header_map_value(MapType::HttpRequestHeaders as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match status {
        OK if data.is_null() => Ok(None),
        OK => Ok(Some(adopt(data, size))),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Remove every value of a request header (`name` lowercase, as Envoy keys its map).
pub fn remove_request_header(name: &[u8]) -> Result<(), Status> {
    // SAFETY: FFI call; `name` is a live slice.
    let status =
        unsafe { proxy_remove_header_map_value(MapType::HttpRequestHeaders as u32, name.as_ptr(), name.len()) };
    match status {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Replace every value of a request header with one value.
pub fn replace_request_header(name: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: FFI call; `name` and `value` are live slices.
    let status = unsafe {
        proxy_replace_header_map_value(
            MapType::HttpRequestHeaders as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    match status {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Ask Envoy to pick the route again: Envoy's `clear_route_cache` foreign function
/// (`source/extensions/common/wasm/foreign.cc`, `decoder_callbacks->downstreamCallbacks()->
/// clearRouteCache()`). Envoy 1.40 also clears the cache by itself when a Wasm filter changes
/// request headers; calling it explicitly keeps meshguard right on hosts that do not.
/// `Err(Status(1))` (NotFound) on a host without the function.
pub fn clear_route_cache() -> Result<(), Status> {
    const NAME: &[u8] = b"clear_route_cache";
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; the name is a static slice, the (empty) arguments a dangling-but-valid
    // zero-length slice, the out-pointers point to live locals.
    let status =
        unsafe { proxy_call_foreign_function(NAME.as_ptr(), NAME.len(), [].as_ptr(), 0, &mut data, &mut size) };
    // The function returns nothing; adopt (and free) whatever the host may have allocated.
    drop(adopt(data, size));
    match status {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// A property, by its path already joined with NULs (`b"connection\0mtls"`). `Ok(None)` when
/// the host has no such property for this request.
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; `path` is a live slice, the out-pointers point to live locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        OK if data.is_null() => Ok(None),
        OK => Ok(Some(adopt(data, size))),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Define (or look up, for a name defined before) a counter; returns its id.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: FFI call; `name` is a live slice, the out-pointer points to a live local.
    let status = unsafe { proxy_define_metric(MetricType::Counter as u32, name.as_ptr(), name.len(), &mut id) };
    match status {
        OK => Ok(id),
        other => Err(Status(other)),
    }
}

/// Add one to a counter.
pub fn increment(metric_id: u32) -> Result<(), Status> {
    increment_by(metric_id, 1)
}

/// Add `offset` to a counter (one host call, whatever the offset).
pub fn increment_by(metric_id: u32, offset: u64) -> Result<(), Status> {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    // SAFETY: FFI call with plain values.
    match unsafe { proxy_increment_metric(metric_id, offset) } {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Have the host call this root context's `on_tick` every `millis` milliseconds (0: never).
/// Called from a root context's callback (the host keys the timer by the current context).
pub fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: FFI call with a plain value.
    match unsafe { proxy_set_tick_period_milliseconds(millis) } {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Ask Envoy to answer the request itself. `headers` is a serialized header map;
/// `details` lands in Envoy's `%RESPONSE_CODE_DETAILS%`. The caller then returns
/// `Action::Pause`.
pub fn send_local_response(status_code: u16, details: &str, body: &[u8], headers: &[u8]) -> Result<(), Status> {
    // SAFETY: FFI call; every pointer comes from a live slice with its own length. -1 means
    // "no gRPC status" (the SDK's default too).
    let status = unsafe {
        proxy_send_local_response(
            u32::from(status_code),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    match status {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Close the downstream connection (network filter). Envoy 1.40 defers the close until the
/// current callback returns and flushes what was already written (`FlushWrite`); the caller
/// returns `Action::Pause` so that nothing is forwarded meanwhile.
pub fn close_downstream() -> Result<(), Status> {
    // SAFETY: FFI call with a plain value.
    match unsafe { proxy_close_stream(StreamType::Downstream as u32) } {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Write one line to Envoy's log without going through `format!` again.
pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    // SAFETY: FFI call; `message` is a live slice.
    match unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) } {
        OK => Ok(()),
        other => Err(Status(other)),
    }
}

/// Wall-clock time, in nanoseconds since the Unix epoch, as the host sees it.
pub fn now_unix_nanos() -> Result<u64, Status> {
    let mut nanos: u64 = 0;
    // SAFETY: FFI call; the out-pointer points to a live local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } {
        OK => Ok(nanos),
        other => Err(Status(other)),
    }
}

/// The plugin configuration (in `on_configure`): the policy document's bytes. Empty when the
/// plugin has no configuration.
pub fn plugin_configuration() -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; both out-pointers point to live locals.
    let status =
        unsafe { proxy_get_buffer_bytes(BufferType::PluginConfiguration as u32, 0, usize::MAX, &mut data, &mut size) };
    match status {
        OK => Ok(adopt(data, size)),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// The `:status` of the HTTP call response being delivered (in `on_http_call_response`):
/// `None` when there is none (the call failed or timed out) or it is not a number.
pub fn http_call_response_status() -> Option<u16> {
    let name = b":status";
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; `name` is a live slice, the out-pointers point to live locals.
    let status = unsafe {
        proxy_get_header_map_value(
            MapType::HttpCallResponseHeaders as u32,
            name.as_ptr(),
            name.len(),
            &mut data,
            &mut size,
        )
    };
    if status != OK {
        return None;
    }
    let value = adopt(data, size);
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// Up to `max` bytes of the HTTP call response body being delivered.
pub fn http_call_response_body(max: usize) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: FFI call; both out-pointers point to live locals.
    let status =
        unsafe { proxy_get_buffer_bytes(BufferType::HttpCallResponseBody as u32, 0, max, &mut data, &mut size) };
    match status {
        OK => Ok(adopt(data, size)),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// `GET path` through `cluster` from the root context, with a timeout; the response comes to
/// the root context's `on_http_call_response` with the returned token. Through the SDK, which
/// registers the token with its dispatcher (a call it did not register would make the SDK's
/// dispatcher panic when the response arrives); the SDK panics only on a status Envoy does not
/// return for this call (it returns Ok, BadArgument for an unknown cluster, InternalFailure).
pub fn dispatch_get(cluster: &str, path: &str, authority: &str, timeout: std::time::Duration) -> Result<u32, Status> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        vec![(":method", "GET"), (":path", path), (":authority", authority), ("accept", "application/json")],
        None,
        vec![],
        timeout,
    )
    .map_err(|s| Status(s as u32))
}
