//! Example tenant filter: bearer-token authentication written with the proxy-wasm Rust SDK.
//!
//! Plugin configuration (JSON): `{ "tokens": { "<token>": "<subject>", ... } }`, parsed once in
//! `on_configure` into a lookup table. On request headers: a missing, malformed or unknown
//! `authorization: Bearer <token>` gets a 403 local reply with a short body; a known token sets
//! `x-auth-subject: <subject>` (replacing anything the client sent) and lets the request continue.
//! The same module runs unchanged in Envoy's `envoy.filters.http.wasm` and in thaw.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthRoot { tokens: Rc::new(HashMap::new()) })
    });
}}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    tokens: HashMap<String, String>,
}

struct AuthRoot {
    tokens: Rc<HashMap<String, String>>,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("auth-filter: no plugin configuration");
            return false;
        };
        match serde_json::from_slice::<PluginConfig>(&bytes) {
            Ok(config) => {
                log::info!("auth-filter: configured with {} tokens", config.tokens.len());
                self.tokens = Rc::new(config.tokens);
                true
            }
            Err(e) => {
                log::error!("auth-filter: bad plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthRequest { tokens: Rc::clone(&self.tokens) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AuthRequest {
    tokens: Rc<HashMap<String, String>>,
}

impl Context for AuthRequest {}

impl AuthRequest {
    fn deny(&self, reason: &str) -> Action {
        let body = format!("forbidden: {reason}\n");
        self.send_http_response(403, vec![("content-type", "text/plain")], Some(body.as_bytes()));
        Action::Pause
    }
}

impl HttpContext for AuthRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(header) = self.get_http_request_header("authorization") else {
            return self.deny("missing bearer token");
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty()) else {
            return self.deny("malformed authorization header");
        };
        match self.tokens.get(token) {
            Some(subject) => {
                self.set_http_request_header("x-auth-subject", Some(subject));
                Action::Continue
            }
            None => self.deny("unknown bearer token"),
        }
    }
}
