//! Test guest (hostile behaviour on demand): the `x-chaos` request header picks what it does:
//! `loop` spins forever, `alloc` allocates without end, `recurse` recurses without end, `trap`
//! panics (a trap); anything else lets the request through.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::hint::black_box;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ChaosRoot) });
}}

struct ChaosRoot;

impl Context for ChaosRoot {}

impl RootContext for ChaosRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Chaos))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Chaos;

impl Context for Chaos {}

/// Recurses until the stack runs out (the frame is kept alive with black_box).
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(frame[7])
}

impl HttpContext for Chaos {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.get_http_request_header("x-chaos").as_deref() {
            Some("loop") => loop {
                black_box(0);
            },
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Some("recurse") => {
                black_box(recurse(0));
                Action::Continue
            }
            Some("trap") => panic!("chaos-filter: trap requested"),
            _ => Action::Continue,
        }
    }
}
