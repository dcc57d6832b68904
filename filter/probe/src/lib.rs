//! The benchmark's probe: a Proxy-Wasm HTTP filter that does meshguard's per-request work in
//! stages, chosen by its plugin configuration, so that `meshguard bench` can measure in Envoy
//! where meshguard.wasm's added CPU goes (see harness/src/bench.rs).
//!
//! The configuration is JSON: `{"stages": ["headers", "mtls", "san", ...], "policy": {...}}`.
//! Each stage is what meshguard.wasm does (or could do instead) on every request, with the same
//! code (`hostcalls.rs` and `header_map.rs` are meshguard's own files, compiled in here):
//!
//! | stage | per request |
//! |---|---|
//! | `headers` | the request header map: one `proxy_get_header_map_pairs`, parsed into borrowed pairs |
//! | `header_values` | instead: `:method`, `:path`, `:authority` and `x-request-id` with one `proxy_get_header_map_value` each |
//! | `mtls` | the property `connection.mtls` |
//! | `san` | the property `connection.uri_san_peer_certificate` |
//! | `direction` | the property `xds.listener_direction` |
//! | `cluster` | the property `xds.cluster_name` |
//! | `counters` | two `proxy_increment_metric` calls (meshguard's requests + allowed) |
//! | `vm_counters` | instead: two counts in VM memory, flushed by the root context's `on_tick` |
//! | `evaluate` | `Policy::evaluate` of `policy` on the parsed headers and the peer read above |
//!
//! Every request goes on (`Continue`), whatever the stages find: the probe enforces nothing.
//! It is a benchmark tool, never a filter to deploy.
#![deny(unsafe_code)]

use std::cell::Cell;
use std::rc::Rc;

use policy::{Direction, Peer, Policy, RequestView};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

// meshguard's own host calls and header-map parser, the same source files.
#[allow(dead_code)]
#[path = "../../src/hostcalls.rs"]
mod hostcalls;

#[allow(dead_code)]
#[path = "../../src/header_map.rs"]
mod header_map;

const PROPERTY_MTLS: &[u8] = b"connection\0mtls";
const PROPERTY_URI_SAN: &[u8] = b"connection\0uri_san_peer_certificate";
const PROPERTY_DIRECTION: &[u8] = b"xds\0listener_direction";
const PROPERTY_CLUSTER: &[u8] = b"xds\0cluster_name";
/// How often `vm_counters` are flushed.
const TICK_MILLIS: u32 = 1_000;

/// Which stages run on every request.
#[derive(Debug, Clone, Copy, Default)]
struct Stages {
    headers: bool,
    header_values: bool,
    mtls: bool,
    san: bool,
    direction: bool,
    cluster: bool,
    counters: bool,
    vm_counters: bool,
    evaluate: bool,
}

impl Stages {
    fn parse(names: &[serde_json::Value]) -> Option<Stages> {
        let mut s = Stages::default();
        for name in names {
            match name.as_str()? {
                "headers" => s.headers = true,
                "header_values" => s.header_values = true,
                "mtls" => s.mtls = true,
                "san" => s.san = true,
                "direction" => s.direction = true,
                "cluster" => s.cluster = true,
                "counters" => s.counters = true,
                "vm_counters" => s.vm_counters = true,
                "evaluate" => s.evaluate = true,
                _ => return None,
            }
        }
        Some(s)
    }
}

/// Two counters, as meshguard counts an allowed request; `pending` holds the `vm_counters`
/// stage's counts until the next tick.
struct Counters {
    ids: [Option<u32>; 2],
    pending: Cell<u64>,
}

impl Counters {
    fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            for id in self.ids.into_iter().flatten() {
                let _ = hostcalls::increment_by(id, n);
            }
        }
    }
}

struct ProbeRoot {
    stages: Stages,
    policy: Option<Rc<Policy>>,
    counters: Rc<Counters>,
}

impl Context for ProbeRoot {
    /// The plugin is going away (a new configuration, or Envoy draining): flush what is left.
    fn on_done(&mut self) -> bool {
        self.counters.flush();
        true
    }
}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Ok(bytes) = hostcalls::plugin_configuration() else { return false };
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return false };
        let Some(stages) = config.get("stages").and_then(|s| s.as_array()).and_then(|s| Stages::parse(s)) else {
            let _ = hostcalls::log(proxy_wasm::types::LogLevel::Error, "probe: bad or missing \"stages\"");
            return false;
        };
        if stages.evaluate {
            match config.get("policy").map(|p| Policy::from_value(p.clone())) {
                Some(Ok(policy)) => self.policy = Some(Rc::new(policy)),
                _ => {
                    let _ =
                        hostcalls::log(proxy_wasm::types::LogLevel::Error, "probe: evaluate needs a valid \"policy\"");
                    return false;
                }
            }
        }
        if stages.counters || stages.vm_counters {
            let ids = [
                hostcalls::define_counter("probe_requests_total").ok(),
                hostcalls::define_counter("probe_allowed_total").ok(),
            ];
            self.counters = Rc::new(Counters { ids, pending: Cell::new(0) });
        }
        if stages.vm_counters {
            let _ = hostcalls::set_tick_period(TICK_MILLIS);
        }
        self.stages = stages;
        true
    }

    fn on_tick(&mut self) {
        self.counters.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeRequest {
            stages: self.stages,
            policy: self.policy.clone(),
            counters: self.counters.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeRequest {
    stages: Stages,
    policy: Option<Rc<Policy>>,
    counters: Rc<Counters>,
}

impl Context for ProbeRequest {}

fn property(path: &[u8]) -> Option<Vec<u8>> {
    hostcalls::property(path).ok().flatten()
}

impl HttpContext for ProbeRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let s = self.stages;
        let buf = if s.headers { hostcalls::request_header_map().unwrap_or_default() } else { Vec::new() };
        let headers = if s.headers { header_map::parse(&buf).unwrap_or_default() } else { Vec::new() };
        if s.header_values {
            for name in [&b":method"[..], b":path", b":authority", b"x-request-id"] {
                std::hint::black_box(hostcalls::request_header(name).ok());
            }
        }
        let mtls = s.mtls && property(PROPERTY_MTLS).is_some_and(|v| v == [1]);
        let san = if s.san { property(PROPERTY_URI_SAN) } else { None };
        let direction = if s.direction { property(PROPERTY_DIRECTION) } else { None };
        let cluster = if s.cluster { property(PROPERTY_CLUSTER) } else { None };
        std::hint::black_box((&direction, &cluster));
        if let Some(policy) = self.policy.as_deref() {
            // As meshguard builds its view (without `mtls`, a SAN means an mTLS peer).
            let mtls = mtls || san.is_some();
            let view = RequestView::new(&headers, Peer { mtls, uri_san: san.as_deref() }, Direction::Inbound)
                .with_end_of_stream(end_of_stream)
                .with_cluster(cluster.as_deref());
            std::hint::black_box(policy.evaluate(&view));
        }
        if s.counters {
            for id in self.counters.ids.into_iter().flatten() {
                let _ = hostcalls::increment(id);
            }
        }
        if s.vm_counters {
            self.counters.pending.set(self.counters.pending.get().wrapping_add(1));
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> {
        Box::new(ProbeRoot {
            stages: Stages::default(),
            policy: None,
            counters: Rc::new(Counters { ids: [None, None], pending: Cell::new(0) }),
        })
    });
}}
