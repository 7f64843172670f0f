//! Test guest (isolation probe): keeps the previous request's `x-secret` header in a global and
//! answers every request with a 200 local reply whose body is `previous=<that secret>` (or
//! `previous=` when it remembers nothing). Under `per_request` isolation it must never echo
//! anything; under `pooled` it must never echo another tenant's secret.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;

thread_local! {
    // Guest-global state: survives across requests exactly as long as the instance does.
    static PREVIOUS_SECRET: RefCell<String> = const { RefCell::new(String::new()) };
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
}}

struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe;

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let secret = self.get_http_request_header("x-secret").unwrap_or_default();
        let previous = PREVIOUS_SECRET.with(|p| p.replace(secret));
        let body = format!("previous={previous}");
        self.send_http_response(200, vec![("content-type", "text/plain")], Some(body.as_bytes()));
        Action::Pause
    }
}
