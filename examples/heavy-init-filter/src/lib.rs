//! Test and benchmark guest with the init of a policy engine or classifier: `on_configure` builds a
//! large lookup table (tens of milliseconds), defines a metric and sets a tick period. Each request
//! is answered with a 200 local reply whose body proves the table is there:
//! `table=<checksum> marker=<marker> ticks=<period ms>`.
//!
//! Plugin configuration (JSON, all optional): `{ "entries": 1000000, "marker": "..." }`. The marker
//! is kept in guest memory (the snapshot tests look for it in stored snapshots).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HeavyRoot::default()) });
}}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    entries: Option<usize>,
    marker: Option<String>,
}

#[derive(Default)]
struct Table {
    entries: Vec<u32>,
    checksum: u64,
    marker: String,
    requests_metric: u32,
    tick_ms: u64,
}

#[derive(Default)]
struct HeavyRoot {
    table: Rc<Table>,
}

impl Context for HeavyRoot {}

/// A deliberately expensive table: each entry is a few rounds of an integer hash.
fn build(entries: usize) -> Vec<u32> {
    (0..entries as u32)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B9) ^ 0x85EB_CA6B;
            for _ in 0..8 {
                x ^= x >> 15;
                x = x.wrapping_mul(0x2C1B_3C6D);
                x ^= x >> 12;
            }
            x
        })
        .collect()
}

impl RootContext for HeavyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config: PluginConfig = match self.get_plugin_configuration() {
            Some(bytes) => match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("heavy-init: bad plugin configuration: {e}");
                    return false;
                }
            },
            None => PluginConfig::default(),
        };
        let entries = build(config.entries.unwrap_or(1_000_000));
        let checksum = entries.iter().fold(0u64, |acc, x| acc.wrapping_mul(31).wrapping_add(*x as u64));
        let requests_metric = hostcalls::define_metric(MetricType::Counter, "heavy_requests").unwrap_or(0);
        let tick_ms = 60_000;
        self.set_tick_period(Duration::from_millis(tick_ms));
        log::info!("heavy-init: table built ({} entries, checksum {checksum})", entries.len());
        self.table = Rc::new(Table { entries, checksum, marker: config.marker.unwrap_or_default(), requests_metric, tick_ms });
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeavyRequest { table: Rc::clone(&self.table) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HeavyRequest {
    table: Rc<Table>,
}

impl Context for HeavyRequest {}

impl HttpContext for HeavyRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let t = &self.table;
        let metric_ok = hostcalls::increment_metric(t.requests_metric, 1).is_ok();
        let body = format!(
            "table={} entries={} marker={} ticks={} metric={}",
            t.checksum,
            t.entries.len(),
            t.marker,
            t.tick_ms,
            if metric_ok { "ok" } else { "missing" }
        );
        self.send_http_response(200, vec![("content-type", "text/plain")], Some(body.as_bytes()));
        Action::Pause
    }
}
