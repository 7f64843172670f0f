//! Test guest, WAF-style: its rules come from an HTTP call made during `proxy_on_configure` to the
//! cluster named in the plugin configuration (`GET /rules`; the answer is one blocked path prefix
//! per line). A request whose path starts with a blocked prefix gets 403; until the rules arrive
//! every request is let through with `x-waf: no-rules` (what a guest does before its init calls
//! are answered is its own choice; in thaw such requests never reach it, see CONFORMANCE.md).
//! Allowed requests carry `x-waf-rules: <number of rules>` upstream.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(WafRoot { rules: Rc::new(RefCell::new(None)) }) });
}}

/// The rules, shared by the root context and its HTTP contexts (`None` until they arrive).
type Rules = Rc<RefCell<Option<Vec<String>>>>;

struct WafRoot {
    rules: Rules,
}

impl Context for WafRoot {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let rules = String::from_utf8_lossy(&body).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        *self.rules.borrow_mut() = Some(rules);
    }
}

impl RootContext for WafRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let cluster = String::from_utf8(self.get_plugin_configuration().unwrap_or_default()).unwrap_or_default();
        let headers = vec![(":method", "GET"), (":path", "/rules"), (":authority", "rules")];
        self.dispatch_http_call(cluster.trim(), headers, None, vec![], Duration::from_secs(5)).is_ok()
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Waf { rules: Rc::clone(&self.rules) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Waf {
    rules: Rules,
}

impl Context for Waf {}

impl HttpContext for Waf {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let rules = self.rules.borrow();
        let Some(rules) = rules.as_ref() else {
            self.set_http_request_header("x-waf", Some("no-rules"));
            return Action::Continue;
        };
        if rules.iter().any(|prefix| path.starts_with(prefix.as_str())) {
            self.send_http_response(403, vec![("x-waf", "blocked")], Some(b"blocked by waf-filter\n"));
            return Action::Pause;
        }
        self.set_http_request_header("x-waf-rules", Some(&rules.len().to_string()));
        Action::Continue
    }
}
